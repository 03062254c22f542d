"""Subscriber lists: a CSV file streamed row by row into validated, de-duplicated recipients.

The file is never held in memory: each pass reads it again, and only a compact digest of each
address already seen is kept for de-duplication. Every skipped row is reported once, with its
line number and the reason.
"""

from __future__ import annotations

import csv
import hashlib
import re
import unicodedata
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TextIO

from email_validator import EmailNotValidError, validate_email

from dispatch.errors import InputError

EMAIL_ALIASES = {"email", "e-mail", "emailaddress", "e-mailaddress", "mail", "emailadres"}
NAME_ALIASES = {"name", "fullname", "firstname", "givenname", "subscribername", "displayname"}
STATUS_ALIASES = {"status", "subscriptionstatus", "state", "subscription"}
LAST_NAME_ALIASES = {"lastname", "surname", "familyname"}
UNSUBSCRIBED = {
    "unsubscribed", "unsubscribe", "optedout", "optout", "bounced", "cleaned", "complained",
    "blocklisted", "blacklisted", "suppressed", "removed", "inactive",
}  # fmt: skip
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029\u200b\ufeff]+")


def _alias(header: str) -> str:
    return re.sub(r"[\s_.]+", "", header.strip().lower()).replace("-", "") or header


def clean_value(value: str) -> str:
    """A CSV value as it may appear in a message: control characters become spaces."""
    return " ".join(_CONTROL.sub(" ", value).split())


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


@dataclass
class ListStats:
    """What one pass over the list found."""

    valid: int = 0
    skipped: list[Skipped] = field(default_factory=list)


def validate_address(raw: str) -> str:
    """The wire form of an address, or ValueError with a reason a person can act on."""
    address = raw.strip()
    if not address:
        raise ValueError("no email address")
    if _CONTROL.search(address):
        raise ValueError("the address contains control characters or line breaks")
    try:
        valid = validate_email(address, check_deliverability=False, allow_smtputf8=False)
    except EmailNotValidError as err:
        raise ValueError(str(err).rstrip(".")) from err
    return valid.ascii_email or valid.normalized


def _dialect(sample: str) -> type[csv.Dialect] | csv.Dialect:
    header = sample.split("\n", 1)[0]
    delimiter = max(",;\t|", key=header.count)
    if header.count(delimiter) == 0:
        delimiter = ","

    class Detected(csv.excel):
        pass

    Detected.delimiter = delimiter
    return Detected


class SubscriberList:
    """A CSV subscriber list; iterate to stream its recipients (each pass re-reads the file)."""

    def __init__(self, path: Path, encoding: str = "utf-8-sig") -> None:
        self.path = path
        self.encoding = encoding
        self.columns, self._dialect, self._roles = self._read_header()

    def _open(self) -> TextIO:
        try:
            return self.path.open(encoding=self.encoding, newline="")
        except LookupError as err:
            raise InputError(f"--encoding {self.encoding!r} is not a known text encoding") from err
        except OSError as err:
            raise InputError(f"{self.path}: cannot open the subscriber list: {err.strerror}") from err

    def _decode_error(self, err: UnicodeDecodeError, line: int) -> InputError:
        return InputError(
            f"{self.path}: not {self.encoding.removesuffix('-sig').upper()} text near line {line} "
            f"(byte 0x{err.object[err.start]:02x}); re-save it as UTF-8, or pass --encoding "
            "with the file's encoding (for example --encoding cp1252)"
        )

    def _read_header(self) -> tuple[list[str], type[csv.Dialect] | csv.Dialect, dict[str, int]]:
        if not self.path.exists():
            raise InputError(f"{self.path}: no such subscriber list; check the path")
        if self.path.is_dir():
            raise InputError(f"{self.path}: is a folder, not a CSV subscriber list")
        with self._open() as handle:
            try:
                sample = handle.read(65536)
            except UnicodeDecodeError as err:
                raise self._decode_error(err, 1) from err
        if "\x00" in sample:
            raise InputError(f"{self.path}: looks like a binary file, not a CSV subscriber list")
        if not sample.strip():
            raise InputError(
                f"{self.path}: the subscriber list is empty; it needs a header row with an email column"
            )
        dialect = _dialect(sample)
        header = next(csv.reader([sample.split("\n", 1)[0].rstrip("\r")], dialect))
        columns = [clean_value(h) for h in header]
        roles: dict[str, int] = {}
        for i, name in enumerate(columns):
            alias = _alias(name)
            for role, aliases in (
                ("email", EMAIL_ALIASES),
                ("name", NAME_ALIASES),
                ("last", LAST_NAME_ALIASES),
                ("status", STATUS_ALIASES),
            ):
                if alias in aliases and role not in roles:
                    roles[role] = i
        if "email" not in roles:
            raise InputError(
                f"{self.path}: no email column in the header ({', '.join(columns) or 'empty'}); "
                "name one column 'email'"
            )
        return columns, dialect, roles

    def __iter__(self) -> Iterator[Subscriber | Skipped]:
        """Yield each valid, unique subscriber and each skipped row, in file order."""
        seen: dict[bytes, int] = {}
        with self._open() as handle:
            reader = csv.reader(handle, self._dialect)
            line = 1
            try:
                next(reader, None)
                line = reader.line_num + 1
                for row in reader:
                    yield self._row(row, line, seen)
                    line = reader.line_num + 1
            except UnicodeDecodeError as err:
                raise self._decode_error(err, line) from err
            except csv.Error as err:
                raise InputError(f"{self.path}: line {line}: {err}; fix the quoting on that line") from err

    def _row(self, row: list[str], line: int, seen: dict[bytes, int]) -> Subscriber | Skipped:
        if not any(cell.strip() for cell in row):
            return Skipped(line, "empty row")
        roles = self._roles
        cell = row[roles["email"]] if roles["email"] < len(row) else ""
        if "status" in roles and roles["status"] < len(row):
            status = _alias(row[roles["status"]])
            if status in UNSUBSCRIBED:
                return Skipped(line, f"unsubscribed (status {row[roles['status']].strip()!r})")
        try:
            email = validate_address(cell)
        except ValueError as err:
            shown = clean_value(cell)[:80]
            return Skipped(line, f"invalid address {shown!r}: {err}" if shown else str(err))
        digest = hashlib.blake2b(email.lower().encode(), digest_size=12).digest()
        first = seen.get(digest)
        if first is not None:
            return Skipped(line, f"duplicate of line {first} ({email})")
        seen[digest] = line
        values = {
            self.columns[i]: clean_value(unicodedata.normalize("NFC", v))
            for i, v in enumerate(row[: len(self.columns)])
        }
        name = values.get(self.columns[roles["name"]], "") if "name" in roles else ""
        if "last" in roles:
            last = values.get(self.columns[roles["last"]], "")
            name = name if not last or last in name else f"{name} {last}".strip()
        return Subscriber(email=email, name=name, line=line, fields=values)

    def scan(self) -> ListStats:
        """One full pass: counts valid recipients and collects skipped rows."""
        stats = ListStats()
        for item in self:
            if isinstance(item, Subscriber):
                stats.valid += 1
            else:
                stats.skipped.append(item)
        return stats


def read_subscribers(path: Path, encoding: str = "utf-8-sig") -> SubscriberList:
    """Open a subscriber list and check its header."""
    return SubscriberList(path, encoding)
