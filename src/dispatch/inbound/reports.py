"""One message that came back, understood: a bounce report, a complaint, a mailto unsubscribe,
an auto-reply, or anything else, with every clue to the reader it is about.

Standard reports are read with the standard library's ``email`` package: a delivery status
notification is ``multipart/report; report-type=delivery-status`` (RFC 3464) with one group
of fields per recipient (``Action``, ``Status``); a complaint is ``report-type=feedback-report``
(RFC 5965, ``Feedback-Type: abuse``). A bounce in no standard form (old qmail, some appliances)
is read by flufl.bounce, Mailman's bounce detectors. Nothing here trusts what it reads: clues
are only candidates until :mod:`dispatch.inbound.readers` proves them.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from email import message_from_bytes
from email.header import decode_header, make_header
from email.message import Message
from email.parser import HeaderParser
from email.policy import compat32
from email.utils import getaddresses
from enum import StrEnum

MAX_SIZE = 30_000_000  # bytes: a report quoting the largest message a relay takes, with room
MAX_PARTS = 500  # MIME parts looked at: a report has three or four
MAX_HEADER = 2000  # characters of one header value kept
_STATUS = re.compile(r"\b([245])\.(\d{1,3})\.(\d{1,3})\b")
_REPLY_CODE = re.compile(r"\b([245])\d\d\b")
# Permanent failures about the message or its sender, not the reader's address (RFC 3463: x.3.4
# too big, x.6.x content, x.7.x security and policy: unauthenticated, SPF/DKIM/DMARC, reverse
# DNS). One broken DNS record makes a provider refuse every reader there: these count like a
# soft bounce, so only a reader refused issue after issue is suppressed. 5.7.1 is also what a
# refused recipient gets ("Recipient address rejected: Access denied"): it is about the sender
# only when its words say so (spam, a block list, authentication).
_ABOUT_THE_SENDER = re.compile(r"^5\.(3\.4|6\.\d{1,3}|7\.(0|[2-9]|\d{2,3}))$")
_READER_WORDS = re.compile(  # ...unless they name the recipient ("Recipient address rejected: spam trap")
    r"recipient (address )?rejected|user unknown|no such (user|mailbox)|mailbox (unavailable|disabled)",
    re.IGNORECASE,
)
_SENDER_WORDS = re.compile(
    r"spam|block ?list|black ?list|blocked|spamhaus|\brbl\b|reputation|authenticat|\b(spf|dkim|dmarc)\b",
    re.IGNORECASE,
)
_HEADER_LINE = re.compile(rb"[!-9;-~]+:")  # a field name and its colon (RFC 5322 ftext)
_TO_HEADERS = ("Delivered-To", "X-Original-To", "Envelope-To", "X-Envelope-To", "X-Rcpt-To", "To", "Cc")
_AUTO_SUBJECT = re.compile(
    r"^\s*(auto(matic|matische)?[ _:-]*(reply|response|antwort|answer)|out of (the )?office|"
    r"autoreply|autorespon|abwesen|absence|r[ée]ponse automatique|vacation|away from)",
    re.IGNORECASE,
)
_BOUNCE_SUBJECT = re.compile(
    r"undeliver|delivery (status|failure|has failed|problem)|returned mail|failure notice|"
    r"non-?delivery|could not be delivered|mail delivery failed|delivery notification",
    re.IGNORECASE,
)
_DAEMONS = {"mailer-daemon", "postmaster", "mail-daemon", "mailer", "bounce", "bounces", "mdaemon"}


class Kind(StrEnum):
    """What a message that came back is."""

    HARD = "hard bounce"  # a permanent failure (5.x.x)
    SOFT = "soft bounce"  # a temporary one (4.x.x, delayed)
    COMPLAINT = "complaint"  # a reader marked it as spam (a feedback loop)
    UNSUBSCRIBE = "unsubscribe"  # a mailto unsubscribe
    AUTO_REPLY = "auto-reply"  # out of office, vacation, an autoresponder
    DELIVERED = "delivery notice"  # a report that says delivered, relayed or expanded
    OTHER = "other"  # a reader's reply, spam, anything else


class Unreadable(Exception):
    """A message that cannot be read as one (kept for a person, never lost)."""


@dataclass(frozen=True)
class Original:
    """The headers of the message a report is about, as the report quotes them."""

    message_id: str = ""
    list_unsubscribe: str = ""
    return_path: str = ""


@dataclass(frozen=True)
class Report:
    """A message that came back, and every clue it holds (none of them proven)."""

    kind: Kind
    report_id: str  # the same report twice has the same id
    detail: str = ""  # a status code, a feedback type, why it counts as an auto-reply
    delivered_to: tuple[str, ...] = ()  # where it came to: Delivered-To, X-Original-To, To, Cc…
    subject: str = ""
    envelope_senders: tuple[str, ...] = ()  # the original's MAIL FROM (RFC 5965 Original-Mail-From…)
    original: Original = field(default_factory=Original)
    named: tuple[str, ...] = ()  # addresses the report names (Final-Recipient, Original-Rcpt-To…)


def header_values(msg: Message, name: str) -> list[str]:
    """Every value of a header, RFC 2047 decoded where it can be, cut to MAX_HEADER characters."""
    found = []
    for raw in msg.get_all(name) or []:
        try:
            text = str(make_header(decode_header(str(raw))))
        except (ValueError, LookupError, UnicodeError, TypeError):
            text = str(raw)
        found.append(" ".join(text.split())[:MAX_HEADER])
    return found


def _first(msg: Message, name: str) -> str:
    values = header_values(msg, name)
    return values[0] if values else ""


def addresses(values: list[str]) -> tuple[str, ...]:
    """The addresses in header values (``rfc822; ann@example.org`` as DSNs write them too), lower-cased."""
    cleaned = [v.split(";", 1)[1] if ";" in v.split("@", 1)[0] else v for v in values]
    return tuple(dict.fromkeys(a.lower() for _, a in getaddresses(cleaned) if "@" in a))


def report_id(msg: Message, data: bytes) -> str:
    """The report's Message-ID, or a digest of its content when it has none."""
    mid = _first(msg, "Message-ID").strip().strip("<>")
    if mid and len(mid) < 500:
        return f"mid:{mid}"
    body = data.split(b"\n\n", 1)[-1].split(b"\r\n\r\n", 1)[-1]
    seed = "\0".join((_first(msg, "From"), _first(msg, "Date"), _first(msg, "Subject"))).encode()
    return "sha256:" + hashlib.sha256(seed + b"\0" + body).hexdigest()


