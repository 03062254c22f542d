"""Per-recipient values inside the one issue render.

An issue is rendered once, with a placeholder :class:`Field` for every subscriber value
(``email``, ``name``, ``unsubscribe_url``, ``subscriber.<column>``). A field prints as an opaque
token, which is later replaced by each recipient's value. A filter or test applied to a field
(``{{ name | upper }}``, ``{{ email | urlencode }}``) is not run at render time: it is recorded
and replayed on each recipient's real value, with the same Jinja2 function, so the result is
exactly what a per-recipient render would give. Text built from a field (``name ~ '!'``,
``'%s' % name``, a ``{% set %}`` block or a macro holding one) becomes a recorded field too, so
slicing or filtering it later is replayed as well, and never cuts a token. Whatever cannot be
replayed that way (a field deciding an ``if`` or a loop, a comparison, a method call on it,
``| safe``) is refused at render time with an error naming the template line; and a recorded
step that fails for some recipient (``name[5]`` for a short name) is found by
:meth:`FieldTable.check` before anything is sent.
"""

from __future__ import annotations

import operator
import re
import secrets
import sys
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import markupsafe

# Filters never replayed on subscriber values: ``safe`` would let a CSV cell inject markup,
# ``attr`` reaches attributes of the value.
REFUSED_FILTERS = frozenset({"safe", "attr"})
# Tests whose answer is the same for every recipient (a subscriber value is always a string).
_CONSTANT_TESTS = {"defined": True, "undefined": False, "none": False, "string": True}


class FieldError(ValueError):
    """A subscriber field used where its per-recipient value would be needed at render time."""


class Field:
    """A placeholder for one per-recipient value: a base value (a name), or a recorded filter,
    test or subscript applied to other fields and constants."""

    __slots__ = ("_args", "_func", "_kwargs", "_label", "_name", "_table", "_token", "origin")

    def __init__(
        self,
        table: FieldTable,
        token: str,
        label: str,
        *,
        name: str = "",
        func: Callable[..., Any] | None = None,
        args: Sequence[Any] = (),
        kwargs: Mapping[str, Any] | None = None,
    ) -> None:
        self._table = table
        self._token = token
        self._label = label  # how messages name it: "subscriber.name", "name | upper"
        self._name = name
        self._func = func
        self._args = tuple(args)
        self._kwargs = dict(kwargs or {})
        self.origin = _template_line() if func is not None else ""  # "email.txt line 4"

    # -- what a template may do with it: print it, or pass it to a filter ---------------------

    def __str__(self) -> str:
        return self._token

    def __html__(self) -> str:
        return self._token

    def __repr__(self) -> str:
        if self._table.rendering:  # printing a list or dict that holds it: the token would show
            raise self._refuse("be printed inside a list or a dict (print each value)")
        return f"<subscriber field {self._label}>"

    @property
    def computed(self) -> bool:
        """A recorded step (a filter, a slice…), not a subscriber value as it is."""
        return self._func is not None

    def evaluate(self, values: Mapping[str, str]) -> Any:
        """This field's value for one recipient (``values`` maps base names to strings)."""
        if self._func is None:
            return values.get(self._name, "")
        args = [_value(a, values) for a in self._args]
        kwargs = {k: _value(v, values) for k, v in self._kwargs.items()}
        return self._func(*args, **kwargs)

    @property
    def base_name(self) -> str:
        """The subscriber value this field is, when it is one unchanged (else "")."""
        return self._name if self._func is None else ""

    # -- what it refuses, with a message a template author can act on ------------------------

    def _refuse(self, what: str) -> FieldError:
        return FieldError(
            f"{self._label} is filled in per recipient, after rendering, so it cannot {what}; "
            "print it, or pass it through filters (for an empty value: | otherwise('…'))"
        )

    def __bool__(self) -> bool:
        raise self._refuse("decide an 'if' (test the value in a filter instead)")

    def __iter__(self) -> Any:
        raise self._refuse("drive a loop")

    def __len__(self) -> int:
        raise self._refuse("be measured here (use | length)")

    def __contains__(self, item: object) -> bool:
        raise self._refuse("be searched with 'in'")

    def __eq__(self, other: object) -> bool:
        raise self._refuse("be compared")

    def __ne__(self, other: object) -> bool:
        raise self._refuse("be compared")

    def __lt__(self, other: object) -> bool:
        raise self._refuse("be compared")

    __le__ = __gt__ = __ge__ = __lt__
    __hash__ = object.__hash__

    def __add__(self, other: object) -> Any:
        raise self._refuse("take part in arithmetic (join text with ~)")

    __radd__ = __sub__ = __rsub__ = __mul__ = __rmul__ = __mod__ = __rmod__ = __add__
    __truediv__ = __floordiv__ = __pow__ = __neg__ = __add__

    def __int__(self) -> int:
        raise self._refuse("be used as a number")

    __float__ = __index__ = __int__

    def __call__(self, *args: object, **kwargs: object) -> Any:
        raise self._refuse("be called")

    def __getitem__(self, key: Any) -> Field:
        """``field[0]``, ``field[:3]`` (Jinja2 compiles slices to a plain subscript)."""
        return self._table.record(f"{self._label}[…]", operator.getitem, (self, key))

    def __getattr__(self, attribute: str) -> Any:
        if attribute.startswith("_"):
            raise AttributeError(attribute)
        raise self._refuse(f"be used with .{attribute} (use a filter, such as | {attribute})")


