"""Where templates come from and what they may do: the loader that keeps them inside their
folder, and the Jinja2 environment they run in.

The environment is Jinja2's immutable sandbox. It refuses work Python does in one C call (a
huge power, a repeat or a width of millions), where the render's time limit cannot reach, and
nesting that would exhaust Python's compiler. Text too long to send (over
``MAX_OUTPUT_CHARS``) is refused where it is made, not only where it is printed: joined with
``~`` or ``+``, by ``join`` or ``replace``, returned by a filter, method or macro, or captured
by a ``{% set %}`` block. Otherwise a few lines that keep doubling a value would take all the
machine's memory within the time limit.
"""

from __future__ import annotations

import os
import re
import stat
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import jinja2
from jinja2 import nodes
from jinja2.runtime import markup_join, str_join
from jinja2.sandbox import ImmutableSandboxedEnvironment

from dispatch.compose.values import derived

TEMPLATE_SUFFIXES = (".html", ".htm", ".txt", ".text", ".css", ".j2", ".jinja", ".jinja2")
MAX_TEMPLATE_BYTES = 1_000_000
MAX_OUTPUT_CHARS = 5_000_000
MAX_NESTING = 10  # blocks inside blocks; Python itself stops at 20 nested loops
MAX_BRACKETS = 30  # brackets open inside one tag
MAX_TAG_TOKENS = 400  # tokens in one {{ }} or {% %}: deeper chains exhaust the compiler's stack
MAX_SIGNS = 20  # signs in a row ("- - - 1", "not not not x")
MAX_BITS = 100_000  # an integer result of more bits (30,000 digits) is refused
_JOINED = "dispatch_joined"  # the filter every ``~`` goes through (see _sized_concatenations)
_OPENERS = frozenset({"for", "if", "macro", "call", "filter", "with", "block", "autoescape", "trans"})


class RefusedTemplate(jinja2.TemplateError):
    """A template file that must not be loaded (unlike "not found", never falls back)."""


