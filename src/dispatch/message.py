"""MIME messages: one ``multipart/alternative`` message per recipient, as wire bytes.

Everything that is the same for every recipient (From, Subject, Reply-To, the boundary) is
folded once per issue with the stdlib's ``email.policy.SMTP``; the per-recipient step only
folds ``To``, fills in Date, Message-ID and List-Unsubscribe, and encodes the two bodies with
C-speed codecs (quoted-printable, or base64 for mostly non-Latin text). The result follows
RFC 5322/2045/2046: CRLF line ends, no line over 78 octets in headers or 76 in bodies,
non-ASCII headers as RFC 2047 encoded-words, text/plain first and text/html last.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import re
from dataclasses import dataclass, field
from datetime import datetime
from email import policy
from email.headerregistry import Address
from email.utils import format_datetime
from urllib.parse import quote

from dispatch.errors import ConfigError

_ID_SAFE = re.compile(r"[^A-Za-z0-9.-]+")
_FOLD = policy.SMTP


MAX_HEADER_LINE = 78  # RFC 5322's recommendation; 998 is the hard limit no line may pass
MAX_LINE = 998
MAX_DISPLAY_NAME = 200
ENCODED_WORD_BYTES = 42  # base64 of 42 bytes is 56 characters: a 68-character encoded-word
FOLD_SEPARATOR = "\r\n "
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]+")


def header_text(value: str) -> str:
    """A header value with every control character and line break turned into a space."""
    return " ".join(_CONTROL.sub(" ", value).split())


def _plain(text: str) -> bool:
    """Printable ASCII with nothing an RFC 2047 decoder would read as an encoded-word."""
    return text.isascii() and "=?" not in text


def _encoded_words(text: str) -> list[str]:
    """``text`` as RFC 2047 "B" encoded-words of 68 characters at most (the limit is 75), each
    holding whole characters, decoding back to exactly ``text``."""
    words: list[bytes] = []
    chunk = b""
    for char in text:
        data = char.encode()
        if chunk and len(chunk) + len(data) > ENCODED_WORD_BYTES:
            words.append(chunk)
            chunk = b""
        chunk += data
    words.append(chunk)
    return [f"=?utf-8?b?{base64.b64encode(w).decode('ascii')}?=" for w in words]


def _fits(folded: str) -> bool:
    """Folded by the stdlib within 78 octets a line, and with no encoded-word of its own (the
    stdlib makes over-long ones for words it cannot fold)."""
    return "=?" not in folded and max(map(len, folded.split("\r\n"))) <= MAX_HEADER_LINE


def fold(name: str, value: str) -> bytes:
    """An unstructured header (Subject) as wire bytes, folded; never more than one header.

    Plain ASCII is folded by the stdlib; anything else (non-ASCII text, a word too long to fold,
    text that merely looks like an encoded-word such as ``=?UTF-8?Q?=0A?=``) is encoded here, so
    it stays literal text and no line passes 78 octets.
    """
    text = header_text(value)
    if _plain(text):
        folded: str = _FOLD.fold(name, _FOLD.header_factory(name, text))
        if _fits(folded):
            return folded.encode("ascii")
    return f"{name}: {FOLD_SEPARATOR.join(_encoded_words(text))}\r\n".encode("ascii")


def fold_mailbox(name: str, display_name: str, addr_spec: str) -> bytes:
    """An address header with one mailbox, its display name quoted or encoded as needed (and
    cut to MAX_DISPLAY_NAME characters: the list reports longer names as it reads them)."""
    display = header_text(display_name)[:MAX_DISPLAY_NAME].rstrip()
    if _plain(display):
        folded: str = _FOLD.fold(name, str(Address(display_name=display, addr_spec=addr_spec)))
        if _fits(folded):
            return folded.encode("ascii")
    if not display:  # never reached for a valid address; kept so the function is total
        return f"{name}: {addr_spec}\r\n".encode("ascii")
    words = _encoded_words(display)
    last = f"{words[-1]} <{addr_spec}>"
    if len(last) + 1 > MAX_HEADER_LINE or (len(words) == 1 and len(name) + 2 + len(last) > MAX_HEADER_LINE):
        last = f"{words[-1]}{FOLD_SEPARATOR}<{addr_spec}>"
    return f"{name}: {FOLD_SEPARATOR.join([*words[:-1], last])}\r\n".encode("ascii")


def encode_body(text: str) -> tuple[bytes, bytes]:
    """(Content-Transfer-Encoding, encoded CRLF body) for a UTF-8 text part."""
    data = text.replace("\r\n", "\n").replace("\n", "\r\n").encode()
    non_ascii = sum(1 for b in data if b > 0x7F) if len(data) < 4096 else _non_ascii(data)
    if non_ascii * 3 > len(data):
        return b"base64", base64.encodebytes(data).replace(b"\n", b"\r\n")
    encoded = binascii.b2a_qp(data, istext=True)
    return b"quoted-printable", encoded if encoded.endswith(b"\r\n") else encoded + b"\r\n"


def _non_ascii(data: bytes) -> int:
    return len(data) - len(data.decode("utf-8").encode("ascii", "ignore"))


def unsubscribe_token(secret: str, email: str) -> str:
    """A short, hard-to-forge token for one address (HMAC-SHA256, 128 bits, URL-safe).

    The unsubscribe endpoint recomputes it from the same DISPATCH_UNSUBSCRIBE_SECRET.
    """
    digest = hmac.new(secret.encode(), email.lower().encode(), hashlib.sha256).digest()[:16]
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


def unsubscribe_link(template: str, email: str, secret: str = "") -> str:
    """An unsubscribe URL or mailto with ``{email}`` (percent-encoded) and ``{token}`` filled in."""
    link = template.replace("{email}", quote(email, safe="@"))
    return link.replace("{token}", unsubscribe_token(secret, email)) if "{token}" in link else link


@dataclass(frozen=True)
class MessageFactory:
    """Builds each recipient's message bytes; constant headers are prepared once."""

    sender: Address
    subject: str
    campaign: str
    reply_to: Address | None = None
    unsubscribe_url: str = ""
    unsubscribe_mailto: str = ""
    unsubscribe_secret: str = field(default="", repr=False)
    fingerprint: str = ""  # of the article: with the campaign, it fixes the MIME boundary
    _head: bytes = field(init=False, repr=False)

    @property
    def boundary(self) -> str:
        """Fixed per campaign and content, so a dry run and a send produce the same bytes.

        ``=_`` can never occur in quoted-printable or base64 output, so no body can contain it.
        """
        digest = hashlib.blake2b(f"{self.campaign}\0{self.fingerprint}".encode(), digest_size=8)
        return "=_dispatch_" + digest.hexdigest()

    def __post_init__(self) -> None:
        if not (self.unsubscribe_url or self.unsubscribe_mailto):
            raise ConfigError("an unsubscribe URL or mailto address is required to build messages")
        head = fold_mailbox("From", self.sender.display_name, self.sender.addr_spec)
        if self.reply_to is not None:
            head += fold_mailbox("Reply-To", self.reply_to.display_name, self.reply_to.addr_spec)
        head += fold("Subject", self.subject)
        object.__setattr__(self, "_head", head)

    @property
    def domain(self) -> str:
        """The sender's domain: the right-hand side of every Message-ID."""
        return self.sender.domain

    def message_id(self, key: str, *, salt: str = "") -> str:
        """A Message-ID fixed by campaign and recipient (so a resend is recognisable)."""
        digest = hashlib.blake2b(f"{self.campaign}\0{key}\0{salt}".encode(), digest_size=10)
        left = _ID_SAFE.sub("-", self.campaign)[:24].strip(".-") or "issue"  # the header fits 78
        return f"<{left}.{digest.hexdigest()}@{self.domain}>"

    def unsubscribe_target(self, email: str) -> str:
        """The link shown in the body: the https URL when set, else the mailto."""
        if self.unsubscribe_url:
            return unsubscribe_link(self.unsubscribe_url, email, self.unsubscribe_secret)
        return self._mailto(email)

    def _mailto(self, email: str) -> str:
        mailto = unsubscribe_link(self.unsubscribe_mailto, email, self.unsubscribe_secret)
        mailto = mailto.removeprefix("mailto:")
        return "mailto:" + (mailto if "?" in mailto else mailto + "?subject=unsubscribe")

    def _list_unsubscribe(self, email: str) -> bytes:
        uris: list[tuple[str, str]] = []
        if self.unsubscribe_url:
            link = unsubscribe_link(self.unsubscribe_url, email, self.unsubscribe_secret)
            uris.append(("DISPATCH_UNSUBSCRIBE_URL", f"<{link}>"))
        if self.unsubscribe_mailto:
            uris.append(("DISPATCH_UNSUBSCRIBE_MAILTO", f"<{self._mailto(email)}>"))
        # Written raw, never as encoded-words (RFC 2369, RFC 8058); folded between URIs only,
        # and each URI's line (the first with the field name) must stay within 998 octets.
        for i, (setting, uri) in enumerate(uris):
            if len(uri) + (len("List-Unsubscribe: ") if i == 0 else 1) + 1 > 998:
                raise ConfigError(f"{setting} is too long for a mail header; shorten it")
        joined = ",\r\n ".join(u for _, u in uris).encode("ascii")
        first = joined.split(b"\r\n", 1)[0]
        gap = b"\r\n " if len(b"List-Unsubscribe: ") + len(first) > 78 else b" "  # fold, never split
        value = b"List-Unsubscribe:" + gap + joined + b"\r\n"
        if self.unsubscribe_url:
            value += b"List-Unsubscribe-Post: List-Unsubscribe=One-Click\r\n"
        return value

    def build(
        self,
        *,
        email: str,
        name: str,
        text: str,
        html: str,
        message_id: str,
        date: datetime | None = None,
    ) -> bytes:
        """The complete message for one recipient, CRLF line ends, ready for DATA."""
        when = format_datetime(date or datetime.now().astimezone())
        boundary = self.boundary.encode()
        parts = [
            self._head,
            fold_mailbox("To", name, email),
            b"Date: " + when.encode() + b"\r\n",
            b"Message-ID: " + message_id.encode() + b"\r\n",
            self._list_unsubscribe(email),
            b"MIME-Version: 1.0\r\n",
            b'Content-Type: multipart/alternative; boundary="' + boundary + b'"\r\n',
            b"\r\n",
        ]
        for subtype, body in ((b"plain", text), (b"html", html)):
            cte, encoded = encode_body(body)
            parts += [
                b"--" + boundary + b"\r\n",
                b"Content-Type: text/" + subtype + b'; charset="utf-8"\r\n',
                b"Content-Transfer-Encoding: " + cte + b"\r\n\r\n",
                encoded,
            ]
        parts.append(b"--" + boundary + b"--\r\n")
        return b"".join(parts)
