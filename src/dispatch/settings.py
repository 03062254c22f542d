"""Frozen settings built from a mapping (the environment, a ``.env`` file and flags).

The CLI merges the sources (flags beat real environment variables, which beat ``.env``) and
hands one mapping to :meth:`Settings.from_mapping`; tests pass a plain dict.
"""

from __future__ import annotations

import re
import ssl
from collections.abc import Mapping
from dataclasses import dataclass, field
from email.headerregistry import Address
from pathlib import Path

from email_validator import EmailNotValidError, validate_email

from dispatch.errors import ConfigError

PREFIX = "DISPATCH_"
SECURITY_MODES = ("starttls", "ssl", "none")
DEFAULT_PORTS = {"starttls": 587, "ssl": 465, "none": 25}
_RATE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*/\s*(s|sec|second|m|min|minute|h|hour)\s*$", re.I)
_PER_SECONDS = {"s": 1, "sec": 1, "second": 1, "m": 60, "min": 60, "minute": 60}
_PER_SECONDS |= {"h": 3600, "hour": 3600}


@dataclass(frozen=True)
class Rate:
    """A sending rate such as ``20/s`` or ``600/min``."""

    count: float
    per_seconds: float

    @property
    def interval(self) -> float:
        """Seconds between two messages."""
        return self.per_seconds / self.count

    def __str__(self) -> str:
        unit = {1: "s", 60: "min", 3600: "h"}.get(int(self.per_seconds), "s")
        return f"{self.count:g}/{unit}"


def parse_rate(text: str, setting: str = "DISPATCH_RATE") -> Rate:
    """Parse ``N/s``, ``N/min`` or ``N/h``."""
    match = _RATE.match(text)
    if not match or float(match[1]) <= 0:
        raise ConfigError(f"{setting}: {text!r} is not a rate; write it like 20/s, 600/min or 5000/h")
    return Rate(float(match[1]), _PER_SECONDS[match[2].lower()])


def parse_mailbox(text: str, setting: str) -> Address:
    """Parse ``Name <user@example.org>`` or a bare address into one validated mailbox."""
    from email.headerregistry import HeaderRegistry  # noqa: PLC0415 - local, rarely used

    text = text.strip()
    try:
        header = HeaderRegistry()("From", text)
        mailboxes = list(header.addresses)  # type: ignore[attr-defined]
    except (ValueError, IndexError) as err:
        raise ConfigError(f"{setting}: {text!r} is not an address: {err}") from err
    if len(mailboxes) != 1 or header.defects:
        raise ConfigError(f"{setting}: {text!r} must be exactly one address, like News <news@example.org>")
    box: Address = mailboxes[0]
    try:
        valid = validate_email(box.addr_spec, check_deliverability=False, allow_smtputf8=False)
    except EmailNotValidError as err:
        raise ConfigError(f"{setting}: {box.addr_spec!r} is not a valid address: {err}") from err
    return Address(display_name=box.display_name, addr_spec=valid.ascii_email or valid.normalized)


def _int(env: Mapping[str, str], name: str, default: int, minimum: int = 0, maximum: int = 2**31) -> int:
    raw = env.get(PREFIX + name, "").strip()
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError as err:
        raise ConfigError(f"{PREFIX}{name}: {raw!r} is not a whole number") from err
    if not minimum <= value <= maximum:
        raise ConfigError(f"{PREFIX}{name}: must be between {minimum} and {maximum}, got {value}")
    return value


def _float(env: Mapping[str, str], name: str, default: float, maximum: float = float("inf")) -> float:
    raw = env.get(PREFIX + name, "").strip()
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError as err:
        raise ConfigError(f"{PREFIX}{name}: {raw!r} is not a number") from err
    if not 0 <= value <= maximum:
        raise ConfigError(f"{PREFIX}{name}: must be between 0 and {maximum:g}, got {value:g}")
    return value


def _check_ca_file(path: Path) -> None:
    if not path.is_file():
        raise ConfigError(f"{PREFIX}SMTP_CA_FILE: {path} does not exist or is not a file")
    try:
        ssl.create_default_context().load_verify_locations(cafile=str(path))
    except (ssl.SSLError, OSError, ValueError) as err:
        raise ConfigError(f"{PREFIX}SMTP_CA_FILE: {path} holds no PEM certificate ({err})") from err


def _path(env: Mapping[str, str], name: str) -> Path | None:
    raw = env.get(PREFIX + name, "").strip()
    return Path(raw).expanduser() if raw else None


