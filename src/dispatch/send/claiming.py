"""Several senders on one campaign (the state in PostgreSQL, :mod:`dispatch.state.shared`):
how one sender's run takes its share.

Every sender reads the same list as a single sender does, leaving out whom the journal and
the suppression store say to. The rows still owed the issue are offered to the campaign's
claims (the first sender to read a row adds it; the others find it there), and every sender
takes a few at a time, in list order, builds their messages and hands them to its
connections: so the senders split the list between them as they go, each at its own speed.
When nothing is left to take but other live senders still hold recipients, a sender waits:
if one of them dies, its claims pass to the others when its lease runs out.

The rate is one pace per relay, kept in the database (:class:`SharedPacer`): each sender takes
a short block of the relay's next slots at a time, so the senders together never go faster
than the rate, whatever their number, and none needs to know how many there are.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING, cast

from dispatch.compose.issue import recipients
from dispatch.errors import ConfigError
from dispatch.lists.subscribers import Skipped, Subscriber
from dispatch.send.skips import Skip
from dispatch.settings import Rate
from dispatch.state.journal import IN_FLIGHT, UNKNOWN, Journal

if TYPE_CHECKING:  # (the shared journal, and psycopg, load only with DISPATCH_STATE_URL)
    from dispatch.compose.issue import Issue
    from dispatch.send.summary import RunSummary
    from dispatch.send.worker import Item, Run, SendOptions
    from dispatch.state.shared import Claimed, SharedJournal

OFFER_BATCH = 500  # list rows offered in one statement
CLAIM_PER_CONNECTION = 8  # recipients a sender takes at a time, per connection
POLL = 0.01  # seconds between looks when other senders hold the rest (doubling, up to 0.1 s)
BLOCK_SECONDS = 0.25  # each sender takes this much of the shared pace at a time (at least one slot)


class Pacer:
    """A shared rate limit: at most one message every ``interval`` seconds, no bursts."""

    def __init__(self, rate: Rate | None) -> None:
        self.interval = rate.interval if rate else 0.0
        self._next = 0.0
        self._lock = threading.Lock()

    def wait(self, stop: threading.Event) -> None:
        """Block until the next message may go (or ``stop`` is set)."""
        if not self.interval:
            return
        with self._lock:
            now = time.monotonic()
            slot = max(now, self._next)
            self._next = slot + self.interval
        if slot > now:
            stop.wait(slot - now)


class SharedPacer:
    """The rate shared by every sender of the relay: slots taken from the database's pace."""

    def __init__(self, rate: Rate, journal: SharedJournal, relay: str) -> None:
        self.interval = rate.interval
        self._journal = journal
        self._relay = relay
        self._block = max(1, round(BLOCK_SECONDS / self.interval))
        self._slots: deque[float] = deque()
        self._lock = threading.Lock()

    def wait(self, stop: threading.Event) -> None:
        """Block until this sender's next slot (or ``stop`` is set)."""
        with self._lock:
            if not self._slots:
                first = self._journal.take_slots(self._relay, self._block * self.interval)
                start = time.monotonic() + first
                self._slots.extend(start + n * self.interval for n in range(self._block))
            slot = self._slots.popleft()
        delay = slot - time.monotonic()
        if delay > 0:
            stop.wait(delay)


def shared_pacer(rate: Rate | None, journal: Journal | None, relay: str) -> SharedPacer | None:
    """The pace of a run with several senders, or None (a local pace will do)."""
    if rate is None or journal is None or not journal.shared:
        return None
    return SharedPacer(rate, cast("SharedJournal", journal), relay)


