"""The per-recipient journal: a SQLite file in the state folder, written as things happen.

Each recipient of a campaign has one row keyed on (campaign, address case-folded). A row is
set to ``in_flight`` and committed before the final dot that lets the server accept the
message (see SmtpTransport.send), and to ``sent`` only after the server's 250. During a run
an outcome is committed with the next "in flight" mark (connections marking at the same
moment share that commit): a run killed before then leaves the row in flight.
A row still ``in_flight`` when a run starts belongs to a run that died mid-message: it becomes
``unknown`` and is not sent again unless the operator asks (at-most-once).

The campaign lock (:mod:`dispatch.state.locks`) keeps one run per campaign; the tables are in
:mod:`dispatch.state.tables`. With the state in PostgreSQL, :mod:`dispatch.state.shared`
lets several senders share a campaign instead."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from dispatch.errors import LockedError
from dispatch.state.db import Database, check_not_symlink
from dispatch.state.group import Statement, Store
from dispatch.state.identity import Use
from dispatch.state.locks import alive, campaign_lock, lock_running
from dispatch.state.tables import _DELETE_IF_EMPTY, _EMPTY_CAMPAIGNS, SCHEMA, CampaignInfo, Record
from dispatch.state.unknowns import ENDED, Unknown, listed, settle

__all__ = [
    "DAY", "DEFERRED", "FAILED", "FILENAME", "IN_FLIGHT", "PENDING", "RESERVATION_MAX_AGE", "SCHEMA",
    "SENT", "STATES", "SUPPRESSED", "UNKNOWN", "CampaignInfo", "Journal", "Record",
]  # fmt: skip

PENDING, IN_FLIGHT, SENT = "pending", "in_flight", "sent"
DEFERRED, FAILED, UNKNOWN = "deferred", "failed", "unknown"
SUPPRESSED = "suppressed"  # was waiting (deferred), then unsubscribed or suppressed: no longer owed
STATES = (PENDING, IN_FLIGHT, SENT, DEFERRED, FAILED, UNKNOWN, SUPPRESSED)
DAY = 86_400.0
FILENAME = "journal.sqlite3"

RESERVATION_MAX_AGE = 3600.0  # a reservation older than this belongs to a stuck or dead run


class Journal:
    """Durable per-recipient state for every campaign in one state folder."""

    shared = False  # several senders on one campaign (PostgreSQL: dispatch.state.shared)

    def __init__(
        self, state_dir: Path, *, readonly: bool = False, durable: bool = False, db: Store | None = None
    ) -> None:
        self.state_dir = state_dir
        self._held: set[str] = set()
        self._db: Store = (
            db
            if db is not None
            else Database(state_dir / FILENAME, SCHEMA, readonly=readonly, durable=durable)
        )
        self.path = self._db.path

    @property
    def backend(self) -> str:
        """``sqlite`` or ``postgresql``."""
        return self._db.backend

    @classmethod
    def open_existing(cls, state_dir: Path) -> Journal | None:
        """The journal read-only, or None if no run has written one yet."""
        path = state_dir / FILENAME
        check_not_symlink(path, "journal")
        if not path.exists():
            return None
        return cls(state_dir, readonly=True)

    def close(self) -> None:
        """Close the database."""
        self._db.close()

    @contextmanager
    def lock(self, campaign: str) -> Iterator[None]:
        """Hold the campaign's lock for the block; LockedError at once if another run has it.
        Re-entrant for this Journal object, so a caller may take the lock early (before the
        list is scanned) and :func:`dispatch.send.delivery.run_send` can take it again."""
        if campaign in self._held:
            yield
            return
        with campaign_lock(self.state_dir, campaign):
            self._held.add(campaign)
            try:
                yield
            finally:
                self._held.discard(campaign)

    def running(self, campaign: str) -> bool:
        """Whether a live process holds (or last held) the campaign's lock (see :func:`running`)."""
        return lock_running(self.state_dir, campaign)

    def begin(
        self, campaign: str, subject: str, fingerprint: str, article: str, body: str = ""
    ) -> str | None:
        """Register a run of the campaign (``body``: the fingerprint of the article's text alone);
        returns the old fingerprint if the content changed."""
        now = time.time()
        find = "SELECT fingerprint FROM campaigns WHERE id = ?"
        with self._db.transaction() as db:
            row = db.execute(find, (campaign,)).fetchone()
            if row is None:
                added = db.execute(
                    "INSERT INTO campaigns VALUES (?, ?, ?, ?, 0, ?, ?, ?) ON CONFLICT (id) DO NOTHING",
                    (campaign, subject, fingerprint, article, now, now, body),
                ).rowcount
                if added:
                    return None
                # another sender on a shared state registered it since the look above
                row = db.execute(find, (campaign,)).fetchone()
            db.execute(
                "UPDATE campaigns SET subject = ?, article = ?, updated = ?, body = ? WHERE id = ?",
                (subject, article, now, body, campaign),
            )
        return None if row[0] == fingerprint else str(row[0])

    def set_recipients(self, campaign: str, count: int) -> None:
        """Remember how many valid recipients the list had on the latest run."""
        self._db.execute("UPDATE campaigns SET recipients = ? WHERE id = ?", (count, campaign))

    def recover(self, campaign: str) -> int:
        """Rows left in flight by a run that died become unknown; returns how many. Their
        ``updated`` stays the last try's in-flight mark, and ``sent_at`` the first unsettled
        try's: the span ``dispatch reconcile`` needs the relay's log to cover."""
        cur = self._db.execute(
            "UPDATE recipients SET state = ?, reply = ?, sent_at = COALESCE(sent_at, updated) "
            "WHERE campaign = ? AND state = ?",  # maybe delivered: it counts today
            (UNKNOWN, ENDED, campaign, IN_FLIGHT),
        )
        return int(cur.rowcount)

    def give_up(self, campaign: str, days: float) -> int:
        """Recipients deferred for longer than ``days`` since their first attempt become failed
        (RFC 5321 4.5.4.1: a sender must give up eventually); returns how many."""
        note = f" (gave up: still failing temporarily after {days:g} days)"
        cur = self._db.execute(
            "UPDATE recipients SET state = ?, reply = COALESCE(reply, '') || ?, updated = ? "
            "WHERE campaign = ? AND state = ? AND created < ?",
            (FAILED, note, time.time(), campaign, DEFERRED, time.time() - days * DAY),
        )
        return int(cur.rowcount)

    def state(self, campaign: str, key: str) -> str | None:
        """The recipient's state, or None if the campaign has not reached them yet."""
        row = self._db.read("SELECT state FROM recipients WHERE campaign = ? AND key = ?", (campaign, key))
        return None if row is None else str(row[0])

    def knows_anyone(self, campaign: str) -> bool:
        """Whether the campaign has any recipient row, or any campaign a hard bounce."""
        row = self._db.read(
            "SELECT EXISTS (SELECT 1 FROM recipients WHERE campaign = ?) "
            "OR EXISTS (SELECT 1 FROM recipients WHERE hard_bounce = 1)",
            (campaign,),
        )
        return bool(row and row[0])

    def skip_state(self, campaign: str, key: str) -> tuple[str | None, bool]:
        """(the recipient's state in this campaign, whether the address hard-bounced in any
        campaign): what a run needs to decide about one recipient, in one lookup."""
        row = self._db.read(
            "SELECT (SELECT state FROM recipients WHERE campaign = ? AND key = ?), "
            "EXISTS (SELECT 1 FROM recipients WHERE key = ? AND hard_bounce = 1)",
            (campaign, key, key),
        )
        return (None, False) if row is None else (row[0], bool(row[1]))

    def in_flight(self, campaign: str, key: str, email: str, message_id: str) -> None:
        """Record, durably, that this recipient's message data is about to be sent."""
        now = time.time()
        statement = (
            "INSERT INTO recipients (campaign, key, email, state, attempts, message_id, created, updated) "
            "VALUES (?, ?, ?, ?, 1, ?, ?, ?) ON CONFLICT (campaign, key) DO UPDATE SET "
            "state = excluded.state, attempts = recipients.attempts + 1, message_id = excluded.message_id, "
            "updated = excluded.updated",
            (campaign, key, email, IN_FLIGHT, message_id, now, now),
        )
        self._write([statement], wait=True, claim=(campaign, key))  # committed before the data is sent

    def withdraw(self, campaign: str, key: str, state: str | None) -> None:
        """A row marked in flight whose message data never left after all (the relay refused
        the sender in answer to the pipelined commands): put back its earlier ``state`` (None:
        the recipient had no row). Committed like an outcome; a run killed first leaves the row
        in flight, read as unknown later: never a duplicate."""
        if state is None:
            statement: Statement = (
                "DELETE FROM recipients WHERE campaign = ? AND key = ? AND state = ?",
                (campaign, key, IN_FLIGHT),
            )
        else:
            statement = (
                "UPDATE recipients SET state = ? WHERE campaign = ? AND key = ? AND state = ?",
                (state, campaign, key, IN_FLIGHT),
            )
        self._write([statement], wait=False, claim=(campaign, key))

    def outcome(
        self,
        campaign: str,
        key: str,
        email: str,
        state: str,
        *,
        code: int | None,
        enhanced: str,
        reply: str,
        hard_bounce: bool = False,
        message_id: str = "",
        attempts: int = 1,
        reservation: int | None = None,
    ) -> None:
        """Record a recipient's outcome as it happens (sent, deferred, failed or unknown).

        ``attempts`` counts the tries this outcome adds; tries that reached :meth:`in_flight`
        were counted there already.
        """
        now = time.time()
        # an unknown outcome may have been delivered: it keeps counting against the daily limit,
        # from this try's in-flight mark or an earlier unsettled try's (reconcile's span starts
        # there; see dispatch.state.unknowns)
        sent_at = now if state in (SENT, UNKNOWN) else None
        statements: list[Statement] = [(
            "INSERT INTO recipients (campaign, key, email, state, attempts, code, enhanced, reply, "
            "hard_bounce, message_id, created, updated, sent_at) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (campaign, key) DO UPDATE SET "
            "state = excluded.state, code = excluded.code, enhanced = excluded.enhanced, "
            "reply = excluded.reply, hard_bounce = excluded.hard_bounce, "
            "attempts = recipients.attempts + ?, updated = excluded.updated, "
            "sent_at = CASE WHEN excluded.state = ? AND recipients.state = ? "
            "THEN COALESCE(recipients.sent_at, recipients.updated) ELSE excluded.sent_at END, "
            "message_id = COALESCE(NULLIF(excluded.message_id, ''), recipients.message_id)",
            (campaign, key, email, state, attempts, code, enhanced, reply, int(hard_bounce),
             message_id, now, now, sent_at, attempts, UNKNOWN, IN_FLIGHT),
        )]  # fmt: skip
        if reservation is not None:  # one transaction: never counted twice, never zero times
            statements.append(("DELETE FROM reservations WHERE id = ?", (reservation,)))
        # Inside grouped() the row is committed with the next message's "in flight" (or the
        # run's next pause): a process killed before that leaves it in flight, which a later
        # run reads as unknown: never sent twice.
        self._write(statements, wait=False, claim=(campaign, key), done=True)

    def _write(
        self, statements: list[Statement], *, wait: bool, claim: tuple[str, str], done: bool = False
    ) -> None:
        """Write one recipient's statements (``claim``: its campaign and key; ``done``: its
        outcome, after which nothing more is written about it in this run). With several
        senders (:mod:`dispatch.state.shared`) the write is fenced by the sender's claim."""
        self._db.write(statements, wait=wait)

    @contextmanager
    def grouped(self) -> Iterator[None]:
        """Share commits between the writes of a run (see Database.grouped)."""
        with self._db.grouped():
            yield

    def flush(self) -> None:
        """Commit the outcomes grouped() holds (a run about to wait calls it)."""
        self._db.flush()

    def sent_within(self, seconds: float = DAY) -> int:
        """Messages sent by any campaign in this state folder in the last ``seconds``."""
        row = self._db.one("SELECT COUNT(*) FROM recipients WHERE sent_at >= ?", (time.time() - seconds,))
        return int(row[0]) if row else 0

    def reserve(self, daily_limit: int) -> int | None:
        """Take one message from the rolling 24-hour budget shared by every run in this state
        folder; returns a reservation to :meth:`release` once the outcome is recorded, or None
        when the budget is spent. Atomic across processes (an immediate SQLite transaction)."""
        now = time.time()
        with self._db.transaction() as db:
            for rid, pid, created in db.execute("SELECT id, pid, created FROM reservations").fetchall():
                if created < now - RESERVATION_MAX_AGE or not alive(pid):
                    db.execute("DELETE FROM reservations WHERE id = ?", (rid,))
            sent = db.execute("SELECT COUNT(*) FROM recipients WHERE sent_at >= ?", (now - DAY,))
            held = db.execute("SELECT COUNT(*) FROM reservations")
            if int(sent.fetchone()[0]) + int(held.fetchone()[0]) >= daily_limit:
                return None
            cur = db.execute("INSERT INTO reservations (pid, created) VALUES (?, ?)", (os.getpid(), now))
        return int(cur.lastrowid)

    def release(self, reservation: int) -> None:
        """Give back a reservation (after the outcome, sent or not, is recorded). It goes the
        way of the outcome (inside grouped(), after it), so a slot is never free too soon."""
        self._db.write([("DELETE FROM reservations WHERE id = ?", (reservation,))], wait=False)

    def hard_bounced(self, key: str) -> str | None:
        """The campaign in which this address hard-bounced (x.1.1-type reply), if any."""
        row = self._db.one(
            "SELECT campaign FROM recipients WHERE key = ? AND hard_bounce = 1 LIMIT 1", (key,)
        )
        return None if row is None else str(row[0])

    def counts(self, campaign: str) -> dict[str, int]:
        """Recipients by state."""
        rows = self._db.all(
            "SELECT state, COUNT(*) FROM recipients WHERE campaign = ? GROUP BY state", (campaign,)
        )
        counts = dict.fromkeys(STATES, 0)
        counts.update({str(s): int(n) for s, n in rows})
        return counts

    def records(self, campaign: str, states: tuple[str, ...]) -> list[Record]:
        """The rows in the given states, oldest first."""
        marks = ", ".join("?" * len(states))
        # Only "?" placeholders are formatted into the query text.
        rows = self._db.all(
            "SELECT email, state, attempts, code, enhanced, reply, hard_bounce, message_id, "  # noqa: S608
            f"updated FROM recipients WHERE campaign = ? AND state IN ({marks}) ORDER BY updated",
            (campaign, *states),
        )
        return [
            Record(r[0], r[1], r[2], r[3], r[4] or "", r[5] or "", bool(r[6]), r[7] or "", r[8]) for r in rows
        ]

    def campaigns(self) -> list[CampaignInfo]:
        """Every campaign, most recently updated first."""
        rows = self._db.all("SELECT id, subject, recipients, updated FROM campaigns ORDER BY updated DESC")
        return [CampaignInfo(r[0], r[1], r[2], r[3], self.counts(r[0])) for r in rows]

    def fingerprint(self, campaign: str) -> str | None:
        """The article fingerprint the campaign was started (or last run) with."""
        row = self._db.one("SELECT fingerprint FROM campaigns WHERE id = ?", (campaign,))
        return None if row is None else str(row[0])

    def campaigns_from(self, article: str) -> list[CampaignInfo]:
        """Campaigns started from the article file at this (resolved) path that reached someone
        (a run that stopped before sending anything is not an earlier issue)."""
        ids = {r[0] for r in self._db.all("SELECT id FROM campaigns WHERE article = ?", (article,))}
        return [c for c in self.campaigns() if c.id in ids and c.counts[SENT] + c.counts[UNKNOWN]]

    def campaigns_with_body(self, body: str) -> list[CampaignInfo]:
        """Campaigns whose article had this text (``body`` fingerprint) and that reached someone."""
        ids = {r[0] for r in self._db.all("SELECT id FROM campaigns WHERE body = ? AND body != ''", (body,))}
        return [c for c in self.campaigns() if c.id in ids and c.counts[SENT] + c.counts[UNKNOWN]]

    def suppressed(self, campaign: str, key: str, email: str, reason: str) -> None:
        """A recipient this run skips because the suppression store holds them: recorded, so
        ``status`` counts them as suppressed (not pending), as the run did."""
        now = time.time()
        statement = (
            "INSERT INTO recipients (campaign, key, email, state, attempts, reply, created, updated) "
            "VALUES (?, ?, ?, ?, 0, ?, ?, ?) ON CONFLICT (campaign, key) DO UPDATE SET "
            "state = excluded.state, reply = excluded.reply, updated = excluded.updated "
            "WHERE recipients.state IN (?, ?)",
            (campaign, key, email, SUPPRESSED, f"suppressed ({reason})", now, now, DEFERRED, SUPPRESSED),
        )
        self._write([statement], wait=False, claim=(campaign, key), done=True)

    def record_list(self, use: Use) -> None:
        """Remember that a send used this list id, settings file and secret."""
        now = time.time()
        statement = (
            "INSERT INTO lists VALUES (?, ?, ?, ?, ?) "
            "ON CONFLICT (list_id, settings_file, secret) DO UPDATE SET last = excluded.last",
            (use.list_id, use.settings_file, use.secret, now, now),
        )
        self._db.write([statement], wait=True)

    def list_uses(self) -> list[Use]:
        """Every list id, settings file and secret digest a send of this state folder used."""
        rows = self._db.all("SELECT list_id, settings_file, secret FROM lists", ())
        return [Use(str(r[0]), str(r[1]), str(r[2])) for r in rows]

    @property
    def fenced_out(self) -> int:
        """Writes skipped because their claim had passed to another sender (several senders)."""
        return self._db.fenced_out

    def campaign(self, campaign: str) -> CampaignInfo | None:
        """One campaign, or None."""
        return next((c for c in self.campaigns() if c.id == campaign), None)

    def prune_empty(self) -> list[str]:
        """Forget campaigns that never recorded a recipient (a run that stopped before its first
        message); returns their IDs. A campaign another process is sending right now (it may
        still be reading its list) is left alone."""
        candidates = [str(r[0]) for r in self._db.read_all(_EMPTY_CAMPAIGNS, ())]
        pruned = []
        for campaign in candidates:
            try:
                with self.lock(campaign), self._db.transaction() as db:
                    if db.execute(_DELETE_IF_EMPTY, (campaign,)).rowcount:
                        pruned.append(campaign)
            except LockedError:
                continue
        return pruned

    def unknowns(self, campaign: str) -> list[Unknown]:
        """The campaign's unknown recipients with their Message-IDs (see :mod:`.unknowns`)."""
        return listed(self._db, campaign)

    def settle_unknowns(self, campaign: str, sent: dict[str, str], again: dict[str, str]) -> tuple[int, int]:
        """Settle unknowns ``{key: why}`` as sent, or as safe to send again; how many changed."""
        return settle(self._db, campaign, sent, again)
