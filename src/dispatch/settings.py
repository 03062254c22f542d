"""Frozen settings built from a mapping (the environment, a ``.env`` file and flags).

The CLI merges the sources (flags beat real environment variables, which beat ``.env``) and
hands one mapping to :meth:`Settings.from_mapping`; tests pass a plain dict.
"""

from __future__ import annotations

import difflib
import re
import ssl
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from email.headerregistry import Address
from pathlib import Path

from email_validator import EmailNotValidError, validate_email

from dispatch.errors import ConfigError
from dispatch.message import MAX_DISPLAY_NAME

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
    if len(box.display_name) > MAX_DISPLAY_NAME:
        raise ConfigError(
            f"{setting}: the name is {len(box.display_name):,} characters long; inboxes show a few dozen: "
            f"use at most {MAX_DISPLAY_NAME}"
        )
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


_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(b|k|kb|m|mb|g|gb)?\s*$", re.I)
_SIZE_UNITS = {"": 1, "b": 1, "k": 1000, "kb": 1000, "m": 1000**2, "mb": 1000**2, "g": 1000**3, "gb": 1000**3}


def _size(env: Mapping[str, str], name: str, default: int) -> int:
    """A size in bytes, also written ``10MB`` or ``500k``."""
    raw = env.get(PREFIX + name, "").strip()
    if not raw:
        return default
    match = _SIZE.match(raw)
    if not match or float(match[1]) <= 0:
        raise ConfigError(f"{PREFIX}{name}: {raw!r} is not a size; write it like 10MB, 500KB or 2000000")
    return int(float(match[1]) * _SIZE_UNITS[(match[2] or "").lower()])


def _choice(env: Mapping[str, str], name: str, choices: tuple[str, ...]) -> str:
    """One of ``choices`` (the first is the default)."""
    value = _text(env, name, choices[0]).lower()
    if value not in choices:
        raise ConfigError(f"{PREFIX}{name}: {value!r} is not one of {', '.join(choices)}")
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


def _text(env: Mapping[str, str], name: str, default: str = "") -> str:
    """A one-line setting: surrounding space trimmed; a control character is an error."""
    raw = env.get(PREFIX + name, "").strip()
    if any(not c.isprintable() for c in raw):
        raise ConfigError(f"{PREFIX}{name}: holds a control character or line break; write it on one line")
    return raw or default


