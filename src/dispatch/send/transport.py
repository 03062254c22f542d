"""SMTP transactions: one message per transaction, sessions reused, pipelined where offered.

One :class:`SmtpTransport` owns one connection (opened by :mod:`dispatch.send.smtpsession`) and is
used by one thread. It talks MAIL, RCPT and DATA itself (rather than ``smtplib.sendmail``) so it
can tell a drop *before* the final dot (safe to retry: the relay cannot have accepted the
message) from a drop after it (the server may have accepted it: the outcome is unknown), so the
journal can record "in flight" while the relay is busy, yet always before the final dot that
lets the relay accept the message, and so every reply is checked to be the one its command calls
for (:mod:`dispatch.send.smtpwire`) before it is classified (:mod:`dispatch.send.replies`).
"""

from __future__ import annotations

import smtplib
from collections.abc import Callable
from dataclasses import dataclass, replace

from dispatch.compose.message import WireMessage
from dispatch.send.oauth import TokenSource
from dispatch.send.replies import Result, Scope, Status, classify, reply_scope, session_limit
from dispatch.send.smtpsession import (
    RelayInfo,
    TokenRefused,
    Unreachable,
    connect,
    failure,
    relay_text,
    tls_context,
)
from dispatch.send.smtpwire import Reply, first_line, first_refusal, out_of_place, read_reply, unread
from dispatch.settings import Settings
from dispatch.state.logins import LOGIN_HINT

__all__ = [
    "END_OF_DATA", "Envelope", "RelayInfo", "Result", "Scope", "SmtpTransport", "Status", "Unreachable",
    "classify", "dot_stuff", "probe", "reply_scope", "tls_context",
]  # fmt: skip

