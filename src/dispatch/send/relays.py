"""Several relays in one send (``DISPATCH_SMTP_HOST`` naming more than one).

Each relay gets its own connections (its own settings: port, TLS, login, limits), and every
connection takes recipients from the one shared queue, so a faster relay takes a larger share.
A relay that stops answering leaves its share to the others: a recipient whose message it
never took (unreachable, or the connection lost before the final dot, or a rate or quota
reply) is handed to another relay's connections at once instead of waiting for a retry; after
:data:`RELAY_TROUBLE` such failures in a row, or a rate or quota reply, or a streak of
deferrals or lost replies, the relay is given up for the rest of the run. Nothing that may
have been delivered is ever handed over (a lost reply after the final dot stays unknown), so
nothing is sent twice. The run stops only when no relay is left.

Here too: a connection's end of the shared queue (:class:`Lookahead`, handed-over recipients
first) and the count of a recipient's tries (:class:`Tries`), which travels with it from relay
to relay (a hand-over is one of its ``DISPATCH_RETRIES``).
"""

from __future__ import annotations

import queue
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from dispatch.send.oauth import TokenSource
from dispatch.send.smtpsession import RelayInfo, Unreachable
from dispatch.send.transport import probe
from dispatch.settings import Settings
from dispatch.state import journal as j

RELAY_TROUBLE = 3  # connection failures in a row (nothing taken in between) that give a relay up
T = TypeVar("T")


class HandOver(Exception):
    """This relay never took the message (unreachable, or cut off before the final dot):
    another relay may."""

    def __init__(self, why: str) -> None:
        super().__init__(why)
        self.why = why


@dataclass
class Relay:
    """One relay of the send, and what it did."""

    settings: Settings
    info: RelayInfo | None = None
    down: str = ""  # why it was given up ("": in use)
    trouble: int = 0  # connection failures in a row
    sent: int = 0
    failed: int = 0
    deferred: int = 0
    unknown: int = 0
    handed_over: int = 0  # recipients it passed to the others
    deferred_streak: int = 0
    unknown_streak: int = 0

    @property
    def name(self) -> str:
        return self.settings.endpoint

    def report(self) -> dict[str, Any]:
        """What it did, for the summary and ``--json``."""
        return {"relay": self.name, "connections": self.settings.connections, "sent": self.sent,
                "failed": self.failed, "deferred": self.deferred, "unknown": self.unknown,
                "handed_over": self.handed_over, "given_up": self.down or None}  # fmt: skip


class RelayPool(Generic[T]):
    """The relays of one send, their live connections, and the recipients handed between them
    (``T``: a queued message). Thread-safe."""

    def __init__(self, relays: list[Relay]) -> None:
        self.relays = relays
        self._lock = threading.Lock()
        self._returned: deque[tuple[T, str]] = deque()  # (recipient, key) handed over
        self._tries: dict[str, tuple[int, int]] = {}  # key -> (tries so far, tries not in the journal)
        self._failed_on: dict[str, set[int]] = {}  # key -> the relays that could not take it
        self._busy = 0  # connections busy with a recipient (which they might still hand over)
        self._working = {id(r): 0 if r.down else r.settings.connections for r in relays}
        self.several = len(relays) > 1

    def live(self) -> list[Relay]:
        return [r for r in self.relays if not r.down]

    def others(self, relay: Relay) -> bool:
        """Whether another relay still has connections to take this one's recipients."""
        with self._lock:
            return self._others(relay)

    def _others(self, relay: Relay) -> bool:
        return any(r is not relay and not r.down and self._working[id(r)] for r in self.relays)

    def retire(self, relay: Relay, why: str) -> bool:
        """Give the relay up for the rest of the run, if another can carry on; whether it was."""
        with self._lock:
            if relay.down or not self._others(relay):
                return bool(relay.down)
            relay.down = why
            return True

    def trouble(self, relay: Relay, why: str) -> None:
        """A connection failure on the relay: given up after RELAY_TROUBLE in a row."""
        with self._lock:
            relay.trouble += 1
            if relay.trouble >= RELAY_TROUBLE and not relay.down and self._others(relay):
                relay.down = f"stopped answering ({why})"

    def fine(self, relay: Relay) -> None:
        """The relay took a message: its failures in a row start again from zero."""
        relay.trouble = 0

    def pass_on(self, item: T, key: str, tries: tuple[int, int], failed: Relay | None = None) -> bool:
        """Hand a recipient to the next live connection (of another relay than ``failed``, the
        one that could not take it, while there is one); ``tries``: so far, and not yet in the
        journal. False when no connection is left to take it."""
        with self._lock:
            if not any(self._working[id(r)] for r in self.relays if not r.down):
                return False
            self._returned.append((item, key))
            self._tries[key] = tries
            if failed is not None:
                self._failed_on.setdefault(key, set()).add(id(failed))
            return True

    def take(self, relay: Relay | None = None) -> T | None:
        """A handed-over recipient for a connection of ``relay``, if one waits: one that relay
        has not failed already, unless no other live relay is left to take it."""
        if not self._returned:  # (asked before every message: most runs hand nothing over)
            return None
        with self._lock:
            for n, (item, key) in enumerate(self._returned):
                failed = self._failed_on.get(key, set())
                if (
                    relay is None
                    or id(relay) not in failed
                    or not any(
                        id(r) not in failed and not r.down and self._working[id(r)] for r in self.relays
                    )
                ):
                    del self._returned[n]
                    return item
            return None

    def tries(self, key: str) -> tuple[int, int]:
        """(tries so far, tries not in the journal) of a handed-over recipient; (0, 0) for others.
        (A handed-over recipient's entry is made with it, before any connection can take it.)"""
        if not self._tries:
            return (0, 0)
        with self._lock:
            return self._tries.pop(key, (0, 0))

    def hold(self) -> None:
        """A connection starts on a recipient (counted with several relays: see :meth:`settled`)."""
        if not self.several:
            return
        with self._lock:
            self._busy += 1

    def release(self) -> None:
        """A connection is done with its recipient (sent, recorded or handed over)."""
        if not self.several:
            return
        with self._lock:
            self._busy -= 1

    def settled(self) -> bool:
        """Whether a connection at the end of the queue may stop: no handed-over recipient waits,
        and (with several relays) no other connection is busy with one it might hand over."""
        with self._lock:
            return not self._returned and (not self.several or not self._busy)

    def leave(self, relay: Relay) -> list[T]:
        """A connection of the relay ends; when it was the last one of all, the recipients still
        waiting (nobody is left to take them)."""
        with self._lock:
            self._working[id(relay)] -= 1
            if any(self._working.values()):
                return []
            orphans, self._returned = [item for item, _ in self._returned], deque()
            return orphans


