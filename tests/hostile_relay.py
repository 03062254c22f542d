"""A scripted SMTP relay for the hostile-relay tests: a small asyncio server on 127.0.0.1 that
speaks SMTP properly unless its script says otherwise, and records what it really received.

A script sees each event (the greeting, a command, the final dot) with the reply the relay would
normally give, and may answer with any raw text instead: a wrong code, several replies at once,
a reply sent before it is due, a multi-line reply whose lines disagree, words that are not a
reply at all. The relay's own state follows what it answered, as a real relay's would: the
first line's code decides (a DATA answered ``354`` opens the message data; any other answer
leaves it reading commands). So what it holds at the end is what such a relay would hold:

* complete messages (data ended by the final dot), each with its envelope and the reply the
  relay gave to that dot: "taken" when that reply's first line is a 2xx (the relay may have
  delivered it), "confirmed" when the reply was a single well-formed ``250`` line;
* stray lines: lines read as commands that are not commands (a message body sent where the
  relay opened no data), which must never happen.

Nothing here is a mock: dispatch talks SMTP over TCP to it exactly as it would to a relay.
"""

from __future__ import annotations

import asyncio
import re
import threading
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from types import TracebackType

GREETING = "220 relay.example.org ESMTP scripted\r\n"
_ADDRESS = re.compile(rb"<([^>]*)>")
_CODE = re.compile(r"^(\d{3})[ -]")


@dataclass(frozen=True)
class Event:
    """One thing the relay answers: ``verb`` is GREET, EHLO, HELO, MAIL, RCPT, DATA, DOT (the
    final dot), RSET, NOOP or QUIT. ``nth`` counts that verb over every session (from 1),
    ``in_session`` within this session; ``session`` numbers the connections (from 1)."""

    verb: str
    nth: int
    in_session: int
    session: int


# The raw text to answer with (CRLF-terminated lines), or None for the normal reply.
Script = Callable[[Event, str], str | None]


def table(replies: dict[tuple[str, int], str]) -> Script:
    """A script from a table: (verb, nth over all sessions) -> raw reply text."""
    return lambda event, _normal: replies.get((event.verb, event.nth))


@dataclass
class Delivered:
    """A complete message: its envelope, its data, and what the relay answered to its dot."""

    mail_from: str
    rcpts: list[str]
    data: bytes
    reply: str

    @property
    def taken(self) -> bool:
        """The relay's answer to the dot began with a 2xx: it may have delivered the message."""
        return self.reply[:1] == "2"

    @property
    def confirmed(self) -> bool:
        """The relay's first reply after the dot is a well-formed 250 (every line of it 250).
        Whatever it sends after that reply is an answer to no command."""
        for line in self.reply.split("\r\n"):
            if not line.startswith(("250-", "250 ")):
                return False
            if line[3] == " ":
                return True
        return False


@dataclass
class _Session:
    number: int
    counts: Counter[str] = field(default_factory=Counter)
    mail_from: str | None = None
    rcpts: list[str] = field(default_factory=list)
    data: bytearray | None = None  # not None while the relay reads message data