def parse(data: bytes) -> Message:
    """``data`` as a message; Unreadable when it is not one at all."""
    if not data.strip():
        raise Unreadable("the message is empty")
    if len(data) > MAX_SIZE:
        raise Unreadable(f"the message is {len(data):,} bytes, over {MAX_SIZE:,}")
    if not _HEADER_LINE.match(data.lstrip(b"\r\n")[:1000]) and not data.startswith(b"From "):
        raise Unreadable("it does not start with a mail header")
    try:
        return message_from_bytes(data, policy=compat32)
    except (RecursionError, ValueError, TypeError, LookupError, UnicodeError) as err:
        raise Unreadable(f"the MIME structure cannot be read ({type(err).__name__})") from err


def parts(msg: Message) -> list[Message]:
    """The message and its parts, depth first, at most MAX_PARTS (iterative: no recursion)."""
    found: list[Message] = []
    todo = [msg]
    while todo and len(found) < MAX_PARTS:
        part = todo.pop()
        found.append(part)
        payload = part.get_payload()
        if isinstance(payload, list):
            todo.extend(reversed([p for p in payload if isinstance(p, Message)]))
    return found


def _original(msg: Message) -> Message | None:
    """The quoted original: a message/rfc822 part, or text/rfc822-headers (or their RFC 6533 twins)."""
    for part in parts(msg)[1:]:
        kind = part.get_content_type()
        payload = part.get_payload()
        if kind in ("message/rfc822", "message/global") and isinstance(payload, list) and payload:
            inner = payload[0]
            return inner if isinstance(inner, Message) else None
        if kind in ("text/rfc822-headers", "message/global-headers"):
            text = part.get_payload(decode=True)
            if isinstance(text, bytes):
                return HeaderParser(policy=compat32).parsestr(text.decode("utf-8", "replace").lstrip())
    return None


