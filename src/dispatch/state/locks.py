"""Campaign locks: an ``flock`` on a file in the state folder, which the kernel releases when
the holder dies, even by SIGKILL, so a stale lock can never block cron. The file holds the
holder's process id, so ``status`` can tell a run in progress from one that died."""

from __future__ import annotations

import fcntl
import hashlib
import os
import re
import stat
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from dispatch.errors import LockedError
from dispatch.state.db import StateError

PLAIN_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}")


def alive(pid: int) -> bool:
    """Whether process ``pid`` exists (one of another user counts)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def lock_name(campaign: str) -> str:
    """The lock file's name: the campaign ID itself when it is a plain file name, else a
    readable slug plus a hash (never too long, never a path)."""
    if PLAIN_ID.fullmatch(campaign):
        return f"{campaign}.lock"
    slug = re.sub(r"[^A-Za-z0-9._-]+", "_", campaign).strip("._-")[:40] or "campaign"
    return f"{slug}-{hashlib.sha256(campaign.encode()).hexdigest()[:12]}.lock"


@contextmanager
def campaign_lock(state_dir: Path, campaign: str) -> Iterator[None]:
    """Hold ``campaign``'s lock for the block; LockedError at once if another process has it.
    The lock file is never opened through a symlink (a planted one in a shared folder is refused)."""
    path = state_dir / lock_name(campaign)
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_NONBLOCK, 0o600)
    except OSError as err:
        if path.is_symlink():
            raise StateError(f"{path}: is a symlink; dispatch never writes through one: remove it") from err
        raise StateError(f"{path}: cannot create the campaign lock: {err.strerror}") from err
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise StateError(f"{path}: is not a regular file; remove it from the state folder")
        if info.st_nlink > 1:  # a hard link planted to make dispatch truncate another file
            raise StateError(f"{path}: has other hard links; remove it from the state folder")
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError as err:
            raise LockedError(
                f"campaign {campaign!r} is being sent by another dispatch process "
                f"(lock {path}); let it finish, then run again"
            ) from err
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        yield
    finally:
        os.close(fd)


def lock_running(state_dir: Path, campaign: str) -> bool:
    """Whether a live process holds (or last held) the campaign's lock: its rows in flight may
    still be finished. Otherwise they belong to a run that died, and are unknown."""
    try:
        pid = int((state_dir / lock_name(campaign)).read_text(encoding="ascii").strip() or 0)
    except (OSError, ValueError):
        return False
    return pid > 0 and alive(pid)
