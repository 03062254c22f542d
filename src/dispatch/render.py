"""Templates: Jinja2 renders an issue once, premailer inlines its CSS once, and each
recipient's copy is a cheap fill-in of placeholders on the already-inlined issue.

Subscriber fields (``subscriber.name``, any CSV column, ``unsubscribe_url``) render as
opaque placeholder tokens during the one Jinja2 pass. After inlining, the issue is split
on those tokens into literal chunks; personalising is a join with each recipient's values,
HTML-escaped in the HTML part and verbatim in the text part. Subscriber values are never
parsed as template code.
"""

from __future__ import annotations

import html
import logging
import re
import secrets
import traceback
import unicodedata
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import jinja2
from jinja2.sandbox import ImmutableSandboxedEnvironment
from premailer import Premailer

from dispatch.article import Article
from dispatch.errors import TemplateError

HTML_TEMPLATE = "email.html"
TEXT_TEMPLATE = "email.txt"
GMAIL_CLIP_BYTES = 100_000


def builtin_template_dir() -> Path:
    """The packaged templates (inside the wheel), or the checkout's ``templates/``."""
    packaged = Path(str(resources.files("dispatch"))) / "templates"
    if (packaged / HTML_TEMPLATE).is_file():
        return packaged
    return Path(__file__).resolve().parents[2] / "templates"


class FieldInConditionError(Exception):
    """A subscriber field was used where its value is needed during the one issue render."""


@dataclass(frozen=True)
class Field:
    """A per-recipient value, rendered as a placeholder token and filled in later."""

    token: str
    name: str
    fallback: str = ""

    def __str__(self) -> str:
        return self.token

    def __html__(self) -> str:
        return self.token

    def __bool__(self) -> bool:
        raise FieldInConditionError(
            f"subscriber field {self.name!r} is filled in per recipient, after rendering, so it "
            f"cannot be tested with 'if'; write {{{{ subscriber.{self.name} | otherwise('…') }}}}"
        )


@dataclass
class FieldTable:
    """Hands out placeholder tokens; one per (field, fallback)."""

    nonce: str = field(default_factory=lambda: secrets.token_hex(6))
    fields: list[Field] = field(default_factory=list)

    def get(self, name: str, fallback: str = "") -> Field:
        for f in self.fields:
            if f.name == name and f.fallback == fallback:
                return f
        new = Field(f"zqx{self.nonce}f{len(self.fields)}xqz", name, fallback)
        self.fields.append(new)
        return new

    def pattern(self) -> re.Pattern[str]:
        return re.compile(rf"zqx{self.nonce}f(\d+)xqz", re.IGNORECASE)


def column_key(name: str) -> str:
    """``First Name`` → ``first_name``: how a CSV column is reachable as an attribute."""
    return re.sub(r"\W+", "_", name.strip().lower()).strip("_")


class SubscriberFields:
    """``subscriber.<column>`` in templates: a placeholder for each known column."""

    def __init__(self, table: FieldTable, columns: Sequence[str]) -> None:
        self._table = table
        self._columns = {column_key(c): column_key(c) for c in columns}
        self._columns |= {c: column_key(c) for c in columns}

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):
            raise AttributeError(name)
        return self[name]

    def __getitem__(self, name: str) -> Any:
        key = self._columns.get(name)
        if key is None:
            shown = ", ".join(sorted(set(self._columns.values())))
            return jinja2.StrictUndefined(
                hint=f"{name!r} is not a column of the subscriber list (columns: {shown})"
            )
        return self._table.get(key)


def _otherwise_filter(table: FieldTable) -> Callable[[Any, str], Any]:
    def otherwise(value: Any, fallback: str) -> Any:
        """``{{ subscriber.name | otherwise('friend') }}``: the fallback for an empty value."""
        if isinstance(value, Field):
            return table.get(value.name, str(fallback))
        return value or fallback

    return otherwise


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

    def personalise(self, values: Mapping[str, str]) -> tuple[str, str]:
        """This recipient's HTML and text; ``values`` maps field names to plain strings."""
        return (
            _join(self.html_parts, values, escape=True),
            _join(self.text_parts, values, escape=False),
        )


def _join(parts: Sequence[str | Field], values: Mapping[str, str], *, escape: bool) -> str:
    out: list[str] = []
    for part in parts:
        if isinstance(part, str):
            out.append(part)
        else:
            value = values.get(part.name, "") or part.fallback
            out.append(html.escape(value) if escape else value)
    return "".join(out)


