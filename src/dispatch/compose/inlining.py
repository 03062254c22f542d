"""CSS inlining with premailer, remembered in the state folder.

premailer's output depends only on the document and on premailer itself, and an issue's
documents are the same on every run (the dry run, then the send, then a resumed send).
Inlining one costs ~0.14 s a process: importing premailer (which pulls in requests and
cssutils), then parsing the CSS; each further document, ~0.03 s. A remembered result costs a
file read. The cache is the state folder's ``cache`` folder, private like the journal.
Anything wrong with it (no room, read-only, damaged, someone else's file) only means premailer
runs again: it never stops a run.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import importlib.util
import logging
import os
import re
import stat
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from dispatch.errors import TemplateError
from dispatch.files import private_folders

FOLDER = "cache"
KEEP = 32  # documents remembered (a few issues in a few languages); the oldest go first
_MAGIC = "dispatch inlined css 2"  # the first line of a cache file, with the body's digest
_PACKAGES = ("premailer", "cssutils", "lxml", "cssselect")  # what the output depends on
_MARKER = "cachednonce0"  # stands for a render's token nonce in the cache (12 characters, like it)
_MARKERS = re.compile(_MARKER, re.IGNORECASE)
_ENTRY = re.compile(r"[0-9a-f]{64}\.html")  # a cache entry: the key, hex
_TEMPORARY = re.compile(r"\.inlined-[^/]+\.tmp")  # being written (or left by a killed run)
# No network; ``strip_important=False`` keeps ``!important`` in the ``@media`` rules left in
# ``<style>``, so the phone layout can still beat the inlined desktop widths; rules whose
# selector has a pseudo-class (but :first-child, :last-child, :nth-child) stay in ``<style>``
# too (premailer's default, which dispatch.compose.slots relies on).
_OPTIONS = {
    "allow_network": False,
    "strip_important": False,
    "disable_validation": True,
    "remove_unset_properties": True,
    "exclude_pseudoclasses": True,
}


def inline(document: str) -> str:
    """premailer's inlined document, with a doctype when premailer left none: what dispatch
    sends for a rendered HTML document."""
    inlined = _premailer(document)
    return inlined if "<!doctype" in inlined[:200].lower() else "<!DOCTYPE html>\n" + inlined


def _premailer(document: str) -> str:
    """Inline the CSS of one document with premailer (``_OPTIONS``), warnings kept quiet."""
    from premailer import Premailer  # noqa: PLC0415 - heavy (lxml, cssutils): only when needed

    try:
        return str(
            Premailer(
                document,
                cssutils_logging_handler=logging.NullHandler(),
                cssutils_logging_level=logging.CRITICAL,
                **_OPTIONS,
            ).transform()
        )
    except Exception as err:  # premailer wraps lxml/cssutils failures in many types
        raise TemplateError(f"inlining the CSS failed: {err}") from err


def _versions() -> str:
    """Which premailer, cssutils, lxml and cssselect are installed: the names of their
    ``*.dist-info`` folders beside them (found without importing them or importlib.metadata,
    which would cost ~13 ms of a send's start-up); importlib.metadata only for an odd layout."""
    found = []
    for name in _PACKAGES:
        spec = importlib.util.find_spec(name)
        folder = Path(spec.origin).parent.parent if spec is not None and spec.origin else None
        prefix = f"{name}-"
        infos = sorted(
            entry for entry in (_listing(folder) if folder is not None else ())
            if entry.lower().startswith(prefix) and entry.endswith(".dist-info")
        )  # fmt: skip
        found.append(infos[0] if len(infos) == 1 else f"{name} {_metadata_version(name)}")
    return "; ".join(found)


@functools.cache
def _listing(folder: Path) -> tuple[str, ...]:
    try:
        return tuple(os.listdir(folder))
    except OSError:
        return ()


def _metadata_version(name: str) -> str:
    from importlib import metadata  # noqa: PLC0415 - slow to import: only for an odd layout

    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return "?"


def cache_key(document: str, work: str = "") -> str:
    """The document, premailer's options, the versions of Python and of what premailer uses,
    and what was done with premailer's output (``work``, a version of it), hashed."""
    digest = hashlib.sha256()
    for part in (_MAGIC, sys.version.split()[0], _versions(), repr(sorted(_OPTIONS.items())), work):
        digest.update(part.encode() + b"\0")
    digest.update(document.encode("utf-8", "surrogatepass"))
    return digest.hexdigest()


def _read(path: Path) -> str | None:
    """A cached result, or None: missing, not a private regular file of ours, or damaged."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError:
        return None
    with os.fdopen(fd, "rb") as handle:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode) or info.st_uid != os.geteuid() or info.st_mode & 0o077:
            return None
        data = handle.read()
    head, _, body = data.partition(b"\n")
    if head != f"{_MAGIC} {hashlib.sha256(body).hexdigest()}".encode():
        return None  # cut short or changed
    return body.decode("utf-8", "surrogatepass")


def _write(folder: Path, path: Path, inlined: str) -> None:
    """Remember a result (atomically, private); forget the oldest beyond KEEP. Never raises."""
    body = inlined.encode("utf-8", "surrogatepass")
    head = f"{_MAGIC} {hashlib.sha256(body).hexdigest()}\n".encode()
    try:
        if folder.is_symlink():
            return  # never write through one
        private_folders(folder)  # the state folder too, if this makes it: private, as the journal does
        fd, temporary = tempfile.mkstemp(dir=folder, prefix=".inlined-", suffix=".tmp")  # 0600
        try:
            with os.fdopen(fd, "wb") as handle:
                handle.write(head + body)
            os.replace(temporary, path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(temporary)
            raise
        _prune(folder)
    except OSError:
        return  # a full disk or a read-only state folder: the run goes on without the cache


def _prune(folder: Path) -> None:
    """Forget all but the KEEP most recently used entries, and temporary files a killed run
    left (over an hour old). Only names this module writes are touched: anything else someone
    put in the folder stays."""
    entries, now = [], time.time()
    for entry in folder.iterdir():
        info = entry.lstat()
        if _ENTRY.fullmatch(entry.name):
            entries.append((info.st_mtime, entry))
        elif _TEMPORARY.fullmatch(entry.name) and now - info.st_mtime > 3600:
            entry.unlink(missing_ok=True)
    for _, old in sorted(entries, reverse=True)[KEEP:]:
        old.unlink(missing_ok=True)


def remembered(
    document: str,
    cache: Path | None,
    nonce: str,
    work: Callable[[str], str],
    *,
    write: bool = True,
    kind: str = "",
) -> str:
    """``work(document)`` (premailer's work on it, and what ``kind`` of work: its version),
    from ``cache`` (a folder) when it was done before, else done now and remembered there
    (unless ``write`` is false).

    ``nonce`` is the random part of this process's slot tokens (:mod:`dispatch.compose.values`); the
    cache keeps documents with it replaced by a fixed marker, so the same issue finds its
    entry on every run. A document that already holds the marker is never cached: the marker
    must stand for the tokens and nothing else, or text could turn into a slot."""
    if cache is None or not nonce or _MARKER in document.lower():
        return work(document)
    tokens = re.compile(re.escape(nonce), re.IGNORECASE)
    path = cache / f"{cache_key(tokens.sub(_MARKER, document), kind)}.html"
    found = _read(path)
    if found is not None:
        with contextlib.suppress(OSError):
            os.utime(path)  # recently used: kept when the oldest are forgotten
        return _MARKERS.sub(nonce, found)
    done = work(document)
    if write:
        _write(cache, path, tokens.sub(_MARKER, done))
    return done
