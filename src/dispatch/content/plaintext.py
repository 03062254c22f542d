"""Plain-text articles: the shape of ``examples/thin-line-in-iraq.txt`` and its relatives.

An optional quoted motto and its attribution, an optional label above the headline, the title,
an optional standfirst, byline and date, then paragraphs (one per line, or separated by blank
lines). The web page around the article (share bars, "Subscribe to our newsletter", related
headlines, copyright lines) is dropped. The body comes out as escaped CommonMark, so plain text
and Markdown share one renderer; nothing in the text is ever read as markup.
"""

from __future__ import annotations

import re

from dispatch.content.leftovers import CLOSE_QUOTES, SHORT_LINE, URL, ends_sentence, strip_leftovers

_DASHES = "—–―-~"
_BYLINE = re.compile(
    r"^((interview|words|text|story|report|reporting|photos?|analysis|commentary|written|edited)\s+)?"
    r"(by|von|par|por|di|door)\s+\S|^(author|autore|auteur|autor|автор)\s*:\s*\S|"
    r"^(posted|published|updated)\b.{0,40}\sby\s+\S",
    re.IGNORECASE,
)
_MONTHS = (
    "jan|feb|mar|apr|may|jun|jul|aug|sep|sept|oct|nov|dec|january|february|march|april|june|"
    "july|august|september|october|november|december"
)
_DATE = re.compile(
    rf"\b(\d{{4}}-\d{{2}}-\d{{2}}|\d{{1,2}}(st|nd|rd|th)? ({_MONTHS})\.? \d{{4}}|"
    rf"({_MONTHS})\.? \d{{1,2}}(st|nd|rd|th)?,? \d{{4}}|\d{{1,2}}[./]\d{{1,2}}[./]\d{{2,4}})\b",
    re.IGNORECASE,
)
_KICKER = re.compile(
    r"(?:[\w&'’.]+ ){0,3}(news|newsletter|update|bulletin|digest|briefing|press release|"
    r"media release|новости|nachrichten|actualités|noticias|notizie|nieuws|communiqué)"
    r"(?:\s*[—–:|-]\s*.{1,30})?",
    re.IGNORECASE,
)
_DATE_TAIL = re.compile(r"\s*[·|,–—-]\s*\d+\s*(min|minute|minutes)\b.*", re.IGNORECASE)
# a byline in another language is shown as written ("Autor: …"); an English one as "By {author}"
_FOREIGN_BYLINE = re.compile(r"^(autore|auteur|autor|автор|von|par|por|di|door)\b", re.IGNORECASE)
_LABELLED_DATE = re.compile(rf"(?:[^\W\d]+[:,]?\s+){{0,3}}(?P<date>{_DATE.pattern})", re.IGNORECASE)
_BULLET = re.compile(r"^\s*([-*•·▪◦]|\d{1,3}[.)]|[a-z][)])\s+(.*)$")
_SALUTATION = re.compile(
    r"(dear|hi|hello|hey|liebe|lieber|cher|chère|caro|cara|querido|querida|beste)\b.{0,40},$", re.I
)
_FOOTNOTE = re.compile(r"^\[\d{1,3}\]\s")
_IMAGE = re.compile(r"^https?://\S+\.(png|jpe?g|gif|webp)(\?\S*)?$", re.IGNORECASE)
_PUNCTUATION = re.compile(r"([\\`*_{}\[\]<>()#+\-.!|~&])")


_PAIRS = {"“": "”", '"': '"', "«": "»", "„": "“”", "‘": "’", "'": "'", "‹": "›", "「": "」", "『": "』"}


def _split_motto(line: str) -> tuple[str, str] | None:
    """``“quote”`` or ``“quote” — Author`` → (quote, attribution); None unless the whole line is
    one quotation (``“A,” she said. “B.”`` is a sentence, not a quote)."""
    line = line.strip()
    if len(line) < 3 or line[0] not in _PAIRS:
        return None
    closers = _PAIRS[line[0]]
    for i in range(1, len(line)):
        if line[i] in closers and not (i + 1 < len(line) and line[i + 1].isalpha()):  # not "don’t"
            rest = line[i + 1 :].strip()
            if rest and rest[0] not in _DASHES:
                return None
            return line[1:i].strip(), rest.lstrip(_DASHES).strip()
    return None


