"""``dispatch inbound`` on standard input and a Maildir, after a real send to an aiosmtpd
relay: every kind of report in the shapes real senders give them, each acted on once, and
hostile input (malformed MIME, huge messages, forged tokens, other lists and secrets, readers
never sent to) that changes nothing and loses nothing. Every test that sends runs on both
backends: a state folder, and PostgreSQL (DISPATCH_STATE_URL)."""

from __future__ import annotations

import base64
import json
import os
import pty
import re
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from typer.testing import CliRunner

from dispatch.cli import app
from dispatch.state import backend
from dispatch.unsubscribe.address_tokens import BOUNCE, make
from tests.inbound_helpers import (  # noqa: F401 - fixtures
    SECRET,
    Sent,
    make_sent_fixture,
    sent_fixture,
    settings_file,
    state_settings,
)
from tests.inbound_samples import (
    OOO_STYLES,
    STYLES,
    complaint,
    dsn,
    exim_bounce,
    header,
    mailto_of,
    mailto_unsubscribe,
    out_of_office,
    qmail_bounce,
    received_copy,
    redact,
    reply,
    without_headers,
)
from tests.smtp_servers import Server


@pytest.fixture(name="inbound_state", params=["sqlite", "postgresql"])
def inbound_state_fixture(request: pytest.FixtureRequest) -> dict[str, str]:
    """Every test of this module that sends runs on a state folder, then on PostgreSQL."""
    return state_settings(request, request.param)


# ----------------------------------------------------------------------------- bounces


@pytest.mark.parametrize("style", STYLES)
def test_a_hard_bounce_in_every_standard_shape_suppresses_the_reader(sent: Sent, style: str) -> None:
    data, mail_from = sent.copy_of("bob@example.com")
    result = sent.inbound(dsn(mail_from, "bob@example.com", received_copy(data, mail_from), style=style))
    assert sent.suppressed() == {"bob@example.com": ("bounced", "*")}
    assert (
        "hard bounce (5.1.1): bob@example.com suppressed, reason bounced (campaign spring)" in result.stderr
    )


def test_a_bounce_in_no_standard_form_is_read_by_the_fallback(sent: Sent) -> None:
    data, mail_from = sent.copy_of("cy@example.com")
    sent.inbound(qmail_bounce(mail_from, "cy@example.com", data))
    assert sent.suppressed() == {"cy@example.com": ("bounced", "*")}


def test_exims_bounce_marked_auto_submitted_is_a_hard_bounce_not_an_auto_reply(sent: Sent) -> None:
    data, mail_from = sent.copy_of("cy@example.com")
    result = sent.inbound(exim_bounce(mail_from, "cy@example.com", received_copy(data, mail_from)))
    assert sent.suppressed() == {"cy@example.com": ("bounced", "*")}
    assert "auto-reply" not in result.stderr


@pytest.mark.parametrize(
    ("status", "words"),
    [
        ("5.7.26", "This mail is unauthenticated"),
        ("5.7.1", "Message rejected as spam by Content Filtering"),
        ("5.7.1", "Service unavailable; client host blocked using Spamhaus"),
        ("5.3.4", "message file too big"),
        ("5.6.0", "bad content"),
    ],
)
def test_a_permanent_failure_about_the_sender_or_the_message_counts_as_soft(
    sent: Sent, status: str, words: str
) -> None:
    """A refusal of the message or its sender (unauthenticated, a spam block, too big) is no
    proof that the address is dead: one broken DKIM record would otherwise suppress every reader
    at that provider on every list."""
    data, mail_from = sent.copy_of("bob@example.com")
    result = sent.inbound(dsn(mail_from, "bob@example.com", data, status=status, diagnostic=words))
    assert sent.suppressed() == {}
    assert f"soft bounce ({status}; 1 of 3 in a row): bob@example.com counted" in result.stderr
    assert sent.status("spring")["soft_bounced"] == 1
    assert "soft-bounced 1" in sent.dispatch("status", "spring").stdout  # the human form says so too


