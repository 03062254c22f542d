"""``dispatch init``: a newsletter folder to start from — a private ``.env`` naming every
setting, an example list and an example issue (and, if asked, the built-in templates to edit).

A dry run works in the new folder at once. Nothing is ever overwritten: if any file it would
write is already there, it refuses before writing anything.
"""

from __future__ import annotations

import contextlib
import datetime
import os
import secrets
import shlex
from dataclasses import dataclass
from pathlib import Path

from dispatch.compose.render import HTML_TEMPLATE, TEXT_TEMPLATE, builtin_template_dir
from dispatch.errors import InputError
from dispatch.files import private_folders, read_regular
from dispatch.settings.envfile import INIT_HEADER, env_text
from dispatch.settings.table import PLACEHOLDERS, STATE_FOLDER
from dispatch.state.db import StateError
from dispatch.state.suppression import SuppressionStore

ENV_FILE, ARTICLE_FILE, TEMPLATE_FOLDER = ".env", "article.md", "templates"
SUBSCRIBERS_FILE = "subscribers.csv"
TEMPLATE_FILES = (HTML_TEMPLATE, TEXT_TEMPLATE, "style.css")
PRIVATE, PUBLIC = 0o600, 0o644  # .env and the list hold secrets and addresses; the rest does not

POSTAL = PLACEHOLDERS["DISPATCH_POSTAL_ADDRESS"]


def env_file_text(today: str, secret: str) -> str:
    """The ``.env`` init writes: every setting from the one table, a fresh secret."""
    values = {"DISPATCH_UNSUBSCRIBE_SECRET": secret, "DISPATCH_SUBSCRIBERS": SUBSCRIBERS_FILE}
    return env_text(INIT_HEADER.format(today=today), values)


SUBSCRIBERS_TEXT = """\
email,name,status
ada@example.org,Ada Lovelace,subscribed
grace@example.com,Grace Hopper,subscribed
katherine@example.com,"Johnson, Katherine",subscribed
alan@example.org,Alan Turing,unsubscribed
hedy@example.org,Hedy Lamarr,
"""

ARTICLE_TEXT = """\
---
title: A new home for the Example Society
subject: "A new meeting place, a river walk and the book vote"
preheader: From next month we meet at the library, the walks are back, and the book vote is open.
date: {today}
issue: 1
lang: en
motto: A town is only as good as the evenings its people spend together.
motto_attribution: Margaret Hale, founding member
---

Thank you for reading the first issue of our newsletter. Once a month it brings you what the
society has been up to, what is coming next, and one thing worth reading. It is short on
purpose: five minutes with a coffee.

## A new home

From next month we meet in the reading room of the town library, on the first Tuesday of
each month at 19:00. The room has step-free access, and the café downstairs stays open for us.

## Coming up

- **Book evening**, the first Tuesday: *Middlemarch*, chapters 1 to 20.
- **River walk**, the Saturday after, 10:00 from the old bridge, about two hours.
- **Garden visit**, at the end of the month, with tea afterwards.

Everything is free, and guests are welcome. The full programme is on
[our events page](https://example.org/events).

## Your vote

Three books are on the shortlist for next season. Tell us your favourite by replying to this
email before the end of the month.

> "I came for the books and stayed for the people. Best Tuesday of the month."
> — Tom, a member since last autumn

See you at the library,

The Example Society committee
"""


@dataclass(frozen=True)
class Scaffold:
    """What :func:`scaffold` wrote, and what to do next."""

    folder: Path
    written: tuple[Path, ...]
    commands: tuple[str, ...]  # the next commands to run, in order
    then: str = (
        "Then edit .env (the values marked EDIT: your relay, sender, reply address, organisation, "
        "postal address, list id and unsubscribe address), article.md and subscribers.csv, and send "
        "for real without --dry-run."
    )

    def report(self) -> str:
        """A few lines for the terminal: what was written, and the next commands."""
        names = ", ".join(str(p.relative_to(self.folder)) for p in self.written)
        steps = "".join(f"\n  {command}" for command in self.commands)
        state = f" and an empty state ({STATE_FOLDER}/)"
        return f"Wrote {names}{state} in {self.folder}\nNext:{steps}\n{self.then}"