def start_pool(settings: Settings, tokens: TokenSource | None, warn: Callable[[str], None]) -> RelayPool[Any]:
    """Open one session to each relay before the first message (a wrong password, an untrusted
    certificate or a missing STARTTLS stops the send). With several relays, one that cannot be
    reached now is left out, with a warning, unless none can."""
    relays = [Relay(each) for each in settings.relays]
    problems: list[Unreachable] = []
    for relay in relays:
        try:
            relay.info = probe(relay.settings, tokens)
        except Unreachable as err:
            if len(relays) == 1:
                raise
            problems.append(err)
            relay.down = f"unreachable at the start ({err})"
            warn(f"relay {relay.name} was left out: {err}; the other relays take its share")
    if len(problems) == len(relays):
        raise problems[0]
    return RelayPool(relays)


class Lookahead(Generic[T]):
    """A worker's end of the queue, one message ahead. The worker takes its next message while
    the relay reads the current one, so the thread that builds messages refills the queue then,
    instead of taking the interpreter from the worker when it has a commit and a send to do.
    Recipients another relay handed over (``pool``) come first."""

    def __init__(
        self,
        work: queue.Queue[T | None],
        journal: j.Journal | None,
        pool: RelayPool[T] | None = None,
        relay: Relay | None = None,
    ) -> None:
        self._work = work
        self._journal = journal
        self._pool = pool
        self._relay = relay
        self._ahead: list[T] = []
        self._ended = False  # the queue's end is reached: only handed-over recipients from now on

    def fill(self) -> None:
        """Take the next message now if one is ready (never waits)."""
        if self._ahead:
            return
        item = self._pool.take(self._relay) if self._pool is not None else None
        if item is None and not self._ended:
            try:
                item = self._work.get_nowait()
            except queue.Empty:
                return
            self._ended = item is None
        if item is not None:
            self._ahead.append(item)

    def peek(self) -> T | None:
        """The next message if one is ready (None: none yet, or no more), left in place."""
        self.fill()
        return self._ahead[0] if self._ahead else None

    def next(self) -> T | None:
        """The next message (None: no more), counted busy in the pool until released;
        outcomes held for a group commit are committed before waiting for one."""
        item = self._next()
        if item is not None and self._pool is not None:
            self._pool.hold()
        return item

    def _next(self) -> T | None:
        while True:
            self.fill()
            if self._ahead:
                return self._ahead.pop()
            if self._ended:
                if self._journal is not None:  # its outcomes must not wait for another's retries
                    self._journal.flush()
                if self._pool is None or self._pool.settled():
                    return None
                time.sleep(0.002)  # another relay's connection may still hand one over
                continue
            if self._journal is not None:
                self._journal.flush()
            if (item := self._work.get()) is not None:
                return item
            self._ended = True

    def drain(self) -> list[T]:
        """The message held ahead, taken back (its relay was given up)."""
        held, self._ahead = self._ahead, []
        return held


@dataclass
class Tries:
    """How often one recipient was tried in this run, and how many of those tries the journal
    counted already (a try that reached the data was counted when it went in flight)."""

    total: int = 0
    reached_data: int = 0  # tries marked in flight (the journal counted them then)
    recorded: int = 0
    marked: bool = False  # the row is in flight and no outcome is recorded since

    def take_unmarked(self) -> int:
        """Tries not yet counted in the journal (and now counted)."""
        unmarked = self.total - self.reached_data - self.recorded
        self.recorded += unmarked
        return unmarked
