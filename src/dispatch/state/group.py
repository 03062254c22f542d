"""Group commit, shared by both backends (:mod:`dispatch.state.db`, SQLite, and
:mod:`dispatch.state.pg`, PostgreSQL): writes that need not wait are held and committed with
the next one that must, and threads that write at the same moment share one commit.

A write may carry a **fence**: one statement that must change exactly one row (a claim still
held by this sender, with the fencing number it was given). When it changes none, the claim
passed to another sender meanwhile: the write's own statements are skipped (they never
land), the writer that waits is told (:class:`Fenced`), and the run can say how many
outcomes it could not record.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from typing import Any, Protocol

from dispatch.errors import AbortError, DispatchError

Statement = tuple[str, Sequence[Any]]


class StateError(DispatchError):
    """The state cannot be used: damaged, from a newer dispatch, a symlink, unwritable, on a
    full disk, or a database that cannot be reached. Nothing is sent when this happens before
    a run starts."""


class Fenced(AbortError):
    """This sender's claim on a recipient passed to another sender (it was paused past its
    lease): it must not send that message, nor write anything about it."""


class Cursor(Protocol):
    """What a statement gives back (sqlite3's and psycopg's cursors both are one)."""

    @property
    def rowcount(self) -> int: ...

    def fetchone(self) -> Any: ...

    def fetchall(self) -> list[Any]: ...


class Tx(Protocol):
    """An open transaction: statements with ``?`` placeholders."""

    def execute(self, sql: str, params: Sequence[Any] = ..., /) -> Any: ...

    def executemany(self, sql: str, params: Any, /) -> Any: ...


class Store(Protocol):
    """What the journal and the suppression store ask of their database, whichever backend:
    :class:`dispatch.state.db.Database` (a SQLite file) or :class:`dispatch.state.pg.PgDatabase`."""

    backend: str  # "sqlite" or "postgresql"
    fenced_out: int

    @property
    def path(self) -> Any: ...  # the file, or the URL without its password

    def transaction(self) -> AbstractContextManager[Any]: ...

    def autocommit(self) -> AbstractContextManager[Any]: ...

    def write(
        self, statements: Sequence[Statement], *, wait: bool = True, fence: Statement | None = None
    ) -> None: ...

    def grouped(self) -> AbstractContextManager[None]: ...

    def flush(self) -> None: ...

    def execute(self, sql: str, params: Sequence[Any] = ()) -> Any: ...

    def read(self, sql: str, params: Sequence[Any] = ()) -> tuple[Any, ...] | None: ...

    def read_all(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]: ...

    def one(self, sql: str, params: Sequence[Any] = ()) -> tuple[Any, ...] | None: ...

    def all(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]: ...

    def close(self) -> None: ...


@dataclass
class _Queued:
    statements: Sequence[Statement]
    fence: Statement | None
    ticket: int


class GroupCommit:
    """The write side of a store; subclasses give :meth:`transaction` and a lock."""

    label = "state"  # how messages name the store

    def __init__(self) -> None:
        self._lock = threading.RLock()
        self._pending: list[_Queued] | None = None  # held by grouped()
        self._queue_lock = threading.Lock()
        self._queued = self._committed = 0  # tickets handed out / made durable
        self._failed: StateError | None = None  # a group commit that failed fails every writer in it
        self._fenced: set[int] = set()  # tickets whose fence no longer held
        self.fenced_out = 0  # writes skipped because their claim had passed to another sender

    def transaction(self) -> AbstractContextManager[Tx]:  # pragma: no cover - given by subclasses
        raise NotImplementedError

    def batch_transaction(self) -> AbstractContextManager[Tx]:
        """The transaction the queued writes are committed in (a backend may pipeline it)."""
        return self.transaction()

    def _run(self, db: Tx, batch: Sequence[_Queued]) -> None:
        """Run queued writes in one open transaction: each write's fence first, then its
        statements if the fence held (a backend may send them all in fewer round trips)."""
        for item in batch:
            if item.fence is None or self._held(item, db.execute(*item.fence)):
                for sql, params in item.statements:
                    db.execute(sql, params)

    def _held(self, item: _Queued, fence: Cursor) -> bool:
        if fence.rowcount == 1:
            return True
        self._fenced.add(item.ticket)
        self.fenced_out += 1
        return False

    def write(
        self, statements: Sequence[Statement], *, wait: bool = True, fence: Statement | None = None
    ) -> None:
        """Run statements in one transaction, and return once they are committed.

        Inside :meth:`grouped`, a write that need not wait (``wait=False``) is queued until the
        next one that must (or :meth:`flush`). A write that must wait commits everything queued
        so far, its own statements included; threads that queue while that commit runs are served
        together by the next one. Writes keep their order, and nobody returns before their own
        statements are durable. A waiting write whose ``fence`` failed raises :class:`Fenced`."""
        with self._queue_lock:
            self._queued += 1
            item = _Queued(statements, fence, self._queued)
            held = self._pending is not None
            if self._pending is not None:
                self._pending.append(item)
        if not held:
            with self._lock, self.batch_transaction() as db:
                self._run(db, [item])
        elif wait:
            self._commit_through(item.ticket)
        if wait and item.ticket in self._fenced:
            self._fenced.discard(item.ticket)
            raise Fenced("this sender's claim passed to another sender (paused past its lease?)")

    def _commit_through(self, ticket: int) -> None:
        """Commit the queued writes up to at least ``ticket`` (a commit by another thread that
        took them counts)."""
        with self._lock:
            if self._failed is not None:
                raise self._failed
            if self._committed >= ticket:
                return
            with self._queue_lock:
                batch, self._pending = self._pending or [], []
                upto = self._queued
            try:
                with self.batch_transaction() as db:
                    self._run(db, batch)
            except StateError as err:  # the batch held other threads' writes: they fail too
                self._failed = err
                raise
            except BaseException as err:
                what = f"{self.label}: a write was cut short ({type(err).__name__})"
                self._failed = StateError(what)
                raise
            self._committed = upto

    def flush(self) -> None:
        """Commit the writes :meth:`grouped` is holding (before a run waits, and at its end)."""
        if self._pending:
            self._commit_through(self._queued)

    @contextmanager
    def grouped(self) -> Iterator[None]:
        """Let writes share commits while the block runs (see :meth:`write`); leaving it commits
        what is held."""
        if self._pending is not None:
            yield
            return
        self._pending, self._failed = [], None
        try:
            yield
            self.flush()
        finally:
            self._pending = None
