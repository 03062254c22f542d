"""Files, safely. Inputs are read only from regular files (a FIFO or a device would hang a
run). Outputs go into an :class:`OutputFolder`, which only replaces or removes what dispatch
itself wrote there. Each failure is one line naming the file and what to do."""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import stat
import tempfile
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import IO

from dispatch.errors import InputError


def private_folders(folder: Path) -> list[Path]:
    """Create ``folder`` and any missing parents readable by this user only (0700), whatever
    the umask, without changing the process's umask (other threads create files meanwhile);
    the folders this call made. A folder another process makes at the same moment is theirs."""
    made = []
    for each in [d for d in (*reversed(folder.parents), folder) if not d.is_dir()]:
        try:
            each.mkdir(mode=0o700)
        except FileExistsError:
            continue
        each.chmod(0o700)
        made.append(each)
    return made


def private_file(path: Path) -> None:
    """Create ``path`` empty with mode 0600 unless it exists (never through a symlink), so that
    whatever then opens it (SQLite) starts from a private file, whatever the umask."""
    with contextlib.suppress(FileExistsError):
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0), 0o600))


def open_regular(path: Path, what: str) -> IO[bytes]:
    """Open ``path`` for reading if it is a regular file; InputError at once otherwise."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    except FileNotFoundError:
        raise InputError(f"{path}: no such {what} file; check the path") from None
    except IsADirectoryError:
        raise InputError(
            f"{path}: is a folder, not a{'n' if what[0] in 'aeiou' else ''} {what} file"
        ) from None
    except OSError as err:
        raise InputError(f"{path}: cannot read the {what}: {err.strerror}") from err
    mode = os.fstat(fd).st_mode
    if stat.S_ISDIR(mode):
        os.close(fd)
        raise InputError(f"{path}: is a folder, not a{'n' if what[0] in 'aeiou' else ''} {what} file")
    if not stat.S_ISREG(mode):
        os.close(fd)
        raise InputError(
            f"{path}: is not a regular file (a pipe, socket or device); save the {what} to a file first"
        )
    os.set_blocking(fd, True)
    return os.fdopen(fd, "rb")


def read_regular(path: Path, what: str, *, limit: int = 0) -> bytes:
    """The whole file (at most ``limit`` bytes when given: a larger file is an InputError)."""
    with open_regular(path, what) as handle:
        too_big = InputError(f"{path}: the {what} is over {limit / 1_000_000:g} MB; is it the right file?")
        if limit and os.fstat(handle.fileno()).st_size > limit:
            raise too_big  # known from its size: not one byte is read
        try:
            data = handle.read(limit + 1 if limit else -1)
        except OSError as err:
            raise InputError(f"{path}: cannot read the {what}: {err.strerror}") from err
    if limit and len(data) > limit:
        raise too_big
    return data


MANIFEST = ".dispatch-files"  # in each output folder: what dispatch wrote there, with hashes


def _digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _same(a: Path, b: Path) -> bool:
    try:
        return a.resolve() == b.resolve() or (a.exists() and b.exists() and os.path.samefile(a, b))
    except OSError:
        return False


def _private(path: Path) -> bool:
    """Owned by whoever runs dispatch and writable by nobody else: what dispatch itself writes."""
    info = path.lstat()
    return info.st_uid == os.geteuid() and not info.st_mode & 0o022


class OutputFolder:
    """A folder dispatch writes into. It creates, replaces or removes only files it can prove it
    wrote (listed in the folder's manifest with their content's hash, and unchanged since),
    never writes through a symlink, never writes over one of the run's inputs, and creates
    every file private (0600): previews hold addresses and personal unsubscribe links."""

    def __init__(
        self, folder: Path, *, inputs: Iterable[Path] = (), what: str = "--out", public: bool = False
    ) -> None:
        self.folder = folder
        self.public = public  # a web version for a web server to read: 0644 files in a 0755 folder
        self.what = what
        self.inputs = [p for p in inputs if p is not None]
        self.written: set[str] = set()
        try:
            if folder.exists() and not folder.is_dir():
                raise InputError(f"{folder}: is a file, not a folder; give {what} a folder")
            if not folder.is_dir():
                for made in private_folders(folder):  # whatever the umask: previews hold addresses
                    made.chmod(0o755 if public else 0o700)
        except OSError as err:
            raise InputError(f"{folder}: cannot create the folder ({what}): {err.strerror}") from err
        self._manifest: dict[str, str] = self._read_manifest()

    def _read_manifest(self) -> dict[str, str]:
        path = self.folder / MANIFEST
        try:
            if path.is_symlink() or not path.exists() or not _private(path):
                return {}  # a manifest someone else could have written vouches for nothing
            text = read_regular(path, "manifest", limit=200_000_000).decode("utf-8", "replace")
        except InputError:
            return {}
        entries = (line.split("  ", 1) for line in text.splitlines())
        return {name: digest for digest, name in (e for e in entries if len(e) == 2)}

    def _ours(self, name: str) -> bool:
        """The entry holds exactly what dispatch wrote there (a regular file, hash unchanged)."""
        path = self.folder / name
        digest = self._manifest.get(name)
        if digest is None or path.is_symlink() or not path.is_file() or not _private(path):
            return False
        try:
            return _digest(read_regular(path, "output")) == digest
        except InputError:
            return False

    def refuse_foreign(self, name: str) -> None:
        """InputError if writing ``name`` would replace an input, someone's file or a symlink."""
        path = self.folder / name
        if "/" in name or name.startswith(".") or not name or any(not c.isprintable() for c in name):
            raise InputError(f"{name!r}: not a plain file name for {self.what}")
        for source in self.inputs:
            if _same(path, source):
                raise InputError(f"{path}: is one of this run's inputs; choose another {self.what}")
        if path.is_symlink():
            raise InputError(f"{path}: is a symlink; dispatch never writes through one: remove it")
        if path.exists() and not self._ours(name):
            raise InputError(
                f"{path}: is not a file dispatch wrote (or was changed since); move it away or choose "
                f"another {self.what}"
            )

    def refuse_foreign_like(self, pattern: re.Pattern[str]) -> None:
        """Before anything is written: refuse if a foreign file has a name this run may write."""
        for entry in sorted(os.listdir(self.folder)):
            if pattern.fullmatch(entry) and not self._ours(entry):
                self.refuse_foreign(entry)

    def write(self, name: str, data: bytes) -> Path:
        """Write ``name`` atomically (a private temporary file renamed over it)."""
        self.refuse_foreign(name)
        path = self.folder / name
        try:
            fd, tmp = tempfile.mkstemp(prefix=".dispatch-", dir=self.folder)
            try:
                with os.fdopen(fd, "wb") as handle:
                    handle.write(data)
                    if self.public:
                        os.fchmod(handle.fileno(), 0o644)
                os.replace(tmp, path)  # replaces the directory entry: never follows a symlink
            except BaseException:
                with contextlib.suppress(OSError):
                    os.unlink(tmp)
                raise
        except OSError as err:
            raise InputError(f"{path}: cannot write it: {err.strerror}") from err
        self._manifest[name] = _digest(data)
        self.written.add(name)
        return path

    def remove_stale(self, pattern: re.Pattern[str]) -> None:
        """Remove the files an earlier run wrote here (matching ``pattern``) that this run did
        not write again, if they are still exactly as written."""
        for name in sorted(set(self._manifest) - self.written):
            if pattern.fullmatch(name) and self._ours(name):
                with contextlib.suppress(OSError):
                    (self.folder / name).unlink()
                del self._manifest[name]

    def close(self) -> None:
        """Save the manifest (entries for files that are gone are dropped)."""
        live = {n: d for n, d in self._manifest.items() if (self.folder / n).exists()}
        text = "".join(f"{digest}  {name}\n" for name, digest in sorted(live.items()))
        path = self.folder / MANIFEST
        if path.is_symlink():
            raise InputError(f"{path}: is a symlink; dispatch never writes through one: remove it")
        try:
            fd, tmp = tempfile.mkstemp(prefix=".dispatch-", dir=self.folder)
            with os.fdopen(fd, "w", encoding="utf-8") as handle:
                handle.write(text)
            os.replace(tmp, path)
        except OSError as err:
            raise InputError(f"{path}: cannot write it: {err.strerror}") from err

    @contextlib.contextmanager
    def stream(self, name: str) -> Iterator[Callable[[str], None]]:
        """Write ``name`` as text bit by bit (a long index); it replaces the old file at the end."""
        self.refuse_foreign(name)
        path = self.folder / name
        digest = hashlib.sha256()
        try:
            fd, tmp = tempfile.mkstemp(prefix=".dispatch-", dir=self.folder)
        except OSError as err:
            raise InputError(f"{path}: cannot write it: {err.strerror}") from err
        try:
            with os.fdopen(fd, "w", encoding="utf-8", newline="") as handle:

                def write(text: str) -> None:
                    digest.update(text.encode("utf-8"))
                    handle.write(text)

                yield write
            os.replace(tmp, path)
        except OSError as err:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise InputError(f"{path}: cannot write it: {err.strerror}") from err
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise
        self._manifest[name] = digest.hexdigest()
        self.written.add(name)
