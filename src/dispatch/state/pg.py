"""PostgreSQL as the state's home (``DISPATCH_STATE_URL``), opened one way, like the SQLite
files of :mod:`dispatch.state.db`: the same group commit (:mod:`dispatch.state.group`), the same
statements (written with ``?``, turned into psycopg's ``%s`` here), a schema version that is
migrated forward or refused, and every database failure turned into a :class:`StateError` that
names the database (never its password) and says what to do.

psycopg is imported only here, and this module only when a URL is set: ``dispatch --help`` and
every SQLite run never load it.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from dispatch.settings.values import shown_url
from dispatch.state import pgschema as s
from dispatch.state.group import GroupCommit, StateError

try:
    import psycopg
except ImportError:  # pragma: no cover - the extra is installed wherever the tests run
    psycopg = None  # type: ignore[assignment]

EXTRA_HINT = "pip install 'dispatch[postgresql]'"
# psycopg logs "error ignored terminating <psycopg.Pipeline [BAD]>" on stderr when a connection
# dies under a pipeline; the StateError that follows says it once, in dispatch's words.
_psycopg_log = logging.getLogger("psycopg")
_psycopg_log.addHandler(logging.NullHandler())
_psycopg_log.propagate = False


@functools.lru_cache(maxsize=512)
def _pg(sql: str) -> str:
    """``?`` placeholders as psycopg's ``%s`` (and a literal ``%`` kept literal)."""
    return sql.replace("%", "%%").replace("?", "%s")


class _Tx:
    """An open transaction taking the statements the SQLite backend takes."""

    def __init__(self, conn: Any) -> None:
        self.conn = conn

    def execute(self, sql: str, params: Sequence[Any] = ()) -> Any:
        return self.conn.execute(_pg(sql), tuple(params))

    def executemany(self, sql: str, params: Any) -> Any:
        cursor = self.conn.cursor()
        cursor.executemany(_pg(sql), list(params))
        return cursor


def _readable(url: str, label: str) -> dict[str, Any]:
    """The URL as libpq reads it, or a StateError that names it without its password and never
    repeats libpq's words, which quote the part it could not read (the password, or all of it)."""
    try:
        return dict(psycopg.conninfo.conninfo_to_dict(url))
    except psycopg.Error:
        raise StateError(
            f"DISPATCH_STATE_URL: {label!r} is not a connection URL PostgreSQL can read; check the "
            "%XX escapes, the host and port, and the ?name=value options after it"
        ) from None


_COLUMNS = (
    "SELECT table_name, column_name, data_type, is_nullable FROM information_schema.columns "
    "WHERE table_schema = ?"
)
_expected: set[tuple[str, str, str, str]] | None = None


