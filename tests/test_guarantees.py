"""Guarantees added by the recent review and QA commits, pinned down against real parts.

Every send talks SMTP over TCP to a real aiosmtpd server on 127.0.0.1 (``tests.smtp_servers``);
journals, lists, articles and templates are real files in ``tmp_path``. Library-level tests drive
``plan_issue`` + ``run_send``/``run_dry``; CLI tests go through the ``invoke`` fixture.
"""

from __future__ import annotations

import json
import os
import re
import stat
import threading
import time
from collections.abc import Callable, Iterator
from email import message_from_bytes, policy
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import pytest

from dispatch.compose.issue import Issue, plan_issue
from dispatch.errors import ConfigError, ExitCode, InputError, TemplateError
from dispatch.proof.dryrun import run_dry
from dispatch.send.campaign import count_to_send
from dispatch.send.delivery import SendOptions, run_send
from dispatch.send.skips import SkipRules
from dispatch.send.summary import RunSummary
from dispatch.settings import Settings
from dispatch.state import backend
from dispatch.state import journal as j
from dispatch.unsubscribe.tokens import BadToken, read_token
from tests.conftest import both_backends
from tests.smtp_servers import FaultPlan, Handler, Received, Server, start_server

Invoke = Callable[..., Any]
EnvFile = Callable[..., Path]
OUR_FILE = re.compile(r"\d{5}-.+\.(eml|html)")


# --------------------------------------------------------------------------- helpers


class Counting(Handler):
    """The shared handler plus counters of sessions, RCPT and DATA commands; ``drop`` lists the
    addresses whose message is stored and then the connection dropped before the 250."""

    def __init__(self, faults: FaultPlan | None = None) -> None:
        super().__init__(faults)
        self.sessions = 0
        self.rcpts = 0
        self.datas = 0
        self.drop: set[str] = set()

    async def handle_EHLO(
        self, server: Any, session: Any, envelope: Any, hostname: str, responses: list[str]
    ) -> list[str]:
        with self.lock:
            self.sessions += 1
        return await super().handle_EHLO(server, session, envelope, hostname, responses)

    async def handle_RCPT(
        self, server: Any, session: Any, envelope: Any, address: str, rcpt_options: list[str]
    ) -> str:
        with self.lock:
            self.rcpts += 1
        return await super().handle_RCPT(server, session, envelope, address, rcpt_options)

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        with self.lock:
            self.datas += 1
        if self.drop.intersection(envelope.rcpt_tos):
            with self.lock:
                self.received.append(
                    Received(envelope.mail_from, list(envelope.rcpt_tos), envelope.original_content)
                )
            server.transport.abort()  # stored, but the client never sees the 250
            return "250 2.0.0 OK queued"
        return await super().handle_DATA(server, session, envelope)


@pytest.fixture
def counting_server() -> Iterator[Callable[..., tuple[Server, Counting]]]:
    """Start servers whose handler counts sessions, RCPTs and DATAs; all stopped afterwards."""
    started: list[Server] = []

    def start(faults: FaultPlan | None = None) -> tuple[Server, Counting]:
        server = start_server(faults=faults)
        handler = Counting(server.handler.faults)
        server.controller.handler = handler  # no client has connected yet
        server.handler = handler
        started.append(server)
        return server, handler

    yield start
    for server in started:
        if getattr(server.controller, "_thread", None) is not None:  # a test may have stopped it
            server.stop()


def settings_for(env: dict[str, str], server: Server | None = None, **extra: str) -> Settings:
    values = {**env, **(server.env() if server else {})}
    values.update({f"DISPATCH_{k.upper()}": v for k, v in extra.items()})
    return Settings.from_mapping(values)


def emails(count: int, prefix: str = "reader") -> list[str]:
    return [f"{prefix}{i:02d}@example.{'org' if i % 2 else 'com'}" for i in range(count)]


def write_list(path: Path, addresses: list[str]) -> Path:
    rows = "".join(f"{a},Reader {i}\n" for i, a in enumerate(addresses))
    path.write_text("email,name\n" + rows, encoding="utf-8", newline="")
    return path


def write_article(path: Path, title: str) -> Path:
    path.write_text(
        f"---\ntitle: {title}\ndate: 2024-05-01\n---\n\nA short paragraph about {title}.\n\n"
        "A second paragraph, so the body has more than one block.\n",
        encoding="utf-8",
    )
    return path


def rcpts(server: Server) -> list[str]:
    return sorted(a for r in list(server.received) for a in r.rcpt_tos)


def states(journal: j.Journal, campaign: str) -> dict[str, str]:
    return {r.email: r.state for r in journal.records(campaign, j.STATES)}


def parse(data: bytes) -> EmailMessage:
    message = message_from_bytes(data, policy=policy.default)
    assert isinstance(message, EmailMessage)
    return message


@pytest.fixture
def env(tmp_path: Path, state_backend: dict[str, str]) -> dict[str, str]:
    """The tests here that take settings run on both backends: the state folder and PostgreSQL."""
    return both_backends(tmp_path, state_backend)


