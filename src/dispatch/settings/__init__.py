"""Settings: one declarative table (:mod:`.table`), the parsers of its values (:mod:`.values`),
the frozen :class:`Settings` a run uses (:mod:`.model`), and the settings files and README table
written from the table (:mod:`.envfile`)."""

from dispatch.settings.model import Settings, StateLocation, platform_state_dir
from dispatch.settings.table import (
    DEFAULT_MAX_MESSAGE_SIZE,
    DEFAULT_PORTS,
    EXAMPLE_SECRET,
    PATHS,
    PREFIX,
    SECURITY_MODES,
    SETTINGS,
    STATE_FOLDER,
    Setting,
    unknown_settings,
)
from dispatch.settings.values import Rate, parse_mailbox, parse_rate

__all__ = [
    "DEFAULT_MAX_MESSAGE_SIZE",
    "DEFAULT_PORTS",
    "EXAMPLE_SECRET",
    "PATHS",
    "PREFIX",
    "SECURITY_MODES",
    "SETTINGS",
    "STATE_FOLDER",
    "Rate",
    "Setting",
    "Settings",
    "StateLocation",
    "parse_mailbox",
    "parse_rate",
    "platform_state_dir",
    "unknown_settings",
]
