"""The suppression store: addresses that must not be mailed, why, on which list, since when
and on whose word. A SQLite file in the state folder, shared by ``dispatch serve`` and every
send (WAL: readers never wait, writers queue; each write is committed before it returns).

Scope rules: an unsubscribe applies to one list (its ``List-Id``); a bounce, a complaint or a
manual entry applies to every list of the state folder (``*``) unless a list is given
explicitly. :meth:`SuppressionStore.lookup`, called just before each message, is one query on
the primary key, so 100,000 suppressed addresses cost a send no more than none.

An unsubscribe recorded by ``dispatch serve`` (source ``serve``) is the only entry a reader can
undo, with the same link. When another source (an import, ``suppress add``) states the same
unsubscribe, the entry takes that source, and the reader's undo no longer lifts it.
"""

from __future__ import annotations

import csv
import json
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TextIO

from dispatch import textfiles
from dispatch.addresses import address_key, validate_address
from dispatch.errors import InputError
from dispatch.lists.columns import (
    EMAIL_ALIASES,
    STATUS_ALIASES,
    SUBSCRIBED,
    alias,
    clean_value,
    sniff_dialect,
)
from dispatch.lists.subscribers import Skipped
from dispatch.state.db import Database, Schema, check_not_symlink
from dispatch.state.group import Store
from dispatch.state.times import imported_time, iso_utc

FILENAME = "suppression.sqlite3"
UNSUBSCRIBED, BOUNCED, COMPLAINED, MANUAL = "unsubscribed", "bounced", "complained", "manual"
REASONS = (UNSUBSCRIBED, BOUNCED, COMPLAINED, MANUAL)
ALL_LISTS = "*"
SERVE = "serve"  # the source of the unsubscribes dispatch serve records: the only ones a reader can undo
EXPORT_COLUMNS = ("email", "reason", "list", "time", "source")
SCHEMA = Schema(
    what="suppression store",
    version=1,
    create="""CREATE TABLE suppressions (
        key TEXT NOT NULL,
        scope TEXT NOT NULL,
        reason TEXT NOT NULL,
        source TEXT NOT NULL,
        created INTEGER NOT NULL,
        PRIMARY KEY (key, scope, reason)
    ) WITHOUT ROWID""",
)
# An entry already there stays as it is, except that one serve recorded takes the source of
# anyone else who states it: the reader's undo then leaves it alone.
_INSERT = (
    "INSERT INTO suppressions (key, scope, reason, source, created) VALUES (?, ?, ?, ?, ?) "
    "ON CONFLICT (key, scope, reason) DO UPDATE SET source = excluded.source "
    "WHERE suppressions.source = 'serve' AND excluded.source <> 'serve'"  # SERVE
)
_SELECT = "SELECT key, reason, scope, created, source FROM suppressions"
_LIST_ID = re.compile(r"[a-z0-9!#$%&'*+/=?^_`{|}~-]+(?:\.[a-z0-9!#$%&'*+/=?^_`{|}~-]+)+")
_FORMULA = ("=", "+", "-", "@", "\t", "\r", "'")  # what a spreadsheet would run (and our own mark)
_PAGE = 2000


@dataclass(frozen=True)
class Entry:
    """One suppression: ``key`` (the address, lower-cased) is not mailed on ``scope``."""

    key: str
    reason: str
    scope: str  # a list id, or "*" for every list of the state folder
    when: float  # seconds since the epoch
    source: str  # "serve", "manual", "import:<file>", "bounce:<campaign>"…

    @property
    def iso_time(self) -> str:
        """``when`` in ISO 8601, UTC, as exported."""
        return iso_utc(self.when)


@dataclass
class ImportReport:
    """What an import did: rows added, rows the store already had, rows skipped and why."""

    added: int = 0
    existing: int = 0
    skipped: list[Skipped] = field(default_factory=list)


def check_reason(reason: str) -> str:
    """One of :data:`REASONS`, else InputError listing them."""
    if reason not in REASONS:
        raise InputError(f"unknown suppression reason {reason!r}; use one of {', '.join(REASONS)}")
    return reason


def check_scope(scope: str) -> str:
    """``*`` or a list id like ``news.example.org``, lower-cased; else InputError."""
    value = scope.strip().strip("<>").lower()
    if value != ALL_LISTS and not (len(value) <= 200 and _LIST_ID.fullmatch(value)):
        raise InputError(f"{scope!r} is not a list id like news.example.org (or * for every list)")
    return value