def _value(item: Any, values: Mapping[str, str]) -> Any:
    """An argument of a recorded step with its fields filled in (also inside lists and dicts)."""
    if isinstance(item, Field):
        return item.evaluate(values)
    if type(item) in (list, tuple):
        return type(item)(_value(i, values) for i in item)
    if type(item) is dict:
        return {k: _value(v, values) for k, v in item.items()}
    return item


def _template_line() -> str:
    """``path/email.txt line 12``: where the template being rendered is now (for messages about
    a recorded step that fails later, for one recipient)."""
    frame = sys._getframe(2)
    while frame is not None:
        template = frame.f_globals.get("__jinja_template__")
        if template is not None:
            line = template.get_corresponding_lineno(frame.f_lineno)
            return f"{template.filename or template.name} line {line}"
        frame = frame.f_back  # type: ignore[assignment]
    return ""


def _fill(literals: Sequence[str], values: Sequence[Any], markup: bool) -> str:
    """Text that held field tokens, with each recipient's values where the tokens were (escaped
    when the text was markup, as printing them there escaped them)."""
    out = [literals[0]]
    for value, literal in zip(values, literals[1:], strict=True):
        out += [output(value, escape=markup), literal]
    joined = "".join(out)
    return markupsafe.Markup(joined) if markup else joined  # noqa: S704 - its values are escaped


