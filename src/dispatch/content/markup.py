"""Markdown (CommonMark) to email-safe HTML and to a plain-text twin.

Both outputs come from one markdown-it token stream, so the HTML and the text part always
carry the same content. Raw HTML in the source is sanitised with nh3: active content
(``<script>``, ``<iframe>``, ``<form>`` ...) never reaches the email. Straight quotes and
double hyphens become typographic ones (markdown-it's typographer); tables in the text part
are aligned columns; :func:`demote_headings` fits body headings under the issue's title.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from markdown_it import MarkdownIt
from markdown_it.token import Token

from dispatch.content.sanitize import sanitize_html
from dispatch.content.textpart import Block, render_text

ENGLISH_QUOTES = "“”‘’"


def _parser(quotes: str = ENGLISH_QUOTES) -> MarkdownIt:
    options = {"html": True, "linkify": True, "typographer": True, "quotes": quotes}
    rules = ["table", "strikethrough", "linkify", "replacements", "smartquotes"]
    return MarkdownIt("commonmark", options).enable(rules)


_HEADING_TAG = re.compile(r"<(/?)h([1-6])(?=[\s>])", re.IGNORECASE)
# CommonMark's raw HTML blocks that end only at their closing marker (spec 4.6, kinds 1 to 5):
# left open, one runs to the end of the article, and the sanitiser then drops all of it.
_OPEN_TO_THE_END = tuple(
    (re.compile(start, re.IGNORECASE), re.compile(end, re.IGNORECASE))
    for start, end in (
        (r"<(?:script|pre|style|textarea)(?=[\s>]|$)", r"</(?:script|pre|style|textarea)>"),
        (r"<!--", r"-->"),
        (r"<\?", r"\?>"),
        (r"<![A-Za-z]", r">"),
        (r"<!\[CDATA\[", r"\]\]>"),
    )
)


def _unclosed_html(tokens: list[Token]) -> None:
    """ValueError for a raw HTML block that swallows the rest of the article (a stray
    ``<style>`` or ``<!--`` line): nothing after it would reach the email, and nothing would say so."""
    for token in tokens:
        if token.type != "html_block":
            continue
        head = token.content.lstrip()
        for start, end in _OPEN_TO_THE_END:
            opened = start.match(head)
            if opened and not end.search(head, opened.end()):
                line = head.split("\n", 1)[0].strip()[:60]
                raise ValueError(
                    f"the raw HTML {line!r} is never closed, so everything after it would be dropped "
                    "from the email; close it or remove that line"
                )


def demote_headings(html: str, top: int = 2) -> str:
    """Fit the body's headings under the title: the first level used becomes ``top`` (h2), and
    each heading is at most one level below the one it follows, so levels never skip
    (``# A`` / ``### B`` → h2 / h3). Raw HTML headings count the same as Markdown ones."""
    open_levels: list[int] = []  # the source levels of the sections we are in
    current = top

    def replace(match: re.Match[str]) -> str:
        nonlocal current
        if match[1]:
            return f"</h{current}"
        level = int(match[2])
        while open_levels and open_levels[-1] >= level:
            open_levels.pop()
        open_levels.append(level)
        current = min(top - 1 + len(open_levels), 6)
        return f"<h{current}"

    return _HEADING_TAG.sub(replace, html)


@dataclass(frozen=True)
class RenderedBody:
    """An article body as sanitised HTML, wrapped text with link references, and blocks."""

    html: str
    text: str
    links: tuple[str, ...]
    blocks: tuple[Block, ...]


def render_markdown(source: str, *, quotes: str = ENGLISH_QUOTES) -> RenderedBody:
    """Render CommonMark source to sanitised HTML, wrapped text and a block list; ``quotes``
    are the four marks straight quotes become (double open/close, single open/close)."""
    md = _parser(quotes)
    tokens = md.parse(source)
    _unclosed_html(tokens)
    html = sanitize_html(md.renderer.render(tokens, md.options, {}))
    text, links, blocks = render_text(tokens)
    return RenderedBody(html=html, text=text, links=tuple(links), blocks=tuple(blocks))
