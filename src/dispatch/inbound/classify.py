"""What a message that came back is: :func:`read_report` turns its bytes into a
:class:`~dispatch.inbound.reports.Report`, or raises Unreadable (the message is then kept for a
person, never dropped).

In order: a delivery status notification (the worst recipient group decides: a 5.x.x is a
hard bounce, else a 4.x.x, ``delayed`` or a 5.x.x about the message or the sender a soft one,
else a delivery notice); a complaint (``Feedback-Type: abuse``; other feedback types are
reports, not complaints); a mailto unsubscribe (an unsubscribe token in the address it came to,
or in its subject); a bounce in no standard form (flufl.bounce; from a mailer daemon, even when
marked ``Auto-Submitted`` as Exim marks its bounces); an auto-reply; anything else.
"""

from __future__ import annotations

import base64
import binascii
import logging
import re
from dataclasses import replace
from email.message import Message
from email.parser import HeaderParser
from email.policy import compat32

from flufl.bounce import all_failures

from dispatch.inbound.reports import (
    Kind,
    Original,
    Report,
    Unreadable,
    addresses,
    auto_reply,
    delivered_to,
    header_values,
    looks_like_bounce,
    original_of,
    parse,
    parts,
    report_id,
    status_class,
    status_text,
    subject,
)
from dispatch.unsubscribe.address_tokens import FOUND, UNSUBSCRIBE, found_in

logging.getLogger("flufl.bounce").addHandler(
    logging.NullHandler()
)  # its detectors' tracebacks: not ours to print
_DSN_PARTS = ("message/delivery-status", "message/global-delivery-status", "text/delivery-status")
_FEEDBACK_PARTS = ("message/feedback-report", "text/feedback-report")
LINK_TOKEN = re.compile(r"(?<![A-Za-z0-9_-])[A-Za-z0-9_-]{32,1400}(?![A-Za-z0-9_-])")  # an unsubscribe link's
_SEVERITY = {Kind.HARD: 3, Kind.SOFT: 2, Kind.DELIVERED: 1}


def read_report(data: bytes) -> Report:
    """The message as a report (see the module's docstring); Unreadable when it is none."""
    msg = parse(data)
    try:
        return _classify(msg, data)
    except RecursionError as err:
        raise Unreadable("the MIME structure is nested too deeply to read") from err


def _classify(msg: Message, data: bytes) -> Report:
    base = Report(Kind.OTHER, report_id(msg, data), "", delivered_to(msg), subject(msg))
    kind = msg.get_content_type()
    report_type = str(msg.get_param("report-type") or "").lower()
    if kind == "multipart/report" and report_type in ("delivery-status", "global-delivery-status"):
        return _delivery_status(msg, base)
    if kind == "multipart/report" and report_type == "feedback-report":
        return _feedback(msg, base)
    reason = auto_reply(msg)
    if _unsubscribe_request(base, automatic=bool(reason)):
        return _with(base, Kind.UNSUBSCRIBE, "a mailto unsubscribe")
    if looks_like_bounce(msg):  # (Exim marks its bounces Auto-Submitted, like an auto-reply)
        found = _fallback(msg, base)
        if found is not None:
            return found
        if not reason:
            raise Unreadable("it looks like a bounce report, but names no failed address dispatch can read")
    if reason:
        return _with(base, Kind.AUTO_REPLY, reason)
    return base


def _with(base: Report, kind: Kind, detail: str, **more: object) -> Report:
    return replace(base, kind=kind, detail=detail, **more)  # type: ignore[arg-type]


def _unsubscribe_request(base: Report, *, automatic: bool) -> bool:
    """Sent to an unsubscribe address (``…+u-TOKEN@…``, an unsubscribe link's token in the local
    part), or, unless automatic, with an unsubscribe token in the subject."""
    for address in base.delivered_to:
        local = address.rsplit("@", 1)[0]
        if any(kind == UNSUBSCRIBE for kind, _ in found_in(local)) or _link_token_in(local):
            return True
    if automatic:
        return False
    return any(kind == UNSUBSCRIBE for kind, _ in found_in(base.subject)) or _link_token_in(base.subject)


