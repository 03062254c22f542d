"""Where templates come from and what they may do: the loader that keeps them inside their
folder, and the Jinja2 environment they run in.

The environment is Jinja2's immutable sandbox made aware of subscriber fields
(:mod:`dispatch.compose.fields`): work a template does on a field, or on text holding one, is recorded
and replayed per recipient, or refused with the template's line; never done to the field's
token. It also refuses work Python does in one C call (a huge power, a repeat or a width of
millions), where the render's time limit cannot reach, and nesting that would exhaust Python's
compiler.
"""

from __future__ import annotations

import functools
import io
import os
import stat
from collections.abc import Callable
from pathlib import Path
from typing import Any, cast

import jinja2
import markupsafe
from jinja2.compiler import CodeGenerator, Frame
from jinja2.nodes import AssignBlock, Concat
from jinja2.runtime import Macro, markup_join, str_join
from jinja2.sandbox import ImmutableSandboxedEnvironment

from dispatch.compose.fields import Field, FieldTable, check_format_string

TEMPLATE_SUFFIXES = (".html", ".htm", ".txt", ".text", ".css", ".j2", ".jinja", ".jinja2")
MAX_TEMPLATE_BYTES = 1_000_000
MAX_OUTPUT_CHARS = 5_000_000
MAX_NESTING = 10  # blocks inside blocks; Python itself stops at 20 nested loops
MAX_BRACKETS = 30  # brackets open inside one tag
MAX_TAG_TOKENS = 400  # tokens in one {{ }} or {% %}: deeper chains exhaust the compiler's stack
MAX_SIGNS = 20  # signs in a row ("- - - 1", "not not not x")
MAX_BITS = 100_000  # an integer result of more bits (30,000 digits) is refused
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


_SET_BLOCK_VALUE = " = (Markup if context.eval_ctx.autoescape else identity)("


class _Compiler(CodeGenerator):
    """Jinja2's code generator, with text built from subscriber fields kept a field: ``~`` goes
    through :meth:`TemplateEnvironment.concat_fields`, and a ``{% set %}…{% endset %}`` block's text
    through :meth:`TemplateEnvironment.lift`. Slicing, comparing or looping over such text then meets
    the field's rules instead of its token."""

    def visit_Concat(self, node: Concat, frame: Frame) -> None:
        escape = "context.eval_ctx.volatile" if frame.eval_ctx.volatile else str(frame.eval_ctx.autoescape)
        self.write("environment.concat_fields((")
        for item in node.nodes:
            self.visit(item, frame)
            self.write(", ")
        self.write(f"), {escape})")

    def visit_AssignBlock(self, node: AssignBlock, frame: Frame) -> None:
        start = self.stream.tell()
        super().visit_AssignBlock(node, frame)
        code = cast("io.StringIO", self.stream).getvalue()[start:]
        at = code.rfind(_SET_BLOCK_VALUE)
        if at < 0:
            raise RuntimeError("this Jinja2 compiles {% set %} blocks in a way dispatch does not know")
        end = code.find("\n", at) % (len(code) + 1)  # the assignment is one line
        code = f"{code[:at]} = environment.lift({code[at + 3 : end]}){code[end:]}"
        self.stream.seek(start)
        self.stream.truncate()
        self.stream.write(code)


def _pure(func: Any) -> bool:
    """A method of a plain string, list, dict or number (``'{}'.format``, ``d.get``): replaying
    it with each recipient's values gives what a per-recipient render gives."""
    bound = getattr(getattr(func, "__wrapped__", func), "__self__", None)
    return type(bound) in (str, markupsafe.Markup, list, tuple, dict, int, float)


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


class TemplateEnvironment(ImmutableSandboxedEnvironment):
    """The immutable sandbox, made aware of subscriber fields: what a template does with one is
    recorded (a subscript, ``~``, ``%``, a method of a plain string) or refused, never done to
    its token; and numbers, repeats and nesting are kept within limits."""

    code_generator_class = _Compiler
    intercepted_binops = frozenset({"+", "-", "*", "/", "//", "%", "**"})
    table: FieldTable

    def is_safe_attribute(self, obj: Any, attr: str, value: Any) -> bool:
        return not isinstance(obj, Field) and super().is_safe_attribute(obj, attr, value)

    def getitem(self, obj: Any, argument: Any) -> Any:
        return self.table.getitem(obj, argument, super().getitem)

    def getattr(self, obj: Any, attribute: str) -> Any:
        if isinstance(obj, Field):  # a field's own attributes are not the template's to use
            obj.__getattr__(attribute)
        return super().getattr(self.lift(obj), attribute)

    def lift(self, value: Any) -> Any:
        """Text holding a field's token, as a field (a set block's or a macro's output)."""
        return self.table.text(value) if self.table.holds_token(value) else value

    def concat_fields(self, items: tuple[Any, ...], escape: bool) -> Any:
        """``a ~ b``: recorded when a field takes part, joined as Jinja2 joins otherwise."""
        join = markup_join if escape else str_join
        if any(self.table.involves(i) for i in items):
            first = next((i._label for i in items if isinstance(i, Field)), "text with a subscriber field")
            return self.table.record(f"{first} ~ …", join, (items,))
        return join(items)

    def call_binop(self, context: jinja2.runtime.Context, operator: str, left: Any, right: Any) -> Any:
        if self.table.involves(left) or self.table.involves(right):
            if operator in ("+", "%"):
                if operator == "%" and isinstance(left, str):
                    check_format_string(left)
                label = next((v._label for v in (left, right) if isinstance(v, Field)), "a subscriber field")
                return self.table.record(f"{label} {operator} …", self.binop_table[operator], (left, right))
            for side in (left, right):
                if isinstance(side, Field):
                    raise side._refuse("take part in arithmetic (join text with ~)")
        _check_numbers(operator, left, right)
        return self.binop_table[operator](left, right)

    def call(__self, __context: jinja2.runtime.Context, __obj: Any, *args: Any, **kwargs: Any) -> Any:
        if isinstance(__obj, Macro):
            return __self.lift(super().call(__context, __obj, *args, **kwargs))
        fmt = getattr(getattr(__obj, "__wrapped__", None), "__self__", None)
        if isinstance(fmt, str):  # a sandboxed str.format: no width of millions
            check_format_string(fmt)
        table = __self.table
        if _pure(__obj) and (table.involves(args) or table.involves(kwargs)):
            name = getattr(__obj, "__name__", "a method")
            replay = functools.partial(super().call, __context)
            return table.call(f"{name}(… subscriber field …)", replay, (__obj, *args), kwargs)
        return super().call(__context, __obj, *args, **kwargs)

    def _parse(self, source: str, name: str | None, filename: str | None) -> jinja2.nodes.Template:
        _check_shape(self, source, name, filename)
        return super()._parse(source, name, filename)


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
