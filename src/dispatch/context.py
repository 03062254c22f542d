"""What a template can see: plain data only.

Templates may come from someone the sender does not fully trust, so the context holds
strings, numbers, booleans, lists and dicts of them, and the per-recipient placeholders of
:mod:`dispatch.fields`: no paths, no settings objects, nothing whose methods reach files, the
environment or code. Every name here is documented in the README ("Templates").
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Mapping, Sequence
from typing import Any

import jinja2

from dispatch.article import Article
from dispatch.fields import Field, FieldTable


def column_key(name: str) -> str:
    """``First Name`` → ``first_name``: how a CSV column is reachable as an attribute."""
    return re.sub(r"\W+", "_", name.strip().lower()).strip("_")


def plain(value: Any) -> Any:
    """Front-matter values as plain data: dates become ISO text, anything unknown its text."""
    if value is None or isinstance(value, str | bool | int | float):
        return value
    if isinstance(value, dt.date | dt.datetime | dt.time):
        return value.isoformat()
    if isinstance(value, Mapping):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [plain(v) for v in value]
    return str(value)


def article_data(article: Article) -> dict[str, Any]:
    """The article as a template sees it (``article.title``, ``article.blocks`` …)."""
    return {
        "title": article.title,
        "subject": article.subject,
        "subtitle": article.subtitle,
        "preheader": article.preheader,
        "summary": article.summary,
        "motto": article.motto,
        "motto_attribution": article.motto_attribution,
        "author": article.author,
        "byline": article.byline,
        "kicker": article.kicker,
        "date": article.date,
        "body_html": article.body_html,
        "body_text": article.body_text,
        "links": list(article.links),
        "blocks": [{"kind": b.kind, "text": b.text} for b in article.blocks],
        "paragraphs": article.paragraphs,
        "meta": plain(article.meta),
        "file_name": article.source.name,
    }


class SubscriberFields(dict[str, Field]):
    """``subscriber.<column>`` (or ``subscriber["Column Name"]``): a placeholder per column; a
    column the list does not have is an error that lists the ones it has."""

    def __missing__(self, key: str) -> Any:
        shown = ", ".join(sorted({k for k in self if k == column_key(k)}))
        return jinja2.StrictUndefined(
            hint=f"{key!r} is not a column of the subscriber list (columns: {shown})"
        )


def subscriber_fields(table: FieldTable, columns: Sequence[str]) -> SubscriberFields:
    """Placeholders for ``email``, ``name`` and every CSV column, by key and by header."""
    fields = SubscriberFields()
    for column in ["email", "name", *columns]:
        key = column_key(column)
        if key:
            fields[key] = fields[column] = table.base(key, f"subscriber.{key}")
    return fields


def template_context(
    article: Article,
    table: FieldTable,
    *,
    subject: str,
    columns: Sequence[str],
    organization: str = "",
    postal_address: str = "",
    test_send: bool = False,
) -> dict[str, Any]:
    """Everything a template can use, as plain data (see the README's table)."""
    data = article_data(article)
    return {
        "article": data,
        "meta": data["meta"],
        "subject": subject,
        "preheader": article.summary,
        "organization": organization,
        "postal_address": postal_address,
        "test_send": test_send,
        "subscriber": subscriber_fields(table, columns),
        "email": table.base("email", "email"),
        "name": table.base("name", "name"),
        "unsubscribe_url": table.base("unsubscribe_url", "unsubscribe_url"),
    }