@pytest.mark.parametrize(
    ("status", "words"),
    [
        ("5.7.1", "<bob@example.com>: Recipient address rejected: Access denied"),
        ("5.7.1", "<bob@example.com>: Recipient address rejected: spam trap"),
        ("5.1.1", "User unknown"),
    ],
)
def test_a_refused_recipient_is_a_hard_bounce(sent: Sent, status: str, words: str) -> None:
    """Postfix's access-map REJECT says 554 5.7.1 "Recipient address rejected": about the
    reader, not the sender, so suppressed at once like 5.1.1."""
    data, mail_from = sent.copy_of("bob@example.com")
    sent.inbound(dsn(mail_from, "bob@example.com", data, status=status, diagnostic=words))
    assert sent.suppressed() == {"bob@example.com": ("bounced", "*")}


def test_a_report_read_against_another_state_is_kept_and_read_again_against_the_right_one(
    sent: Sent, tmp_path: Path
) -> None:
    """A token of ours naming a campaign this state does not hold: the wrong state (a mistyped
    DISPATCH_STATE_DIR). The message is kept, not remembered, and not lost."""
    data, mail_from = sent.copy_of("bob@example.com")
    report = dsn(mail_from, "bob@example.com", data)
    other = tmp_path / "other.env"
    other.write_text(
        "".join(
            line + "\n"
            for line in sent.env.read_text(encoding="utf-8").splitlines()
            if not line.startswith(("DISPATCH_STATE_DIR", "DISPATCH_STATE_URL"))
        )
        + f"DISPATCH_STATE_DIR='{tmp_path / 'empty-state'}'\n",
        encoding="utf-8",
    )
    other.chmod(0o600)
    wrong = sent.runner.invoke(app, ["inbound", "--env-file", str(other)], input=report)
    assert wrong.exit_code == 0, wrong.stderr
    assert "hard bounce, kept for a person: its token is ours but names a campaign" in wrong.stderr
    assert "DISPATCH_STATE_DIR" in wrong.stderr
    assert [p.read_bytes() for p in (tmp_path / "empty-state" / "inbound-kept").iterdir()] == [report]
    assert sent.suppressed() == {}
    right = sent.inbound(report)
    assert "bob@example.com suppressed, reason bounced" in right.stderr
    assert sent.suppressed() == {"bob@example.com": ("bounced", "*")}


def test_a_bounce_whose_relay_lower_cased_or_upper_cased_the_token_still_counts(sent: Sent) -> None:
    data, mail_from = sent.copy_of("ann@example.com")
    sent.inbound(dsn(mail_from.upper(), "ann@example.com", data, style="no-original"))
    assert sent.suppressed() == {"ann@example.com": ("bounced", "*")}


def test_soft_bounces_count_once_per_issue_and_suppress_after_three_in_a_row(sent: Sent) -> None:
    sent.send("summer")
    sent.send("autumn")
    for n, campaign in enumerate(("spring", "summer", "autumn"), start=1):
        data, mail_from = sent.copy_of("dee@example.com", campaign)
        for action, status in (("delayed", "4.4.1"), ("failed", "4.2.2")):  # two reports, one issue
            result = sent.inbound(dsn(mail_from, "dee@example.com", data, status=status, action=action))
        if n < 3:
            assert f"{n} of 3 in a row" in result.stderr
            assert sent.suppressed() == {}
    assert sent.suppressed() == {"dee@example.com": ("bounced", "*")}
    assert "3 of 3 in a row" in result.stderr
    assert sent.status("autumn")["bounced"] == 1
    assert sent.status("spring")["soft_bounced"] == 1


def test_a_soft_bounce_streak_is_broken_by_an_issue_that_did_not_bounce(sent: Sent) -> None:
    sent.send("summer")
    sent.send("autumn")
    for campaign in ("spring", "autumn"):
        data, mail_from = sent.copy_of("dee@example.com", campaign)
        result = sent.inbound(dsn(mail_from, "dee@example.com", data, status="4.2.2"))
    assert "1 of 3 in a row" in result.stderr
    assert sent.suppressed() == {}


# ----------------------------------------------------------------------------- complaints


