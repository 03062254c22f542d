"""Frozen settings built from a mapping (the environment, a ``.env`` file and flags).

The CLI merges the sources (flags beat real environment variables, which beat ``.env``) and
hands one mapping to :meth:`Settings.from_mapping`, with the settings file it read; tests pass a
plain dict. What each setting is and how it is parsed is declared once, in
:mod:`dispatch.settings.table`.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from email.headerregistry import Address
from pathlib import Path
from typing import Any

from dispatch.errors import ConfigError
from dispatch.settings import relays
from dispatch.settings import values as v
from dispatch.settings.table import (
    DEFAULT_MAX_MESSAGE_SIZE,
    PATH,
    PLACEHOLDERS,
    PREFIX,
    SETTINGS,
    STATE_FOLDER,
    Setting,
)

_LIST_ID = re.compile(r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+(?:\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+)+")


@dataclass(frozen=True)
class StateLocation:
    """Where a run's state lives, how it was found, and whether the user said so."""

    path: Path
    found_by: str  # "DISPATCH_STATE_DIR in /srv/news/.env", "next to /srv/news/.env (the default)"…
    explicit: bool  # DISPATCH_STATE_DIR was set (in a settings file, the environment or a flag)
    settings_file: Path | None = None  # the settings file in use, if any
    relative: bool = False  # DISPATCH_STATE_DIR was relative: it moves with a copied or moved settings file
    url: str = field(default="", repr=False)  # DISPATCH_STATE_URL (may hold a password)
    lease: float = 30.0  # DISPATCH_STATE_LEASE: how long a silent sender keeps its claims

    @property
    def backend(self) -> str:
        """``postgresql`` with DISPATCH_STATE_URL, else ``sqlite`` (the state folder)."""
        return "postgresql" if self.url else "sqlite"

    @property
    def shown(self) -> str:
        """The folder, or the URL without its password."""
        return v.shown_url(self.url) if self.url else str(self.path)

    def describe(self) -> str:
        """``/srv/news/dispatch-state (DISPATCH_STATE_DIR in /srv/news/.env)``, or
        ``postgresql://dispatch@db.example.org/news (DISPATCH_STATE_URL in /srv/news/.env)``."""
        return f"{self.shown} ({self.found_by})"

    def as_json(self) -> dict[str, str]:
        """Where the state is, for ``--json``: never a password."""
        where = {"url": self.shown} if self.url else {"path": str(self.path)}
        return {"backend": self.backend, **where, "found_by": self.found_by}


def platform_state_dir() -> Path:
    """Where dispatch kept its state before it looked next to the settings file:
    ``$XDG_STATE_HOME/dispatch``, usually ``~/.local/state/dispatch``."""
    import platformdirs  # noqa: PLC0415 - only when no settings file names a state folder

    return Path(platformdirs.user_state_dir("dispatch", appauthor=False))


