"""SMTP sessions: verified TLS, authentication, connection reuse, and reply classification.

One :class:`SmtpTransport` owns one connection and is used by one thread. It talks MAIL, RCPT
and DATA itself (rather than ``smtplib.sendmail``) so it can tell a drop *before* the final
dot (safe to retry: the relay cannot have accepted the message) from a drop after it (the server may have
accepted it: the outcome is unknown), and so the journal can record "in flight" while the
relay is busy, yet always before the final dot that lets the relay accept the message.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import ipaddress
import re
import smtplib
import socket
import ssl
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum

from dispatch.errors import AbortError
from dispatch.message import WireMessage
from dispatch.oauth import TokenEndpointDown, TokenSource, authenticate
from dispatch.settings import Settings
from dispatch.state.logins import LOGIN_HINT

_ENHANCED = re.compile(r"^([245])\.(\d{1,3})\.(\d{1,3})\b")
# Free text is read only to refine a transient reply (RFC 3463 codes come first): Postfix's
# "too much mail from", Exchange's "submission rate … exceeded", SES's "Throttling failure",
# Gmail's "unusual rate" (email-standards.md, section E2).
_RATE_WORDS = re.compile(r"too (?:many|much)|\brate\b|throttl|quota|exceeded|slow down|\blimit", re.I)
_PER_CONNECTION = re.compile(r"\b(per|this|the) (connection|session)\b", re.I)
_QUOTA_WORDS = re.compile(r"quota ?exceeded|sending (?:limit|quota)", re.I)
_MESSAGE_WORDS = re.compile(
    r"line too long|message (?:file )?(?:is )?too (?:big|large)|message size|size limit|exceeds (?:the )?"
    r"(?:maximum|fixed|size)",
    re.I,
)
_SENDER_POLICY = {515, 23, 25, 26, 27, 57}  # x.7.x about the sender's authentication (SPF/DKIM/DMARC, PTR)
_EXPECTED = {"MAIL": (250,), "RCPT": (250, 251), "DATA": (354,)}
FINAL_REPLY_TIMEOUT = 600.0  # RFC 5321 §4.5.3.2.6: 10 minutes for the reply to the final dot


class Unreachable(AbortError):
    """The server could not be reached (worth a few retries before giving up)."""


class Status(StrEnum):
    """What became of one message."""

    SENT = "sent"
    DEFERRED = "deferred"  # transient: try again later
    FAILED = "failed"  # permanent for this recipient
    UNKNOWN = "unknown"  # the server may or may not have accepted it


class Scope(StrEnum):
    """Whom a reply is about, which decides who pays for it (email-standards.md, E2)."""

    RECIPIENT = "recipient"  # that address fails or waits; the run goes on
    MESSAGE = "message"  # the message or the sender: every recipient would get the same answer
    RATE = "rate"  # the rate, a quota or too many connections: stop now, retry later


def _enhanced_parts(text: str) -> tuple[int, int] | None:
    found = _ENHANCED.match(text)
    if not found or (found[2], found[3]) == ("0", "0"):
        return None  # x.0.0 says "undefined": the words are all there is to go on
    return int(found[2]), int(found[3])


def reply_scope(code: int, text: str) -> Scope:
    """Classify by reply code and enhanced status code first; read words only to refine."""
    parts = _enhanced_parts(text)
    subject, detail = parts if parts else (None, None)
    if _PER_CONNECTION.search(text):
        return Scope.RECIPIENT  # "too many messages on this connection": reconnecting is the answer
    if code < 500:
        if (subject, detail) == (7, 28) or (code == 421 and subject == 7) or subject == 5:
            return Scope.RATE
        if subject in (1, 2):
            return Scope.RECIPIENT  # that mailbox (Gmail's 450 4.2.1 "receiving mail at a rate")
        return Scope.RATE if _RATE_WORDS.search(text) else Scope.RECIPIENT
    if (subject, detail) == (4, 5) or (subject == 2 and detail == 0 and _QUOTA_WORDS.search(text)):
        return Scope.RATE  # a daily sending limit: stop for the day
    if subject == 2 and detail is not None and 251 <= detail <= 255:
        return Scope.MESSAGE  # Exchange: sender throttled, a person must fix the mailbox
    if (subject, detail) == (3, 4) or subject in (5, 6) or (subject == 7 and detail in _SENDER_POLICY):
        return Scope.MESSAGE  # too big, protocol or syntax, content encoding, sender authentication
    if subject is None and (code in (500, 501, 502, 503, 504) or _MESSAGE_WORDS.search(text)):
        return Scope.MESSAGE
    return Scope.RECIPIENT


@dataclass(frozen=True)
class Result:
    """One message's outcome with the server's last reply."""

    status: Status
    code: int | None
    text: str
    data_started: bool = False  # the message data was (at least partly) sent
    scope: Scope = Scope.RECIPIENT

    @property
    def enhanced(self) -> str:
        """The RFC 3463 enhanced status code at the start of the reply text, if any."""
        found = _ENHANCED.match(self.text)
        return found[0] if found else ""

    @property
    def hard_bounce(self) -> bool:
        """A permanent "no such mailbox / bad address" reply (x.1.1, x.1.2, x.1.3)."""
        return (
            self.status is Status.FAILED
            and self.scope is Scope.RECIPIENT
            and self.enhanced[2:] in {"1.1", "1.2", "1.3"}
        )

    @property
    def stops_campaign(self) -> bool:
        """A reply about the message, the sender or the rate: every further message would meet
        the same fate, so the run stops and this recipient is not blamed (left deferred)."""
        return self.scope is not Scope.RECIPIENT

    def line(self) -> str:
        """The reply as one short line."""
        return f"{self.code} {self.text}".strip() if self.code else self.text


def classify(code: int, text: str, *, data_started: bool = False) -> Result:
    """2xx sent; 4xx deferred; 5xx failed (RFC 5321 §4.2.1), with whom the reply is about."""
    text = " ".join(text.split())
    status = Status.SENT if 200 <= code < 300 else Status.DEFERRED if code < 500 else Status.FAILED
    scope = Scope.RECIPIENT if status is Status.SENT else reply_scope(code, text)
    return Result(status, code, text, data_started, scope)


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


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _login_once(smtp: smtplib.SMTP, user: str, password: str) -> None:
    """One AUTH attempt with the best advertised mechanism, credentials as UTF-8 (RFC 4616).

    ``smtplib.SMTP.login`` would try the next mechanism after a 535, so one wrong password would
    count as two failures towards the server's lockout; it also fails on a non-ASCII password.
    """
    if not smtp.has_extn("auth"):
        raise smtplib.SMTPNotSupportedError("SMTP AUTH extension not supported by server.")
    offered = smtp.esmtp_features["auth"].upper().split()
    mechanism = next((m for m in ("PLAIN", "LOGIN", "CRAM-MD5") if m in offered), None)
    if mechanism is None:
        raise smtplib.SMTPException(f"no supported AUTH mechanism (server offers {' '.join(offered)})")
    name, secret = user.encode(), password.encode()
    if mechanism == "PLAIN":
        code, reply = smtp.docmd("AUTH", "PLAIN " + _b64(b"\0" + name + b"\0" + secret))
    elif mechanism == "LOGIN":
        code, reply = smtp.docmd("AUTH", "LOGIN " + _b64(name))
        if code == 334:
            code, reply = smtp.docmd(_b64(secret))
    else:
        code, reply = smtp.docmd("AUTH", "CRAM-MD5")
        if code == 334:
            digest = hmac.new(secret, base64.b64decode(reply), hashlib.md5).hexdigest()
            code, reply = smtp.docmd(_b64(name + b" " + digest.encode()))
    if code not in (235, 503):
        raise smtplib.SMTPAuthenticationError(code, reply)


END_OF_DATA = b".\r\n"  # after the message's last CRLF: what lets the relay accept it


def dot_stuff(data: bytes) -> bytes:
    """The message as DATA carries it: leading dots doubled, ending in CRLF. The terminating
    ``.CRLF`` (:data:`END_OF_DATA`) goes after it, separately."""
    if isinstance(data, WireMessage):  # none to double: no need to scan ~75 KB per message
        return data
    if data.startswith(b"."):
        data = b"." + data
    if b"\n." in data:
        data = data.replace(b"\r\n.", b"\r\n..")
    if not data.endswith(b"\r\n"):
        data += b"\r\n"
    return data


@dataclass(frozen=True)
class Envelope:
    """Who a message is from and to, and its size (for SIZE=)."""

    sender: str
    recipient: str
    size: int


@dataclass(frozen=True)
class RelayInfo:
    """What the relay advertised in its EHLO reply (after STARTTLS)."""

    size_limit: int = 0  # RFC 1870 SIZE: the largest message it takes (0: not stated)
    pipelining: bool = False  # RFC 2920: MAIL, RCPT and DATA may go in one round trip


class _TokenRefused(AbortError):
    """The relay refused the OAuth2 access token (535): worth one renewal."""

    def __init__(self, token: str, reply: str) -> None:
        super().__init__(reply)
        self.token = token
        self.reply = reply


class SmtpTransport:
    """One SMTP connection, opened lazily, re-opened after a drop or every N messages."""

    def __init__(
        self,
        settings: Settings,
        while_waiting: Callable[[], None] | None = None,
        tokens: TokenSource | None = None,
    ) -> None:
        self.settings = settings
        self.tokens = tokens  # OAuth2 (DISPATCH_SMTP_AUTH=oauth2): shared by every connection of a run
        self.while_waiting = while_waiting  # runs once the data is sent, before its reply is read
        self.hold_dot = settings.connections == 1  # see send()
        # With hold_dot and a pipelining relay: called before each final dot for the next message
        # on this connection, whose MAIL, RCPT and DATA then go behind the dot (see send()).
        self.next_envelope: Callable[[], Envelope | None] | None = None
        self._ahead: Envelope | None = None  # sent behind the last dot; its replies not read yet
        self._follow_lost = False  # the relay lost commands sent behind a dot: never again
        self._smtp: smtplib.SMTP | None = None
        self._count = 0
        self.info = RelayInfo()

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
        """Connect, secure and log in; AbortError with one line if that cannot work. A relay that
        refuses an OAuth2 token gets one more session, with a renewed token."""
        try:
            return self._connect()
        except _TokenRefused as refused:
            assert self.tokens is not None  # only raised when logging in with a token
            self.tokens.renew(refused.token)
        try:
            return self._connect()
        except _TokenRefused as refused:
            raise self._fail(
                f"refused the OAuth2 login for {self.settings.smtp_user!r}, also with a renewed token "
                f"({refused.reply})",
                f"check that the mailbox may send over SMTP with OAuth2, or {LOGIN_HINT}",
            ) from refused

    def _connect(self) -> smtplib.SMTP:
        s = self.settings
        if s.smtp_user and s.smtp_security == "none" and not _is_loopback(s.smtp_host):
            raise AbortError(
                "DISPATCH_SMTP_SECURITY=none would send the password in clear text; "
                "use starttls or ssl, or a relay on this machine"
            )
        name = s.ehlo_name or None
        try:
            if s.smtp_security == "ssl":
                smtp: smtplib.SMTP = smtplib.SMTP_SSL(
                    s.smtp_host,
                    s.smtp_port,
                    local_hostname=name,
                    timeout=s.smtp_timeout,
                    context=tls_context(s),
                )
            else:
                smtp = smtplib.SMTP(s.smtp_host, s.smtp_port, local_hostname=name, timeout=s.smtp_timeout)
        except ssl.SSLCertVerificationError as err:
            raise self._untrusted(err) from err
        except smtplib.SMTPConnectError as err:
            detail = f"{err.smtp_code} {_decode(err.smtp_error)}"
            raise Unreachable(f"SMTP server {s.endpoint}: refused the connection ({detail})") from err
        except (OSError, smtplib.SMTPException, UnicodeError) as err:
            raise Unreachable(
                f"SMTP server {s.endpoint}: cannot connect ({err}); "
                "check DISPATCH_SMTP_HOST and DISPATCH_SMTP_PORT"
            ) from err
        try:
            self._start(smtp)
        except ssl.SSLCertVerificationError as err:
            smtp.close()
            raise self._untrusted(err) from err
        except AbortError:
            smtp.close()
            raise
        except (OSError, smtplib.SMTPException, UnicodeError) as err:
            smtp.close()
            raise Unreachable(f"SMTP server {s.endpoint}: the session failed while starting ({err})") from err
        if smtp.sock is not None:  # the final dot goes alone, at once: never held back by Nagle
            smtp.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._smtp = smtp
        self._count = 0
        return smtp

    def _start(self, smtp: smtplib.SMTP) -> None:
        """EHLO, STARTTLS (never falling back to plain text), EHLO again, AUTH; then note what
        the relay advertises."""
        s = self.settings
        code, reply = smtp.ehlo()
        if code != 250:
            code, reply = smtp.helo()
            if code != 250:
                raise self._fail(
                    f"refused EHLO and HELO ({code} {_decode(reply)})", "check DISPATCH_EHLO_NAME"
                )
        if s.smtp_security == "starttls":
            try:
                smtp.starttls(context=tls_context(s))
            except smtplib.SMTPNotSupportedError as err:
                raise self._fail(
                    "does not offer STARTTLS, and dispatch never falls back to plain text",
                    "use DISPATCH_SMTP_SECURITY=ssl, or none for a relay on this machine",
                ) from err
            smtp.ehlo()
        if s.smtp_auth == "oauth2":
            self._login_xoauth2(smtp)
        elif s.smtp_user:
            try:
                _login_once(smtp, s.smtp_user, s.smtp_password)
            except smtplib.SMTPAuthenticationError as err:
                raise self._fail(
                    f"refused the login for user {s.smtp_user!r} ({err.smtp_code} {_decode(err.smtp_error)})",
                    "check DISPATCH_SMTP_USER and DISPATCH_SMTP_PASSWORD",
                ) from err
            except smtplib.SMTPNotSupportedError as err:
                raise self._fail("does not offer AUTH", "unset DISPATCH_SMTP_USER") from err
        size = smtp.esmtp_features.get("size", "").strip()
        self.info = RelayInfo(
            size_limit=int(size) if size.isdigit() else 0, pipelining=smtp.has_extn("pipelining")
        )

    def _login_xoauth2(self, smtp: smtplib.SMTP) -> None:
        """SASL XOAUTH2 with the run's shared access token. A refusal (535, after the JSON
        challenge Google sends first) raises _TokenRefused, so :meth:`open` can renew and retry."""
        user = self.settings.smtp_user
        if self.tokens is None:
            raise self._fail("DISPATCH_SMTP_AUTH=oauth2 needs an access token, and none was provided")
        if "XOAUTH2" not in smtp.esmtp_features.get("auth", "").upper().split():
            raise self._fail("does not offer AUTH XOAUTH2", "check DISPATCH_SMTP_HOST and DISPATCH_SMTP_PORT")
        try:
            token = self.tokens.current()
        except TokenEndpointDown as err:
            raise Unreachable(str(err)) from err
        code, reply = authenticate(smtp, user, token)
        if code == 535:
            raise _TokenRefused(token, reply)
        if code not in (235, 503):
            raise self._fail(f"refused the OAuth2 login for {user!r} ({reply})")

    def close(self) -> None:
        """QUIT politely; never raises. A transaction opened for a message that is not coming
        is cancelled by closing without its final dot (a QUIT would be read as its text)."""
        if self._ahead is not None:
            self._drop()
        smtp, self._smtp = self._smtp, None
        if smtp is None:
            return
        try:
            smtp.quit()
        except (OSError, smtplib.SMTPException):
            smtp.close()

    def _drop(self) -> None:
        self._ahead = None
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

    def _envelope(
        self, smtp: smtplib.SMTP, sender: str, recipient: str, size: int, hook: Callable[[], None] | None
    ) -> list[tuple[int, bytes]]:
        """MAIL, RCPT and DATA with their replies: in one round trip when the relay pipelines,
        else one at a time, stopping at the first refusal. ``hook`` (if any) runs while the relay
        reads the pipelined commands."""
        mail = self._mail(smtp, sender, size)
        if not self.info.pipelining:
            replies = [smtp.docmd(mail)]
            if replies[-1][0] == 250:
                replies.append(smtp.docmd(f"RCPT TO:<{recipient}>"))
                if replies[-1][0] in (250, 251):
                    replies.append(smtp.docmd("DATA"))
            return replies
        if self._ahead == Envelope(sender, recipient, size):
            self._ahead = None  # sent behind the last message's dot: only the replies to read
        else:
            smtp.send(self._commands(smtp, Envelope(sender, recipient, size)))
        if hook is not None:
            self._run(hook)
        replies = []
        while len(replies) < 3 and (not replies or replies[-1][0] != 421):
            replies.append(smtp.getreply())  # after a 421 the relay hangs up: read no further
        if (
            len(replies) == 3
            and replies[2][0] == 354
            and (replies[0][0] != 250 or replies[1][0] not in (250, 251))
        ):
            smtp.send(END_OF_DATA)  # the relay opened DATA despite a refusal: send an empty message
            smtp.getreply()
        return replies

    @staticmethod
    def _mail(smtp: smtplib.SMTP, sender: str, size: int) -> str:
        return f"MAIL FROM:<{sender}>" + (f" SIZE={size}" if smtp.has_extn("size") else "")

    def _commands(self, smtp: smtplib.SMTP, envelope: Envelope) -> bytes:
        """MAIL, RCPT and DATA for one pipelined group."""
        mail = self._mail(smtp, envelope.sender, envelope.size)
        return f"{mail}\r\nRCPT TO:<{envelope.recipient}>\r\nDATA\r\n".encode()

    def _follow(self, smtp: smtplib.SMTP) -> bytes:
        """The next message's commands, to go behind this one's final dot (RFC 2920 lets the
        message content open a group): the relay answers them while dispatch records this
        message's outcome, and one round trip per message is saved. Only with ``hold_dot`` and a
        pipelining relay; never when the connection is due to be renewed, nor again after a relay
        lost such commands (no reply came to them: a server that drops what it reads before it
        has answered the data would otherwise cost a timeout per message)."""
        limit = self.settings.max_per_connection
        if self._follow_lost or not (self.hold_dot and self.info.pipelining and self.next_envelope):
            return b""
        if limit and self._count >= limit:
            return b""
        envelope = self.next_envelope()
        if envelope is None or (self.info.size_limit and envelope.size > self.info.size_limit):
            return b""
        self._ahead = envelope
        return self._commands(smtp, envelope)

    def _run(self, hook: Callable[[], None]) -> None:
        """Run the hook; if it fails (the journal cannot be written) drop the session before the
        final dot, so the relay cancels the transaction (RFC 5321 4.1.1.10), and pass it on."""
        try:
            hook()
        except BaseException:
            self._drop()
            raise

    def send(self, sender: str, recipient: str, data: bytes, before_end: Callable[[], None]) -> Result:
        """One transaction for one recipient. ``before_end`` (the journal's "in flight" commit)
        runs before the final dot that ends the message: until that dot the relay cannot accept
        it, and a session lost before the dot must cancel the transaction (RFC 5321 4.1.1.10).

        Where it runs is chosen to overlap the relay's own work. With one connection
        (``hold_dot``) nothing else keeps the relay busy, so the message goes first and the hook
        runs while the relay reads it; only the dot waits, and the next message's commands go
        with it (:meth:`_follow`). With several, the relay has the other
        connections' messages to read and an extra write per message costs more than it saves,
        so the hook runs while the relay answers the pipelined MAIL, RCPT and DATA (if the relay
        then refuses, no data left and the caller puts the row back), or after a non-pipelining
        relay's 354."""
        limit = self.settings.max_per_connection
        if self._ahead is not None and self._ahead != Envelope(sender, recipient, len(data)):
            self._drop()  # commands went ahead for another message: no dot, so the relay cancels them
        if self._smtp is not None and limit and self._count >= limit:
            self.close()
        smtp = self._smtp or self.open()
        relay_limit = self.info.size_limit
        if relay_limit and len(data) > relay_limit:
            return Result(
                Status.FAILED, None,
                f"this message is {len(data):,} bytes; the relay takes at most {relay_limit:,} (SIZE)",
            )  # fmt: skip
        self._count += 1
        early = self.info.pipelining and not self.hold_dot
        went_ahead = self._ahead is not None  # (for this message: any other was dropped above)
        try:
            replies = self._envelope(smtp, sender, recipient, len(data), before_end if early else None)
            for stage, (code, reply) in zip(("MAIL", "RCPT", "DATA"), replies, strict=False):
                if code not in _EXPECTED[stage]:
                    self._reset(smtp, code)
                    return self._refused(stage, sender, code, _decode(reply))
            payload = dot_stuff(data)
            if self.hold_dot:
                smtp.send(payload)  # the relay reads it while the hook runs
                payload = b""
        except (OSError, smtplib.SMTPException) as err:
            self._drop()
            self._follow_lost = self._follow_lost or went_ahead
            return Result(Status.DEFERRED, None, f"connection lost before the message was complete ({err})")
        if not early:
            self._run(before_end)
        try:
            smtp.send(payload + END_OF_DATA + self._follow(smtp))
            if self.while_waiting is not None:
                self.while_waiting()
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
        if code // 100 not in (2, 4, 5):  # unreadable or out of turn (a second 354): it may have been
            # taken, so never retry
            self._drop()
            return Result(
                Status.UNKNOWN, None, f"unreadable reply to the message data: {_decode(reply)!r}", True
            )
        if code == 421:
            self._drop()
        return classify(code, _decode(reply), data_started=True)

    def _refused(self, stage: str, sender: str, code: int, text: str) -> Result:
        """A refusal before any data left. At MAIL it is about the sender or the message, never a
        recipient: a 5xx there stops the campaign with nobody marked failed."""
        result = classify(code, text)
        if stage == "MAIL" and code >= 500:
            if result.scope is Scope.MESSAGE and result.enhanced[2:] == "3.4":
                raise self._fail(f"refused the message size ({result.line()})", "lower the message size")
            raise self._fail(f"refused the sender {sender} ({result.line()})", "check DISPATCH_FROM")
        return result


def probe(settings: Settings, tokens: TokenSource | None = None) -> RelayInfo:
    """Open and close one session: finds a wrong password (or no usable OAuth2 token) or a dead
    server before sending, and reads what the relay advertises (its SIZE limit)."""
    transport = SmtpTransport(settings, tokens=tokens)
    try:
        transport.open()
        return transport.info
    finally:
        transport.close()
