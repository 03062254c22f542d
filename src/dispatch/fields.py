"""Per-recipient values inside the one issue render.

An issue is rendered once, with a placeholder :class:`Field` for every subscriber value
(``email``, ``name``, ``unsubscribe_url``, ``subscriber.<column>``). A field prints as an opaque
token, which is later replaced by each recipient's value. A filter or test applied to a field
(``{{ name | upper }}``, ``{{ email | urlencode }}``) is not run at render time: it is recorded
and replayed on each recipient's real value, with the same Jinja2 function, so the result is
exactly what a per-recipient render would give. Whatever cannot be replayed that way (a field
deciding an ``if`` or a loop, arithmetic, a filter over text that merely *contains* a field,
``| safe``) is refused at render time with an error naming the template line.
"""

from __future__ import annotations

import operator
import re
import secrets
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import markupsafe

# Filters never replayed on subscriber values: ``safe`` would let a CSV cell inject markup,
# ``attr`` reaches attributes of the value.
REFUSED_FILTERS = frozenset({"safe", "attr"})
# Tests whose answer is the same for every recipient (a subscriber value is always a string).
_CONSTANT_TESTS = {"defined": True, "undefined": False, "none": False, "string": True}


class FieldError(Exception):
    """A subscriber field used where its per-recipient value would be needed at render time."""


class Field:
    """A placeholder for one per-recipient value: a base value (a name), or a recorded filter,
    test or subscript applied to other fields and constants."""

    __slots__ = ("_args", "_func", "_kwargs", "_label", "_name", "_table", "_token")

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

    # -- what a template may do with it: print it, or pass it to a filter ---------------------

    def __str__(self) -> str:
        return self._token

    def __html__(self) -> str:
        return self._token

    def __repr__(self) -> str:
        return f"<subscriber field {self._label}>"

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
    return item.evaluate(values) if isinstance(item, Field) else item


class FieldTable:
    """Hands out the tokens of one render; finds them again in the rendered text."""

    def __init__(self) -> None:
        self.nonce = secrets.token_hex(6)
        self.fields: list[Field] = []
        self._base: dict[str, Field] = {}
        self.pattern = re.compile(rf"zqx{self.nonce}f(\d+)xqz", re.IGNORECASE)

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
        """Text that merely contains a field (``"Dear " ~ name``): a filter over it would see
        the token, not the value."""
        return isinstance(value, str) and bool(self.pattern.search(value))

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
            fields = [v for v in given if isinstance(v, Field)]
            if fields:
                label = (
                    f"{fields[0]._label} | {name}" if kind == "filter" else f"{fields[0]._label} is {name}"
                )
                if kind == "filter" and name in REFUSED_FILTERS:
                    raise FieldError(
                        f"the filter '{name}' cannot be applied to {fields[0]._label}: subscriber "
                        "values are always escaped and never reach attributes"
                    )
                if (
                    kind == "test"
                    and name in _CONSTANT_TESTS
                    and len(args) > skip
                    and args[skip] is fields[0]
                ):
                    return _CONSTANT_TESTS[name]
                return self._new(label, func=func, args=args, kwargs=kwargs)
            if any(self.holds_token(v) for v in given):
                raise FieldError(
                    f"the {kind} '{name}' is applied to text that contains a subscriber field; apply "
                    f"it to the field itself (e.g. {{{{ 'Dear ' ~ (name | {name}) }}}})"
                )
            return func(*args, **kwargs)

        if pass_arg is not None:
            apply.jinja_pass_arg = pass_arg  # type: ignore[attr-defined]
        return apply

    def record(self, label: str, func: Callable[..., Any], args: Sequence[Any]) -> Field:
        """A new field: ``func(*args)`` replayed per recipient."""
        return self._new(label, func=func, args=args)

    def getitem(self, obj: Any, key: Any, original: Callable[[Any, Any], Any]) -> Any:
        """``field["x"]`` through the environment: recorded with the environment's own lookup."""
        if isinstance(obj, Field):
            return self.record(f"{obj._label}[…]", original, (obj, key))
        return original(obj, key)


def output(value: Any, *, escape: bool) -> str:
    """How Jinja2 prints a value: escaped in an autoescaping (HTML) template, str() otherwise."""
    return str(markupsafe.escape(value)) if escape else str(value)
