"""SMTP reply classification (RFC 5321 / RFC 3463) and the implicit-TLS path."""

from __future__ import annotations

import ssl
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from dispatch.compose.issue import plan_issue
from dispatch.compose.message import WireMessage
from dispatch.errors import AbortError
from dispatch.send.delivery import SendOptions, run_send
from dispatch.send.transport import END_OF_DATA, Envelope, Scope, SmtpTransport, Status, classify, dot_stuff
from dispatch.settings import Settings
from dispatch.state.journal import Journal
from tests.smtp_servers import Handler, Server

R, M, Q = Scope.RECIPIENT, Scope.MESSAGE, Scope.RATE
D, F = Status.DEFERRED, Status.FAILED


# Real relays' texts (email-standards.md, section E2): the code and the enhanced code decide;
# words only refine a transient reply. "exceeded" in a permanent content rejection is not a rate.
@pytest.mark.parametrize(
    ("code", "text", "status", "scope", "hard_bounce"),
    [
        (250, "2.0.0 OK queued", Status.SENT, R, False),
        # Gmail
        (421, "4.7.28 Our system has detected an unusual rate of unsolicited mail", D, Q, False),
        (421, "4.7.0 This message is suspicious due to the very low reputation of the IP", D, Q, False),
        (450, "4.2.1 The user you are trying to contact is receiving mail at a rate that prevents "
              "additional messages from being delivered", D, R, False),
        (550, "5.1.1 The email account that you tried to reach does not exist", F, R, True),
        (550, "5.4.5 Daily user sending limit exceeded", F, Q, False),
        (452, "4.5.3 Your message has too many recipients", D, Q, False),
        (552, "5.2.2 The recipient's inbox is out of storage space and inactive", F, R, False),
        # Outlook.com / Exchange
        (550, "5.7.515 Access denied, sending domain example.org does not meet the required "
              "authentication level", F, M, False),
        (432, "4.3.2 Concurrent connections limit exceeded", D, Q, False),
        (432, "4.3.2 STOREDRV.ClientSubmit; sender thread limit exceeded", D, Q, False),
        (554, "5.2.0 STOREDRV.Submission.Exception:SubmissionQuotaExceededException; Failed to "
              "process message", F, Q, False),
        (550, "5.2.252 Sender throttled due to continuous invalid recipients errors", F, M, False),
        (421, "4.4.2 Message submission rate for this client has exceeded the configured limit", D, Q, False),
        # Amazon SES (no enhanced codes)
        (454, "Throttling failure: Maximum sending rate exceeded.", D, Q, False),
        (454, "Throttling failure: Daily message quota exceeded.", D, Q, False),
        # Postfix
        (450, "4.7.1 Error: too much mail from 127.0.0.1", D, Q, False),
        (450, "4.7.1 Error: too many recipients from 127.0.0.1", D, Q, False),
        (421, "4.7.0 Error: too many connections from 127.0.0.1", D, Q, False),
        (552, "5.3.4 Error: message file too big", F, M, False),
        (452, "4.3.1 Insufficient system storage", D, R, False),
        # content rejections are that recipient's, whatever words they use
        (550, "5.7.1 Message rejected: spam score exceeded threshold", F, R, False),
        (554, "5.7.1 Message rejected as spam", F, R, False),
        (550, "5.7.1 Too many messages, slow down", F, R, False),
        (554, "Transaction failed", F, R, False),
        # the sender's own mistakes: stop, and fail nobody
        (500, "Line too long", F, M, False),
        (500, "5.5.2 Error: bad syntax", F, M, False),
        (501, "5.5.4 Syntax error in parameters", F, M, False),
        (554, "5.6.0 Message contains invalid header", F, M, False),
        (552, "Message size exceeds fixed maximum message size", F, M, False),
        # transient, that recipient (or this connection)
        (421, "4.3.2 Service shutting down", D, R, False),
        (421, "4.7.0 Too many messages on this connection", D, R, False),
        (451, "4.3.0 Local error", D, R, False),
        (452, "4.2.2 Mailbox full", D, R, False),
        (451, "4.7.1 Greylisted, please try again later", D, R, False),
        (454, "4.7.0 Too many login attempts", D, Q, False),
        (553, "5.1.3 Bad recipient address syntax", F, R, True),
    ],
)  # fmt: skip
def test_replies_are_classified(
    code: int, text: str, status: Status, scope: Scope, hard_bounce: bool
) -> None:
    result = classify(code, text)
    assert result.status is status
    assert result.scope is scope
    assert result.hard_bounce is hard_bounce
    assert result.stops_campaign is (scope is not Scope.RECIPIENT)


