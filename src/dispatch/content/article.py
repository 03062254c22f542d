"""Articles: a plain-text newsletter piece or a Markdown file, read into one Article model.

Files are checked here (missing, empty, binary, not UTF-8, unknown kind). Markdown's front
matter is read here; plain text is taken apart by ``dispatch.content.plaintext``. Both bodies are
rendered by ``dispatch.content.markup`` into sanitised HTML and a plain-text twin.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import frontmatter
import yaml
from frontmatter.default_handlers import YAMLHandler

from dispatch.content.markup import RenderedBody, render_markdown
from dispatch.content.textpart import Block
from dispatch.errors import InputError
from dispatch.files import read_regular

TEXT_SUFFIXES = (".txt", ".text")
MARKDOWN_SUFFIXES = (".md", ".markdown")
KNOWN_KEYS = (
    "title", "subject", "subtitle", "preheader", "author", "date", "campaign", "motto", "motto_attribution",
)  # fmt: skip

MAX_ARTICLE_BYTES = 50_000_000
_MD_HEADING = re.compile(r"^(#{1,6})\s+(.*?)\s*#*$")


@dataclass(frozen=True)
class Article:
    """An issue's content, independent of its source format."""

    title: str
    body_html: str
    body_text: str
    source: Path
    fingerprint: str
    subject: str = ""
    subtitle: str = ""
    preheader: str = ""
    motto: str = ""
    motto_attribution: str = ""
    author: str = ""
    byline: str = ""  # the byline as written, when it is not in English ("Автор: …")
    kicker: str = ""  # a label above the headline ("University News", "PRESS RELEASE")
    date: str = ""
    campaign: str = ""
    links: tuple[str, ...] = ()
    blocks: tuple[Block, ...] = ()
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def body_fingerprint(self) -> str:
        """A digest of the article's text alone (spacing ignored): the same text under another
        title or date line is the same issue. A Markdown front-matter ``date`` is part of it, as
        it is of the campaign: a weekly "Update" with the same text and a new date is a new issue."""
        dated = self.date if self.source.suffix.lower() in MARKDOWN_SUFFIXES else ""
        return hashlib.sha256(f"{dated}\0{' '.join(self.body_text.split())}".encode()).hexdigest()

    @property
    def paragraphs(self) -> list[str]:
        """The plain text of each paragraph, in order."""
        return [b.text for b in self.blocks if b.kind == "paragraph"]

    @property
    def summary(self) -> str:
        """A truthful preview line: the preheader, else the standfirst, else the opening."""
        if self.preheader or self.subtitle:
            return self.preheader or self.subtitle
        opening = self.paragraphs[0] if self.paragraphs else ""
        if len(opening) <= 110:
            return opening
        return opening[:110].rsplit(" ", 1)[0] + "…"


def read_text_file(path: Path, what: str = "article") -> str:
    """Read a UTF-8 text file or raise an InputError that says what is wrong and what to do."""
    data = read_regular(path, what, limit=MAX_ARTICLE_BYTES)
    if b"\x00" in data[:8192]:
        raise InputError(f"{path}: looks like a binary file, not a text {what}; save it as UTF-8 text")
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        line = data[: err.start].count(b"\n") + 1
        raise InputError(
            f"{path}: line {line} is not UTF-8 (byte 0x{data[err.start]:02x}); re-save the file as UTF-8 text"
        ) from err
    if not text.strip():
        raise InputError(f"{path}: the {what} is empty; write the issue into it first")
    return text.replace("\r\n", "\n").replace("\r", "\n")


def load_article(path: Path) -> Article:
    """Read a ``.txt``/``.text`` or ``.md``/``.markdown`` article."""
    suffix = path.suffix.lower()
    if suffix not in TEXT_SUFFIXES + MARKDOWN_SUFFIXES:
        known = ", ".join(TEXT_SUFFIXES + MARKDOWN_SUFFIXES)
        raise InputError(f"{path}: unknown article type {suffix or '(no extension)'!r}; use one of {known}")
    text = read_text_file(path)
    fingerprint = hashlib.sha256(text.encode()).hexdigest()
    if suffix in MARKDOWN_SUFFIXES:
        return _from_markdown(path, text, fingerprint)
    return _from_plain_text(path, text, fingerprint)


# --- Markdown -------------------------------------------------------------------------------