def open_journal(env: dict[str, str]) -> j.Journal:
    """The journal of the state ``env`` names (a folder, or PostgreSQL), for writing."""
    return backend.open_journal(Settings.from_mapping(env).state)


@pytest.fixture
def journal(env: dict[str, str]) -> Iterator[j.Journal]:
    state = open_journal(env)
    yield state
    state.close()


@pytest.fixture
def read_only(env: dict[str, str]) -> Iterator[Callable[[], j.Journal]]:
    """Open the state's journal read-only, as a dry run does; closed afterwards."""
    opened: list[j.Journal] = []

    def open_() -> j.Journal:
        found = backend.existing_journal(Settings.from_mapping(env).state)
        assert found is not None, "no journal was written"
        opened.append(found)
        return found

    yield open_
    for each in opened:
        each.close()


def send_args(article: Path, csv: Path, settings: Path, *extra: str | Path) -> list[str | Path]:
    return ["send", article, "-s", csv, "--env-file", settings, *extra]


# ------------------------------------------------- 1. a 4xx to the data, then the relay goes away


@pytest.mark.parametrize("retries", [1, 3])
def test_deferred_data_then_unreachable_relay_is_recorded_deferred_and_sent_next_run(
    retries: int,
    tmp_path: Path,
    env: dict[str, str],
    article: Path,
    journal: j.Journal,
    counting_server: Callable[..., tuple[Server, Counting]],
) -> None:
    broken, handler = counting_server(FaultPlan(data_4xx=1.0))
    people = write_list(tmp_path / "list.csv", ["ann@example.org", "bob@example.com"])
    stopped: list[float] = []

    def backoff(_seconds: float) -> None:  # the relay disappears while we wait to retry
        if not stopped:
            broken.stop()
            stopped.append(time.monotonic())

    issue = plan_issue(article, people, settings_for(env, broken, retries=str(retries)))
    first = run_send(issue, journal, SendOptions(sleep=backoff))

    assert stopped, "the backoff was never reached"
    assert handler.datas == 1
    assert first.aborted, "an unreachable relay must abort the run"
    assert first.exit_code == ExitCode.ABORTED
    recorded = states(journal, issue.campaign)
    assert recorded == {"ann@example.org": j.DEFERRED}, "never 'in_flight', never 'unknown'"
    assert first.deferred == 1
    assert first.unknown == 0
    assert first.pending == 1
    assert first.deferred_now == 1  # (the counts add up: 2 rows = 1 deferred now + 1 not tried)

    healthy, _ = counting_server()
    again = plan_issue(article, people, settings_for(env, healthy))
    assert again.campaign == issue.campaign
    second = run_send(again, journal, SendOptions(sleep=lambda _s: None))
    assert second.recovered_unknown == 0
    assert second.unknown == 0
    assert second.sent == 2
    assert second.exit_code == ExitCode.OK
    assert rcpts(healthy) == ["ann@example.org", "bob@example.com"]


# ------------------------------------------------- 2. a stop while a recipient waits to retry


def test_stop_during_backoff_returns_at_once_and_nothing_more_reaches_the_server(
    tmp_path: Path,
    env: dict[str, str],
    article: Path,
    journal: j.Journal,
    counting_server: Callable[..., tuple[Server, Counting]],
) -> None:
    server, handler = counting_server(FaultPlan(data_4xx=1.0))
    people = write_list(tmp_path / "list.csv", emails(3))
    settings = settings_for(env, server, retries="4", retry_delay="30")
    issue = plan_issue(article, people, settings)
    options = SendOptions()  # the real backoff: stop.wait(15 .. 45 s)
    done: list[RunSummary] = []
    worker = threading.Thread(target=lambda: done.append(run_send(issue, journal, options)), daemon=True)
    worker.start()

    deadline = time.monotonic() + 10
    while handler.datas < 1:
        assert time.monotonic() < deadline, "the first DATA never reached the server"
        time.sleep(0.01)
    time.sleep(0.3)  # the 451 is recorded and the worker sleeps in its backoff
    seen = (handler.rcpts, handler.datas)
    stopped_at = time.monotonic()
    options.stop.set()
    worker.join(timeout=10)
    elapsed = time.monotonic() - stopped_at

    assert not worker.is_alive(), "the run did not return after the stop"
    assert elapsed < 10, f"the run took {elapsed:.1f}s to notice the stop (the backoff is 15 s or more)"
    time.sleep(0.2)
    # One message reached the server. With one connection, the next recipient's MAIL, RCPT and
    # DATA went behind that message's final dot (before any stop); no message followed them.
    assert seen in ((1, 1), (2, 1))
    assert (handler.rcpts, handler.datas) == seen, "an attempt reached the server after the stop"
    summary = done[0]
    assert summary.interrupted is True
    assert not summary.aborted
    assert summary.exit_code == ExitCode.INTERRUPTED
    assert int(summary.exit_code) == 130
    assert summary.deferred == 1
    assert summary.pending == 2
    assert j.IN_FLIGHT not in states(journal, issue.campaign).values()


