"""Raw HTML in an article, made email-safe with nh3: static markup only, active content
(``<script>``, ``<iframe>``, ``<form>`` ...) dropped with what it holds, and no link an email
cannot follow."""

from __future__ import annotations

import re

import nh3

_ALLOWED_TAGS = {
    "a", "abbr", "b", "blockquote", "br", "caption", "cite", "code", "del", "div", "em",
    "figcaption", "figure", "h1", "h2", "h3", "h4", "h5", "h6", "hr", "i", "img", "li", "ol",
    "p", "pre", "q", "s", "small", "span", "strong", "sub", "sup", "table", "tbody", "td",
    "tfoot", "th", "thead", "tr", "u", "ul",
}  # fmt: skip
_ALLOWED_ATTRIBUTES = {
    "a": {"href", "title"},
    "img": {"src", "alt", "title", "width", "height"},
    "td": {"align", "colspan", "rowspan", "style"},
    "th": {"align", "colspan", "rowspan", "style"},
    "ol": {"start"},
}
DROPPED_WITH_CONTENT = {
    "script", "style", "iframe", "form", "object", "embed", "noscript", "template", "textarea",
    "select", "button", "svg", "math", "audio", "video", "canvas",
}  # fmt: skip
TAG = re.compile(r"<[^>]*>")
TAG_NAME = re.compile(r"<(/?)([a-zA-Z][a-zA-Z0-9-]*)")


# A file beside the article: no scheme, no host; spaces inside the name are kept (browsers
# read <img src="my chart.png"> as my%20chart.png), and dispatch.compose.assets finds the file.
_LOCAL_FILE = re.compile(r"(?![A-Za-z][A-Za-z0-9+.-]*:)(?!//)[^\s\\](?:[^\\\t\n\r\f\v]*[^\s\\])?")


def _absolute_links_only(_element: str, attribute: str, value: str) -> str | None:
    """An email has no page to be relative to: relative and scheme-less links are dropped. An
    image may name a file beside the article (``chart.png``): it is embedded when the issue is
    planned (dispatch.compose.assets)."""
    low = value.lower()
    if attribute == "href" and not low.startswith(("https://", "http://", "mailto:")):
        return None
    if attribute == "src":
        value = value.strip(" \t\n\r\f")  # HTML ignores the spaces around a URL
        if not (low.strip().startswith(("https://", "http://")) or _LOCAL_FILE.fullmatch(value)):
            return None
    return value


_EMPTY_LINK = re.compile(r"<a>(.*?)</a>", re.DOTALL)
_NO_SRC_IMAGE = re.compile(r"<img(?![^>]*\ssrc=)[^>]*>")


def sanitize_html(html: str) -> str:
    """Keep only static, email-safe markup; drop active content with what it holds (and links
    or images left without a target, which would only look broken)."""
    clean = nh3.clean(
        html,
        tags=_ALLOWED_TAGS,
        attributes=_ALLOWED_ATTRIBUTES,
        clean_content_tags=DROPPED_WITH_CONTENT,
        url_schemes={"https", "http", "mailto"},
        attribute_filter=_absolute_links_only,
        link_rel=None,
        strip_comments=True,
        filter_style_properties={"text-align"},
    )
    return _NO_SRC_IMAGE.sub("", _EMPTY_LINK.sub(r"\1", clean))
