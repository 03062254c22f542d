"""What a Postfix relay's log says it did with each message, by Message-ID.

Postfix writes, for every message it reads, ``postfix/cleanup[PID]: QUEUEID: message-id=<…>``.
That line alone does not prove the message was kept: cleanup logs it while the message data
is still arriving, so a client that leaves before the final dot leaves one behind too
(``smtpd[PID]: lost connection after DATA``). So each queue ID is followed to its outcome:

* **kept**: the queue manager took it (``qmgr: QUEUEID: from=<…>``), a delivery agent tried it
  (``QUEUEID: to=<…>, … status=…``), or it was removed from the queue; and also when nothing in the
  log says otherwise (a log filtered down to cleanup lines, or one that ends there): never
  "dropped" without proof;
* **dropped**: its smtpd session was lost or timed out during the data (``lost connection after
  DATA``), or the relay refused it at the final dot (header or body checks, a milter).

Lines are read from syslog files (``Dec  7 10:39:40 host postfix/cleanup[123]: …``, or RFC 3339
times as rsyslog writes them), Postfix's own ``maillog_file`` (``Dec 07 10:39:40 host …``), with or
without a host name; gzip, bzip2 and xz files (rotated logs) are read as they are. A line that is
not a log line (binary junk, one longer than :data:`MAX_LINE`) is skipped and counted. Times
without a zone are this machine's local time; times without a year are in the last twelve months.

Each file covers the time from its first line to its last (a line stamped in whole seconds counts
for that whole second); what several files cover is the union of those spans (:func:`covered`),
never the time from the earliest line to the latest: a rotated file left out (``maillog.1``
between ``maillog.2.gz`` and ``maillog``) leaves a hole in which the log proves nothing.
"""

from __future__ import annotations

import bz2
import gzip
import itertools
import lzma
import math
import re
import time
import zlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import IO, Protocol

from dispatch.errors import InputError
from dispatch.files import open_regular

MAX_LINE = 16_384  # bytes: syslog's own limit is 8 KB; anything longer is not a log line
FIRST_LINES = 1000  # lines read to find where a file starts in time (to put files in order)
_QID = r"[0-9A-Za-z]{5,20}"
_LINE = re.compile(
    r"(?:<\d{1,3}>)?(?P<time>\d{4}-\d\d-\d\d[T ]\d\d:\d\d:\d\d(?:\.\d{1,9})?(?:Z|[+-]\d\d:?\d\d)?"
    r"|[A-Z][a-z]{2} [ \d]?\d \d\d:\d\d:\d\d(?:\.\d{1,9})?)"
    r" +(?:(?P<host>[^\s\[\]]+) +)?(?P<program>[^\s\[\]:]+)\[(?P<pid>\d{1,10})\]: (?P<text>.*)"
)
_MESSAGE_ID = re.compile(rf"(?P<qid>{_QID}): message-id=(?P<mid>.*)")
_KEPT = re.compile(rf"(?P<qid>{_QID}): (?:from=<|removed$|to=<.*, status=|hold: |discard: )")
_REFUSED = re.compile(rf"(?P<qid>{_QID}): (?:reject: (?:header|body)|milter-reject: END-OF-MESSAGE)")
_CLIENT = re.compile(rf"(?P<qid>{_QID}): client=")
_CUT = re.compile(r"(?:lost connection|timeout) after DATA\b")
_EDGE = re.compile(r"(?:dis)?connect from ")
_MONTHS = {m: n for n, m in enumerate(("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct",
                                         "Nov", "Dec"), 1)}  # fmt: skip
_BROKEN = (EOFError, OSError, zlib.error, lzma.LZMAError, ValueError)  # gzip.BadGzipFile is an OSError


@dataclass
class _Transaction:
    """One queue ID's message, as its lines arrive."""

    kept: bool = False  # the queue manager or a delivery agent had it
    cut: bool = False  # its client left (or timed out) before the final dot
    refused: bool = False  # refused at the final dot

    def dropped(self) -> bool:
        return not self.kept and (self.cut or self.refused)

    def how(self) -> str:
        """What became of it, as :attr:`Sighting.how` names it."""
        if self.kept:
            return "queued"
        return "cut" if self.cut else "refused" if self.refused else "read"


@dataclass(frozen=True)
class Sighting:
    """One message the relay read with a given Message-ID."""

    queue_id: str
    where: str  # file:line of its cleanup line
    when: float | None  # that line's time (epoch seconds)
    kept: bool  # False only with proof that the relay dropped or refused it
    how: str  # queued, read (and nothing after it), cut (before the final dot) or refused

    def said(self) -> str:
        """What the relay did with it, in words: ``queued it as 4AAA1 (maillog:3)``."""
        read = f"read it as {self.queue_id} ({self.where})"
        return {
            "queued": f"queued it as {self.queue_id} ({self.where})",
            "read": f"{read}, and nothing in the log says it dropped it",
            "cut": f"{read} but dropped it: the connection ended before the final dot",
            "refused": f"{read} but refused it at the final dot",
        }[self.how]


