"""Templates: each recipient's message is a real Jinja2 render of the templates, inlined by
premailer.

Templates see plain data only (:mod:`dispatch.compose.context`) and the recipient's values as ordinary
strings (:mod:`dispatch.compose.values`); they load and run as :mod:`dispatch.compose.sandbox` allows, within
time and size limits. :mod:`dispatch.compose.personal` shares renders and inlining between recipients
where that provably gives the same message.
"""

from __future__ import annotations

import re
import signal
import threading
import traceback
import unicodedata
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import jinja2

from dispatch.compose.context import template_context
from dispatch.compose.personal import Personaliser, Render
from dispatch.compose.sandbox import (
    MAX_OUTPUT_CHARS,
    TEMPLATE_SUFFIXES,
    TemplateEnvironment,
    TemplateLoader,
)
from dispatch.compose.uses import analyse
from dispatch.compose.values import Fields, Skeleton, Tokens, collect, finalize, same_as
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
    """An issue's templates, ready to render each recipient (see :mod:`dispatch.compose.personal`)."""

    subject: str
    preheader: str
    personal: Personaliser = field(repr=False)
    warnings: tuple[str, ...] = ()
    html_size: int = 0  # bytes of one recipient's HTML (the figure the summary shows)
    text_size: int = 0
    parts_without_unsubscribe: tuple[str, ...] = ()  # "HTML", "text": no unsubscribe link shown

    def personalise(self, values: Mapping[str, str]) -> tuple[str, str]:
        """This recipient's HTML and text (TemplateError naming the template line when the
        templates fail for it); ``values`` maps field names to plain strings."""
        return self.personal.texts(values)


def display_width(text: str) -> int:
    """Columns the text takes in a terminal: East Asian wide characters count twice."""
    return sum(2 if unicodedata.east_asian_width(c) in "WF" else 1 for c in str(text))


def _otherwise(value: Any, fallback: str = "") -> Any:
    """``{{ subscriber.name | otherwise('friend') }}``: the fallback for an empty value."""
    return value or fallback


def _environment(template_dir: Path | None, *, autoescape: bool) -> TemplateEnvironment:
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
        finalize=finalize,
    )
    env.add_filters({"otherwise": _otherwise, "display_width": display_width})
    env.tests["sameas"] = same_as
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


_NOTHING = re.compile(r"\s*(?:(?:<!--.*?-->|<![^>]*>|<\?[^>]*>)\s*)*", re.S)  # spaces, comments, a doctype
Into = tuple[Tokens, Fields]
_ERRORS = (jinja2.TemplateError, TimeoutError, TypeError, ValueError, LookupError, AttributeError,
           ArithmeticError, RecursionError, SyntaxError, MemoryError)  # fmt: skip


def _render(
    env: TemplateEnvironment, name: str, context: dict[str, Any], template_dir: Path | None, into: Into
) -> Skeleton:
    """One template rendered for one recipient, read into its skeleton (``into``: the slot
    tokens and the fields); TemplateError naming the file and line when it fails."""
    try:
        with _time_limit(RENDER_SECONDS):
            done = collect(env.get_template(name).generate(context), into[0], into[1], MAX_OUTPUT_CHARS)
        if name == HTML_TEMPLATE and _NOTHING.fullmatch(done.text):  # premailer finds no root in it
            where = _where(TemplateError(), name, template_dir)
            raise TemplateError(
                f"{where}: the template renders an empty document; write the email's HTML in it"
            )
        return done
    except jinja2.TemplateNotFound as err:
        origin = f"{_where(err, name, template_dir)}: " if err.name != name else ""
        looked = template_dir or "the built-ins"
        raise TemplateError(f"{origin}template {err.name!r} not found (looked in {looked})") from err
    except jinja2.TemplateSyntaxError as err:
        raise TemplateError(f"{_where(err, name, template_dir)}: {err.message}") from err
    except _ERRORS as err:
        message = getattr(err, "message", None) or getattr(err, "msg", None) or str(err) or type(err).__name__
        raise TemplateError(f"{_where(err, name, template_dir)}: {message}") from err


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
    """Load and check the templates, and prepare each recipient's render; inlined documents
    are remembered in the ``cache`` folder when given (see :mod:`dispatch.compose.inlining`). ``looks``
    are passed to :func:`dispatch.compose.context.template_context` (language, logo, web_url…)."""
    if template_dir is not None and not template_dir.is_dir():
        raise TemplateError(f"{template_dir}: template folder does not exist")
    context = template_context(
        article, subject=subject, columns=columns, organization=organization,
        postal_address=postal_address, test_send=test_send, **looks,
    )  # fmt: skip
    fields = Fields.for_columns(columns)
    into: Into = (Tokens(), fields)
    html_env = _environment(template_dir, autoescape=True)
    text_env = _environment(template_dir, autoescape=False)
    for env, name in ((html_env, HTML_TEMPLATE), (text_env, TEXT_TEMPLATE)):
        _load(env, name, template_dir)

    def render(values: Mapping[str, str]) -> Render:
        own = {**context, **fields.context(values)}
        html = _render(html_env, HTML_TEMPLATE, own, template_dir, into)
        return Render(html, _render(text_env, TEXT_TEMPLATE, own, template_dir, into))

    uses = analyse([(html_env, HTML_TEMPLATE), (text_env, TEXT_TEMPLATE)], fields.by_template_name())
    personal = Personaliser(render, uses, fields, into[0], cache)
    return RenderedIssue(subject=subject, preheader=article.summary, personal=personal)


def _load(env: TemplateEnvironment, name: str, template_dir: Path | None) -> None:
    """Compile a template now, so that a syntax error stops the run before any list is read."""
    try:
        env.get_template(name)
    except jinja2.TemplateNotFound as err:
        looked = template_dir or "the built-ins"
        raise TemplateError(f"template {err.name!r} not found (looked in {looked})") from err
    except jinja2.TemplateSyntaxError as err:
        raise TemplateError(f"{_where(err, name, template_dir)}: {err.message}") from err
    except jinja2.TemplateError as err:
        raise TemplateError(f"{_where(err, name, template_dir)}: {err.message or err}") from err