class HostileRelay:
    """Start with ``with HostileRelay(script) as relay:``; ``relay.env()`` gives the settings
    that reach it. ``pipelining`` decides whether EHLO offers PIPELINING."""

    def __init__(self, script: Script | None = None, *, pipelining: bool = True) -> None:
        self.script: Script = script or (lambda _event, _normal: None)
        self.pipelining = pipelining
        self.messages: list[Delivered] = []
        self.stray: list[bytes] = []
        self.unfinished: list[Delivered] = []  # data opened and never ended by a dot
        self.sessions = 0
        self.behind_dot = 0  # final dots that came with more behind them (the next commands)
        self.port = 0
        self._counts: Counter[str] = Counter()
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._server: asyncio.Server | None = None
        self._thread: threading.Thread | None = None

    # ------------------------------------------------------------------ what the relay holds

    def taken(self) -> Counter[str]:
        """For each address, how many complete messages the relay may have delivered to it."""
        found: Counter[str] = Counter()
        for item in self.messages:
            if item.taken:
                found.update(item.rcpts)
        return found

    def confirmed(self) -> Counter[str]:
        """For each address, how many complete messages the relay answered with a clean 250."""
        found: Counter[str] = Counter()
        for item in self.messages:
            if item.confirmed:
                found.update(item.rcpts)
        return found

    def env(self) -> dict[str, str]:
        return {
            "DISPATCH_SMTP_HOST": "127.0.0.1",
            "DISPATCH_SMTP_PORT": str(self.port),
            "DISPATCH_SMTP_SECURITY": "none",
            "DISPATCH_SMTP_TIMEOUT": "5",
        }

    # ------------------------------------------------------------------ running

    def __enter__(self) -> HostileRelay:
        ready = threading.Event()

        def run() -> None:
            loop = asyncio.new_event_loop()
            self._loop = loop
            self._server = loop.run_until_complete(asyncio.start_server(self._serve, "127.0.0.1", 0))
            self.port = int(self._server.sockets[0].getsockname()[1])
            ready.set()
            loop.run_forever()
            self._server.close()
            loop.run_until_complete(self._server.wait_closed())
            loop.close()

        self._thread = threading.Thread(target=run, name="hostile-relay", daemon=True)
        self._thread.start()
        if not ready.wait(10):
            raise RuntimeError("the scripted relay did not start")
        return self

    def __exit__(
        self, kind: type[BaseException] | None, value: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._loop is not None and self._thread is not None:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(10)

    # ------------------------------------------------------------------ the protocol

    def _answer(self, session: _Session, verb: str, normal: str) -> str:
        with self._lock:
            self._counts[verb] += 1
            nth = self._counts[verb]
        session.counts[verb] += 1
        event = Event(verb, nth, session.counts[verb], session.number)
        return self.script(event, normal) or normal

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with self._lock:
            self.sessions += 1
            session = _Session(self.sessions)
        try:
            if await self._say(writer, self._answer(session, "GREET", GREETING)):
                await self._converse(session, reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()
            if session.data is not None:
                with self._lock:
                    self.unfinished.append(
                        Delivered(session.mail_from or "", session.rcpts, bytes(session.data), "")
                    )

    async def _converse(
        self, session: _Session, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        """Answer line by line, in the order the lines came, until the client or the relay ends."""
        unread = b""
        while chunk := await reader.read(65536):
            unread += chunk
            while (end := unread.find(b"\n")) >= 0:
                line, unread = unread[: end + 1], unread[end + 1 :]
                if session.data is None:
                    reply = self._command(session, line)
                else:
                    if line == b".\r\n" and unread:
                        self.behind_dot += 1
                    reply = self._data_line(session, line)
                if reply and not await self._say(writer, reply):
                    return

    @staticmethod
    async def _say(writer: asyncio.StreamWriter, text: str) -> bool:
        """Write the reply in one piece; False when the relay hangs up after it (421, 221)."""
        writer.write(text.encode("utf-8", "surrogateescape"))
        await writer.drain()
        closing = any(line.startswith(("421", "221")) for line in text.split("\r\n"))
        return not closing

    def _data_line(self, session: _Session, line: bytes) -> str:
        assert session.data is not None
        if line != b".\r\n":
            session.data += line[1:] if line.startswith(b".") else line
            return ""
        reply = self._answer(session, "DOT", "250 2.0.0 Ok: queued\r\n")
        item = Delivered(session.mail_from or "", list(session.rcpts), bytes(session.data), reply)
        with self._lock:
            self.messages.append(item)
        session.data, session.mail_from, session.rcpts = None, None, []
        return reply

    def _command(self, session: _Session, line: bytes) -> str:
        verb = line[:4].decode("ascii", "replace").upper()
        found = _ADDRESS.search(line)
        address = found[1].decode("utf-8", "replace") if found else ""
        if verb in ("EHLO", "HELO"):
            extensions = ["relay.example.org", *(["PIPELINING"] if self.pipelining else []), "8BITMIME"]
            normal = "".join(
                f"250{' ' if n == len(extensions) - 1 else '-'}{e}\r\n" for n, e in enumerate(extensions)
            )
            return self._answer(session, verb, normal if verb == "EHLO" else "250 relay.example.org\r\n")
        if verb == "MAIL":
            reply = self._answer(session, verb, "250 2.1.0 Ok\r\n")
            session.mail_from = address if _positive(reply) else None
            session.rcpts = []
            return reply
        if verb == "RCPT":
            normal = (
                "250 2.1.5 Ok\r\n"
                if session.mail_from is not None
                else "503 5.5.1 Error: need MAIL command\r\n"
            )
            reply = self._answer(session, verb, normal)
            if _positive(reply) and session.mail_from is not None:
                session.rcpts.append(address)
            return reply
        if verb == "DATA":
            ready = session.mail_from is not None and session.rcpts
            normal = (
                "354 End data with <CR><LF>.<CR><LF>\r\n"
                if ready
                else "554 5.5.1 Error: no valid recipients\r\n"
            )
            reply = self._answer(session, verb, normal)
            if reply.startswith("354"):
                session.data = bytearray()
            return reply
        if verb in ("RSET", "NOOP", "QUIT"):
            if verb == "RSET":
                session.mail_from, session.rcpts = None, []
            return self._answer(session, verb, "221 2.0.0 Bye\r\n" if verb == "QUIT" else "250 2.0.0 Ok\r\n")
        with self._lock:
            self.stray.append(line)
        return "500 5.5.2 Error: command not recognized\r\n"


def _positive(reply: str) -> bool:
    found = _CODE.match(reply)
    return bool(found) and found[1][0] in "23"