class PgDatabase(GroupCommit):
    """The dispatch schema of one PostgreSQL database, shared by threads (one lock per
    connection) and by every process on every host that names the same URL."""

    backend = "postgresql"

    def __init__(
        self, url: str, *, readonly: bool = False, durable: bool = False, what: str = "state"
    ) -> None:
        super().__init__()
        if psycopg is None:
            raise StateError(
                f"DISPATCH_STATE_URL names PostgreSQL, but psycopg is not installed: {EXTRA_HINT}"
            )
        self.url = url
        self.label = self.path = shown_url(url)
        self._password = _readable(url, self.label).get("password") or ""
        self.what = what
        self.readonly = readonly
        self._read_lock = threading.Lock()
        self.conn = self._connect(durable)
        try:
            with self.guard():
                if readonly:
                    self._check(self.conn, self.version())
                else:
                    self._prepare()
            self._reader = self._connect(durable)
        except BaseException:
            self.conn.close()
            raise

    def _connect(self, durable: bool) -> Any:
        options = f"-c search_path={s.SCHEMA_NAME}"
        if self.readonly:
            options += " -c default_transaction_read_only=on"
        if not durable:  # as SQLite's synchronous=NORMAL: survives a killed sender at once
            options += " -c synchronous_commit=off"
        with self.guard():
            return psycopg.connect(
                self.url, autocommit=True, connect_timeout=10, application_name="dispatch", options=options
            )

    @contextmanager
    def guard(self) -> Iterator[None]:
        """Turn any database failure inside the block into a StateError naming the database."""
        try:
            yield
        except psycopg.Error as err:
            raise StateError(self.describe(err)) from err

    def describe(self, err: Exception) -> str:
        text = " ".join(str(err).replace(self.url, self.label).split())[:300] or type(err).__name__
        if self._password:
            text = text.replace(str(self._password), "***")
        if isinstance(err, psycopg.OperationalError) and not getattr(self, "_reader", None):
            return (
                f"{self.label}: cannot open the PostgreSQL state ({text}); check DISPATCH_STATE_URL, the "
                "password (~/.pgpass or PGPASSWORD) and that the server accepts this host"
            )
        return f"{self.label}: the PostgreSQL state failed ({text})"

    # --- the schema -------------------------------------------------------------------------

    def version(self) -> int:
        """The schema's version (0: no dispatch schema in this database yet)."""
        conn = self.conn
        tables = conn.execute(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = %s", (s.SCHEMA_NAME,)
        ).fetchall()
        if not tables:
            return 0
        if ("meta",) not in tables:
            return -1  # tables, but not ours
        row = conn.execute("SELECT value FROM meta WHERE name = 'schema'").fetchone()
        try:
            return int(row[0]) if row else -1
        except ValueError:
            return -1

    def _check(self, conn: Any, version: int) -> None:
        if version == -1:
            raise StateError(
                f"{self.label}: its '{s.SCHEMA_NAME}' schema holds tables that are not those of dispatch "
                "(another program's?); give dispatch a database of its own in DISPATCH_STATE_URL"
            )
        if version > s.VERSION:
            raise StateError(
                f"{self.label}: this state was written by a newer dispatch (schema {version}, this one "
                f"knows {s.VERSION}); upgrade dispatch before using it"
            )
        if version == s.VERSION and _columns(conn, s.SCHEMA_NAME) != expected_columns(conn):
            raise StateError(
                f"{self.label}: its tables are not those of a dispatch state (changed by another "
                "program?); restore a backup or give dispatch a database of its own"
            )

    def _prepare(self) -> None:
        """Create or migrate the schema, one process at a time (an advisory lock)."""
        with self.conn.transaction():
            self.conn.execute("SELECT pg_advisory_xact_lock(%s)", (s.MIGRATION_LOCK,))
            version = self.version()
            if version == 0:
                self.conn.execute(f"CREATE SCHEMA IF NOT EXISTS {s.SCHEMA_NAME}")
                for statement in s.statements(s.CREATE):
                    self.conn.execute(statement)
                self.conn.execute(
                    "INSERT INTO meta VALUES ('schema', %s), ('created', %s)",
                    (str(s.VERSION), str(time.time())),
                )
            elif 0 < version < s.VERSION:
                for step in range(version, s.VERSION):
                    for statement in s.statements(s.MIGRATIONS[step]):
                        self.conn.execute(statement)
                self.conn.execute("UPDATE meta SET value = %s WHERE name = 'schema'", (str(s.VERSION),))
            self._check(self.conn, self.version())

    # --- statements ---------------------------------------------------------------------------

    @contextmanager
    def batch_transaction(self) -> Iterator[_Tx]:
        """The group commit's transaction, in psycopg's pipeline mode: BEGIN goes with the
        first statements, COMMIT with the last (see :meth:`_run`)."""
        with self._lock, self.guard():
            try:
                with self.conn.pipeline() as pipeline:  # (psycopg's transaction() would sync twice more)
                    self._pipeline = pipeline
                    self.conn.execute("BEGIN")
                    yield _Tx(self.conn)
                    self.conn.execute("COMMIT")
            except BaseException:
                with contextlib.suppress(psycopg.Error):
                    self.conn.execute("ROLLBACK")
                raise

    def _run(self, db: Any, batch: Sequence[Any]) -> None:
        """The group commit's writes in two round trips, whatever their number: BEGIN and every
        fence at once, then the statements of the writes whose fences held and COMMIT."""
        fences = [(item, db.execute(*item.fence)) for item in batch if item.fence is not None]
        if fences:
            self._pipeline.sync()
        lost = {id(item) for item, cursor in fences if not self._held(item, cursor)}
        for item in batch:
            if id(item) not in lost:
                for sql, params in item.statements:
                    db.execute(sql, params)

    @contextmanager
    def transaction(self) -> Iterator[_Tx]:
        """One transaction, across threads and processes."""
        with self._lock, self.guard(), self.conn.transaction():
            yield _Tx(self.conn)

    def execute(self, sql: str, params: Sequence[Any] = ()) -> Any:
        """One statement in its own transaction."""
        with self._lock, self.guard():
            return self.conn.execute(_pg(sql), tuple(params))

    @contextmanager
    def autocommit(self) -> Iterator[_Tx]:
        """Statements that commit one by one."""
        with self._lock, self.guard():
            yield _Tx(self.conn)

    def read(self, sql: str, params: Sequence[Any] = ()) -> tuple[Any, ...] | None:
        """The first row of a lookup, on the reader connection."""
        with self._read_lock, self.guard():
            row: tuple[Any, ...] | None = self._reader.execute(_pg(sql), tuple(params)).fetchone()
            return row

    def read_all(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        """Every row of a lookup, on the reader connection."""
        with self._read_lock, self.guard():
            return list(self._reader.execute(_pg(sql), tuple(params)).fetchall())

    def one(self, sql: str, params: Sequence[Any] = ()) -> tuple[Any, ...] | None:
        """The first row of a query, or None."""
        with self._lock, self.guard():
            row: tuple[Any, ...] | None = self.conn.execute(_pg(sql), tuple(params)).fetchone()
            return row

    def all(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        """Every row of a query."""
        with self._lock, self.guard():
            return list(self.conn.execute(_pg(sql), tuple(params)).fetchall())

    def close(self) -> None:
        """Close both connections (never raises)."""
        for conn in (self.conn, getattr(self, "_reader", None)):
            if conn is not None:
                with contextlib.suppress(Exception):
                    conn.close()


def _columns(conn: Any, schema: str) -> set[tuple[str, str, str, str]]:
    rows = conn.execute(_pg(_COLUMNS), (schema,)).fetchall()
    return {(str(a), str(b), str(c), str(d)) for a, b, c, d in rows}


def expected_columns(conn: Any) -> set[tuple[str, str, str, str]]:
    """The current schema's columns, as PostgreSQL itself describes them: its tables created
    as temporary ones in a transaction that is then rolled back (cached per process)."""
    global _expected  # noqa: PLW0603 - computed once per process
    if _expected is None:
        with conn.transaction():
            conn.execute("SET TRANSACTION READ WRITE")  # temporary tables only, rolled back
            for statement in s.statements(s.CREATE):
                temporary = statement.replace("CREATE TABLE", "CREATE TEMP TABLE")
                conn.execute(temporary.replace("CREATE SEQUENCE", "CREATE TEMP SEQUENCE"))
            temp = conn.execute("SELECT nspname FROM pg_namespace WHERE oid = pg_my_temp_schema()").fetchone()
            _expected = _columns(conn, str(temp[0]))
            raise psycopg.Rollback
    return _expected