_HOSTNAME = re.compile(
    r"(?=.{1,253}$)[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*"
)
_ADDRESS_LITERAL = re.compile(r"\[(?:\d{1,3}\.){3}\d{1,3}\]|\[IPv6:[0-9A-Fa-f:.]+\]")
_LIST_ID = re.compile(r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+(?:\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+)+")


def _ehlo_name(env: Mapping[str, str]) -> str:
    name = _text(env, "EHLO_NAME")
    if name and not (_HOSTNAME.fullmatch(name) or _ADDRESS_LITERAL.fullmatch(name)):
        raise ConfigError(
            f"{PREFIX}EHLO_NAME: {name!r} is not a host name (like mail.example.org) or an address "
            "literal (like [192.0.2.1])"
        )
    return name


_HOST_PORT = re.compile(r"\[(?P<v6>[0-9A-Fa-f:.]+)\](?::(?P<p6>\d+))?|(?P<host>[^:\s]+)(?::(?P<port>\d+))?")


def _host_port(env: Mapping[str, str], name: str, default_port: int) -> str:
    """``host:port`` (or ``[v6]:port``); the port is optional."""
    raw = _text(env, name)
    if not raw:
        return ""
    match = _HOST_PORT.fullmatch(raw)
    port = int((match and (match["p6"] or match["port"])) or default_port)
    if match is None or not 0 < port < 65536:
        raise ConfigError(f"{PREFIX}{name}: {raw!r} is not host:port (like 127.0.0.1:5353)")
    host = match["v6"] or match["host"]
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


# Every setting dispatch reads, with what it is for. A DISPATCH_* name that is not here is a
# misspelling: refused in a settings file, a warning in the environment (see unknown_settings).
KNOWN: dict[str, str] = {
    "SMTP_HOST": "SMTP relay host",
    "SMTP_PORT": "SMTP relay port",
    "SMTP_SECURITY": "starttls, ssl or none",
    "SMTP_USER": "SMTP login",
    "SMTP_PASSWORD": "SMTP password",
    "SMTP_CA_FILE": "extra CA certificate for the relay",
    "SMTP_TIMEOUT": "seconds for every connection and reply",
    "EHLO_NAME": "the name dispatch gives in EHLO/HELO",
    "MAX_MESSAGE_SIZE": "the largest message dispatch will send",
    "FROM": "the sender",
    "REPLY_TO": "where replies go",
    "SUBSCRIBERS": "the default subscriber list",
    "UNSUBSCRIBE_URL": "the https unsubscribe endpoint",
    "UNSUBSCRIBE_MAILTO": "the unsubscribe mailbox",
    "UNSUBSCRIBE_SECRET": "the key of unsubscribe tokens",
    "LIST_ID": "the newsletter's List-Id",
    "ORGANIZATION": "who sends the newsletter",
    "POSTAL_ADDRESS": "the sender's postal address",
    "STATE_DIR": "journal, suppression store, locks and the inlined-CSS cache",
    "JOURNAL_SYNC": "normal, or full to sync every journal write to disk",
    "CONNECTIONS": "parallel SMTP connections",
    "RATE": "rate limit",
    "DAILY_LIMIT": "messages per rolling 24 hours",
    "MAX_PER_CONNECTION": "messages per SMTP connection",
    "RETRIES": "in-run retries of temporary failures",
    "RETRY_DELAY": "the first retry's delay",
    "MAX_FAILURE_RATIO": "abort above this share of refusals",
    "GIVE_UP_DAYS": "when a deferred recipient becomes failed",
    "DKIM_KEY_FILE": "DKIM private key",
    "DKIM_SELECTOR": "DKIM selector",
    "DKIM_DOMAIN": "DKIM signing domain",
    "DNS_SERVER": "resolver for dispatch check --dns",
    "SERVE_HOST": "address dispatch serve listens on",
    "SERVE_PORT": "port dispatch serve listens on",
    "LANGUAGE": "the newsletter's language",
    "LOGO": "a logo for the masthead",
    "WEB_URL": "the web version of each issue",
    "CHROMIUM": "the browser for proofs",
    # OAuth2 (SASL XOAUTH2) for Microsoft 365 and Google Workspace; see dispatch.oauth
    "SMTP_AUTH": "password, or oauth2 for SASL XOAUTH2",
    "OAUTH_PROVIDER": "microsoft, google or custom",
    "OAUTH_TENANT": "the Microsoft 365 tenant (ID or domain)",
    "OAUTH_CLIENT_ID": "the app registration's client ID",
    "OAUTH_CLIENT_SECRET": "a client secret: the client-credentials grant (or Google's desktop secret)",
    "OAUTH_DEVICE_URL": "the device authorization endpoint (RFC 8628)",
    "OAUTH_TOKEN_URL": "the token endpoint",
    "OAUTH_AUTHORIZE_URL": "the authorization endpoint (browser login)",
    "OAUTH_REVOKE_URL": "the revocation endpoint (RFC 7009)",
    "OAUTH_SCOPE": "the scopes asked for",
}
DEFAULT_MAX_MESSAGE_SIZE = 10_000_000  # Amazon SES v1's limit; most relays take more


def unknown_settings(names: Iterable[str]) -> list[tuple[str, str]]:
    """``(name, closest known name or "")`` for each name dispatch does not read but that is
    meant for it: DISPATCH_* names, and names a slip of the keyboard away from one
    (``dispatch_smtp_host``, ``DISPATH_FROM``, ``DISPATCHSMTP_PASSWORD``)."""
    known = [PREFIX + k for k in KNOWN]
    found = []
    for name in names:
        if name in known:
            continue
        upper = name.upper()
        if upper.startswith(PREFIX):
            close = difflib.get_close_matches(upper, known, n=1, cutoff=0.6)
        elif upper.startswith(PREFIX[:4]):
            close = difflib.get_close_matches(upper, known, n=1, cutoff=0.8)
            if not close:
                continue
        else:
            continue
        found.append((name, close[0] if close else ""))
    return found


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
    ehlo_name: str = ""
    max_message_size: int = DEFAULT_MAX_MESSAGE_SIZE
    sender: Address | None = None
    reply_to: Address | None = None
    subscribers: Path | None = None
    unsubscribe_url: str = ""
    unsubscribe_mailto: str = ""
    unsubscribe_secret: str = field(default="", repr=False)
    list_id_setting: str = ""
    organization: str = ""
    postal_address: str = ""
    state_dir: Path | None = None
    journal_sync: str = "normal"
    connections: int = 1
    rate: Rate | None = None
    daily_limit: int = 0
    max_per_connection: int = 0
    retries: int = 3
    retry_delay: float = 1.0
    max_failure_ratio: float = 0.5
    give_up_days: float = 5.0
    dkim_key_file: Path | None = None
    dkim_selector: str = ""
    dkim_domain: str = ""
    dns_server: str = ""
    serve_host: str = "127.0.0.1"
    serve_port: int = 8025
    language: str = ""
    logo: str = ""
    web_url: str = ""
    chromium: str = ""
    # OAuth2 (DISPATCH_SMTP_AUTH=oauth2): presets and validation in dispatch.oauth
    smtp_auth: str = "password"
    oauth_provider: str = ""
    oauth_tenant: str = ""
    oauth_client_id: str = ""
    oauth_client_secret: str = field(default="", repr=False)
    oauth_device_url: str = ""
    oauth_token_url: str = ""
    oauth_authorize_url: str = ""
    oauth_revoke_url: str = ""
    oauth_scope: str = ""

    @classmethod
    def from_mapping(cls, env: Mapping[str, str]) -> Settings:
        """Build settings from ``DISPATCH_*`` keys; raise ConfigError naming the bad one."""
        security = _choice(env, "SMTP_SECURITY", SECURITY_MODES)
        sender_raw = _text(env, "FROM")
        reply_raw = _text(env, "REPLY_TO")
        rate_raw = _text(env, "RATE")
        ca_file = _path(env, "SMTP_CA_FILE")
        if ca_file is not None:
            _check_ca_file(ca_file)
        password = env.get(PREFIX + "SMTP_PASSWORD", "")
        if any(not c.isprintable() for c in password):
            raise ConfigError(f"{PREFIX}SMTP_PASSWORD: holds a control character or line break")
        settings = cls(
            smtp_host=_text(env, "SMTP_HOST", "localhost"),
            smtp_port=_int(env, "SMTP_PORT", DEFAULT_PORTS[security], minimum=1, maximum=65535),
            smtp_user=_text(env, "SMTP_USER"),
            smtp_password=password,
            smtp_security=security,
            smtp_ca_file=ca_file,
            smtp_timeout=_float(env, "SMTP_TIMEOUT", 30.0) or 30.0,
            ehlo_name=_ehlo_name(env),
            max_message_size=_size(env, "MAX_MESSAGE_SIZE", DEFAULT_MAX_MESSAGE_SIZE),
            sender=parse_mailbox(sender_raw, PREFIX + "FROM") if sender_raw else None,
            reply_to=parse_mailbox(reply_raw, PREFIX + "REPLY_TO") if reply_raw else None,
            subscribers=_path(env, "SUBSCRIBERS"),
            unsubscribe_url=_text(env, "UNSUBSCRIBE_URL"),
            unsubscribe_mailto=_text(env, "UNSUBSCRIBE_MAILTO"),
            unsubscribe_secret=env.get(PREFIX + "UNSUBSCRIBE_SECRET", "").strip(),
            list_id_setting=_text(env, "LIST_ID"),
            organization=_text(env, "ORGANIZATION"),
            postal_address=_text(env, "POSTAL_ADDRESS"),
            state_dir=_path(env, "STATE_DIR"),
            journal_sync=_choice(env, "JOURNAL_SYNC", ("normal", "full")),
            connections=_int(env, "CONNECTIONS", 1, minimum=1, maximum=64),
            rate=parse_rate(rate_raw) if rate_raw else None,
            daily_limit=_int(env, "DAILY_LIMIT", 0),
            max_per_connection=_int(env, "MAX_PER_CONNECTION", 0),
            retries=_int(env, "RETRIES", 3, maximum=20),
            retry_delay=_float(env, "RETRY_DELAY", 1.0, maximum=3600),
            max_failure_ratio=_float(env, "MAX_FAILURE_RATIO", 0.5, maximum=1.0),
            give_up_days=_float(env, "GIVE_UP_DAYS", 5.0),
            dkim_key_file=_path(env, "DKIM_KEY_FILE"),
            dkim_selector=_text(env, "DKIM_SELECTOR"),
            dkim_domain=_text(env, "DKIM_DOMAIN").lower(),
            dns_server=_host_port(env, "DNS_SERVER", 53),
            serve_host=_text(env, "SERVE_HOST", "127.0.0.1"),
            serve_port=_int(env, "SERVE_PORT", 8025, minimum=1, maximum=65535),
            language=_text(env, "LANGUAGE"),
            logo=_text(env, "LOGO"),
            web_url=_text(env, "WEB_URL"),
            chromium=_text(env, "CHROMIUM"),
            smtp_auth=_choice(env, "SMTP_AUTH", ("password", "oauth2")),
            oauth_provider=_text(env, "OAUTH_PROVIDER").lower(),
            oauth_tenant=_text(env, "OAUTH_TENANT"),
            oauth_client_id=_text(env, "OAUTH_CLIENT_ID"),
            oauth_client_secret=_text(env, "OAUTH_CLIENT_SECRET"),
            oauth_device_url=_text(env, "OAUTH_DEVICE_URL"),
            oauth_token_url=_text(env, "OAUTH_TOKEN_URL"),
            oauth_authorize_url=_text(env, "OAUTH_AUTHORIZE_URL"),
            oauth_revoke_url=_text(env, "OAUTH_REVOKE_URL"),
            oauth_scope=_text(env, "OAUTH_SCOPE"),
        )
        settings.check_unsubscribe()
        settings.check_list_id()
        settings.check_dkim()
        if settings.smtp_auth == "oauth2":  # the provider's relay and endpoints, checked
            from dispatch.oauth import with_preset  # noqa: PLC0415 - only when asked for

            settings = with_preset(settings, host_given=bool(_text(env, "SMTP_HOST")))
        return settings

    @property
    def list_id(self) -> str:
        """The newsletter's identity (RFC 2919), ``newsletter.example.org`` style: the setting, or
        a slug of the organisation on the From domain."""
        if self.list_id_setting:
            return self.list_id_setting.strip("<>")
        slug = re.sub(r"[^a-z0-9]+", "-", self.organization.lower()).strip("-")[:40].strip("-")
        domain = self.sender.domain if self.sender is not None else "example.invalid"
        return f"{slug or 'newsletter'}.{domain}"

    def check_list_id(self) -> None:
        """``DISPATCH_LIST_ID`` is a dot-atom with a dot, like ``news.example.org`` (RFC 2919)."""
        value = self.list_id_setting.strip("<>")
        if value and (len(value) > 200 or not _LIST_ID.fullmatch(value)):
            raise ConfigError(
                f"{PREFIX}LIST_ID: {self.list_id_setting!r} is not a list identity; write it like "
                "news.example.org (letters, digits, dots and dashes, at most 200 characters)"
            )

    def check_dkim(self) -> None:
        """The three DKIM settings come together (whether the key works is checked before a run)."""
        given = {"DKIM_KEY_FILE": self.dkim_key_file, "DKIM_SELECTOR": self.dkim_selector,
                 "DKIM_DOMAIN": self.dkim_domain}  # fmt: skip
        if any(given.values()) and not all(given.values()):
            missing = ", ".join(PREFIX + k for k, v in given.items() if not v)
            raise ConfigError(f"DKIM signing needs all three DKIM settings; also set {missing}")
        if self.dkim_selector and not _HOSTNAME.fullmatch(self.dkim_selector):
            raise ConfigError(f"{PREFIX}DKIM_SELECTOR: {self.dkim_selector!r} is not a DNS label like s2026")
        if self.dkim_domain and not _HOSTNAME.fullmatch(self.dkim_domain):
            raise ConfigError(f"{PREFIX}DKIM_DOMAIN: {self.dkim_domain!r} is not a domain like example.org")

    def check_unsubscribe(self) -> None:
        """Validate the unsubscribe settings' shape (their presence is checked per run)."""
        url = self.unsubscribe_url
        if url and not url.startswith("https://"):
            raise ConfigError(f"{PREFIX}UNSUBSCRIBE_URL: {url!r} must start with https://")
        if url and any(c.isspace() or c in '<>",' or not c.isascii() or not c.isprintable() for c in url):
            raise ConfigError(
                f"{PREFIX}UNSUBSCRIBE_URL: {url!r} must be plain ASCII with no spaces, commas, <, > or "
                "quotes; percent-encode anything else"
            )
        for name, value in (("UNSUBSCRIBE_URL", url), ("UNSUBSCRIBE_MAILTO", self.unsubscribe_mailto)):
            unknown = set(re.findall(r"\{[^}]*\}", value)) - {"{email}", "{token}"}
            if unknown:
                shown = ", ".join(sorted(unknown))
                raise ConfigError(f"{PREFIX}{name}: unknown placeholder {shown}; use {{email}} or {{token}}")
        mailto = self.unsubscribe_mailto
        box, _, query = mailto.removeprefix("mailto:").partition("?")
        bad = [c for c in mailto if c.isspace() or c in '<>",\\' or not c.isascii() or not c.isprintable()]
        if bad:
            raise ConfigError(
                f"{PREFIX}UNSUBSCRIBE_MAILTO: {mailto!r} must be one plain address (optionally ?subject=…), "
                f"without spaces, commas, <, >, quotes or backslashes (found {bad[0]!r})"
            )
        if query and not re.fullmatch(r"[A-Za-z0-9._~%!$&'()*+;=:@/?{}-]*", query):
            raise ConfigError(f"{PREFIX}UNSUBSCRIBE_MAILTO: {query!r} after '?' must be percent-encoded")
        for pair in filter(None, query.split("&")):
            key = pair.partition("=")[0].lower()
            if key not in ("subject", "body"):
                raise ConfigError(
                    f"{PREFIX}UNSUBSCRIBE_MAILTO: {key!r} after '?' would add recipients or headers to "
                    "the reader's unsubscribe mail; only subject= and body= are allowed"
                )
        if box:
            sample = box.replace("{email}", "x").replace("{token}", "x")
            try:
                validate_email(sample, check_deliverability=False, allow_smtputf8=False)
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
