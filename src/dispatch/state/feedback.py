"""What comes back by mail, remembered in the state (``dispatch inbound``), and what it reads of
the journal, each behind a few small methods, on either backend.

:class:`FeedbackStore` (``feedback.sqlite3`` in a state folder, or the ``reports`` and
``events`` tables in PostgreSQL) holds the reports already read, so each counts once however
often it arrives, and per campaign the readers who bounced, bounced softly, complained or
unsubscribed by mail (one row per reader, campaign and kind: recording twice changes nothing).
:class:`JournalReads` is every question inbound asks the journal: the campaigns, who each one
reached, and a Message-ID's reader. Suppressions go to the suppression store, as every other
source's do.

One report is read at a time: in a state folder under a lock file, in PostgreSQL under an
advisory lock that every host takes (:class:`SharedFeedbackStore`).
"""

from __future__ import annotations

import fcntl
import os
import stat
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from dispatch.state import tables
from dispatch.state.db import Database, Schema, StateError, check_not_symlink
from dispatch.state.group import Store
from dispatch.state.identity import Use

FILENAME = "feedback.sqlite3"
LOCK = ".inbound.lock"  # (a campaign's lock file never starts with a dot)
BOUNCED, SOFT, COMPLAINED, UNSUBSCRIBED = "bounced", "soft", "complained", "unsubscribed"
KINDS = (BOUNCED, SOFT, COMPLAINED, UNSUBSCRIBED)
REACHED = ("sent", "unknown", "in_flight")  # journal states of a message the relay may have accepted
SCHEMA = Schema(
    what="feedback store",
    version=1,
    create="""CREATE TABLE reports (
        id TEXT PRIMARY KEY,
        outcome TEXT NOT NULL,
        created INTEGER NOT NULL
    ) WITHOUT ROWID;
    CREATE TABLE events (
        campaign TEXT NOT NULL,
        key TEXT NOT NULL,
        kind TEXT NOT NULL,
        detail TEXT NOT NULL,
        created INTEGER NOT NULL,
        PRIMARY KEY (campaign, key, kind)
    ) WITHOUT ROWID""",
)
_PAGE = 5000
INBOUND_LOCK = 0x696E626F756E64  # one report at a time, on every host ("inbound" in ASCII)


def _text(value: str) -> str:
    """Outside text as a database keeps it (PostgreSQL's text holds no NUL character)."""
    return value.replace("\x00", "\ufffd")


class FeedbackStore:
    """Reports read and what they said, per campaign and reader."""

    def __init__(self, state_dir: Path, *, readonly: bool = False, db: Store | None = None) -> None:
        self.state_dir = state_dir
        self._db: Store = db if db is not None else Database(state_dir / FILENAME, SCHEMA, readonly=readonly)
        self.path = self._db.path

    @classmethod
    def open_existing(cls, state_dir: Path) -> FeedbackStore | None:
        """The store read-only, or None when ``dispatch inbound`` never ran on this folder."""
        path = state_dir / FILENAME
        check_not_symlink(path, SCHEMA.what)
        return cls(state_dir, readonly=True) if path.exists() else None

    def close(self) -> None:
        """Close the file (or the database)."""
        self._db.close()

    def __enter__(self) -> FeedbackStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @contextmanager
    def exclusive(self) -> Iterator[None]:
        """One report at a time across processes (a Postfix pipe starts one per message): the
        soft-bounce count of a reader is read and written by one of them at a time."""
        path = self.state_dir / LOCK
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o600)
        except OSError as err:
            raise StateError(f"{path}: cannot open the inbound lock: {err.strerror}") from err
        try:
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                raise StateError(f"{path}: is not a regular file; remove it from the state folder")
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)

    def outcome(self, report_id: str) -> str | None:
        """What was decided when this report was read before, or None (never read)."""
        row = self._db.read("SELECT outcome FROM reports WHERE id = ?", (_text(report_id),))
        return None if row is None else str(row[0])

    def remember(self, report_id: str, outcome: str) -> None:
        """Remember a report as read, with what was decided (the first decision stays)."""
        self._db.execute(
            "INSERT INTO reports (id, outcome, created) VALUES (?, ?, ?) ON CONFLICT DO NOTHING",
            (_text(report_id), _text(outcome[:500]), int(time.time())),
        )

    def record(self, campaign: str, key: str, kind: str, detail: str = "") -> bool:
        """A reader of a campaign bounced, bounced softly, complained or unsubscribed by mail;
        False when that was recorded already."""
        cursor = self._db.execute(
            "INSERT INTO events (campaign, key, kind, detail, created) VALUES (?, ?, ?, ?, ?) "
            "ON CONFLICT DO NOTHING",
            (campaign, key, kind, _text(detail[:500]), int(time.time())),
        )
        return bool(cursor.rowcount == 1)

    def soft_campaigns(self, key: str) -> set[str]:
        """The campaigns whose message to this reader bounced softly."""
        rows = self._db.read_all("SELECT campaign FROM events WHERE key = ? AND kind = ?", (key, SOFT))
        return {str(r[0]) for r in rows}

    def counts(self) -> dict[str, dict[str, int]]:
        """Per campaign, how many readers bounced, bounced softly, complained and unsubscribed."""
        found: dict[str, dict[str, int]] = {}
        for campaign, kind, n in self._db.read_all(
            "SELECT campaign, kind, COUNT(*) FROM events GROUP BY campaign, kind", ()
        ):
            found.setdefault(str(campaign), dict.fromkeys(KINDS, 0))[str(kind)] = int(n)
        return found


