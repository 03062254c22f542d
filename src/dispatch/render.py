"""Templates: Jinja2 renders an issue once, premailer inlines its CSS once, and each
recipient's copy is a cheap fill-in of placeholders on the already-inlined issue.

Templates see plain data only (:mod:`dispatch.context`). Subscriber values render as
placeholder tokens (:mod:`dispatch.fields`) during the one Jinja2 pass; after inlining, the
issue is split on those tokens into literal chunks, and personalising is a join with each
recipient's values (escaped in the HTML part, verbatim in the text part, filters replayed
exactly). Subscriber values are never parsed as template code. Templates load only from
their folder (no symlink out of it, no hidden or non-template files) and render within time
and size limits, in Jinja2's immutable sandbox.
"""

from __future__ import annotations

import functools
import html
import io
import logging
import os
import signal
import stat
import threading
import traceback
import unicodedata
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any, cast

import jinja2
import markupsafe
from jinja2.compiler import CodeGenerator, Frame
from jinja2.nodes import AssignBlock, Concat
from jinja2.runtime import Macro, markup_join, str_join
from jinja2.sandbox import ImmutableSandboxedEnvironment

from dispatch.article import Article
from dispatch.context import template_context
from dispatch.errors import TemplateError
from dispatch.fields import (
    Field,
    FieldError,
    FieldTable,
    check_format_string,
    check_parts,
    value_text,
)

HTML_TEMPLATE = "email.html"
TEXT_TEMPLATE = "email.txt"
GMAIL_CLIP_BYTES = 100_000
TEMPLATE_SUFFIXES = (".html", ".htm", ".txt", ".text", ".css", ".j2", ".jinja", ".jinja2")
MAX_TEMPLATE_BYTES = 1_000_000
MAX_OUTPUT_CHARS = 5_000_000
RENDER_SECONDS = 10
MAX_NESTING = 10  # blocks inside blocks; Python itself stops at 20 nested loops
MAX_BRACKETS = 30  # brackets open inside one tag
MAX_TAG_TOKENS = 400  # tokens in one {{ }} or {% %}: deeper chains exhaust the compiler's stack
MAX_SIGNS = 20  # signs in a row ("- - - 1", "not not not x")
MAX_BITS = 100_000  # an integer result of more bits (30,000 digits) is refused
_OPENERS = frozenset({"for", "if", "macro", "call", "filter", "with", "block", "autoescape", "trans"})


def builtin_template_dir() -> Path:
    """The packaged templates (inside the wheel), or the checkout's ``templates/``."""
    packaged = Path(str(resources.files("dispatch"))) / "templates"
    if (packaged / HTML_TEMPLATE).is_file():
        return packaged
    return Path(__file__).resolve().parents[2] / "templates"


@dataclass(frozen=True)
class RenderedIssue:
    """An issue rendered and inlined once, ready for cheap per-recipient personalisation."""

    subject: str
    preheader: str
    html_parts: tuple[str | Field, ...]
    text_parts: tuple[str | Field, ...]
    html_size: int
    text_size: int
    warnings: tuple[str, ...] = ()

    @property
    def parts_without_unsubscribe(self) -> list[str]:
        """Which parts ("HTML", "text") show no unsubscribe link."""
        return [
            part
            for part, parts in (("HTML", self.html_parts), ("text", self.text_parts))
            if not _shows_unsubscribe(parts)
        ]

    @property
    def computed(self) -> bool:
        """Whether a recorded step (a filter, a slice…) is replayed per recipient."""
        return any(isinstance(p, Field) and p.computed for p in (*self.html_parts, *self.text_parts))

    def check(self, values: Mapping[str, str]) -> None:
        """FieldError, naming the template line, if a recorded step fails for these values."""
        check_parts(self.html_parts, values, escape=True)
        check_parts(self.text_parts, values, escape=False)

    def personalise(self, values: Mapping[str, str]) -> tuple[str, str]:
        """This recipient's HTML and text; ``values`` maps field names to plain strings."""
        return (
            _join(self.html_parts, values, escape=True),
            _join(self.text_parts, values, escape=False),
        )


