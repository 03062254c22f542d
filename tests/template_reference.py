"""The yardstick for every message: this recipient rendered with a stock Jinja2 sandbox and plain
``str`` values, then inlined by premailer with dispatch's options.

Nothing of dispatch's rendering machinery is used: only the template context's issue data
(``dispatch.compose.context.template_context``, the same input for both), premailer's option table
(``dispatch.compose.inlining._OPTIONS``) and the two filters dispatch adds (``otherwise``,
``display_width``). The HTML is compared as parsed by lxml — the same elements, attributes,
inline style declarations and text — and the text part byte for byte.
"""

from __future__ import annotations

import base64
import logging
import quopri
import re
from collections.abc import Mapping
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import jinja2
from jinja2.sandbox import ImmutableSandboxedEnvironment
from lxml import etree
from premailer import Premailer

from dispatch.compose.context import template_context
from dispatch.compose.inlining import _OPTIONS
from dispatch.compose.issue import Issue
from dispatch.compose.render import _otherwise, builtin_template_dir, display_width
from dispatch.lists.subscribers import Subscriber


def _key(column: str) -> str:
    return re.sub(r"\W+", "_", column.strip().lower()).strip("_")


def environment(template_dir: Path | None, *, autoescape: bool) -> jinja2.Environment:
    """A stock immutable sandbox with dispatch's loader order and options."""
    builtin = jinja2.FileSystemLoader(builtin_template_dir())
    loaders: list[jinja2.BaseLoader] = [jinja2.FileSystemLoader(template_dir)] if template_dir else []
    loaders += [builtin, jinja2.PrefixLoader({"builtin": builtin})]
    env = ImmutableSandboxedEnvironment(
        loader=jinja2.ChoiceLoader(loaders), autoescape=autoescape, undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True, trim_blocks=True, lstrip_blocks=True,
    )  # fmt: skip
    env.filters["otherwise"] = _otherwise
    env.filters["display_width"] = display_width
    return env


def recipient_context(issue: Issue, sub: Subscriber, link: str) -> dict[str, Any]:
    """The issue's data and this recipient's values, as plain strings."""
    settings = issue.settings
    context = template_context(
        issue.article, subject=issue.subject, columns=issue.subscribers.columns,
        organization=settings.organization, postal_address=settings.postal_address,
        test_send=issue.test_send, language=settings.language,
    )  # fmt: skip
    own = {"email": sub.email, "name": sub.name}
    subscriber: dict[str, str] = {}
    for column in ["email", "name", *sub.fields]:  # by key, then by header, as documented
        value = own.get(_key(column), sub.fields.get(column, ""))
        subscriber[_key(column)] = subscriber[column] = value
    return {
        **context,
        "email": sub.email,
        "name": sub.name,
        "unsubscribe_url": link,
        "subscriber": subscriber,
    }


def premailer(document: str) -> str:
    """premailer with dispatch's options, and the doctype dispatch adds when none is left."""
    inlined = str(
        Premailer(
            document, cssutils_logging_handler=logging.NullHandler(), cssutils_logging_level=logging.CRITICAL,
            **_OPTIONS,
        ).transform()
    )  # fmt: skip
    return inlined if "<!doctype" in inlined[:200].lower() else "<!DOCTYPE html>\n" + inlined


def render(template_dir: Path | None, context: Mapping[str, Any]) -> tuple[str, str]:
    """(HTML after premailer, text) of a per-recipient render."""
    html = environment(template_dir, autoescape=True).get_template("email.html").render(context)
    text = environment(template_dir, autoescape=False).get_template("email.txt").render(context)
    return premailer(html), text


# --------------------------------------------------------------------------- comparing


def _style(value: str) -> list[tuple[str, str]]:
    declarations = [d.split(":", 1) for d in value.split(";") if d.strip()]
    return [(p.strip().lower(), v.strip()) for p, v in declarations]


def _shape(element: Any) -> Any:
    """An element as comparable data: tag, attributes (``style`` as declarations), text, children."""
    if not isinstance(element.tag, str):
        return ("comment" if element.tag is etree.Comment else "other", element.text, element.tail)
    attributes = {k: (_style(v) if k == "style" else v) for k, v in element.attrib.items()}
    return (element.tag, attributes, element.text, [_shape(c) for c in element], element.tail)


def parsed(html: str) -> Any:
    """An HTML document as lxml parses it, as comparable data (the doctype included)."""
    tree = etree.fromstring(html.strip(), etree.HTMLParser()).getroottree()
    return (tree.docinfo.doctype, _shape(tree.getroot()))


def first_difference(ours: Any, theirs: Any, path: str = "") -> str:
    """Where two parsed documents first differ (for a readable failure)."""
    if type(ours) is not type(theirs) or not isinstance(ours, list | tuple | dict):
        return f"{path}: {ours!r} != {theirs!r}"
    if isinstance(ours, dict):
        for key in sorted(set(ours) | set(theirs)):
            if ours.get(key) != theirs.get(key):
                return f"{path}@{key}: {ours.get(key)!r} != {theirs.get(key)!r}"
    if len(ours) != len(theirs):
        return f"{path}: {len(ours)} items != {len(theirs)}: {ours!r:.300} / {theirs!r:.300}"
    for i, (a, b) in enumerate(zip(ours, theirs, strict=True)):
        if a != b:
            return first_difference(a, b, f"{path}/{a[0] if isinstance(a, tuple) and a else i}")
    return path


def body(message: EmailMessage, subtype: str) -> str:
    """A decoded text part, line ends as the template wrote them."""
    part = message.get_body((subtype,))
    assert part is not None, f"no text/{subtype} part"
    return str(part.get_content()).replace("\r\n", "\n")


def assert_exact(message: EmailMessage, expected: tuple[str, str], who: str) -> None:
    """The message's HTML equals the reference's as parsed; its text equals it exactly."""
    html, text = body(message, "html"), wire_text(message)
    ours, theirs = parsed(html), parsed(expected[0])
    assert ours == theirs, f"{who}: HTML differs at {first_difference(ours, theirs)}"
    assert text == expected[1].replace("\r\n", "\n"), f"{who}: text differs:\n{text!r}\n{expected[1]!r}"


def wire_text(message: EmailMessage) -> str:
    """The text part exactly as sent: MIME gives the line break before a boundary to the
    boundary, and dispatch ends every body with one (soft when the text has none), so it is
    put back before decoding."""
    part = message.get_body(("plain",))
    assert part is not None, "no text/plain part"
    payload = str(part.get_payload(decode=False))
    if part["Content-Transfer-Encoding"] == "base64":
        data = base64.b64decode(payload)
    else:
        data = quopri.decodestring((payload + "\r\n").encode("ascii"))
    return data.decode("utf-8").replace("\r\n", "\n")
