"""Subscriber lists: a CSV file streamed row by row into validated, de-duplicated recipients.

The file is never held in memory: each pass reads it again, and only a 12-byte entry per
address already seen is kept for de-duplication. Every skipped row is reported once, with its
line number and the reason.
"""

from __future__ import annotations

import bisect
import csv
import hashlib
import itertools
from array import array
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TextIO

from dispatch import textfiles
from dispatch.addresses import MAX_DISPLAY_NAME, validate_address
from dispatch.errors import InputError
from dispatch.lists.columns import (
    ADDRESS_LIKE,
    EMAIL_ALIASES,
    FALSE_WORDS,
    LAST_NAME_ALIASES,
    NAME_ALIASES,
    OPT_IN_ALIASES,
    OPT_OUT_ALIASES,
    STATUS_ALIASES,
    STATUS_WORD,
    SUBSCRIBED,
    TRUE_WORDS,
    UNSUBSCRIBED,
    alias,
    clean_value,
    first_line,
    header_notes,
    sniff_dialect,
)

MAX_VALUE = 65_536  # one subscriber value; longer is a data error (or an unclosed quote)
FIELD_LIMIT = 16_000_000  # what the csv module may read into one value before giving up
csv.field_size_limit(FIELD_LIMIT)  # process-wide; the default (128 KB) would refuse the whole list


@dataclass(frozen=True)
class Subscriber:
    """One recipient, valid and unique, with every column of its row."""

    email: str  # the address as it goes on the wire (domain in IDNA form)
    name: str
    line: int
    fields: dict[str, str]

    @property
    def key(self) -> str:
        """The de-duplication and journal key: the address, case-folded."""
        return self.email.lower()


@dataclass(frozen=True)
class Skipped:
    """A row that will not be mailed, and why."""

    line: int
    reason: str


MAX_SKIPPED_KEPT = 10_000  # rows reported one by one; beyond that, counted (memory stays flat)


@dataclass
class ListStats:
    """What one pass over the list found."""

    valid: int = 0
    skipped: list[Skipped] = field(default_factory=list)  # the first MAX_SKIPPED_KEPT
    skipped_total: int = 0

    def skip(self, item: Skipped) -> None:
        """Count a skipped row (and keep it, while there is room)."""
        self.skipped_total += 1
        if len(self.skipped) < MAX_SKIPPED_KEPT:
            self.skipped.append(item)


def _normalised(cell: str) -> str:
    """The wire form of an address when it is valid, else the cell as written."""
    try:
        return validate_address(cell)
    except ValueError:
        return cell.strip()


def _short_digest(email: str) -> int:
    return int.from_bytes(hashlib.blake2b(email.lower().encode(), digest_size=8).digest(), "big")


class _Suppressed:
    """A sorted, flat set of address digests with the line that unsubscribed each one."""

    def __init__(self, found: list[tuple[int, int]]) -> None:
        found.sort()
        self._keys = array("Q", (k for k, _ in found))
        self._lines = array("Q", (n for _, n in found))

    def line(self, email: str) -> int:
        """The line that unsubscribed this address, or 0."""
        if not self._keys:
            return 0
        key = _short_digest(email)
        at = bisect.bisect_left(self._keys, key)
        return self._lines[at] if at < len(self._keys) and self._keys[at] == key else 0


class _Seen:
    """The addresses met so far in one pass, in 12 bytes each: an open-addressing table of
    64-bit digests (case-insensitive) and the line each was first met on. A million addresses
    take 24 MB, where a dict of them took about 150 MB. (Two addresses sharing a digest would
    read as duplicates: about one chance in 30 million for a list of a million.)"""

    def __init__(self, expected: int = 0) -> None:
        size = 1024  # sized for the rows expected, so a big list is not copied while it grows
        while size < expected * 2:
            size *= 2
        self._keys = array("Q", bytes(8 * size))
        self._lines = array("I", bytes(4 * size))
        self._mask = size - 1
        self._used = 0

    def first_line(self, email: str, line: int) -> int:
        """The line this address was first met on, or 0 (and then it is remembered at ``line``)."""
        key = _short_digest(email) or 1  # 0 marks an empty slot
        keys, mask = self._keys, self._mask
        slot = key & mask
        while keys[slot]:
            if keys[slot] == key:
                return self._lines[slot]
            slot = (slot + 1) & mask
        keys[slot] = key
        self._lines[slot] = line
        self._used += 1
        if self._used * 2 > mask:
            self._grow()
        return 0

    def _grow(self) -> None:
        old_keys, old_lines = self._keys, self._lines  # read in place: no list of a million tuples
        size = (self._mask + 1) * 2
        self._keys = array("Q", bytes(8 * size))
        self._lines = array("I", bytes(4 * size))
        self._mask = size - 1
        keys, lines, mask = self._keys, self._lines, self._mask
        for key, line in zip(old_keys, old_lines, strict=True):
            if key:
                slot = key & mask
                while keys[slot]:
                    slot = (slot + 1) & mask
                keys[slot], lines[slot] = key, line


