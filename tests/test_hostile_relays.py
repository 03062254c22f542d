"""Relays that answer out of place (issue 14, D1, D9 and the relay part of D11), as scripted
SMTP servers on 127.0.0.1 (``tests/hostile_relay.py``).

Counted at the relay, not in the journal: a reader is journalled as sent only if the relay got
the whole message and answered its final dot with a clean 250; whatever the relay may have
taken is journalled sent or unknown, never deferred or failed (a later run would send it again);
no body ever reaches a relay that opened no data; nobody gets two copies.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from dispatch.compose.issue import plan_issue
from dispatch.send.delivery import SendOptions, run_send
from dispatch.send.summary import RunSummary
from dispatch.settings import Settings
from dispatch.state.journal import DEFERRED, FAILED, SENT, STATES, UNKNOWN, Journal, Record
from tests.attack_helpers import readers, settings_file, write_article, write_list
from tests.hostile_relay import Event, HostileRelay, Script, table

Invoke = Callable[..., Any]
READERS = readers(8)


def send(
    relay: HostileRelay,
    env: dict[str, str],
    article: Path,
    tmp_path: Path,
    addresses: list[str],
    **settings: str,
) -> tuple[RunSummary, dict[str, Record]]:
    """One real send through ``relay`` (``settings``: CONNECTIONS="2"…); the summary and the
    journal's row for each address."""
    listing = write_list(tmp_path / "list.csv", [(a, "Reader") for a in addresses])
    values = {**env, **relay.env(), **{f"DISPATCH_{k}": v for k, v in settings.items()}}
    issue = plan_issue(article, listing, Settings.from_mapping(values))
    journal = Journal(tmp_path / "state")
    try:
        summary = run_send(issue, journal, SendOptions())
        return summary, {r.email: r for r in journal.records(issue.campaign, STATES)}
    finally:
        journal.close()


def check_counts(relay: HostileRelay, rows: dict[str, Record]) -> None:
    """What the journal says against what the relay holds."""
    assert relay.stray == [], f"message text read as commands: {relay.stray[:3]}"
    assert all(m.rcpts and m.data for m in relay.messages), "a message with no recipient or no data"
    taken, confirmed = relay.taken(), relay.confirmed()
    assert max(taken.values(), default=0) <= 1, f"two copies: {taken}"
    for address, row in rows.items():
        if row.state == SENT:
            assert confirmed[address] == 1, f"{address} journalled sent; the relay never confirmed it"
    for address in taken:
        assert rows[address].state in (SENT, UNKNOWN), (
            f"{address} may be delivered yet is {rows[address].state}"
        )


# --------------------------------------------------------------------------- D1

UNSOLICITED_AFTER_EHLO: Script = lambda event, normal: (  # noqa: E731 - a one-line script
    normal + "250 2.0.0 Ok\r\n" if (event.verb, event.nth) == ("EHLO", 2) else None
)