CLUES = {
    "envelope only": lambda data, mail_from, reader: complaint(
        without_headers(redact(data, reader), "List-Unsubscribe", "Message-ID"), mail_from=mail_from
    ),
    "return-path only": lambda data, mail_from, reader: complaint(
        without_headers(redact(received_copy(data, mail_from), reader), "List-Unsubscribe", "Message-ID")
    ),
    "unsubscribe link only": lambda data, mail_from, reader: complaint(
        without_headers(redact(data, reader), "Message-ID"), headers_only=True
    ),
    "one-click link only": lambda data, mail_from, reader: complaint(
        re.sub(rb",\s*<mailto:[^>]*>", b"", without_headers(redact(data, reader), "Message-ID"))
    ),
    "message-id only": lambda data, mail_from, reader: complaint(
        without_headers(redact(data, reader), "List-Unsubscribe")
    ),
}


@pytest.mark.parametrize("clue", list(CLUES))
def test_a_complaint_with_the_recipient_redacted_suppresses_the_reader(sent: Sent, clue: str) -> None:
    data, mail_from = sent.copy_of("ann@example.com")
    report = CLUES[clue](data, mail_from, "ann@example.com")
    assert b"ann@example.com" not in report
    result = sent.inbound(report)
    assert sent.suppressed() == {"ann@example.com": ("complained", "*")}, result.stderr
    assert sent.status()["complained"] == 1


@pytest.mark.parametrize("feedback_type", ["auth-failure", "not-spam", "virus"])
def test_a_feedback_report_that_is_no_complaint_changes_nothing(sent: Sent, feedback_type: str) -> None:
    data, mail_from = sent.copy_of("ann@example.com")
    result = sent.inbound(complaint(data, mail_from=mail_from, feedback_type=feedback_type))
    assert sent.suppressed() == {}
    assert "complaint" not in result.stderr.split(": ignored")[0].split(": ")[-1]


# ----------------------------------------------------------------------------- mailto unsubscribes


@pytest.mark.parametrize(
    ("mailto", "where"),
    [
        ("", "the bounce address"),
        ("unsubscribe+{token}@example.org", "its own address"),
        ("leave@example.org?subject=please%20remove%20me", "the subject"),
        ("leave@example.org", "the subject"),
    ],
)
def test_a_mailto_unsubscribe_unsubscribes_the_reader_from_this_list(
    make_sent: Callable[..., Sent], mailto: str, where: str
) -> None:
    sent = make_sent(DISPATCH_UNSUBSCRIBE_MAILTO=mailto)
    data, _ = sent.copy_of("cy@example.com")
    uri = mailto_of(data)
    assert "cy@example.com" not in uri
    assert "cy%40" not in uri
    if where == "the bounce address":
        assert uri.startswith("mailto:bounces+u-")
    sent.inbound(mailto_unsubscribe(uri, "cy@example.com"))
    assert sent.suppressed() == {"cy@example.com": ("unsubscribed", "news.example.org")}
    assert sent.status()["unsubscribed"] == 1
    assert "List-Unsubscribe=One-Click" in header(data, "List-Unsubscribe-Post")  # RFC 8058 kept
    assert header(data, "List-Unsubscribe").startswith("<https://")


# ----------------------------------------------------------------------------- ignored


@pytest.mark.parametrize("style", OOO_STYLES)
def test_an_out_of_office_reply_changes_nothing(sent: Sent, style: str) -> None:
    data, mail_from = sent.copy_of("bob@example.com")
    result = sent.inbound(out_of_office(mail_from, "bob@example.com", header(data, "Subject"), style=style))
    assert "auto-reply: ignored" in result.stderr
    assert sent.suppressed() == {}


def test_a_reply_and_a_delivery_notice_change_nothing(sent: Sent) -> None:
    data, mail_from = sent.copy_of("bob@example.com")
    sent.inbound(reply("news@example.org", "bob@example.com", header(data, "Subject")))
    sent.inbound(dsn(mail_from, "bob@example.com", data, status="2.0.0", action="delivered"))
    assert sent.suppressed() == {}


