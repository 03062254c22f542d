"""SMTP sessions: verified TLS, authentication, connection reuse, and reply classification.

One :class:`SmtpTransport` owns one connection and is used by one thread. It talks MAIL, RCPT
and DATA itself (rather than ``smtplib.sendmail``) so it can tell a drop *before* the message
data left (safe to retry) from a drop while waiting for the final reply (the server may have
accepted it: the outcome is unknown), and so the journal can record "in flight" at the last
moment before the data is sent.
"""

from __future__ import annotations

import ipaddress
import re
import smtplib
import ssl
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum

from dispatch.errors import AbortError
from dispatch.settings import Settings

_ENHANCED = re.compile(r"^([245])\.(\d{1,3})\.(\d{1,3})\b")
_RATE_WORDS = re.compile(r"too many|rate|limit|quota|exceeded|throttl|slow down", re.I)
_PER_CONNECTION = re.compile(r"\b(per|this|the) (connection|session)\b", re.I)
FINAL_REPLY_TIMEOUT = 600.0  # RFC 5321 §4.5.3.2.6: 10 minutes for the reply to the final dot


class Unreachable(AbortError):
    """The server could not be reached (worth a few retries before giving up)."""


class Status(StrEnum):
    """What became of one message."""

    SENT = "sent"
    DEFERRED = "deferred"  # transient: try again later
    FAILED = "failed"  # permanent for this recipient
    UNKNOWN = "unknown"  # the server may or may not have accepted it


@dataclass(frozen=True)
class Result:
    """One message's outcome with the server's last reply."""

    status: Status
    code: int | None
    text: str
    data_started: bool = False  # the message data was (at least partly) sent

    @property
    def enhanced(self) -> str:
        """The RFC 3463 enhanced status code at the start of the reply text, if any."""
        found = _ENHANCED.match(self.text)
        return found[0] if found else ""

    @property
    def hard_bounce(self) -> bool:
        """A permanent "no such mailbox / bad address" reply (x.1.1, x.1.2, x.1.3)."""
        return self.status is Status.FAILED and self.enhanced[2:] in {"1.1", "1.2", "1.3"}

    @property
    def stops_campaign(self) -> bool:
        """A reply that means every further message would meet the same fate (quota, rate)."""
        sub = self.enhanced[2:]
        if self.code is None or _PER_CONNECTION.search(self.text):
            return False  # "too many messages on this connection": reconnecting is the answer
        if sub in {"4.5", "7.28"} or (self.code == 421 and sub.startswith("7.")):
            return True
        return (sub.startswith("7.") or self.code == 421) and bool(_RATE_WORDS.search(self.text))

    def line(self) -> str:
        """The reply as one short line."""
        return f"{self.code} {self.text}".strip() if self.code else self.text


def classify(code: int, text: str, *, data_started: bool = False) -> Result:
    """2xx sent; 4xx deferred; 5xx failed (RFC 5321 §4.2.1)."""
    status = Status.SENT if 200 <= code < 300 else Status.DEFERRED if code < 500 else Status.FAILED
    return Result(status, code, " ".join(text.split()), data_started)


def _decode(reply: bytes | str) -> str:
    return reply.decode("utf-8", "replace") if isinstance(reply, bytes) else reply


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def tls_context(settings: Settings) -> ssl.SSLContext:
    """A verifying context: system trust store, SSL_CERT_FILE, plus DISPATCH_SMTP_CA_FILE."""
    context = ssl.create_default_context()
    if settings.smtp_ca_file is not None:
        context.load_verify_locations(cafile=str(settings.smtp_ca_file))
    return context


def _login_once(smtp: smtplib.SMTP, user: str, password: str) -> None:
    """One AUTH attempt with the best advertised mechanism.

    ``smtplib.SMTP.login`` would try the next mechanism after a 535, so one wrong password would
    count as two failures towards the server's lockout.
    """
    if not smtp.has_extn("auth"):
        raise smtplib.SMTPNotSupportedError("SMTP AUTH extension not supported by server.")
    offered = smtp.esmtp_features["auth"].upper().split()
    mechanism = next((m for m in ("PLAIN", "LOGIN", "CRAM-MD5") if m in offered), None)
    if mechanism is None:
        raise smtplib.SMTPException(f"no supported AUTH mechanism (server offers {' '.join(offered)})")
    smtp.user, smtp.password = user, password
    method = getattr(smtp, "auth_" + mechanism.lower().replace("-", "_"))
    code, reply = smtp.auth(mechanism, method, initial_response_ok=True)
    if code not in (235, 503):
        raise smtplib.SMTPAuthenticationError(code, reply)


def dot_stuff(data: bytes) -> bytes:
    """The DATA payload: leading dots doubled and the terminating ``CRLF.CRLF`` added."""
    if data.startswith(b"."):
        data = b"." + data
    data = data.replace(b"\r\n.", b"\r\n..")
    if not data.endswith(b"\r\n"):
        data += b"\r\n"
    return data + b".\r\n"


