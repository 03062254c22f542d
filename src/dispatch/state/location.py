"""Where the state lives, and the one rule that keeps a run from starting a second, empty
state by accident: a state nobody named (no ``DISPATCH_STATE_DIR``) that does not exist yet is
refused for anything that writes, because a new, empty journal and suppression store would
send an issue again to everyone, unsubscribers included.

How a state folder is found (the README's "Where the state lives" says the same):

1. ``DISPATCH_STATE_DIR`` (a flag, the environment or the settings file); a relative path is
   relative to the settings file's folder;
2. else ``dispatch-state`` next to the settings file in use (``--env-file``, or ``./.env``);
3. else, with no settings file at all, the platform's state folder
   (``$XDG_STATE_HOME/dispatch``, usually ``~/.local/state/dispatch``).
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from dispatch.settings import PREFIX, STATE_FOLDER, StateLocation, platform_state_dir

STATE_FILES = ("journal.sqlite3", "suppression.sqlite3")


def state_exists(folder: Path) -> bool:
    """Whether ``folder`` holds a journal or a suppression store (a cache alone is no state)."""
    return any((folder / name).exists() for name in STATE_FILES)


def described(location: StateLocation) -> str:
    """Where the state is and how it was found, and whether it is new (nothing recorded yet)."""
    new = not location.url and not state_exists(location.path)
    return location.describe() + (" — new: nothing recorded there yet" if new else "")


def new_state_problem(location: StateLocation, *, sending: bool = False) -> str | None:
    """Why a command must not create the state at ``location``, or None when it may: the
    state exists, or the user named its folder (for a send or serve, ``sending``: by an absolute
    path, as a relative one moves with a settings file copied or moved away from its state)."""
    if location.url or state_exists(location.path):
        return None
    if location.explicit:
        if not (sending and location.relative):
            return None
        return (
            f"no dispatch state at {location.path} yet ({location.found_by}, relative to that file's "
            "folder): a new, empty state would know neither who already has an issue nor who "
            "unsubscribed (was the settings file copied or moved away from its state?). Point "
            f"{PREFIX}STATE_DIR at this newsletter's state folder; a new newsletter's state is made by "
            "dispatch init, or by its first send at a terminal (without --yes)"
        )
    where = f"Set {PREFIX}STATE_DIR"
    where += f" in {location.settings_file}" if location.settings_file is not None else ""
    legacy = platform_state_dir()
    earlier = ""
    if legacy != location.path and state_exists(legacy):
        earlier = f"; an earlier dispatch kept its state in {legacy}: {PREFIX}STATE_DIR={legacy} keeps it"
    return (
        f"no dispatch state at {location.path} yet ({location.found_by}), and {PREFIX}STATE_DIR is not "
        f"set: a new, empty state would not know who already has an issue or who unsubscribed. "
        f"{where} to this newsletter's state folder ({PREFIX}STATE_DIR={STATE_FOLDER} for a new one "
        f"next to the settings file){earlier}"
    )


def unusable_state(location: StateLocation) -> str | None:
    """Why a send could not keep its state in ``location``'s folder, or None when it could (or
    the state is in PostgreSQL). Writes nothing, but for a folder made and removed at once where
    the state folder would be created (the one way to learn that, ``/proc`` for one, refuses)."""
    if location.url:
        return None
    folder = location.path
    nearest = next(p for p in (folder, *folder.parents) if os.path.lexists(p))  # ("/" always is)
    if nearest.is_symlink() and not nearest.exists():
        return f"{nearest} is a link to nothing"
    if not nearest.is_dir():
        return f"{nearest} is a file, not a folder"
    if not os.access(nearest, os.W_OK | os.X_OK):
        return f"{nearest} cannot be written by this user"
    if nearest == folder:
        return None
    try:
        os.rmdir(tempfile.mkdtemp(prefix=".dispatch-", dir=nearest))
    except OSError as err:
        return f"cannot be created in {nearest} ({err.strerror})"
    return None