def _call(func: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    return func(*args, **kwargs)


class FieldTable:
    """Hands out the tokens of one render; finds them again in the rendered text."""

    def __init__(self) -> None:
        self.nonce = secrets.token_hex(6)
        self.fields: list[Field] = []
        self._base: dict[str, Field] = {}
        self.pattern = re.compile(rf"zqx{self.nonce}f(\d+)xqz", re.IGNORECASE)
        self.rendering = False  # while Jinja2 runs: printing a field's repr is then refused

    def _new(self, label: str, **kw: Any) -> Field:
        field = Field(self, f"zqx{self.nonce}f{len(self.fields)}xqz", label, **kw)
        self.fields.append(field)
        return field

    def base(self, name: str, label: str = "") -> Field:
        """The placeholder for a subscriber value (one per name)."""
        if name not in self._base:
            self._base[name] = self._new(label or name, name=name)
        return self._base[name]

    def holds_token(self, value: Any) -> bool:
        """Text that merely contains a field (``"Dear " ~ name`` before it became a field, a
        ``{% set %}`` block, a macro's output): work on it would see the token, not the value."""
        return isinstance(value, str) and bool(self.pattern.search(value))

    def involves(self, value: Any, depth: int = 0) -> bool:
        """A field, text holding one, or a list or dict (a few levels deep) holding either."""
        if isinstance(value, Field) or self.holds_token(value):
            return True
        if depth < 4 and type(value) in (list, tuple):
            return any(self.involves(v, depth + 1) for v in value)
        if depth < 4 and type(value) is dict:
            return any(self.involves(v, depth + 1) for v in value.values())
        return False

    def text(self, value: str) -> Field:
        """Text holding tokens as one field: its value is the text with each recipient's values."""
        pieces = self.pattern.split(value)
        fields = tuple(self.fields[int(i)] for i in pieces[1::2])
        markup = isinstance(value, markupsafe.Markup)
        return self._new(
            "text holding a subscriber field", func=_fill, args=(tuple(pieces[::2]), fields, markup)
        )

    def lift(self, value: Any, depth: int = 0) -> Any:
        """``value`` with every token-holding text in it (a few levels deep) made a field."""
        if self.holds_token(value):
            return self.text(value)
        if depth < 4 and type(value) in (list, tuple) and self.involves(value):
            return type(value)(self.lift(v, depth + 1) for v in value)
        if depth < 4 and type(value) is dict and self.involves(value):
            return {k: self.lift(v, depth + 1) for k, v in value.items()}
        return value

    def split(self, text: str) -> tuple[str | Field, ...]:
        """Rendered text as literal chunks and the fields between them."""
        pieces = self.pattern.split(text)
        return tuple(self.fields[int(p)] if i % 2 else p for i, p in enumerate(pieces) if p or i % 2)

    def deferring(self, kind: str, name: str, func: Callable[..., Any]) -> Callable[..., Any]:
        """``func`` (a Jinja2 filter or test) made to record itself when given a field."""
        pass_arg = getattr(func, "jinja_pass_arg", None)
        skip = 1 if pass_arg is not None else 0  # the context, eval context or environment

        def apply(*args: Any, **kwargs: Any) -> Any:
            given = [*args[skip:], *kwargs.values()]
            if kind == "filter" and given:
                check_size(given[1:], name)
            if not any(self.involves(v) for v in given):
                return func(*args, **kwargs)
            if kind == "filter" and name == "xmlattr" and given and type(given[0]) is dict:
                if any(self.involves(k) for k in given[0]):
                    raise FieldError("a subscriber field cannot name an attribute in | xmlattr")
                return func(*args, **kwargs)  # values land escaped inside quotes: filled in later
            fields = [v for v in given if isinstance(v, Field)]
            subject = fields[0]._label if fields else "text holding a subscriber field"
            if kind == "filter" and name in REFUSED_FILTERS:
                raise FieldError(
                    f"the filter '{name}' cannot be applied to {subject}: subscriber "
                    "values are always escaped and never reach attributes"
                )
            if (
                kind == "test"
                and name in _CONSTANT_TESTS
                and fields
                and len(args) > skip
                and args[skip] is fields[0]
            ):
                return _CONSTANT_TESTS[name]
            label = f"{subject} | {name}" if kind == "filter" else f"{subject} is {name}"
            lifted = [*args[:skip], *(self.lift(a) for a in args[skip:])]
            return self._new(
                label, func=func, args=lifted, kwargs={k: self.lift(v) for k, v in kwargs.items()}
            )

        if pass_arg is not None:
            apply.jinja_pass_arg = pass_arg  # type: ignore[attr-defined]
        return apply

    def record(self, label: str, func: Callable[..., Any], args: Sequence[Any], **kwargs: Any) -> Field:
        """A new field: ``func(*args, **kwargs)`` replayed per recipient."""
        return self._new(
            label,
            func=func,
            args=[self.lift(a) for a in args],
            kwargs={k: self.lift(v) for k, v in kwargs.items()},
        )

    def call(
        self, label: str, func: Callable[..., Any], args: Sequence[Any], kwargs: Mapping[str, Any]
    ) -> Field:
        """A call (a method of a string, list or dict) with a field among its arguments, replayed."""
        return self.record(label, _call, [func, *args], **kwargs)

    def getitem(self, obj: Any, key: Any, original: Callable[[Any, Any], Any]) -> Any:
        """``field["x"]``, ``text[0:3]`` through the environment: recorded with the environment's
        own lookup (text holding a token is made a field first: a slice must never cut a token)."""
        if self.holds_token(obj):
            obj = self.text(obj)
        if isinstance(obj, Field) or isinstance(key, Field):
            return self.record(f"{getattr(obj, '_label', 'a value')}[…]", original, (obj, key))
        return original(obj, key)


MAX_NUMBER_ARGUMENT = 1_000_000  # a width, count or length beyond this is an attack, not a layout
_BIG_WIDTH = re.compile(r"\d{7,}")


def check_size(arguments: Sequence[Any], name: str) -> None:
    """Refuse a filter or format argument that would make output of gigabytes (``center(10**12)``)."""
    for value in arguments:
        if (
            isinstance(value, int | float)
            and not isinstance(value, bool)
            and abs(value) > MAX_NUMBER_ARGUMENT
        ):
            raise ValueError(f"{name}: the number {value:.0f} is too large (at most {MAX_NUMBER_ARGUMENT:,})")


def check_format_string(text: str) -> None:
    """Refuse a format string asking for a width or precision of millions (``'{:>1000000000}'``)."""
    if _BIG_WIDTH.search(text) and re.search(r"(%[-#0 +]*|[:.<>=^+-])\d{7,}", text):
        raise ValueError("a format width or precision is too large (at most 999,999)")


def output(value: Any, *, escape: bool) -> str:
    """How Jinja2 prints a value: escaped in an autoescaping (HTML) template, str() otherwise."""
    return str(markupsafe.escape(value)) if escape else str(value)


def value_text(field: Field, values: Mapping[str, str], *, escape: bool) -> str:
    """A field printed for one recipient; FieldError (naming the template line) if a recorded
    step fails for these values."""
    try:
        return output(field.evaluate(values), escape=escape)
    except Exception as err:  # whatever the replayed filter raises
        where = f"{field.origin}: " if field.origin else ""
        detail = " ".join(f"{type(err).__name__}: {err}".split())
        raise FieldError(
            f"{where}{field._label} fails for a subscriber ({detail}); make the template work for "
            "every value (| otherwise('…') for an empty one)"
        ) from err


def check_parts(parts: Sequence[str | Field], values: Mapping[str, str], *, escape: bool) -> None:
    """Replay every recorded step in ``parts`` for one recipient (see :func:`value_text`)."""
    for part in parts:
        if isinstance(part, Field) and part.computed:
            value_text(part, values, escape=escape)
