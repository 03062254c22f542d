"""Where the messages come from, and where each goes once read: standard input (one message,
from a Postfix ``pipe`` transport or an alias), or a Maildir (each message once: read ones move
to the Maildir++ folder ``.processed``, unreadable ones to ``.unreadable``). The IMAP mailbox is
:mod:`dispatch.inbound.imap`. :func:`run` reads every message of a source and acts on it.

Nothing is lost: a message that cannot be read as a report is kept where a person finds it
(``.unreadable``, or for standard input a file in the state folder's ``inbound-kept``), and one
that cannot even be opened stays where it is and makes the run exit 1.
"""

from __future__ import annotations

import hashlib
import os
import stat
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Protocol

from dispatch.errors import InputError
from dispatch.inbound.actions import KEPT, Decision, Processor, Tally
from dispatch.inbound.reports import MAX_SIZE

KEPT_FOLDER = "inbound-kept"  # in the state folder: messages from standard input that could not be read
PROCESSED, UNREADABLE = "processed", "unreadable"  # Maildir++ folders (.processed) and IMAP folders
_CHUNK = 1 << 20


@dataclass
class Item:
    """One message of a source: its name in lines, its bytes (at most MAX_SIZE + 1), or why
    it could not be read."""

    name: str
    data: bytes = b""
    too_big: bool = False
    problem: str = ""  # it could not be read at all: left where it is
    handle: object = None  # the source's own reference (a path, an IMAP UID)


class Source(Protocol):
    """A place messages come from."""

    def items(self) -> Iterator[Item]:
        """Each message once."""
        ...

    def done(self, item: Item, *, kept: bool) -> str:
        """Move a read message aside (``kept``: for a person); returns where it went."""
        ...


def run(processor: Processor, source: Source, say: Callable[[str, Decision], None]) -> Tally:
    """Read every message of ``source``, act on it, move it aside, and tell ``say`` each decision."""
    tally = Tally()
    for item in source.items():
        if item.problem:
            tally.problems.append(f"{item.name}: {item.problem}")
            continue
        if item.too_big:
            decision = Decision("unreadable", KEPT, f"the message is over {MAX_SIZE:,} bytes")
        else:
            decision = processor.handle(item.data)
        try:
            where = source.done(item, kept=decision.outcome == KEPT)
        except OSError as err:
            tally.problems.append(f"{item.name}: read, but could not be moved aside: {err.strerror or err}")
            where = ""
        if decision.outcome == KEPT and where:
            decision = Decision(decision.kind, KEPT, f"{decision.detail}; kept in {where}")
        tally.add(decision)
        say(item.name, decision)
    return tally


class StdinSource:
    """One message on standard input; if it cannot be read, it is kept in the state folder."""

    def __init__(self, stream: BinaryIO, state_dir: Path) -> None:
        self.stream = stream
        self.state_dir = state_dir
        self._rest = False  # more bytes wait on the stream (the message is over MAX_SIZE)

    def items(self) -> Iterator[Item]:
        data = self.stream.read(MAX_SIZE + 1)
        self._rest = len(data) > MAX_SIZE
        yield Item("standard input", data, too_big=self._rest)

    def done(self, item: Item, *, kept: bool) -> str:
        if not kept:
            return ""
        folder = self.state_dir / KEPT_FOLDER
        folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
        path = folder / f"{stamp}-{hashlib.sha256(item.data).hexdigest()[:12]}-{os.getpid()}.eml"
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
        with os.fdopen(fd, "wb") as out:
            out.write(item.data)
            while self._rest and (chunk := self.stream.read(_CHUNK)):
                out.write(chunk)  # all of it: kept means kept whole
            out.flush()
            os.fsync(out.fileno())
        return str(path)


class MaildirSource:
    """Every message in a Maildir's ``new`` and ``cur``, oldest first."""

    def __init__(self, folder: Path) -> None:
        if not any((folder / sub).is_dir() for sub in ("cur", "new")):
            raise InputError(f"{folder}: is not a Maildir (it has no new/ or cur/ folder); check --maildir")
        self.folder = folder

    def items(self) -> Iterator[Item]:
        names = sorted(
            (entry.name, sub)
            for sub in ("new", "cur")
            if (self.folder / sub).is_dir()
            for entry in os.scandir(self.folder / sub)
            if not entry.name.startswith(".")
        )
        for name, sub in names:
            yield self._read(self.folder / sub / name, f"{sub}/{name}")

    @staticmethod
    def _read(path: Path, name: str) -> Item:
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
        except FileNotFoundError:
            return Item(name, problem="gone before it was read (another run took it?)", handle=path)
        except OSError as err:
            return Item(name, problem=f"cannot be opened: {err.strerror}", handle=path)
        with os.fdopen(fd, "rb") as handle:
            info = os.fstat(handle.fileno())
            if not stat.S_ISREG(info.st_mode):
                return Item(name, problem="is not a regular file; left where it is", handle=path)
            if info.st_size > MAX_SIZE:
                return Item(name, too_big=True, handle=path)
            return Item(name, handle.read(MAX_SIZE + 1), handle=path)

    def done(self, item: Item, *, kept: bool) -> str:
        path = item.handle
        if not isinstance(path, Path):
            return ""
        target = self.folder / f".{UNREADABLE if kept else PROCESSED}"
        for sub in ("cur", "new", "tmp"):
            (target / sub).mkdir(mode=0o700, parents=True, exist_ok=True)
        (target / "maildirfolder").touch(mode=0o600, exist_ok=True)
        name = path.name if ":2," in path.name else f"{path.name}:2,S"
        os.rename(path, target / "cur" / name)
        return str(target / "cur" / name)
