"""Reading a relay's replies strictly, on an ``smtplib.SMTP`` connection.

``smtplib`` takes a multi-line reply's code from its last line and never looks at what else the
relay has sent. dispatch needs more before it lets a message go: every line of a reply must
carry the same code, each reply must be the one its command calls for, and nothing may have
arrived that no command asked for (an extra reply would shift every later one onto the wrong
command). Whatever breaks that is a protocol error: the caller drops the connection.
"""

from __future__ import annotations

import io
import smtplib
import ssl
from collections.abc import Sequence
from typing import NamedTuple, cast

MAX_LINE = 8192  # bytes in one reply line (smtplib's own limit)
MAX_LINES = 100  # lines in one reply
# The replies that let a transaction go on (RFC 5321 §4.3.2); 251 and 252 accept a recipient.
EXPECTED = {"MAIL": (250,), "RCPT": (250, 251, 252), "DATA": (354,)}
STAGES = tuple(EXPECTED)


class Reply(NamedTuple):
    """One reply: its code, its lines' text joined, and what is wrong with it ("" if nothing).
    (A named tuple: four are read for every message, and a frozen dataclass costs more to make.)"""

    code: int
    text: str
    problem: str = ""

    def accepts(self, stage: str) -> bool:
        """Whether this is the reply that lets ``stage`` go on."""
        return not self.problem and self.code in EXPECTED[stage]

    @property
    def refusal(self) -> bool:
        return not self.problem and self.code // 100 in (4, 5)


def _file(smtp: smtplib.SMTP) -> io.BufferedReader:
    """The connection's buffered reader (smtplib's own, made as smtplib makes it)."""
    if smtp.file is None:
        if smtp.sock is None:
            raise smtplib.SMTPServerDisconnected("not connected")
        smtp.file = smtp.sock.makefile("rb")
    return cast("io.BufferedReader", smtp.file)


def read_reply(smtp: smtplib.SMTP) -> Reply:
    """The next reply, each line checked: ``ddd-text`` lines up to a last ``ddd text`` (or just
    ``ddd``), every one with the same code, 2xx to 5xx. A connection that ends or fails raises
    (``SMTPServerDisconnected`` or ``OSError``), as smtplib does."""
    file = smtp.file or _file(smtp)
    code, texts = 0, []
    while True:
        line = file.readline(MAX_LINE + 1)
        if not line:
            raise smtplib.SMTPServerDisconnected("Connection unexpectedly closed")
        body = line.rstrip(b"\r\n")
        digits, separator = body[:3], body[3:4]
        texts.append(body[4:].decode("utf-8", "replace").strip())
        if len(line) > MAX_LINE:
            return Reply(-1, _joined(texts), f"a reply line over {MAX_LINE} bytes")
        if not (len(digits) == 3 and digits.isdigit() and digits[:1] in b"2345" and separator in b" -"):
            return Reply(-1, body.decode("utf-8", "replace"), "not an SMTP reply")
        if code and int(digits) != code:
            return Reply(code, _joined(texts), f"a reply whose lines disagree ({code}, then {int(digits)})")
        code = int(digits)
        if separator != b"-":
            return Reply(code, texts[0] if len(texts) == 1 else _joined(texts))
        if len(texts) >= MAX_LINES:
            return Reply(code, _joined(texts), f"a reply of more than {MAX_LINES} lines")


def _joined(texts: list[str]) -> str:
    return " ".join(t for t in texts if t)


def unread(smtp: smtplib.SMTP) -> bytes:
    """What the relay has sent that was not read yet (b"": nothing). Never waits: what it finds
    was there already, read with the replies before it or arrived since; it stays unread."""
    sock = smtp.sock
    if sock is None:
        return b""
    file = smtp.file or _file(smtp)
    timeout = sock.gettimeout()
    sock.settimeout(0.0)
    try:
        return file.peek(1)
    except (BlockingIOError, ssl.SSLWantReadError):
        return b""  # nothing there
    except OSError:
        return b""  # a broken connection: the next read says so
    finally:
        sock.settimeout(timeout)


def first_line(data: bytes) -> str:
    """The first line of what a relay sent, decoded (not yet made safe to show)."""
    return data.split(b"\n", 1)[0].strip().decode("utf-8", "replace")


def out_of_place(replies: Sequence[Reply]) -> str:
    """Why these replies to MAIL, RCPT and DATA cannot be right ("" when they can be). Each must
    be the reply its command calls for, until one is a refusal; after a refusal only refusals
    may follow, or a 354 to DATA (RFC 5321 §3.3 lets a relay open the data of a transaction it
    has no recipient for: then no data is sent)."""
    refused = False
    for stage, reply in zip(STAGES, replies, strict=False):
        if reply.problem:
            return f"{reply.problem}, to {stage}{_said(reply)}"
        if refused and not (reply.refusal or (stage == "DATA" and reply.code == 354)):
            return f"{reply.code} to {stage} after a refusal{_said(reply)}"
        if not refused and not reply.accepts(stage):
            if not reply.refusal:
                return f"{reply.code} to {stage}{_said(reply)}"
            refused = True
    return ""


def _said(reply: Reply) -> str:
    return ": " + " ".join(part for part in (str(reply.code) * (reply.code > 0), reply.text) if part)


def first_refusal(replies: Sequence[Reply]) -> tuple[str, Reply] | None:
    """The first command refused and its reply (None: MAIL, RCPT and DATA all accepted)."""
    for stage, reply in zip(STAGES, replies, strict=False):
        if not reply.accepts(stage):
            return stage, reply
    return None
