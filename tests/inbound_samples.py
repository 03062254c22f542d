"""Messages that come back, written the way real senders write them: delivery status reports in
the shapes Postfix, Exim, Exchange, Gmail and RFC 6533 give them, a bounce in no standard form
(qmail), feedback-loop complaints (RFC 5965) with the recipient redacted, mailto unsubscribes,
out-of-office replies and a reader's reply. Built with the standard library, CRLF line ends."""

from __future__ import annotations

import re
from email import message_from_bytes, policy
from email.message import EmailMessage
from email.utils import formatdate, make_msgid

CRLF = "\r\n"


def _crlf(text: str) -> bytes:
    return text.replace("\r\n", "\n").replace("\n", CRLF).encode()


def headers_of(message: bytes) -> bytes:
    """The header block of a message (without the blank line)."""
    return re.split(rb"\r?\n\r?\n", message, maxsplit=1)[0]


def received_copy(data: bytes, mail_from: str) -> bytes:
    """A message as the reader's mailbox has it: the receiving server added Return-Path."""
    return f"Return-Path: <{mail_from}>\r\n".encode() + data


def redact(original: bytes, reader: str) -> bytes:
    """The original with the reader's address taken out everywhere (as feedback loops do)."""
    data = re.sub(re.escape(reader.encode()), b"redacted@example.invalid", original, flags=re.IGNORECASE)
    head, _, body = data.partition(b"\r\n\r\n")
    head = re.sub(rb"(?im)^To:[^\r\n]*", b"To: [redacted]", head)
    return head + b"\r\n\r\n" + body


def without_headers(original: bytes, *names: str) -> bytes:
    """The original without the given headers (and their folded lines)."""
    head, _, body = original.partition(b"\r\n\r\n")
    for name in names:
        head = re.sub(rb"(?im)^" + name.encode() + rb":[^\r\n]*(\r\n[ \t][^\r\n]*)*(\r\n)?", b"", head)
    return head.rstrip(b"\r\n") + b"\r\n\r\n" + body


STYLES = ("postfix", "exim", "exchange", "gmail", "global", "headers-only", "no-original")


_TROUBLE = "mailbox problem"


def dsn(
    to: str,
    final: str,
    original: bytes,
    *,
    style: str = "postfix",
    status: str = "5.1.1",
    action: str = "failed",
    message_id: str = "",
    diagnostic: str = "",
) -> bytes:
    """A delivery status notification (RFC 3464) sent to ``to`` about ``final``."""
    boundary = "=_report_" + re.sub(r"\W", "", style)
    kind = "global-delivery-status" if style == "global" else "delivery-status"
    part = "message/global-delivery-status" if style == "global" else "message/delivery-status"
    diagnostic = {
        "exchange": f"smtp;550 {status} RESOLVER.ADR.RecipNotFound; not found",
        "gmail": f"smtp; 550-{status} The email account that you tried to reach does not exist.",
    }.get(
        style,
        f"smtp; {'550' if status.startswith('5') else '452'} {status} {diagnostic or 'mailbox problem'}",
    )
    per_recipient = (
        f"Final-Recipient: rfc822;{final}\n"
        + ("" if style == "exim" else f"Original-Recipient: rfc822;{final}\n")
        + f"Action: {action}\nStatus: {status}\n"
        + ("Remote-MTA: dns; mx.example.com\n" if style != "gmail" else "")
        + f"Diagnostic-Code: {diagnostic}\n"
        + ("Last-Attempt-Date: " + formatdate() + "\n" if style == "exchange" else "")
    )
    sender = {"exchange": "postmaster@outlook.example.com", "gmail": "mailer-daemon@googlemail.example.com"}
    subject = "Undeliverable: news" if style == "exchange" else "Undelivered Mail Returned to Sender"
    text = (
        f"From: Mail Delivery System <{sender.get(style, 'MAILER-DAEMON@mx.example.com')}>\n"
        f"To: {to}\nSubject: {subject}\n"
        f"Date: {formatdate()}\nMessage-ID: {message_id or make_msgid(domain='mx.example.com')}\n"
        f"Auto-Submitted: auto-replied\nMIME-Version: 1.0\n"
        f'Content-Type: multipart/report; report-type={kind}; boundary="{boundary}"\n\n'
        f"--{boundary}\nContent-Type: text/plain; charset=utf-8\n\n"
        f"Your message could not be delivered to {final}.\n\n"
        f"--{boundary}\nContent-Type: {part}\n\n"
        f"Reporting-MTA: dns; mx.example.com\nArrival-Date: {formatdate()}\n\n{per_recipient}\n"
    )
    data = _crlf(text)
    if style == "no-original":
        return data + _crlf(f"--{boundary}--\n")
    if style in ("gmail", "headers-only"):
        return (
            data
            + _crlf(f"--{boundary}\nContent-Type: text/rfc822-headers\n\n")
            + headers_of(original)
            + _crlf(f"\n\n--{boundary}--\n")
        )
    wrapper = "message/global" if style == "global" else "message/rfc822"
    return (
        data + _crlf(f"--{boundary}\nContent-Type: {wrapper}\n\n") + original + _crlf(f"\n--{boundary}--\n")
    )