class TemplateLoader(jinja2.BaseLoader):
    """Templates from one folder only: never through a symlink that leaves it, never a hidden
    file, a non-template file (``.env``, keys…), something that is not a regular file (a FIFO
    would hang the run) or a file over 1 MB."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder

    def get_source(
        self, environment: jinja2.Environment, template: str
    ) -> tuple[str, str, Callable[[], bool]]:
        pieces = jinja2.loaders.split_template_path(template)  # refuses ".." and absolute paths
        path = self.folder.joinpath(*pieces)
        if any(p.startswith(".") for p in pieces) or path.suffix.lower() not in TEMPLATE_SUFFIXES:
            raise RefusedTemplate(f"{template!r}: only template files ({', '.join(TEMPLATE_SUFFIXES)}) load")
        try:
            real = path.resolve(strict=True)
        except (FileNotFoundError, RuntimeError):
            raise jinja2.TemplateNotFound(template) from None
        if not real.is_relative_to(self.folder.resolve()):
            raise RefusedTemplate(f"{path}: leads outside the template folder (a symlink?)")
        try:
            fd = os.open(real, os.O_RDONLY | os.O_NONBLOCK)
        except OSError as err:
            raise RefusedTemplate(f"{path}: cannot read it: {err.strerror}") from err
        with os.fdopen(fd, "rb") as handle:
            info = os.fstat(handle.fileno())
            if not stat.S_ISREG(info.st_mode) or info.st_size > MAX_TEMPLATE_BYTES:
                raise RefusedTemplate(f"{path}: not a regular file of at most 1 MB")
            data = handle.read(MAX_TEMPLATE_BYTES + 1)
        try:
            source = data.decode("utf-8-sig")
        except UnicodeDecodeError as err:
            raise RefusedTemplate(f"{path}: is not UTF-8 text") from err
        mtime = info.st_mtime
        return source, str(path), lambda: path.is_file() and path.stat().st_mtime == mtime


MAX_NUMBER_ARGUMENT = 1_000_000  # a width, count or length beyond this is an attack, not a layout
_BIG_WIDTH = re.compile(r"\d{7,}")


def check_size(arguments: Iterable[Any], name: str) -> None:
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


def _too_long(size: int, what: str) -> None:
    if size > MAX_OUTPUT_CHARS:
        raise ValueError(f"{what} makes text too long to send (over {MAX_OUTPUT_CHARS:,} characters)")


def check_result(result: Any, name: str) -> Any:
    """``result`` (of a filter, a method or a macro), if it is not too long to be sent."""
    if isinstance(result, str | list | tuple | dict):
        _too_long(len(result), name)
    return result


def _text_length(item: Any) -> int:
    return len(item) if isinstance(item, str) else len(str(item))


def check_before(name: str, subject: Any, arguments: Sequence[Any]) -> None:
    """Refuse ``join`` and ``replace`` whose result would be too long, before Python makes it:
    ``subject`` is the text (``replace``) or the separator (``str.join``) or the sequence
    (the ``join`` filter)."""
    if name == "replace" and isinstance(subject, str) and len(arguments) >= 2:
        old, new = str(arguments[0]), str(arguments[1])
        if len(new) > len(old):
            found = len(subject) + 1 if not old else subject.count(old)
            limit = arguments[2] if len(arguments) > 2 and isinstance(arguments[2], int) else -1
            found = min(found, limit) if limit >= 0 else found
            _too_long(len(subject) + found * (len(new) - len(old)), "replace")
    elif name == "join":
        if isinstance(subject, str):  # str.join(items)
            separator, items = subject, (arguments[0] if arguments else ())
        else:  # items|join(separator)
            separator, items = (str(arguments[0]) if arguments else ""), subject
        if isinstance(items, list | tuple):
            _too_long(sum(map(_text_length, items)) + len(separator) * max(0, len(items) - 1), "join")


def sized_join(pieces: Iterable[str]) -> str:
    """Jinja2's ``concat`` (a macro's, a ``{% set %}`` block's or a ``caller()``'s output), refusing
    a result too long to send before it is made."""
    parts = pieces if isinstance(pieces, list) else list(pieces)
    _too_long(sum(map(len, parts)), "a block or macro")
    return "".join(parts)


@jinja2.pass_eval_context
def _joined(eval_ctx: jinja2.nodes.EvalContext, items: tuple[Any, ...]) -> str:
    """``a ~ b ~ c``, as Jinja2 joins it, once its length is known to be sendable."""
    _too_long(sum(map(_text_length, items)), "joining values with ~")
    return (markup_join if eval_ctx.autoescape else str_join)(items)


def _sized_concatenations(tree: nodes.Template) -> nodes.Template:
    """Each ``~`` of the tree joined by :func:`_joined`, which knows the length first."""
    for node in tree.find_all(nodes.Concat):
        operands = nodes.Tuple(list(node.nodes), "load", lineno=node.lineno)
        node.nodes = [nodes.Filter(operands, _JOINED, [], [], None, None, lineno=node.lineno)]
    return tree


_NESTED_FIELD = re.compile(r"\{[^{}]*\{")  # "{:{}}": a width or precision taken from an argument


def check_nested_widths(template: str, arguments: Sequence[Any]) -> None:
    """Refuse ``"{:{}}".format(x, "999999999")``: a width given as text, which Python reads as a
    number (numbers themselves are checked by :func:`check_size`)."""
    if not _NESTED_FIELD.search(template):
        return
    for value in arguments:
        text = value.strip() if isinstance(value, str) else ""
        if text.isdigit() and int(text) > MAX_NUMBER_ARGUMENT:
            raise ValueError(f"a format width or precision is too large (at most {MAX_NUMBER_ARGUMENT:,})")


def _check_numbers(operator: str, left: Any, right: Any) -> None:
    """Refuse arithmetic whose result would take minutes or gigabytes (Python does it in C,
    where the render time limit cannot stop it)."""
    ints = isinstance(left, int) and isinstance(right, int)
    if operator == "**" and ints and abs(left) > 1 and right > 0 and right * left.bit_length() > MAX_BITS:
        raise ValueError(f"{left} ** {right} is too large a number")
    if operator == "*":
        if ints and left.bit_length() + right.bit_length() > MAX_BITS:
            raise ValueError("the product is too large a number")
        count, sequence = (left, right) if isinstance(left, int) else (right, left)
        too_many = isinstance(count, int) and isinstance(sequence, str | list | tuple)
        if too_many and count * len(sequence) > MAX_OUTPUT_CHARS:
            raise ValueError(f"repeating a value {count:,} times makes too much output")
    if operator == "%" and isinstance(left, str):
        check_format_string(left)
        if "*" in left:  # a width or precision taken from the values: "%*d" % (10 ** 9, 1)
            check_size(right if isinstance(right, tuple) else (right,), "a % format")
    if operator == "+" and isinstance(left, str | list | tuple) and isinstance(right, str | list | tuple):
        _too_long(len(left) + len(right), "joining two values with +")


def guarded_filter(name: str, func: Callable[..., Any]) -> Callable[..., Any]:
    """A Jinja2 filter with its size arguments checked (``center(10 ** 12)`` is refused before it
    runs) and its result marked as made from a recipient's value when it is (see
    :func:`dispatch.compose.values.derived`)."""
    skip = 1 if getattr(func, "jinja_pass_arg", None) is not None else 0  # the context or environment

    def apply(*args: Any, **kwargs: Any) -> Any:
        check_size([*args[skip + 1 :], *kwargs.values()], name)
        if len(args) > skip:
            check_before(name, args[skip], [*args[skip + 1 :], *kwargs.values()])
        return derived(check_result(func(*args, **kwargs), name), *args[skip:], *kwargs.values())

    apply.__name__ = getattr(func, "__name__", name)
    if skip:
        apply.jinja_pass_arg = func.jinja_pass_arg  # type: ignore[attr-defined]
    return apply


class TemplateEnvironment(ImmutableSandboxedEnvironment):
    """Jinja2's immutable sandbox, with numbers, repeats, widths and nesting kept within limits,
    and text made from a recipient's value by ``+``, ``%`` or a string method marked as such.
    Only the sandbox's documented hooks are overridden."""

    intercepted_binops = frozenset({"+", "-", "*", "/", "//", "%", "**"})
    concat = staticmethod(sized_join)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.filters = {n: guarded_filter(n, f) for n, f in self.filters.items()}
        self.filters[_JOINED] = _joined  # (as Jinja2 joins: never marked, see values.derived)

    def add_filters(self, filters: Mapping[str, Callable[..., Any]]) -> None:
        """More filters, guarded like the built-in ones."""
        self.filters.update({n: guarded_filter(n, f) for n, f in filters.items()})

    def call_binop(self, context: jinja2.runtime.Context, operator: str, left: Any, right: Any) -> Any:
        _check_numbers(operator, left, right)
        return derived(self.binop_table[operator](left, right), left, right)

    def call(__self, __context: jinja2.runtime.Context, __obj: Any, *args: Any, **kwargs: Any) -> Any:
        owner = getattr(getattr(__obj, "__wrapped__", __obj), "__self__", None)
        if isinstance(owner, str):  # a sandboxed str.format: no width of millions
            if getattr(__obj, "__name__", "") in ("format", "format_map"):
                check_format_string(owner)
                check_nested_widths(owner, [*args, *kwargs.values()])
            check_size([*args, *kwargs.values()], getattr(__obj, "__name__", "a method"))
            check_before(getattr(__obj, "__name__", ""), owner, [*args, *kwargs.values()])
        result = check_result(super().call(__context, __obj, *args, **kwargs), "a call")
        return derived(result, owner, *args, *kwargs.values())

    def _parse(self, source: str, name: str | None, filename: str | None) -> jinja2.nodes.Template:
        _check_shape(self, source, name, filename)
        return _sized_concatenations(super()._parse(source, name, filename))


