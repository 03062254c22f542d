"""Dry runs and previews: output a person can open, one ``.eml`` and one ``.html`` per
message, and an ``index.html`` that links to each."""

from __future__ import annotations

import html
import re
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TextIO

from dispatch.campaign import Issue, RunSummary, campaign_warnings, recipients, skip_reason, summary_for
from dispatch.errors import InputError
from dispatch.state import journal as j
from dispatch.subscribers import Subscriber

_UNSAFE = re.compile(r"[^A-Za-z0-9@._+-]+")
_OURS = re.compile(r"\d{5,}-[A-Za-z0-9@._+-]+\.(eml|html)")


def message_stem(number: int, email: str) -> str:
    """``00001-ann@example.org``: sortable and recognisable file names."""
    return f"{number:05d}-{_UNSAFE.sub('_', email)[:80]}"


@dataclass
class PreviewWriter:
    """Writes messages into a folder as they are rendered, then closes the index."""

    folder: Path
    subject: str
    rows: int = 0
    _index: TextIO = field(init=False, repr=False)
    _open: bool = field(default=False, init=False, repr=False)

    def __post_init__(self) -> None:
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            for old in self.folder.iterdir():  # an earlier dry run's messages, never other files
                if _OURS.fullmatch(old.name):
                    old.unlink()
            self._index = (self.folder / "index.html").open("w", encoding="utf-8")
            self._open = True
        except OSError as err:
            raise InputError(f"{self.folder}: cannot write the preview there: {err.strerror}") from err
        title = html.escape(self.subject)
        self._index.write(
            '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
            f"<title>Dry run: {title}</title><style>body{{font-family:sans-serif;margin:2em}}"
            "td,th{padding:4px 12px;text-align:left}tr:nth-child(even){background:#f4f4f4}"
            f"</style></head><body>\n<h1>Dry run: {title}</h1>\n<p>Nothing was sent. "
            "Each row is one message exactly as it would leave.</p>\n"
            "<table><tr><th>#</th><th>To</th><th>Name</th><th>HTML</th><th>Message</th></tr>\n"
        )

    def add(self, number: int, email: str, name: str, message: bytes, html_body: str) -> Path:
        """Write one message's ``.eml`` and ``.html``; returns the ``.html`` path."""
        stem = message_stem(number, email)
        (self.folder / f"{stem}.eml").write_bytes(message)
        page = self.folder / f"{stem}.html"
        page.write_text(html_body, encoding="utf-8")
        self._index.write(
            f"<tr><td>{number}</td><td>{html.escape(email)}</td><td>{html.escape(name)}</td>"
            f'<td><a href="{html.escape(stem)}.html">view</a></td>'
            f'<td><a href="{html.escape(stem)}.eml">.eml</a></td></tr>\n'
        )
        self.rows += 1
        return page

    def close(self) -> Path:
        """Finish ``index.html`` and return its path."""
        if self._open:
            self._index.write(f"</table>\n<p>{self.rows} message(s).</p>\n</body></html>\n")
            self._index.close()
            self._open = False
        return self.folder / "index.html"


@contextmanager
def sample_list() -> Iterator[Path]:
    """A one-reader list, for a preview when no subscriber list is given or configured."""
    with tempfile.TemporaryDirectory(prefix="dispatch-") as folder:
        path = Path(folder) / "sample.csv"
        path.write_text("email,name\nreader@example.org,Sample Reader\n", encoding="utf-8")
        yield path


def write_message(issue: Issue, sub: Subscriber, page: Path) -> tuple[Path, Path, Path]:
    """One recipient's message as ``page`` (HTML) with ``.eml`` and ``.txt`` beside it."""
    data, html_body, _ = issue.message(sub)
    eml, text = page.with_suffix(".eml"), page.with_suffix(".txt")
    try:
        page.parent.mkdir(parents=True, exist_ok=True)
        page.write_text(html_body, encoding="utf-8")
        eml.write_bytes(data)
        text.write_text(issue.bodies(sub)[1], encoding="utf-8")
    except OSError as err:
        raise InputError(f"{page}: cannot write the preview there: {err.strerror}") from err
    return page, eml, text


def run_dry(
    issue: Issue,
    folder: Path,
    *,
    write_all: bool,
    preview_count: int = 5,
    limit: int = 0,
    state: j.Journal | None = None,
    only: list[Subscriber] | None = None,
    resend_unknown: bool = False,
) -> RunSummary:
    """Render and check every message; write all (or the first few) to ``folder``.

    With the journal (read-only), recipients a real send would skip are skipped here too.
    """
    summary = summary_for(issue, dry_run=True)
    summary.warnings += campaign_warnings(issue, state)
    writer = PreviewWriter(folder, issue.subject)
    try:
        for sub in only if only is not None else recipients(issue):
            _, reason = skip_reason(state, issue.campaign, sub.key, resend_unknown=resend_unknown)
            if reason is not None:
                summary.count_skip(reason)
                continue
            if limit and summary.pending >= limit:
                break
            data, html, _ = issue.message(sub)
            summary.pending += 1
            if write_all or summary.written < preview_count:
                writer.add(summary.pending, sub.email, sub.name, data, html)
                summary.written += 1
    finally:
        summary.preview = writer.close()
    return summary