def scaffold(folder: Path, *, templates: bool = False) -> Scaffold:
    """Create a newsletter folder in ``folder`` (created if need be). InputError, with nothing
    written, if a file it would write is there already (even as a symlink)."""
    day, secret = datetime.date.today().isoformat(), secrets.token_urlsafe(32)
    env = env_file_text(day, secret)
    files = [
        (ENV_FILE, env.encode(), PRIVATE),
        (SUBSCRIBERS_FILE, SUBSCRIBERS_TEXT.encode(), PRIVATE),
        (ARTICLE_FILE, ARTICLE_TEXT.format(today=day).encode(), PUBLIC),
    ]
    folders = [folder, folder / TEMPLATE_FOLDER] if templates else [folder]
    for name in TEMPLATE_FILES if templates else ():
        data = read_regular(builtin_template_dir() / name, "template")
        files.append((f"{TEMPLATE_FOLDER}/{name}", data, PUBLIC))
    for path in [*folders, *(folder / name for name, _, _ in files)]:
        is_folder = path in folders  # DIR may be a symlink to a folder; templates/ may not
        if os.path.lexists(path) and (
            not is_folder or not path.is_dir() or (path != folder and path.is_symlink())
        ):
            what = "is a file or a symlink, not a folder" if is_folder else "already exists"
            raise InputError(
                f"{path}: {what}; dispatch init never overwrites: move it or choose another folder"
            )
    written = _write_all(folders, [(folder / name, data, mode) for name, data, mode in files])
    _start_state(folder / STATE_FOLDER)
    return Scaffold(folder, written, _next_commands(folder, templates=templates))


def _start_state(state: Path) -> None:
    """The newsletter's state, empty, next to its .env (kept as it is if one is there): a send
    refuses to start a new state by a relative DISPATCH_STATE_DIR that does not exist yet (a
    settings file copied away from its state), so the newsletter's own one must exist."""
    try:
        private_folders(state)
        SuppressionStore(state).close()
    except (OSError, StateError) as err:
        raise InputError(f"{state}: cannot create the newsletter's state folder ({err})") from err


def _write_all(folders: list[Path], files: list[tuple[Path, bytes, int]]) -> tuple[Path, ...]:
    """Create every file with its mode from the start (O_EXCL: never replaces, never follows a
    symlink); if one fails, remove what this call created and raise InputError."""
    made: list[Path] = []
    try:
        for directory in folders:  # private whatever the umask: the list and .env live here
            made += private_folders(directory)
        for path, data, mode in files:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0), mode)
            made.append(path)
            with os.fdopen(fd, "wb") as handle:
                handle.write(data)
    except OSError as err:
        for path in reversed(made):
            with contextlib.suppress(OSError):
                if path.is_dir():
                    path.rmdir()
                else:
                    path.unlink()
        why = "already exists; dispatch init never overwrites" if isinstance(err, FileExistsError) else ""
        raise InputError(
            f"{err.filename or folders[0]}: {why or f'cannot write it: {err.strerror}'}"
        ) from err
    return tuple(path for path, _, _ in files)


def _next_commands(folder: Path, *, templates: bool) -> tuple[str, ...]:
    """``cd DIR`` (unless it is the current folder), then a check and a dry run of the example."""
    template = f" --template {TEMPLATE_FOLDER}" if templates else ""
    commands = (
        f"dispatch check {ARTICLE_FILE}{template}",
        f"dispatch send {ARTICLE_FILE} --dry-run{template}",
    )
    with contextlib.suppress(OSError):
        if folder.resolve() == Path.cwd().resolve():
            return commands
    return (f"cd {shlex.quote(str(folder))}", *commands)