# ------------------- 2b. a retry waits: a refusal before the data leaves no "in flight" behind


def _refused_once(
    tmp_path: Path, env: dict[str, str], counting_server: Callable[..., tuple[Server, Counting]]
) -> tuple[Server, list[str], Settings, Path]:
    """Two connections to a pipelining relay (the row goes in flight with the pipelined MAIL,
    RCPT and DATA) that answers one reader's RCPT with a 451 until told otherwise."""
    people = emails(4)
    server, _ = counting_server(FaultPlan(reject={people[1]: "451 4.7.1 greylisted, try again later"}))
    settings = settings_for(env, server, connections="2", retries="2", retry_delay="5")
    return server, people, settings, write_list(tmp_path / "list.csv", people)


def test_a_reader_refused_before_the_data_is_not_in_flight_while_the_retry_waits(
    tmp_path: Path,
    env: dict[str, str],
    article: Path,
    journal: j.Journal,
    counting_server: Callable[..., tuple[Server, Counting]],
) -> None:
    """A SIGKILL during the wait must not turn a reader no data ever went to into "unknown"
    (which no later run sends): while the retry waits, their row is as it was before the try."""
    server, people, settings, path = _refused_once(tmp_path, env, counting_server)
    issue = plan_issue(article, path, settings)
    during: list[dict[str, str]] = []

    def backoff(_seconds: float) -> None:  # what a SIGKILL now would leave
        during.append(states(journal, issue.campaign))
        server.handler.faults.reject.clear()  # the greylisting ends

    summary = run_send(issue, journal, SendOptions(sleep=backoff))

    assert during, "the retry never waited"
    assert during[0].get(people[1]) != j.IN_FLIGHT, during[0]
    assert summary.sent == 4
    assert summary.unknown == 0
    assert rcpts(server) == sorted(people), "everyone exactly once"
    assert set(states(journal, issue.campaign).values()) == {j.SENT}


def test_what_the_other_connection_delivered_is_recorded_while_a_retry_waits(
    tmp_path: Path,
    env: dict[str, str],
    article: Path,
    journal: j.Journal,
    counting_server: Callable[..., tuple[Server, Counting]],
) -> None:
    """A connection that ran out of work commits its outcomes at once: they must not wait for
    another connection's retry (a SIGKILL then would make delivered readers "unknown")."""
    people = emails(6)
    server, _ = counting_server(FaultPlan(reject={people[0]: "451 4.7.1 greylisted, try again later"}))
    settings = settings_for(env, server, connections="2", retries="1", retry_delay="5")
    issue = plan_issue(article, write_list(tmp_path / "list.csv", people), settings)
    seen: list[tuple[list[str], dict[str, str]]] = []

    def backoff(_seconds: float) -> None:
        count, quiet = -1, 0
        while quiet < 10:  # until the other connection has delivered what it will
            time.sleep(0.05)
            quiet, count = (quiet + 1, count) if len(rcpts(server)) == count else (0, len(rcpts(server)))
        time.sleep(0.2)
        seen.append((rcpts(server), states(journal, issue.campaign)))
        server.handler.faults.reject.clear()

    summary = run_send(issue, journal, SendOptions(sleep=backoff))

    delivered, recorded = seen[0]
    assert delivered, "the other connection delivered nothing while the retry waited"
    assert {a: recorded.get(a) for a in delivered} == dict.fromkeys(delivered, j.SENT)
    assert summary.sent == 6
    assert rcpts(server) == sorted(people)


def test_a_reader_who_unsubscribes_while_their_retry_waits_is_not_mailed(
    tmp_path: Path,
    env: dict[str, str],
    article: Path,
    journal: j.Journal,
    counting_server: Callable[..., tuple[Server, Counting]],
) -> None:
    """The suppression store is asked before every try, not only the first."""
    server, people, settings, path = _refused_once(tmp_path, env, counting_server)
    issue = plan_issue(article, path, settings)
    store = backend.open_suppressions(settings.state)

    def backoff(_seconds: float) -> None:
        store.add(people[1], "complained")  # (a complaint: every list) while the retry waits
        server.handler.faults.reject.clear()  # the relay would now take the message

    summary = run_send(issue, journal, SendOptions(sleep=backoff, suppressions=store))
    store.close()

    assert people[1] not in rcpts(server)
    assert rcpts(server) == sorted(p for p in people if p != people[1])
    assert summary.sent == 3
    assert summary.suppressed == 1
    assert summary.exit_code == ExitCode.OK
    assert states(journal, issue.campaign).get(people[1]) not in (j.IN_FLIGHT, j.SENT, j.UNKNOWN)


# ------------------------------------------------- 3. one daily budget for two concurrent campaigns