@dataclass
class LogFile:
    """One file read, and what span of time it covers."""

    path: Path
    lines: int = 0
    postfix_lines: int = 0
    skipped: int = 0  # not log lines: binary junk, or longer than MAX_LINE
    first: float | None = None
    last: float | None = None
    coarse: bool = False  # whole-second times


@dataclass
class RelayLog:
    """Everything read from the files, in time order."""

    files: list[LogFile]
    sightings: dict[str, list[Sighting]] = field(default_factory=dict)

    @property
    def first(self) -> float | None:
        return min((f.first for f in self.files if f.first is not None), default=None)

    @property
    def last(self) -> float | None:
        return max((f.last for f in self.files if f.last is not None), default=None)

    @property
    def resolution(self) -> float:
        """How precise its times are: 1 second when a file gives whole seconds."""
        return 1.0 if any(f.coarse for f in self.files) else 0.0

    def seen(self, message_id: str) -> list[Sighting]:
        return self.sightings.get(message_id.strip(), [])


@dataclass(frozen=True)
class Span:
    """A continuous stretch of time the files cover: [start, end), and the files at its ends."""

    start: float
    end: float
    first: LogFile  # the file whose first line starts it
    last: LogFile  # the file whose last line ends it


def covered(files: list[LogFile]) -> list[Span]:
    """The stretches of time the files cover, in order, each as long as the files leave no hole."""
    spans: list[Span] = []
    timed = [(f, f.first, f.last) for f in files if f.first is not None and f.last is not None]
    for log, first, last in sorted(timed, key=lambda t: (t[1], t[2])):
        # a line in whole seconds covers its whole second; another the instant it names
        start = float(math.floor(first)) if log.coarse else first
        end = float(math.floor(last)) + 1.0 if log.coarse else math.nextafter(last, math.inf)
        if spans and start <= spans[-1].end:  # overlaps or touches the stretch so far
            if end > spans[-1].end:
                spans[-1] = Span(spans[-1].start, end, spans[-1].first, log)
            continue
        spans.append(Span(start, end, log, log))
    return spans


def hole(spans: list[Span], earliest: float, latest: float) -> tuple[Span, Span] | None:
    """The first hole between two stretches in which [earliest, latest] lies partly, or None."""
    for before, after in itertools.pairwise(spans):
        if before.end <= latest and after.start > earliest:
            return before, after
    return None


def read_relay_log(
    paths: Iterable[Path], wanted: set[str] | None = None, now: float | None = None
) -> RelayLog:
    """Read Postfix log files (any order: they are put in time order), keeping what it says about
    the Message-IDs in ``wanted`` (None: all of them). InputError naming the file when one cannot
    be read (missing, not a regular file, a cut-off or damaged archive), or when no file holds a
    single Postfix line."""
    unique: list[Path] = []
    for path in paths:
        if not any(_same(path, seen) for seen in unique):
            unique.append(path)
    now = time.time() if now is None else now
    reader = _Reader(wanted, now)
    order = sorted(unique, key=lambda p: _start(p, now) or float("inf"))
    files = [reader.read(path) for path in order]
    if not any(f.postfix_lines for f in files):
        names = ", ".join(str(p) for p in unique)
        raise InputError(
            f"{names}: no Postfix log line (like 'postfix/cleanup[123]: …: message-id=<…>') in "
            "it; give the relay's mail log (/var/log/mail.log, or its maillog_file)"
        )
    return RelayLog(files, reader.finish())


