"""How one setting's text becomes a value: each parser takes the raw text (already trimmed and
known not to be empty) and the setting's name for its error messages, and raises ConfigError
naming the setting and saying what to write instead."""

from __future__ import annotations

import ipaddress
import re
import ssl
from dataclasses import dataclass
from email.headerregistry import Address
from pathlib import Path
from urllib.parse import SplitResult, urlsplit

from email_validator import EmailNotValidError, validate_email

from dispatch.addresses import MAX_DISPLAY_NAME
from dispatch.errors import ConfigError

_RATE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*/\s*(s|sec|second|m|min|minute|h|hour)\s*$", re.I)
_PER_SECONDS = {"s": 1, "sec": 1, "second": 1, "m": 60, "min": 60, "minute": 60}
_PER_SECONDS |= {"h": 3600, "hour": 3600}
_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(b|k|kb|m|mb|g|gb)?\s*$", re.I)
MAX_SIZE = 1000**3  # a message of a gigabyte: no relay takes more
_SIZE_UNITS = {"": 1, "b": 1, "k": 1000, "kb": 1000, "m": 1000**2, "mb": 1000**2, "g": 1000**3, "gb": 1000**3}
HOSTNAME = re.compile(
    r"(?=.{1,253}$)[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*"
)
_ADDRESS_LITERAL = re.compile(r"\[(?:\d{1,3}\.){3}\d{1,3}\]|\[IPv6:[0-9A-Fa-f:.]+\]")
_BAD_ESCAPE = re.compile(r"%(?![0-9A-Fa-f]{2})")  # a % that escapes nothing
_PLACEHOLDER = re.compile(r"\{[^{}]*\}")
_HOST_PORT = re.compile(r"\[(?P<v6>[0-9A-Fa-f:.]+)\](?::(?P<p6>\d+))?|(?P<host>[^:\s]+)(?::(?P<port>\d+))?")


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


def whole(text: str, setting: str, minimum: float, maximum: float) -> int:
    """A whole number from ``minimum`` to ``maximum``."""
    try:
        value = int(text)
    except ValueError as err:
        raise ConfigError(f"{setting}: {text!r} is not a whole number") from err
    if not minimum <= value <= maximum:
        raise ConfigError(f"{setting}: must be between {minimum:g} and {maximum:g}, got {value}")
    return value


def number(text: str, setting: str, minimum: float, maximum: float) -> float:
    """A number from ``minimum`` to ``maximum`` (never NaN)."""
    try:
        value = float(text)
    except ValueError as err:
        raise ConfigError(f"{setting}: {text!r} is not a number") from err
    if not minimum <= value <= maximum:  # NaN fails this too
        raise ConfigError(f"{setting}: must be between {minimum:g} and {maximum:g}, got {text}")
    return value


def size(text: str, setting: str) -> int:
    """A size in bytes, also written ``10MB`` or ``500k``."""
    match = _SIZE.match(text)
    if not match or float(match[1]) <= 0:
        raise ConfigError(f"{setting}: {text!r} is not a size; write it like 10MB, 500KB or 2000000")
    value = float(match[1]) * _SIZE_UNITS[(match[2] or "").lower()]
    if value > MAX_SIZE:
        raise ConfigError(f"{setting}: {text[:40]!r} is more than any relay takes; write at most 1GB")
    if value < 1:  # (0 would mean "no limit")
        raise ConfigError(
            f"{setting}: {text[:40]!r} is less than a byte; write it like 10MB, 500KB or 2000000"
        )
    return int(value)


def one_line(text: str, setting: str) -> str:
    """A one-line value: a control character or line break is an error."""
    if any(not c.isprintable() for c in text):
        raise ConfigError(f"{setting}: holds a control character or line break; write it on one line")
    return text


def is_loopback(host: str) -> bool:
    """``localhost`` or a loopback address: this machine."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def ca_file(path: Path, setting: str) -> Path:
    """A file of PEM certificates that Python's TLS can load."""
    if not path.is_file():
        raise ConfigError(f"{setting}: {path} does not exist or is not a file")
    try:
        ssl.create_default_context().load_verify_locations(cafile=str(path))
    except (ssl.SSLError, OSError, ValueError) as err:
        raise ConfigError(f"{setting}: {path} holds no PEM certificate ({err})") from err
    return path


def ehlo_name(text: str, setting: str) -> str:
    """A host name or an address literal, as EHLO takes."""
    if not (HOSTNAME.fullmatch(text) or _ADDRESS_LITERAL.fullmatch(text)):
        raise ConfigError(
            f"{setting}: {text!r} is not a host name (like mail.example.org) or an address "
            "literal (like [192.0.2.1])"
        )
    return text