def test_daily_limit_is_shared_by_two_concurrent_campaigns(
    tmp_path: Path,
    env: dict[str, str],
    counting_server: Callable[..., tuple[Server, Counting]],
) -> None:
    server, _ = counting_server()
    settings = settings_for(env, server, daily_limit="5")
    issues = [
        plan_issue(
            write_article(tmp_path / f"{name}.md", f"Issue {name}"),
            write_list(tmp_path / f"{name}.csv", emails(10, prefix=name)),
            settings,
        )
        for name in ("alpha", "beta")
    ]
    assert issues[0].campaign != issues[1].campaign
    start = threading.Barrier(2)
    summaries: dict[str, RunSummary] = {}
    errors: list[BaseException] = []

    def run(issue: Issue) -> None:
        journal = open_journal(env)  # each run its own connection, as two processes
        try:
            start.wait(timeout=10)
            summaries[issue.campaign] = run_send(issue, journal, SendOptions(sleep=lambda _s: None))
        except BaseException as err:  # reported by the main thread
            errors.append(err)
        finally:
            journal.close()

    threads = [threading.Thread(target=run, args=(issue,), daemon=True) for issue in issues]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)

    assert not errors, errors
    assert len(summaries) == 2
    assert len(server.received) == 5, "the two campaigns together may send 5 messages a day"
    assert sum(s.sent_now for s in summaries.values()) == 5
    assert all(s.daily_limit_reached for s in summaries.values())
    assert all(s.exit_code == ExitCode.INCOMPLETE for s in summaries.values())
    check = open_journal(env)
    try:
        assert check.sent_within() <= 5
        assert sum(check.counts(i.campaign)[j.SENT] for i in issues) == 5
    finally:
        check.close()


# ------------------------------------------------- 4. hard bounces are never mailed again


def test_hard_bounce_in_one_campaign_suppresses_the_address_in_the_next(
    tmp_path: Path,
    env: dict[str, str],
    article: Path,
    journal: j.Journal,
    read_only: Callable[[], j.Journal],
    counting_server: Callable[..., tuple[Server, Counting]],
) -> None:
    reject = {
        "gone@example.org": "550 5.1.1 <gone@example.org>: no such user",
        "strict@example.com": "550 5.7.1 rejected by local policy",
    }
    server, _ = counting_server(FaultPlan(reject=dict(reject)))
    people = write_list(tmp_path / "list.csv", ["ann@example.org", "gone@example.org", "strict@example.com"])
    settings = settings_for(env, server)

    first = run_send(plan_issue(article, people, settings, campaign="issue-a"), journal, SendOptions())
    assert (first.sent, first.failed) == (1, 2)
    assert journal.hard_bounced("gone@example.org") == "issue-a"
    assert journal.hard_bounced("strict@example.com") is None

    server.handler.faults.reject.clear()  # the relay would take both now
    server.received.clear()
    second_issue = plan_issue(article, people, settings, campaign="issue-b")
    dry = run_dry(second_issue, tmp_path / "dry", write_all=True, state=read_only())
    second = run_send(second_issue, journal, SendOptions())

    assert second.suppressed == 1
    assert dry.suppressed == 1
    assert dry.pending == second.sent_now == 2
    assert rcpts(server) == ["ann@example.org", "strict@example.com"], "5.7.1 is no bounce: tried again"
    # recorded as suppressed (never in flight, never sent), so `status` counts it as the run did
    assert journal.state("issue-b", "gone@example.org") == "suppressed"


# ------------------------------------------------- 5. dry run and send agree about 'unknown'


@pytest.mark.parametrize("resend_unknown", [False, True], ids=["default", "resend-unknown"])
def test_dry_run_counts_unknown_recipients_as_the_send_does(
    resend_unknown: bool,
    tmp_path: Path,
    env: dict[str, str],
    article: Path,
    journal: j.Journal,
    read_only: Callable[[], j.Journal],
    counting_server: Callable[..., tuple[Server, Counting]],
) -> None:
    server, handler = counting_server()
    handler.drop.add("bob@example.com")
    people = write_list(tmp_path / "list.csv", ["ann@example.org", "bob@example.com", "cy@example.org"])
    issue = plan_issue(article, people, settings_for(env, server))
    first = run_send(issue, journal, SendOptions())
    assert (first.sent, first.unknown) == (2, 1)
    assert journal.state(issue.campaign, "bob@example.com") == j.UNKNOWN

    expected = 1 if resend_unknown else 0
    folder = tmp_path / "dry"
    state = read_only()
    dry = run_dry(issue, folder, write_all=True, state=state, resend_unknown=resend_unknown)
    would = count_to_send(issue, SkipRules(state, None, issue.campaign, resend_unknown=resend_unknown))

    handler.drop.clear()
    server.received.clear()
    real = run_send(issue, journal, SendOptions(resend_unknown=resend_unknown))

    assert dry.pending == would == real.sent_now == expected
    # every message is still written, those a send would skip marked as such
    assert dry.written == len(list(folder.glob("*.eml"))) == 3
    assert rcpts(server) == (["bob@example.com"] if resend_unknown else [])


