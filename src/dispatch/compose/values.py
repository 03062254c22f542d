"""Recipient values in templates: ordinary strings whose plain prints can be told apart.

A recipient's values (``email``, ``name``, ``unsubscribe_url``, ``subscriber.*``) reach the
templates as :class:`Value` objects, a ``str`` in every respect: ``if``, ``for``, comparisons,
filters and macros see the recipient's text, exactly as in any Jinja2 render. What a filter, a
string method or ``+`` makes of one is a :class:`Derived` string, a ``str`` too.

The environments' ``finalize`` (:func:`finalize`) notes each ``{{ … }}`` whose result is such a
string, and :func:`collect`, reading the render's chunks, writes a slot token where that chunk
is. The result is the document's *skeleton*: the real document with those printed values taken
out. Recipients whose documents differ only in those values share one skeleton, so premailer
(:mod:`dispatch.compose.personal`) works once for all of them; and a value the skeleton does not show
(compared, looped over, joined with ``~``…) is simply part of its text.
"""

from __future__ import annotations

import functools
import re
import secrets
import threading
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import jinja2
import markupsafe

from dispatch.lists.columns import column_key, key_owners, template_fields

RECIPIENT_NAMES = ("email", "name", "unsubscribe_url")


class Value(str):
    """A recipient's value: a ``str``, plus (privately) which field it is and the original text
    object (so that ``is sameas`` answers as it does for the plain string)."""

    _field = ""
    _plain: str | None = None

    @classmethod
    def of(cls, text: str, field: str) -> Value:
        value = cls(text)
        value._field = field
        value._plain = text
        return value


class Derived(str):
    """Text made from a recipient's value (a filter's result, ``name.upper()``)."""


class DerivedMarkup(markupsafe.Markup):
    """Markup made from a recipient's value (``{{ name | e }}``)."""


PRINTABLE = (Value, Derived, DerivedMarkup)
# Jinja2's messages name a value's type ("str object has no element 3"): these read as what they
# behave as, not as dispatch's classes.
for _cls, _like in ((Value, str), (Derived, str), (DerivedMarkup, markupsafe.Markup)):
    _cls.__module__, _cls.__name__, _cls.__qualname__ = _like.__module__, _like.__name__, _like.__qualname__


def derived(result: Any, *sources: Any) -> Any:
    """``result`` marked as made from a recipient's value, when it is text made from one (a
    character or nothing stays as it is: Python shares those objects, and ``sameas`` shows it)."""
    made = type(result) in (str, markupsafe.Markup) and len(result) > 1
    if made and any(isinstance(s, PRINTABLE) for s in sources):
        return DerivedMarkup(result) if isinstance(result, markupsafe.Markup) else Derived(result)
    return result


def same_as(value: Any, other: Any) -> bool:
    """Jinja2's ``sameas`` test, answering for a recipient's value as for its plain text."""
    plain = getattr(value, "_plain", None) if isinstance(value, Value) else None
    other_plain = getattr(other, "_plain", None) if isinstance(other, Value) else None
    return (plain if plain is not None else value) is (other_plain if other_plain is not None else other)


class SubscriberValues(dict[str, Any]):
    """``subscriber.<column>`` (or ``subscriber["Column Name"]``); a column the list does not
    have is an error that lists the ones it has."""

    def __missing__(self, key: str) -> Any:
        shown = ", ".join(sorted({k for k in self if k == column_key(k)}))
        return jinja2.StrictUndefined(
            hint=f"{key!r} is not a column of the subscriber list (columns: {shown})"
        )


@dataclass(frozen=True)
class Fields:
    """The recipient values of an issue: ``email``, ``name``, ``unsubscribe_url`` and one per
    CSV column (by its key), and how the template names them."""

    names: tuple[str, ...]  # field names; a field slot is 2 * index (+ 1 when escaped)
    columns: tuple[tuple[str, str], ...]  # (name in the template: key or header, field)

    @classmethod
    def for_columns(cls, columns: Sequence[str]) -> Fields:
        """A column is named by its key (``subscriber.first_name``) and by its header
        (``subscriber["First Name"]``); a header that is exactly a name wins over another
        column's key (with ``Plan`` and ``plan``, ``subscriber.plan`` is ``plan``)."""
        fields = template_fields(list(columns))
        names: dict[str, None] = dict.fromkeys([*RECIPIENT_NAMES, *fields.values()])
        pairs = {key: fields[column] for key, column in key_owners(list(fields)).items()}
        pairs |= fields  # every header reaches its own column
        return cls(tuple(names), tuple(pairs.items()))

    def context(self, values: Mapping[str, str]) -> dict[str, Any]:
        """The template names of one recipient's values (a missing value is empty)."""
        made = {f: Value.of(values.get(f, ""), f) for f in self.names}
        subscriber = SubscriberValues((name, made[field]) for name, field in self.columns)
        return {"email": made["email"], "name": made["name"],
                "unsubscribe_url": made["unsubscribe_url"], "subscriber": subscriber}  # fmt: skip

    def by_template_name(self) -> dict[str, str]:
        """``subscriber.<name>`` → field."""
        return dict(self.columns)


