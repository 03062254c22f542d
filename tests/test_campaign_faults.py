"""Issue 3: exactly-once sends that survive SMTP faults, SIGKILL, SIGTERM, locks and cron.

Every test talks SMTP over TCP to a real aiosmtpd server on 127.0.0.1. Runs that must be
killed or signalled are real ``python -m dispatch`` subprocesses; the rest go through the CLI
in-process. Outcomes are checked twice: by what the server stored (counted by ``rcpt_tos``)
and by what the journal (``dispatch status --json``) recorded.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from dispatch.settings import Settings, StateLocation
from dispatch.state import backend
from dispatch.state import journal as j
from tests.conftest import both_backends
from tests.smtp_servers import PASSWORD, FaultPlan, Handler, Server, free_port

CAMPAIGN = "faults-issue"
Invoke = Callable[..., Any]
EnvFile = Callable[..., Path]
JSON_KEYS = {"campaign", "sent", "failed", "deferred", "unknown", "skipped", "pending", "failures"}
RESUME_HINT = "Run the same command again to resume"
MAX_RUNS = 12


# --------------------------------------------------------------------------- helpers


def addresses(count: int, prefix: str = "reader") -> list[str]:
    """``count`` distinct lower-case addresses alternating between example.org and example.com."""
    domains = ("example.org", "example.com")
    return [f"{prefix}{i:03d}@{domains[i % 2]}" for i in range(count)]


def csv_rows(emails: list[str]) -> str:
    return "".join(f"{e},Reader {e.split('@')[0]}\n" for e in emails)


def write_list(path: Path, emails: list[str], extra: str = "") -> Path:
    path.write_text("email,name\n" + csv_rows(emails) + extra, encoding="utf-8", newline="")
    return path


def received_counts(server: Server) -> Counter[str]:
    """How many messages each address received (one RCPT per transaction)."""
    return Counter(rcpt for msg in list(server.received) for rcpt in msg.rcpt_tos)


def send_args(
    article: Path, csv: Path, settings: Path, *extra: str, campaign: str = CAMPAIGN, yes: bool = True
) -> list[str | Path]:
    """``send`` arguments; ``campaign=""`` lets dispatch derive the campaign from the article."""
    args: list[str | Path] = ["send", article, "-s", csv, "--env-file", settings]
    args += ["--campaign", campaign] if campaign else []
    return [*args, *(["--yes"] if yes else []), *extra]


def send_json(invoke: Invoke, *args: str | Path) -> tuple[int, dict[str, Any]]:
    """Run ``dispatch send ... --json`` in-process; (exit code, parsed stdout)."""
    result = invoke(*args, "--json")
    try:
        data = json.loads(result.stdout)
    except json.JSONDecodeError as err:  # pragma: no cover - the failure message is the point
        raise AssertionError(f"--json did not print JSON: {result.output!r}") from err
    assert data["exit_code"] == result.exit_code, result.output
    return result.exit_code, data


def run_until_done(invoke: Invoke, *args: str | Path) -> list[tuple[int, dict[str, Any]]]:
    """Repeat the same send until nothing is deferred or pending (bounded)."""
    runs: list[tuple[int, dict[str, Any]]] = []
    for _ in range(MAX_RUNS):
        code, data = send_json(invoke, *args)
        runs.append((code, data))
        if data["deferred"] == 0 and data["pending"] == 0:
            return runs
    raise AssertionError(f"still deferred/pending after {MAX_RUNS} runs: {runs[-1][1]}")


def status_json(invoke: Invoke, settings: Path, campaign: str = CAMPAIGN) -> dict[str, Any]:
    result = invoke("status", campaign, "--env-file", settings, "--json")
    assert result.exit_code == 0, result.output
    data: dict[str, Any] = json.loads(result.stdout)
    return data


def journal_states(state: StateLocation, campaign: str = CAMPAIGN) -> dict[str, str]:
    """address -> state, read straight from the journal (in_flight included)."""
    journal = backend.existing_journal(state)
    if journal is None:
        return {}
    try:
        return {r.email: r.state for r in journal.records(campaign, j.STATES)}
    finally:
        journal.close()


def wait_until(condition: Callable[[], bool], proc: subprocess.Popen[str] | None = None,
               timeout: float = 30.0) -> None:  # fmt: skip
    deadline = time.monotonic() + timeout
    while not condition():
        if proc is not None and proc.poll() is not None:
            out, err = proc.communicate()
            raise AssertionError(f"the run ended before the test could act: {proc.returncode}\n{out}\n{err}")
        if time.monotonic() > deadline:
            raise AssertionError("timed out waiting for the server")
        time.sleep(0.002)


def dispatch_cmd(*args: str | Path) -> list[str]:
    return [sys.executable, "-m", "dispatch", *(str(a) for a in args)]


class SlowHandler(Handler):
    """A Handler whose DATA takes ``delay`` seconds, so a signal can land mid-run.

    Also counts connections (one EHLO per plain connection) and the peak number of messages
    being received at the same moment.
    """

    def __init__(self, delay: float, faults: FaultPlan | None = None, *, pipelining: bool = True) -> None:
        super().__init__(faults, pipelining=pipelining)
        self.delay = delay
        self.active = 0
        self.peak = 0

    async def handle_EHLO(
        self, server: Any, session: Any, envelope: Any, hostname: str, responses: list[str]
    ) -> list[str]:
        self.connections += 1
        return await super().handle_EHLO(server, session, envelope, hostname, responses)

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.active += 1
        self.peak = max(self.peak, self.active)
        try:
            await asyncio.sleep(self.delay)
        finally:
            self.active -= 1
        return await super().handle_DATA(server, session, envelope)


# --------------------------------------------------------------------------- fixtures


@pytest.fixture
def slow_server(smtp_server: Callable[..., Server]) -> Callable[..., Server]:
    """Start plain (no TLS) aiosmtpd servers with a :class:`SlowHandler` on 127.0.0.1."""

    def start(delay: float = 0.0, faults: FaultPlan | None = None, *, pipelining: bool = True) -> Server:
        return smtp_server(handler=SlowHandler(delay, faults, pipelining=pipelining))

    return start


@pytest.fixture
def spawn(
    spawn: Callable[..., subprocess.Popen[str]], tmp_path: Path
) -> Callable[..., subprocess.Popen[str]]:
    """The shared ``spawn``, in a bare environment: only PATH, a HOME of the test's, a locale."""
    env = {"PATH": os.environ.get("PATH", os.defpath), "HOME": str(tmp_path), "LC_ALL": "C.UTF-8"}
    return lambda *args: spawn(*args, env=env)