def host_port(text: str, setting: str, default_port: int) -> str:
    """``host:port`` (or ``[v6]:port``); the port is optional."""
    match = _HOST_PORT.fullmatch(text)
    port = int((match and (match["p6"] or match["port"])) or default_port)
    if match is None or not 0 < port < 65536:
        raise ConfigError(f"{setting}: {text!r} is not host:port (like 127.0.0.1:5353)")
    host = match["v6"] or match["host"]
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


STATE_SCHEMES = ("postgresql://", "postgres://")


def shown_url(url: str) -> str:
    """A database URL as it may be shown: without its password (in the user-info or a
    ``password=`` parameter). Taken apart by hand, not by urlsplit, so that a URL too broken to
    parse is still shown without its password: everything before the last ``@`` ahead of the
    query is user-info, of which only the user name (before any ``:``) is kept."""
    scheme, sep, rest = url.partition("://")
    if not sep:
        scheme, rest = "", url
    before_query, mark, query = rest.partition("?")
    query = query.partition("#")[0]
    if "@" in before_query:
        user_info, _, after = before_query.rpartition("@")
        before_query = f"{user_info.partition(':')[0]}@{after}"
    kept = "&".join(p for p in query.split("&") if p and not p.lower().startswith("password="))
    return f"{scheme}{sep}{before_query}{mark if kept else ''}{kept}"


_DB_HOST = re.compile(r"(?:\[[0-9A-Fa-f:.]+\]|[^\[\]:]*)(?::(?P<port>[^:]*))?")
_STATE_EXAMPLE = "postgresql://dispatch@db.example.org/newsletter"


def state_url(text: str, setting: str) -> str:
    """A ``postgresql://`` URL (libpq's form): where the whole state lives instead of a folder.
    Every message shows it through :func:`shown_url` (never its password), and none repeats the
    part that is wrong, which may be the password."""
    if any(not c.isprintable() or c.isspace() for c in text):
        raise ConfigError(f"{setting}: holds a space, a control character or a line break")
    shown = shown_url(text)
    if not text.lower().startswith(STATE_SCHEMES):
        raise ConfigError(
            f"{setting}: {shown!r} is not a PostgreSQL URL; write it like {_STATE_EXAMPLE} "
            "(or leave it unset for the state folder)"
        )
    if _BAD_ESCAPE.search(text):
        raise ConfigError(
            f"{setting}: {shown!r} holds a % that is not followed by two hex digits; write a % in the "
            "password (or anywhere else) as %25, and other special characters as %XX"
        )
    netloc, _, path = text.split("://", 1)[1].partition("?")[0].partition("/")
    for host in netloc.rpartition("@")[2].split(","):  # libpq takes several: h1:5432,h2:5433
        match = _DB_HOST.fullmatch(host)
        if match is None:
            raise ConfigError(
                f"{setting}: {shown!r}: the host is not a name or an address; an IPv6 address goes in "
                "closed brackets, like postgresql://dispatch@[::1]/newsletter"
            )
        port = match["port"]
        if port is not None and not (port.isdigit() and 0 < int(port) < 65536):
            raise ConfigError(
                f"{setting}: {shown!r}: the port must be a number from 1 to 65535 (write a /, @ or : "
                "in the password as %2F, %40 or %3A)"
            )
    if not path.strip("/"):
        raise ConfigError(
            f"{setting}: {shown!r} names no database; add it after the host, like {_STATE_EXAMPLE}"
        )
    return text


# --- web addresses: each checked when read, so that one that cannot work (an unclosed [, a port
# past 65535, a % that escapes nothing, a { left from a misspelt placeholder) stops every command


def checked_parts(url: str, name: str, placeholders: tuple[str, ...] = ()) -> SplitResult:
    """``url`` taken apart, or a ConfigError naming setting ``name`` when it cannot be: a bad
    %-escape, a brace outside the ``placeholders`` it may hold, an unclosed ``[``, a port that
    is not a number from 1 to 65535."""
    if _BAD_ESCAPE.search(url):
        raise ConfigError(
            f"{name}: {url!r} holds a % that is not followed by two hex digits; write a % itself as %25"
        )
    bare = _placeholders(url, name, placeholders)
    try:
        parts = urlsplit(bare)
    except ValueError:
        raise ConfigError(
            f"{name}: {url!r}: the host is not a name or an address (an IPv6 address goes in closed "
            "brackets, like https://[2001:db8::1]/)"
        ) from None
    try:
        port = parts.port
    except ValueError:
        port = 0
    if port == 0:
        raise ConfigError(f"{name}: {url!r}: the port must be a number from 1 to 65535")
    return parts