def _closing(line: str) -> str:
    """The closing quotation mark of a quoted line."""
    return next((c for c in reversed(line) if c in CLOSE_QUOTES), "")


def _is_short(line: str) -> bool:
    return 0 < len(line) <= SHORT_LINE and not ends_sentence(line)


def _escape(text: str) -> str:
    """Escape CommonMark syntax in plain text, keeping bare URLs as autolinks."""
    parts = URL.split(text)
    return "".join(f"<{part}>" if i % 2 else _PUNCTUATION.sub(r"\\\1", part) for i, part in enumerate(parts))


def parse(text: str) -> tuple[dict[str, str], str]:
    """(header fields for :class:`dispatch.content.article.Article`, the body as escaped CommonMark).

    ValueError when nothing but a title (or nothing at all) is left once the web page is gone.
    """
    lines = strip_leftovers([line.rstrip() for line in text.split("\n")])
    if not any(line.strip() for line in lines):
        raise ValueError("nothing is left after removing web-page leftovers")
    head: list[str] = []
    alone: list[bool] = []  # the line stands alone: a blank line (or the end) follows it
    for i, raw in enumerate(lines):
        if raw.strip():
            head.append(raw.strip())
            alone.append(i + 1 >= len(lines) or not lines[i + 1].strip())
    date = kicker = ""
    start = 0
    if len(head) > 2 and _dated(head[0]) and _split_motto(head[1]):  # a date line above the motto
        date, start = _dated(head[0]), 1
    motto, attribution, used = _motto(head[start:])
    pos = start + used
    if pos + 1 < len(head) and _dated(head[pos]) and not date:  # a date line above the title
        date = _dated(head[pos])
        pos += 1
    if (
        pos + 2 < len(head)
        and _is_kicker(head[pos], head[pos + 1])
        and (alone[pos + 1] or _is_byline_or_date(head[pos + 2]))  # the headline stands alone
    ):
        kicker = head[pos]  # "University News", "FOR IMMEDIATE RELEASE": a label above the headline
        pos += 1
    title = head[pos].lstrip("#").strip()
    pos += 1
    if pos < len(head) and set(head[pos]) <= set("=-"):
        pos += 1  # a setext underline
    pos, subtitle, author, date, byline = _under_title(head, pos, date)
    body_lines = _body_after(lines, head[:pos])
    if not any(line.strip() for line in body_lines):
        raise ValueError(f"found the title {title!r} but no text after it; add the article's body")
    fields = {"title": title, "subtitle": subtitle, "motto": motto, "motto_attribution": attribution,
              "author": author, "date": date, "kicker": kicker,
              "byline": byline if _FOREIGN_BYLINE.match(byline) else ""}  # fmt: skip
    return fields, _plain_to_markdown(body_lines)


def _under_title(head: list[str], pos: int, date: str) -> tuple[int, str, str, str, str]:
    """What the lines under the title say, up to four of them: (where the body starts,
    subtitle, author, date, byline as written)."""
    subtitle = author = byline = ""
    for _ in range(4):
        if pos >= len(head):
            break
        line = head[pos]
        nxt = head[pos + 1] if pos + 1 < len(head) else ""
        if _BULLET.match(line):
            break  # a list right under the title is body
        if (_BYLINE.match(line) or line[0] in _DASHES) and _is_short(line) and len(line) <= 80 and not author:
            author, date, byline = _byline(line, date)
        elif _dated(line) and not date:
            date = _dated(line)
        elif not author and len(line) <= 80 and _is_short(line) and nxt and _dated(nxt):
            author = line  # a name line right above the date: "Dr. Aiko Tanaka, Plant Sciences"
        elif not subtitle and not author and nxt and len(line) <= 200 and _BYLINE.match(nxt):
            subtitle = line
        else:
            break
        pos += 1
    return pos, subtitle, author, date, byline


