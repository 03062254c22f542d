"""The send's workers: each owns one SMTP connection (to one of the relays, :mod:`.relays`) and
takes recipients from a queue one message ahead; a shared pacer keeps the rate, the journal's
reservations the daily limit, and one stop event ends the run (a signal, an abort reply, the
daily limit)."""

from __future__ import annotations

import queue
import random
import threading
from collections.abc import Callable
from dataclasses import dataclass, field, replace

from dispatch.compose.issue import Issue
from dispatch.errors import AbortError, DispatchError
from dispatch.lists.subscribers import Skipped, Subscriber
from dispatch.send.claiming import ClaimFeed, Pacer, shared_pacer
from dispatch.send.oauth import TokenSource
from dispatch.send.relays import HandOver, Lookahead, Relay, RelayPool, Tries
from dispatch.send.skips import SkipRules, Suppressed
from dispatch.send.transport import Envelope, Result, Scope, SmtpTransport, Status, Unreachable
from dispatch.state import journal as j
from dispatch.state.suppression import SuppressionStore

Progress = Callable[[int], None]
MIN_SAMPLE_FOR_RATIO = 20
UNKNOWN_STREAK = 5  # lost replies to the data in a row: a relay that drops every message's answer
MAX_BACKOFF = 60.0
# A recipient, its journal state before this run, and its message (bytes, Message-ID), built by
# the thread that reads the list while the workers wait on the network.
Item = tuple[Subscriber, str | None, bytes, str]
Pool = RelayPool[Item]


@dataclass
class SendOptions:
    """How a real send behaves."""

    limit: int = 0
    resend_unknown: bool = False
    retry_failed: bool = False  # send again to recipients recorded as failed (not hard bounces)
    suppressions: SuppressionStore | None = None  # checked just before each message
    only: list[Subscriber] | None = None  # a test send to these recipients
    progress: Progress | None = None
    stop: threading.Event = field(default_factory=threading.Event)
    sleep: Callable[[float], object] | None = None  # the backoff wait; default: stop.wait
    list_ids: tuple[str, ...] = ()  # the list and its earlier ids (default: the list alone)
    tokens: TokenSource | None = None  # OAuth2 access tokens, shared by every connection