def _placeholders(text: str, name: str, allowed: tuple[str, ...]) -> str:
    """``text`` with each of its ``allowed`` placeholders as ``X``; a ConfigError for any other
    ``{…}``, or a brace left alone (``{tok``: a misspelt placeholder sent to readers as it is)."""
    use = " or ".join(allowed)
    unknown = set(_PLACEHOLDER.findall(text)) - set(allowed)
    if unknown:
        raise ConfigError(f"{name}: unknown placeholder {', '.join(sorted(unknown))}; use {use}")
    bare = _PLACEHOLDER.sub("X", text)
    if "{" in bare or "}" in bare:
        raise ConfigError(
            f"{name}: {text!r} has a {{ or }} outside a placeholder; check its spelling ({use})"
        )
    return bare


def check_unsubscribe_url(url: str) -> None:
    """An https URL in plain ASCII whose ``{token}`` (if any) reaches ``dispatch serve``: in the
    path or the query, never in the host, the user-info or the fragment (which no browser or
    mail provider sends to the server)."""
    name = "DISPATCH_UNSUBSCRIBE_URL"
    if not url:
        return
    if not url.startswith("https://"):
        raise ConfigError(f"{name}: {url!r} must start with https://")
    if any(c.isspace() or c in '<>",' or not c.isascii() or not c.isprintable() for c in url):
        raise ConfigError(
            f"{name}: {url!r} must be plain ASCII with no spaces, commas, <, > or quotes; "
            "percent-encode anything else"
        )
    checked_parts(url, name, ("{token}", "{email}"))
    parts = urlsplit(url.replace("{token}", "TOKEN").replace("{email}", "EMAIL"))
    if parts.username is not None or parts.password is not None or "@" in parts.netloc:
        raise ConfigError(f"{name}: {url!r} holds a user name or password before the host; remove it")
    if "TOKEN" in parts.netloc or "EMAIL" in parts.netloc or not parts.hostname:
        raise ConfigError(
            f"{name}: {url!r}: the host must be a plain name; put {{token}} in the path or the query, "
            "like https://news.example.org/unsubscribe/{token}"
        )
    if "#" in url:
        raise ConfigError(
            f"{name}: {url!r} has a #fragment, which never reaches dispatch serve; remove it and put "
            "{token} in the path or the query"
        )


def check_unsubscribe_mailto(mailto: str) -> None:
    """One plain address, optionally with ``?subject=`` and ``?body=``."""
    name = "DISPATCH_UNSUBSCRIBE_MAILTO"
    _placeholders(mailto, name, ("{token}", "{email}"))
    box, _, query = mailto.removeprefix("mailto:").partition("?")
    bad = [c for c in mailto if c.isspace() or c in '<>",\\' or not c.isascii() or not c.isprintable()]
    if bad:
        raise ConfigError(
            f"{name}: {mailto!r} must be one plain address (optionally ?subject=…), "
            f"without spaces, commas, <, >, quotes or backslashes (found {bad[0]!r})"
        )
    if query and not re.fullmatch(r"[A-Za-z0-9._~%!$&'()*+;=:@/?{}-]*", query):
        raise ConfigError(f"{name}: {query!r} after '?' must be percent-encoded")
    for pair in filter(None, query.split("&")):
        key = pair.partition("=")[0].lower()
        if key not in ("subject", "body"):
            raise ConfigError(
                f"{name}: {key!r} after '?' would add recipients or headers to the reader's unsubscribe "
                "mail; only subject= and body= are allowed"
            )
    if box:
        sample = box.replace("{email}", "x").replace("{token}", "x")
        try:
            validate_email(sample, check_deliverability=False, allow_smtputf8=False)
        except EmailNotValidError as err:
            raise ConfigError(f"{name}: {box!r} is not an address: {err}") from err


def web_url(text: str, name: str) -> str:
    """``DISPATCH_WEB_URL``: an http(s) address of the web version, with ``{campaign}`` where
    the issue's name goes (or a folder the issue's page is in)."""
    if not text.startswith(("https://", "http://")):
        raise ConfigError(
            f"{name}: {text!r} must start with https:// (or http://), like "
            "https://example.org/newsletter/{campaign}.html"
        )
    if any(c.isspace() or c in '<>"' or not c.isprintable() for c in text):
        raise ConfigError(f"{name}: {text!r} holds a space, a quote, < or >; percent-encode them")
    if not checked_parts(text, name, ("{campaign}",)).hostname:
        raise ConfigError(f"{name}: {text!r} names no host, like https://example.org/newsletter/")
    return text
