"""MIME messages: one message per recipient, as wire bytes, built from parts made once.

Everything that is the same for every recipient is prepared once per issue: the constant
headers (folded by the stdlib's ``email.policy.SMTP``), the MIME skeleton, inline images and
attachments (base64), and the two text parts, quoted-printable encoded chunk by chunk. Per
recipient, only the values that differ are encoded and spliced in between the chunks (a
quoted-printable soft line break ends each chunk, so the pieces join into valid lines that
decode to exactly the personalised text), and To, Date, Message-ID and List-Unsubscribe are
written. Mostly non-Latin text is sent as base64 instead, encoded whole per recipient.

The result follows RFC 5322/2045/2046: CRLF line ends, no header line over 78 octets and no
body line over 76, non-ASCII headers as RFC 2047 encoded-words, ``multipart/alternative``
with text/plain first and text/html last (inside ``multipart/related`` with inline images,
inside ``multipart/mixed`` with attachments).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from email.headerregistry import Address
from email.utils import format_datetime

from dispatch.addresses import MAX_DISPLAY_NAME
from dispatch.compose.envelope import Returns
from dispatch.compose.headers import MAX_HEADER_LINE, MAX_LINE, fold, fold_mailbox, header_text, phrase_header
from dispatch.errors import ConfigError
from dispatch.unsubscribe.tokens import seal, unsubscribe_link

_ID_SAFE = re.compile(r"[^A-Za-z0-9.-]+")

QP_LINE = 76  # RFC 2045: encoded lines of at most 76 characters
_QP_PLAIN = re.compile(r"[!-<>-~](?:[ !-<>-~]*[!-<>-~])?")  # printable, no "=", no space at the ends


def _crlf(text: str) -> bytes:
    return text.replace("\r\n", "\n").replace("\n", "\r\n").encode()


def _dot_safe(encoded: bytes) -> bytes:
    """Quoted-printable with no line starting with "." (it is written ``=2E``), so a message
    needs no SMTP dot-stuffing and no line of it can end the DATA early. A line the two extra
    characters push past 76 is broken with a soft line break."""
    if not (encoded.startswith(b".") or b"\n." in encoded):
        return encoded
    out: list[bytes] = []
    todo = encoded.split(b"\r\n")
    todo.reverse()
    while todo:
        line = todo.pop()
        if line.startswith(b"."):
            line = b"=2E" + line[1:]
        if len(line) > QP_LINE:
            cut = QP_LINE - 1  # room for the "=" of the soft break
            while b"=" in line[cut - 2 : cut]:  # never inside an "=XX" escape
                cut -= 1
            todo.append(line[cut:])
            line = line[:cut] + b"="
        out.append(line)
    return b"\r\n".join(out)


class WireMessage(bytes):
    """A message as :class:`MessageFactory` built it: CRLF line ends, a final CRLF, and no line
    that starts with "." (quoted-printable writes it ``=2E``; header lines and base64 never do).
    SMTP sends such bytes as they are (RFC 5321 4.5.2), so the transport need not scan them."""


def _dot_free(*pieces: bytes) -> bool:
    """No line of the pieces, each starting a line, starts with "."."""
    return not any(p.startswith(b".") or b"\n." in p for p in pieces)


def _qp(text: str) -> bytes:
    """``text`` quoted-printable, ending where a next piece can start on a new line: after a
    real line break, or after a soft one (``=`` CRLF, which decodes to nothing). No line starts
    with "." (see :func:`_dot_safe`)."""
    if not text:
        return b""
    if len(text) < QP_LINE and text[0] != "." and text.isascii() and _QP_PLAIN.fullmatch(text):
        return text.encode("ascii") + b"=\r\n"  # a short plain value encodes to itself
    data = _crlf(text)
    encoded = binascii.b2a_qp(data, istext=True)
    if b"\r\n" not in data:  # without a line break to copy, b2a_qp ends its soft breaks with LF alone
        encoded = encoded.replace(b"\n", b"\r\n")
    if encoded.endswith(b"\r\n"):
        return _dot_safe(encoded)
    last = encoded.rfind(b"\n") + 1
    if len(encoded) - last >= QP_LINE:  # no room for the "=": break the line a little earlier
        cut = len(encoded) - 3
        cut = next(i for i in (cut, cut - 1, cut - 2) if b"=" not in encoded[i - 2 : i])
        encoded = encoded[:cut] + b"=\r\n" + encoded[cut:]
    return _dot_safe(encoded + b"=\r\n")


def _base64(data: bytes) -> bytes:
    return base64.encodebytes(data).replace(b"\n", b"\r\n")


def _mostly_non_latin(text: str) -> bool:
    """Quoted-printable would triple most bytes: base64 is shorter (and safer)."""
    data = text.encode()
    return (len(data) - len(text.encode("ascii", "ignore"))) * 3 > len(data)


class EncodedBody:
    """One text part (``plain`` or ``html``) encoded once: ``parts`` are literal text and slot
    numbers; :meth:`encode` gives a recipient's body from the text of each slot (``fills``)."""

    def __init__(self, parts: Sequence[str | int], *, subtype: str) -> None:
        self.parts = tuple(p for p in parts if p != "")
        literal = "".join(p for p in self.parts if isinstance(p, str))
        self.base64 = _mostly_non_latin(literal)
        self.head = (
            f'Content-Type: text/{subtype}; charset="utf-8"\r\n'
            f"Content-Transfer-Encoding: {'base64' if self.base64 else 'quoted-printable'}\r\n\r\n"
        ).encode()
        self._pieces: tuple[bytes | int, ...] = tuple(p if isinstance(p, int) else _qp(p) for p in self.parts)
        # _qp never starts a line with "." (nor does base64): the fills, encoded the same way, neither
        if not _dot_free(*(p for p in self._pieces if isinstance(p, bytes))):
            raise AssertionError("a quoted-printable piece starts a line with '.'")

    def text(self, fills: Sequence[str]) -> str:
        """The recipient's text, decoded (for previews and checks)."""
        return "".join(p if isinstance(p, str) else fills[p] for p in self.parts)

    def encode(self, fills: Sequence[str]) -> list[bytes]:
        """The recipient's encoded body, as pieces to join (ends with a line break)."""
        if self.base64:
            return [_base64(_crlf(self.text(fills)))]
        return [p if isinstance(p, bytes) else _qp(fills[p]) for p in self._pieces]