@dataclass(frozen=True)
class Settings:
    """Everything a run needs to know besides the article and the list (one field per row of
    :data:`dispatch.settings.table.SETTINGS`, plus the settings file they came from)."""

    smtp_host: str = "localhost"
    smtp_port: int = 587
    smtp_security: str = "starttls"
    smtp_user: str = ""
    smtp_password: str = field(default="", repr=False)
    smtp_ca_file: Path | None = None
    smtp_timeout: float = 30.0
    ehlo_name: str = ""
    max_message_size: int = DEFAULT_MAX_MESSAGE_SIZE
    smtp_auth: str = "password"  # or oauth2: presets and validation in dispatch.send.oauth
    oauth_provider: str = ""
    oauth_tenant: str = ""
    oauth_client_id: str = ""
    oauth_client_secret: str = field(default="", repr=False)
    oauth_device_url: str = ""
    oauth_token_url: str = ""
    oauth_authorize_url: str = ""
    oauth_revoke_url: str = ""
    oauth_scope: str = ""
    sender: Address | None = None
    reply_to: Address | None = None
    organization: str = ""
    postal_address: str = ""
    subscribers: Path | None = None
    list_id_setting: str = ""
    unsubscribe_url: str = ""
    unsubscribe_mailto: str = ""
    unsubscribe_secret: str = field(default="", repr=False)
    unsubscribe_previous_secrets: tuple[str, ...] = field(default=(), repr=False)
    dkim_key_file: Path | None = None
    dkim_selector: str = ""
    dkim_domain: str = ""
    dkim_ed25519_key_file: Path | None = None
    dkim_ed25519_selector: str = ""
    dns_server: str = ""
    serve_host: str = "127.0.0.1"
    serve_port: int = 8025
    state_dir: Path | None = None
    state_url: str = field(default="", repr=False)  # may hold a password: shown through v.shown_url
    state_lease: float = 30.0
    journal_sync: str = "normal"
    connections: int = 1
    rate: v.Rate | None = None
    daily_limit: int = 0
    max_per_connection: int = 0
    retries: int = 3
    retry_delay: float = 1.0
    max_failure_ratio: float = 0.5
    give_up_days: float = 5.0
    language: str = ""
    logo: str = ""
    web_url: str = ""
    chromium: str = ""
    bounce_address: str = ""  # dispatch inbound: the envelope sender (bounces+TOKEN@…), and its settings
    soft_bounce_limit: int = 3
    imap_host: str = ""
    imap_port: int = 0  # 0: 993 or 143 by imap_security
    imap_security: str = "ssl"
    imap_user: str = ""
    imap_password: str = field(default="", repr=False)
    imap_folder: str = "INBOX"
    settings_file: Path | None = None  # the file the values came from (None: the environment only)
    # the DISPATCH_* keys the real environment set, over the file's (to say where the state was named)
    from_environment: frozenset[str] = field(default=frozenset(), repr=False, compare=False)
    state_dir_relative: bool = field(default=False, repr=False, compare=False)  # (see StateLocation.relative)
    # With several relays: each per-relay field and its value for every relay (see .relays)
    per_relay: tuple[tuple[str, tuple[Any, ...]], ...] = field(default=(), repr=False)

    @classmethod
    def from_mapping(
        cls,
        env: Mapping[str, str],
        *,
        settings_file: Path | None = None,
        from_environment: frozenset[str] = frozenset(),
        relative_state: bool = False,
    ) -> Settings:
        """Build settings from ``DISPATCH_*`` keys; raise ConfigError naming the bad one.
        A relative ``DISPATCH_STATE_DIR`` is taken relative to ``settings_file``'s folder;
        ``from_environment`` names the keys the real environment gave (over the file's);
        ``relative_state``: the file named the state folder by a relative path (made absolute)."""
        found: dict[str, Any] = {}
        lists: dict[str, tuple[Any, ...]] = {}  # settings giving one value per relay
        for setting in SETTINGS:
            raw = env.get(setting.key) or ""
            text = raw if setting.name in ("SMTP_PASSWORD", "IMAP_PASSWORD") else raw.strip()  # as written
            values = [_value(setting, part) for part in relays.parts(setting.key, text)]
            found[setting.field] = values[0]
            if len(values) > 1:
                lists[setting.field] = tuple(values)
        per_relay = relays.resolve(found, lists)
        found.update({name: values[0] for name, values in per_relay.items()})
        for ca_file in {path for path in per_relay["smtp_ca_file"] if path is not None}:
            v.ca_file(ca_file, PREFIX + "SMTP_CA_FILE")
        if len(per_relay["smtp_host"]) > 1:
            found["per_relay"] = tuple(per_relay.items())
        state = found["state_dir"]
        if state is not None and not state.is_absolute():
            if settings_file is None:
                raise ConfigError(
                    f"{PREFIX}STATE_DIR: {state} is relative, and there is no settings file for it to be "
                    "relative to; give an absolute path (the state is never found from the working folder)"
                )
            found["state_dir"] = settings_file.resolve().parent / state
        found["logo"] = _anchored_logo(found["logo"], settings_file, PREFIX + "LOGO" in from_environment)
        relative = state is not None and (relative_state or not state.is_absolute())
        settings = cls(
            **found,
            settings_file=settings_file,
            from_environment=from_environment,
            state_dir_relative=relative,
        )
        settings.check_unsubscribe()
        settings.check_list_id()
        settings.check_dkim()
        if settings.smtp_auth == "oauth2":  # the provider's relay and endpoints, checked
            from dispatch.settings.oauth import with_preset  # noqa: PLC0415 - only when asked for

            settings = with_preset(settings, host_given=bool((env.get(PREFIX + "SMTP_HOST") or "").strip()))
        return settings

    @property
    def state(self) -> StateLocation:
        """The state folder: ``DISPATCH_STATE_DIR``; else ``dispatch-state`` next to the settings
        file; else (no settings file at all) the platform's state folder."""

        def source(name: str) -> str:
            environment = self.settings_file is None or PREFIX + name in self.from_environment
            return "in the environment" if environment else f"in {self.settings_file}"

        if self.state_url:  # the folder then holds only the inlined-CSS cache
            folder = self.state_dir or (
                self.settings_file.resolve().parent / STATE_FOLDER
                if self.settings_file is not None
                else platform_state_dir()
            )
            return StateLocation(folder, f"{PREFIX}STATE_URL {source('STATE_URL')}", True, self.settings_file,
                                 url=self.state_url, lease=self.state_lease)  # fmt: skip
        if self.state_dir is not None:
            named = f"{PREFIX}STATE_DIR {source('STATE_DIR')}"
            return StateLocation(self.state_dir, named, True, self.settings_file, self.state_dir_relative)
        if self.settings_file is not None:
            folder = self.settings_file.resolve().parent / STATE_FOLDER
            return StateLocation(
                folder, f"next to {self.settings_file}: the default", False, self.settings_file
            )
        return StateLocation(platform_state_dir(), "no settings file: the platform default", False)

    @property
    def list_id(self) -> str:
        """The newsletter's identity (RFC 2919), ``newsletter.example.org`` style: the setting, or
        a slug of the organisation on the From domain."""
        if self.list_id_setting:
            return self.list_id_setting.strip("<>")
        slug = re.sub(r"[^a-z0-9]+", "-", self.organization.lower()).strip("-")[:40].strip("-")
        domain = self.sender.domain if self.sender is not None else "example.invalid"
        return f"{slug or 'newsletter'}.{domain}"

    def placeholders(self) -> list[str]:
        """The settings still holding the example value that ``dispatch init`` or ``.env.example``
        wrote (addresses compared by address), which a real send refuses."""
        held = []
        for key, example in PLACEHOLDERS.items():
            value = getattr(self, _field(key))
            if isinstance(value, Address):
                same = value.addr_spec.lower() == v.parse_mailbox(example, key).addr_spec.lower()
            else:
                same = value == example
            if same:
                held.append(key)
        return held

    def check_list_id(self) -> None:
        """``DISPATCH_LIST_ID`` is a dot-atom with a dot, like ``news.example.org`` (RFC 2919)."""
        value = self.list_id_setting.strip("<>")
        if value and (len(value) > 200 or not _LIST_ID.fullmatch(value)):
            raise ConfigError(
                f"{PREFIX}LIST_ID: {self.list_id_setting!r} is not a list identity; write it like "
                "news.example.org (letters, digits, dots and dashes, at most 200 characters)"
            )

    def check_dkim(self) -> None:
        """The three DKIM settings come together, and the second signature's two need them (whether
        the keys work is checked before a run)."""
        given = {"DKIM_KEY_FILE": self.dkim_key_file, "DKIM_SELECTOR": self.dkim_selector,
                 "DKIM_DOMAIN": self.dkim_domain}  # fmt: skip
        if any(given.values()) and not all(given.values()):
            missing = ", ".join(PREFIX + k for k, val in given.items() if not val)
            raise ConfigError(f"DKIM signing needs all three DKIM settings; also set {missing}")
        if self.dkim_selector and not v.HOSTNAME.fullmatch(self.dkim_selector):
            raise ConfigError(f"{PREFIX}DKIM_SELECTOR: {self.dkim_selector!r} is not a DNS label like s2026")
        if self.dkim_domain and not v.HOSTNAME.fullmatch(self.dkim_domain):
            raise ConfigError(f"{PREFIX}DKIM_DOMAIN: {self.dkim_domain!r} is not a domain like example.org")
        second = {"DKIM_ED25519_KEY_FILE": self.dkim_ed25519_key_file,
                  "DKIM_ED25519_SELECTOR": self.dkim_ed25519_selector}  # fmt: skip
        if any(second.values()) and not all([*given.values(), *second.values()]):
            missing = ", ".join(PREFIX + k for k, val in (given | second).items() if not val)
            raise ConfigError(
                f"a second DKIM signature (Ed25519) needs the DKIM settings too; also set {missing}"
            )
        if self.dkim_ed25519_selector and not v.HOSTNAME.fullmatch(self.dkim_ed25519_selector):
            raise ConfigError(
                f"{PREFIX}DKIM_ED25519_SELECTOR: {self.dkim_ed25519_selector!r} is not a DNS label like e2026"
            )
        if self.dkim_ed25519_selector and self.dkim_ed25519_selector.lower() == self.dkim_selector.lower():
            raise ConfigError(
                f"{PREFIX}DKIM_ED25519_SELECTOR is {PREFIX}DKIM_SELECTOR too; each key needs a selector "
                "of its own"
            )

    def check_unsubscribe(self) -> None:
        """Validate the unsubscribe settings' shape (their presence is checked per run)."""
        v.check_unsubscribe_url(self.unsubscribe_url)
        v.check_unsubscribe_mailto(self.unsubscribe_mailto)

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
        """``host:port`` for messages (never the credentials); every relay's, when several."""
        return ", ".join(f"{r.smtp_host}:{r.smtp_port}" for r in self.relays)

    @property
    def relays(self) -> tuple[Settings, ...]:
        """Each relay as settings of its own (DISPATCH_SMTP_HOST may name several)."""
        if not self.per_relay:
            return (self,)
        count = len(self.per_relay[0][1])
        return tuple(
            replace(self, per_relay=(), **{f: values[n] for f, values in self.per_relay})
            for n in range(count)
        )


def _value(setting: Setting, text: str) -> Any:
    """One setting's value from its (trimmed) text: the default when empty."""
    if not text:
        return setting.default
    if setting.parse is PATH:
        return Path(v.one_line(text, setting.key)).expanduser()
    return setting.parse(text, setting.key)


def _anchored_logo(logo: str, settings_file: Path | None, from_environment: bool) -> str:
    """``DISPATCH_LOGO`` as a local file written relative in the settings file: relative to the
    file's folder, as the other paths there are (a cron job's working folder is not the
    newsletter's); an https URL, an absolute path or the environment's value as given."""
    if not logo or "://" in logo or settings_file is None or from_environment:
        return logo
    path = Path(logo).expanduser()
    return logo if path.is_absolute() else str(settings_file.resolve().parent / path)


def _field(key: str) -> str:
    from dispatch.settings.table import BY_KEY  # noqa: PLC0415 - a name lookup

    return BY_KEY[key].field