def _from_markdown(path: Path, text: str, fingerprint: str) -> Article:
    handler = frontmatter.detect_format(text, frontmatter.handlers)
    if isinstance(handler, YAMLHandler):
        handler = _YAMLHandler()
    try:
        post = frontmatter.loads(text, handler=handler)
    except _NotADate as err:
        key = _key_at(handler, err.node)
        raise InputError(
            f"{path}: front matter {key!r}: {err.node.value!r} is not a real date; check the day, "
            "the month and any time (like 2026-02-28 or 2026-02-28T09:30:00)"
        ) from None
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" (line {mark.line + 1})" if mark is not None else ""
        raise InputError(f"{path}: the front matter is not valid YAML{where}; fix it") from err
    meta: dict[str, Any] = {str(k): v for k, v in post.metadata.items()}
    _check_meta(path, meta)
    body = post.content
    title = _text(meta.get("title"))
    if not title:
        first = body.lstrip("\n").split("\n", 1)
        heading = _MD_HEADING.match(first[0])
        if heading and len(heading[1]) == 1:
            title = heading[2].strip()
            body = first[1] if len(first) > 1 else ""
    if not title:
        if not meta and text.lstrip("\ufeff").split("\n", 1)[0].strip() == "---":
            raise InputError(
                f"{path}: the front matter opened on line 1 is never closed; end it with a line '---'"
            )
        raise InputError(f"{path}: no title; add 'title:' to the front matter or start with '# Title'")
    first = body.lstrip("\n").split("\n", 1)
    heading = _MD_HEADING.match(first[0])
    if heading and len(heading[1]) == 1 and heading[2].strip().casefold() == title.casefold():
        body = first[1] if len(first) > 1 else ""  # the template shows the title already
    known = {k: _text(meta.get(k)) for k in KNOWN_KEYS if k != "title"}
    extra = {k: v for k, v in meta.items() if k not in KNOWN_KEYS}
    try:
        rendered = render_markdown(body)
    except ValueError as err:
        raise InputError(f"{path}: {err}") from err
    return _article(path, fingerprint, rendered, title=title, meta=extra, **known)


class _NotADate(Exception):
    """A YAML timestamp that names no day or time (2026-02-30, 2026-01-01T25:00:00)."""

    def __init__(self, node: yaml.Node) -> None:
        super().__init__(node.value)
        self.node = node


class _Loader(yaml.SafeLoader):
    """YAML's safe loader, with a date that is no real date reported as such (yaml raises a
    bare ValueError from inside its constructor)."""

    def construct_yaml_timestamp(self, node: yaml.ScalarNode) -> Any:
        try:
            return super().construct_yaml_timestamp(node)
        except ValueError:
            raise _NotADate(node) from None


_Loader.add_constructor("tag:yaml.org,2002:timestamp", _Loader.construct_yaml_timestamp)


class _YAMLHandler(YAMLHandler):
    """python-frontmatter's YAML front matter, read with :class:`_Loader`."""

    text = ""

    def load(self, fm: str, **kwargs: object) -> Any:
        self.text = fm
        return yaml.load(fm, Loader=_Loader)  # noqa: S506 - a SafeLoader


def _key_at(handler: Any, node: yaml.Node) -> str:
    """The top-level front-matter key whose value holds ``node`` ("" when none does)."""
    root = yaml.compose(getattr(handler, "text", ""), Loader=yaml.SafeLoader)
    at = node.start_mark.index
    for key, value in root.value if isinstance(root, yaml.MappingNode) else ():
        if value.start_mark.index <= at < max(value.end_mark.index, at + 1):
            return str(key.value)
    return ""


MAX_META_VALUES = 10_000  # values in the whole front matter, as templates would see it expanded
_SCALARS = (str, int, float, dt.date)


def _check_meta(path: Path, meta: dict[str, Any]) -> None:
    """Refuse what no template can use: a value that holds itself (``x: &a [*a]``), front matter
    that aliases expand past :data:`MAX_META_VALUES`, and a list, mapping or yes/no as a text key
    (a title of ``[a, b]`` became the subject ``['a', 'b']``)."""
    budget = [MAX_META_VALUES]
    for key, value in meta.items():
        problem = _walk(value, (), budget)
        if problem:
            raise InputError(f"{path}: front matter {key!r} {problem}")
        if key in KNOWN_KEYS and not (
            value is None or (isinstance(value, _SCALARS) and not isinstance(value, bool))
        ):
            kind = "yes/no" if isinstance(value, bool) else "a list or a mapping"
            raise InputError(
                f"{path}: front matter {key!r} is {kind}, not text; write it as one line of text"
            )


def _walk(value: Any, holders: tuple[int, ...], budget: list[int]) -> str:
    """What is wrong with one front-matter value ("" when nothing is)."""
    budget[0] -= 1
    if budget[0] < 0:
        return f"makes the front matter more than {MAX_META_VALUES:,} values (through & and *); write it out"
    if isinstance(value, dict | list):
        if id(value) in holders:
            return "holds itself (through & and *); write the value out instead"
        inner = (id(value), *holders)
        for item in value.values() if isinstance(value, dict) else value:
            problem = _walk(item, inner, budget)
            if problem:
                return problem
    return ""


def _article(path: Path, fingerprint: str, body: RenderedBody, **fields: Any) -> Article:
    return Article(
        body_html=body.html,
        body_text=body.text,
        links=body.links,
        blocks=body.blocks,
        source=path,
        fingerprint=fingerprint,
        **fields,
    )


def _text(value: Any) -> str:
    return "" if value is None else " ".join(str(value).split())


# --- Plain text -----------------------------------------------------------------------------


def _from_plain_text(path: Path, text: str, fingerprint: str) -> Article:
    from dispatch.content import plaintext  # noqa: PLC0415 - its patterns cost a Markdown issue ~10 ms

    try:
        fields, body = plaintext.parse(text)
    except ValueError as err:
        raise InputError(f"{path}: {err}") from err
    return _article(path, fingerprint, render_markdown(body), **fields)