# --- telling printed values apart ------------------------------------------------------------

_PENDING = threading.local()  # (value, escaped) printed by the last {{ … }} of this thread


@jinja2.pass_eval_context
def finalize(eval_ctx: jinja2.nodes.EvalContext, value: Any) -> Any:
    """The environments' ``finalize``: remembers a recipient's value (or text made from one) that
    an ``{{ … }}`` is about to print, and returns it unchanged. Jinja2 then escapes it (in
    autoescape) and yields it: :func:`collect` compares that chunk with what was noted."""
    _PENDING.value = (value, eval_ctx.autoescape) if isinstance(value, PRINTABLE) else None
    return value


class Tokens:
    """The slot tokens of one process: ``zqx<nonce>f<n>xqz`` for field slot n (a value printed
    as it is), ``zqx<nonce>d<n>xqz`` for the n-th derived print of a render."""

    def __init__(self, nonce: str = "") -> None:
        self.nonce = nonce or secrets.token_hex(6)
        self.pattern = re.compile(rf"zqx{self.nonce}([fd]\d+)xqz", re.IGNORECASE)

    def token(self, key: str) -> str:
        return f"zqx{self.nonce}{key}xqz"

    def keys(self, text: str) -> list[str]:
        """The slot keys (``f3``, ``d0``) of every token in ``text``, in order."""
        return [k.lower() for k in self.pattern.findall(text)]

    def holds(self, text: str) -> bool:
        """Text holding this process's nonce (a token or a piece of one)."""
        return self.nonce in text.lower()


@dataclass(frozen=True)
class Skeleton:
    """One render of one part: its text with a token for every plainly printed value, and the
    text of each derived print (slot ``d<n>``). ``text`` is the real document (no slot at all)
    when the render's own text holds a token, which must never be read as a slot."""

    text: str
    derived: tuple[str, ...]

    def fill(self, key: str, values: Mapping[str, str], fields: Fields) -> str:
        """What slot ``key`` shows for the recipient with ``values``."""
        derived, n = _slot(key)
        if derived:
            return self.derived[n]
        value = values.get(fields.names[n >> 1], "")
        return str(markupsafe.escape(value)) if n & 1 else value


@functools.lru_cache(maxsize=1024)
def _slot(key: str) -> tuple[bool, int]:
    """``d3`` → (True, 3): a derived slot; ``f5`` → (False, 5): field 2, escaped."""
    return key[0] == "d", int(key[1:])


def collect(chunks: Iterable[str], tokens: Tokens, fields: Fields, limit: int) -> Skeleton:
    """Read a render's chunks into its skeleton; ValueError when the document grows past
    ``limit`` characters."""
    out: list[str] = []
    real: list[str] = []
    derived_texts: list[str] = []
    index = {name: i for i, name in enumerate(fields.names)}
    size = inserted = 0
    _PENDING.value = None
    for chunk in chunks:
        real.append(chunk)
        size += len(chunk)
        if size > limit:
            raise ValueError(f"the rendered document is over {limit:,} characters")
        pending, _PENDING.value = _PENDING.value, None
        if pending is not None:
            value, escaped = pending
            if chunk == (markupsafe.escape(value) if escaped else str(value)):
                field = value._field if isinstance(value, Value) else ""
                if field in index:
                    out.append(tokens.token(f"f{2 * index[field] + bool(escaped)}"))
                else:
                    out.append(tokens.token(f"d{len(derived_texts)}"))
                    derived_texts.append(str(chunk))
                inserted += 1
                continue
        out.append(chunk)
    text = "".join(out)
    if len(tokens.pattern.findall(text)) != inserted:  # the document's own text holds a token
        return Skeleton("".join(real), ())
    return Skeleton(text, tuple(derived_texts))