def _split(text: str, table: FieldTable) -> tuple[str | Field, ...]:
    pieces = table.pattern().split(text)
    return tuple(table.fields[int(p)] if i % 2 else p for i, p in enumerate(pieces) if p or i % 2)


def display_width(text: str) -> int:
    """Columns the text takes in a terminal: East Asian wide characters count twice."""
    return sum(2 if unicodedata.east_asian_width(c) in "WF" else 1 for c in str(text))


def _environment(template_dir: Path | None, table: FieldTable, *, autoescape: bool) -> jinja2.Environment:
    builtin = builtin_template_dir()
    loaders: list[jinja2.BaseLoader] = []
    if template_dir is not None:
        loaders.append(jinja2.FileSystemLoader(template_dir))
    loaders.append(jinja2.FileSystemLoader(builtin))
    loaders.append(jinja2.PrefixLoader({"builtin": jinja2.FileSystemLoader(builtin)}))
    # Templates may come from a folder the sender does not control: the sandbox keeps them
    # away from Python internals (email-standards SEC-05); it costs nothing, one render per issue.
    env = ImmutableSandboxedEnvironment(
        loader=jinja2.ChoiceLoader(loaders),
        autoescape=autoescape,
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["otherwise"] = _otherwise_filter(table)
    env.filters["display_width"] = display_width
    return env


def _where(err: BaseException, name: str, template_dir: Path | None) -> str:
    """``path/to/email.html line 12`` for a Jinja error, as precisely as it is known."""
    filename = getattr(err, "filename", None)
    lineno = getattr(err, "lineno", None)
    if not lineno:
        for frame in reversed(traceback.extract_tb(err.__traceback__)):
            if frame.filename.endswith((".html", ".txt", ".j2", ".jinja")):
                filename, lineno = frame.filename, frame.lineno
                break
    if not filename:
        candidates = [d / name for d in (template_dir, builtin_template_dir()) if d is not None]
        filename = str(next((c for c in candidates if c.is_file()), name))
    return f"{filename} line {lineno}" if lineno else str(filename)


def _render(env: jinja2.Environment, name: str, context: dict[str, Any], template_dir: Path | None) -> str:
    try:
        return env.get_template(name).render(context)
    except jinja2.TemplateNotFound as err:
        raise TemplateError(f"template {err.name!r} not found in {template_dir or 'built-ins'}") from err
    except jinja2.TemplateSyntaxError as err:
        raise TemplateError(f"{_where(err, name, template_dir)}: {err.message}") from err
    except (jinja2.TemplateError, FieldInConditionError, TypeError, ValueError) as err:
        message = getattr(err, "message", None) or str(err)
        raise TemplateError(f"{_where(err, name, template_dir)}: {message}") from err


def inline_css(document: str) -> str:
    """Inline the CSS of one document with premailer: no network, warnings kept quiet.

    ``strip_important=False`` keeps ``!important`` in the ``@media`` rules left in ``<style>``,
    so the phone layout can still beat the inlined desktop widths.
    """
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
) -> RenderedIssue:
    """Render the HTML and text templates once and inline the CSS once."""
    if template_dir is not None and not template_dir.is_dir():
        raise TemplateError(f"{template_dir}: template folder does not exist")
    table = FieldTable()
    subscriber = SubscriberFields(table, ["email", "name", *columns])
    context: dict[str, Any] = {
        "article": article,
        "subject": subject,
        "preheader": article.summary,
        "organization": organization,
        "postal_address": postal_address,
        "subscriber": subscriber,
        "email": table.get("email"),
        "name": table.get("name"),
        "unsubscribe_url": table.get("unsubscribe_url"),
        "meta": article.meta,
        "test_send": test_send,
    }
    html_env = _environment(template_dir, table, autoescape=True)
    text_env = _environment(template_dir, table, autoescape=False)
    html_doc = _render(html_env, HTML_TEMPLATE, context, template_dir)
    text_doc = _render(text_env, TEXT_TEMPLATE, context, template_dir)
    inlined = inline_css(html_doc)
    if "<!doctype" not in inlined[:200].lower():
        inlined = "<!DOCTYPE html>\n" + inlined
    html_parts, text_parts = _split(inlined, table), _split(text_doc, table)
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
    return any(isinstance(p, Field) and p.name == "unsubscribe_url" for p in parts)


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