@pytest.fixture
def env(tmp_path: Path, state_backend: dict[str, str]) -> dict[str, str]:
    """Every test here runs on both backends: the state folder and PostgreSQL."""
    return both_backends(tmp_path, state_backend)


@pytest.fixture
def state_dir(env: dict[str, str]) -> StateLocation:
    """Where the env fixture puts the state (a folder, or a PostgreSQL database)."""
    return Settings.from_mapping(env).state


# --------------------------------------------------------------------------- 1. faults


@pytest.mark.parametrize(
    ("with_permanent", "pipelining"),
    [(False, True), (True, True), (True, False)],
    ids=["transient-only", "transient-5xx-unknown", "transient-5xx-unknown-no-pipelining"],
)
def test_faulty_server_repeated_runs_deliver_each_address_once(
    invoke: Invoke, article: Path, tmp_path: Path, env_file: EnvFile,
    smtp_server: Callable[..., Server], with_permanent: bool, pipelining: bool,
) -> None:  # fmt: skip
    emails = addresses(200)
    rejected = emails[7::25] if with_permanent else []
    faults = FaultPlan(
        rcpt_4xx=0.08, data_4xx=0.08, drop_rcpt=0.04,
        drop_after_data=0.03 if with_permanent else 0.0,
        reject={a: f"550 5.1.1 <{a}>: Recipient address rejected: no such user" for a in rejected},
        seed=3,
    )  # fmt: skip
    server = smtp_server(faults=faults, pipelining=pipelining)
    settings = env_file(**server.env(), DISPATCH_RETRIES="1")
    csv = write_list(tmp_path / "list.csv", emails)

    runs = run_until_done(invoke, *send_args(article, csv, settings))

    assert len(runs) > 1, "the faults should have left some recipients deferred after the first run"
    for code, data in runs:  # exit codes as documented: 1 when this run failed, deferred or lost someone
        incomplete = data["failed_now"] or data["deferred_now"] or data["unknown_now"] or data["pending"]
        assert code == (1 if incomplete or data["recovered_unknown"] else 0), data
    counts = received_counts(server)
    deliverable = [a for a in emails if a not in rejected]
    assert {a: counts[a] for a in deliverable} == dict.fromkeys(deliverable, 1)
    assert all(counts[a] == 0 for a in rejected)
    assert sum(counts.values()) == len(deliverable)

    final = runs[-1][1]
    status = status_json(invoke, settings)
    problems = {p["email"]: p for p in status["problems"]}
    failed = {e: p for e, p in problems.items() if p["state"] == "failed"}
    assert set(failed) == set(rejected)
    for email, problem in failed.items():
        assert problem["code"] == 550
        assert problem["enhanced"] == "5.1.1"
        assert "no such user" in problem["message"]
        assert problem["hard_bounce"] is True, email
    unknown = [e for e, p in problems.items() if p["state"] == "unknown"]
    assert status["failed"] == final["failed"] == len(rejected)
    assert status["unknown"] == final["unknown"] == len(unknown)
    assert status["deferred"] == final["deferred"] == 0
    assert status["sent"] == final["sent"] == len(deliverable) - len(unknown)
    if with_permanent:
        assert unknown, "drop_after_data should have left some outcomes unknown"
        assert sum(data["unknown_now"] for _, data in runs) == len(unknown)
    else:
        assert unknown == []
        assert runs[-1][0] == 0