def test_the_same_report_twice_counts_once(sent: Sent) -> None:
    data, mail_from = sent.copy_of("bob@example.com")
    report = dsn(mail_from, "bob@example.com", data, message_id="<report-1@mx.example.com>")
    sent.inbound(report)
    again = sent.inbound(b"Delivered-To: " + mail_from.encode() + b"\r\n" + report, "--json")
    assert json.loads(again.stdout)["outcomes"] == {"read before": 1}
    assert sent.status()["bounced"] == 1


# ----------------------------------------------------------------------------- hostile input


def test_a_nul_character_in_a_message_id_is_read_like_any_other_character(sent: Sent) -> None:
    """PostgreSQL's text holds no NUL: a report whose Message-ID (or whose original's) has one
    is still read, once, and never turned into a state that "cannot be written"."""
    data, mail_from = sent.copy_of("bob@example.com")
    report = dsn(mail_from, "bob@example.com", data, message_id="<re\x00port@mx.example.com>")
    assert json.loads(sent.inbound(report, "--json").stdout)["outcomes"] == {"suppressed": 1}
    assert json.loads(sent.inbound(report, "--json").stdout)["outcomes"] == {"read before": 1}
    data, _ = sent.copy_of("ann@example.com")
    original = re.sub(rb"(?im)^Message-ID:[^\r\n]*", b"Message-ID: <x\x00y@example.org>", data)
    result = sent.inbound(complaint(without_headers(redact(original, "ann@example.com"), "List-Unsubscribe")))
    assert "complaint: ignored" in result.stderr
    assert sent.suppressed() == {"bob@example.com": ("bounced", "*")}


def test_forged_foreign_and_unknown_tokens_change_nothing(sent: Sent) -> None:
    data, mail_from = sent.copy_of("bob@example.com")

    def address(token: str) -> str:
        return f"bounces+{token}@news.example.org"

    forged = address(base64.b32encode(os.urandom(20)).decode().lower())
    other_secret = address(
        make(
            "another-secret-0123456789-abcdefghijklm", BOUNCE, "news.example.org", "spring", "bob@example.com"
        )
    )
    other_list = address(make(SECRET, BOUNCE, "other.example.org", "spring", "bob@example.com"))
    for to in (forged, other_secret, other_list):
        result = sent.inbound(dsn(to, "bob@example.com", received_copy(data, mail_from)))
        assert "not one of ours" in result.stderr
    stranger = address(make(SECRET, BOUNCE, "news.example.org", "spring", "zed@example.com"))
    no_campaign = address(make(SECRET, BOUNCE, "news.example.org", "winter", "bob@example.com"))
    for to, why in (
        (stranger, "nobody the campaign reached"),
        (no_campaign, "campaign this state (folder or database) does not"),
    ):
        result = sent.inbound(dsn(to, "zed@example.com", b"Subject: x\r\n\r\nx\r\n"))
        assert why in result.stderr
    assert sent.suppressed() == {}


def test_a_report_naming_a_reader_without_proof_changes_nothing(sent: Sent) -> None:
    sent.inbound(dsn("bounces@news.example.org", "bob@example.com", b"", style="no-original"))
    sent.inbound(
        dsn("bounces@news.example.org", "nobody@example.com", b"Message-ID: <x@y>\r\n\r\n", style="gmail")
    )
    assert sent.suppressed() == {}


def test_without_a_bounce_address_a_named_reader_of_a_campaign_is_enough(
    make_sent: Callable[..., Sent],
) -> None:
    sent = make_sent(DISPATCH_BOUNCE_ADDRESS="")
    _, mail_from = sent.copy_of("bob@example.com")
    assert mail_from == "news@example.org"  # as before: MAIL FROM is the From address
    sent.inbound(dsn(mail_from, "bob@example.com", b"", style="no-original"))
    sent.inbound(dsn(mail_from, "stranger@example.com", b"", style="no-original"))
    assert sent.suppressed() == {"bob@example.com": ("bounced", "*")}