class Run:
    """The shared state of one send across its worker threads.

    One stop event ends the run: a signal (through ``SendOptions.stop``), an abort, or the
    daily limit. Workers check it before each message and before each retry, and every wait
    (pacing, backoff) is cut short by it.
    """

    def __init__(
        self, issue: Issue, journal: j.Journal | None, options: SendOptions, pool: Pool | None = None
    ) -> None:
        self.issue = issue
        self.pool: Pool = pool or RelayPool([Relay(issue.settings)])  # the relays of DISPATCH_SMTP_HOST
        self.journal = journal
        self.options = options
        self.settings = issue.settings
        self.sender = issue.factory.returns.envelope_sender  # a recipient's MAIL FROM (bounces+TOKEN@…)
        self.rules = SkipRules(
            journal, options.suppressions, issue.campaign, options.list_ids or issue.settings.list_id,
            resend_unknown=options.resend_unknown, retry_failed=options.retry_failed,
        )  # fmt: skip
        self.late_suppressed: list[tuple[str, str]] = []  # (address, reason): suppressed during the run
        # several senders (PostgreSQL state) share one pace per relay; else this run paces alone
        rate = self.settings.rate
        self.pacer = shared_pacer(rate, journal, self.settings.endpoint) or Pacer(rate)
        self.share: ClaimFeed | None = None  # this sender's share of the campaign (several senders)
        self.lock = threading.Lock()
        self.stop = options.stop
        self.abort = ""
        self.limit_reached = False
        self.crash: BaseException | None = None
        self.attempted = self.failed = self.sent = self.deferred = self.unknown = 0
        self.untouched = 0  # recipients never tried before and not tried now: still pending
        self.test_results: list[tuple[Subscriber, Result]] = []
        self.unbuildable: list[Skipped] = []

    def halt(self, reason: str) -> None:
        with self.lock:
            self.abort = self.abort or reason
        self.stop.set()

    def reserve(self) -> int | bool | None:
        """A slot in the daily budget: a reservation id, None if unlimited, False when spent."""
        if not self.settings.daily_limit or self.journal is None:
            return None
        reservation = self.journal.reserve(self.settings.daily_limit)
        if reservation is None:
            self.limit_reached = True
            self.stop.set()  # the rest wait for a later run
            return False
        return reservation

    def settle_suppressed(self, sub: Subscriber, reason: str) -> None:
        """A suppressed recipient is owed nothing: the journal says so (a deferred one stops
        counting as deferred), and ``status`` counts them as this run did."""
        if self.journal is not None:
            self.journal.suppressed(self.issue.campaign, sub.key, sub.email, reason)

    def _late(self, sub: Subscriber, reason: str) -> None:
        """Suppressed since the list was read (before its first try, or before a retry)."""
        with self.lock:
            self.late_suppressed.append((sub.email, reason))
        self.settle_suppressed(sub, reason)

    def leave(self, prior: str | None) -> None:
        """A recipient this run will not try after all (``prior``: its state before the run)."""
        with self.lock:
            self.untouched += 1

    def worker(self, work: queue.Queue[Item | None], relay: Relay | None = None) -> None:
        """One connection to ``relay`` (the only one, by default) until the queue is done, the
        run stops, or the relay is given up (the other relays' connections take the rest)."""
        relay = relay or self.pool.relays[0]
        ahead = Lookahead(work, self.journal, self.pool, relay)
        transport = SmtpTransport(relay.settings, while_waiting=ahead.fill, tokens=self.options.tokens)
        transport.next_envelope = lambda: self._following(ahead)
        try:
            while (item := ahead.next()) is not None:
                try:
                    if relay.down:
                        self.pass_on([item, *ahead.drain()])
                        break
                    self._one(transport, item, relay)
                except DispatchError as err:  # an abort, or the journal failing (a full disk)
                    self.halt(str(err))
                except Exception as err:  # a bug or a broken journal: stop the run, never hang it
                    self.crash = self.crash or err
                    self.halt(f"internal error: {type(err).__name__}: {err}")
                finally:
                    self.pool.release()
        except DispatchError as err:  # recording what went before failed (a full disk, a database gone)
            self.halt(str(err))
        finally:
            transport.close()
            try:
                for orphan in self.pool.leave(relay):  # the last connection of all: nobody takes them now
                    self.leave(orphan[1])
            except DispatchError as err:  # the journal failing: the run stops, this thread ends cleanly
                self.halt(str(err))

    def pass_on(self, items: list[Item]) -> None:
        """Hand recipients to the other relays' connections (or leave them pending, none left)."""
        for item in items:
            if not self.pool.pass_on(item, item[0].key, self.pool.tries(item[0].key)):
                self.leave(item[1])

    def _following(self, ahead: Lookahead[Item]) -> Envelope | None:
        """The envelope of the message this worker sends next, when nothing can come between:
        no pacing, no daily budget to ask, no stop. (If it is suppressed meanwhile, the
        transport cancels the commands sent for it.)"""
        if self.stop.is_set() or self.pacer.interval or self.settings.daily_limit:
            return None
        item = ahead.peek()
        if item is None:
            return None
        return Envelope(self.sender(item[0].key), item[0].email, len(item[2]))

    def _one(self, transport: SmtpTransport, item: Item, relay: Relay) -> None:
        """Pace, take a slot of the daily budget, deliver; or leave the recipient pending."""
        sub, prior = item[0], item[1]
        if not self.stop.is_set():
            if self.pacer.interval and self.journal is not None:
                self.journal.flush()
            self.pacer.wait(self.stop)
        entry = self.rules.suppressed(sub.key)  # an unsubscribe may have come in since the list was read
        if entry is not None:
            self._late(sub, entry.reason)
            return
        reservation = False if self.stop.is_set() else self.reserve()
        if reservation is False:
            self.leave(prior)  # stopped, or over the daily limit
            return
        try:
            self.deliver(transport, item, reservation=reservation or None, relay=relay)
        finally:
            if isinstance(reservation, int) and self.journal is not None:
                self.journal.release(reservation)  # (a no-op when the outcome already took it)

    def deliver(
        self, transport: SmtpTransport, item: Item, reservation: int | None = None, relay: Relay | None = None
    ) -> None:
        """Send to one recipient and record the outcome; AbortError when the campaign must stop.
        A message the relay never took may go to another relay instead (:mod:`.relays`)."""
        sub, prior, data, mid = item
        relay = relay or self.pool.relays[0]
        campaign, journal = self.issue.campaign, self.journal
        recorded = False
        so_far, unrecorded = self.pool.tries(sub.key)  # (tries on a relay that handed it over)
        tries = Tries(total=so_far, recorded=so_far - unrecorded)

        def mark() -> None:
            tries.reached_data += 1
            tries.marked = True
            if journal is not None:
                journal.in_flight(campaign, sub.key, sub.email, mid)

        def interim(result: Result) -> None:
            """A try deferred: never leave "in flight" behind while the next one waits. A 4xx to
            the data is recorded; a refusal before the data (of the pipelined commands, which
            went in flight with them) puts the row back as it was: nothing can have been taken."""
            nonlocal recorded
            if result.data_started:
                recorded, tries.marked = True, False
                self.record(sub, result, mid, attempts=tries.take_unmarked())
            elif tries.marked and journal is not None:
                journal.withdraw(campaign, sub.key, j.DEFERRED if recorded else prior)
                tries.marked = False

        try:
            result = self._attempts(transport, relay, sub, data, tries, mark=mark, interim=interim)
        except Suppressed as late:  # (between two tries: the row was put back after the first)
            self._late(sub, late.reason)
            return
        except HandOver as over:
            self.pool.trouble(relay, over.why)
            self._hand_over(item, relay, over.why, recorded, tries)
            return
        except AbortError:  # raised before this try's data left: the relay was unreachable, or
            # refused the sender after the row went in flight with the pipelined commands
            if tries.marked and journal is not None:
                journal.withdraw(campaign, sub.key, j.DEFERRED if recorded else prior)
            if recorded:  # an earlier try's 4xx to the data is what the journal holds: deferred now
                self._count(Result(Status.DEFERRED, None, ""), relay)
            else:
                self.leave(prior)  # never reached the server: still pending
            raise
        if result.scope is Scope.RATE and self.pool.retire(relay, f"asked to stop ({result.line()})"):
            self._hand_over(item, relay, result.line(), recorded, tries)  # its quota, not the others'
            return
        if result.stops_campaign:  # about the message, the sender or the rate: not this recipient
            result = replace(result, status=Status.DEFERRED)
        streaks = self._count(result, relay)
        self.record(sub, result, mid, reservation=reservation, attempts=tries.take_unmarked())
        if self.options.progress is not None:
            self.options.progress(1)
        self._check_stop(result, streaks, relay)

    def _count(self, result: Result, relay: Relay) -> tuple[int, int, int, int]:
        """Count an outcome for the run and its relay: (failed, attempted, the relay's deferred
        and lost-reply streaks)."""
        status = result.status
        deferred, unknown = status is Status.DEFERRED, status is Status.UNKNOWN
        with self.lock:
            self.attempted += 1
            self.sent += status is Status.SENT
            self.failed += status is Status.FAILED
            self.deferred += deferred
            self.unknown += unknown
            relay.sent += status is Status.SENT
            relay.failed += status is Status.FAILED
            relay.deferred += deferred
            relay.unknown += unknown
            relay.deferred_streak = relay.deferred_streak + 1 if deferred else 0
            relay.unknown_streak = relay.unknown_streak + 1 if unknown else 0
            if status is Status.SENT:
                self.pool.fine(relay)
            return self.failed, self.attempted, relay.deferred_streak, relay.unknown_streak

    def _hand_over(self, item: Item, relay: Relay, why: str, recorded: bool, tries: Tries) -> None:
        """The relay never took the message: another relay's connections take the recipient (its
        row put back as it was); with none left, or its tries spent, it is deferred."""
        sub, prior, data, mid = item
        prior = j.DEFERRED if recorded else prior
        if tries.marked and self.journal is not None:
            self.journal.withdraw(self.issue.campaign, sub.key, prior)
        unrecorded = tries.take_unmarked()
        if tries.total <= self.settings.retries and self.pool.pass_on(
            (sub, prior, data, mid), sub.key, (tries.total, unrecorded), failed=relay
        ):
            with self.lock:
                relay.handed_over += 1
            return
        self._count(Result(Status.DEFERRED, None, why), relay)
        self.record(sub, Result(Status.DEFERRED, None, why), mid, attempts=unrecorded)

    def _check_stop(self, result: Result, counts: tuple[int, int, int, int], relay: Relay) -> None:
        """AbortError when going on would only burn through the list (with several relays, a
        relay that defers or loses everything is given up first, while another is left)."""
        if result.scope is Scope.MESSAGE:
            raise AbortError(
                f"the server refused the message itself, not the recipient: {result.line()}; nobody was "
                "marked failed; fix the cause, then run again"
            )
        if result.scope is Scope.RATE:
            raise AbortError(f"the server asked to stop: {result.line()}; run again later")
        failed, attempted, deferred_streak, unknown_streak = counts
        if deferred_streak >= MIN_SAMPLE_FOR_RATIO:
            why = f"the server deferred the last {deferred_streak} recipients in a row (last reply: "
            why += f"{result.line()})"
            if not self.pool.retire(relay, why):
                raise AbortError(f"{why}; stopping instead of burning through the list; run again later")
        if unknown_streak >= UNKNOWN_STREAK:
            why = f"the server's reply to the last {unknown_streak} messages was lost ({result.line()})"
            if not self.pool.retire(relay, why):
                raise AbortError(
                    f"{why}; they may or may not have been delivered, so dispatch stops rather than risk "
                    "more; check the relay, then see 'dispatch status'"
                )
        ratio = self.settings.max_failure_ratio
        if ratio and attempted >= MIN_SAMPLE_FOR_RATIO and failed / attempted > ratio:
            raise AbortError(
                f"{failed} of {attempted} recipients were refused permanently (more than "
                f"{ratio:.0%}); stopping to protect the sender's reputation: see 'dispatch status'"
            )

    def record(
        self,
        sub: Subscriber,
        result: Result,
        message_id: str,
        *,
        reservation: int | None = None,
        attempts: int = 0,
    ) -> None:
        """Write one outcome as it happens (the journal), or keep it (a test send). ``attempts``
        counts the tries the journal has not counted yet (those that never reached the data)."""
        if result.hard_bounce:
            self.rules.record_bounce(sub.email)
        if self.journal is None:
            with self.lock:
                self.test_results.append((sub, result))
            return
        self.journal.outcome(
            self.issue.campaign, sub.key, sub.email, str(result.status),
            code=result.code, enhanced=result.enhanced, reply=result.text,
            hard_bounce=result.hard_bounce, message_id=message_id, attempts=attempts,
            reservation=reservation,
        )  # fmt: skip

    def _attempts(
        self,
        transport: SmtpTransport,
        relay: Relay,
        sub: Subscriber,
        data: bytes,
        tries: Tries,
        *,
        mark: Callable[[], None],
        interim: Callable[[Result], None],
    ) -> Result:
        """Up to 1 + DISPATCH_RETRIES tries with exponential backoff and jitter; each retry is
        paced like a new message, and a stop ends the tries with the last (deferred) result."""
        retries, delay = self.settings.retries, self.settings.retry_delay
        sender, to = self.sender(sub.key), sub.email
        result = Result(Status.DEFERRED, None, "not attempted")
        first = tries.total  # (tries spent on a relay that handed it over: this one goes at once)
        for attempt in range(first, retries + 1):
            if attempt > first:
                if self.journal is not None:
                    self.journal.flush()
                backoff = min(MAX_BACKOFF, delay * 2 ** (attempt - 1)) * random.uniform(0.5, 1.5)
                (self.options.sleep or self.stop.wait)(backoff)
                if self.stop.is_set():
                    return result
                if (entry := self.rules.suppressed(sub.key)) is not None:  # unsubscribed meanwhile
                    raise Suppressed(entry.reason)
                self.pacer.wait(self.stop)
            tries.total += 1
            try:
                result = transport.send(sender, to, data, mark)
            except Unreachable as err:
                if self.pool.others(relay):
                    raise HandOver(str(err)) from err
                if attempt == retries:
                    raise AbortError(f"{err} (after {retries + 1} tries)") from err
                result = Result(Status.DEFERRED, None, str(err))
                continue
            lost = result.status is Status.DEFERRED and result.code is None and not result.data_started
            if lost and self.pool.others(relay):  # the connection failed before the final dot: nothing taken
                raise HandOver(result.text)
            if result.status is Status.DEFERRED:
                interim(result)
            if result.status is not Status.DEFERRED or result.stops_campaign:
                return result
        return result