def test_unknown_is_not_resent_by_default_and_resend_unknown_reuses_message_id(
    invoke: Invoke, article: Path, tmp_path: Path, env_file: EnvFile, smtp_server: Callable[..., Server]
) -> None:
    emails = addresses(30)
    server = smtp_server(faults=FaultPlan(drop_after_data=0.4, seed=5))
    settings = env_file(**server.env())
    csv = write_list(tmp_path / "list.csv", emails)

    code, first = send_json(invoke, *send_args(article, csv, settings))
    unknown = {f["email"] for f in first["failures"] if f["state"] == "unknown"}
    assert code == 1
    assert 0 < len(unknown) < len(emails)
    assert first["unknown"] == len(unknown)
    assert received_counts(server) == Counter(emails), "the server stored every message exactly once"

    server.handler.faults = FaultPlan()
    code, again = send_json(invoke, *send_args(article, csv, settings))
    # an earlier run's unknown outcomes are listed, and this run, with nothing to do, exits 0
    assert (code, again["sent_now"], again["unknown"], again["unknown_now"]) == (0, 0, len(unknown), 0)
    assert received_counts(server) == Counter(emails), "unknown recipients must not be resent by default"

    code, resent = send_json(invoke, *send_args(article, csv, settings, "--resend-unknown"))
    assert (code, resent["sent_now"], resent["unknown"]) == (0, len(unknown), 0)
    counts = received_counts(server)
    assert {a for a, n in counts.items() if n == 2} == unknown
    assert all(counts[a] == 1 for a in emails if a not in unknown)
    for address in unknown:
        ids = {r.message["Message-ID"] for r in server.received if address in r.rcpt_tos}
        assert len(ids) == 1, f"{address}: the resend must carry the first copy's Message-ID: {ids}"


@pytest.mark.parametrize(
    ("reply_for", "expect_received", "expect_text"),
    [
        pytest.param(lambda emails: {emails[3]: "421 4.7.0 Too many messages, slow down"}, 3,
                     "Too many messages", id="rate-limit-reply"),
        pytest.param(lambda emails: {a: f"550 5.1.1 <{a}>: no such user"
                                     for i, a in enumerate(emails) if i % 5 < 3}, 8,
                     "refused permanently", id="failure-ratio"),
    ],
)  # fmt: skip
def test_quota_reply_or_failure_ratio_aborts_early(
    invoke: Invoke, article: Path, tmp_path: Path, env_file: EnvFile, smtp_server: Callable[..., Server],
    reply_for: Callable[[list[str]], dict[str, str]], expect_received: int, expect_text: str,
) -> None:  # fmt: skip
    emails = addresses(60)
    server = smtp_server(faults=FaultPlan(reject=reply_for(emails)))
    settings = env_file(**server.env())
    csv = write_list(tmp_path / "list.csv", emails)

    result = invoke(*send_args(article, csv, settings))

    assert result.exit_code == 3, result.output
    assert expect_text in result.stdout
    assert "Traceback" not in result.output
    assert len(server.received) == expect_received, "the run must stop instead of burning through the list"
    status = status_json(invoke, settings)
    assert status["sent"] == expect_received
    assert status["sent"] + status["failed"] + status["deferred"] < len(emails) / 2


# --------------------------------------------------------------------------- 2. SIGKILL