class SmtpTransport:
    """One SMTP connection, opened lazily, re-opened after a drop or every N messages."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._smtp: smtplib.SMTP | None = None
        self._count = 0

    def _fail(self, what: str, hint: str = "") -> AbortError:
        s = self.settings
        return AbortError(f"SMTP server {s.endpoint}: {what}" + (f"; {hint}" if hint else ""))

    def _untrusted(self, err: ssl.SSLCertVerificationError) -> AbortError:
        if self.settings.smtp_ca_file is None:
            hint = "set DISPATCH_SMTP_CA_FILE to the relay's CA certificate"
        else:
            hint = "check that DISPATCH_SMTP_HOST is the name in the certificate and the CA file is right"
        return self._fail(f"TLS certificate not trusted ({err.verify_message})", hint)

    def open(self) -> smtplib.SMTP:
        """Connect, secure and log in; AbortError with one line if that cannot work."""
        s = self.settings
        if s.smtp_user and s.smtp_security == "none" and not _is_loopback(s.smtp_host):
            raise AbortError(
                "DISPATCH_SMTP_SECURITY=none would send the password in clear text; "
                "use starttls or ssl, or a relay on this machine"
            )
        try:
            if s.smtp_security == "ssl":
                smtp: smtplib.SMTP = smtplib.SMTP_SSL(
                    s.smtp_host, s.smtp_port, timeout=s.smtp_timeout, context=tls_context(s)
                )
            else:
                smtp = smtplib.SMTP(s.smtp_host, s.smtp_port, timeout=s.smtp_timeout)
        except ssl.SSLCertVerificationError as err:
            raise self._untrusted(err) from err
        except smtplib.SMTPConnectError as err:
            detail = f"{err.smtp_code} {_decode(err.smtp_error)}"
            raise Unreachable(f"SMTP server {s.endpoint}: refused the connection ({detail})") from err
        except (OSError, smtplib.SMTPException) as err:
            raise Unreachable(
                f"SMTP server {s.endpoint}: cannot connect ({err}); "
                "check DISPATCH_SMTP_HOST and DISPATCH_SMTP_PORT"
            ) from err
        try:
            smtp.ehlo()
            if s.smtp_security == "starttls":
                try:
                    smtp.starttls(context=tls_context(s))
                except smtplib.SMTPNotSupportedError as err:
                    raise self._fail(
                        "does not offer STARTTLS, and dispatch never falls back to plain text",
                        "use DISPATCH_SMTP_SECURITY=ssl, or none for a relay on this machine",
                    ) from err
                smtp.ehlo()
            if s.smtp_user:
                try:
                    _login_once(smtp, s.smtp_user, s.smtp_password)
                except smtplib.SMTPAuthenticationError as err:
                    raise self._fail(
                        f"refused the login for user {s.smtp_user!r} "
                        f"({err.smtp_code} {_decode(err.smtp_error)})",
                        "check DISPATCH_SMTP_USER and DISPATCH_SMTP_PASSWORD",
                    ) from err
                except smtplib.SMTPNotSupportedError as err:
                    raise self._fail("does not offer AUTH", "unset DISPATCH_SMTP_USER") from err
        except ssl.SSLCertVerificationError as err:
            smtp.close()
            raise self._untrusted(err) from err
        except AbortError:
            smtp.close()
            raise
        except (OSError, smtplib.SMTPException) as err:
            smtp.close()
            raise Unreachable(f"SMTP server {s.endpoint}: the session failed while starting ({err})") from err
        self._smtp = smtp
        self._count = 0
        return smtp

    def close(self) -> None:
        """QUIT politely; never raises."""
        smtp, self._smtp = self._smtp, None
        if smtp is None:
            return
        try:
            smtp.quit()
        except (OSError, smtplib.SMTPException):
            smtp.close()

    def _drop(self) -> None:
        smtp, self._smtp = self._smtp, None
        if smtp is not None:
            smtp.close()

    def _reset(self, smtp: smtplib.SMTP, code: int) -> None:
        if code == 421:
            self._drop()
            return
        try:
            smtp.rset()
        except (OSError, smtplib.SMTPException):
            self._drop()

    def send(self, sender: str, recipient: str, data: bytes, before_data: Callable[[], None]) -> Result:
        """One transaction for one recipient. ``before_data`` runs just before the payload."""
        limit = self.settings.max_per_connection
        if self._smtp is not None and limit and self._count >= limit:
            self.close()
        smtp = self._smtp or self.open()
        self._count += 1
        try:
            code, reply = smtp.mail(sender)
            if code != 250:
                self._reset(smtp, code)
                result = classify(code, _decode(reply))
                if result.status is Status.FAILED:
                    raise self._fail(f"refused the sender {sender} ({result.line()})", "check DISPATCH_FROM")
                return result
            code, reply = smtp.rcpt(recipient)
            if code not in (250, 251):
                self._reset(smtp, code)
                return classify(code, _decode(reply))
            code, reply = smtp.docmd("DATA")
            if code != 354:
                self._reset(smtp, code)
                return classify(code, _decode(reply))
        except (OSError, smtplib.SMTPException) as err:
            self._drop()
            return Result(Status.DEFERRED, None, f"connection lost before the message was sent ({err})")
        before_data()
        try:
            smtp.send(dot_stuff(data))
            if smtp.sock is not None:  # a spurious timeout here would mean a duplicate or a loss
                smtp.sock.settimeout(max(self.settings.smtp_timeout, FINAL_REPLY_TIMEOUT))
            code, reply = smtp.getreply()
            if smtp.sock is not None:
                smtp.sock.settimeout(self.settings.smtp_timeout)
        except (OSError, smtplib.SMTPException) as err:
            self._drop()
            return Result(
                Status.UNKNOWN,
                None,
                f"connection lost waiting for the server's reply ({err})",
                True,
            )
        if not 200 <= code < 600:  # unreadable: the server may have taken it; never retry
            self._drop()
            return Result(
                Status.UNKNOWN, None, f"unreadable reply to the message data: {_decode(reply)!r}", True
            )
        if code == 421:
            self._drop()
        return classify(code, _decode(reply), data_started=True)


def probe(settings: Settings) -> None:
    """Open and close one session: finds a wrong password or a dead server before sending."""
    transport = SmtpTransport(settings)
    try:
        transport.open()
    finally:
        transport.close()