class _Reader:
    """Follows queue IDs and smtpd sessions across every line, in order."""

    def __init__(self, wanted: set[str] | None, now: float) -> None:
        self.wanted = wanted
        self.now = now
        self.queue: dict[tuple[str, str], _Transaction] = {}  # (host, queue ID) -> its message
        self.sessions: dict[tuple[str, str], _Transaction | None] = {}  # (host, smtpd pid) -> its message
        self.found: list[tuple[str, str, str, float | None, _Transaction]] = []

    def read(self, path: Path) -> LogFile:
        log = LogFile(path)
        for number, raw in _numbered(path):
            log.lines += 1
            if raw is None:
                log.skipped += 1
                continue
            match = _LINE.match(raw.decode("utf-8", "replace").rstrip("\r\n"))
            if match is None:
                log.skipped += 1
                continue
            when, coarse = _when(match["time"], self.now)
            if when is not None:
                log.first = when if log.first is None else min(log.first, when)
                log.last = when if log.last is None else max(log.last, when)
                log.coarse = log.coarse or coarse
            if "/" in match["program"]:
                log.postfix_lines += 1
                self._event(match, f"{path.name}:{number}", when)
        return log

    def _transaction(self, host: str, qid: str) -> _Transaction:
        return self.queue.setdefault((host, qid), _Transaction())

    def _event(self, match: re.Match[str], where: str, when: float | None) -> None:
        host, daemon, text = match["host"] or "", match["program"].rsplit("/", 1)[1], match["text"]
        if daemon == "cleanup" and (found := _MESSAGE_ID.match(text)):
            mid = found["mid"].strip()
            if self.wanted is None or mid in self.wanted:
                self.found.append((mid, found["qid"], where, when, self._transaction(host, found["qid"])))
        elif found := _KEPT.match(text):
            self._transaction(host, found["qid"]).kept = True
            if text.endswith(" removed"):
                self.queue.pop((host, found["qid"]), None)  # done with; a later reuse starts afresh
        elif found := _REFUSED.match(text):
            self._transaction(host, found["qid"]).refused = True
        elif daemon == "smtpd":
            self._session(host, match["pid"], text)

    def _session(self, host: str, pid: str, text: str) -> None:
        """An smtpd line: a new message in the session, the session cut during the data, or its
        start or end."""
        key = (host, pid)
        if found := _CLIENT.match(text):
            self.queue[(host, found["qid"])] = self.sessions[key] = _Transaction()
        elif _CUT.match(text):
            if (current := self.sessions.pop(key, None)) is not None:
                current.cut = True
        elif _EDGE.match(text):
            self.sessions.pop(key, None)

    def finish(self) -> dict[str, list[Sighting]]:
        sightings: dict[str, list[Sighting]] = {}
        for mid, qid, where, when, transaction in self.found:
            kept = not transaction.dropped()
            sightings.setdefault(mid, []).append(Sighting(qid, where, when, kept, transaction.how()))
        return sightings


def _when(text: str, now: float) -> tuple[float | None, bool]:
    """(epoch seconds, whether whole seconds only) of a log line's time; None when it names no
    real moment (a 31 February)."""
    coarse = "." not in text
    try:
        if text[0].isdigit():
            return datetime.fromisoformat(text).timestamp(), coarse
        month, day, clock = text.split()
        whole, _, fraction = clock.partition(".")
        hour, minute, second = (int(part) for part in whole.split(":"))
        year = time.localtime(now).tm_year
        for candidate in range(year, year - 5, -1):  # the latest year in which it is not ahead of now
            try:
                moment = datetime(candidate, _MONTHS[month], int(day), hour, minute, second).timestamp()
            except ValueError:  # 29 February in a year without one
                continue
            if moment <= now + 86_400:
                return moment + float("0." + (fraction or "0")), coarse
    except (ValueError, KeyError, IndexError, OverflowError):
        pass
    return None, coarse


def _numbered(path: Path) -> Iterator[tuple[int, bytes | None]]:
    """(line number, the line) for every line; None for a line over MAX_LINE (the rest of it is
    read past, never held). InputError naming the file if it cannot be read to its end."""
    with open_regular(path, "mail log") as handle:
        stream = _decompressed(path, handle)
        number = 0
        try:
            while line := stream.readline(MAX_LINE + 1):
                number += 1
                if len(line) > MAX_LINE and not line.endswith(b"\n"):
                    while (rest := stream.readline(MAX_LINE)) and not rest.endswith(b"\n"):
                        pass
                    yield number, None
                    continue
                yield number, line
        except _BROKEN as err:
            raise InputError(
                f"{path}: cannot be read past line {number} ({_why(err)}); nothing was changed: give an "
                "undamaged copy, or leave this file out"
            ) from err


class _Lines(Protocol):
    def readline(self, size: int = -1, /) -> bytes: ...


def _decompressed(path: Path, handle: IO[bytes]) -> _Lines:
    """The file's text, decompressed when its first bytes say it is an archive (gzip, bzip2, xz)."""
    head = handle.read(6)
    handle.seek(0)
    if head.startswith(b"\x28\xb5\x2f\xfd"):
        raise InputError(f"{path}: is compressed with zstd; decompress it first (zstd -d), then give that")
    if head.startswith(b"\x1f\x8b"):
        return gzip.GzipFile(fileobj=handle)
    if head.startswith(b"BZh"):
        return bz2.BZ2File(handle)
    if head.startswith(b"\xfd7zXZ\x00"):
        return lzma.LZMAFile(handle)
    return handle


def _why(err: BaseException) -> str:
    if isinstance(err, EOFError):
        return "the archive is cut short"
    return str(err) or type(err).__name__


def _start(path: Path, now: float) -> float | None:
    """When the file starts: its first line with a time, among its first lines (for ordering)."""
    try:
        for count, (_, raw) in enumerate(_numbered(path)):
            if count >= FIRST_LINES:
                return None
            match = _LINE.match(raw.decode("utf-8", "replace")) if raw else None
            if match is not None and (when := _when(match["time"], now)[0]) is not None:
                return when
    except InputError:
        return None  # reading it properly reports the problem
    return None


def _same(a: Path, b: Path) -> bool:
    try:
        return a.samefile(b)
    except OSError:
        return a == b