def original_of(msg: Message) -> Original:
    """The clues in the quoted original's headers."""
    inner = _original(msg)
    if inner is None:
        return Original()
    return Original(
        _first(inner, "Message-ID").strip(), _first(inner, "List-Unsubscribe"), _first(inner, "Return-Path")
    )


def auto_reply(msg: Message) -> str:
    """Why the message is an automatic reply (RFC 3834 and the common vendor marks), or ""."""
    submitted = _first(msg, "Auto-Submitted").lower()
    if submitted and not submitted.startswith("no"):
        return f"Auto-Submitted: {submitted[:40]}"
    for name in ("X-Autoreply", "X-Autorespond", "X-Autoresponder", "X-Autogenerated", "X-Auto-Reply"):
        if msg.get(name) is not None:
            return name
    if _first(msg, "Precedence").lower() in ("auto_reply", "auto-reply"):
        return "Precedence: auto_reply"
    if _AUTO_SUBJECT.match(_first(msg, "Subject")):
        return "the subject of an automatic reply"
    return ""


def looks_like_bounce(msg: Message) -> bool:
    """From a mailer daemon, with an empty envelope sender, or with a bounce's subject (asked
    only of a message that is no auto-reply: those often come with an empty envelope sender too)."""
    sender = addresses(header_values(msg, "From"))
    if (sender and sender[0].split("@", 1)[0] in _DAEMONS) or msg.get("X-Failed-Recipients") is not None:
        return True
    return _first(msg, "Return-Path").strip() == "<>" or bool(_BOUNCE_SUBJECT.search(_first(msg, "Subject")))


def status_class(status: str, action: str, diagnostic: str) -> Kind | None:
    """A recipient group's verdict: HARD for 5.x.x (but those about the message or the sender:
    5.3.4, 5.6.x, 5.7.x, and 5.7.1 when its words say so), SOFT for those, 4.x.x or ``delayed``,
    DELIVERED for delivered, relayed or expanded; None when it says nothing."""
    action = action.lower().strip()
    if action in ("delivered", "relayed", "expanded"):
        return Kind.DELIVERED
    code = _STATUS.search(status) or _STATUS.search(diagnostic)
    digit = code[1] if code else ""
    if not digit:
        reply = _REPLY_CODE.search(diagnostic)
        digit = reply[1] if reply else ""
    if action == "delayed" or digit == "4" or (code and _about_the_sender(code[0], diagnostic)):
        return Kind.SOFT
    if digit == "5" or action == "failed":
        return Kind.HARD
    return None


def _about_the_sender(code: str, diagnostic: str) -> bool:
    if _ABOUT_THE_SENDER.match(code):
        return True
    return code == "5.7.1" and bool(_SENDER_WORDS.search(diagnostic)) and not _READER_WORDS.search(diagnostic)


def status_text(status: str, diagnostic: str) -> str:
    """The enhanced status code of a group (``5.1.1``), or its reply code."""
    code = _STATUS.search(status) or _STATUS.search(diagnostic)
    if code:
        return code.group(0)
    reply = _REPLY_CODE.search(diagnostic)
    return reply.group(0) if reply else ""


def delivered_to(msg: Message) -> tuple[str, ...]:
    """Where the message came to, first the headers a delivering server adds."""
    return addresses([v for name in _TO_HEADERS for v in header_values(msg, name)])


def subject(msg: Message) -> str:
    """The decoded subject."""
    return _first(msg, "Subject")
