"""Markdown (CommonMark) to email-safe HTML and to a plain-text twin.

Both outputs come from one markdown-it token stream, so the HTML and the text part always
carry the same content. Raw HTML in the source is sanitised with nh3: active content
(``<script>``, ``<iframe>``, ``<form>`` ...) never reaches the email. Straight quotes and
double hyphens become typographic ones (markdown-it's typographer); tables in the text part
are aligned columns; :func:`demote_headings` fits body headings under the issue's title.
"""

from __future__ import annotations

import re
import textwrap
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass, field

import nh3
from markdown_it import MarkdownIt
from markdown_it.token import Token

TEXT_WIDTH = 72

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
_DROPPED_WITH_CONTENT = {
    "script", "style", "iframe", "form", "object", "embed", "noscript", "template", "textarea",
    "select", "button", "svg", "math", "audio", "video", "canvas",
}  # fmt: skip
_TAG = re.compile(r"<[^>]*>")
_TAG_NAME = re.compile(r"<(/?)([a-zA-Z][a-zA-Z0-9-]*)")


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
        clean_content_tags=_DROPPED_WITH_CONTENT,
        url_schemes={"https", "http", "mailto"},
        attribute_filter=_absolute_links_only,
        link_rel=None,
        strip_comments=True,
        filter_style_properties={"text-align"},
    )
    return _NO_SRC_IMAGE.sub("", _EMPTY_LINK.sub(r"\1", clean))


ENGLISH_QUOTES = "“”‘’"


def _parser(quotes: str = ENGLISH_QUOTES) -> MarkdownIt:
    options = {"html": True, "linkify": True, "typographer": True, "quotes": quotes}
    rules = ["table", "strikethrough", "linkify", "replacements", "smartquotes"]
    return MarkdownIt("commonmark", options).enable(rules)


_HEADING_TAG = re.compile(r"<(/?)h([1-6])(?=[\s>])", re.IGNORECASE)


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
class Block:
    """One body block, as a reader sees it: its kind and its plain text."""

    kind: str  # paragraph, heading, list, quote, code, image, rule, table, html
    text: str


@dataclass(frozen=True)
class RenderedBody:
    """An article body as sanitised HTML, wrapped text with link references, and blocks."""

    html: str
    text: str
    links: tuple[str, ...]
    blocks: tuple[Block, ...]


@dataclass
class _TextWriter:
    links: list[str] = field(default_factory=list)
    blocks: list[Block] = field(default_factory=list)

    def inline(self, children: Sequence[Token] | None) -> tuple[str, str]:
        """(text with ``[n]`` link references, plain text without them)."""
        out: list[str] = []
        refs: set[int] = set()  # positions in ``out`` that hold a reference marker
        href_stack: list[str] = []
        skipping = ""  # inside raw <script> (or similar): its content never shows
        for tok in children or ():
            if tok.type == "html_inline":
                tag = _TAG_NAME.match(tok.content)
                closing, name = (tag[1] == "/", tag[2].lower()) if tag else (False, "")
                if skipping and closing and name == skipping:
                    skipping = ""
                elif not skipping and not closing and name in _DROPPED_WITH_CONTENT:
                    skipping = name
                elif not skipping and name == "br":
                    out.append("\n")
            elif skipping:
                continue
            elif tok.type in {"s_open", "s_close"}:
                out.append("~~")  # struck-out text must not read as current in the text part
            elif tok.type in {"text", "code_inline"}:
                out.append(tok.content)
            elif tok.type == "softbreak":
                out.append(" ")
            elif tok.type == "hardbreak":
                out.append("\n")
            elif tok.type == "link_open":
                href_stack.append(str(tok.attrGet("href") or ""))
            elif tok.type == "link_close" and href_stack:
                refs.add(len(out))
                out.append(self._ref(href_stack.pop(), "".join(out)))
            elif tok.type == "image":
                out.append(f"[{tok.content or 'image'}]")
                refs.add(len(out))
                out.append(self._ref(str(tok.attrGet("src") or ""), ""))
        plain = "".join(piece for i, piece in enumerate(out) if i not in refs)
        return _squeeze("".join(out)), _squeeze(plain)

    def _ref(self, href: str, shown: str) -> str:
        """`` [n]`` for a link (numbered in order of first use), or "" where none is needed."""
        if not href.startswith(("https://", "http://", "mailto:")):
            return ""
        if shown.endswith(href.removeprefix("mailto:")):
            return ""  # an autolink already shows its own address
        if href not in self.links:
            self.links.append(href)
        return f" [{self.links.index(href) + 1}]"