def test_cli_dry_run_with_resend_unknown_counts_what_the_send_reaches(
    invoke: Invoke,
    tmp_path: Path,
    article: Path,
    env_file: EnvFile,
    counting_server: Callable[..., tuple[Server, Counting]],
) -> None:
    server, handler = counting_server()
    handler.drop.add("bob@example.com")
    people = write_list(tmp_path / "list.csv", ["ann@example.org", "bob@example.com"])
    settings = env_file(**server.env())
    common = ("--campaign", "u", "--resend-unknown", "--json")
    first = invoke(*send_args(article, people, settings, "--yes", "--campaign", "u", "--json"))
    assert json.loads(first.stdout)["unknown"] == 1

    dry = invoke(*send_args(article, people, settings, "--dry-run", "--out", tmp_path / "dry", *common))
    assert dry.exit_code == 0, dry.output
    handler.drop.clear()
    real = invoke(*send_args(article, people, settings, "--yes", *common))
    assert real.exit_code == 0, real.output
    assert json.loads(real.stdout)["sent_now"] == 1
    assert json.loads(dry.stdout)["pending"] == 1


# ------------------------------------------------- 6. settings that can never work are refused


@pytest.mark.parametrize(
    ("overrides", "named"),
    [
        ({"UNSUBSCRIBE_URL": "https://example.org/désabonner?e={email}"}, ["DISPATCH_UNSUBSCRIBE_URL"]),
        ({"UNSUBSCRIBE_URL": "https://example.org/u?e={mail}"}, ["DISPATCH_UNSUBSCRIBE_URL", "{mail}"]),
        ({"UNSUBSCRIBE_MAILTO": "u@example.org>,<https://evil.example/x"}, ["DISPATCH_UNSUBSCRIBE_MAILTO"]),
        ({"UNSUBSCRIBE_MAILTO": "u@example.org,v@example.org"}, ["DISPATCH_UNSUBSCRIBE_MAILTO"]),
        (
            {"UNSUBSCRIBE_URL": "https://example.org/u?t={token},<https://evil.example/>"},
            ["DISPATCH_UNSUBSCRIBE_URL"],
        ),
        ({"EHLO_NAME": "mail example org"}, ["DISPATCH_EHLO_NAME"]),
        ({"LIST_ID": "not a list id"}, ["DISPATCH_LIST_ID"]),
        ({"DKIM_SELECTOR": "s1"}, ["DISPATCH_DKIM_KEY_FILE", "DISPATCH_DKIM_DOMAIN"]),
        ({"MAX_MESSAGE_SIZE": "lots"}, ["DISPATCH_MAX_MESSAGE_SIZE"]),
        ({"DNS_SERVER": "127.0.0.1:99999"}, ["DISPATCH_DNS_SERVER"]),
        ({"ORGANIZATION": "Evil\r\nBcc: all@example.org"}, ["DISPATCH_ORGANIZATION"]),
        ({"SMTP_PORT": "70000"}, ["DISPATCH_SMTP_PORT"]),
        ({"MAX_FAILURE_RATIO": "2"}, ["DISPATCH_MAX_FAILURE_RATIO"]),
        ({"SMTP_CA_FILE": "{not_pem}"}, ["DISPATCH_SMTP_CA_FILE"]),
    ],
    ids=[
        "non-ascii-url",
        "unknown-placeholder",
        "mailto-extra-uri",
        "mailto-two-addresses",
        "url-extra-uri",
        "ehlo-name",
        "list-id",
        "dkim-partial",
        "size",
        "dns-server",
        "control-in-org",
        "port",
        "ratio",
        "ca-not-pem",
    ],
)
def test_bad_setting_is_a_config_error_naming_it(
    overrides: dict[str, str], named: list[str], env: dict[str, str], tmp_path: Path
) -> None:
    not_pem = tmp_path / "ca.pem"
    not_pem.write_text("this is not a certificate\n", encoding="utf-8")
    values = {**env, **{f"DISPATCH_{k}": v.replace("{not_pem}", str(not_pem)) for k, v in overrides.items()}}
    with pytest.raises(ConfigError) as raised:
        Settings.from_mapping(values)
    for part in named:
        assert part in str(raised.value)


