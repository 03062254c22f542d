"""Several senders on one campaign, exactly once: the journal in PostgreSQL, shared.

Every ``dispatch send`` of a campaign, on any host, registers as a **sender** with a lease
on the database's clock, renewed by a heartbeat; a sender whose lease ran out (killed,
paused, cut off) is gone. The recipients still owed the issue are **claims**: each sender,
reading the same list, adds the rows it finds to do (``ON CONFLICT DO NOTHING``: the first to
read a row adds it, every other sender finds it there), then takes a few at a time with
``SELECT … FOR UPDATE SKIP LOCKED``, in list order, from those nobody holds or whose holder's
lease ran out. Each claim gets a **fencing number** from a sequence. Every write about a
claimed recipient (in flight, the outcome) first checks, in its own transaction and under the
claim's row lock, that the claim is still this sender's with that number: a sender paused past
its lease, whose claims another sender took, can neither put a recipient in flight (so it
never sends the final dot) nor record anything.

A claim taken over from a sender that had its recipient in flight is not sent again: the row
becomes unknown, as after a killed run with one sender. The daily budget is one set of
reservations, taken under an advisory lock; the rate is one pace per relay in ``pacing``.
"""

from __future__ import annotations

import json
import os
import secrets
import socket
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dispatch.state.group import Statement
from dispatch.state.journal import DAY, IN_FLIGHT, RESERVATION_MAX_AGE, SENT, UNKNOWN, Journal
from dispatch.state.pg import PgDatabase
from dispatch.state.unknowns import ENDED, STOPPED

BUDGET_LOCK = 0x62756467  # serialises reservations of the daily budget ("budg")
# The next few recipients in list order after ``seq``, nobody live holds; taken by their row ids.
_CLAIM = (
    "WITH picked AS (SELECT c.ctid AS tid FROM claims c WHERE c.campaign = ? AND c.seq > ? AND "
    "(c.holder IS NULL OR NOT EXISTS (SELECT 1 FROM senders s WHERE s.id = c.holder AND "
    "s.lease_until > clock_timestamp())) ORDER BY c.seq LIMIT ? FOR UPDATE SKIP LOCKED) "
    "UPDATE claims c SET holder = ?, fence = nextval('fences') FROM picked WHERE c.ctid = picked.tid "
    "RETURNING c.key, c.email, c.line, c.fields, c.fence, c.seq"
)
# A claim walks the index in list order, whatever the table's statistics say (a queue table's
# are always stale: a bitmap scan and a sort of the whole list would make each claim O(n)).
_IN_ORDER = (
    "SELECT set_config('enable_seqscan', 'off', true), set_config('enable_bitmapscan', 'off', true), "
    "set_config('enable_sort', 'off', true)"
)
_RECOVER = (
    "UPDATE recipients r SET state = ?, reply = ?, sent_at = COALESCE(sent_at, updated) "
    "WHERE r.campaign = ? AND r.state = ? AND NOT EXISTS (SELECT 1 FROM claims c WHERE "
    "c.campaign = r.campaign AND c.key = r.key AND EXISTS (SELECT 1 FROM senders s WHERE s.id = c.holder "
    "AND s.lease_until > clock_timestamp()))"
)
LOST = STOPPED  # (its in-flight mark's time stays its updated: see dispatch.state.unknowns)


@dataclass(frozen=True)
class Claimed:
    """A recipient this sender now holds: the list row as the first sender read it."""

    key: str
    email: str
    line: int
    name: str
    fields: dict[str, str]
    state: str | None  # the journal's state when claimed

    @property
    def taken_over(self) -> bool:
        """A dead sender had it in flight: the claim made it unknown; never sent by this claim."""
        return self.state == IN_FLIGHT


@dataclass(frozen=True)
class SenderInfo:
    """A sender of a campaign, as ``status`` shows it."""

    id: str
    campaign: str
    host: str
    pid: int
    lease_left: float  # seconds; negative: expired
    claims: int


def sender_id() -> str:
    """``host:pid:random``: unique across hosts and restarts."""
    return f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(3)}"


