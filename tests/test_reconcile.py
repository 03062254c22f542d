"""``dispatch reconcile`` decides only what the relay's log proves (issue 16): kept messages are
sent, messages the log shows never taken are sent again, and a log that does not cover the time
a message went out (or whose clock disagrees) leaves it unknown, saying why. Real journals in
tmp_path; the logs are written here in the shapes Postfix writes them."""

from __future__ import annotations

import gzip
import json
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from dispatch.settings import Settings
from dispatch.state import backend
from dispatch.state import journal as journal_module
from dispatch.state.journal import Journal
from tests.conftest import both_backends

CAMPAIGN = "weekly-issue"
Invoke = Callable[..., Any]
ANN, BOB, CY = "ann@example.org", "bob@example.com", "cy@example.org"


def mid(email: str) -> str:
    return f"<weekly-issue.{email.split('@', maxsplit=1)[0]}@example.org>"


def iso(when: float) -> str:
    return datetime.fromtimestamp(when).astimezone().isoformat(timespec="microseconds")


def syslog(when: float) -> str:
    return datetime.fromtimestamp(when).strftime("%b %e %H:%M:%S")


class Log:
    """A Postfix log written line by line, each at a given time."""

    def __init__(self, stamp: Callable[[float], str] = iso) -> None:
        self.stamp = stamp
        self.lines: list[str] = []
        self.count = 0

    def line(self, when: float, program: str, text: str) -> Log:
        self.lines.append(f"{self.stamp(when)} relay postfix/{program}: {text}\n")
        return self

    def kept(self, when: float, message_id: str) -> Log:
        self.count += 1
        qid = f"K{self.count:05d}"
        self.line(when, "smtpd[10]", f"{qid}: client=news[192.0.2.7]")
        self.line(when, "cleanup[11]", f"{qid}: message-id={message_id}")
        return self.line(when, "qmgr[12]", f"{qid}: from=<news@example.org>, size=99, nrcpt=1 (queue active)")

    def dropped(self, when: float, message_id: str) -> Log:
        self.count += 1
        qid = f"D{self.count:05d}"
        self.line(when, "smtpd[20]", f"{qid}: client=news[192.0.2.7]")
        self.line(when, "smtpd[20]", "lost connection after DATA (512 bytes) from news[192.0.2.7]")
        return self.line(when, "cleanup[11]", f"{qid}: message-id={message_id}")

    def span(self, start: float, end: float) -> Log:
        self.line(start, "master[1]", "daemon started -- version 3.7.11")
        return self.line(end, "anvil[2]", "statistics: max connection rate 1/60s for (smtp:192.0.2.7)")

    def write(self, path: Path) -> Path:
        text = "".join(self.lines).encode()
        path.write_bytes(gzip.compress(text) if path.suffix == ".gz" else text)
        return path


@pytest.fixture
def env(tmp_path: Path, state_backend: dict[str, str]) -> dict[str, str]:
    """Every reconcile test runs on both backends: the state folder, and PostgreSQL."""
    return both_backends(tmp_path, state_backend)


def _journal(env: dict[str, str]) -> Journal:
    return backend.open_journal(Settings.from_mapping(env).state)


@pytest.fixture
def journal_with(env: dict[str, str]) -> Callable[..., float]:
    """Readers left in flight by a run that died (or unknown after a lost reply); the time they
    went out."""

    def make(*in_flight: str, lost_reply: tuple[str, ...] = (), no_id: tuple[str, ...] = ()) -> float:
        journal = _journal(env)
        journal.begin(CAMPAIGN, "Weekly", "fingerprint", "/srv/issue.md")
        went = time.time()
        for email in (*in_flight, *lost_reply, *no_id):
            journal.in_flight(CAMPAIGN, email, email, "" if email in no_id else mid(email))
        for email in lost_reply:
            journal.outcome(
                CAMPAIGN, email, email, "unknown", code=None, enhanced="", reply="lost", attempts=0
            )
        journal.close()
        return went

    return make