def _join(parts: Sequence[str | Field], values: Mapping[str, str], *, escape: bool) -> str:
    return "".join(p if isinstance(p, str) else value_text(p, values, escape=escape) for p in parts)


def display_width(text: str) -> int:
    """Columns the text takes in a terminal: East Asian wide characters count twice."""
    return sum(2 if unicodedata.east_asian_width(c) in "WF" else 1 for c in str(text))


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
    through :meth:`_Environment.concat_fields`, and a ``{% set %}…{% endset %}`` block's text
    through :meth:`_Environment.lift`. Slicing, comparing or looping over such text then meets
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


class _Environment(ImmutableSandboxedEnvironment):
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


def _otherwise(value: Any, fallback: str = "") -> Any:
    """``{{ subscriber.name | otherwise('friend') }}``: the fallback for an empty value."""
    return value or fallback


def _environment(template_dir: Path | None, table: FieldTable, *, autoescape: bool) -> _Environment:
    builtin = TemplateLoader(builtin_template_dir())
    loaders: list[jinja2.BaseLoader] = []
    if template_dir is not None:
        loaders.append(TemplateLoader(template_dir))
    loaders += [builtin, jinja2.PrefixLoader({"builtin": builtin})]
    # Templates may come from a folder the sender does not control: the sandbox keeps them
    # away from Python internals (email-standards SEC-05), and the context holds plain data.
    env = _Environment(
        loader=jinja2.ChoiceLoader(loaders),
        autoescape=autoescape,
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.table = table
    env.filters["otherwise"] = _otherwise
    env.filters["display_width"] = display_width
    env.filters = {n: table.deferring("filter", n, f) for n, f in env.filters.items()}
    env.tests = {n: table.deferring("test", n, cast("Callable[..., Any]", f)) for n, f in env.tests.items()}
    return env


def _where(err: BaseException, name: str, template_dir: Path | None) -> str:
    """``path/to/email.html line 12`` for a Jinja error, as precisely as it is known."""
    filename = getattr(err, "filename", None)
    lineno = getattr(err, "lineno", None)
    if not lineno:
        for frame in reversed(traceback.extract_tb(err.__traceback__)):
            if frame.filename.endswith(TEMPLATE_SUFFIXES):
                filename, lineno = frame.filename, frame.lineno
                break
    if not filename:
        candidates = [d / name for d in (template_dir, builtin_template_dir()) if d is not None]
        filename = str(next((c for c in candidates if c.is_file()), name))
    return f"{filename} line {lineno}" if lineno else str(filename)


@contextmanager
def _time_limit(seconds: int) -> Iterator[None]:
    """Stop a render that runs away (``{% for i in range(99999) %}{% for j in range(99999) %}``).
    Enforced with SIGALRM in the main thread; elsewhere (a library caller's thread) not at all."""
    if threading.current_thread() is not threading.main_thread() or not hasattr(signal, "setitimer"):
        yield
        return

    def expired(_signum: int, _frame: Any) -> None:
        raise TimeoutError(f"rendering took longer than {seconds} s (an endless loop?)")

    previous = signal.signal(signal.SIGALRM, expired)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def _render(env: _Environment, name: str, context: dict[str, Any], template_dir: Path | None) -> str:
    env.table.rendering = True
    try:
        with _time_limit(RENDER_SECONDS):
            chunks: list[str] = []
            size = 0
            for piece in env.get_template(name).generate(context):
                chunk = str(piece)  # a {% filter %} block over a field yields the field itself
                chunks.append(chunk)
                size += len(chunk)
                if size > MAX_OUTPUT_CHARS:
                    raise ValueError(f"the rendered {name} is over {MAX_OUTPUT_CHARS:,} characters")
            return "".join(chunks)
    except jinja2.TemplateNotFound as err:
        origin = f"{_where(err, name, template_dir)}: " if err.name != name else ""
        looked = template_dir or "the built-ins"
        raise TemplateError(f"{origin}template {err.name!r} not found (looked in {looked})") from err
    except jinja2.TemplateSyntaxError as err:
        raise TemplateError(f"{_where(err, name, template_dir)}: {err.message}") from err
    except (jinja2.TemplateError, FieldError, TimeoutError, TypeError, ValueError, LookupError,
            AttributeError, ArithmeticError, RecursionError, SyntaxError, MemoryError) as err:  # fmt: skip
        message = getattr(err, "message", None) or getattr(err, "msg", None) or str(err) or type(err).__name__
        raise TemplateError(f"{_where(err, name, template_dir)}: {message}") from err
    finally:
        env.table.rendering = False


def inline_css(document: str) -> str:
    """Inline the CSS of one document with premailer: no network, warnings kept quiet.

    ``strip_important=False`` keeps ``!important`` in the ``@media`` rules left in ``<style>``,
    so the phone layout can still beat the inlined desktop widths.
    """
    from premailer import Premailer  # noqa: PLC0415 - heavy (lxml, cssutils): only when rendering

    try:
        return str(
            Premailer(
                document,
                allow_network=False,
                strip_important=False,
                disable_validation=True,
                cssutils_logging_handler=logging.NullHandler(),
                cssutils_logging_level=logging.CRITICAL,
                remove_unset_properties=True,
            ).transform()
        )
    except Exception as err:  # premailer wraps lxml/cssutils failures in many types
        raise TemplateError(f"inlining the CSS failed: {err}") from err


def render_issue(
    article: Article,
    *,
    subject: str,
    columns: Sequence[str],
    organization: str = "",
    postal_address: str = "",
    template_dir: Path | None = None,
    test_send: bool = False,
    **looks: Any,
) -> RenderedIssue:
    """Render the HTML and text templates once and inline the CSS once. ``looks`` are passed to
    :func:`dispatch.context.template_context` (language, logo, web_url, web_version…)."""
    if template_dir is not None and not template_dir.is_dir():
        raise TemplateError(f"{template_dir}: template folder does not exist")
    table = FieldTable()
    context = template_context(
        article, table, subject=subject, columns=columns, organization=organization,
        postal_address=postal_address, test_send=test_send, **looks,
    )  # fmt: skip
    html_env = _environment(template_dir, table, autoescape=True)
    text_env = _environment(template_dir, table, autoescape=False)
    html_doc = _render(html_env, HTML_TEMPLATE, context, template_dir)
    text_doc = _render(text_env, TEXT_TEMPLATE, context, template_dir)
    inlined = inline_css(html_doc)
    if "<!doctype" not in inlined[:200].lower():
        inlined = "<!DOCTYPE html>\n" + inlined
    html_parts, text_parts = table.split(inlined), table.split(text_doc)
    return RenderedIssue(
        subject=subject,
        preheader=article.summary,
        html_parts=html_parts,
        text_parts=text_parts,
        html_size=len(inlined.encode()),
        text_size=len(text_doc.encode()),
        warnings=_lint(html_parts, text_parts, postal_address, len(inlined.encode())),
    )


def _shows_unsubscribe(parts: Sequence[str | Field]) -> bool:
    return any(isinstance(p, Field) and p.base_name == "unsubscribe_url" for p in parts)


def _lint(
    html_parts: Sequence[str | Field], text_parts: Sequence[str | Field], postal_address: str, size: int
) -> tuple[str, ...]:
    """What a bulk sender must not ship without noticing (CAN-SPAM, Gmail's requirements)."""
    found: list[str] = []
    for part, parts in (("HTML", html_parts), ("text", text_parts)):
        if not _shows_unsubscribe(parts):
            found.append(f"the {part} template shows no unsubscribe link ({{{{ unsubscribe_url }}}})")
        if not postal_address:
            continue
        shown = "".join(p for p in parts if isinstance(p, str))
        if html.escape(postal_address) not in shown and postal_address not in shown:
            found.append(f"the {part} template does not show DISPATCH_POSTAL_ADDRESS")
    if not postal_address:
        found.append("DISPATCH_POSTAL_ADDRESS is not set: the law in many places asks for one")
    if size > GMAIL_CLIP_BYTES:
        found.append(f"the HTML is {size // 1024} KB: Gmail clips messages over about 100 KB")
    return tuple(found)