Body = tuple[EncodedBody, Sequence[str]]  # a body and the text of its slots for one recipient


@dataclass(frozen=True)
class Attachment:
    """A MIME part the same for every recipient (an inline image or an attachment), encoded once:
    its headers, a blank line and its base64 body (dispatch.compose.assets makes them)."""

    part: bytes

    def encode(self) -> bytes:
        """The part as it goes between two boundary lines."""
        return self.part if self.part.endswith(b"\r\n") else self.part + b"\r\n"


# --- the message ----------------------------------------------------------------------------

_DATE_CACHE: dict[int, bytes] = {}


def _date_header(date: datetime | None) -> bytes:
    """``Date:`` now (formatted once a second) or at ``date``."""
    if date is not None:
        return b"Date: " + format_datetime(date).encode() + b"\r\n"
    second = int(time.time())
    cached = _DATE_CACHE.get(second)
    if cached is None:
        _DATE_CACHE.clear()
        cached = _DATE_CACHE[second] = (
            b"Date: " + format_datetime(datetime.now().astimezone()).encode() + b"\r\n"
        )
    return cached


def _boundary_line(boundary: str, *, last: bool = False) -> bytes:
    return f"--{boundary}{'--' if last else ''}\r\n".encode("ascii")


@dataclass(frozen=True)
class MessageFactory:
    """Builds each recipient's message bytes; everything constant is prepared once."""

    sender: Address
    subject: str
    campaign: str
    list_id: str = ""
    list_name: str = ""
    reply_to: Address | None = None
    unsubscribe_url: str = ""
    unsubscribe_mailto: str = ""
    unsubscribe_secret: str = field(default="", repr=False)
    fingerprint: str = ""  # of the article: with the campaign, it fixes the MIME boundaries
    related: tuple[Attachment, ...] = ()  # inline images, referenced from the HTML as cid:
    attachments: tuple[Attachment, ...] = ()
    # DKIM: the signed message, given its bytes and the pieces they were joined from
    sign: Callable[[bytes, Sequence[bytes]], bytes] | None = field(default=None, repr=False)
    bounce_address: str = ""  # DISPATCH_BOUNCE_ADDRESS: MAIL FROM bounces+TOKEN@…, mailto bounces+u-TOKEN@…
    returns: Returns = field(init=False, repr=False)  # the envelope sender and the mailto
    _head: bytes = field(init=False, repr=False)
    _list_id: bytes = field(init=False, repr=False)
    _structure: bytes = field(init=False, repr=False)  # MIME headers up to the text part's headers
    _middle: bytes = field(init=False, repr=False)  # between the text part and the HTML part's headers
    _tail: bytes = field(init=False, repr=False)  # after the HTML part
    _dot_free: bool = field(init=False, repr=False)  # no constant line starts with "."

    def boundary(self, kind: str = "") -> str:
        """Fixed per campaign and content, so a dry run and a send produce the same bytes.

        ``=_`` can never occur in quoted-printable or base64 output, so no body can contain it.
        """
        digest = hashlib.blake2b(f"{self.campaign}\0{self.fingerprint}".encode(), digest_size=8)
        return f"=_dispatch_{digest.hexdigest()}{kind}"

    def __post_init__(self) -> None:
        if not (self.unsubscribe_url or self.unsubscribe_mailto):
            raise ConfigError("an unsubscribe URL or mailto address is required to build messages")
        object.__setattr__(self, "returns", Returns(
            self.sender.addr_spec, self.campaign, self.list_id, self.unsubscribe_secret,
            self.bounce_address, self.unsubscribe_mailto,
        ))  # fmt: skip
        head = fold_mailbox("From", self.sender.display_name, self.sender.addr_spec)
        if self.reply_to is not None:
            head += fold_mailbox("Reply-To", self.reply_to.display_name, self.reply_to.addr_spec)
        head += fold("Subject", self.subject)
        alternative, related, mixed = self.boundary("_a"), self.boundary("_r"), self.boundary("_m")
        top = alternative
        opening = b""
        closing = _boundary_line(alternative, last=True)
        if self.related:
            closing += b"".join(_boundary_line(related) + part.encode() for part in self.related)
            closing += _boundary_line(related, last=True)
            opening = _boundary_line(related) + _multipart("alternative", alternative) + b"\r\n" + opening
            top = related
        if self.attachments:
            closing += b"".join(_boundary_line(mixed) + part.encode() for part in self.attachments)
            closing += _boundary_line(mixed, last=True)
            kind = "related" if self.related else "alternative"
            opening = _boundary_line(mixed) + _multipart(kind, top) + b"\r\n" + opening
            top = mixed
        kind = "mixed" if self.attachments else "related" if self.related else "alternative"
        structure = b"MIME-Version: 1.0\r\n" + _multipart(kind, top) + b"\r\n"
        object.__setattr__(self, "_head", head)
        object.__setattr__(self, "_structure", structure + opening + _boundary_line(alternative))
        object.__setattr__(self, "_middle", _boundary_line(alternative))
        object.__setattr__(self, "_tail", closing)
        object.__setattr__(self, "_list_id", self._list_id_header())
        constant = (self._head, self._structure, self._middle, self._tail, self._list_id)
        object.__setattr__(self, "_dot_free", _dot_free(*constant))

    def _list_id_header(self) -> bytes:
        if not self.list_id:
            return b""
        return phrase_header("List-Id", header_text(self.list_name)[:MAX_DISPLAY_NAME].rstrip(), self.list_id)

    @property
    def domain(self) -> str:
        """The sender's domain: the right-hand side of every Message-ID."""
        return self.sender.domain

    def message_id(self, key: str, *, salt: str = "") -> str:
        """A Message-ID fixed by campaign and recipient (so a resend is recognisable)."""
        digest = hashlib.blake2b(f"{self.campaign}\0{key}\0{salt}".encode(), digest_size=10)
        left = _ID_SAFE.sub("-", self.campaign)[:24].strip(".-") or "issue"  # the header fits 78
        return f"<{left}.{digest.hexdigest()}@{self.domain}>"

    def _token(self, email: str) -> str:
        """The recipient's token; ``email`` is a validated wire address (Subscriber.email)."""
        return seal(self.unsubscribe_secret, self.list_id, email.lower())

    def unsubscribe_target(self, email: str) -> str:
        """The link shown in the body: the https URL when set, else the mailto."""
        if self.unsubscribe_url:
            return unsubscribe_link(self.unsubscribe_url, email, self._token(email))
        return self._mailto(email)

    def _mailto(self, email: str) -> str:
        return self.returns.unsubscribe_mailto(email)

    def _list_unsubscribe(self, email: str, link: str) -> bytes:
        uris: list[tuple[str, str]] = []
        if self.unsubscribe_url:
            uris.append(("DISPATCH_UNSUBSCRIBE_URL", f"<{link}>"))
        if self.returns.has_mailto:
            uris.append(("DISPATCH_UNSUBSCRIBE_MAILTO", f"<{self._mailto(email)}>"))
        # Written raw, never as encoded-words (RFC 2369, RFC 8058); folded between URIs only,
        # and each URI's line (the first with the field name) must stay within 998 octets.
        for i, (setting, uri) in enumerate(uris):
            if len(uri) + (len("List-Unsubscribe: ") if i == 0 else 1) + 1 > MAX_LINE:
                raise ConfigError(f"{setting} is too long for a mail header; shorten it")
        joined = ",\r\n ".join(u for _, u in uris).encode("ascii")
        first = joined.split(b"\r\n", 1)[0]
        gap = b"\r\n " if len(b"List-Unsubscribe: ") + len(first) > MAX_HEADER_LINE else b" "
        value = b"List-Unsubscribe:" + gap + joined + b"\r\n"
        if self.unsubscribe_url:
            value += b"List-Unsubscribe-Post: List-Unsubscribe=One-Click\r\n"
        return value

    def build(
        self,
        *,
        email: str,
        name: str,
        link: str,
        text: Body,
        html: Body,
        message_id: str,
        date: datetime | None = None,
    ) -> bytes:
        """The complete message for one recipient, CRLF line ends, ready for DATA: ``link`` is
        the recipient's :meth:`unsubscribe_target`, ``text`` and ``html`` its two bodies (each an
        :class:`EncodedBody` and the text of its slots)."""
        link = link if self.unsubscribe_url else ""
        pieces = [
            self._head,
            fold_mailbox("To", name, email),
            _date_header(date),
            b"Message-ID: " + message_id.encode("ascii") + b"\r\n",
            self._list_id,
            self._list_unsubscribe(email, link),
            self._structure,
            text[0].head,
            *text[0].encode(text[1]),
            self._middle,
            html[0].head,
            *html[0].encode(html[1]),
            self._tail,
        ]
        data = b"".join(pieces)
        return self.sign(data, pieces) if self.sign is not None else data

    def for_wire(self, data: bytes) -> bytes:
        """``data`` from :meth:`build` as a :class:`WireMessage` when no line of it can start
        with "." (a copy: the send path pays it, not the dry run). The recipient's header lines
        are folded here, each continuation starting with a space, and the bodies are encoded by
        _qp or base64 (see :class:`EncodedBody`), and DKIM-Signature folds so too; so only the
        constant parts, checked once, could hold such a line."""
        return WireMessage(data) if self._dot_free else data


def _multipart(kind: str, boundary: str) -> bytes:
    return f'Content-Type: multipart/{kind}; boundary="{boundary}"\r\n'.encode("ascii")