def neutralise(cell: str) -> str:
    """A CSV cell that a spreadsheet will not run as a formula (the import undoes it)."""
    return "'" + cell if cell.startswith(_FORMULA) else cell


class SuppressionStore:
    """The suppressed addresses of every list of one state folder."""

    def __init__(self, state_dir: Path, *, readonly: bool = False, db: Store | None = None) -> None:
        self._db: Store = db if db is not None else Database(state_dir / FILENAME, SCHEMA, readonly=readonly)
        self.path = self._db.path

    @classmethod
    def open_existing(cls, state_dir: Path) -> SuppressionStore | None:
        """The store read-only, or None when nothing was ever suppressed in this folder."""
        path = state_dir / FILENAME
        check_not_symlink(path, SCHEMA.what)
        return cls(state_dir, readonly=True) if path.exists() else None

    def close(self) -> None:
        """Close the file."""
        self._db.close()

    def __enter__(self) -> SuppressionStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def add(
        self,
        address: str,
        reason: str,
        *,
        scope: str | None = None,
        source: str = "manual",
        when: float | None = None,
    ) -> bool:
        """Suppress an address; False when this entry was there already (nothing changes).

        Without ``scope`` the rules apply: an unsubscribe needs its list (InputError), any
        other reason applies to every list.
        """
        if scope is None and check_reason(reason) == UNSUBSCRIBED:
            raise InputError("an unsubscribe applies to one list: give its list id (like news.example.org)")
        where = ALL_LISTS if scope is None else check_scope(scope)
        row = (address_key(address), where, check_reason(reason), clean_value(source)[:200], _seconds(when))
        return bool(self._db.execute(_INSERT, row).rowcount == 1)

    def remove(
        self, address: str, *, scope: str | None = None, reason: str | None = None, source: str | None = None
    ) -> int:
        """Lift an address's suppressions (only this scope, reason and/or source, when given); how many."""
        sql, params = "DELETE FROM suppressions WHERE key = ?", [address_key(address)]
        if scope is not None:
            sql, params = sql + " AND scope = ?", [*params, check_scope(scope)]
        if reason is not None:
            sql, params = sql + " AND reason = ?", [*params, check_reason(reason)]
        if source is not None:
            sql, params = sql + " AND source = ?", [*params, source]
        return int(self._db.execute(sql, params).rowcount)

    def entry(self, key: str, scope: str, reason: str) -> Entry | None:
        """The one entry for ``key`` with exactly this scope and reason (not the rules of
        :meth:`lookup`), or None: who recorded it is its ``source``."""
        row = self._db.read(
            f"{_SELECT} WHERE key = ? AND scope = ? AND reason = ?", (key, scope.lower(), reason)
        )
        return Entry(*row) if row else None

    def lookup(self, key: str, list_id: str | tuple[str, ...]) -> Entry | None:
        """Why ``key`` must not be mailed on ``list_id`` (or any of several list ids: a list and
        its earlier ids) — a bounce, complaint or manual entry before an unsubscribe — or None.
        One primary-key query: call it before every message."""
        rows = self._db.read_all(f"{_SELECT} WHERE key = ?", (key,))  # almost always none
        ids = (list_id,) if isinstance(list_id, str) else list_id
        scopes = (*(i.lower() for i in ids), ALL_LISTS)
        found = [row for row in rows if row[2] in scopes]
        return Entry(*min(found, key=lambda r: (r[1] == UNSUBSCRIBED, r[3]))) if found else None

    def entries(self) -> Iterator[Entry]:
        """Every entry, by address, read a page at a time (the file is never held for long)."""
        after = ("", "", "")
        while True:
            rows = self._db.all(
                f"{_SELECT} WHERE (key, scope, reason) > (?, ?, ?) ORDER BY key, scope, reason LIMIT {_PAGE}",
                after,
            )
            yield from (Entry(*row) for row in rows)
            if len(rows) < _PAGE:
                return
            after = (rows[-1][0], rows[-1][2], rows[-1][1])

    def count(self) -> int:
        """How many entries the store holds."""
        row = self._db.one("SELECT COUNT(*) FROM suppressions")
        return int(row[0]) if row else 0

    def import_csv(
        self,
        path: Path,
        *,
        reason: str | None = None,
        scope: str | None = None,
        unsubscribe_list: str | None = None,
        source: str | None = None,
        encoding: str = "utf-8-sig",
    ) -> ImportReport:
        """Add every address of a CSV file in one transaction (:func:`read_csv` says which
        files and columns are understood). Bad rows are skipped and reported by line; when the
        file as a whole cannot be read, nothing is written. ``source`` defaults to
        ``import:<file name>`` for rows without a source column."""
        rows, skipped = read_csv(
            path, reason=reason, scope=scope, unsubscribe_list=unsubscribe_list, encoding=encoding
        )
        label = clean_value(source or f"import:{path.name}")[:200]
        values = [(key, where, why, src or label, at) for key, where, why, src, at in rows]
        with self._db.transaction() as db:
            added = db.executemany(_INSERT, values).rowcount
        return ImportReport(added=added, existing=len(values) - added, skipped=skipped)

    def _records(self) -> Iterator[tuple[str, str, str, str, str]]:
        for e in self.entries():
            yield e.key, e.reason, e.scope, e.iso_time, e.source

    def export_csv(self, handle: TextIO) -> int:
        """Write every entry as CSV with the header ``EXPORT_COLUMNS``; returns how many. Cells
        a spreadsheet would run as formulas get a leading ``'`` (the import takes it off)."""
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(EXPORT_COLUMNS)
        count = 0
        for record in self._records():
            writer.writerow([neutralise(cell) for cell in record])
            count += 1
        return count

    def export_json(self, handle: TextIO) -> int:
        """Write every entry as a JSON array of objects (``EXPORT_COLUMNS``), one a line."""
        count = 0
        for count, record in enumerate(self._records(), start=1):
            item = json.dumps(dict(zip(EXPORT_COLUMNS, record, strict=True)), ensure_ascii=False)
            handle.write(("[\n" if count == 1 else ",\n") + item)
        handle.write("\n]\n" if count else "[]\n")
        return count