@pytest.mark.parametrize(
    ("kill_at", "connections", "pipelining"),
    [((2,), 1, True), ((25,), 3, True), ((8, 40), 2, True), ((5, 30), 1, False)],
    ids=["early-1conn", "mid-3conn", "twice-2conn", "twice-1conn-no-pipelining"],
)
def test_sigkill_mid_send_then_rerun_never_sends_twice(
    invoke: Invoke, article: Path, tmp_path: Path, env_file: EnvFile, state_dir: Path,
    slow_server: Callable[..., Server], spawn: Callable[..., subprocess.Popen[str]],
    kill_at: tuple[int, ...], connections: int, pipelining: bool,
) -> None:  # fmt: skip
    emails = addresses(100)
    server = slow_server(delay=0.02, pipelining=pipelining)
    settings = env_file(**server.env(), DISPATCH_CONNECTIONS=str(connections))
    csv = write_list(tmp_path / "list.csv", emails)
    rng = random.Random(sum(kill_at) * 31 + connections)

    in_flight_at_kills: list[int] = []
    for threshold in kill_at:
        proc = spawn(*send_args(article, csv, settings))
        wait_until(lambda t=threshold: len(server.received) >= t, proc)  # type: ignore[misc]
        time.sleep(rng.uniform(0.0, 0.03))
        proc.send_signal(signal.SIGKILL)
        proc.communicate(timeout=30)
        assert proc.returncode == -signal.SIGKILL, "the kill must land while the run is going"
        if state_dir.url:  # the killed sender counts as sending until its lease runs out
            time.sleep(state_dir.lease + 0.3)
        states = journal_states(state_dir)
        in_flight = sum(s == j.IN_FLIGHT for s in states.values())
        assert in_flight <= connections, f"more rows in flight than connections: {states}"
        in_flight_at_kills.append(in_flight)
        # one word for them everywhere: status, like the next run and its dry run, says unknown
        seen = status_json(invoke, settings)
        assert (seen["in_flight"], seen["unknown"]) == (0, sum(in_flight_at_kills)), seen
        assert max(received_counts(server).values()) == 1

    runs = run_until_done(invoke, *send_args(article, csv, settings))
    final = runs[-1][1]
    counts = received_counts(server)
    states = journal_states(state_dir)

    assert all(n == 1 for n in counts.values()), "no subscriber may receive two messages"
    for address in emails:
        outcome = states.get(address)
        assert counts[address] == 1 or outcome in (j.UNKNOWN, j.FAILED), (address, outcome)
    assert all(counts[a] == 1 for a, s in states.items() if s == j.SENT)
    assert final["unknown"] == sum(in_flight_at_kills) <= connections * len(kill_at)
    assert final["sent"] + final["unknown"] == len(emails)
    assert runs[-1][0] == (1 if final["unknown"] else 0)

    # --resend-unknown delivers the rest; only the unknown ones can end up with two copies.
    unknown = {a for a, s in states.items() if s == j.UNKNOWN}
    code, resent = send_json(invoke, *send_args(article, csv, settings, "--resend-unknown"))
    counts = received_counts(server)
    assert (code, resent["sent"], resent["unknown"]) == (0, len(emails), 0)
    assert all(counts[a] >= 1 for a in emails)
    assert {a for a, n in counts.items() if n > 1} <= unknown


KILL_BEFORE_THE_DOT = """
import json, os, signal, sys
from pathlib import Path
from dispatch.compose.issue import plan_issue
from dispatch.send.delivery import SendOptions, run_send
from dispatch.settings import Settings
from dispatch.state import backend
from dispatch.state import journal as j

article, csv, kill_at, env = sys.argv[1], sys.argv[2], int(sys.argv[3]), json.loads(sys.argv[4])
marks = 0
record = j.Journal.in_flight

def in_flight(self, *args):
    global marks
    marks += 1
    if marks == kill_at:  # the message is on the wire, the final dot is not
        os.kill(os.getpid(), signal.SIGKILL)
    return record(self, *args)

j.Journal.in_flight = in_flight
settings = Settings.from_mapping(env)
issue = plan_issue(Path(article), Path(csv), settings)
print(issue.campaign, flush=True)
run_send(issue, backend.open_journal(settings.state), SendOptions())
"""