class SharedJournal(Journal):
    """The journal in PostgreSQL, with claims, leases and fences for several senders."""

    shared = True

    def __init__(self, state_dir: Path, db: PgDatabase, *, lease: float = 30.0) -> None:
        super().__init__(state_dir, db=db)
        self.pg = db
        self.lease = lease
        self.sender = sender_id()
        self._fences: dict[tuple[str, str], int] = {}
        self._after: dict[str, int] = {}  # per campaign: the list position this sender took up to
        self._states: dict[str, str] = {}  # the journal's state of the recipients just claimed
        self._beat: threading.Thread | None = None
        self._stop_beat = threading.Event()
        self.lost = threading.Event()  # the lease ran out: this sender must stop
        self.on_lost: list[Any] = []  # callbacks (the run's halt) when the lease is lost

    # --- senders and leases ---------------------------------------------------------------

    @contextmanager
    def lock(self, campaign: str) -> Iterator[None]:
        """Join the campaign's senders (never refused: others are welcome) for the block;
        leaving it gives back the claims this sender did not finish."""
        if campaign in self._held:
            yield
            return
        self._db.execute(
            "INSERT INTO senders VALUES (?, ?, ?, ?, ?, clock_timestamp() + ? * interval '1 second')",
            (self.sender, campaign, socket.gethostname(), os.getpid(), time.time(), self.lease),
        )
        self._held.add(campaign)
        self._start_heartbeat()
        try:
            yield
        finally:
            self._held.discard(campaign)
            self._stop_beat.set()
            if self._beat is not None:
                self._beat.join(timeout=10)
            self._leave()

    def _leave(self) -> None:
        """Give back unfinished claims and sign off (a sender killed first is timed out)."""
        try:
            self._db.flush()
        finally:
            with self._db.transaction() as db:
                db.execute("UPDATE claims SET holder = NULL WHERE holder = ?", (self.sender,))
                db.execute("DELETE FROM reservations WHERE holder = ?", (self.sender,))
                db.execute("DELETE FROM senders WHERE id = ?", (self.sender,))

    def _start_heartbeat(self) -> None:
        self._stop_beat.clear()
        conn = self.pg._connect(durable=False)
        self._beat = threading.Thread(target=self._heartbeat, args=(conn,), name="lease", daemon=True)
        self._beat.start()

    def _heartbeat(self, conn: Any) -> None:
        """Renew the lease every third of it; a lease that ran out is never renewed (another
        sender may hold the claims now): the run is told to stop."""
        try:
            while not self._stop_beat.wait(self.lease / 3):
                try:
                    renewed = conn.execute(
                        "UPDATE senders SET lease_until = clock_timestamp() + %s * interval '1 second' "
                        "WHERE id = %s AND lease_until > clock_timestamp()",
                        (self.lease, self.sender),
                    ).rowcount
                except Exception:
                    renewed = 1  # (writes fail on their own; try again at the next beat)
                if not renewed:
                    self._lose()
                    return
        finally:
            conn.close()

    def _lose(self) -> None:
        self.lost.set()
        for callback in self.on_lost:
            callback(
                f"this sender's lease ran out (paused or cut off for more than {self.lease:g} s): its "
                "recipients passed to the other senders; run again to join them"
            )

    def running(self, campaign: str) -> bool:
        """Whether a live sender (any host) is sending the campaign."""
        row = self._db.read(
            "SELECT EXISTS (SELECT 1 FROM senders WHERE campaign = ? AND lease_until > clock_timestamp())",
            (campaign,),
        )
        return bool(row and row[0])

    def senders(self, campaign: str | None = None) -> list[SenderInfo]:
        """Every sender (of one campaign), with its lease and how many recipients it holds."""
        rows = self._db.all(
            "SELECT s.id, s.campaign, s.host, s.pid, "
            "EXTRACT(EPOCH FROM s.lease_until - clock_timestamp())::float8, "
            "(SELECT COUNT(*) FROM claims c WHERE c.holder = s.id) FROM senders s "
            "WHERE (? = '' OR s.campaign = ?) ORDER BY s.started",
            (campaign or "", campaign or ""),
        )
        return [SenderInfo(str(a), str(b), str(c), int(d), float(e), int(f)) for a, b, c, d, e, f in rows]

    # --- recovery, budget -----------------------------------------------------------------

    def recover(self, campaign: str) -> int:
        """Rows in flight that no live sender holds became unknown; returns how many."""
        cur = self._db.execute(
            _RECOVER,
            (UNKNOWN, ENDED, campaign, IN_FLIGHT),
        )
        return int(cur.rowcount)

    def reserve(self, daily_limit: int) -> int | None:
        """One message of the rolling 24-hour budget shared by every sender of the database."""
        now = time.time()
        with self._db.transaction() as db:
            db.execute("SELECT pg_advisory_xact_lock(?)", (BUDGET_LOCK,))
            db.execute(
                "DELETE FROM reservations WHERE created < ? OR NOT EXISTS (SELECT 1 FROM senders s "
                "WHERE s.id = reservations.holder AND s.lease_until > clock_timestamp())",
                (now - RESERVATION_MAX_AGE,),
            )
            used = db.execute(
                "SELECT (SELECT COUNT(*) FROM recipients WHERE sent_at >= ?) "
                "+ (SELECT COUNT(*) FROM reservations)",
                (now - DAY,),
            ).fetchone()
            if int(used[0]) >= daily_limit:
                return None
            row = db.execute(
                "INSERT INTO reservations (pid, created, holder) VALUES (?, ?, ?) RETURNING id",
                (os.getpid(), now, self.sender),
            ).fetchone()
        return int(row[0])

    def take_slots(self, relay: str, seconds: float) -> float:
        """Take the next ``seconds`` of the relay's pace, shared by every sender: returns how
        long from now until the first of them (the database's clock)."""
        with self._db.transaction() as db:
            db.execute("INSERT INTO pacing VALUES (?, clock_timestamp()) ON CONFLICT DO NOTHING", (relay,))
            row = db.execute(
                "UPDATE pacing SET next_slot = GREATEST(next_slot, clock_timestamp()) "
                "+ ? * interval '1 second' "
                "WHERE name = ? RETURNING EXTRACT(EPOCH FROM next_slot - clock_timestamp())::float8",
                (seconds, relay),
            ).fetchone()
        return float(row[0]) - seconds

    # --- claims ---------------------------------------------------------------------------

    def offer(self, campaign: str, rows: Sequence[tuple[str, str, int, str, dict[str, str]]]) -> None:
        """Add list rows (key, email, line, name, fields) still owed the issue; a row another
        sender added first stays as it was."""
        if not rows:
            return
        values = [(campaign, k, e, n, json.dumps({"name": name, "fields": f})) for k, e, n, name, f in rows]
        with self._db.transaction() as db:
            db.executemany(
                "INSERT INTO claims (campaign, key, email, line, fields) VALUES (?, ?, ?, ?, ?) "
                "ON CONFLICT DO NOTHING",
                values,
            )

    def claim(self, campaign: str, count: int) -> list[Claimed]:
        """Take up to ``count`` recipients nobody live holds, in list order. A recipient its
        earlier holder left in flight becomes unknown (never sent twice) and is returned marked
        ``taken_over``, its claim gone, for the run to count; one already sent is let go. Each
        sender walks the list forward from where it last took; when nothing is left ahead it
        looks once more from the start (recipients given back, or whose holder died)."""
        while True:
            after = self._after.get(campaign, 0)
            rows, kept = self._claim(campaign, count, after)
            if not rows and after:
                rows, kept = self._claim(campaign, count, 0)
            if not rows:
                return []
            self._after[campaign] = max(int(r[5]) for r in rows)
            if kept:
                break  # (else every one was settled already: take the next ones)
        taken = []
        for key, email, line, fields, fence, _seq in kept:
            data = json.loads(fields)
            claimed = Claimed(key, email, int(line), data["name"], data["fields"], self._states.get(key))
            if not claimed.taken_over:  # (a claim taken over is gone already: nothing to fence)
                self._fences[(campaign, key)] = int(fence)
            taken.append(claimed)
        return taken

    def _claim(self, campaign: str, count: int, after: int) -> tuple[list[Any], list[Any]]:
        """(the rows claimed, those still to do)."""
        with self.pg.batch_transaction() as db:  # BEGIN, the plan and the claim in one round trip
            db.execute(_IN_ORDER)
            rows = db.execute(_CLAIM, (campaign, after, count, self.sender)).fetchall()
            if not rows:
                return [], []
            keys = [str(r[0]) for r in rows]
            # A statement of its own, after the claim: it sees what a holder that had these rows
            # locked (marking one in flight) committed before letting go (RETURNING would not).
            query = "SELECT key, state FROM recipients WHERE campaign = ? AND key = ANY(?)"
            self._states = {str(k): str(v) for k, v in db.execute(query, (campaign, keys)).fetchall()}
            done = [k for k in keys if self._states.get(k) in (IN_FLIGHT, SENT)]
            if done:
                db.execute(
                    "UPDATE recipients SET state = ?, reply = ?, sent_at = COALESCE(sent_at, updated) "
                    "WHERE campaign = ? AND key = ANY(?) AND state = ?",
                    (UNKNOWN, LOST, campaign, done, IN_FLIGHT),
                )
                db.execute("DELETE FROM claims WHERE campaign = ? AND key = ANY(?)", (campaign, done))
        return rows, [r for r in rows if self._states.get(str(r[0])) != SENT]

    def waiting_on_others(self, campaign: str) -> bool:
        """Whether live senders hold recipients of the campaign that are still to do (a sender
        out of work waits for them: if their holder dies, they pass to it)."""
        row = self._db.read(
            "SELECT EXISTS (SELECT 1 FROM claims c WHERE c.campaign = ? AND c.holder IS DISTINCT FROM ?)",
            (campaign, self.sender),
        )
        return bool(row and row[0])

    def open_claims(self, campaign: str) -> int:
        """Recipients of the campaign still to do that this sender does not hold."""
        row = self._db.one(
            "SELECT COUNT(*) FROM claims WHERE campaign = ? AND holder IS DISTINCT FROM ?",
            (campaign, self.sender),
        )
        return int(row[0]) if row else 0

    def drop(self, campaign: str, key: str) -> None:
        """Let go of a claimed recipient for good in this run (skipped: suppressed, already
        sent, a message that cannot be built); the next run's list adds it again if still owed."""
        self._write([], wait=False, claim=(campaign, key), done=True)

    def _fence(self, campaign: str, key: str, *, done: bool) -> Statement | None:
        """The statement that proves the claim is still this sender's, with its fencing number:
        it locks the claim (a sender taking it over waits, or skips it, until the write is
        committed) and, for an outcome, removes it in the same transaction."""
        fence = self._fences.get((campaign, key))
        if fence is None:
            return None
        mine = (campaign, key, self.sender, fence)
        if done:
            return ("DELETE FROM claims WHERE campaign = ? AND key = ? AND holder = ? AND fence = ?", mine)
        return (
            "SELECT 1 FROM claims WHERE campaign = ? AND key = ? AND holder = ? AND fence = ? FOR SHARE",
            mine,
        )

    def _write(
        self, statements: list[Statement], *, wait: bool, claim: tuple[str, str], done: bool = False
    ) -> None:
        fence = self._fence(*claim, done=done)
        if done:
            self._fences.pop(claim, None)
        self._db.write(statements, wait=wait, fence=fence)

    def prune_empty(self) -> list[str]:
        """As for one sender, leaving alone campaigns a live sender is on."""
        live = {s.campaign for s in self.senders() if s.lease_left > 0}
        pruned = []
        for campaign in {str(r[0]) for r in self._db.read_all(
            "SELECT id FROM campaigns "
            "WHERE NOT EXISTS (SELECT 1 FROM recipients WHERE campaign = campaigns.id)"
        )} - live:  # fmt: skip
            with self._db.transaction() as db:
                if db.execute(
                    "DELETE FROM campaigns WHERE id = ? AND NOT EXISTS (SELECT 1 FROM recipients "
                    "WHERE campaign = campaigns.id) AND NOT EXISTS (SELECT 1 FROM senders WHERE campaign = ? "
                    "AND lease_until > clock_timestamp())",
                    (campaign, campaign),
                ).rowcount:
                    pruned.append(campaign)
        return sorted(pruned)