class ClaimFeed:
    """One sender's share of a campaign: offer the list, claim, build, hand over."""

    def __init__(
        self, issue: Issue, run: Run, options: SendOptions, summary: RunSummary,
        put: Callable[[Item], bool],
    ) -> None:  # fmt: skip
        assert run.journal is not None
        assert run.journal.shared
        self.journal = cast("SharedJournal", run.journal)
        self.issue, self.run, self.options, self.summary, self.put = issue, run, options, summary, put
        self.campaign = issue.campaign
        self.batch = CLAIM_PER_CONNECTION * issue.settings.connections
        self.poll = min(0.1, self.journal.lease / 4)
        # Where each row of this sender's list goes is counted once, by its key (see settle):
        self.claimed = 0  # recipients taken and counted by this run (their outcome, or a skip)
        self.reached = 0  # rows the reading of the list has come to
        self.reading = True
        self.open: set[str] = set()  # offered by the reading, not taken by this sender (yet)
        self.ahead: set[str] = set()  # taken before the reading came to them
        self.counted: set[str] = set()  # left out by the reading and counted there: never again
        self.journal.on_lost.append(run.halt)

    def run_feed(self) -> None:
        """Offer the rows still owed, taking and sending claims meanwhile; then take what is
        left until the campaign has nothing this sender could still take."""
        offered: list[tuple[str, str, int, str, dict[str, str]]] = []
        for sub in recipients(self.issue):
            if self.run.stop.is_set():
                break  # (the rows not come to are not tried this run: see settle)
            self.reached += 1
            if sub.key in self.ahead:  # taken already: the run counts it
                self.ahead.discard(sub.key)
                continue
            _state, reason, detail = self.run.rules.check(sub.key, store=bool(self.options.limit))
            if reason is Skip.UNKNOWN:
                reason, detail = self._unknown_or_elsewhere(sub.key, reason, detail)
            if reason is not None:
                self.summary.count_skip(reason, detail, sub.email)
                if reason is not Skip.SENT:  # (a sent one is never claimed: claim lets it go)
                    self.counted.add(sub.key)
                if reason is Skip.SUPPRESSED:
                    self.run.settle_suppressed(sub, detail)
                continue
            self.open.add(sub.key)
            offered.append((sub.key, sub.email, sub.line, sub.name, sub.fields))
            if len(offered) >= OFFER_BATCH:
                self.journal.offer(self.campaign, offered)
                offered = []
                self._take()  # sending starts while the rest of the list is read
        self.journal.offer(self.campaign, offered)
        self.reading = False
        pause = POLL
        while not self.run.stop.is_set() and self._room():
            if self._take():
                pause = POLL
                continue
            if not self.journal.waiting_on_others(self.campaign):
                return
            self.run.stop.wait(pause)  # another sender holds the rest: if it dies, they pass here
            pause = min(pause * 2, self.poll)

    def _unknown_or_elsewhere(self, key: str, reason: Skip, detail: str) -> tuple[Skip | None, str]:
        """An unknown, or a live sender's: in flight now means a live sender has its message out
        (the run made those a dead sender left in flight unknown before it started), so the row is
        offered and claiming sorts it out; one that has left flight since the first look is judged
        by where it landed (sent by the other sender, most often), never as an earlier unknown."""
        state, bounced = self.journal.skip_state(self.campaign, key)
        if state == IN_FLIGHT:
            return None, ""
        if state == UNKNOWN:
            return reason, detail
        _state, now, now_detail = self.run.rules.judge(key, state, bounced, store=bool(self.options.limit))
        return now, now_detail

    def _room(self) -> int:
        limit = self.options.limit
        return self.batch if not limit else min(self.batch, max(0, limit - self.claimed))

    def _take(self) -> bool:
        """Claim a few recipients and hand their messages over; False when none was had (or the
        run stopped, or --limit is reached)."""
        room = self._room()
        if self.run.stop.is_set() or not room:
            return False
        taken = self.journal.claim(self.campaign, room)
        for claimed in taken:
            self._one(claimed)
        return bool(taken)

    def _one(self, claimed: Claimed) -> None:
        """Count a recipient taken, once, and hand its message over if it is still owed."""
        sub = Subscriber(claimed.email, claimed.name, claimed.line, claimed.fields)
        self.summary.recovered_unknown += claimed.taken_over  # (this run made it unknown)
        if sub.key in self.counted:  # the reading of the list counted it: left out, as it said
            if not claimed.taken_over:
                self.journal.drop(self.campaign, sub.key)
            return
        self.claimed += 1
        if sub.key in self.open:
            self.open.discard(sub.key)
        elif self.reading:
            self.ahead.add(sub.key)
        if claimed.taken_over:  # in flight when its sender died: unknown, never sent again here
            self.summary.count_skip(Skip.UNKNOWN, "", sub.email)
            return
        # the state as claimed (another sender may have settled it since this one read the list);
        # the worker asks the suppression store just before the message
        state, reason, detail = self.run.rules.judge(sub.key, claimed.state, store=False)
        if reason is not None:  # settled by another sender meanwhile, or bounced elsewhere
            self.summary.count_skip(reason, detail, sub.email)
            self.journal.drop(self.campaign, sub.key)
            return
        try:
            data, mid = self.issue.message(sub)
            data = self.issue.factory.for_wire(data)
        except (ValueError, UnicodeError, ConfigError) as err:
            self.run.unbuildable.append(Skipped(sub.line, f"the message could not be built: {err}"))
            self.journal.drop(self.campaign, sub.key)  # (counted among the skipped rows, once)
            return
        if not self.put((sub, state, data, mid)):
            self.run.leave(state)

    def settle(self) -> None:
        """Where the rows this sender found to do went. Each row is counted once: a row the
        reading left out, where the reading came to it (``counted``: never again); a row taken,
        by the run (its outcome) or by ``_one`` (a skip), whether the reading had offered it
        (``open``) or came to it later (``ahead``: the reading passes it by). So the rows still
        ``open`` went to other senders, or are still waiting (``pending``); the rows the reading
        never came to (the run stopped) were not tried, but for those taken already."""
        self.journal.flush()
        waiting = self.journal.open_claims(self.campaign)
        left = min(waiting, len(self.open))
        self.summary.shared = True
        self.summary.other_senders = len(self.open) - left
        self.run.untouched += left + max(0, self.issue.stats.valid - self.reached - len(self.ahead))