UNREADABLE = {
    "empty": b"",
    "garbage": bytes(range(256)) * 10,
    "no header": b"just some text\r\nand more\r\n",
    "report without its status part": b"From: MAILER-DAEMON@mx.example.com\r\nSubject: Undelivered Mail\r\n"
    b'Content-Type: multipart/report; report-type=delivery-status; boundary="B"\r\n\r\n'
    b"--B\r\nContent-Type: text/plain\r\n\r\nSomething went wrong.\r\n--B--\r\n",
    "truncated report": dsn("bounces@news.example.org", "bob@example.com", b"", style="no-original")[:420],
    "report without a boundary": b"From: MAILER-DAEMON@x.example\r\nContent-Type: multipart/report; "
    b"report-type=delivery-status\r\n\r\n--B\r\nContent-Type: message/delivery-status\r\n\r\n--B--\r\n",
    "nested too deep": b"From: MAILER-DAEMON@x.example\r\nSubject: Undelivered Mail\r\n"
    + b"".join(
        b'Content-Type: multipart/mixed; boundary="b%d"\r\n\r\n--b%d\r\n' % (i, i) for i in range(3000)
    ),
    "huge": b"From: a@example.com\r\nSubject: big\r\n\r\n" + b"x" * 30_000_100,
}


@pytest.mark.parametrize("name", list(UNREADABLE))
def test_an_unreadable_message_is_kept_whole_and_reported(sent: Sent, name: str) -> None:
    data = UNREADABLE[name]
    result = sent.inbound(data, "--json")
    summary = json.loads(result.stdout)
    assert summary["outcomes"] == {"kept": 1}, result.stderr
    kept = list((sent.tmp / "state" / "inbound-kept").iterdir())
    assert [p.read_bytes() for p in kept] == [data]
    assert oct(kept[0].stat().st_mode & 0o777) == "0o600"
    assert "unreadable, kept for a person" in result.stderr
    assert sent.suppressed() == {}


def test_a_large_report_quoting_a_large_original_is_read(sent: Sent) -> None:
    data, mail_from = sent.copy_of("bob@example.com")
    big = (
        data.replace(b"\r\n\r\n", b"\r\nX-Padding: " + b"p" * 70 + b"\r\n\r\n", 1)
        + b"y" * 5_000_000
        + b"\r\n"
    )
    sent.inbound(dsn(mail_from, "bob@example.com", big))
    assert sent.suppressed() == {"bob@example.com": ("bounced", "*")}


def test_what_a_report_says_is_shown_as_inert_text(sent: Sent) -> None:
    _, mail_from = sent.copy_of("bob@example.com")
    result = sent.inbound(out_of_office(mail_from, "bob@example.com", "\x1b]0;owned\x07 \u202egnp.exe"))
    assert "\x1b" not in result.stderr
    assert "\u202e" not in result.stderr
    assert SECRET not in result.stderr + result.stdout
    assert mail_from not in result.stderr  # no token is ever printed


# ----------------------------------------------------------------------------- sources and exits


def test_a_maildir_is_read_once_and_kept_apart(sent: Sent) -> None:
    box = sent.tmp / "box"
    for sub in ("cur", "new", "tmp"):
        (box / sub).mkdir(parents=True)
    data, mail_from = sent.copy_of("bob@example.com")
    (box / "new" / "1.report").write_bytes(dsn(mail_from, "bob@example.com", data))
    (box / "cur" / "2.ooo:2,S").write_bytes(out_of_office(mail_from, "bob@example.com", "news"))
    (box / "new" / "3.bad").write_bytes(b"")
    result = sent.dispatch("inbound", "--maildir", box, "--json")
    assert result.exit_code == 0, result.stderr
    assert json.loads(result.stdout)["outcomes"] == {"suppressed": 1, "ignored": 1, "kept": 1}
    assert sorted(p.name for p in (box / ".processed" / "cur").iterdir()) == ["1.report:2,S", "2.ooo:2,S"]
    assert [p.name for p in (box / ".unreadable" / "cur").iterdir()] == ["3.bad:2,S"]
    assert not list((box / "new").iterdir())
    assert json.loads(sent.dispatch("inbound", "--maildir", box, "--json").stdout)["read"] == 0