def _motto(head: list[str]) -> tuple[str, str, int]:
    """(motto, attribution, lines used) for an opening quotation; ("", "", 0) when there is none."""
    found = _split_motto(head[0])
    if not found or len(head) <= 2 or _BYLINE.match(head[1]):  # a quoted headline, then its byline
        return "", "", 0
    motto, attribution = found
    pos = 1
    if not attribution:
        nxt = head[pos]
        later = [line for line in head[pos + 1 :] if not _dated(line)]  # a date line may come between
        after = later[0] if later else ""
        # An attribution is dashed, or a short line followed by another short line (the title).
        if nxt[0] in _DASHES or (_is_short(nxt) and _is_short(after) and not _is_byline_or_date(after)):
            attribution = nxt.lstrip(_DASHES).strip()
            pos += 1
    if len(head[pos]) > 2 * SHORT_LINE:  # what follows is a paragraph: the quote was the title
        return "", "", 0
    return motto, attribution, pos


def _dated(line: str) -> str:
    """The date of a line that is only a date, perhaps with a short label ("Updated: …") or a
    short tail ("· 4 min read")."""
    line = line.strip(" ,|·")
    found = _LABELLED_DATE.fullmatch(line)
    if found is None and len(line) <= 60:
        found = _LABELLED_DATE.match(line)
        if found and not _DATE_TAIL.fullmatch(line[found.end() :]):
            found = None
    return found["date"] if found else ""


def _is_kicker(line: str, following: str) -> bool:
    """A short label above the headline: all capitals, or a section name ("University News",
    "NGO Update — Spring 2024"), never a headline that merely contains such a word."""
    if len(line) > 60 or ends_sentence(line) or ends_sentence(following) or _is_byline_or_date(following):
        return False
    letters = [c for c in line if c.isalpha()]
    shouting = len(letters) >= 4 and all(c.isupper() for c in letters) and len(line) <= 40
    return shouting or bool(_KICKER.fullmatch(line))


def _is_byline_or_date(line: str) -> bool:
    return bool(_BYLINE.match(line) or _dated(line))


def _byline(line: str, date: str) -> tuple[str, str, str]:
    """(author, date, the byline as written without its date) of a byline line."""
    found = _DATE.search(line)
    if found:
        date = date or found[0]
        line = line[: found.start()] + line[found.end() :]
    shown = line.strip().lstrip(_DASHES).strip().strip(" ,|·-–—")
    author = _BYLINE.sub(lambda m: m[0][-1], shown, count=1)
    return author.strip(" ,|·-–—"), date, shown


def _body_after(lines: list[str], consumed: list[str]) -> list[str]:
    """The lines after the header lines already read (which were non-blank, in order)."""
    left = list(consumed)
    for i, line in enumerate(lines):
        if not left:
            return lines[i:]
        if line.strip() == left[0]:
            left.pop(0)
    return []


def _blocks(lines: list[str]) -> list[list[str]]:
    """Runs of non-blank lines (right-stripped only: indentation marks list continuations)."""
    blocks: list[list[str]] = [[]]
    for line in lines:
        if line.strip():
            blocks[-1].append(line.rstrip())
        elif blocks[-1]:
            blocks.append([])
    return [b for b in blocks if b]