FINAL_REPLY_TIMEOUT = 600.0  # RFC 5321 §4.5.3.2.6: 10 minutes for the reply to the final dot
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
        self._count = 0  # transactions begun on this session
        self._session_cap = 0  # the relay's per-session limit, once it has said so (0: none seen)
        self._renewed = False  # the last transaction met that limit: a new session was asked for
        self.info = RelayInfo()

    def open(self) -> smtplib.SMTP:
        """Connect, secure and log in (:func:`~dispatch.send.smtpsession.connect`). A relay that refuses
        an OAuth2 token gets one more session, with a renewed token."""
        try:
            self._smtp, self.info = connect(self.settings, self.tokens)
        except TokenRefused as refused:
            if self.tokens is None:
                raise
            self.tokens.renew(refused.token)
            try:
                self._smtp, self.info = connect(self.settings, self.tokens)
            except TokenRefused as again:
                raise failure(
                    self.settings,
                    f"refused the OAuth2 login for {self.settings.smtp_user!r}, also with a renewed token "
                    f"({again.reply})",
                    f"check that the mailbox may send over SMTP with OAuth2, or {LOGIN_HINT}",
                ) from again
        self._count = 0
        return self._smtp

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

    def _reset(self, smtp: smtplib.SMTP) -> None:
        """RSET after a refusal; a session that does not answer it with a clean 250 is dropped."""
        try:
            smtp.send(b"RSET\r\n")
            reply = read_reply(smtp)
        except (OSError, smtplib.SMTPException):
            self._drop()
            return
        if reply.problem or reply.code != 250 or unread(smtp):
            self._drop()

    def _limit(self) -> int:
        """Messages per session: DISPATCH_MAX_PER_CONNECTION or the relay's own limit, the lower."""
        limits = [n for n in (self.settings.max_per_connection, self._session_cap) if n]
        return min(limits, default=0)

    def _envelope(
        self, smtp: smtplib.SMTP, envelope: Envelope, hook: Callable[[], None] | None
    ) -> list[Reply]:
        """MAIL, RCPT and DATA with their replies: in one round trip when the relay pipelines,
        else one at a time, stopping at the first that does not let the transaction go on.
        ``hook`` (if any) runs while the relay reads the pipelined commands."""
        if not self.info.pipelining:
            replies: list[Reply] = []
            for stage, command in zip(("MAIL", "RCPT", "DATA"), self._lines(smtp, envelope), strict=True):
                smtp.putcmd(command)
                replies.append(read_reply(smtp))
                if not replies[-1].accepts(stage):
                    break
            return replies
        if self._ahead == envelope:
            self._ahead = None  # sent behind the last message's dot: only the replies to read
        else:
            smtp.send(self._commands(smtp, envelope))
        if hook is not None:
            self._run(hook)
        replies = [read_reply(smtp)]
        while len(replies) < 3 and replies[-1].code != 421 and not replies[-1].problem:
            replies.append(read_reply(smtp))  # after a 421 the relay hangs up: read no further
        return replies

    @staticmethod
    def _lines(smtp: smtplib.SMTP, envelope: Envelope) -> tuple[str, str, str]:
        size = f" SIZE={envelope.size}" if smtp.has_extn("size") else ""
        return f"MAIL FROM:<{envelope.sender}>{size}", f"RCPT TO:<{envelope.recipient}>", "DATA"

    def _commands(self, smtp: smtplib.SMTP, envelope: Envelope) -> bytes:
        """MAIL, RCPT and DATA for one pipelined group."""
        return "".join(f"{line}\r\n" for line in self._lines(smtp, envelope)).encode()

    def _follow(self, smtp: smtplib.SMTP) -> bytes:
        """The next message's commands, to go behind this one's final dot (RFC 2920 lets the
        message content open a group): the relay answers them while dispatch records this
        message's outcome, and one round trip per message is saved. Only with ``hold_dot`` and a
        pipelining relay; never when the connection is due to be renewed, nor again after a relay
        lost such commands (no reply came to them: a server that drops what it reads before it
        has answered the data would otherwise cost a timeout per message)."""
        limit = self._limit()
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
        relay's 354.

        A reply out of place (see :mod:`dispatch.send.smtpwire`) drops the connection: before the
        final dot the message is deferred, after it unknown; no data goes after a refusal. A
        relay's per-session limit met on a session that carried messages before sends the same
        message once more, at once, on a new session (the hook does not run twice)."""
        hook = _Once(before_end)
        envelope = Envelope(sender, recipient, len(data))
        result = self._transact(envelope, data, hook)
        if self._renewed:  # the new session is fresh: it cannot ask for another
            result = self._transact(envelope, data, hook)
        return result

    def _transact(self, envelope: Envelope, data: bytes, hook: Callable[[], None]) -> Result:
        self._renewed = False
        if self._ahead is not None and self._ahead != envelope:
            self._drop()  # commands went ahead for another message: no dot, so the relay cancels them
        limit = self._limit()
        if self._smtp is not None and limit and self._count >= limit:
            self.close()
        smtp = self._smtp or self.open()
        relay_limit = self.info.size_limit
        if relay_limit and envelope.size > relay_limit:
            return Result(
                Status.FAILED, None,
                f"this message is {envelope.size:,} bytes; the relay takes at most {relay_limit:,} (SIZE)",
            )  # fmt: skip
        self._count += 1
        early = self.info.pipelining and not self.hold_dot
        went_ahead = self._ahead is not None  # (for this message: any other was dropped above)
        try:
            if not went_ahead and (stray := unread(smtp)):
                return self._broken(f"a reply came when no command was waiting for one: {first_line(stray)}")
            replies = self._envelope(smtp, envelope, hook if early else None)
            refused = self._judge(smtp, envelope.sender, replies)
            if refused is not None:
                return refused
            payload = dot_stuff(data)
            if self.hold_dot:
                smtp.send(payload)  # the relay reads it while the hook runs
                payload = b""
        except (OSError, smtplib.SMTPException) as err:
            self._drop()
            self._follow_lost = self._follow_lost or went_ahead
            return Result(
                Status.DEFERRED, None, f"connection lost before the message was complete ({relay_text(err)})"
            )
        if not early:
            self._run(hook)
        if stray := unread(smtp):  # e.g. the reply to a dot not sent yet: the dot must not go
            return self._broken(f"a reply came before the message's final dot: {first_line(stray)}")
        return self._end(smtp, payload)

    def _end(self, smtp: smtplib.SMTP, payload: bytes) -> Result:
        """Send the rest of the message and its final dot (with the next message's commands),
        and read the reply."""
        try:
            smtp.send(payload + END_OF_DATA + self._follow(smtp))
            if self.while_waiting is not None:
                self.while_waiting()
            if smtp.sock is not None:  # a spurious timeout here would mean a duplicate or a loss
                smtp.sock.settimeout(max(self.settings.smtp_timeout, FINAL_REPLY_TIMEOUT))
            reply = read_reply(smtp)
            if smtp.sock is not None:
                smtp.sock.settimeout(self.settings.smtp_timeout)
        except (OSError, smtplib.SMTPException) as err:
            self._drop()
            return Result(
                Status.UNKNOWN,
                None,
                f"connection lost waiting for the server's reply ({relay_text(err)})",
                True,
            )
        if reply.problem or not (reply.code == 250 or reply.refusal):
            # unreadable, or out of turn (a second 354, a 251): it may have been taken, so never retry
            self._drop()
            what = reply.problem or f"{reply.code} where 250 or a refusal belongs"
            said = relay_text(f"{reply.code} {reply.text}" if reply.code > 0 else reply.text)
            return Result(
                Status.UNKNOWN,
                None,
                f"protocol error in the reply to the message data ({what}): {said}",
                True,
            )
        result = classify(reply.code, reply.text, data_started=True)
        if reply.refusal and session_limit(reply.code, reply.text):  # refused: safe to send again
            return self._session_full(result, hang_up=reply.code == 421)
        if reply.code == 421:
            self._drop()
        return result

    def _broken(self, what: str) -> Result:
        """A reply out of place before the final dot: drop the session, so the relay cancels the
        transaction, and defer the message (nothing can have been taken)."""
        self._drop()
        what = relay_text(what)
        return Result(
            Status.DEFERRED, None,
            f"protocol error ({what}): the connection was dropped before the message's final dot, so "
            "nothing was delivered",
        )  # fmt: skip

    def _judge(self, smtp: smtplib.SMTP, sender: str, replies: list[Reply]) -> Result | None:
        """None when MAIL, RCPT and DATA were accepted; else what became of the message (no data
        left), the session cleaned up: reset after a refusal, dropped after a 421 or when the
        relay opened the data despite a refusal (not even an empty message goes)."""
        wrong = out_of_place(replies)
        if wrong:
            return self._broken(wrong)
        refusal = first_refusal(replies)
        if refusal is None:
            return None
        stage, reply = refusal
        result = classify(reply.code, reply.text)
        opened = replies[-1].code == 354
        if session_limit(reply.code, reply.text):
            return self._session_full(result, hang_up=opened or reply.code == 421)
        if opened or reply.code == 421:
            self._drop()
        else:
            self._reset(smtp)
        if stage == "MAIL" and reply.code >= 500:  # about the sender or the message: stop the campaign
            if result.scope is Scope.MESSAGE and result.enhanced[2:] == "3.4":
                raise failure(
                    self.settings, f"refused the message size ({result.line()})", "lower the message size"
                )
            setting, bounces = "DISPATCH_FROM", self.settings.bounce_address.partition("@")
            if bounces[1]:  # bounces+TOKEN@…: the address it was made from, not the reader's token
                setting, sender = "DISPATCH_BOUNCE_ADDRESS", f"{bounces[0]}+…@{bounces[2]}"
            raise failure(self.settings, f"refused the sender {sender} ({result.line()})", f"check {setting}")
        return result

    def _session_full(self, result: Result, *, hang_up: bool) -> Result:
        """The relay's limit on one session. After messages on this session: remember the limit
        (the next sessions end before it), end this one and ask :meth:`send` for a new one. On a
        session's first message it is no limit a new session lifts: the run stops, nobody blamed."""
        if self._count <= 1:
            self._drop()
            return replace(result, status=Status.DEFERRED, scope=Scope.RATE)
        self._session_cap = min(self._session_cap or self._count, self._count - 1)
        self._renewed = True
        if hang_up:
            self._drop()
        else:
            self.close()
        return result


class _Once:
    """A hook that runs once however often it is called (a message sent again on a new session
    is in flight already)."""

    def __init__(self, hook: Callable[[], None]) -> None:
        self._hook: Callable[[], None] | None = hook

    def __call__(self) -> None:
        if self._hook is not None:
            self._hook()
            self._hook = None


def probe(settings: Settings, tokens: TokenSource | None = None) -> RelayInfo:
    """Open and close one session: finds a wrong password (or no usable OAuth2 token) or a dead
    server before sending, and reads what the relay advertises (its SIZE limit)."""
    transport = SmtpTransport(settings, tokens=tokens)
    try:
        transport.open()
        return transport.info
    finally:
        transport.close()
