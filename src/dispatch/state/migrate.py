"""``dispatch state``: what a state holds and at which schema, and ``dispatch state migrate``:
a state folder's SQLite files (journal, suppression store, what ``dispatch inbound`` read) and
OAuth2 logins copied into PostgreSQL. Copying never overwrites: a row the database already has
stays as it is, so running it again is harmless, and the report says what was copied and what
was there."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dispatch.errors import LockedError
from dispatch.settings import StateLocation
from dispatch.state import feedback, pgschema, suppression, tables
from dispatch.state import journal as j
from dispatch.state.db import Database, StateError
from dispatch.state.locks import campaign_lock
from dispatch.state.pg import PgDatabase

PAGE = 5000
# (table, SQLite file, columns, order): copied in this order
TABLES = (
    ("campaigns", j.FILENAME, "id, subject, fingerprint, article, recipients, created, updated, body", "id"),
    ("recipients", j.FILENAME, "campaign, key, email, state, attempts, code, enhanced, reply, hard_bounce, "
     "message_id, created, updated, sent_at", "campaign, key"),
    ("lists", j.FILENAME, "list_id, settings_file, secret, first, last", "list_id, settings_file, secret"),
    ("suppressions", suppression.FILENAME, "key, scope, reason, source, created", "key, scope, reason"),
    ("reports", feedback.FILENAME, "id, outcome, created", "id"),
    ("events", feedback.FILENAME, "campaign, key, kind, detail, created", "campaign, key, kind"),
)  # fmt: skip
_TABLES = "SELECT table_name FROM information_schema.tables WHERE table_schema = ?"
COUNTED = ("campaigns", "recipients", "suppressions", "logins", "senders", "reports", "events")
# What ``dispatch state`` counts in each file of a state folder.
FILES = {
    j.FILENAME: ("campaigns",),
    suppression.FILENAME: ("suppressions",),
    feedback.FILENAME: ("reports", "events"),
}


@dataclass
class Copied:
    """What a migration did, table by table."""

    copied: dict[str, int] = field(default_factory=dict)
    existing: dict[str, int] = field(default_factory=dict)

    def add(self, table: str, copied: int, total: int) -> None:
        self.copied[table] = self.copied.get(table, 0) + copied
        self.existing[table] = self.existing.get(table, 0) + total - copied


def _schemas() -> dict[str, Any]:
    return {
        j.FILENAME: tables.SCHEMA,
        suppression.FILENAME: suppression.SCHEMA,
        feedback.FILENAME: feedback.SCHEMA,
    }


def migrate(folder: Path, url: str) -> Copied:
    """Copy the state folder into the PostgreSQL database at ``url`` (created or migrated
    there first). Refused while a send of the folder is running (it would miss its last writes)."""
    sources = {name: folder / name for name in _schemas() if (folder / name).is_file()}
    if not sources and not (folder / "oauth").is_dir():
        raise StateError(
            f"{folder}: holds no dispatch state (no journal, suppression store or login) to copy"
        )
    target = PgDatabase(url)
    report = Copied()
    opened = {name: Database(path, _schemas()[name], readonly=True) for name, path in sources.items()}
    try:
        if j.FILENAME in opened:
            for (campaign,) in opened[j.FILENAME].all("SELECT id FROM campaigns"):
                try:
                    with campaign_lock(folder, campaign):
                        pass  # nobody is sending it
                except LockedError as err:
                    raise StateError(
                        f"{folder}: campaign {campaign!r} is being sent now; let it finish, then migrate"
                    ) from err
        for table, name, columns, order in TABLES:
            if name in opened:
                _copy(opened[name], target, (table, columns, order), report)
        _copy_logins(folder / "oauth", target, report)
    finally:
        for db in opened.values():
            db.close()
        target.close()
    return report


def _text(value: Any) -> Any:
    """A value as PostgreSQL takes it: its text holds no NUL character (SQLite's may)."""
    return value.replace("\x00", "\ufffd") if isinstance(value, str) else value


def _copy(source: Database, target: PgDatabase, what: tuple[str, str, str], report: Copied) -> None:
    table, columns, order = what
    marks = ", ".join("?" * len(columns.split(",")))
    insert = f"INSERT INTO {table} ({columns}) VALUES ({marks}) ON CONFLICT DO NOTHING"  # noqa: S608 - our names
    offset = 0
    while True:
        page = f"SELECT {columns} FROM {table} ORDER BY {order} LIMIT ? OFFSET ?"  # noqa: S608 - our names
        rows = [tuple(map(_text, row)) for row in source.all(page, (PAGE, offset))]
        if not rows:
            return
        with target.transaction() as db:
            copied = db.executemany(insert, rows).rowcount
        report.add(table, max(0, int(copied)), len(rows))
        offset += len(rows)


def _copy_logins(oauth: Path, target: PgDatabase, report: Copied) -> None:
    """Each stored login (``oauth/NAME.json``) as a row of ``logins``, under the same name."""
    if not oauth.is_dir() or oauth.is_symlink():
        return
    for path in sorted(oauth.glob("*.json")):
        if path.is_symlink() or not path.is_file():
            continue
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            token = data.pop("refresh_token")
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            continue  # a damaged login is left behind: 'dispatch login' makes a new one
        cur = target.execute(
            "INSERT INTO logins VALUES (?, ?, ?, ?) ON CONFLICT DO NOTHING",
            (path.stem, json.dumps(data), token, path.stat().st_mtime),
        )
        report.add("logins", int(cur.rowcount), 1)


def overview(location: StateLocation) -> dict[str, Any]:
    """Where the state is, its schema and what it holds (never a password nor a token)."""
    data: dict[str, Any] = dict(location.as_json())
    if location.url:
        db = PgDatabase(location.url, readonly=True)
        try:
            version = db.version()
            data["schema"] = {"version": version, "this_dispatch": pgschema.VERSION}
            if version > 0:  # (an older schema may not have every table yet)
                present = {str(r[0]) for r in db.all(_TABLES, (pgschema.SCHEMA_NAME,))}
                count = "SELECT COUNT(*) FROM {}"
                data["counts"] = {t: int(db.all(count.format(t))[0][0]) for t in COUNTED if t in present}
        finally:
            db.close()
        return data
    data["files"] = {}
    for name, schema in _schemas().items():
        path = location.path / name
        if not path.is_file():
            data["files"][name] = None
            continue
        file_db = Database(path, schema, readonly=True)
        try:
            version = int(file_db.all("PRAGMA user_version")[0][0])
            count = "SELECT COUNT(*) FROM {}"
            rows = {table: int(file_db.all(count.format(table))[0][0]) for table in FILES[name]}
        finally:
            file_db.close()
        data["files"][name] = {"schema": version, "this_dispatch": schema.version, **rows}
    oauth = location.path / "oauth"
    data["logins"] = len(list(oauth.glob("*.json"))) if oauth.is_dir() else 0
    return data
