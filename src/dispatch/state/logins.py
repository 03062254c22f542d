"""The OAuth2 login kept in the state folder: one refresh token per mailbox, authorization
server and client, in ``oauth/`` (see :mod:`dispatch.send.oauth`). Never in ``.env``, never printed."""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

from dispatch.errors import AbortError, ConfigError
from dispatch.files import private_folders

LOGIN_HINT = "run 'dispatch login'"
ABOUT = ("mailbox", "token_url", "client_id", "scope")  # what a stored login says of itself


class LoginNeeded(AbortError):
    """No usable login: none stored, or the server refused it (revoked, expired, consent withdrawn)."""


class LoginStore:
    """The refresh token of one mailbox at one authorization server, in the state folder's
    ``oauth`` folder: private (0600 in a 0700 folder), replaced atomically, never through a
    symlink. Refreshes by several processes are serialised with a lock file, so a rotated token
    is never used by one after another has replaced it."""

    def __init__(self, folder: Path, *, mailbox: str, token_url: str, client_id: str, scope: str) -> None:
        key = "\n".join((token_url, client_id, mailbox.lower()))
        name = hashlib.sha256(key.encode()).hexdigest()[:24]
        self.folder = folder / "oauth"
        self.path = self.folder / f"{name}.json"
        self._lock_path = self.folder / f"{name}.lock"
        self._about = {"mailbox": mailbox, "token_url": token_url, "client_id": client_id, "scope": scope}

    def _mkdir(self) -> None:
        private_folders(self.folder)
        if self.folder.is_symlink():
            raise ConfigError(f"{self.folder}: is a symlink; dispatch never writes through one: remove it")

    @contextlib.contextmanager
    def locked(self) -> Iterator[None]:
        """Hold this login's lock file (across processes) while reading, refreshing and saving."""
        self._mkdir()
        fd = os.open(self._lock_path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)

    def load(self) -> str | None:
        """The stored refresh token, or None if there is none."""
        try:
            fd = os.open(self.path, os.O_RDONLY | os.O_NOFOLLOW)
        except FileNotFoundError:
            return None
        except OSError as err:  # a symlink (O_NOFOLLOW), a folder, no permission
            what = f"{self.path}: cannot read the stored login ({err.strerror})"
            raise LoginNeeded(f"{what}; {LOGIN_HINT}") from err
        with os.fdopen(fd, "rb") as handle:
            raw = handle.read(100_000)
        try:
            data = json.loads(raw)
            token = data["refresh_token"]
        except (ValueError, KeyError, TypeError) as err:
            raise LoginNeeded(f"{self.path}: the stored login is damaged; {LOGIN_HINT}") from err
        return token if isinstance(token, str) and token else None

    def save(self, refresh_token: str) -> None:
        """Keep (or replace) the refresh token, atomically."""
        self._mkdir()
        record = {**self._about, "refresh_token": refresh_token}
        fd, temporary = tempfile.mkstemp(dir=self.folder, prefix=".login-", suffix=".tmp")  # 0600
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as handle:
                json.dump(record, handle)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(temporary, self.path)  # replaces the entry: never follows a symlink
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(temporary)
            raise

    def others(self) -> list[dict[str, str]]:
        """The other logins stored for this mailbox (their token endpoint, client and scope,
        never their token): a login made before a setting changed."""
        found = []
        for path in sorted(self.folder.glob("*.json")) if self.folder.is_dir() else ():
            if path == self.path or path.is_symlink():
                continue
            with contextlib.suppress(OSError, ValueError, AttributeError):
                about = json.loads(path.read_bytes()[:100_000])
                found.append({k: str(about.get(k, "")) for k in ABOUT})
        return [a for a in found if a["mailbox"].lower() == self._about["mailbox"].lower()]

    def forget(self) -> bool:
        """Delete the stored login; False if there was none."""
        try:
            self.path.unlink()
        except FileNotFoundError:
            return False
        return True