def _seconds(when: float | None) -> int:
    """A time to store: ``when`` if it is a real moment up to now, else now (never inf or NaN)."""
    now = time.time()
    return int(when) if when is not None and 0 <= when <= now else int(now)


# Reading exports: Mailchimp (its audience, unsubscribed and cleaned exports), listmonk
# (subscribers with a status), spreadsheets, and our own export.
_ROLES = {
    "email": EMAIL_ALIASES,
    "reason": {"reason", "suppressionreason"},
    "status": STATUS_ALIASES,
    "list": {"list", "listid", "scope"},
    "time": {"time", "timestamp", "suppressedat", "unsubtime", "cleantime"},
    "source": {"source"},
}
_KIND_BY_COLUMN = {"unsubtime": UNSUBSCRIBED, "cleantime": BOUNCED}  # Mailchimp's two exports
_WORDS = {
    UNSUBSCRIBED: {"unsubscribed", "unsubscribe", "unsub", "optedout", "optout"},
    BOUNCED: {"bounced", "bounce", "hardbounce", "softbounce", "cleaned", "invalid", "undeliverable"},
    COMPLAINED: {"complained", "complaint", "spam", "spamreport", "spamcomplaint", "abuse", "markedasspam"},
    MANUAL: {"manual", "blocklisted", "blacklisted", "suppressed", "donotemail", "blocked", "banned"},
}
_REASON_OF = {word: why for why, words in _WORDS.items() for word in words}
_NOT_OPT_OUT = (SUBSCRIBED - {""}) | {"pending", "unconfirmed", "archived", "transactional"}
Row = tuple[str, str, str, str, int]  # key, scope, reason, source ("": the import's), time