def qmail_bounce(to: str, final: str, original: bytes) -> bytes:
    """A bounce in no standard form: qmail's plain-text failure notice."""
    return (
        _crlf(
            f"From: MAILER-DAEMON@mx.example.com\nTo: {to}\nSubject: failure notice\nDate: {formatdate()}\n"
            f"Message-ID: {make_msgid(domain='mx.example.com')}\n\n"
            "Hi. This is the qmail-send program at mx.example.com.\n"
            "I'm afraid I wasn't able to deliver your message to the following addresses.\n"
            "This is a permanent error; I've given up. Sorry it didn't work out.\n\n"
            f"<{final}>:\nSorry, no mailbox here by that name. (#5.1.1)\n\n"
            "--- Below this line is a copy of the message.\n\n"
        )
        + original
    )


def exim_bounce(to: str, final: str, original: bytes) -> bytes:
    """Exim's own bounce: plain text, marked ``Auto-Submitted: auto-replied`` like an auto-reply,
    the failed address in ``X-Failed-Recipients``."""
    return (
        _crlf(
            f"Return-path: <>\nFrom: Mail Delivery System <Mailer-Daemon@mx.example.com>\nTo: {to}\n"
            f"Subject: Mail delivery failed: returning message to sender\nDate: {formatdate()}\n"
            f"Message-Id: {make_msgid(domain='mx.example.com')}\nX-Failed-Recipients: {final}\n"
            "Auto-Submitted: auto-replied\n\n"
            "This message was created automatically by mail delivery software.\n\n"
            "A message that you sent could not be delivered to one or more of its\n"
            "recipients. This is a permanent error. The following address(es) failed:\n\n"
            f"  {final}\n    SMTP error from remote mail server after RCPT TO:<{final}>:\n"
            "    550 5.1.1 User unknown\n\n"
            "------ This is a copy of the message, including all the headers. ------\n\n"
        )
        + original
    )