def _squeeze(text: str) -> str:
    return "\n".join(" ".join(line.split()) for line in text.split("\n"))


def _wide(text: str) -> bool:
    """Mostly East Asian wide characters (two columns each, and no spaces between words)."""
    wide = sum(unicodedata.east_asian_width(c) in "WF" for c in text)
    return wide * 3 > len(text)


def _wrap(text: str, first: str = "", rest: str = "", width: int = TEXT_WIDTH) -> str:
    lines: list[str] = []
    for i, piece in enumerate(text.split("\n")):
        wide = _wide(piece)
        lines.append(
            textwrap.fill(
                piece,
                width=width // 2 if wide else width,
                initial_indent=first if i == 0 else rest,
                subsequent_indent=rest,
                break_long_words=wide,
                break_on_hyphens=False,
            )
            or (first if i == 0 else rest).rstrip()
        )
    return "\n".join(lines)


def wrap_without_orphan(text: str, width: int = TEXT_WIDTH) -> str:
    """Wrap ``text`` so that its last line never holds one word alone (a typographer's orphan):
    narrower measures are tried, down to two thirds of ``width``, until the last word has
    company. Text without spaces (Chinese, Japanese) is wrapped as usual."""
    if _wide(text) or " " not in text.strip():
        return _wrap(text, width=width)
    measure = width
    lines = textwrap.wrap(text, measure, break_long_words=False, break_on_hyphens=False)
    while len(lines) > 1 and " " not in lines[-1] and measure > width * 2 // 3:
        measure -= 1
        lines = textwrap.wrap(text, measure, break_long_words=False, break_on_hyphens=False)
    return "\n".join(lines)


def _render_text(tokens: Sequence[Token]) -> tuple[str, list[str], list[Block]]:  # noqa: PLR0915 - one flat token switch
    writer = _TextWriter()
    chunks: list[str] = []
    prefix: list[str] = []  # "> " for each open blockquote
    lists: list[int] = []  # next number of each open ordered list, -1 for bullets
    heading = 0
    item_first = False
    items_seen = 0  # list items already written in the current (outermost) list
    table: _Table | None = None

    def add(kind: str, rendered: str, text: str, *, attach: bool = False) -> None:
        """Add a block; ``attach`` keeps it on the next line of the previous one (list items)."""
        if not rendered.strip():
            return
        if attach and chunks:
            chunks[-1] += "\n" + rendered
        else:
            chunks.append(rendered)
        writer.blocks.append(Block(kind, text))

    for tok in tokens:
        quote = "".join(prefix)
        match tok.type:
            case "blockquote_open":
                prefix.append("> ")
            case "blockquote_close":
                prefix.pop()
            case "bullet_list_open":
                lists.append(-1)
            case "ordered_list_open":
                lists.append(int(tok.attrGet("start") or 1))
            case "bullet_list_close" | "ordered_list_close":
                lists.pop()
                items_seen = items_seen if lists else 0
            case "table_open":
                table = _Table()
            case "thead_close" if table is not None:
                table.header = bool(table.rows)
            case "th_open" | "td_open" if table is not None:
                table.align(str(tok.attrGet("style") or ""))
            case "table_close" if table is not None:
                rendered = table.render(quote)
                if rendered.strip():
                    chunks.append(rendered)
                    writer.blocks.extend(Block("table", " | ".join(row)) for row in table.rows)
                table = None
            case "list_item_open":
                item_first = True
            case "heading_open":
                heading = int(tok.tag[1:])
            case "heading_close":
                heading = 0
            case "tr_open" if table is not None:
                table.rows.append([])
            case "inline" if table is not None and table.rows:
                table.rows[-1].append(writer.inline(tok.children)[0].strip())
            case "inline":
                text, plain = (part.strip() for part in writer.inline(tok.children))
                if heading:
                    rule = "-"  # "=" is for the title, in the template
                    add(
                        "heading",
                        f"{quote}{text}\n{quote}{rule * min(len(text), TEXT_WIDTH)}",
                        plain,
                    )
                elif lists:
                    marker = f"{lists[-1]}. " if lists[-1] >= 0 else "- "
                    if item_first and lists[-1] >= 0:
                        lists[-1] += 1
                    shown = marker if item_first else " " * len(marker)
                    depth = quote + "  " * (len(lists) - 1)
                    wrapped = _wrap(text, depth + shown, depth + " " * len(marker))
                    add("list", wrapped, plain, attach=items_seen > 0)
                    items_seen += 1
                    item_first = False
                elif _only_images(tok.children):
                    add("image", quote + text, plain)
                else:
                    add("quote" if quote else "paragraph", _wrap(text, quote, quote), plain)
            case "fence" | "code_block":
                code = tok.content.rstrip("\n")
                add("code", "\n".join(quote + "    " + line for line in code.split("\n")), code)
            case "hr":
                add("rule", quote + "-" * 24, "")
            case "html_block":
                text = " ".join(_TAG.sub(" ", sanitize_html(tok.content)).split())
                add("html", _wrap(text, quote, quote), text)
    return "\n\n".join(chunks), writer.links, writer.blocks


