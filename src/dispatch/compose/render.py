"""Templates: Jinja2 renders an issue once, premailer inlines its CSS once, and each
recipient's copy is a cheap fill-in of placeholders on the already-inlined issue.

Templates see plain data only (:mod:`dispatch.compose.context`). Subscriber values render as
placeholder tokens (:mod:`dispatch.compose.fields`) during the one Jinja2 pass; after inlining, the
issue is split on those tokens into literal chunks, and personalising is a join with each
recipient's values (escaped in the HTML part, verbatim in the text part, filters replayed
exactly). Subscriber values are never parsed as template code. Templates load and run as
:mod:`dispatch.compose.sandbox` allows, within time and size limits.
"""

from __future__ import annotations

import signal
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

from dispatch.compose.context import template_context
from dispatch.compose.fields import (
    Field,
    FieldError,
    FieldTable,
    check_parts,
    value_text,
)
from dispatch.compose.inlining import inline_css
from dispatch.compose.sandbox import MAX_OUTPUT_CHARS, TEMPLATE_SUFFIXES, TemplateEnvironment, TemplateLoader
from dispatch.content.article import Article
from dispatch.errors import TemplateError

HTML_TEMPLATE = "email.html"
TEXT_TEMPLATE = "email.txt"
GMAIL_CLIP_BYTES = 100_000
RENDER_SECONDS = 10


def builtin_template_dir() -> Path:
    """The packaged templates (inside the wheel), or the checkout's ``templates/``."""
    packaged = Path(str(resources.files("dispatch"))) / "templates"
    if (packaged / HTML_TEMPLATE).is_file():
        return packaged
    return Path(__file__).resolve().parents[3] / "templates"


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


def _otherwise(value: Any, fallback: str = "") -> Any:
    """``{{ subscriber.name | otherwise('friend') }}``: the fallback for an empty value."""
    return value or fallback


def _environment(template_dir: Path | None, table: FieldTable, *, autoescape: bool) -> TemplateEnvironment:
    builtin = TemplateLoader(builtin_template_dir())
    loaders: list[jinja2.BaseLoader] = []
    if template_dir is not None:
        loaders.append(TemplateLoader(template_dir))
    loaders += [builtin, jinja2.PrefixLoader({"builtin": builtin})]
    # Templates may come from a folder the sender does not control: the sandbox keeps them
    # away from Python internals (email-standards SEC-05), and the context holds plain data.
    env = TemplateEnvironment(
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


def _render(env: TemplateEnvironment, name: str, context: dict[str, Any], template_dir: Path | None) -> str:
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


def render_issue(
    article: Article,
    *,
    subject: str,
    columns: Sequence[str],
    organization: str = "",
    postal_address: str = "",
    template_dir: Path | None = None,
    test_send: bool = False,
    cache: Path | None = None,
    **looks: Any,
) -> RenderedIssue:
    """Render the HTML and text templates once and inline the CSS once (remembered in the
    ``cache`` folder when given: see :mod:`dispatch.compose.inlining`). ``looks`` are passed to
    :func:`dispatch.compose.context.template_context` (language, logo, web_url, web_version…)."""
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
    inlined = inline_css(html_doc, cache, table.nonce)
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
    )


def _shows_unsubscribe(parts: Sequence[str | Field]) -> bool:
    return any(isinstance(p, Field) and p.base_name == "unsubscribe_url" for p in parts)