# What the relay answers out of place, and what must become of the reader it hits (the 2nd
# message, or the one after the 1st dot). EHLO #1 is the check before the send.
OUT_OF_PLACE: dict[str, tuple[Script, str]] = {
    "251-to-MAIL": (table({("MAIL", 2): "251 2.1.0 Ok, will forward\r\n"}), DEFERRED),
    "354-to-MAIL": (table({("MAIL", 2): "354 Go ahead\r\n"}), DEFERRED),
    "not-a-reply-to-MAIL": (table({("MAIL", 2): "hello there\r\n"}), DEFERRED),
    "252-to-RCPT-then-250-to-DATA": (
        table({("RCPT", 2): "252 2.1.5 Cannot verify, will try\r\n", ("DATA", 2): "250 2.0.0 Ok\r\n"}),
        DEFERRED,
    ),
    "250-to-DATA": (table({("DATA", 2): "250 2.0.0 Ok\r\n"}), DEFERRED),
    "lines-disagree-at-RCPT": (table({("RCPT", 2): "550-5.1.1 No such user\r\n250 2.1.5 Ok\r\n"}), DEFERRED),
    "lines-disagree-at-DATA": (
        table({("DATA", 2): "354-End data with <CR><LF>.<CR><LF>\r\n250 Ok\r\n"}),
        DEFERRED,
    ),
    "extra-reply-to-MAIL": (table({("MAIL", 2): "250 2.1.0 Ok\r\n250 2.1.0 Ok\r\n"}), DEFERRED),
    "extra-reply-after-the-dot": (
        table({("DOT", 1): "250 2.0.0 Ok: queued\r\n250 2.0.0 Ok: queued again\r\n"}),
        DEFERRED,
    ),
    "unsolicited-reply-after-EHLO": (UNSOLICITED_AFTER_EHLO, DEFERRED),
    "dot-reply-before-the-data": (table({("DATA", 2): "354 End data\r\n250 2.0.0 Ok: queued\r\n"}), DEFERRED),
    "refused-RCPT-then-354": (
        table({("RCPT", 2): "550 5.1.1 No such user\r\n", ("DATA", 2): "354 End data\r\n"}),
        FAILED,
    ),
    "2xx-not-250-to-the-dot": (table({("DOT", 2): "251 2.0.0 Ok\r\n"}), UNKNOWN),
    "lines-disagree-at-the-dot": (table({("DOT", 2): "250-2.0.0 Ok\r\n550 5.7.1 Rejected\r\n"}), UNKNOWN),
    "252-to-RCPT-is-positive": (table({("RCPT", 2): "252 2.1.5 Cannot VRFY user, will accept\r\n"}), SENT),
    "251-to-RCPT-is-positive": (table({("RCPT", 2): "251 2.1.5 User not local; will forward\r\n"}), SENT),
}


@pytest.mark.parametrize("connections", ["1", "2"])
@pytest.mark.parametrize("pipelining", [True, False], ids=["pipelined", "one-at-a-time"])
@pytest.mark.parametrize("case", OUT_OF_PLACE.values(), ids=OUT_OF_PLACE.keys())
def test_a_reply_out_of_place_never_makes_a_reader_sent(
    env: dict[str, str],
    article: Path,
    tmp_path: Path,
    case: tuple[Script, str],
    pipelining: bool,
    connections: str,
) -> None:
    """With one connection and PIPELINING the 2nd message's MAIL, RCPT and DATA go behind the 1st
    message's final dot: the same scripts then hit replies read a message later."""
    script, expected = case
    with HostileRelay(script, pipelining=pipelining) as relay:
        summary, rows = send(relay, env, article, tmp_path, READERS, CONNECTIONS=connections, RETRIES="0")
        check_counts(relay, rows)
        hit = {a: r.state for a, r in rows.items() if r.state != SENT}
        if expected == SENT:
            assert hit == {}, summary.failures
        else:
            assert list(hit.values()) == [expected], hit
            (address,) = hit
            sent_to = [m for m in relay.messages + relay.unfinished if address in m.rcpts]
            if expected != UNKNOWN:  # nothing the relay could have taken, nor any body after a refusal
                assert not any(m in relay.messages for m in sent_to), sent_to
            if expected == FAILED:
                assert all(not m.data for m in relay.unfinished), relay.unfinished
                assert rows[address].hard_bounce, rows[address]
            else:  # a protocol error, and the connection was dropped (one connection: a second opened)
                assert rows[address].reply.startswith("protocol error"), rows[address].reply
                assert connections != "1" or relay.sessions == 3, relay.sessions
        assert len(rows) == len(READERS)
        assert (relay.behind_dot > 0) is (pipelining and connections == "1")  # the path was taken

        # The next run (the relay behaves now) sends the deferred reader, and nobody twice.
        _, rows = send(relay, env, article, tmp_path, READERS, CONNECTIONS=connections, RETRIES="0")
        check_counts(relay, rows)
        assert {r.state for r in rows.values()} <= {SENT, expected}
        assert [r.state for r in rows.values()].count(SENT) == len(READERS) - (expected in (FAILED, UNKNOWN))


