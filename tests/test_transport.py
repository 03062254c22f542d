"""SMTP reply classification (RFC 5321 / RFC 3463) and the implicit-TLS path."""

from __future__ import annotations

import ssl
from collections.abc import Callable
from pathlib import Path

import pytest

from dispatch.campaign import plan_issue
from dispatch.delivery import SendOptions, run_send
from dispatch.settings import Settings
from dispatch.state.journal import Journal
from dispatch.transport import Status, classify, dot_stuff
from tests.smtp_servers import Server


@pytest.mark.parametrize(
    ("code", "text", "status", "hard_bounce", "stops"),
    [
        (250, "2.0.0 OK queued", Status.SENT, False, False),
        (421, "4.7.0 Try again later, closing connection", Status.DEFERRED, False, True),
        (421, "4.3.2 Service shutting down", Status.DEFERRED, False, False),
        (450, "4.2.1 Mailbox busy", Status.DEFERRED, False, False),
        (451, "4.3.0 Local error", Status.DEFERRED, False, False),
        (452, "4.2.2 Mailbox full", Status.DEFERRED, False, False),
        (454, "4.7.0 Too many login attempts", Status.DEFERRED, False, True),
        (421, "4.7.28 Our system has detected an unusual rate", Status.DEFERRED, False, True),
        (550, "5.1.1 The email account does not exist", Status.FAILED, True, False),
        (553, "5.1.3 Bad recipient address syntax", Status.FAILED, True, False),
        (552, "5.2.2 Mailbox full and inactive", Status.FAILED, False, False),
        (550, "5.4.5 Daily sending quota exceeded", Status.FAILED, False, True),
        (550, "5.7.1 Too many messages, slow down", Status.FAILED, False, True),
        (554, "5.7.1 Message rejected as spam", Status.FAILED, False, False),
        (554, "Transaction failed", Status.FAILED, False, False),
        (451, "4.7.1 Greylisted, please try again later", Status.DEFERRED, False, False),
        (421, "4.7.0 Too many messages on this connection", Status.DEFERRED, False, False),
    ],
)
def test_replies_are_classified(code: int, text: str, status: Status, hard_bounce: bool, stops: bool) -> None:
    result = classify(code, text)
    assert result.status is status
    assert result.hard_bounce is hard_bounce
    assert result.stops_campaign is stops
    assert result.enhanced == text.split(maxsplit=1)[0] if text[0].isdigit() else result.enhanced == ""


@pytest.mark.parametrize(
    ("data", "wire"),
    [
        (b"a\r\n.b\r\n", b"a\r\n..b\r\n.\r\n"),
        (b".start\r\nend", b"..start\r\nend\r\n.\r\n"),
        (b"plain\r\n", b"plain\r\n.\r\n"),
    ],
)
def test_dot_stuffing(data: bytes, wire: bytes) -> None:
    assert dot_stuff(data) == wire


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