@dataclass(frozen=True)
class Settings:
    """Everything a run needs to know besides the article and the list."""

    smtp_host: str = "localhost"
    smtp_port: int = 587
    smtp_user: str = ""
    smtp_password: str = field(default="", repr=False)
    smtp_security: str = "starttls"
    smtp_ca_file: Path | None = None
    smtp_timeout: float = 30.0
    sender: Address | None = None
    reply_to: Address | None = None
    subscribers: Path | None = None
    unsubscribe_url: str = ""
    unsubscribe_mailto: str = ""
    unsubscribe_secret: str = field(default="", repr=False)
    organization: str = ""
    postal_address: str = ""
    state_dir: Path | None = None
    connections: int = 1
    rate: Rate | None = None
    daily_limit: int = 0
    max_per_connection: int = 0
    retries: int = 3
    retry_delay: float = 1.0
    max_failure_ratio: float = 0.5
    give_up_days: float = 5.0

    @classmethod
    def from_mapping(cls, env: Mapping[str, str]) -> Settings:
        """Build settings from ``DISPATCH_*`` keys; raise ConfigError naming the bad one."""
        security = env.get(PREFIX + "SMTP_SECURITY", "starttls").strip().lower() or "starttls"
        if security not in SECURITY_MODES:
            raise ConfigError(
                f"{PREFIX}SMTP_SECURITY: {security!r} is not one of {', '.join(SECURITY_MODES)}"
            )
        sender_raw = env.get(PREFIX + "FROM", "").strip()
        reply_raw = env.get(PREFIX + "REPLY_TO", "").strip()
        rate_raw = env.get(PREFIX + "RATE", "").strip()
        ca_file = _path(env, "SMTP_CA_FILE")
        if ca_file is not None:
            _check_ca_file(ca_file)
        settings = cls(
            smtp_host=env.get(PREFIX + "SMTP_HOST", "").strip() or "localhost",
            smtp_port=_int(env, "SMTP_PORT", DEFAULT_PORTS[security], minimum=1, maximum=65535),
            smtp_user=env.get(PREFIX + "SMTP_USER", "").strip(),
            smtp_password=env.get(PREFIX + "SMTP_PASSWORD", ""),
            smtp_security=security,
            smtp_ca_file=ca_file,
            smtp_timeout=_float(env, "SMTP_TIMEOUT", 30.0) or 30.0,
            sender=parse_mailbox(sender_raw, PREFIX + "FROM") if sender_raw else None,
            reply_to=parse_mailbox(reply_raw, PREFIX + "REPLY_TO") if reply_raw else None,
            subscribers=_path(env, "SUBSCRIBERS"),
            unsubscribe_url=env.get(PREFIX + "UNSUBSCRIBE_URL", "").strip(),
            unsubscribe_mailto=env.get(PREFIX + "UNSUBSCRIBE_MAILTO", "").strip(),
            unsubscribe_secret=env.get(PREFIX + "UNSUBSCRIBE_SECRET", ""),
            organization=env.get(PREFIX + "ORGANIZATION", "").strip(),
            postal_address=env.get(PREFIX + "POSTAL_ADDRESS", "").strip(),
            state_dir=_path(env, "STATE_DIR"),
            connections=_int(env, "CONNECTIONS", 1, minimum=1),
            rate=parse_rate(rate_raw) if rate_raw else None,
            daily_limit=_int(env, "DAILY_LIMIT", 0),
            max_per_connection=_int(env, "MAX_PER_CONNECTION", 0),
            retries=_int(env, "RETRIES", 3),
            retry_delay=_float(env, "RETRY_DELAY", 1.0),
            max_failure_ratio=_float(env, "MAX_FAILURE_RATIO", 0.5, maximum=1.0),
            give_up_days=_float(env, "GIVE_UP_DAYS", 5.0),
        )
        settings.check_unsubscribe()
        return settings

    def check_unsubscribe(self) -> None:
        """Validate the unsubscribe settings' shape (their presence is checked per run)."""
        url = self.unsubscribe_url
        if url and not url.startswith("https://"):
            raise ConfigError(f"{PREFIX}UNSUBSCRIBE_URL: {url!r} must start with https://")
        if url and any(c.isspace() or c in '<>"' or not c.isascii() or not c.isprintable() for c in url):
            raise ConfigError(
                f"{PREFIX}UNSUBSCRIBE_URL: {url!r} must be plain ASCII with no spaces, <, > or quotes; "
                "percent-encode anything else"
            )
        for name, value in (("UNSUBSCRIBE_URL", url), ("UNSUBSCRIBE_MAILTO", self.unsubscribe_mailto)):
            unknown = set(re.findall(r"\{[^}]*\}", value)) - {"{email}", "{token}"}
            if unknown:
                shown = ", ".join(sorted(unknown))
                raise ConfigError(f"{PREFIX}{name}: unknown placeholder {shown}; use {{email}} or {{token}}")
        if url and "{email}" not in url and "{token}" not in url:
            raise ConfigError(
                f"{PREFIX}UNSUBSCRIBE_URL: {url!r} says nothing about who unsubscribes; add {{token}} "
                "(with DISPATCH_UNSUBSCRIBE_SECRET) or {email} to it"
            )
        if "{token}" in url + self.unsubscribe_mailto and not self.unsubscribe_secret:
            raise ConfigError(f"{PREFIX}UNSUBSCRIBE_SECRET must be set to use {{token}} in unsubscribe links")
        box = self.unsubscribe_mailto.removeprefix("mailto:")
        if box and (not box.isascii() or any(c.isspace() or not c.isprintable() for c in box)):
            raise ConfigError(f"{PREFIX}UNSUBSCRIBE_MAILTO: {box!r} must be plain ASCII with no spaces")
        if box:
            try:
                validate_email(box.split("?")[0], check_deliverability=False, allow_smtputf8=False)
            except EmailNotValidError as err:
                raise ConfigError(f"{PREFIX}UNSUBSCRIBE_MAILTO: {box!r} is not an address: {err}") from err

    def require_sending_identity(self) -> Address:
        """The From mailbox and an unsubscribe method are needed to build any message."""
        if self.sender is None:
            raise ConfigError(
                f"{PREFIX}FROM is not set: set it in .env or the environment, "
                "like DISPATCH_FROM='News <news@example.org>' (see .env.example)"
            )
        if not (self.unsubscribe_url or self.unsubscribe_mailto):
            raise ConfigError(
                f"neither {PREFIX}UNSUBSCRIBE_URL nor {PREFIX}UNSUBSCRIBE_MAILTO is set: "
                "bulk mail must carry an unsubscribe link; set one in .env (see .env.example)"
            )
        return self.sender

    @property
    def endpoint(self) -> str:
        """``host:port`` for messages (never the credentials)."""
        return f"{self.smtp_host}:{self.smtp_port}"