class SubscriberList:
    """A CSV subscriber list; iterate to stream its recipients (each pass re-reads the file)."""

    def __init__(self, path: Path, encoding: str = "utf-8-sig") -> None:
        self.path = path
        self.encoding = textfiles.detect(path, "subscriber list", encoding)
        self.notes: list[str] = []  # things about the list a person should know (not errors)
        self.columns, self._dialect, self._roles = self._read_header()
        self._suppressed = _Suppressed([])
        self._check_status_column()
        self._consent = bool({"status", "optout", "optin"} & set(self._roles))

    def _open(self) -> TextIO:
        return textfiles.open_text(self.path, "subscriber list", self.encoding)

    def _decode_error(self) -> InputError:
        return textfiles.decode_error(
            self.path, "subscriber list", self.encoding,
            "re-save the file as UTF-8, or pass --encoding with the file's encoding "
            "(for example --encoding cp1252)",
        )  # fmt: skip

    def _read_header(self) -> tuple[list[str], type[csv.Dialect] | csv.Dialect, dict[str, int]]:
        with self._open() as handle:
            try:
                sample = handle.read(65536)
            except UnicodeError as err:
                raise self._decode_error() from err
        size = self.path.stat().st_size
        lines = max(1, sample.count("\n"), sample.count("\r"))
        self._expected_rows = size * lines // max(1, len(sample.encode()))
        nul = sample.count("\x00")  # a stray NUL in one value is cleaned; many mean binary
        if "\x00" in first_line(sample) or (nul > 4 and nul * 100 > len(sample)):
            raise InputError(f"{self.path}: looks like a binary file, not a CSV subscriber list")
        if not sample.strip():
            raise InputError(
                f"{self.path}: the subscriber list is empty; it needs a header row with an email column"
            )
        dialect = sniff_dialect(sample)
        header = next(csv.reader([first_line(sample)], dialect))
        columns = [clean_value(h) for h in header]
        roles: dict[str, int] = {}
        for i, name in enumerate(columns):
            named = alias(name)
            for role, aliases in (
                ("email", EMAIL_ALIASES),
                ("name", NAME_ALIASES),
                ("last", LAST_NAME_ALIASES),
                ("status", STATUS_ALIASES),
                ("optout", OPT_OUT_ALIASES),
                ("optin", OPT_IN_ALIASES),
            ):
                if named not in aliases:
                    continue
                if role == "email" and role in roles:
                    raise InputError(
                        f"{self.path}: columns {columns[roles[role]]!r} (column {roles[role] + 1}) and "
                        f"{name!r} (column {i + 1}) both hold the email address; rename or remove one"
                    )
                if role in roles:
                    self.notes.append(
                        f"{self.path}: columns {columns[roles[role]]!r} and {name!r} both look like the "
                        f"{role} column; dispatch uses {columns[roles[role]]!r}"
                    )
                else:
                    roles[role] = i
        self.notes += header_notes(self.path, columns)
        if "email" not in roles:
            raise InputError(
                f"{self.path}: no email column in the header ({', '.join(columns) or 'empty'}); "
                "name one column 'email'"
            )
        return columns, dialect, roles

    def _check_status_column(self) -> None:
        """A column named like a status that holds no status words (a US "State" column, a
        "Status" of membership tiers) must not decide who is mailed: it is ignored, and said so."""
        at = self._roles.get("status")
        if at is None:
            return
        values: set[str] = set()
        with self._open() as handle:
            reader = csv.reader(handle, self._dialect)
            next(reader, None)
            try:
                for row in itertools.islice(reader, 2000):
                    if at < len(row) and row[at].strip():
                        values.add(alias(row[at]))
            except (UnicodeError, csv.Error):
                return  # the main pass reports it, with its line
        if values and not any(v in SUBSCRIBED | UNSUBSCRIBED or STATUS_WORD.search(v) for v in values):
            del self._roles["status"]
            shown = ", ".join(sorted(values)[:5])
            self.notes.append(
                f"{self.path}: column {self.columns[at]!r} holds no subscription statuses ({shown}…); "
                "it is not used to decide who is mailed"
            )

    def _unsubscribed(self) -> _Suppressed:
        """Every address some row marks unsubscribed (one quick pass, kept in two flat arrays).

        An unsubscribed row wins over every other row of the same address, wherever it is.
        """
        found: list[tuple[int, int]] = []
        if not {"status", "optout", "optin"} & set(self._roles):
            return _Suppressed(found)
        email_at = self._roles["email"]
        with self._open() as handle:
            reader = csv.reader(handle, self._dialect)
            next(reader, None)
            line = reader.line_num + 1
            try:
                for row in reader:
                    if email_at < len(row) and self._opted_out(row):
                        found.append((_short_digest(_normalised(row[email_at])), line))
                    line = reader.line_num + 1
            except (UnicodeError, csv.Error):
                pass  # reported with its line by the main pass
        return _Suppressed(found)

    def __iter__(self) -> Iterator[Subscriber | Skipped]:
        """Yield each valid, unique subscriber and each skipped row, in file order."""
        return self.rows()

    def rows(self, *, fields: bool = True) -> Iterator[Subscriber | Skipped]:
        """As iterating; with ``fields=False`` subscribers carry only their name (a counting
        pass need not clean every column of every row)."""
        seen = _Seen(self._expected_rows)
        self._suppressed = self._unsubscribed()
        with self._open() as handle:
            reader = csv.reader(handle, self._dialect)
            line = 1
            try:
                next(reader, None)
                line = reader.line_num + 1
                for row in reader:
                    if reader.line_num > line:
                        self._check_merged(row, line, reader.line_num)
                    yield self._row(row, line, seen, fields)
                    line = reader.line_num + 1
            except UnicodeError as err:
                raise self._decode_error() from err
            except csv.Error as err:
                if "field limit" in str(err):
                    raise InputError(
                        f"{self.path}: line {line}: a value is longer than {FIELD_LIMIT // 1_000_000} MB "
                        "(a quote opened and never closed?); fix that row"
                    ) from err
                raise InputError(f"{self.path}: line {line}: {err}; fix the quoting on that line") from err

    def _check_merged(self, row: list[str], first: int, last: int) -> None:
        """A quoted value may run across lines (a postal address), but not over what looks like
        more rows: that is a quote left open, and those rows would be silently merged into one."""
        needed = max(1, len(self.columns) - 1)
        delimiter = self._dialect.delimiter
        for cell in row:
            for piece in cell.splitlines()[1:]:
                if ADDRESS_LIKE.search(piece) or piece.count(delimiter) >= needed:
                    raise InputError(
                        f"{self.path}: lines {first}–{last} read as one row: a quoted value runs across "
                        f"lines and holds what look like more rows (a quote opened on line {first} and "
                        "never closed?); fix the quoting, nobody was sent anything"
                    )

    def _opted_out(self, row: list[str]) -> str:
        """Why the row's own status or flag columns say not to mail it, or ""."""
        roles = self._roles

        def cell(role: str) -> str | None:
            at = roles.get(role)
            return row[at].strip() if at is not None and at < len(row) else None

        status, out, opt_in = cell("status"), cell("optout"), cell("optin")
        if status is not None and alias(status) not in SUBSCRIBED:
            if alias(status) in UNSUBSCRIBED:
                return f"unsubscribed (status {status!r})"
            return f"not subscribed (status {status!r} is not one that means subscribed)"
        if out is not None and out.lower() in TRUE_WORDS:
            return f"opted out ({self.columns[roles['optout']]} = {out!r})"
        if opt_in is not None and opt_in.lower() in FALSE_WORDS:
            return f"not subscribed ({self.columns[roles['optin']]} = {opt_in!r})"
        return ""

    def _row(self, row: list[str], line: int, seen: _Seen, fields: bool = True) -> Subscriber | Skipped:
        if not "".join(row).strip():
            return Skipped(line, "empty row")
        longest = max(map(len, row))
        if longest > MAX_VALUE:
            return Skipped(
                line, f"a value is {longest:,} characters long (at most {MAX_VALUE:,}); is a quote unclosed?"
            )
        roles = self._roles
        cell = row[roles["email"]] if roles["email"] < len(row) else ""
        opted_out = self._opted_out(row) if self._consent else ""
        if opted_out:
            return Skipped(line, opted_out)
        try:
            email = validate_address(cell)
        except ValueError as err:
            shown = clean_value(cell)[:80]
            return Skipped(line, f"invalid address {shown!r}: {err}" if shown else str(err))
        marked = self._suppressed.line(email) or self._suppressed.line(cell.strip())
        if marked:
            return Skipped(line, f"unsubscribed (line {marked} marks this address unsubscribed)")
        first = seen.first_line(email, line)
        if first:
            return Skipped(line, f"duplicate of line {first} ({email})")
        name = clean_value(row[roles["name"]]) if "name" in roles and roles["name"] < len(row) else ""
        if "last" in roles and roles["last"] < len(row):
            last = clean_value(row[roles["last"]])
            name = name if not last or last in name else f"{name} {last}".strip()
        values = dict(zip(self.columns, map(clean_value, row), strict=False)) if fields else {}
        return Subscriber(email=email, name=name, line=line, fields=values)

    def scan(self) -> ListStats:
        """One full pass: counts valid recipients and collects skipped rows (and says which
        names are too long for a To header)."""
        stats = ListStats()
        long_names: list[int] = []
        for item in self.rows(fields=False):
            if isinstance(item, Subscriber):
                stats.valid += 1
                if len(item.name) > MAX_DISPLAY_NAME:
                    long_names.append(item.line)
            else:
                stats.skip(item)
        if long_names:
            shown = ", ".join(map(str, long_names[:5])) + (" …" if len(long_names) > 5 else "")
            self.notes.append(
                f"{self.path}: {len(long_names)} name(s) are over {MAX_DISPLAY_NAME} characters (line "
                f"{shown}); the To header shows the first {MAX_DISPLAY_NAME}"
            )
        return stats
