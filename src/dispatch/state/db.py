"""SQLite files in the state folder, opened one way: private (0600), never through a symlink,
in WAL mode, with a schema version that is migrated forward or refused; and every SQLite
failure turned into a :class:`StateError` that names the file and says what to do.

The journal and the suppression store both open their files through :class:`Database`, so
concurrent runs and ``dispatch serve`` share them safely (WAL readers never block the writer,
writers queue on SQLite's busy timeout).
"""

from __future__ import annotations

import contextlib
import functools
import os
import sqlite3
import stat
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dispatch.files import private_file, private_folders
from dispatch.state.group import GroupCommit, StateError

__all__ = ["Database", "Schema", "StateError", "check_not_symlink"]

SIDE_FILES = ("", "-wal", "-shm")
SYNC_SECONDS = 1.0  # with synchronous=NORMAL: the most a power cut can take back
CHECKPOINT_PAGES = 10_000  # ~40 MB of log between checkpoints (each one syncs): fewer stalls


@dataclass(frozen=True)
class Schema:
    """A file's tables at the current ``version``, and how to bring older files forward.

    ``migrations[n]`` turns a version-``n`` file into version ``n + 1``. A file with tables but
    ``user_version`` 0 was written before versions were recorded: it counts as version 1.
    """

    what: str  # "journal", "suppression store": how messages name the file
    version: int
    create: str
    migrations: Mapping[int, str] = field(default_factory=dict)

    @functools.cached_property
    def columns(self) -> dict[str, set[tuple[str, str, int, int]]]:
        """Every table and its columns at the current version (to spot a foreign file)."""
        scratch = sqlite3.connect(":memory:")
        try:
            for statement in _statements(self.create):
                scratch.execute(statement)
            return _tables(scratch)
        finally:
            scratch.close()


def _describe(path: Path, what: str, err: sqlite3.Error) -> str:
    text = str(err)
    lowered = text.lower()
    if "disk is full" in lowered or "disk i/o" in lowered:
        return f"{path}: the disk is full or failing ({text}); free some space, then run again"
    if "not a database" in lowered or "malformed" in lowered or "file is encrypted" in lowered:
        return (
            f"{path}: the {what} is damaged ({text}); restore it from a backup, or move it aside "
            "to start a new one (what it recorded is then forgotten)"
        )
    if "readonly" in lowered or "unable to open" in lowered or "permission" in lowered:
        return (
            f"{path}: cannot write the {what} ({text}); check the folder's permissions or DISPATCH_STATE_DIR"
        )
    if "locked" in lowered or "busy" in lowered:
        return f"{path}: the {what} stayed locked by another process ({text}); try again in a moment"
    return f"{path}: the {what} cannot be used ({text}); it may come from another program or version"


def check_not_symlink(path: Path, what: str) -> None:
    """Refuse a planted symlink (or anything but a regular file) where dispatch keeps its files."""
    try:
        info = path.lstat()
    except FileNotFoundError:
        return
    except OSError as err:
        raise StateError(f"{path}: cannot inspect the {what}: {err.strerror}") from err
    if stat.S_ISLNK(info.st_mode):
        raise StateError(f"{path}: is a symlink; dispatch never writes through one: remove it")
    if not stat.S_ISREG(info.st_mode):
        raise StateError(f"{path}: is not a regular file; move it out of the state folder")