def test_sigkill_after_the_message_and_before_its_final_dot_delivers_it_exactly_once(
    invoke: Invoke, article: Path, tmp_path: Path, env: dict[str, str], env_file: EnvFile,
    smtp_server: Callable[..., Server], state_dir: Path,
) -> None:  # fmt: skip
    """With one connection the message goes to the relay before its in-flight record is
    committed, and only the final dot waits for the commit. A process killed in between (the
    record never committed) must not have delivered anything: the relay cancels a transaction
    cut off before its dot (RFC 5321 4.1.1.10), and the next run sends that recipient once."""
    emails = addresses(6)
    server = smtp_server()
    values = {**env, **server.env(), "DISPATCH_CONNECTIONS": "1"}
    csv = write_list(tmp_path / "list.csv", emails)
    script = tmp_path / "kill_before_the_dot.py"
    script.write_text(KILL_BEFORE_THE_DOT, encoding="utf-8")

    killed = subprocess.run(
        [sys.executable, str(script), str(article), str(csv), "3", json.dumps(values)],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip

    assert killed.returncode == -signal.SIGKILL, killed.stderr
    wait_until(lambda: received_counts(server).total() >= 2, timeout=10)
    time.sleep(0.3)  # time for the relay to see the connection close and drop the half message
    assert received_counts(server) == dict.fromkeys(emails[:2], 1)
    campaign = killed.stdout.strip()
    states = journal_states(state_dir, campaign)
    assert emails[2] not in states, f"the third recipient's record was never committed: {states}"
    assert states[emails[1]] == j.IN_FLIGHT  # its outcome rode with the next commit, which never came

    settings = env_file(**server.env(), DISPATCH_CONNECTIONS="1")
    code, rerun = send_json(invoke, *send_args(article, csv, settings, campaign=campaign))
    assert (code, rerun["unknown"], rerun["sent"]) == (1, 1, len(emails) - 1), rerun
    counts = received_counts(server)
    assert counts == dict.fromkeys(emails, 1), "the cut-off message must not have been delivered"


# --------------------------------------------------------------------------- 3. the lock


def test_second_concurrent_run_exits_at_once_with_locked_code(
    invoke: Invoke, article: Path, tmp_path: Path, env_file: EnvFile, state_dir: StateLocation,
    slow_server: Callable[..., Server], spawn: Callable[..., subprocess.Popen[str]],
) -> None:  # fmt: skip
    """With the state folder, one process per campaign: a second run exits at once (4). With
    PostgreSQL a second sender is welcome: it joins, takes part of the list, and nobody gets
    the issue twice."""
    emails = addresses(50)
    server = slow_server(delay=0.05)
    settings = env_file(**server.env())
    csv = write_list(tmp_path / "list.csv", emails)
    first = spawn(*send_args(article, csv, settings))
    wait_until(lambda: len(server.received) >= 2, first)

    started = time.monotonic()
    second = invoke(*send_args(article, csv, settings), *(["--json"] if state_dir.url else []))
    elapsed = time.monotonic() - started

    if state_dir.url:
        joined = json.loads(second.stdout)
        assert (second.exit_code, joined["exit_code"]) == (0, 0), second.output
        assert 0 < joined["sent_now"] < len(emails)
        assert sum(joined["accounting"].values()) == joined["rows"] == len(emails), joined["accounting"]
        out, err = first.communicate(timeout=60)
        assert first.returncode == 0, out + err
        assert received_counts(server) == Counter(emails)
        return

    assert first.poll() is None, "the first run should still be going"
    assert second.exit_code == 4, second.output
    assert elapsed < 5, f"a locked run must exit at once, took {elapsed:.1f}s"
    lines = second.stderr.strip().splitlines()
    assert len(lines) == 1, second.stderr
    assert CAMPAIGN in lines[0]
    assert "another dispatch process" in lines[0]
    assert second.stdout == ""

    out, err = first.communicate(timeout=60)
    assert first.returncode == 0, out + err
    assert received_counts(server) == Counter(emails)


# --------------------------------------------------------------------------- 4. throughput


@pytest.mark.parametrize(
    ("source", "count", "rate", "minimum"),
    [("flag", 200, "50/s", 3.9), ("env", 40, "1200/min", 1.9)],
)
def test_rate_limit_paces_the_whole_run(
    invoke: Invoke, article: Path, tmp_path: Path, env_file: EnvFile, smtp_server: Callable[..., Server],
    source: str, count: int, rate: str, minimum: float,
) -> None:  # fmt: skip
    server = smtp_server()
    emails = addresses(count)
    csv = write_list(tmp_path / "list.csv", emails)
    if source == "flag":
        args = send_args(article, csv, env_file(**server.env()), "--rate", rate)
    else:
        args = send_args(article, csv, env_file(**server.env(), DISPATCH_RATE=rate))

    started = time.monotonic()
    code, data = send_json(invoke, *args)
    elapsed = time.monotonic() - started

    assert code == 0, data
    assert data["sent"] == count
    assert received_counts(server) == Counter(emails)
    assert elapsed >= minimum, f"{count} messages at {rate} took only {elapsed:.2f}s"


@pytest.mark.parametrize("source", ["flag", "env"])
def test_daily_limit_holds_across_runs(
    invoke: Invoke, article: Path, tmp_path: Path, env_file: EnvFile, smtp_server: Callable[..., Server],
    source: str,
) -> None:  # fmt: skip
    server = smtp_server()
    emails = addresses(20)
    csv = write_list(tmp_path / "list.csv", emails)
    if source == "flag":
        settings, extra = env_file(**server.env()), ["--daily-limit", "5"]
    else:
        settings, extra = env_file(**server.env(), DISPATCH_DAILY_LIMIT="5"), []

    code, first = send_json(invoke, *send_args(article, csv, settings, *extra))
    assert code == 1
    assert (first["sent_now"], first["sent"], first["pending"]) == (5, 5, 15)
    assert first["daily_limit_reached"] is True
    assert len(server.received) == 5

    result = invoke(*send_args(article, csv, settings, *extra))
    assert result.exit_code == 1
    assert "Daily limit reached" in result.stdout
    assert "Pending:" in result.stdout
    assert len(server.received) == 5, "the second run within 24 h must send nothing more"

    code, data = send_json(invoke, *send_args(article, csv, settings, *extra, campaign="another-issue"))
    assert (code, data["sent_now"], data["pending"]) == (1, 0, 20)
    assert len(server.received) == 5, "the limit counts every campaign in the state folder"
    assert status_json(invoke, settings)["sent"] == 5


# --------------------------------------------------------------------------- 5. aborts


@pytest.mark.parametrize("fault", ["wrong-password", "unreachable"])
def test_wrong_password_or_dead_server_aborts_with_one_line(
    article: Path, tmp_path: Path, env_file: EnvFile, starttls_server: Server, state_dir: Path,
    spawn: Callable[..., subprocess.Popen[str]], fault: str,
) -> None:  # fmt: skip
    env = starttls_server.env()
    if fault == "wrong-password":
        env["DISPATCH_SMTP_PASSWORD"] = "not-the-password"
    else:
        env["DISPATCH_SMTP_PORT"] = str(free_port())  # nothing listens there
    settings = env_file(**env)
    csv = write_list(tmp_path / "list.csv", addresses(10))

    proc = spawn(*send_args(article, csv, settings))
    out, err = proc.communicate(timeout=60)

    assert proc.returncode == 3, out + err
    assert len(starttls_server.received) == 0
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("dispatch: error:")
    assert "Traceback" not in out + err
    assert "not-the-password" not in out + err
    assert PASSWORD not in out + err
    assert not any(s == j.SENT for s in journal_states(state_dir).values())
    if fault == "wrong-password":
        assert "DISPATCH_SMTP_PASSWORD" in lines[0]


@pytest.mark.parametrize(
    ("pipelining", "connections"),
    [(True, "2"), (True, "1"), (False, "2")],
    ids=["pipelined-2conn", "pipelined-1conn", "one-at-a-time-2conn"],
)
def test_refused_sender_leaves_each_recipient_as_it_was(
    invoke: Invoke, article: Path, tmp_path: Path, env_file: EnvFile, smtp_server: Callable[..., Server],
    state_dir: Path, pipelining: bool, connections: str,
) -> None:  # fmt: skip
    """With several connections and a relay that pipelines, MAIL, RCPT and DATA go in one go
    and the row goes in flight while the relay reads them. When it then refuses the sender, no
    data left: the row must go back to what it was (no row, or deferred), never stay in flight
    to be read as unknown later. The other ways of sending must leave the rows alone too."""
    emails = addresses(6)
    server = smtp_server(faults=FaultPlan(rcpt_4xx=1.0), pipelining=pipelining)
    settings = env_file(**server.env(), DISPATCH_RETRIES="0", DISPATCH_CONNECTIONS=connections)
    tail = write_list(tmp_path / "tail.csv", emails[3:])
    everyone = write_list(tmp_path / "list.csv", emails)
    code, first = send_json(invoke, *send_args(article, tail, settings))
    assert (code, first["deferred"]) == (1, 3), first
    before = journal_states(state_dir)
    assert before == dict.fromkeys(emails[3:], j.DEFERRED)

    server.handler.faults = FaultPlan(refuse_sender="550 5.7.1 sender rejected by policy")
    for csv, first_reader in ((everyone, emails[0]), (tail, emails[3])):  # no row yet; deferred
        code, refused = send_json(invoke, *send_args(article, csv, settings))
        assert code == 3, refused
        assert "refused the sender" in refused["aborted"], refused
        assert journal_states(state_dir) == before, f"{first_reader} was not put back"
        assert status_json(invoke, settings)["unknown"] == 0

    server.handler.faults = FaultPlan()
    runs = run_until_done(invoke, *send_args(article, everyone, settings))
    assert runs[-1][1]["sent"] == len(emails)
    assert runs[-1][1]["unknown"] == 0
    assert received_counts(server) == dict.fromkeys(emails, 1)


# --------------------------------------------------------------------------- 6. --json


@pytest.mark.parametrize("faulty", [False, True], ids=["clean", "5xx-and-4xx"])
def test_json_summary_parses_and_matches_the_server(
    invoke: Invoke, article: Path, tmp_path: Path, env_file: EnvFile, smtp_server: Callable[..., Server],
    faulty: bool,
) -> None:  # fmt: skip
    emails = addresses(40)
    rejected = emails[5:8] if faulty else []
    busy = emails[20:22] if faulty else []
    replies = {a: f"550 5.1.1 <{a}>: no such user" for a in rejected}
    replies |= dict.fromkeys(busy, "452 4.2.2 mailbox full, try later")
    server = smtp_server(faults=FaultPlan(reject=replies))
    settings = env_file(**server.env(), DISPATCH_RETRIES="1")
    csv = write_list(tmp_path / "list.csv", emails, extra="not-an-address,Nobody\n" + csv_rows(emails[:1]))

    result = invoke(*send_args(article, csv, settings), "--json")

    data = json.loads(result.stdout)
    assert set(data) >= JSON_KEYS
    counts = received_counts(server)
    assert data["campaign"] == CAMPAIGN
    assert data["sent"] == len(counts) == sum(counts.values()) == len(emails) - len(rejected) - len(busy)
    assert data["failed"] == len(rejected)
    assert data["deferred"] == len(busy)
    assert (data["unknown"], data["pending"], data["skipped"]) == (0, 0, 2)
    assert all({"email", "code", "message"} <= set(f) for f in data["failures"])
    failures = {f["email"]: f for f in data["failures"]}
    assert set(failures) == set(rejected) | set(busy)
    assert all(failures[a]["code"] == 550 and "5.1.1" in failures[a]["message"] for a in rejected)
    assert all(failures[a]["code"] == 452 and "mailbox full" in failures[a]["message"] for a in busy)
    assert result.exit_code == data["exit_code"] == (1 if faulty else 0)
    status = status_json(invoke, settings)
    assert {k: status[k] for k in ("sent", "failed", "deferred", "unknown")} == {
        k: data[k] for k in ("sent", "failed", "deferred", "unknown")
    }


# --------------------------------------------------------------------------- re-runs


def test_finished_campaign_sends_nothing_and_rows_added_later_are_sent(
    invoke: Invoke, article: Path, tmp_path: Path, env_file: EnvFile, smtp_server: Callable[..., Server]
) -> None:
    server = smtp_server()
    settings = env_file(**server.env())
    emails = addresses(30)
    csv = write_list(tmp_path / "list.csv", emails)
    args = send_args(article, csv, settings)

    assert send_json(invoke, *args)[1]["sent_now"] == 30
    code, again = send_json(invoke, *args)
    assert (code, again["sent_now"], again["already_sent"]) == (0, 0, 30)
    assert received_counts(server) == Counter(emails)

    late = addresses(7, prefix="late")
    with csv.open("a", encoding="utf-8", newline="") as handle:
        handle.write(csv_rows(late))
    code, third = send_json(invoke, *args)
    assert (code, third["sent_now"], third["sent"]) == (0, 7, 37)
    assert received_counts(server) == Counter(emails + late)


def test_edited_article_is_not_resent_and_the_output_warns(
    invoke: Invoke, article: Path, tmp_path: Path, env_file: EnvFile, smtp_server: Callable[..., Server]
) -> None:
    server = smtp_server()
    settings = env_file(**server.env())
    emails = addresses(12)
    csv = write_list(tmp_path / "list.csv", emails)
    args = send_args(article, csv, settings, campaign="")  # the campaign derived from the article

    code, first = send_json(invoke, *args)
    assert (code, first["sent_now"], first["content_changed"]) == (0, 12, False)
    text = article.read_text(encoding="utf-8")
    assert "forever wars" in text
    article.write_text(text.replace("forever wars", "endless wars"), encoding="utf-8")

    result = invoke(*args)
    assert result.exit_code == 0, result.output
    assert "article changed" in result.stdout
    assert f"Campaign:      {first['campaign']}" in result.stdout
    assert received_counts(server) == Counter(emails), "recipients already sent must never be resent"
    assert status_json(invoke, settings, first["campaign"])["sent"] == 12


def test_dry_run_never_writes_sent_state(
    invoke: Invoke, article: Path, tmp_path: Path, env_file: EnvFile, smtp_server: Callable[..., Server],
    state_dir: Path,
) -> None:  # fmt: skip
    server = smtp_server()
    settings = env_file(**server.env())
    emails = addresses(25)
    csv = write_list(tmp_path / "list.csv", emails)
    dry = [*send_args(article, csv, settings), "--dry-run", "--out", tmp_path / "preview"]

    code, data = send_json(invoke, *dry)
    assert (code, data["pending"], data["sent"]) == (0, 25, 0)
    assert journal_states(state_dir) == {}
    assert server.received == []

    assert send_json(invoke, *send_args(article, csv, settings, "--limit", "10"))[1]["sent_now"] == 10
    before = journal_states(state_dir)
    code, data = send_json(invoke, *dry)
    assert (code, data["pending"], data["already_sent"]) == (0, 15, 10)
    assert journal_states(state_dir) == before
    assert len(server.received) == 10

    code, data = send_json(invoke, *send_args(article, csv, settings))
    assert (code, data["sent_now"], data["sent"]) == (0, 15, 25)
    assert received_counts(server) == Counter(emails)


# --------------------------------------------------------------------------- connections


@pytest.mark.parametrize("faulty", [False, True], ids=["clean", "transient-faults"])
def test_four_connections_deliver_everyone_exactly_once(
    invoke: Invoke, article: Path, tmp_path: Path, env_file: EnvFile, slow_server: Callable[..., Server],
    faulty: bool,
) -> None:  # fmt: skip
    faults = FaultPlan(rcpt_4xx=0.05, data_4xx=0.05, drop_rcpt=0.03, seed=11) if faulty else None
    server = slow_server(delay=0.01, faults=faults)
    settings = env_file(**server.env())
    emails = addresses(200)
    csv = write_list(tmp_path / "list.csv", emails)

    runs = run_until_done(invoke, *send_args(article, csv, settings, "--connections", "4"))

    assert runs[-1][0] == 0, runs[-1][1]
    assert runs[-1][1]["sent"] == 200
    assert received_counts(server) == Counter(emails)
    handler = server.handler
    assert isinstance(handler, SlowHandler)
    assert handler.connections >= 4
    assert handler.peak >= 2, "messages should have been in DATA on several connections at once"


# --------------------------------------------------------------------------- SIGTERM / SIGINT


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_signal_finishes_in_flight_records_them_and_rerun_completes(
    invoke: Invoke, article: Path, tmp_path: Path, env_file: EnvFile, state_dir: Path,
    slow_server: Callable[..., Server], spawn: Callable[..., subprocess.Popen[str]], signum: signal.Signals,
) -> None:  # fmt: skip
    server = slow_server(delay=0.03)
    settings = env_file(**server.env(), DISPATCH_CONNECTIONS="2")
    emails = addresses(80)
    csv = write_list(tmp_path / "list.csv", emails)

    proc = spawn(*send_args(article, csv, settings))
    wait_until(lambda: len(server.received) >= 10, proc)
    proc.send_signal(signum)
    out, err = proc.communicate(timeout=30)

    assert proc.returncode == 130, out + err
    assert RESUME_HINT in out
    assert signum.name in err
    assert "Traceback" not in out + err
    states = journal_states(state_dir)
    counts = received_counts(server)
    assert j.IN_FLIGHT not in states.values(), "messages in flight must be finished and recorded"
    assert j.UNKNOWN not in states.values()
    assert {a for a, s in states.items() if s == j.SENT} == set(counts)
    done = len(counts)
    assert 10 <= done < len(emails)

    code, data = send_json(invoke, *send_args(article, csv, settings))
    assert (code, data["sent_now"], data["sent"]) == (0, len(emails) - done, len(emails))
    assert received_counts(server) == Counter(emails)


def test_a_second_signal_still_leaves_one_json_line(
    article: Path, tmp_path: Path, env_file: EnvFile, slow_server: Callable[..., Server],
    spawn: Callable[..., subprocess.Popen[str]],
) -> None:  # fmt: skip
    """A second SIGTERM leaves at once, with no summary: a cron log that reads one JSON line
    per run still gets one for this run."""
    # The message in flight at the first signal takes far longer than the test needs, however
    # late a loaded machine lets the test notice it (with 2 s, one CI run saw it end, and the run
    # with it, before the second signal).
    server = slow_server(delay=20.0)
    settings = env_file(**server.env())
    proc = spawn(*send_args(article, write_list(tmp_path / "list.csv", addresses(10)), settings), "--json")
    handler = server.handler
    assert isinstance(handler, SlowHandler)
    wait_until(lambda: handler.active >= 1, proc)  # a message in flight
    proc.send_signal(signal.SIGTERM)
    time.sleep(0.3)
    assert proc.poll() is None, "the run ended before the second signal"
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=30)

    assert proc.returncode == 130, out + err
    assert "stopped at once" in err
    (line,) = out.splitlines()
    data = json.loads(line)
    assert data["exit_code"] == 130
    assert data["kind"] == "interrupted"


