"""What a template can see: plain data only.

Templates may come from someone the sender does not fully trust, so the context holds
strings, numbers, booleans, lists and dicts of them (and, per recipient, the recipient's values
as strings: :mod:`dispatch.compose.values`): no paths, no settings objects, nothing whose methods reach
files, the environment or code. Every name here is documented in the README ("Templates").
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from typing import Any

from dispatch.compose.values import Fields
from dispatch.content.article import Article
from dispatch.content.language import FALLBACK, choose_language, direction, iso_date, readable_date, words
from dispatch.content.markup import demote_headings
from dispatch.content.textpart import wrap_without_orphan
from dispatch.errors import ConfigError

MOTTO_WIDTH = 70  # the text part's motto, inside its quote marks
LOGO_BOX = (200, 60)  # the most room a masthead logo takes, in CSS pixels (width, height)


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


def article_data(article: Article, lang: str = FALLBACK) -> dict[str, Any]:
    """The article as a template sees it (``article.title``, ``article.blocks`` …), with its
    headings fitted under the title and its date and byline written for a reader in ``lang``."""
    said = words(lang)
    quotes = said["quotes"]
    motto = f"{quotes[0]}{article.motto}{quotes[-1]}" if article.motto else ""
    author_line = said["by"].replace("{author}", article.author) if article.author else ""
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
        "date_text": readable_date(article.date, lang),
        "byline_text": article.byline or author_line,
        "motto_text": wrap_without_orphan(motto, MOTTO_WIDTH),
        "body_html": demote_headings(article.body_html),
        "body_text": article.body_text,
        "links": list(article.links),
        "blocks": [{"kind": b.kind, "text": b.text} for b in article.blocks],
        "paragraphs": article.paragraphs,
        "meta": plain(article.meta),
        "file_name": article.source.name,
    }


def article_language(article: Article, setting: str = "") -> str:
    """Front matter ``lang:``, else ``DISPATCH_LANGUAGE``, else what the text is written in."""
    sample = "\n".join([article.title, article.subtitle, *(b.text for b in article.blocks)])
    return choose_language(article.meta.get("lang"), setting, sample)


def logo_data(logo: Mapping[str, Any] | None, organization: str) -> dict[str, Any] | None:
    """A masthead logo as plain data, scaled to fit the masthead, or None.

    ``src`` must be an https URL or a ``cid:`` reference to an embedded part. The logo stands
    for the organisation's name in the masthead, so its alt text is the name unless given."""
    if not logo:
        return None
    src = str(logo.get("src") or "")
    if not src.startswith(("https://", "cid:")):
        raise ConfigError(f"the logo must be an https:// URL or an embedded cid: image, not {src!r}")
    try:
        width, height = int(logo.get("width") or 0), int(logo.get("height") or 0)
    except (TypeError, ValueError) as err:
        raise ConfigError(f"the logo's width and height must be whole numbers: {err}") from err
    if width <= 0 or height <= 0:
        raise ConfigError("the logo needs its width and height in pixels")
    scale = min(1.0, LOGO_BOX[0] / width, LOGO_BOX[1] / height)
    alt = " ".join(str(logo.get("alt") or organization).split())
    return {
        "src": src,
        "alt": alt,
        "width": max(1, round(width * scale)),
        "height": max(1, round(height * scale)),
    }


def _web_url(url: str) -> str:
    url = url.strip()
    if url and not url.startswith(("https://", "http://")):
        raise ConfigError(f"the web version's address must start with https://, not {url!r}")
    return url


def _wording(lang: str, issue_number: str) -> dict[str, str]:
    """dispatch's own words for the templates, with the recipient's address split out of the
    footer's sentence (``reason_before`` + address + ``reason_after``) and the issue labelled."""
    said = words(lang)
    before, _, after = said.pop("reason").partition("{email}")
    number = issue_number.lstrip("#").strip()
    said["issue"] = said["issue"].replace("{n}", number) if number.isdigit() else issue_number
    return {**said, "reason_before": before, "reason_after": after}


def template_context(
    article: Article,
    *,
    subject: str,
    columns: Sequence[str],
    organization: str = "",
    postal_address: str = "",
    test_send: bool = False,
    language: str = "",
    logo: Mapping[str, Any] | None = None,
    web_url: str = "",
    issue_date: str = "",
    web_version: bool = False,
) -> dict[str, Any]:
    """Everything a template can use, as plain data (see the README's table), with each
    recipient value (``email``, ``name``, ``unsubscribe_url``, ``subscriber.<column>``) empty:
    a render puts the recipient's own in (:meth:`dispatch.compose.values.Fields.context`).

    ``language`` is ``DISPATCH_LANGUAGE``; ``logo`` a ``{src, alt, width, height}``
    mapping or None; ``web_url`` the issue's web version ("" for none); ``issue_date`` the
    masthead's date (ISO or as written) when it is not the article's own date; ``web_version``
    true for the copy published on the web (``preview --archive``: no personal data).
    """
    lang = article_language(article, language)
    written_dir = str(article.meta.get("dir") or "").strip().lower()
    data = article_data(article, lang)
    issue = article.meta.get("issue")
    issue_number = "" if issue is None else " ".join(str(plain(issue)).split())
    dated = issue_date or article.date
    return {
        "article": data,
        "meta": data["meta"],
        "subject": subject,
        "preheader": article.summary,
        "organization": organization,
        "postal_address": postal_address,
        "test_send": test_send,
        "lang": lang,
        "dir": written_dir if written_dir in {"ltr", "rtl"} else direction(lang),
        "issue_date": readable_date(dated, lang),
        "issue_date_iso": iso_date(dated),
        "issue_number": issue_number,
        "logo": logo_data(logo, organization),
        "web_url": "" if web_version else _web_url(web_url),
        "web_version": web_version,
        "words": _wording(lang, issue_number),
        **Fields.for_columns(columns).context({}),
    }
