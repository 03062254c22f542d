"""Several relays for one send.

``DISPATCH_SMTP_HOST`` names one relay or several, separated by commas, each as ``host`` or
``host:port`` (``[2001:db8::1]:2525``): ``relay-a.example.org:587,relay-b.example.org:2525``.
Every other setting a row of the table marks ``per_relay`` (port, security, login, password,
CA file, timeout, connections, messages per connection) then takes one value for every relay,
or one value per relay in the same order, separated the same way (a password, which may hold a
comma, by a line break; an empty place means that setting's default). A port written after a
host beats ``DISPATCH_SMTP_PORT``; a relay without either gets its security's usual port.

:func:`resolve` turns what the parser read into one value per relay for each such setting;
:attr:`dispatch.settings.Settings.relays` gives each relay as a Settings of its own.
"""

from __future__ import annotations

import ipaddress
import re
from pathlib import Path
from typing import Any

from dispatch.errors import ConfigError
from dispatch.settings.table import BY_KEY, DEFAULT_PORTS, PREFIX, SETTINGS

MAX_RELAYS = 16
HOST_KEY = PREFIX + "SMTP_HOST"
_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]*")
_BRACKETED = re.compile(r"\[(?P<host>[0-9A-Fa-f:.]+)\](?::(?P<port>[^:]*))?")
RELAY_FIELDS = tuple(s.field for s in SETTINGS if s.per_relay)


def parts(key: str, text: str) -> list[str]:
    """The values a per-relay setting's text holds (one, unless it lists several)."""
    setting = BY_KEY[key]
    if not setting.per_relay or setting.per_relay not in text:
        return [text]
    found = text.split(setting.per_relay)
    found = found if setting.secret else [part.strip() for part in found]
    if key == HOST_KEY and not all(found):
        raise ConfigError(f"{HOST_KEY}: {text!r} has an empty place between commas; name each relay once")
    return found


def anchored(key: str, raw: str, folder: Path) -> str:
    """A file setting's text with each relative path made relative to the settings file's
    ``folder`` (each relay's, for a per-relay file setting)."""
    sep = BY_KEY[key].per_relay or "\n"
    return sep.join(
        str(folder / part)
        if part and not Path(part).expanduser().is_absolute() and "://" not in part
        else part
        for part in (parts(key, raw) if BY_KEY[key].per_relay else [raw])
    )


def address(text: str) -> tuple[str, int | None]:
    """``host``, ``host:port``, ``[v6]:port`` or a bare IPv6 address: (host, port or None)."""
    bracketed = _BRACKETED.fullmatch(text)
    if bracketed:
        host, port = bracketed["host"], bracketed["port"]
    elif text.count(":") == 1:
        host, port = text.split(":")
    else:
        host, port = text, None
    if not (_NAME.fullmatch(host) or _is_ip(host)) or len(host) > 253:
        raise ConfigError(
            f"{HOST_KEY}: {text!r} is not a relay; write host or host:port, like smtp.example.org:587, "
            "several separated by commas"
        )
    if port is None:
        return host, None
    if not (port.isascii() and port.isdigit() and 0 < int(port) < 65536):
        raise ConfigError(f"{HOST_KEY}: {text!r}: the port must be a number from 1 to 65535")
    return host, int(port)


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def resolve(found: dict[str, Any], lists: dict[str, tuple[Any, ...]]) -> dict[str, tuple[Any, ...]]:
    """One value per relay for every per-relay field (``found``: each setting's one value;
    ``lists``: the settings that gave several). ConfigError naming the setting when a list does
    not match the relays, or a relay is named twice."""
    hosts = [address(h) for h in lists.get("smtp_host", (found["smtp_host"],))]
    count = len(hosts)
    if count > MAX_RELAYS:
        raise ConfigError(f"{HOST_KEY}: names {count} relays; at most {MAX_RELAYS}")
    for field, values in lists.items():
        if field != "smtp_host" and len(values) != count:
            key = next(s.key for s in SETTINGS if s.field == field)
            raise ConfigError(
                f"{key}: gives {len(values)} values for the {count} relay(s) of {HOST_KEY}; give one value "
                "for every relay, or one per relay in the same order"
            )

    def value(field: str, n: int) -> Any:
        return lists[field][n] if field in lists else found[field]

    relays: dict[str, list[Any]] = {field: [] for field in RELAY_FIELDS}
    for n, (host, port) in enumerate(hosts):
        security = value("smtp_security", n)
        relays["smtp_host"].append(host)
        relays["smtp_security"].append(security)
        relays["smtp_port"].append(port or value("smtp_port", n) or DEFAULT_PORTS[security])
        relays["smtp_timeout"].append(value("smtp_timeout", n) or 30.0)
        for field in set(RELAY_FIELDS) - {"smtp_host", "smtp_security", "smtp_port", "smtp_timeout"}:
            relays[field].append(value(field, n))
    seen = list(zip(relays["smtp_host"], relays["smtp_port"], strict=True))
    twice = next((f"{h}:{p}" for n, (h, p) in enumerate(seen) if (h, p) in seen[:n]), None)
    if twice:
        raise ConfigError(f"{HOST_KEY}: names the relay {twice} twice; name each relay once")
    return {field: tuple(values) for field, values in relays.items()}