@pytest.mark.parametrize(
    ("data", "wire"),
    [
        (b"a\r\n.b\r\n", b"a\r\n..b\r\n.\r\n"),
        (b".start\r\nend", b"..start\r\nend\r\n.\r\n"),
        (b"plain\r\n", b"plain\r\n.\r\n"),
    ],
)
def test_dot_stuffing(data: bytes, wire: bytes) -> None:
    assert dot_stuff(data) + END_OF_DATA == wire


def test_a_built_message_goes_as_it_is_and_anything_else_is_stuffed() -> None:
    built = WireMessage(b"Subject: x\r\n\r\n=2Eline\r\n")
    assert dot_stuff(built) is built
    assert dot_stuff(b"Subject: x\r\n\r\n.line\r\n") == b"Subject: x\r\n\r\n..line\r\n"


@pytest.mark.filterwarnings("ignore:Requiring AUTH while not requiring TLS")  # it is TLS: implicit
def test_implicit_tls_send(
    smtp_server: Callable[..., Server],
    server_tls: ssl.SSLContext,
    ca_file: str,
    article: Path,
    subscribers: Path,
    env: dict[str, str],
    tmp_path: Path,
) -> None:
    server = smtp_server(tls=server_tls, ca_file=ca_file, auth=True, implicit_tls=True)
    settings = Settings.from_mapping({**env, **server.env()})
    issue = plan_issue(article, subscribers, settings)
    summary = run_send(issue, Journal(tmp_path / "state"), SendOptions())
    assert summary.exit_code == 0
    assert sorted(r.rcpt_tos[0] for r in server.received) == [
        "ann@example.org",
        "bob@example.com",
        "cy@example.org",
    ]


def test_a_quota_reply_stops_the_campaign_and_defers_that_recipient(
    smtp_server: Callable[..., Server], article: Path, env: dict[str, str], tmp_path: Path
) -> None:
    from tests.smtp_servers import FaultPlan

    emails = [f"reader{i}@example.org" for i in range(5)]
    listing = tmp_path / "list.csv"
    listing.write_text("email\n" + "\n".join(emails) + "\n", encoding="utf-8")
    server = smtp_server(faults=FaultPlan(reject={emails[1]: "550 5.4.5 Daily sending quota exceeded"}))
    journal = Journal(tmp_path / "state")
    issue = plan_issue(article, listing, Settings.from_mapping({**env, **server.env()}))

    summary = run_send(issue, journal, SendOptions())

    assert summary.exit_code == 3
    assert "5.4.5" in summary.aborted
    assert (summary.sent, summary.failed, summary.deferred, summary.pending) == (1, 0, 1, 3)
    assert [r.rcpt_tos for r in server.received] == [[emails[0]]]
    # the next run (quota restored) picks up the deferred recipient and the rest
    server.handler.faults.reject.clear()
    again = run_send(plan_issue(article, listing, issue.settings), journal, SendOptions())
    assert again.exit_code == 0
    assert sorted(r.rcpt_tos[0] for r in server.received) == sorted(emails)


@pytest.mark.parametrize("connections", ["1", "4"])
@pytest.mark.parametrize("pipelining", [True, False], ids=["pipelined", "one-at-a-time"])
def test_the_hook_runs_before_the_final_dot_and_a_failing_hook_means_nothing_is_accepted(
    smtp_server: Callable[..., Server], env: dict[str, str], pipelining: bool, connections: str
) -> None:
    """The hook (the journal's "in flight" commit) runs once the message is on its way and
    before the final dot, so the relay can never have accepted it yet. If the hook fails, the
    session is dropped at once without the dot: the relay must cancel the transaction (RFC 5321
    4.1.1.10), nothing is delivered, no QUIT is read as message text, nothing waits for a
    timeout, and the next message opens a new session."""
    server = smtp_server(pipelining=pipelining)
    settings = Settings.from_mapping({**env, **server.env(), "DISPATCH_CONNECTIONS": connections})
    transport = SmtpTransport(settings)
    assert transport.hold_dot is (connections == "1")
    seen: list[int] = []
    message = WireMessage(b"Subject: hook\r\n\r\n" + b"body line\r\n" * 5000)

    def note() -> None:
        time.sleep(0.2)  # ample time for the relay to read all the message but its end
        seen.append(len(server.received))

    result = transport.send("news@example.org", "ann@example.org", message, note)
    assert (result.status, seen, transport.info.pipelining) == (Status.SENT, [0], pipelining)

    def broken() -> None:
        raise AbortError("the journal cannot be written")

    started = time.monotonic()
    with pytest.raises(AbortError, match="journal"):
        transport.send("news@example.org", "bob@example.com", message, broken)
    assert time.monotonic() - started < 2.0
    again = transport.send("news@example.org", "cy@example.org", message, lambda: None)
    transport.close()
    assert again.status is Status.SENT
    assert [r.rcpt_tos for r in server.received] == [["ann@example.org"], ["cy@example.org"]]
    assert all(r.data.endswith(b"body line\r\n") for r in server.received)