def test_a_dry_run_during_a_send_of_the_same_campaign_says_so(
    invoke: Invoke, article: Path, tmp_path: Path, env_file: EnvFile, slow_server: Callable[..., Server],
    spawn: Callable[..., subprocess.Popen[str]],
) -> None:  # fmt: skip
    server = slow_server(delay=1.0)
    settings = env_file(**server.env())
    csv = write_list(tmp_path / "list.csv", addresses(6))
    proc = spawn(*send_args(article, csv, settings))
    handler = server.handler
    assert isinstance(handler, SlowHandler)
    try:
        wait_until(lambda: handler.active >= 1, proc)
        dry = invoke(*send_args(article, csv, settings, yes=False), "--dry-run", "--out", tmp_path / "out")
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.communicate(timeout=30)
    assert dry.exit_code == 0, dry.stderr
    assert "is running now: these counts are as of this moment" in dry.stdout


# --------------------------------------------------------------------------- cron


@pytest.mark.parametrize("yes", [True, False], ids=["with-yes", "without-yes"])
def test_cron_env_i_from_root_with_stdin_closed(
    article: Path, tmp_path: Path, env_file: EnvFile, smtp_server: Callable[..., Server], state_dir: Path,
    yes: bool,
) -> None:  # fmt: skip
    server = smtp_server()
    settings = env_file(**server.env()).resolve()
    emails = addresses(15)
    csv = write_list(tmp_path / "list.csv", emails).resolve()
    env_bin = shutil.which("env")
    assert env_bin is not None
    cmd = [env_bin, "-i", *dispatch_cmd(*send_args(article.resolve(), csv, settings, yes=yes))]

    proc = subprocess.run(cmd, cwd="/", stdin=subprocess.DEVNULL, capture_output=True, text=True,
                          timeout=60, check=False)  # fmt: skip

    output = proc.stdout + proc.stderr
    assert "Traceback" not in output
    assert "\x1b" not in output, "no progress bar or terminal codes without a terminal"
    if yes:
        assert proc.returncode == 0, output
        assert received_counts(server) == Counter(emails)
        assert CAMPAIGN in proc.stdout
        assert sum(s == j.SENT for s in journal_states(state_dir).values()) == 15
    else:
        assert proc.returncode == 2, output
        assert server.received == []
        lines = proc.stderr.strip().splitlines()
        assert len(lines) == 1
        assert "--yes" in lines[0]
        assert journal_states(state_dir) == {}