def _check_shape(env: jinja2.Environment, source: str, name: str | None, filename: str | None) -> None:
    """Refuse, naming the line, nesting that would exhaust Python's compiler or stack: blocks in
    blocks, brackets in brackets, chains of signs, huge tags."""

    def refuse(message: str, line: int) -> jinja2.TemplateSyntaxError:
        return jinja2.TemplateSyntaxError(f"{message}; simplify the template", line, name, filename)

    depth = brackets = signs = tokens = 0
    first: str | None = None
    block = assigns = False
    for line, kind, value in env.lex(source, name, filename):
        if kind in ("block_begin", "variable_begin"):
            block, first, assigns, brackets, signs, tokens = kind == "block_begin", None, False, 0, 0, 0
        elif kind in ("block_end", "variable_end"):
            if block and (first in _OPENERS or (first == "set" and not assigns)):
                depth += 1
                if depth > MAX_NESTING:
                    raise refuse(f"blocks are nested more than {MAX_NESTING} deep", line)
            elif block and first and first.startswith("end"):
                depth = max(0, depth - 1)
        elif kind not in {"whitespace", "data"}:
            tokens += 1
            if tokens > MAX_TAG_TOKENS:
                raise refuse(f"a tag of more than {MAX_TAG_TOKENS} parts", line)
            first = value if first is None and kind == "name" else first
            brackets += (value in ("(", "[", "{")) - (value in (")", "]", "}")) if kind == "operator" else 0
            assigns = assigns or (kind == "operator" and value == "=")
            signs = signs + 1 if value in ("-", "+", "not") else 0
            if brackets > MAX_BRACKETS:
                raise refuse(f"brackets are nested more than {MAX_BRACKETS} deep", line)
            if signs > MAX_SIGNS:
                raise refuse(f"more than {MAX_SIGNS} signs in a row", line)