class Database(GroupCommit):
    """One SQLite file, shared by threads (one lock) and processes (SQLite's own locking)."""

    backend = "sqlite"

    def __init__(self, path: Path, schema: Schema, *, readonly: bool = False, durable: bool = True) -> None:
        super().__init__()
        self.path = path
        self.label = str(path)
        self.schema = schema
        self.durable = durable
        self._read_lock = threading.Lock()
        self._synced = time.monotonic()
        for suffix in SIDE_FILES:
            check_not_symlink(path.with_name(path.name + suffix), schema.what)
        try:
            if not readonly:  # addresses and replies: for this user only, whatever the umask
                private_folders(path.parent)
                private_file(path)
            uri = f"file:{path}?mode=ro" if readonly else f"file:{path}"
            with self.guard():
                self.conn = sqlite3.connect(
                    uri, uri=True, check_same_thread=False, isolation_level=None, timeout=30
                )
                self._check_pages()
                if readonly:
                    self._check_version(self._version())
                else:
                    self._prepare(durable)
                # Lookups get their own connection: in WAL mode a reader never waits for a
                # writer's commit (and its sync) to finish.
                self._reader = sqlite3.connect(
                    f"file:{path}?mode=ro",
                    uri=True,
                    check_same_thread=False,
                    isolation_level=None,
                    timeout=30,
                )
            if not readonly:
                for suffix in SIDE_FILES:
                    part = path.with_name(path.name + suffix)
                    if part.exists() and not part.is_symlink():
                        part.chmod(0o600)
        except OSError as err:
            raise StateError(
                f"{path}: cannot open the {schema.what} ({err.strerror or err}); "
                "set DISPATCH_STATE_DIR to a folder you can write"
            ) from err

    @contextmanager
    def guard(self) -> Iterator[None]:
        """Turn any SQLite failure inside the block into a StateError naming this file."""
        try:
            yield
        except sqlite3.Error as err:
            raise StateError(_describe(self.path, self.schema.what, err)) from err

    def _check_pages(self) -> None:
        """SQLite's quick check: a damaged page is found now, before anything relies on the file
        (a query that never touches the page would not notice)."""
        found = " ".join(str(r[0]) for r in self.conn.execute("PRAGMA quick_check(2)"))
        if found != "ok":
            shown = " ".join(found.replace("*** in database main ***", "").split())
            raise sqlite3.DatabaseError(f"database disk image is malformed: {shown[:160]}")

    def _version(self) -> int:
        version = int(self.conn.execute("PRAGMA user_version").fetchone()[0])
        if version == 0 and _tables(self.conn):
            return 1  # written before schema versions were recorded
        return version

    def _check_version(self, version: int) -> None:
        if version > self.schema.version:
            raise StateError(
                f"{self.path}: this {self.schema.what} was written by a newer dispatch (schema "
                f"{version}, this one knows {self.schema.version}); upgrade dispatch before using it"
            )
        if version == self.schema.version and _tables(self.conn) != self.schema.columns:
            raise StateError(
                f"{self.path}: its tables are not those of a dispatch {self.schema.what} "
                "(changed by another program?); move it aside or restore a backup"
            )

    def _prepare(self, durable: bool) -> None:
        """WAL, then create or migrate the schema. Two runs opening a new file at the same
        moment can meet a lock SQLite's busy timeout does not cover (switching to WAL): retry."""
        for attempt in range(50):
            try:
                self.conn.execute("PRAGMA journal_mode=WAL")
                self.conn.execute(f"PRAGMA synchronous={'FULL' if durable else 'NORMAL'}")
                self.conn.execute(f"PRAGMA wal_autocheckpoint={CHECKPOINT_PAGES}")
                self._migrate()
                return
            except sqlite3.OperationalError as err:
                if "locked" not in str(err) or attempt == 49:
                    raise
                time.sleep(0.1)

    def _migrate(self) -> None:
        self.conn.execute("BEGIN IMMEDIATE")
        try:
            version = self._version()
            if version == 0:
                for statement in _statements(self.schema.create):
                    self.conn.execute(statement)
            else:
                self._check_version_forward(version)
                while version < self.schema.version:
                    for statement in _statements(self.schema.migrations[version]):
                        self.conn.execute(statement)
                    version += 1
            self.conn.execute(f"PRAGMA user_version = {self.schema.version}")
            self._check_version(self.schema.version)
        except BaseException:
            self.conn.execute("ROLLBACK")
            raise
        self.conn.execute("COMMIT")

    def _check_version_forward(self, version: int) -> None:
        if version > self.schema.version:
            self._check_version(version)
        missing = [v for v in range(version, self.schema.version) if v not in self.schema.migrations]
        if missing:
            raise StateError(f"{self.path}: no migration from schema {missing[0]}; this is a bug")

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """One immediate (write-locked) transaction, across threads and processes."""
        with self._lock, self.guard():
            self.conn.execute("BEGIN IMMEDIATE")
            try:
                yield self.conn
            except BaseException:
                self.conn.execute("ROLLBACK")
                raise
            self.conn.execute("COMMIT")
            self._settle()

    @contextmanager
    def autocommit(self) -> Iterator[sqlite3.Connection]:
        """Statements that commit one by one (a single one is its own transaction)."""
        with self._lock, self.guard():
            yield self.conn
            self._settle()

    def execute(self, sql: str, params: Sequence[Any] = ()) -> sqlite3.Cursor:
        """One statement in its own (autocommit) transaction."""
        with self._lock, self.guard():
            cursor = self.conn.execute(sql, params)
            self._settle()
            return cursor

    def _settle(self) -> None:
        """Not durable (``synchronous=NORMAL``): a commit survives the process being killed at
        once, and reaches the disk at the latest SYNC_SECONDS later, when the log is synced."""
        if self.durable or time.monotonic() - self._synced < SYNC_SECONDS:
            return
        self._synced = time.monotonic()
        wal = self.path.with_name(self.path.name + "-wal")
        try:
            fd = os.open(wal, os.O_RDONLY | os.O_NOFOLLOW)
        except OSError:
            return  # no log yet (or not ours to touch): nothing to sync
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    def read(self, sql: str, params: Sequence[Any] = ()) -> tuple[Any, ...] | None:
        """The first row of a lookup, on the reader connection (never waits for a commit)."""
        with self._read_lock, self.guard():
            row: tuple[Any, ...] | None = self._reader.execute(sql, params).fetchone()
            return row

    def read_all(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        """Every row of a lookup, on the reader connection (never waits for a commit)."""
        with self._read_lock, self.guard():
            return list(self._reader.execute(sql, params).fetchall())

    def one(self, sql: str, params: Sequence[Any] = ()) -> tuple[Any, ...] | None:
        """The first row of a query, or None."""
        with self._lock, self.guard():
            row: tuple[Any, ...] | None = self.conn.execute(sql, params).fetchone()
            return row

    def all(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        """Every row of a query."""
        with self._lock, self.guard():
            return list(self.conn.execute(sql, params).fetchall())

    def close(self) -> None:
        """Close the file (never raises)."""
        with contextlib.suppress(sqlite3.Error):
            self.conn.close()
            self._reader.close()


def _tables(conn: sqlite3.Connection) -> dict[str, set[tuple[str, str, int, int]]]:
    """Each table's columns as (name, type, not null, primary key position): a file whose
    columns have the right names but lost a key or a constraint is not a dispatch file."""
    names = [r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
    return {
        n: {
            (str(c[1]), str(c[2]).upper(), int(c[3]), int(c[5]))
            for c in conn.execute(f"PRAGMA table_info('{n}')")  # names come from SQLite
        }
        for n in names
        if not n.startswith("sqlite_")
    }


def _statements(script: str) -> list[str]:
    """A schema script split into statements (executescript would commit the transaction)."""
    return [s.strip() for s in script.split(";") if s.strip()]