def read_csv(
    path: Path,
    *,
    reason: str | None = None,
    scope: str | None = None,
    unsubscribe_list: str | None = None,
    encoding: str = "utf-8-sig",
) -> tuple[list[Row], list[Skipped]]:
    """The suppressions a CSV file holds, and the rows skipped (with line and reason).

    The address column is found as in subscriber lists (``email``, ``Email Address``…); a file
    of one column with no header is a plain list of addresses. Optional columns: ``reason``
    or a status (``unsubscribed``, ``cleaned``, ``blocklisted``…; a row whose status means
    subscribed or pending is skipped), ``list``, ``time`` (also Mailchimp's ``UNSUB_TIME`` and
    ``CLEAN_TIME``) and ``source``. ``reason`` and ``scope``, when given, apply to every row;
    otherwise each row's columns decide, then the kind of export (Mailchimp's unsubscribed or
    cleaned), then ``manual`` (for an unknown status word too) on every list. An unsubscribe
    that names no list applies to ``unsubscribe_list`` (the newsletter's own list id); with
    none, it stops the import (InputError): pass ``scope``.
    """
    plan = _Plan(path, reason and check_reason(reason), scope and check_scope(scope))
    plan.unsubscribe_list = unsubscribe_list and check_scope(unsubscribe_list)
    rows: list[Row] = []
    skipped: list[Skipped] = []
    line = 1
    encoding = textfiles.detect(path, "suppression list", encoding)
    with textfiles.open_text(path, "suppression list", encoding) as handle:
        try:
            sample = handle.read(65536)
            handle.seek(0)
            reader = csv.reader(handle, sniff_dialect(sample))
            if plan.find_columns([alias(clean_value(h)) for h in next(reader, [])], sample):
                handle.seek(0)  # no header: the first line is an address already
                reader = csv.reader(handle, sniff_dialect(sample))
            line = reader.line_num + 1
            for cells in reader:
                item = plan.row(cells, line)
                if isinstance(item, Skipped):
                    skipped.append(item)
                else:
                    rows.append(item)
                line = reader.line_num + 1
        except UnicodeError as err:
            hint = "re-save it as UTF-8 or give its encoding (--encoding)"
            raise textfiles.decode_error(path, "suppression list", encoding, hint) from err
        except csv.Error as err:
            raise InputError(f"{path}: line {line}: {err}; fix the quoting on that line") from err
    return rows, skipped


@dataclass
class _Plan:
    """How the rows of one file are read."""

    path: Path
    reason: str | None  # for every row
    scope: str | None  # for every row
    unsubscribe_list: str | None = None  # for unsubscribes that name no list
    fallback: str = MANUAL  # for rows that say nothing: the kind of export, else manual
    columns: dict[str, int] = field(default_factory=dict)  # role -> index, -1 when absent
    now: int = field(default_factory=lambda: int(time.time()))

    def find_columns(self, header: list[str], sample: str) -> bool:
        """Find the columns; True when the file has no header row (one column of addresses)."""
        first = sample.split("\n", 1)[0]
        if "\x00" in first:
            raise InputError(f"{self.path}: looks like a binary file, not a CSV export")
        self.columns = {
            role: next((i for i, h in enumerate(header) if h in names), -1) for role, names in _ROLES.items()
        }
        if self.columns["reason"] < 0:
            self.columns["reason"] = self.columns["status"]
        self.fallback = next((_KIND_BY_COLUMN[h] for h in header if h in _KIND_BY_COLUMN), MANUAL)
        if self.columns["email"] >= 0:
            return False
        if len(header) == 1 and "@" in first:
            self.columns["email"] = 0
            return True
        shown = ", ".join(header) or "empty"
        raise InputError(f"{self.path}: no email column in the header ({shown}); name one column 'email'")

    def row(self, cells: list[str], line: int) -> Row | Skipped:
        """One row as a suppression, or why it is skipped."""
        email, status, listed, when, source = (
            _unneutralise(cells[at].strip()) if 0 <= at < len(cells) else ""
            for at in (self.columns[role] for role in ("email", "reason", "list", "time", "source"))
        )
        if not email and not any(c.strip() for c in cells):
            return Skipped(line, "empty row")
        try:
            key = validate_address(email).lower()
        except ValueError as err:
            shown = clean_value(email)[:80]
            return Skipped(line, f"invalid address {shown!r}: {err}" if shown else str(err))
        word = alias(status) if status else ""
        if word in _NOT_OPT_OUT:
            return Skipped(line, f"status {status!r} is not an opt-out; not suppressed")
        why = self.reason or (_REASON_OF.get(word, MANUAL) if word else self.fallback)
        listed = self.scope or listed or (self.unsubscribe_list if why == UNSUBSCRIBED else "") or ""
        if not listed and why == UNSUBSCRIBED:
            raise InputError(
                f"{self.path}: line {line}: an unsubscribe applies to one list and this file names "
                "none; give the list id to import it with (--list ID)"
            )
        try:
            where = check_scope(listed) if listed else ALL_LISTS
        except InputError as err:
            return Skipped(line, str(err))
        return key, where, why, clean_value(source)[:200] if source else "", imported_time(when, self.now)


def _unneutralise(cell: str) -> str:
    """Undo :func:`neutralise`: drop the ``'`` put before a cell a spreadsheet would run."""
    return cell[1:] if cell.startswith("'") and cell[1:].startswith(_FORMULA) else cell
