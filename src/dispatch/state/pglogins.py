"""The OAuth2 login in PostgreSQL (``DISPATCH_STATE_URL``): the same refresh token as
:class:`dispatch.state.logins.LoginStore` keeps in ``oauth/``, in the ``logins`` table, so a
send on any host uses (and rotates) the one login. Refreshes by several processes on several
hosts are serialised with an advisory lock. Never printed: the table is as private as the
database (grant it to dispatch's role only)."""

from __future__ import annotations

import contextlib
import hashlib
import json
import time
from collections.abc import Iterator

from dispatch.state.logins import ABOUT
from dispatch.state.pg import PgDatabase


class PgLoginStore:
    """One mailbox's refresh token at one authorization server, in the database."""

    def __init__(self, db: PgDatabase, *, mailbox: str, token_url: str, client_id: str, scope: str) -> None:
        key = "\n".join((token_url, client_id, mailbox.lower()))
        self.name = hashlib.sha256(key.encode()).hexdigest()[:24]
        self._lock_id = int(self.name[:15], 16)
        self._db = db
        self.path = f"{db.label} (login {self.name})"
        self._about = json.dumps(
            {"mailbox": mailbox, "token_url": token_url, "client_id": client_id, "scope": scope}
        )

    @contextlib.contextmanager
    def locked(self) -> Iterator[None]:
        """Hold this login's lock (every process, every host) while reading, refreshing and saving."""
        with self._db.autocommit() as db:
            db.execute("SELECT pg_advisory_lock(?)", (self._lock_id,))
            try:
                yield
            finally:
                db.execute("SELECT pg_advisory_unlock(?)", (self._lock_id,))

    def load(self) -> str | None:
        """The stored refresh token, or None if there is none."""
        row = self._db.one("SELECT refresh_token FROM logins WHERE name = ?", (self.name,))
        return str(row[0]) if row and row[0] else None

    def save(self, refresh_token: str) -> None:
        """Keep (or replace) the refresh token."""
        self._db.execute(
            "INSERT INTO logins VALUES (?, ?, ?, ?) ON CONFLICT (name) DO UPDATE SET "
            "refresh_token = excluded.refresh_token, about = excluded.about, updated = excluded.updated",
            (self.name, self._about, refresh_token, time.time()),
        )

    def others(self) -> list[dict[str, str]]:
        """The other logins stored for this mailbox (their token endpoint, client and scope,
        never their token): a login made before a setting changed."""
        mailbox = json.loads(self._about)["mailbox"].lower()
        found = []
        for (about,) in self._db.all("SELECT about FROM logins WHERE name <> ? ORDER BY name", (self.name,)):
            with contextlib.suppress(ValueError, AttributeError, TypeError):
                data = json.loads(about) if isinstance(about, str) else dict(about)
                found.append({k: str(data.get(k, "")) for k in ABOUT})
        return [a for a in found if a["mailbox"].lower() == mailbox]

    def forget(self) -> bool:
        """Delete the stored login; False if there was none."""
        return bool(self._db.execute("DELETE FROM logins WHERE name = ?", (self.name,)).rowcount)