class SharedFeedbackStore(FeedbackStore):
    """The feedback store in PostgreSQL (``DISPATCH_STATE_URL``), shared by every host: a
    report two hosts read at the same moment is decided by one of them, and counts once."""

    def __init__(self, state_dir: Path, db: Store) -> None:
        super().__init__(state_dir, db=db)

    @contextmanager
    def exclusive(self) -> Iterator[None]:
        """One report at a time across every process of every host: a session advisory lock,
        which the database lets go of by itself when a process dies holding it."""
        with self._db.autocommit() as db:
            db.execute("SELECT pg_advisory_lock(?)", (INBOUND_LOCK,))
            try:
                yield
            finally:
                db.execute("SELECT pg_advisory_unlock(?)", (INBOUND_LOCK,))


@dataclass(frozen=True)
class Reached:
    """A reader's row in one campaign of the journal."""

    email: str
    state: str
    sent_at: float | None


class JournalReads:
    """The journal, read-only, as ``dispatch inbound`` and the counts of ``status`` read it
    (``db``: the journal's database, or None when nothing was ever sent)."""

    def __init__(self, db: Store | None) -> None:
        self._db = db

    @classmethod
    def in_folder(cls, state_dir: Path) -> JournalReads:
        """The journal of a state folder."""
        path = state_dir / "journal.sqlite3"
        check_not_symlink(path, tables.SCHEMA.what)
        return cls(Database(path, tables.SCHEMA, readonly=True) if path.exists() else None)

    def close(self) -> None:
        """Close the file (or the database)."""
        if self._db is not None:
            self._db.close()

    def campaigns(self) -> list[tuple[str, float]]:
        """Every campaign and when it was started, oldest first."""
        if self._db is None:
            return []
        rows = self._db.read_all("SELECT id, created FROM campaigns ORDER BY created, id", ())
        return [(str(r[0]), float(r[1])) for r in rows]

    def reached(self, campaign: str) -> Iterator[tuple[str, str]]:
        """``(key, email)`` of every reader the campaign's message may have reached, a page at
        a time (the relay accepted it, or the answer was lost)."""
        if self._db is None:
            return
        after = ""
        marks = ", ".join("?" * len(REACHED))
        while True:
            rows = self._db.read_all(
                f"SELECT key, email FROM recipients WHERE campaign = ? AND key > ? "  # noqa: S608 - marks only
                f"AND state IN ({marks}) ORDER BY key LIMIT {_PAGE}",
                (campaign, after, *REACHED),
            )
            yield from ((str(k), str(e)) for k, e in rows)
            if len(rows) < _PAGE:
                return
            after = str(rows[-1][0])

    def reader(self, campaign: str, key: str) -> Reached | None:
        """The reader's row in the campaign, if the campaign reached them (see :meth:`reached`)."""
        if self._db is None:
            return None
        row = self._db.read(
            "SELECT email, state, sent_at FROM recipients WHERE campaign = ? AND key = ?", (campaign, key)
        )
        if row is None or row[1] not in REACHED:
            return None
        return Reached(str(row[0]), str(row[1]), None if row[2] is None else float(row[2]))

    def by_message_id(self, message_id: str) -> tuple[str, str] | None:
        """``(campaign, key)`` of the message sent with this Message-ID, or None."""
        if self._db is None or not message_id or "\x00" in message_id:  # (none of ours holds one)
            return None
        marks = ", ".join("?" * len(REACHED))
        row = self._db.read(
            f"SELECT campaign, key FROM recipients WHERE message_id = ? AND state IN ({marks}) LIMIT 1",  # noqa: S608
            (message_id, *REACHED),
        )
        return None if row is None else (str(row[0]), str(row[1]))

    def list_uses(self) -> list[Use]:
        """Every list id, settings file and secret digest a send of this state folder used."""
        if self._db is None:
            return []
        rows = self._db.read_all("SELECT list_id, settings_file, secret FROM lists", ())
        return [Use(str(r[0]), str(r[1]), str(r[2])) for r in rows]
