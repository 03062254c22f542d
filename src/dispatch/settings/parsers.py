"""The small parsers the settings table names (each takes the trimmed text and the setting's
name, and raises ConfigError naming the setting); the value types they build on are in
:mod:`dispatch.settings.values`."""

from __future__ import annotations

import re
from collections.abc import Callable
from functools import partial
from typing import Any

from dispatch.errors import ConfigError
from dispatch.settings import values as v

Parser = Callable[[str, str], Any]


def choice(choices: tuple[str, ...]) -> Parser:
    def parse(text: str, name: str) -> str:
        value = text.lower()
        if value not in choices:
            raise ConfigError(f"{name}: {value!r} is not one of {', '.join(choices)}")
        return value

    return parse


def whole(minimum: int = 0, maximum: int = 2**31) -> Parser:
    return partial(v.whole, minimum=minimum, maximum=maximum)


def number(maximum: float) -> Parser:
    """A number from 0 to a finite ``maximum``: an endless timeout or delay reaches the
    platform's time limits only mid-send (``inf`` seconds is no time the OS can wait)."""
    return partial(v.number, minimum=0, maximum=maximum)


def text(value: str, name: str) -> str:
    return v.one_line(value, name)


def raw(text: str, name: str) -> str:
    """A secret: taken as written (after trimming), never shown in an error."""
    if any(not c.isprintable() for c in text):
        raise ConfigError(f"{name}: holds a control character or line break")
    return text


def secrets(text: str, name: str) -> tuple[str, ...]:
    """Secrets separated by commas or white space (newest first)."""
    return tuple(raw(part, name) for part in re.split(r"[\s,]+", text) if part)


def mailbox(text: str, name: str) -> Any:
    return v.parse_mailbox(v.one_line(text, name), name)


def lower(text: str, name: str) -> str:
    return v.one_line(text, name).lower()