def _columns(text: str) -> int:
    """Columns the text takes in a terminal: East Asian wide characters count twice."""
    return sum(2 if unicodedata.east_asian_width(c) in "WF" else 1 for c in text)


@dataclass
class _Table:
    """A table for the text part: aligned columns, or one record per row when too wide."""

    rows: list[list[str]] = field(default_factory=list)
    aligns: list[str] = field(default_factory=list)
    header: bool = False

    def align(self, style: str) -> None:
        if len(self.rows) == 1:  # the first row says how every column is aligned
            found = re.search(r"text-align:\s*(left|right|center)", style)
            self.aligns.append(found[1] if found else "left")

    def render(self, quote: str, width: int = TEXT_WIDTH) -> str:
        count = max((len(row) for row in self.rows), default=0)
        rows = [row + [""] * (count - len(row)) for row in self.rows]
        aligns = self.aligns + ["left"] * (count - len(self.aligns))
        if not rows:
            return ""
        widths = [max(_columns(row[i]) for row in rows) for i in range(count)]
        if sum(widths) + 2 * (count - 1) + len(quote) > width and len(rows) > int(self.header):
            return self._records(rows, quote, width)
        lines = [
            quote + "  ".join(_pad(cell, w, a) for cell, w, a in zip(row, widths, aligns, strict=True))
            for row in rows
        ]
        if self.header:
            lines.insert(1, quote + "  ".join("-" * w for w in widths))
        return "\n".join(line.rstrip() for line in lines)

    def _records(self, rows: list[list[str]], quote: str, width: int) -> str:
        """Too wide for columns: each row as ``Heading: value`` lines, rows apart."""
        names, body = (rows[0], rows[1:]) if self.header else ([""] * len(rows[0]), rows)
        records = []
        for row in body:
            lines = [
                _wrap(f"{name}: {cell}" if name else cell, quote, quote + "  ", width)
                for name, cell in zip(names, row, strict=True)
                if cell
            ]
            records.append("\n".join(lines))
        return f"\n{quote.rstrip()}\n".join(records)


def _pad(cell: str, width: int, align: str) -> str:
    room = width - _columns(cell)
    if align == "right":
        return " " * room + cell
    if align == "center":
        return " " * (room // 2) + cell + " " * (room - room // 2)
    return cell + " " * room


def _only_images(children: Sequence[Token] | None) -> bool:
    kinds = {c.type for c in children or () if not (c.type == "text" and not c.content.strip())}
    return bool(kinds) and kinds <= {"image", "softbreak", "hardbreak", "link_open", "link_close"}


def render_markdown(source: str, *, quotes: str = ENGLISH_QUOTES) -> RenderedBody:
    """Render CommonMark source to sanitised HTML, wrapped text and a block list; ``quotes``
    are the four marks straight quotes become (double open/close, single open/close)."""
    md = _parser(quotes)
    tokens = md.parse(source)
    html = sanitize_html(md.renderer.render(tokens, md.options, {}))
    text, links, blocks = _render_text(tokens)
    return RenderedBody(html=html, text=text, links=tuple(links), blocks=tuple(blocks))