def test_token_link_is_sealed_for_the_address_and_list_and_the_secret_never_leaves(
    tmp_path: Path,
    env: dict[str, str],
    article: Path,
    journal: j.Journal,
    counting_server: Callable[..., tuple[Server, Counting]],
) -> None:
    secret = "Correct-Horse-Battery-Staple-42-and-then-some"
    server, _ = counting_server()
    people = write_list(tmp_path / "list.csv", ["Ann.Example@example.org", "bob@example.com"])
    settings = settings_for(
        env, server, unsubscribe_url="https://example.org/u?t={token}", unsubscribe_secret=secret
    )
    summary = run_send(plan_issue(article, people, settings), journal, SendOptions())
    assert summary.sent == 2

    assert len(server.received) == 2
    for received in server.received:
        address = received.rcpt_tos[0]
        message = parse(received.data)
        found = re.search(r"<https://example\.org/u\?t=([A-Za-z0-9_-]+)>", str(message["List-Unsubscribe"]))
        assert found, message["List-Unsubscribe"]
        token = found[1]
        assert read_token(secret, token) == (settings.list_id, address.lower())
        with pytest.raises(BadToken):
            read_token(secret + "x", token)
        assert address.split("@")[0].lower() not in found[0].lower()  # the address is not readable
        html = message.get_body(("html",)).get_content()  # type: ignore[union-attr]
        text = message.get_body(("plain",)).get_content()  # type: ignore[union-attr]
        assert f"https://example.org/u?t={token}" in html
        assert f"https://example.org/u?t={token}" in text
        for where in (received.data, html.encode(), text.encode()):
            assert secret.encode() not in where
            assert secret.lower().encode() not in where.lower()


# ------------------------------------------------- 7. a setting that breaks every message


@pytest.mark.parametrize(
    ("setting", "value"),
    [
        ("UNSUBSCRIBE_URL", "https://example.org/u?e={email}&pad=" + "a" * 1000),
        pytest.param(
            "UNSUBSCRIBE_MAILTO",
            "unsubscribe@example.org?subject=" + "x" * 1000,
        ),
    ],
    ids=["url", "mailto"],
)
def test_too_long_unsubscribe_setting_fails_in_planning_before_the_list_is_read(
    setting: str, value: str, tmp_path: Path, env: dict[str, str], article: Path
) -> None:
    rows = "".join(f"reader{i:04d}@example.org,Reader\n" for i in range(3000))  # past the 64 KB sample
    people = tmp_path / "list.csv"
    people.write_bytes(b"email,name\n" + rows.encode() + b"caf\xe9@example.org,Late Bad Byte\n")
    settings = settings_for(env, None, **{setting.lower(): value})

    with pytest.raises(ConfigError, match="trial message") as raised:
        plan_issue(article, people, settings)
    assert f"DISPATCH_{setting}" in str(raised.value)
    with pytest.raises(InputError, match="line 3002"):  # control: the list itself fails when read
        plan_issue(article, people, settings_for(env))


def test_unsubscribe_url_too_long_for_some_addresses_never_stops_a_run_midway(
    tmp_path: Path,
    env: dict[str, str],
    article: Path,
    journal: j.Journal,
    counting_server: Callable[..., tuple[Server, Counting]],
) -> None:
    server, _ = counting_server()
    base = "https://example.org/u?e={email}&pad="
    url = base + "a" * (960 - len(base.replace("{email}", "trial@example.org")))  # trial line: 981
    long_address = "l" * 64 + "@" + "d" * 60 + ".example.org"  # 120 octets more: over 998
    people = write_list(tmp_path / "list.csv", ["ann@example.org", long_address, "bob@example.com"])
    settings = settings_for(env, server, unsubscribe_url=url)
    refused = ""
    try:
        issue = plan_issue(article, people, settings)
    except ConfigError as err:  # one acceptable fix: the check uses the longest possible address
        refused = str(err)
    if refused:
        assert "DISPATCH_UNSUBSCRIBE_URL" in refused
        assert server.received == []
        return
    summary = run_send(issue, journal, SendOptions())  # the other: that one recipient fails alone
    assert rcpts(server) == ["ann@example.org", "bob@example.com"]
    assert journal.state(issue.campaign, long_address) == j.FAILED
    assert summary.exit_code == ExitCode.INCOMPLETE


# ------------------------------------------------- 8. a template without the unsubscribe link


def test_template_without_unsubscribe_link_previews_naming_it_and_never_sends(
    tmp_path: Path,
    env: dict[str, str],
    article: Path,
    subscribers: Path,
    journal: j.Journal,
    counting_server: Callable[..., tuple[Server, Counting]],
) -> None:
    template = tmp_path / "mine"
    template.mkdir()
    (template / "email.html").write_text(
        "<!DOCTYPE html>\n<html><body><h1>{{ article.title }}</h1>\n"
        "<p>Hello {{ subscriber.name | otherwise('friend') }}.</p></body></html>\n",
        encoding="utf-8",
    )
    server, handler = counting_server()
    issue = plan_issue(article, subscribers, settings_for(env, server), template_dir=template)

    dry = run_dry(issue, tmp_path / "dry", write_all=True)
    assert dry.pending == 3
    # one rule set: the check that blocks a send names it in the dry run, once
    assert [b for b in dry.blocking if "unsubscribe link in the HTML part" in b] != [], dry.blocking
    assert not [w for w in dry.warnings if "unsubscribe link" in w], dry.warnings

    with pytest.raises(TemplateError, match="unsubscribe"):
        run_send(issue, journal, SendOptions())
    assert handler.sessions == 0
    assert server.received == []
    assert journal.campaigns() == []