def complaint(
    original: bytes,
    *,
    to: str = "fbl@news.example.org",
    mail_from: str = "",
    feedback_type: str = "abuse",
    rcpt_to: str = "",
    headers_only: bool = False,
) -> bytes:
    """A feedback-loop report (RFC 5965 ARF) about ``original``."""
    boundary = "=_arf_boundary"
    fields = f"Feedback-Type: {feedback_type}\nUser-Agent: ExampleFBL/1.0\nVersion: 1\n"
    fields += f"Original-Mail-From: <{mail_from}>\n" if mail_from else ""
    fields += f"Original-Rcpt-To: <{rcpt_to}>\n" if rcpt_to else ""
    fields += f"Arrival-Date: {formatdate()}\nReported-Domain: example.org\nSource-IP: 192.0.2.1\n"
    head = _crlf(
        f"From: Feedback Loop <fbl@isp.example.com>\nTo: {to}\nSubject: FW: abuse report\n"
        f"Date: {formatdate()}\nMessage-ID: {make_msgid(domain='isp.example.com')}\nMIME-Version: 1.0\n"
        f'Content-Type: multipart/report; report-type=feedback-report; boundary="{boundary}"\n\n'
        f"--{boundary}\nContent-Type: text/plain\n\nThis is an email abuse report.\n\n"
        f"--{boundary}\nContent-Type: message/feedback-report\n\n{fields}\n"
    )
    if headers_only:
        return (
            head
            + _crlf(f"--{boundary}\nContent-Type: text/rfc822-headers\n\n")
            + headers_of(original)
            + _crlf(f"\n\n--{boundary}--\n")
        )
    return (
        head
        + _crlf(f"--{boundary}\nContent-Type: message/rfc822\n\n")
        + original
        + _crlf(f"\n--{boundary}--\n")
    )


def mailto_unsubscribe(uri: str, reader: str) -> bytes:
    """What a mail client's "unsubscribe" button sends for a ``mailto:`` URI."""
    address, _, query = uri.removeprefix("mailto:").partition("?")
    subject = "unsubscribe"
    for pair in query.split("&"):
        name, _, value = pair.partition("=")
        if name.lower() == "subject":
            from urllib.parse import unquote

            subject = unquote(value)
    msg = EmailMessage()
    msg["From"], msg["To"], msg["Subject"] = reader, address, subject
    msg["Date"], msg["Message-ID"] = formatdate(), make_msgid(domain="example.com")
    msg.set_content("This message was automatically generated by the mail client to unsubscribe.")
    return msg.as_bytes(policy=policy.SMTP)


OOO_STYLES = ("rfc3834", "exchange", "vacation", "subject-only")


def out_of_office(to: str, reader: str, subject: str, *, style: str = "rfc3834") -> bytes:
    """An out-of-office reply from ``reader`` to ``to`` (the envelope sender it answers)."""
    msg = EmailMessage()
    msg["From"], msg["To"] = reader, to
    msg["Subject"] = {"exchange": "Automatic reply: ", "vacation": "Re: "}.get(
        style, "Out of Office: "
    ) + subject
    msg["Date"], msg["Message-ID"] = formatdate(), make_msgid(domain="example.com")
    if style == "rfc3834":
        msg["Auto-Submitted"] = "auto-replied"
    elif style == "exchange":
        msg["X-Auto-Response-Suppress"] = "All"
        msg["Auto-Submitted"] = "auto-generated"
        msg["X-MS-Exchange-Inbox-Rules-Loop"] = reader
    elif style == "vacation":
        msg["Precedence"] = "bulk"
        msg["X-Autoreply"] = "yes"
    msg.set_content("I am out of the office until Monday, with no access to email.")
    return msg.as_bytes(policy=policy.SMTP)


def reply(to: str, reader: str, subject: str) -> bytes:
    """A reader writing back by hand."""
    msg = EmailMessage()
    msg["From"], msg["To"], msg["Subject"] = reader, to, "Re: " + subject
    msg["Date"], msg["Message-ID"] = formatdate(), make_msgid(domain="example.com")
    msg.set_content("Thanks, great issue! (By the way, please fix my address.)")
    return msg.as_bytes(policy=policy.SMTP)


def header(message: bytes, name: str) -> str:
    """A header of a message, unfolded."""
    return " ".join(str(message_from_bytes(message, policy=policy.default)[name] or "").split())


def mailto_of(message: bytes) -> str:
    """The mailto URI of a message's List-Unsubscribe."""
    return next(
        u for u in re.findall(r"<([^<>]*)>", header(message, "List-Unsubscribe")) if u.startswith("mailto:")
    )