# --------------------------------------------------------------------------- D9

LIMIT = 3


def per_session(verb: str, reply: str, *, always: bool = False) -> Script:
    """Answers ``reply`` to the (LIMIT+1)th ``verb`` of every session (or to each, ``always``)."""
    return lambda event, _normal: (
        reply if event.verb == verb and (always or event.in_session > LIMIT) else None
    )


SESSION_LIMITS = {
    "452-at-MAIL": per_session("MAIL", "452 4.5.3 Too many messages in this session\r\n"),
    "452-4.5.3-at-RCPT": per_session("RCPT", "452 4.5.3 Error: too many recipients\r\n"),
    "421-at-MAIL-and-hang-up": per_session("MAIL", "421 4.7.0 Error: too many messages in this session\r\n"),
    "451-at-MAIL": per_session("MAIL", "451 Too many messages, closing the session\r\n"),
    "451-at-the-dot": per_session("DOT", "451 4.3.2 Too many messages on this connection\r\n"),
}


@pytest.mark.parametrize("connections", ["1", "2"])
@pytest.mark.parametrize("pipelining", [True, False], ids=["pipelined", "one-at-a-time"])
@pytest.mark.parametrize("script", SESSION_LIMITS.values(), ids=SESSION_LIMITS.keys())
def test_a_per_session_limit_reconnects_and_fails_nobody(
    env: dict[str, str], article: Path, tmp_path: Path, script: Script, pipelining: bool, connections: str
) -> None:
    """No retries allowed: the reader the limit hits goes again on a new session at once, as if
    nothing happened (one attempt in the journal); dispatch learns the limit and opens a new
    session before it, so each connection meets it once."""
    addresses = readers(7 * LIMIT)
    refused: list[Event] = []

    def counting(event: Event, normal: str) -> str | None:
        reply = script(event, normal)
        if reply is not None:
            refused.append(event)
        return reply

    with HostileRelay(counting, pipelining=pipelining) as relay:
        summary, rows = send(relay, env, article, tmp_path, addresses, CONNECTIONS=connections, RETRIES="0")
        assert summary.exit_code == 0, (summary.aborted, summary.failures)
        check_counts(relay, rows)
        assert relay.confirmed() == dict.fromkeys(addresses, 1)
        assert {r.attempts for r in rows.values()} == {1}
        assert len(refused) <= int(connections), refused
        assert relay.sessions <= 1 + math.ceil(len(addresses) / LIMIT) + int(connections)


@pytest.mark.parametrize("connections", ["1", "2"])
def test_a_session_limit_on_a_fresh_session_stops_the_run_instead_of_looping(
    env: dict[str, str], article: Path, tmp_path: Path, connections: str
) -> None:
    script = per_session("MAIL", "452 4.5.3 Too many messages in this session\r\n", always=True)
    with HostileRelay(script) as relay:
        summary, rows = send(relay, env, article, tmp_path, READERS, CONNECTIONS=connections, RETRIES="3")
        assert summary.exit_code == 3
        assert "Too many messages in this session" in summary.aborted
        assert {r.state for r in rows.values()} <= {DEFERRED}
        assert relay.messages == []
        assert relay.sessions <= 1 + 2 * int(connections)


# --------------------------------------------------------------------------- D11

HOSTILE_TEXT = "\x1b[2J\x1b]0;pwned\x07 \x00no\rsuch\u202eresu \u2066user\x7f\x9b31m"


def inert(text: str) -> bool:
    """Nothing that could move the cursor, recolour, retitle or reorder what a terminal shows."""
    return all(c.isprintable() or c == "\n" for c in text)