def test_the_next_message_goes_behind_the_dot_and_a_change_of_plan_delivers_nothing_extra(
    smtp_server: Callable[..., Server], env: dict[str, str]
) -> None:
    """With one connection and a pipelining relay, the next message's MAIL, RCPT and DATA go
    behind the final dot (RFC 2920 lets message content open a group). If the next message
    turns out to be another one (a retry, a reader suppressed meanwhile) or none (a stop), the
    transaction opened for it is cancelled by closing without a dot: nothing extra arrives."""
    server = smtp_server()
    transport = SmtpTransport(Settings.from_mapping({**env, **server.env(), "DISPATCH_CONNECTIONS": "1"}))
    message = WireMessage(b"Subject: next\r\n\r\n" + b"body line\r\n" * 2000)
    sender = "news@example.org"
    planned: list[str] = ["bob@example.com", "cy@example.org", "eve@example.org"]
    transport.next_envelope = lambda: Envelope(sender, planned[0], len(message))

    def send(to: str) -> Status:
        if to in planned:
            planned.remove(to)
        return transport.send(sender, to, message, lambda: None).status

    assert send("ann@example.org") is Status.SENT  # bob's commands went behind ann's dot
    assert send("bob@example.com") is Status.SENT  # bob's replies read; cy's commands went behind
    assert send("dan@example.org") is Status.SENT  # not cy after all: cancelled, a new session
    transport.close()  # eve's commands went behind dan's dot, and eve is not coming
    time.sleep(0.3)
    assert [r.rcpt_tos for r in server.received] == [
        ["ann@example.org"],
        ["bob@example.com"],
        ["dan@example.org"],
    ]
    assert all(r.data.endswith(b"body line\r\n") for r in server.received)


def test_without_pipelining_nothing_goes_behind_the_dot(
    smtp_server: Callable[..., Server], env: dict[str, str]
) -> None:
    server = smtp_server(pipelining=False)
    transport = SmtpTransport(Settings.from_mapping({**env, **server.env(), "DISPATCH_CONNECTIONS": "1"}))
    asked: list[bool] = []

    def following() -> Envelope:
        asked.append(True)
        return Envelope("news@example.org", "bob@example.com", 10)

    transport.next_envelope = following
    message = WireMessage(b"Subject: x\r\n\r\nbody\r\n")
    for to in ("ann@example.org", "bob@example.com"):
        assert transport.send("news@example.org", to, message, lambda: None).status is Status.SENT
    transport.close()
    assert asked == []
    assert [r.rcpt_tos for r in server.received] == [["ann@example.org"], ["bob@example.com"]]


class ForgetfulAfterData(Handler):
    """A relay that advertises PIPELINING yet throws away whatever it has read beyond the final
    dot when it takes a message: commands sent behind the dot are lost, and no reply comes."""

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        server._reader._buffer.clear()
        return await super().handle_DATA(server, session, envelope)


def test_a_relay_that_loses_commands_behind_the_dot_costs_one_timeout_not_one_per_message(
    smtp_server: Callable[..., Server], env: dict[str, str], tmp_path: Path, article: Path
) -> None:
    server = smtp_server(handler=ForgetfulAfterData())
    addresses = [f"reader{i}@example.org" for i in range(6)]
    listing = tmp_path / "list.csv"
    listing.write_text("email\n" + "\n".join(addresses) + "\n", encoding="utf-8")
    settings = Settings.from_mapping(
        {
            **env,
            **server.env(),
            "DISPATCH_SMTP_TIMEOUT": "1",
            "DISPATCH_RETRIES": "2",
            "DISPATCH_CONNECTIONS": "1",
        }
    )
    started = time.monotonic()
    summary = run_send(plan_issue(article, listing, settings), Journal(tmp_path / "state"), SendOptions())
    elapsed = time.monotonic() - started
    assert summary.exit_code == 0, summary.aborted
    assert (summary.sent, summary.unknown, summary.deferred) == (len(addresses), 0, 0)
    assert sorted(r.rcpt_tos[0] for r in server.received) == addresses
    assert elapsed < 4.0, f"{elapsed:.1f} s: the lost commands cost a timeout more than once"