# ------------------------------------------------- 9. the journal is private even under umask 022


def test_journal_files_are_private_with_a_permissive_umask(
    tmp_path: Path,
    env: dict[str, str],
    article: Path,
    subscribers: Path,
    counting_server: Callable[..., tuple[Server, Counting]],
) -> None:
    server, _ = counting_server()
    issue = plan_issue(article, subscribers, settings_for(env, server))
    state_dir = tmp_path / "state"
    old = os.umask(0o022)
    try:
        journal = j.Journal(state_dir)
        try:
            summary = run_send(issue, journal, SendOptions())
            assert summary.sent == 3
            files = [state_dir / f"journal.sqlite3{s}" for s in ("", "-wal", "-shm")]
            present = [f for f in files if f.exists()]
            assert files[0] in present
            modes = {f.name: stat.S_IMODE(f.stat().st_mode) for f in present}
            assert modes == dict.fromkeys(modes, 0o600), modes
            locks = list(state_dir.glob("*.lock"))
            assert locks
            assert {stat.S_IMODE(f.stat().st_mode) for f in locks} == {0o600}
        finally:
            journal.close()
    finally:
        os.umask(old)
    assert stat.S_IMODE(state_dir.stat().st_mode) == 0o700
    for part in state_dir.glob("journal.sqlite3*"):
        assert stat.S_IMODE(part.stat().st_mode) == 0o600, part


def test_nothing_changes_the_process_wide_umask() -> None:
    """Files are made private with explicit modes, never by setting the umask: it is one per
    process, so a thread setting and restoring it races every other thread creating a file (and
    two such threads can leave it changed for good)."""
    import ast

    import dispatch

    calls = [
        f"{path.name}:{node.lineno}"
        for path in Path(dispatch.__file__).parent.rglob("*.py")
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8")))
        if isinstance(node, ast.Attribute) and node.attr == "umask"
    ]
    assert calls == []


# ------------------------------------------------- 10. a relay that defers every recipient


def test_twenty_deferrals_in_a_row_abort_the_run(
    tmp_path: Path,
    env: dict[str, str],
    article: Path,
    journal: j.Journal,
    counting_server: Callable[..., tuple[Server, Counting]],
) -> None:
    server, handler = counting_server(FaultPlan(rcpt_4xx=1.0))
    people = write_list(tmp_path / "list.csv", emails(30))
    issue = plan_issue(article, people, settings_for(env, server, retries="0"))
    summary = run_send(issue, journal, SendOptions())

    assert summary.exit_code == ExitCode.ABORTED
    assert int(summary.exit_code) == 3
    assert "20" in summary.aborted
    assert summary.deferred == 20
    assert summary.pending == 10
    assert handler.rcpts == 20
    assert server.received == []


# ------------------------------------------------- 11-12. status after --limit; --json errors


def test_status_after_a_limited_send_shows_the_rest_pending(
    invoke: Invoke,
    tmp_path: Path,
    article: Path,
    env_file: EnvFile,
    counting_server: Callable[..., tuple[Server, Counting]],
) -> None:
    server, _ = counting_server()
    settings = env_file(**server.env())
    people = write_list(tmp_path / "list.csv", emails(5))
    sent = invoke(*send_args(article, people, settings, "--yes", "--limit", "2", "--campaign", "five"))
    assert sent.exit_code == 0, sent.output
    assert len(server.received) == 2

    status = invoke("status", "five", "--env-file", settings, "--json")
    assert status.exit_code == 0, status.output
    data = json.loads(status.stdout)
    assert (data["sent"], data["pending"], data["recipients"]) == (2, 3, 5)


@pytest.mark.parametrize(
    "extra",
    [("--yes",), ("--dry-run",), ("--yes", "--campaign", "named")],
    ids=["send", "dry-run", "named-campaign"],
)
def test_json_send_with_a_missing_article_prints_an_error_object(
    extra: tuple[str, ...],
    invoke: Invoke,
    tmp_path: Path,
    subscribers: Path,
    env_file: EnvFile,
) -> None:
    missing = tmp_path / "no-such-article.md"
    result = invoke(*send_args(missing, subscribers, env_file(), *extra, "--json"))
    assert result.exit_code == 2
    data = json.loads(result.stdout)
    assert data["exit_code"] == 2
    assert "no-such-article.md" in data["error"]


# ------------------------------------------------- 13. an edited title starts a new campaign


@pytest.mark.parametrize("second_run", ["dry", "send"])
def test_new_campaign_from_the_same_file_warns_and_names_the_earlier_one(
    second_run: str,
    tmp_path: Path,
    env: dict[str, str],
    subscribers: Path,
    journal: j.Journal,
    read_only: Callable[[], j.Journal],
    counting_server: Callable[..., tuple[Server, Counting]],
) -> None:
    server, _ = counting_server()
    settings = settings_for(env, server)
    source = write_article(tmp_path / "issue.md", "Spring news")
    first_issue = plan_issue(source, subscribers, settings)
    first = run_send(first_issue, journal, SendOptions())
    assert first.sent == 3
    assert not any("--campaign" in w for w in first.warnings)

    write_article(source, "Spring news, corrected")
    edited = plan_issue(source, subscribers, settings)
    assert edited.campaign != first_issue.campaign
    if second_run == "dry":
        summary = run_dry(edited, tmp_path / "dry", write_all=False, state=read_only())
    else:
        summary = run_send(edited, journal, SendOptions())
    hints = [w for w in summary.warnings if first_issue.campaign in w]
    assert hints, summary.warnings
    assert f"--campaign {first_issue.campaign}" in hints[0]