D11_SCRIPTS = {
    "refused-recipient": table({("RCPT", 2): f"550-5.1.1 {HOSTILE_TEXT}\r\n550 5.1.1 {HOSTILE_TEXT}\r\n"}),
    "refused-sender": table({("MAIL", 1): f"550 5.7.1 {HOSTILE_TEXT}\r\n"}),
    "deferred-then-rate": table(
        {("RCPT", 1): f"451 4.3.0 {HOSTILE_TEXT}\r\n", ("MAIL", 2): f"421 4.7.0 {HOSTILE_TEXT}\r\n"}
    ),
    "unreadable-dot-reply": table({("DOT", 1): f"250-{HOSTILE_TEXT}\r\n550 {HOSTILE_TEXT}\r\n"}),
    "greeting-refused": table({("GREET", 1): f"554 5.7.1 {HOSTILE_TEXT}\r\n"}),
    "ehlo-and-helo-refused": lambda e, _n: f"550 {HOSTILE_TEXT}\r\n" if e.verb in ("EHLO", "HELO") else None,
    "not-an-smtp-reply": table({("MAIL", 2): f"{HOSTILE_TEXT}\r\n"}),
}


@pytest.mark.parametrize("script", D11_SCRIPTS.values(), ids=D11_SCRIPTS.keys())
def test_relay_text_reaches_no_output_with_control_characters(
    invoke: Invoke, tmp_path: Path, script: Script
) -> None:
    """The send's summary and its --json (each from a relay of its own, into a state of its
    own), the error lines, ``status`` and ``status --json``."""
    article = write_article(tmp_path / "issue.md")
    listing = write_list(tmp_path / "list.csv", [(a, "Reader") for a in READERS[:3]])
    outputs: list[str] = []
    for extra in ([], ["--json"]):
        with HostileRelay(script) as relay:
            state = tmp_path / f"run{len(outputs)}"
            settings = settings_file(state, None, name="run.env", RETRIES="0", **relay.env())
            result = invoke("send", article, "-s", listing, "--env-file", settings, "--yes", *extra)
            assert result.exit_code != 0
            assert "\\x1b" in result.stdout + result.stderr, result.stdout + result.stderr
            outputs += [result.stdout, result.stderr]
        status = invoke("status", "--env-file", settings, "--json")
        for campaign in json.loads(status.stdout)["campaigns"]:
            for how in ([], ["--json"]):
                shown = invoke("status", campaign["campaign"], "--env-file", settings, *how)
                outputs += [shown.stdout, shown.stderr]
    for text in outputs:
        assert inert(text), [c for c in text if not inert(c)]


def test_reply_text_an_older_version_stored_is_shown_inert(invoke: Invoke, tmp_path: Path) -> None:
    """A journal written before replies were neutralised still shows nothing raw."""
    settings = settings_file(tmp_path, None)
    journal = Journal(tmp_path / "state")
    journal.begin("old-issue", "Old issue", "fingerprint", str(tmp_path / "issue.md"))
    journal.outcome(
        "old-issue",
        "ann@example.org",
        "ann@example.org",
        FAILED,
        code=550,
        enhanced="5.1.1",
        reply=HOSTILE_TEXT,
    )
    journal.close()
    outputs = []
    for extra in ([], ["--json"]):
        shown = invoke("status", "old-issue", "--env-file", settings, *extra)
        assert shown.exit_code == 0, shown.stderr
        outputs += [shown.stdout, shown.stderr]
    assert any("pwned" in text for text in outputs)
    for text in outputs:
        assert inert(text), [c for c in text if not inert(c)]


def test_an_absurd_size_in_ehlo_is_read_as_no_limit(
    env: dict[str, str], article: Path, tmp_path: Path
) -> None:
    """A SIZE of 5,000 digits (more than Python turns into an int) is no limit, not a crash."""
    ehlo = "250-relay.example.org\r\n250-PIPELINING\r\n250 SIZE " + "9" * 5000 + "\r\n"
    with HostileRelay(lambda event, _normal: ehlo if event.verb == "EHLO" else None) as relay:
        summary, rows = send(relay, env, article, tmp_path, READERS)
        assert summary.exit_code == 0, summary.aborted
        check_counts(relay, rows)
        assert relay.confirmed() == dict.fromkeys(READERS, 1)