def _plain_to_markdown(lines: list[str]) -> str:
    out: list[tuple[str, str]] = []  # (kind, markdown): kind is "line" for a one-line paragraph
    for block in _blocks(lines):
        flat = [line.strip() for line in block]
        wrapped = len(flat) > 1 and max(len(line) for line in flat[:-1]) <= SHORT_LINE
        if any(_BULLET.match(line) for line in flat):
            out.extend(_mixed_block(block, wrapped=wrapped))
        else:
            out.extend(_prose(flat, wrapped=wrapped))
    # a short line between paragraphs, with no closing punctuation, reads as a subheading
    for i in range(1, len(out) - 1):
        kind, text = out[i]
        plain = text.replace("\\", "")
        before = out[i - 1][1].replace("\\", "")
        if (
            kind == "line"
            and _is_short(plain)
            and not plain.endswith((":", ";", ","))
            and not plain.startswith(("[", "(", "Photo", "Image", "Credit", "Source", "Caption"))
            and not before.endswith(",")  # "Thanks," / "Jo Bloggs" / "Volunteer Coordinator"
            and out[i - 1][0] != "heading"
            and out[i + 1][0] in {"line", "para", "list"}
            and (out[i + 1][0] == "list" or len(out[i + 1][1]) > SHORT_LINE)
        ):
            out[i] = ("heading", "## " + text)
    return "\n\n".join(text for _, text in out) + "\n"


def _prose(lines: list[str], *, wrapped: bool) -> list[tuple[str, str]]:
    """Lines of running text: one hard-wrapped paragraph, or one paragraph per line."""
    if not lines:
        return []
    sentences = all(ends_sentence(line) for line in lines)
    entries = any(_FOOTNOTE.match(line) for line in lines)  # "[1] IEA, …": one entry per line
    # a letter ("Dear friends," …) or mostly whole sentences: one paragraph per line
    inner_ends = sum(map(ends_sentence, lines[:-1]))
    entries = entries or bool(_SALUTATION.match(lines[0])) or inner_ends * 2 > len(lines) - 1 > 0
    quoted = all(line.startswith(">") for line in lines)
    if quoted and len(lines) > 1:  # a hard-wrapped quotation: one blockquote
        return [("quote", "> " + _escape(" ".join(line.lstrip("> ") for line in lines)))]
    if wrapped and not sentences and not entries and not all(_is_short(line) for line in lines):
        return [("para", _escape(" ".join(lines)))]
    return [_line_block(line) for line in lines]


def _mixed_block(block: list[str], *, wrapped: bool) -> list[tuple[str, str]]:
    """A block holding list items among other lines: each run of items becomes one list.

    A line after an item continues it when it is indented, or when the block is hard-wrapped
    and the item has not ended its sentence; otherwise it starts new text.
    """
    out: list[tuple[str, str]] = []
    items: list[str] = []
    prose: list[str] = []
    last = 0  # the length of the previous line
    for raw in block:
        line = raw.strip()
        bullet = _BULLET.match(line)
        if bullet:
            out.extend(_prose(prose, wrapped=wrapped))
            prose = []
            if bullet[1][0].isalpha():  # "a) …": Markdown has no lettered lists, the letter stays
                items.append(f"- {_escape(bullet[1] + ' ' + bullet[2])}")
            else:
                marker = bullet[1] if bullet[1][0].isdigit() else "-"
                items.append(f"{marker.replace(')', '.')} {_escape(bullet[2])}")
        elif items and (raw[:1].isspace() or (wrapped and not ends_sentence(items[-1]) and last >= 60)):
            items[-1] += " " + _escape(line)  # indented, or the item was wrapped at the margin
        else:
            if items:
                out.append(("list", "\n".join(items)))
                items = []
            prose.append(line)
        last = len(line)
    if items:
        out.append(("list", "\n".join(items)))
    out.extend(_prose(prose, wrapped=wrapped))
    return out


def _line_block(line: str) -> tuple[str, str]:
    if line.startswith(">"):
        return "quote", "> " + _escape(line.lstrip("> "))
    pull = _split_motto(line)
    if pull and pull[0]:  # a line that is one quotation (perhaps "— who said it"): a pull quote
        said = f"\n>\n> — {_escape(pull[1])}" if pull[1] else ""
        return "quote", f"> {_escape(line[0] + pull[0] + _closing(line))}{said}"
    if _IMAGE.match(line):
        return "image", f"![]({line})"
    return "line", _escape(line)