def test_a_folder_that_is_no_maildir_and_two_sources_are_refused(sent: Sent) -> None:
    result = sent.dispatch("inbound", "--maildir", sent.tmp)
    assert result.exit_code == 2
    assert "is not a Maildir" in result.stderr
    both = sent.dispatch("inbound", "--maildir", sent.tmp, "--imap")
    assert both.exit_code == 2
    assert "give one of them" in both.stderr


# (a database that is down: tests/test_inbound_postgresql.py)
@pytest.mark.parametrize("inbound_state", ["sqlite"], indirect=True)
def test_a_state_that_cannot_be_written_asks_the_mail_system_to_retry(sent: Sent) -> None:
    feedback = sent.tmp / "state" / "feedback.sqlite3"
    feedback.write_bytes(b"not a database at all" * 100)
    data, mail_from = sent.copy_of("bob@example.com")
    result = sent.dispatch("inbound", stdin=dsn(mail_from, "bob@example.com", data))
    assert result.exit_code == 75, result.stderr
    assert "retries" in result.stderr or "again later" in result.stderr
    assert "Traceback" not in result.stderr


def test_a_new_state_nobody_named_is_not_created(
    tmp_path: Path, runner: CliRunner, plain_server: Server
) -> None:
    env = settings_file(tmp_path, plain_server, DISPATCH_STATE_DIR="")
    result = runner.invoke(app, ["inbound", "--env-file", str(env)], input=b"Subject: x\r\n\r\nx\r\n")
    assert result.exit_code == 2
    assert "DISPATCH_STATE_DIR" in result.stderr
    assert not (tmp_path / "dispatch-state").exists()


# ----------------------------------------------------------------------------- counts where people look


def test_status_counts_one_click_unsubscribes_for_the_issue_that_had_reached_the_reader(sent: Sent) -> None:
    sent.send("summer")
    with backend.open_suppressions(sent.location()) as store:
        store.add("ann@example.com", "unsubscribed", scope="news.example.org", source="serve")
    assert sent.status("summer")["unsubscribed"] == 1
    assert sent.status("summer")["unsubscribed_one_click"] == 1
    assert sent.status("spring")["unsubscribed"] == 0
    listing = json.loads(sent.dispatch("status", "--json").stdout)["campaigns"]
    assert {c["campaign"]: c["unsubscribed"] for c in listing} == {"summer": 1, "spring": 0}
    text = sent.dispatch("status", "summer").stdout
    assert "unsubscribed 1" in text
    assert "delivered 4" in text


def test_the_sign_off_page_of_the_next_issue_says_who_is_suppressed_and_why(sent: Sent) -> None:
    data, mail_from = sent.copy_of("bob@example.com")
    sent.inbound(dsn(mail_from, "bob@example.com", data))
    sent.inbound(complaint(data, mail_from=mail_from.replace("bob", "x")))  # a forged one: ignored
    data, mail_from = sent.copy_of("ann@example.com")
    sent.inbound(complaint(redact(data, "ann@example.com"), mail_from=mail_from))
    issue = sent.tmp / "next.md"
    issue.write_text("---\ntitle: Next\ncampaign: next\n---\n\nHi.\n", encoding="utf-8")
    out = sent.tmp / "preview"
    result = sent.dispatch("send", issue, "-s", sent.tmp / "list.csv", "--dry-run", "--out", out)
    assert result.exit_code == 0, result.stderr
    page = (out / "index.html").read_text(encoding="utf-8")
    assert "2 (<bdi>bounced</bdi>: 1" not in page
    assert "<dd>2 (1 <bdi>bounced</bdi>, 1 <bdi>complained</bdi>)</dd>" in page
    assert "Suppressed:    2 (1 bounced, 1 complained)" in result.stdout


def test_without_a_message_on_standard_input_it_says_what_to_give(sent: Sent) -> None:
    leader, follower = pty.openpty()  # a terminal: nothing is piped in
    try:
        argv = [sys.executable, "-m", "dispatch", "inbound", "--env-file", str(sent.env)]
        done = subprocess.run(argv, stdin=follower, capture_output=True, timeout=60, check=False)
    finally:
        os.close(leader)
        os.close(follower)
    assert done.returncode == 2
    assert b"pipe one in, or give --maildir DIR or --imap" in done.stderr