def run(invoke: Invoke, settings: Path, *logs: Path) -> tuple[int, dict[str, Any], str]:
    args: list[str | Path] = ["reconcile", CAMPAIGN, "--env-file", settings, "--json"]
    for log in logs:
        args += ["--maillog", log]
    result = invoke(*args)
    assert "Traceback" not in result.output
    data: dict[str, Any] = json.loads(result.stdout)
    assert data["exit_code"] == result.exit_code
    return result.exit_code, data, result.stderr


def outcomes(data: dict[str, Any]) -> dict[str, tuple[str, str]]:
    return {d["email"]: (kind, d["why"]) for kind in ("sent", "send_again", "unknown") for d in data[kind]}


def states(env: dict[str, str]) -> dict[str, tuple[str, str]]:
    journal = _journal(env)
    try:
        return {
            r.email: (r.state, r.reply) for r in journal.records(CAMPAIGN, ("unknown", "sent", "deferred"))
        }
    finally:
        journal.close()


CASES: dict[str, tuple[Callable[[float], Log], dict[str, tuple[str, str]]]] = {
    "kept-and-never-seen": (
        lambda t: Log().span(t - 60, t + 5).kept(t, mid(ANN)),
        {ANN: ("sent", "queued it as K00001"), BOB: ("send_again", "never shows its Message-ID")},
    ),
    "dropped-before-the-dot": (
        lambda t: Log().span(t - 60, t + 5).dropped(t, mid(ANN)).kept(t, mid(BOB)),
        {ANN: ("send_again", "before the final dot"), BOB: ("sent", "queued it")},
    ),
    "kept-twice-is-one-message": (
        lambda t: Log().span(t - 60, t + 5).kept(t, mid(ANN)).kept(t + 1, mid(ANN)).kept(t, mid(BOB)),
        {ANN: ("sent", "and 1 more time"), BOB: ("sent", "K00003")},
    ),
    "log-starts-too-late": (
        lambda t: Log().span(t + 10, t + 20),
        {
            ANN: ("unknown", "give the older log files too (maillog.1 next to it)"),
            BOB: ("unknown", "starts at"),
        },
    ),
    "log-ends-too-early": (
        lambda t: Log().span(t - 100, t - 10).kept(t - 50, mid(CY)),
        {ANN: ("unknown", "give the relay's current log"), BOB: ("unknown", "the log ends at")},
    ),
    "lines-from-the-future": (
        lambda t: Log().span(t - 60, t + 3 * 3600).kept(t, mid(ANN)),
        {ANN: ("sent", "queued it"), BOB: ("unknown", "from the future")},
    ),
    "another-time-zone": (
        lambda t: Log().span(t - 4 * 3600, t + 5).dropped(t - 2 * 3600, mid(ANN)),
        {ANN: ("unknown", "time zone differs"), BOB: ("unknown", "time zone differs")},
    ),
    "whole-seconds-in-the-same-second": (
        lambda t: Log(syslog).span(t - 60, t).dropped(t, mid(ANN)),
        {ANN: ("send_again", "before the final dot"), BOB: ("send_again", "never shows")},
    ),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_what_the_log_proves_is_settled_and_the_rest_stays_unknown_with_the_reason(
    invoke: Invoke,
    env: dict[str, str],
    tmp_path: Path,
    env_file: Callable[..., Path],
    journal_with: Callable[..., float],
    case: str,
) -> None:
    went = journal_with(ANN, BOB)
    build, expected = CASES[case]
    (tmp_path / "maillog.1").write_text("", encoding="utf-8")  # an older rotated file, not given
    maillog = build(went).write(tmp_path / "maillog")

    code, data, text = run(invoke, env_file(), maillog)

    found = outcomes(data)
    assert {e: kind for e, (kind, _) in found.items()} == {e: kind for e, (kind, _) in expected.items()}
    for email, (_, words) in expected.items():
        assert words in found[email][1], (email, found[email])
    assert code == (1 if data["counts"]["unknown"] else 0)
    assert data["recovered_in_flight"] == 2
    journal_states = states(env)
    wanted = {"sent": "sent", "send_again": "deferred", "unknown": "unknown"}
    assert {e: s for e, (s, _) in journal_states.items()} == {e: wanted[k] for e, (k, _) in found.items()}
    for email, (kind, why) in found.items():
        if kind != "unknown":
            assert journal_states[email][1] == f"reconciled: {why}"
    assert "Reconcile weekly-issue" in text


@contextmanager
def journal_clock(start: float) -> Iterator[SimpleNamespace]:
    """The journal's clock, set by the test (``clock.now``) for each write it makes."""
    clock = SimpleNamespace(now=start)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(journal_module, "time", SimpleNamespace(time=lambda: clock.now))
        yield clock


LOST = {"code": None, "enhanced": "", "reply": "connection lost waiting for the reply", "attempts": 0}


@pytest.mark.parametrize(("marked", "reach"), [(300.0, 300.0), (None, 900.0)], ids=["marked", "older-row"])
def test_a_lost_reply_needs_the_log_to_reach_back_to_its_in_flight_mark(
    invoke: Invoke, env: dict[str, str], tmp_path: Path, env_file: Callable[..., Path],
    marked: float | None, reach: float,
) -> None:  # fmt: skip
    """A reply lost after the final dot: the message went out after its row was marked in flight
    (300 s before the loss here), and the journal keeps that mark. A row an older version wrote
    kept only the loss's time: the message may have gone out up to the reply's 10 minutes before."""
    journal = _journal(env)
    journal.begin(CAMPAIGN, "Weekly", "fingerprint", "/srv/issue.md")
    lost = time.time() - 60
    with journal_clock(lost - (marked or 0.0)) as clock:
        if marked is not None:
            journal.in_flight(CAMPAIGN, ANN, ANN, mid(ANN))
        clock.now = lost
        journal.outcome(CAMPAIGN, ANN, ANN, "unknown", message_id=mid(ANN), **LOST)
    journal.close()
    short = Log().span(lost - reach + 30, lost + 5).write(tmp_path / "short.log")
    long = Log().span(lost - reach - 30, lost + 5).write(tmp_path / "long.log")

    _, first, _ = run(invoke, env_file(), short)
    _, second, _ = run(invoke, env_file(), long)

    assert outcomes(first)[ANN][0] == "unknown"
    assert "starts at" in outcomes(first)[ANN][1]
    assert outcomes(second)[ANN][0] == "send_again"


def test_an_unknown_without_a_message_id_stays_unknown(
    invoke: Invoke, tmp_path: Path, env_file: Callable[..., Path], journal_with: Callable[..., float]
) -> None:
    went = journal_with(ANN, no_id=(CY,))
    maillog = Log().span(went - 60, went + 5).kept(went, mid(ANN)).write(tmp_path / "maillog")

    code, data, _ = run(invoke, env_file(), maillog)

    assert code == 1
    assert outcomes(data)[CY] == (
        "unknown",
        "no Message-ID was recorded for it (sent by an older version of dispatch)",
    )


def test_reconcile_waits_for_no_run_it_refuses_while_the_campaign_is_being_sent(
    invoke: Invoke,
    env: dict[str, str],
    tmp_path: Path,
    env_file: Callable[..., Path],
    journal_with: Callable[..., float],
) -> None:
    went = journal_with(ANN)
    maillog = Log().span(went - 60, went + 5).write(tmp_path / "maillog")
    sender = _journal(env)
    try:
        with sender.lock(CAMPAIGN):
            result = invoke("reconcile", CAMPAIGN, "--maillog", maillog, "--env-file", env_file())
    finally:
        sender.close()

    assert result.exit_code == 4, result.output
    assert states(env) == {}, "nothing changed: the row is still in flight"


@pytest.mark.parametrize(
    ("args", "words"),
    [(["no-such-campaign", "--maillog", "{log}"], "no campaign 'no-such-campaign'"),
     ([CAMPAIGN], "give the relay's log"),
     ([CAMPAIGN, "--maillog", "{cut}"], "cut short"),
     ([CAMPAIGN, "--maillog", "{missing}"], "no such mail log file")],
    ids=["unknown-campaign", "no-log", "truncated-gzip", "missing-file"],
)  # fmt: skip
def test_a_mistake_is_one_line_and_changes_nothing(
    invoke: Invoke,
    env: dict[str, str], tmp_path: Path, env_file: Callable[..., Path], journal_with: Callable[..., float],
    args: list[str], words: str,
) -> None:  # fmt: skip
    import gzip

    went = journal_with(ANN)
    log = Log().span(went - 60, went + 5).write(tmp_path / "maillog")
    (tmp_path / "maillog.2.gz").write_bytes(gzip.compress(log.read_bytes() * 50)[:-20])
    paths = {"log": str(log), "cut": str(tmp_path / "maillog.2.gz"), "missing": str(tmp_path / "nope")}

    result = invoke("reconcile", *(a.format(**paths) for a in args), "--env-file", env_file())

    assert result.exit_code == 2, result.output
    assert result.stdout == ""
    (line,) = result.stderr.splitlines()
    assert line.startswith("dispatch: error: ")
    assert words in line
    journal = _journal(env)
    try:
        assert [r.state for r in journal.records(CAMPAIGN, ("in_flight",))] == ["in_flight"]
    finally:
        journal.close()


def test_odd_characters_in_the_log_never_reach_the_terminal(
    invoke: Invoke, tmp_path: Path, env_file: Callable[..., Path], journal_with: Callable[..., float]
) -> None:
    went = journal_with(ANN)
    maillog = Log().span(went - 60, went + 5).kept(went, mid(ANN)).write(tmp_path / "maillog")
    with maillog.open("a", encoding="utf-8") as handle:
        handle.write(f"{iso(went)} relay postfix/cleanup[1]: \x1b]0;pwned\x07X1: message-id=<\u202e@x>\n")

    result = invoke("reconcile", CAMPAIGN, "--maillog", maillog, "--env-file", env_file())

    assert result.exit_code == 0, result.output
    assert "\x1b" not in result.output
    assert "\u202e" not in result.output


def test_without_unknown_recipients_there_is_nothing_to_settle(
    invoke: Invoke, tmp_path: Path, env_file: Callable[..., Path], journal_with: Callable[..., float]
) -> None:
    journal_with()
    result = invoke("reconcile", CAMPAIGN, "--maillog", tmp_path / "unread", "--env-file", env_file())

    assert result.exit_code == 0, result.output
    assert "No unknown recipients: nothing to settle." in result.stdout


def test_several_files_as_arguments_after_one_maillog_option(
    invoke: Invoke, tmp_path: Path, env_file: Callable[..., Path], journal_with: Callable[..., float]
) -> None:
    """``--maillog /var/log/mail.log*``: the shell gives the rotated files as more arguments."""
    went = journal_with(ANN, BOB)
    older = Log().span(went - 3600, went - 1800).kept(went - 3000, mid(CY)).write(tmp_path / "mail.log.1")
    newer = Log().span(went - 1700, went + 5).kept(went, mid(BOB)).write(tmp_path / "mail.log")

    result = invoke("reconcile", CAMPAIGN, "--maillog", newer, older, "--env-file", env_file(), "--json")

    data = json.loads(result.stdout)
    assert [Path(f["path"]).name for f in data["logs"]] == ["mail.log.1", "mail.log"]
    assert outcomes(data)[BOB][0] == "sent"
    assert outcomes(data)[ANN][0] == "send_again"


def test_the_journal_keeps_the_message_id_each_try_went_out_with(
    invoke: Invoke,
    env: dict[str, str], tmp_path: Path, env_file: Callable[..., Path], article: Path, subscribers: Path,
    smtp_server: Callable[..., Any],
) -> None:  # fmt: skip
    """First tries, retries after a 4xx to the data, and --resend-unknown all record, before the
    final dot, the Message-ID the relay then receives: what reconcile looks up in its log."""
    from tests.smtp_servers import FaultPlan

    server = smtp_server(faults=FaultPlan(data_4xx=0.5, drop_after_data=0.5, seed=7))
    settings = env_file(**server.env(), DISPATCH_RETRIES="5")
    send = ["send", article, "-s", subscribers, "--env-file", settings, "--campaign", CAMPAIGN, "--yes"]
    first = json.loads(invoke(*send, "--json").stdout)
    server.handler.faults = FaultPlan()
    invoke(*send, "--resend-unknown")

    journal = _journal(env)
    try:
        rows = journal.records(CAMPAIGN, ("sent",))
        recorded = {r.email: r.message_id for r in rows}
    finally:
        journal.close()
    received = {m.rcpt_tos[0]: m.message["Message-ID"].strip() for m in server.received}
    assert recorded == received
    assert len(recorded) == 3
    assert first["unknown"] >= 1, "a reply to the data was lost: that reader went again"
    assert sum(r.attempts for r in rows) >= len(rows) + 2, "retries and the resend went out too"


def test_while_a_sender_holds_the_campaign_reconcile_waits(
    invoke: Invoke, env: dict[str, str], env_file: Callable[..., Path], journal_with: Callable[..., float],
    tmp_path: Path,
) -> None:  # fmt: skip
    """A live run (a lock on the folder, a live lease on PostgreSQL) may still hear back about
    the very messages reconcile would settle: reconcile changes nothing and says to wait."""
    went = journal_with(ANN)
    maillog = Log().span(went - 60, went + 5).kept(went, mid(ANN)).write(tmp_path / "maillog")
    sender = _journal(env)
    try:
        with sender.lock(CAMPAIGN):
            code, data, _ = run(invoke, env_file(), maillog)
    finally:
        sender.close()

    assert code == 4, data
    assert CAMPAIGN in data["error"]
    assert ANN not in states(env), "nothing was settled: the reader is still in flight"


# ---------------------------------------------------------------- rotated files: no hole allowed

ROTATED = ("maillog.2.gz", "maillog.1", "maillog")


@pytest.mark.parametrize("stamp", [iso, syslog], ids=["rfc3339", "syslog"])
@pytest.mark.parametrize(
    ("given", "present", "outcome", "words"),
    [(("maillog", "maillog.2.gz"), ROTATED, "unknown", "give maillog.1 too"),
     (("maillog.2.gz", "maillog"), ("maillog.2.gz", "maillog"), "unknown", "give the log files"),
     (("maillog", "maillog.1", "maillog.2.gz"), ROTATED, "sent", "queued it as"),
     (("maillog.2.gz", "maillog.1"), ROTATED, "sent", "queued it as")],
    ids=["middle-file-left-out", "middle-file-gone", "all-three", "up-to-the-middle-one"],
)  # fmt: skip
def test_what_the_files_cover_is_their_union_a_missing_middle_file_leaves_a_hole(
    invoke: Invoke, env: dict[str, str], tmp_path: Path, env_file: Callable[..., Path],
    journal_with: Callable[..., float], stamp: Callable[[float], str],
    given: tuple[str, ...], present: tuple[str, ...], outcome: str, words: str,
) -> None:  # fmt: skip
    """Each file covers its own first to last line: the time between two files given, when a
    rotated file between them is not given, is not covered, and nobody in it is sent again."""
    went = journal_with(ANN, BOB, CY)
    logs = {
        "maillog.2.gz": Log(stamp).span(went - 3600, went - 1000),
        "maillog.1": Log(stamp).span(went - 999, went + 59).kept(went, mid(ANN)).kept(went, mid(BOB))
        .kept(went + 1, mid(CY)),
        "maillog": Log(stamp).span(went + 60, went + 120),
    }  # fmt: skip
    paths = {name: logs[name].write(tmp_path / name) for name in present}

    code, data, text = run(invoke, env_file(), *(paths[name] for name in given))

    found = outcomes(data)
    assert {e: kind for e, (kind, _) in found.items()} == dict.fromkeys((ANN, BOB, CY), outcome)
    for email in (ANN, BOB, CY):
        assert words in found[email][1], found[email]
        if outcome == "unknown":
            assert "hole" in found[email][1], found[email]
    wanted = {"sent": "sent", "unknown": "unknown"}[outcome]
    assert {e: s for e, (s, _) in states(env).items()} == dict.fromkeys((ANN, BOB, CY), wanted)
    assert code == (1 if outcome == "unknown" else 0)
    assert "Reconcile weekly-issue" in text


# ------------------------------------------------- every try counts: from the first to the last


@pytest.fixture
def two_tries(env: dict[str, str]) -> Callable[[str], tuple[float, float]]:
    """ANN's first try ends unknown (its reply lost at t1); a ``--resend-unknown`` run marks the
    second try in flight at t2 (2000 s later), then is killed ("killed") or loses that reply too
    ("lost", at t2 + 5). The journal's clock is set for each write; returns (t1, t2)."""

    def make(second: str) -> tuple[float, float]:
        journal = _journal(env)
        journal.begin(CAMPAIGN, "Weekly", "fingerprint", "/srv/issue.md")
        t1 = time.time() - 3000
        t2 = t1 + 2000
        with journal_clock(t1 - 3) as clock:
            journal.in_flight(CAMPAIGN, ANN, ANN, mid(ANN))
            clock.now = t1
            journal.outcome(CAMPAIGN, ANN, ANN, "unknown", **LOST)
            clock.now = t2
            journal.in_flight(CAMPAIGN, ANN, ANN, mid(ANN))  # the same Message-ID on every try
            if second == "lost":
                clock.now = t2 + 5
                journal.outcome(CAMPAIGN, ANN, ANN, "unknown", **LOST)
        journal.close()
        return t1, t2

    return make


TRIES: dict[str, tuple[str, Callable[[float, float], Log], str, str]] = {
    "log-ends-between-the-tries": (
        "killed", lambda t1, t2: Log().span(t1 - 1000, t1 + 2).dropped(t1 - 2, mid(ANN)),
        "unknown", "the log ends at",
    ),
    "log-starts-between-the-tries": (
        "lost", lambda t1, t2: Log().span(t2 - 950, t2 + 60), "unknown", "the log starts at",
    ),
    "second-try-queued": (
        "killed", lambda t1, t2: Log().span(t1 - 1000, t2 + 60).dropped(t1 - 2, mid(ANN)).kept(t2, mid(ANN)),
        "sent", "queued it as K",
    ),
    "both-dropped-and-all-covered": (
        "lost", lambda t1, t2: Log().span(t1 - 1000, t2 + 60).dropped(t1 - 2, mid(ANN)).dropped(t2, mid(ANN)),
        "send_again", "dropped it",
    ),
    "never-seen-and-all-covered": (
        "killed", lambda t1, t2: Log().span(t1 - 1000, t2 + 60), "send_again", "never shows its Message-ID",
    ),
}  # fmt: skip


@pytest.mark.parametrize("case", sorted(TRIES))
def test_an_unknown_resent_and_unknown_again_needs_the_log_to_cover_every_try(
    invoke: Invoke, env: dict[str, str], tmp_path: Path, env_file: Callable[..., Path],
    two_tries: Callable[[str], tuple[float, float]], case: str,
) -> None:  # fmt: skip
    """The span a log must cover runs from the first try to the last: a log that saw the first
    try dropped but ends (or starts) between the tries proves nothing about the other one."""
    second, build, outcome, words = TRIES[case]
    t1, t2 = two_tries(second)
    maillog = build(t1, t2).write(tmp_path / "maillog")

    code, data, _ = run(invoke, env_file(), maillog)

    kind, why = outcomes(data)[ANN]
    assert (kind, words in why) == (outcome, True), why
    assert data["recovered_in_flight"] == (second == "killed")
    wanted = {"sent": "sent", "send_again": "deferred", "unknown": "unknown"}[outcome]
    assert states(env)[ANN][0] == wanted
    assert code == (1 if outcome == "unknown" else 0)


def test_status_says_why_a_row_left_in_flight_counts_as_unknown(
    invoke: Invoke, env_file: Callable[..., Path], journal_with: Callable[..., float]
) -> None:
    """A run stopped at once (a second Ctrl-C) leaves its row in flight with no reply yet: status
    shows it as unknown, with the reason rather than an empty one."""
    journal_with(ANN)
    result = invoke("status", CAMPAIGN, "--env-file", env_file())
    assert result.exit_code == 0, result.stderr
    (line,) = [shown for shown in result.stdout.splitlines() if ANN in shown]
    assert (
        line.split(f"{ANN}:", 1)[1].strip()
        == "in flight: the run sending it was stopped at once, or is still running"
    )