def _link_token_in(text: str) -> bool:
    """A word shaped like an unsubscribe link's token: base64url of version 1 and a sealed text
    (a short envelope token, 32 base32 characters, is none)."""
    for match in LINK_TOKEN.finditer(text[:10_000]):
        word = match.group(0)
        try:
            data = base64.urlsafe_b64decode(word + "=" * (-len(word) % 4))
        except (binascii.Error, ValueError):
            continue
        if len(data) > 17 and data[0] == 1 and not FOUND.fullmatch(word):
            return True
    return False


def _blocks(part: Message) -> list[Message]:
    """The groups of fields of a delivery-status or feedback-report part. The email package
    splits ``message/delivery-status`` into groups itself; other types (RFC 6533's
    ``message/global-delivery-status``) come as one message whose body holds the next groups."""
    payload = part.get_payload()
    if isinstance(payload, list):
        blocks = [p for p in payload if isinstance(p, Message)]
        rest = blocks[0].get_payload() if len(blocks) == 1 else ""
        return blocks + _split(rest) if isinstance(rest, str) else blocks
    raw = part.get_payload(decode=True)
    return _split(raw.decode("utf-8", "replace") if isinstance(raw, bytes) else str(payload))


def _split(text: str) -> list[Message]:
    chunks = re.split(r"\r?\n[ \t]*\r?\n", text.strip())
    return [
        HeaderParser(policy=compat32).parsestr(chunk.strip() + "\n")
        for chunk in chunks[:200]
        if chunk.strip()
    ]


def _delivery_status(msg: Message, base: Report) -> Report:
    groups = next((_blocks(p)[1:] for p in parts(msg) if p.get_content_type() in _DSN_PARTS), [])
    original = original_of(msg)
    base = _with(base, Kind.OTHER, "", original=original, envelope_senders=addresses([original.return_path]))
    worst: tuple[int, Kind, str, tuple[str, ...]] | None = None
    for group in groups:
        action, status = _field(group, "Action"), _field(group, "Status")
        diagnostic = _field(group, "Diagnostic-Code")
        verdict = status_class(status, action, diagnostic)
        if verdict is None:
            continue
        named = addresses(
            header_values(group, "Original-Recipient") + header_values(group, "Final-Recipient")
        )
        rank = (_SEVERITY[verdict], verdict, status_text(status, diagnostic) or action.lower(), named)
        if worst is None or rank[0] > worst[0]:
            worst = rank
    if worst is None:
        found = _fallback(msg, base)
        if found is None:
            raise Unreadable("a delivery status report with no recipient group dispatch can read")
        return found
    return _with(base, worst[1], worst[2], named=worst[3])


def _field(block: Message, name: str) -> str:
    values = header_values(block, name)
    return values[0] if values else ""


def _feedback(msg: Message, base: Report) -> Report:
    fields = next((_blocks(p) for p in parts(msg) if p.get_content_type() in _FEEDBACK_PARTS), [])
    if not fields:
        raise Unreadable("a feedback report without its message/feedback-report part")
    block = fields[0]
    feedback_type = _field(block, "Feedback-Type").lower() or "abuse"
    original = original_of(msg)
    senders = addresses([*header_values(block, "Original-Mail-From"), original.return_path])
    named = addresses(header_values(block, "Original-Rcpt-To") + header_values(block, "Removal-Recipient"))
    kind = Kind.COMPLAINT if feedback_type == "abuse" else Kind.OTHER
    return _with(
        base, kind, f"Feedback-Type: {feedback_type[:40]}", original=original, envelope_senders=senders,
        named=named,
    )  # fmt: skip


def _fallback(msg: Message, base: Report) -> Report | None:
    """A bounce in no standard form, read by flufl.bounce's detectors; None when they find no
    failed address (or trip over the message)."""
    try:
        temporary, permanent = all_failures(msg)
    except Exception:
        return None
    found, kind = (permanent, Kind.HARD) if permanent else (temporary, Kind.SOFT)
    if not found:
        return None
    named = addresses([a.decode("utf-8", "replace") if isinstance(a, bytes) else str(a) for a in found])
    original = base.original if base.original != Original() else original_of(msg)
    return _with(
        base, kind, f"{'permanent' if kind is Kind.HARD else 'temporary'} failure (non-standard report)",
        named=named, original=original, envelope_senders=addresses([original.return_path]),
    )  # fmt: skip
