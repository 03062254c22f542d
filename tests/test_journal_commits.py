"""The journal's group commit: threads marking "in flight" at the same moment share one commit,
and none of them returns before its own row is durable and visible to another connection (a
second process reading the file). A failed group commit fails every writer whose rows were in
it, never only the one that happened to run it. Real SQLite files in ``tmp_path``.
"""

from __future__ import annotations

import sqlite3
import sys
import threading
import time
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import psycopg
import pytest

from dispatch.settings import Settings, StateLocation
from dispatch.state import backend
from dispatch.state import journal as j
from dispatch.state.db import Database, StateError
from dispatch.state.pg import PgDatabase
from tests.conftest import BASE_ENV

CAMPAIGN = "issue-1"
ROUNDS = 100


class Other:
    """Another process's view of the state: a connection of its own (read-only for SQLite)."""

    def __init__(self, location: StateLocation) -> None:
        self.location = location
        self.lock = threading.Lock()
        self.conn: Any = psycopg.connect(location.url, autocommit=True) if location.url else None

    def state_of(self, key: str) -> str | None:
        if self.conn is not None:
            sql = "SELECT state FROM dispatch.recipients WHERE campaign = %s AND key = %s"
            with self.lock:
                row = self.conn.execute(sql, (CAMPAIGN, key)).fetchone()
        else:
            conn = sqlite3.connect(f"file:{self.location.path / j.FILENAME}?mode=ro", uri=True)
            try:
                sql = "SELECT state FROM recipients WHERE campaign = ? AND key = ?"
                row = conn.execute(sql, (CAMPAIGN, key)).fetchone()
            finally:
                conn.close()
        return None if row is None else str(row[0])

    def close(self) -> None:
        if self.conn is not None:
            self.conn.close()


@pytest.fixture
def location(tmp_path: Path, state_backend: dict[str, str]) -> StateLocation:
    """A state on each backend: a folder, and a PostgreSQL database."""
    return Settings.from_mapping(
        {**BASE_ENV, "DISPATCH_STATE_DIR": str(tmp_path / "state"), **state_backend}
    ).state


def _database(location: StateLocation) -> Any:
    if location.url:
        return PgDatabase(location.url)
    return Database(location.path / j.FILENAME, j.SCHEMA)


@pytest.mark.parametrize("threads", [2, 8])
def test_every_in_flight_mark_is_committed_before_it_returns(location: StateLocation, threads: int) -> None:
    journal = backend.open_journal(location)
    journal.begin(CAMPAIGN, "Subject", "fingerprint", "/tmp/article.md")
    other = Other(location)
    barrier = threading.Barrier(threads)
    seen: dict[str, str | None] = {}
    errors: list[BaseException] = []

    def worker(n: int) -> None:
        try:
            for i in range(ROUNDS):
                key = f"reader{n}-{i}@example.org"
                barrier.wait(timeout=10)  # every thread marks at the same moment
                journal.in_flight(CAMPAIGN, key, key, f"<{n}.{i}@example.org>")
                seen[key] = other.state_of(key)  # what a kill right now would leave behind
                journal.outcome(CAMPAIGN, key, key, j.SENT, code=250, enhanced="2.0.0", reply="ok")
        except BaseException as err:  # reported below
            errors.append(err)
            barrier.abort()

    switch = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)  # threads interleave between every few bytecodes: the worst case
    try:
        with journal.grouped():
            pool = [threading.Thread(target=worker, args=(n,)) for n in range(threads)]
            for thread in pool:
                thread.start()
            for thread in pool:
                thread.join(timeout=60)
    finally:
        sys.setswitchinterval(switch)
    assert errors == []
    assert len(seen) == threads * ROUNDS
    assert set(seen.values()) == {j.IN_FLIGHT}  # durable before the data would have gone
    assert journal.counts(CAMPAIGN)[j.SENT] == threads * ROUNDS  # leaving grouped() commits the rest
    journal.close()
    other.close()


def test_a_failed_group_commit_fails_every_writer_in_it(location: StateLocation) -> None:
    db = _database(location)
    good = ("INSERT INTO reservations (pid, created) VALUES (1, 0)", ())
    run = ExitStack()
    run.enter_context(db.grouped())
    db.write([good], wait=False)
    db.write([("INSERT INTO no_such_table VALUES (1)", ())], wait=False)  # queued by one thread
    with pytest.raises(StateError, match="no_such_table"):
        db.write([good], wait=True)  # committed by another: it fails, and nothing half-lands
    with pytest.raises(StateError, match="no_such_table"):
        db.write([good], wait=True)  # the run must stop: later writes say why
    with pytest.raises(StateError, match="no_such_table"):
        run.close()  # and so does the end of the run
    assert db.all("SELECT COUNT(*) FROM reservations") == [(0,)]
    db.write([good])  # a new run (outside grouped) writes again
    assert db.all("SELECT COUNT(*) FROM reservations") == [(1,)]
    db.close()


def test_writers_waiting_on_a_commit_share_the_next_one_and_none_returns_early(tmp_path: Path) -> None:
    """Another process holds the write lock: the first writer's commit waits on it, the others
    queue behind. None may return while its row is not durable; once the lock goes, the queued
    writers are served by one commit between them."""
    path = tmp_path / "state" / j.FILENAME
    db = Database(path, j.SCHEMA)
    commits: list[str] = []
    db.conn.set_trace_callback(lambda sql: commits.append(sql) if sql == "COMMIT" else None)
    other = sqlite3.connect(path, isolation_level=None)
    other.execute("BEGIN IMMEDIATE")  # a second run in the middle of its own commit
    returned: list[int] = []

    def mark(n: int) -> None:
        db.write([("INSERT INTO reservations (pid, created) VALUES (?, 0)", (n,))], wait=True)
        returned.append(n)

    with db.grouped():
        first = threading.Thread(target=mark, args=(0,))
        first.start()
        time.sleep(0.3)  # the first writer now waits for SQLite's lock, holding the batch it took
        rest = [threading.Thread(target=mark, args=(n,)) for n in range(1, 8)]
        for thread in rest:
            thread.start()
        time.sleep(0.3)
        assert returned == []  # nobody is told "committed" while the file is locked
        other.execute("COMMIT")
        for thread in [first, *rest]:
            thread.join(timeout=30)
    assert sorted(returned) == list(range(8))
    assert len(commits) <= 2  # the first writer's own commit, then one for the seven queued behind
    assert db.all("SELECT COUNT(*) FROM reservations") == [(8,)]
    other.close()
    db.close()


def test_writers_waiting_on_a_locked_database_none_returns_early_postgresql(pg_url: str) -> None:
    """The same with PostgreSQL: another sender holds the table; nobody is told "committed"
    before the lock goes, and then every queued write lands."""
    db = PgDatabase(pg_url)
    other = psycopg.connect(pg_url, autocommit=True)
    other.execute("BEGIN")
    other.execute("LOCK TABLE dispatch.reservations IN ACCESS EXCLUSIVE MODE")
    returned: list[int] = []

    def mark(n: int) -> None:
        db.write([("INSERT INTO reservations (pid, created) VALUES (?, 0)", (n,))], wait=True)
        returned.append(n)

    with db.grouped():
        pool = [threading.Thread(target=mark, args=(n,)) for n in range(8)]
        for thread in pool:
            thread.start()
        time.sleep(0.5)
        assert returned == []
        other.execute("COMMIT")
        for thread in pool:
            thread.join(timeout=30)
    assert sorted(returned) == list(range(8))
    assert db.all("SELECT COUNT(*) FROM reservations") == [(8,)]
    other.close()
    db.close()
