"""The plain-text twin of a Markdown body: the same token stream written as wrapped text
(72 columns, or half for East Asian text), links as ``[n]`` references listed once, tables as
aligned columns, and each block kept with its kind for the templates."""

from __future__ import annotations

import re
import textwrap
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass, field

from markdown_it.token import Token

from dispatch.content.sanitize import DROPPED_WITH_CONTENT, TAG, TAG_NAME, sanitize_html

TEXT_WIDTH = 72


@dataclass(frozen=True)
class Block:
    """One body block, as a reader sees it: its kind and its plain text."""

    kind: str  # paragraph, heading, list, quote, code, image, rule, table, html
    text: str


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
                tag = TAG_NAME.match(tok.content)
                closing, name = (tag[1] == "/", tag[2].lower()) if tag else (False, "")
                if skipping and closing and name == skipping:
                    skipping = ""
                elif not skipping and not closing and name in DROPPED_WITH_CONTENT:
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


class _TextRenderer:
    """The plain-text twin, token by token: what is open (quotes, lists, a heading, a table)
    and the blocks written so far."""

    def __init__(self) -> None:
        self.writer = _TextWriter()
        self.chunks: list[str] = []
        self.prefix: list[str] = []  # "> " for each open blockquote
        self.lists: list[int] = []  # next number of each open ordered list, -1 for bullets
        self.heading = 0
        self.item_first = False
        self.items_seen = 0  # list items already written in the current (outermost) list
        self.table: _Table | None = None

    def add(self, kind: str, rendered: str, text: str, *, attach: bool = False) -> None:
        """Add a block; ``attach`` keeps it on the next line of the previous one (list items)."""
        if not rendered.strip():
            return
        if attach and self.chunks:
            self.chunks[-1] += "\n" + rendered
        else:
            self.chunks.append(rendered)
        self.writer.blocks.append(Block(kind, text))

    def structure(self, tok: Token) -> bool:
        """Open or close a quote, a list, a heading or a table; False for any other token."""
        match tok.type:
            case "blockquote_open":
                self.prefix.append("> ")
            case "blockquote_close":
                self.prefix.pop()
            case "bullet_list_open":
                self.lists.append(-1)
            case "ordered_list_open":
                self.lists.append(int(tok.attrGet("start") or 1))
            case "bullet_list_close" | "ordered_list_close":
                self.lists.pop()
                self.items_seen = self.items_seen if self.lists else 0
            case "list_item_open":
                self.item_first = True
            case "heading_open":
                self.heading = int(tok.tag[1:])
            case "heading_close":
                self.heading = 0
            case _:
                return self.table_token(tok)
        return True

    def table_token(self, tok: Token) -> bool:
        """A table's structure and cells (kept, then written whole at its end)."""
        table, quote = self.table, "".join(self.prefix)
        match tok.type:
            case "table_open":
                self.table = _Table()
            case "thead_close" if table is not None:
                table.header = bool(table.rows)
            case "th_open" | "td_open" if table is not None:
                table.align(str(tok.attrGet("style") or ""))
            case "tr_open" if table is not None:
                table.rows.append([])
            case "inline" if table is not None and table.rows:
                table.rows[-1].append(self.writer.inline(tok.children)[0].strip())
            case "table_close" if table is not None:
                rendered = table.render(quote)
                if rendered.strip():
                    self.chunks.append(rendered)
                    self.writer.blocks.extend(Block("table", " | ".join(row)) for row in table.rows)
                self.table = None
            case _:
                return False
        return True

    def inline(self, tok: Token) -> None:
        """A run of text: a heading, a list item, a picture or a paragraph."""
        quote = "".join(self.prefix)
        text, plain = (part.strip() for part in self.writer.inline(tok.children))
        if self.heading:
            rule = "-"  # "=" is for the title, in the template
            self.add("heading", f"{quote}{text}\n{quote}{rule * min(len(text), TEXT_WIDTH)}", plain)
        elif self.lists:
            marker = f"{self.lists[-1]}. " if self.lists[-1] >= 0 else "- "
            if self.item_first and self.lists[-1] >= 0:
                self.lists[-1] += 1
            shown = marker if self.item_first else " " * len(marker)
            depth = quote + "  " * (len(self.lists) - 1)
            wrapped = _wrap(text, depth + shown, depth + " " * len(marker))
            self.add("list", wrapped, plain, attach=self.items_seen > 0)
            self.items_seen += 1
            self.item_first = False
        elif _only_images(tok.children):
            self.add("image", quote + text, plain)
        else:
            self.add("quote" if quote else "paragraph", _wrap(text, quote, quote), plain)

    def block(self, tok: Token) -> None:
        """Code, a rule or a block of HTML (its text)."""
        quote = "".join(self.prefix)
        if tok.type in ("fence", "code_block"):
            code = tok.content.rstrip("\n")
            self.add("code", "\n".join(quote + "    " + line for line in code.split("\n")), code)
        elif tok.type == "hr":
            self.add("rule", quote + "-" * 24, "")
        elif tok.type == "html_block":
            text = " ".join(TAG.sub(" ", sanitize_html(tok.content)).split())
            self.add("html", _wrap(text, quote, quote), text)


def render_text(tokens: Sequence[Token]) -> tuple[str, list[str], list[Block]]:
    """(text, its links in ``[n]`` order, its blocks) of a markdown-it token stream."""
    renderer = _TextRenderer()
    for tok in tokens:
        if renderer.structure(tok):
            continue
        if tok.type == "inline":
            renderer.inline(tok)
        else:
            renderer.block(tok)
    return "\n\n".join(renderer.chunks), renderer.writer.links, renderer.writer.blocks


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