# ------------------------------------------------- 14-15. previews


def test_preview_without_any_subscriber_list_uses_a_sample_reader(
    invoke: Invoke, tmp_path: Path, article: Path, env_file: EnvFile
) -> None:
    out = tmp_path / "preview" / "issue.html"
    result = invoke("preview", article, "--out", out, "--env-file", env_file())
    assert result.exit_code == 0, result.output
    assert "reader@example.org" in result.stdout
    assert out.is_file()
    message = parse(out.with_suffix(".eml").read_bytes())
    assert message["To"].addresses[0].addr_spec == "reader@example.org"


def test_second_dry_run_into_the_same_folder_replaces_only_its_own_files(
    invoke: Invoke, tmp_path: Path, article: Path, env_file: EnvFile
) -> None:
    settings = env_file()
    out = tmp_path / "out"
    out.mkdir()
    mine = {"notes.txt": "my notes", "my-draft.eml": "a draft of my own", "00001-notes.txt": "x"}
    for name, text in mine.items():
        (out / name).write_text(text, encoding="utf-8")

    four = emails(4)
    first = invoke(
        *send_args(article, write_list(tmp_path / "a.csv", four), settings, "--dry-run", "--out", out)
    )
    assert first.exit_code == 0, first.output
    assert len([p for p in out.glob("*.eml") if OUR_FILE.fullmatch(p.name)]) == 4

    two = ["zoe@example.org", "yan@example.com"]
    second = invoke(
        *send_args(article, write_list(tmp_path / "b.csv", two), settings, "--dry-run", "--out", out)
    )
    assert second.exit_code == 0, second.output

    ours = sorted(p.name for p in out.iterdir() if OUR_FILE.fullmatch(p.name))
    targets = sorted(
        str(parse((out / n).read_bytes())["To"].addresses[0].addr_spec) for n in ours if n.endswith(".eml")
    )
    assert targets == sorted(two), ours
    assert len(ours) == 2 * len(two), "one .eml and one .html per current recipient"
    for name, text in mine.items():
        assert (out / name).read_text(encoding="utf-8") == text, f"{name} is the user's file"
    assert (out / "index.html").is_file()


def test_runs_opening_a_new_journal_at_the_same_moment_all_succeed(tmp_path: Path) -> None:
    """Two cron jobs starting together on a fresh state folder must not fail with "locked"."""
    failures: list[BaseException] = []
    for trial in range(10):
        folder = tmp_path / f"state-{trial}"
        barrier = threading.Barrier(4)

        def open_it(folder: Path = folder, barrier: threading.Barrier = barrier) -> None:
            try:
                barrier.wait(timeout=10)
                j.Journal(folder).close()
            except BaseException as err:  # reported below
                failures.append(err)

        threads = [threading.Thread(target=open_it) for _ in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=30)
    assert failures == []


@pytest.mark.parametrize(("age_days", "given_up"), [(6, True), (1, False)])
def test_a_recipient_deferred_for_days_is_given_up(
    tmp_path: Path,
    env: dict[str, str],
    counting_server: Callable[..., tuple[Server, Counting]],
    age_days: float,
    given_up: bool,
) -> None:
    server, _ = counting_server()
    addresses = emails(2)
    issue = plan_issue(
        write_article(tmp_path / "a.md", "Give up"),
        write_list(tmp_path / "l.csv", addresses),
        settings_for(env, server, give_up_days="5"),
    )
    journal = open_journal(env)
    journal.begin(issue.campaign, issue.subject, issue.article.fingerprint, "a.md")
    key = addresses[0].lower()
    journal.outcome(
        issue.campaign, key, addresses[0], j.DEFERRED, code=451, enhanced="4.3.0", reply="4.3.0 later"
    )
    journal._db.execute(  # the first attempt was age_days ago
        "UPDATE recipients SET created = created - ? WHERE key = ?", (age_days * 86400, key)
    )

    summary = run_send(issue, journal, SendOptions(sleep=lambda _s: None))

    assert summary.given_up == int(given_up)
    assert journal.state(issue.campaign, key) == (j.FAILED if given_up else j.SENT)
    delivered = sorted(r.rcpt_tos[0] for r in server.received)
    assert delivered == (addresses[1:] if given_up else sorted(addresses))
    if given_up:
        assert "gave up" in journal.records(issue.campaign, (j.FAILED,))[0].reply
