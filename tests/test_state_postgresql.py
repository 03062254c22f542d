"""The state in PostgreSQL (DISPATCH_STATE_URL), against a real cluster the suite starts:
several senders on one campaign on several "hosts" (each its own HOME, folder and settings
file, one database), SIGKILLed and restarted; an unsubscribe POSTed to ``serve`` on a third
host; a state folder migrated into the database; schemas refused; fences that stop a sender
paused past its lease; and the password of the URL never shown."""

from __future__ import annotations

import http.client
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
import pytest

from dispatch.compose.issue import plan_issue
from dispatch.send.delivery import SendOptions, run_send
from dispatch.settings import Settings, StateLocation
from dispatch.state import backend
from dispatch.state import journal as j
from dispatch.state.group import Fenced
from dispatch.state.shared import SharedJournal
from dispatch.unsubscribe.tokens import make_token
from tests.conftest import EXAMPLE_ARTICLE, PG_LEASE
from tests.inbox_helpers import NEWS, ONE_CLICK, SECRET, SETTINGS, serving, write_env, write_subscribers
from tests.smtp_servers import Handler, Server

pytestmark = pytest.mark.slow  # real processes and a real PostgreSQL
CAMPAIGN = "shared-issue"


def readers(count: int) -> list[str]:
    return [f"reader{i:03d}@example.{'org' if i % 2 else 'com'}" for i in range(count)]


def received(server: Server) -> Counter[str]:
    return Counter(r for msg in list(server.received) for r in msg.rcpt_tos)


class Slow(Handler):
    """Takes ``delay`` seconds per message, so kills land mid-run."""

    def __init__(self, delay: float) -> None:
        super().__init__()
        self.delay = delay
        self.by_host: Counter[str] = Counter()  # messages by the EHLO name of their sender

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        import asyncio

        await asyncio.sleep(self.delay)
        reply = await super().handle_DATA(server, session, envelope)
        if reply.startswith("250"):
            self.by_host[str(session.host_name)] += 1
        return reply


@dataclass
class Host:
    """One machine of the set-up: its own HOME, folder (state folder for the cache) and settings."""

    name: str
    folder: Path
    settings: Path
    article: Path
    subscribers: Path

    def command(self, *args: str) -> list[str]:
        return [sys.executable, "-m", "dispatch", *args, "--env-file", str(self.settings)]

    def environ(self) -> dict[str, str]:
        return {
            "PATH": os.environ.get("PATH", os.defpath),
            "HOME": str(self.folder / "home"),
            "LC_ALL": "C.UTF-8",
        }

    def send(self, *extra: str) -> list[str]:
        return self.command("send", str(self.article), "-s", str(self.subscribers), "--campaign", CAMPAIGN,
                            "--yes", "--json", *extra)  # fmt: skip

    def run(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(self.command(*args), env=self.environ(), cwd=self.folder, capture_output=True,
                              text=True, timeout=300, check=False)  # fmt: skip

    def start(self, *args: str) -> subprocess.Popen[str]:
        pipe = subprocess.PIPE
        return subprocess.Popen(args or self.send(), env=self.environ(), cwd=self.folder, text=True,
                                stdin=subprocess.DEVNULL, stdout=pipe, stderr=pipe)  # fmt: skip


@pytest.fixture
def hosts(tmp_path: Path, pg_url: str) -> Callable[..., Host]:
    """Make a "host": a folder with its own HOME, settings file (same URL), list and article."""

    def make(name: str, emails: list[str], server: Server | None = None, **extra: str) -> Host:
        folder = tmp_path / name
        (folder / "home").mkdir(parents=True)
        relay = server.env() if server else {}
        values = {**SETTINGS, "DISPATCH_STATE_URL": pg_url, "DISPATCH_STATE_DIR": "dispatch-state",
                  "DISPATCH_STATE_LEASE": str(PG_LEASE), **relay, **extra}  # fmt: skip
        article = folder / "issue.txt"
        article.write_bytes(EXAMPLE_ARTICLE.read_bytes())
        return Host(name, folder, write_env(folder / ".env", values), article,
                    write_subscribers(folder / "list.csv", emails))  # fmt: skip

    return make


@pytest.fixture
def slow(smtp_server: Callable[..., Server]) -> Callable[[float], Server]:
    return lambda delay: smtp_server(handler=Slow(delay))


def _wait(condition: Callable[[], bool], timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.005)


def _finish(proc: subprocess.Popen[str]) -> dict[str, Any]:
    out, err = proc.communicate(timeout=300)
    assert proc.returncode in (0, 1), f"{proc.returncode}: {out}\n{err}"
    data: dict[str, Any] = json.loads(out)
    return data


# --------------------------------------------------------------------------- the acceptance tests


@pytest.mark.parametrize("kills", [(15, 40, 70), (5, 25, 50, 90)], ids=["three-kills", "four-kills"])
def test_two_senders_killed_and_restarted_send_nobody_twice_and_share_the_work(
    hosts: Callable[..., Host], slow: Callable[[float], Server], pg_url: str, kills: tuple[int, ...]
) -> None:
    emails = readers(160)
    server = slow(0.04)  # slow enough that both are sending before either is done
    a = hosts("host-a", emails, server, DISPATCH_CONNECTIONS="2", DISPATCH_EHLO_NAME="a.example.org")
    b = hosts("host-b", emails, server, DISPATCH_CONNECTIONS="2", DISPATCH_EHLO_NAME="b.example.org")
    handler = server.handler
    assert isinstance(handler, Slow)
    running = {"a": a.start(), "b": b.start()}
    started = {"a": 0, "b": 0}  # what each had sent when it was last started
    for n, threshold in enumerate(kills):  # kill one, then the other, and start it again
        victim = "ab"[n % 2]
        host = f"{victim}.example.org"

        def sending(t: int = threshold, host: str = host, before: int = started[victim]) -> bool:
            """Past the threshold, with the victim sending (not still starting): killed mid-run."""
            return received(server).total() >= t and handler.by_host[host] > before

        _wait(sending)
        running[victim].send_signal(signal.SIGKILL)
        running[victim].communicate(timeout=30)
        assert max(received(server).values()) == 1
        started[victim] = handler.by_host[host]
        running[victim] = (a if victim == "a" else b).start()
    finals = {name: _finish(proc) for name, proc in running.items()}

    counts = received(server)
    assert max(counts.values()) == 1, "nobody may get the issue twice"
    assert min(handler.by_host["a.example.org"], handler.by_host["b.example.org"]) > 0, handler.by_host
    assert all(data["exit_code"] in (0, 1) for data in finals.values())
    for data in finals.values():  # every row once; one a dead sender left in flight is no other sender's
        assert sum(data["accounting"].values()) == data["rows"] == len(emails), data["accounting"]
        if data["recovered_unknown"]:
            assert data["accounting"].get("unknown earlier", 0) >= 1, data["accounting"]
    again = a.run(*a.send()[3:])  # a last run after the leases: whatever is left, once
    last = json.loads(again.stdout)
    states = {r.email: r.state for r in _journal(pg_url).records(CAMPAIGN, j.STATES)}
    for address in emails:
        assert counts[address] == 1 or states.get(address) == j.UNKNOWN, (address, states.get(address))
    assert last["sent"] + last["unknown"] == len(emails)
    assert last["sent"] == sum(counts.values()) - last["unknown"] + sum(
        1 for a_ in emails if states.get(a_) == j.UNKNOWN and counts[a_] == 0
    )


@pytest.mark.parametrize("delay", [0.0, 0.005])
def test_two_senders_side_by_side_account_for_every_row_the_same_way(
    hosts: Callable[..., Host], slow: Callable[[float], Server], delay: float
) -> None:
    """Each sender's rows add up, and a reader the other sender has in flight when this one reads
    the list is the other sender's, never an earlier run's unknown."""
    emails = readers(300)
    server = slow(delay)
    a = hosts("host-a", emails, server, DISPATCH_CONNECTIONS="2")
    b = hosts("host-b", emails, server, DISPATCH_CONNECTIONS="2")
    first = a.start()
    _wait(lambda: received(server).total() >= 5)  # b reads the list while a has messages out
    finals = [_finish(b.start()), _finish(first)]

    assert received(server) == Counter(emails)
    for data in finals:
        counted = {k: v for k, v in data["accounting"].items() if v}
        assert sum(counted.values()) == data["rows"] == len(emails), counted
        assert set(counted) <= {"sent now", "by other senders", "already sent"}, counted
        assert data["exit_code"] == 0
    assert sum(d["sent_now"] for d in finals) == len(emails)


def _journal(url: str) -> j.Journal:
    journal = backend.existing_journal(StateLocation(Path("/nonexistent"), "test", True, url=url))
    assert journal is not None
    return journal


def test_an_unsubscribe_posted_to_serve_on_a_third_host_is_honoured_by_the_next_send(
    hosts: Callable[..., Host], smtp_server: Callable[..., Server]
) -> None:
    emails = readers(6)
    server = smtp_server()
    sender = hosts("cron-box", emails, server)
    web = hosts("web-host", [])
    leaving = emails[2]
    with serving(web.settings, web.folder, environ={"HOME": str(web.folder / "home")}) as process:
        conn = http.client.HTTPConnection("127.0.0.1", process.port, timeout=10)
        conn.request("POST", "/mail/unsubscribe/" + make_token(SECRET, NEWS, leaving), ONE_CLICK,
                     {"Content-Type": "application/x-www-form-urlencoded"})  # fmt: skip
        assert conn.getresponse().status == 200
        conn.close()

    result = sender.run(*sender.send()[3:])
    data = json.loads(result.stdout)
    assert result.returncode == 0, result.stderr
    assert leaving not in received(server)
    assert received(server) == Counter(e for e in emails if e != leaving)
    assert data["suppressed_recipients"] == [{"email": leaving, "reason": "unsubscribed"}]
    assert data["state"]["backend"] == "postgresql"


def test_a_database_dropping_its_connections_mid_send_stops_the_run_with_exit_3_and_one_line(
    hosts: Callable[..., Host], slow: Callable[[float], Server], pg_url: str
) -> None:
    """A PostgreSQL restart in the middle of a send: the run stops (exit 3, "aborted", as the
    README's table says; not 2, "nothing was sent") with one line and no thread's traceback,
    and the next run sends the rest, nobody twice."""
    emails = readers(60)
    server = slow(0.02)
    host = hosts("cron-box", emails, server)
    proc = host.start()
    _wait(lambda: received(server).total() >= 5)
    with psycopg.connect(pg_url, autocommit=True) as admin:
        admin.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE datname = current_database() AND pid <> pg_backend_pid()"
        )
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 3, f"{out}\n{err}"
    assert "Traceback" not in err
    assert "Exception in thread" not in err
    summary = json.loads(out)
    assert summary["exit_code"] == 3
    assert received(server).total() < len(emails)
    counted = sum(summary[k] for k in ("sent_now", "failed_now", "deferred_now", "unknown_now", "pending"))
    assert counted == len(emails)  # every row accounted for, also in a run the state failed under
    assert f"Every row:     {len(emails)} = " in err
    again = host.run(*host.send()[3:])
    assert again.returncode in (0, 1), again.stdout + again.stderr
    assert max(received(server).values()) == 1
    assert len(received(server)) >= len(emails) - 2  # (at most what was in flight is unknown)


def test_serve_keeps_taking_unsubscribes_after_the_database_dropped_its_connections(
    hosts: Callable[..., Host], pg_url: str
) -> None:
    """A PostgreSQL restart or fail-over drops every connection: the next request opens the
    state again and is recorded (not a 503 for every reader until serve is restarted)."""
    web = hosts("web-host", [])
    first, second = readers(2)

    def unsubscribe(port: int, email: str) -> int:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        conn.request("POST", "/mail/unsubscribe/" + make_token(SECRET, NEWS, email), ONE_CLICK,
                     {"Content-Type": "application/x-www-form-urlencoded"})  # fmt: skip
        status = conn.getresponse().status
        conn.close()
        return status

    with serving(web.settings, web.folder, environ={"HOME": str(web.folder / "home")}) as process:
        assert unsubscribe(process.port, first) == 200
        with psycopg.connect(pg_url, autocommit=True) as admin:
            dropped = admin.execute(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                "WHERE datname = current_database() AND pid <> pg_backend_pid()"
            ).fetchone()
        assert dropped is not None
        assert dropped[0] >= 1
        assert unsubscribe(process.port, second) == 200
    location = StateLocation(web.folder / "dispatch-state", "test", True, url=pg_url)
    store = backend.existing_suppressions(location)
    assert store is not None
    with closing(store):
        assert store.lookup(first, NEWS) is not None
        assert store.lookup(second, NEWS) is not None


def test_a_state_folder_migrated_into_postgresql_sends_nobody_twice_and_keeps_suppressions(
    tmp_path: Path, smtp_server: Callable[..., Server], pg_url: str, invoke: Callable[..., Any]
) -> None:
    emails = readers(12)
    server = smtp_server()
    folder_env = write_env(
        tmp_path / "old.env", {**SETTINGS, **server.env(), "DISPATCH_STATE_DIR": str(tmp_path / "old")}
    )
    csv = write_subscribers(tmp_path / "list.csv", emails)
    article = tmp_path / "issue.txt"
    article.write_bytes(EXAMPLE_ARTICLE.read_bytes())
    send = ["send", article, "-s", csv, "--campaign", CAMPAIGN, "--yes", "--json"]
    first = invoke(*send, "--env-file", folder_env, "--limit", "5")
    assert json.loads(first.stdout)["sent_now"] == 5
    assert invoke("suppress", "add", emails[9], "--env-file", folder_env).exit_code == 0

    moved = invoke("state", "migrate", "--to", pg_url, "--env-file", folder_env, "--json")
    assert moved.exit_code == 0, moved.output
    report = json.loads(moved.stdout)
    assert report["copied"]["recipients"] == 5
    assert report["copied"]["suppressions"] == 1
    again = json.loads(invoke("state", "migrate", "--to", pg_url, "--env-file", folder_env, "--json").stdout)
    assert sum(again["copied"].values()) == 0, "a second migration copies nothing"
    assert again["already_there"]["recipients"] == 5

    shared_env = write_env(tmp_path / "new.env", {**SETTINGS, **server.env(), "DISPATCH_STATE_URL": pg_url})
    after = invoke(*send, "--env-file", shared_env)
    data = json.loads(after.stdout)
    assert after.exit_code == 0, after.output
    assert (data["sent_now"], data["already_sent"], data["suppressed"]) == (6, 5, 1)
    assert received(server) == Counter(e for e in emails if e != emails[9])
    shown = invoke("state", "--env-file", shared_env, "--json")
    assert json.loads(shown.stdout)["counts"]["recipients"] == 12


# --------------------------------------------------------------------------- schema, fences, secrets


@pytest.mark.parametrize(
    ("damage", "words"),
    [
        ("UPDATE dispatch.meta SET value = '99' WHERE name = 'schema'", "newer dispatch"),
        ("ALTER TABLE dispatch.recipients DROP COLUMN reply", "not those of a dispatch state"),
        ("DROP TABLE dispatch.meta", "not those of dispatch"),
    ],
    ids=["newer", "changed", "foreign"],
)
def test_a_newer_or_foreign_schema_is_refused_with_exit_2(
    tmp_path: Path, pg_url: str, invoke: Callable[..., Any], damage: str, words: str
) -> None:
    env = write_env(tmp_path / "s.env", {**SETTINGS, "DISPATCH_STATE_URL": pg_url})
    assert invoke("suppress", "add", "x@example.org", "--env-file", env).exit_code == 0
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute(damage)
    for command in (["status"], ["suppress", "add", "y@example.org"]):
        result = invoke(*command, "--env-file", env)
        assert result.exit_code == 2, result.output
        assert words in result.stderr
        assert len(result.stderr.strip().splitlines()) == 1


def test_a_sender_paused_past_its_lease_can_neither_mark_nor_record_what_another_took(pg_url: str) -> None:
    where = StateLocation(Path("/nonexistent"), "test", True, url=pg_url, lease=5)
    a, b = backend.open_journal(where), backend.open_journal(where)
    assert isinstance(a, SharedJournal)
    assert isinstance(b, SharedJournal)
    with a.lock(CAMPAIGN), b.lock(CAMPAIGN):
        a.begin(CAMPAIGN, "S", "f", "/a")
        a.offer(CAMPAIGN, [("ann@example.org", "ann@example.org", 2, "Ann", {}),
                           ("bob@example.org", "bob@example.org", 3, "Bob", {})])  # fmt: skip
        ann, bob = a.claim(CAMPAIGN, 2)
        a.in_flight(CAMPAIGN, bob.key, bob.email, "<b@example.org>")  # in flight, then paused
        assert b.claim(CAMPAIGN, 2) == [], "claims held by a live sender are not taken"
        with psycopg.connect(pg_url, autocommit=True) as conn:  # a's lease runs out (a pause)
            expire = "UPDATE dispatch.senders SET lease_until = now() - interval '1 second' WHERE id = %s"
            conn.execute(expire, (a.sender,))
        taken = b.claim(CAMPAIGN, 2)
        assert [(c.key, c.taken_over) for c in taken] == [(ann.key, False), (bob.key, True)], (
            "bob was in flight: unknown, never sent again (the run counts him)"
        )
        assert b.state(CAMPAIGN, bob.key) == j.UNKNOWN
        with pytest.raises(Fenced):
            a.in_flight(CAMPAIGN, ann.key, ann.email, "<a@example.org>")  # the dot would never go
        a.outcome(CAMPAIGN, bob.key, bob.email, j.SENT, code=250, enhanced="", reply="ok")
        a.flush()
        assert a.fenced_out == 2
        assert b.state(CAMPAIGN, ann.key) is None, "a wrote nothing about ann"
        assert b.state(CAMPAIGN, bob.key) == j.UNKNOWN, "a's late outcome was not recorded"
        b.in_flight(CAMPAIGN, ann.key, ann.email, "<a@example.org>")
        assert b.state(CAMPAIGN, ann.key) == j.IN_FLIGHT


def test_daily_budget_and_rate_hold_across_two_senders(
    tmp_path: Path, pg_url: str, smtp_server: Callable[..., Server]
) -> None:
    server = smtp_server()
    values = {**SETTINGS, **server.env(), "DISPATCH_STATE_URL": pg_url, "DISPATCH_STATE_LEASE": str(PG_LEASE),
              "DISPATCH_DAILY_LIMIT": "30", "DISPATCH_RATE": "40/s"}  # fmt: skip
    settings = Settings.from_mapping(values)
    csv = write_subscribers(tmp_path / "list.csv", readers(50))
    article = tmp_path / "issue.txt"
    article.write_bytes(EXAMPLE_ARTICLE.read_bytes())
    issue = plan_issue(article, csv, settings, campaign=CAMPAIGN)
    summaries: list[Any] = []
    errors: list[BaseException] = []
    together = threading.Barrier(2)

    def sender() -> None:
        journal = backend.open_journal(settings.state)
        try:
            together.wait(timeout=30)  # both start the new campaign at the same moment
            summaries.append(run_send(issue, journal, SendOptions(sleep=lambda _s: None)))
        except BaseException as err:
            errors.append(err)
        finally:
            journal.close()

    started = time.monotonic()
    threads = [threading.Thread(target=sender) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    elapsed = time.monotonic() - started
    assert not errors, f"a sender failed: {errors[0]!r}" if errors else ""
    assert len(summaries) == 2, "both senders finished"
    assert len(server.received) == 30, "the two senders together may send 30 a day"
    assert max(received(server).values()) == 1
    assert all(s.sent_now > 0 for s in summaries)
    assert elapsed >= 29 / 40, f"30 messages at 40/s between two senders took only {elapsed:.2f}s"


def _begin_together(journals: list[Any], campaign: str) -> list[str | None]:
    """Every journal registers ``campaign`` at the same instant (one thread each, a barrier);
    their answers, or the first error raised."""
    together = threading.Barrier(len(journals))
    results: list[str | None] = []
    errors: list[BaseException] = []

    def begin(journal: Any) -> None:
        try:
            together.wait(timeout=30)
            results.append(journal.begin(campaign, "Subject", "fingerprint", "/issues/a.txt"))
        except BaseException as err:
            errors.append(err)

    threads = [threading.Thread(target=begin, args=(journal,)) for journal in journals]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    if errors:
        raise errors[0]
    return results


@pytest.mark.parametrize("senders", [2, 6])
def test_senders_starting_one_new_campaign_at_once_all_register_it(pg_url: str, senders: int) -> None:
    """A second sender is welcome: two or more that start a campaign the state has never seen,
    at the same instant, each register it (one inserts it, the others find it), none fails."""
    settings = Settings.from_mapping({**SETTINGS, "DISPATCH_STATE_URL": pg_url})
    journals = [backend.open_journal(settings.state) for _ in range(senders)]
    try:
        for round_ in range(10):
            results = _begin_together(journals, f"race-{round_}")
            assert results == [None] * senders, "the same content: no sender sees a changed issue"
        with closing(psycopg.connect(pg_url)) as conn:
            row = conn.execute("SELECT COUNT(*) FROM dispatch.campaigns WHERE id LIKE 'race-%'").fetchone()
        assert row == (10,)
    finally:
        for journal in journals:
            journal.close()


def test_the_password_in_the_url_is_never_shown(
    tmp_path: Path, pg_url: str, invoke: Callable[..., Any]
) -> None:
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute("ALTER USER postgres PASSWORD 'pg-hunter2-secret'")
    try:
        url = pg_url.replace("postgres@", "postgres:pg-hunter2-secret@")
        env = write_env(tmp_path / "s.env", {**SETTINGS, "DISPATCH_STATE_URL": url})
        commands = (["state"], ["state", "--json"], ["status", "--json"], ["suppress", "list"])
        outputs = [invoke(*command, "--env-file", env) for command in commands]
        bad = write_env(
            tmp_path / "bad.env",
            {
                **SETTINGS,
                "DISPATCH_STATE_URL": url.replace(pg_url.rsplit(":", 1)[1].split("/", maxsplit=1)[0], "1"),
            },
        )
        outputs.append(invoke("status", "--env-file", bad))
        for result in outputs:
            assert "pg-hunter2-secret" not in result.output
        assert outputs[-1].exit_code == 2
        assert "cannot open the PostgreSQL state" in outputs[-1].stderr
        assert json.loads(outputs[1].stdout)["url"] == pg_url
    finally:
        with psycopg.connect(pg_url, autocommit=True) as conn:
            conn.execute("ALTER USER postgres PASSWORD NULL")


def test_oauth_login_kept_in_postgresql_and_migrated(tmp_path: Path, pg_url: str) -> None:
    folder = tmp_path / "state"
    about = {"mailbox": "news@example.org", "token_url": "https://login.example.org/token",
             "client_id": "client", "scope": "smtp"}  # fmt: skip
    backend.login_store(StateLocation(folder, "test", True), **about).save("refresh-1")
    from dispatch.state.migrate import migrate

    assert migrate(folder, pg_url).copied == {"logins": 1}
    shared = backend.login_store(StateLocation(folder, "test", True, url=pg_url), **about)
    with shared.locked():
        assert shared.load() == "refresh-1"
        shared.save("refresh-2")
    assert shared.load() == "refresh-2"
    assert shared.forget() is True
    assert shared.load() is None


def test_a_recipient_settled_by_another_sender_after_this_one_read_the_list_is_not_sent_again(
    pg_url: str,
) -> None:
    """B read the list before A recorded ann as unknown (maybe delivered): B offers ann again,
    and when it claims her, the state it reads then (not what it read with the list) decides."""
    from dispatch.send.skips import Skip, SkipRules

    where = StateLocation(Path("/nonexistent"), "test", True, url=pg_url, lease=5)
    a, b = backend.open_journal(where), backend.open_journal(where)
    assert isinstance(a, SharedJournal)
    assert isinstance(b, SharedJournal)
    ann = ("ann@example.org", "ann@example.org", 2, "Ann", {})
    with a.lock(CAMPAIGN), b.lock(CAMPAIGN):
        a.begin(CAMPAIGN, "S", "f", "/a")
        a.offer(CAMPAIGN, [ann])
        (claimed,) = a.claim(CAMPAIGN, 1)
        a.in_flight(CAMPAIGN, claimed.key, claimed.email, "<m@example.org>")
        a.outcome(CAMPAIGN, claimed.key, claimed.email, j.UNKNOWN, code=None, enhanced="", reply="lost")
        b.offer(CAMPAIGN, [ann])  # B's list pass had not seen her yet
        (again,) = b.claim(CAMPAIGN, 1)
        assert again.state == j.UNKNOWN
        rules = SkipRules(b, None, CAMPAIGN, NEWS)
        assert rules.judge(again.key, again.state)[1] is Skip.UNKNOWN
        resend = SkipRules(b, None, CAMPAIGN, NEWS, resend_unknown=True)
        assert resend.judge(again.key, again.state)[1] is None  # --resend-unknown asks for her


@pytest.mark.parametrize("on", ["folder", "postgresql"])
def test_a_login_stored_under_other_settings_is_found_without_its_token(
    tmp_path: Path, pg_url: str, on: str
) -> None:
    """After a tenant or token URL changed, the error names the login made before (see
    dispatch.send.oauth): the store tells its endpoint and client, never its token."""
    location = StateLocation(tmp_path / "state", "test", True, url=pg_url if on == "postgresql" else "")
    before = {"mailbox": "News@example.org", "token_url": "https://login.example.org/a/token",
              "client_id": "client", "scope": "smtp"}  # fmt: skip
    backend.login_store(location, **before).save("refresh-secret")
    backend.login_store(location, **{**before, "mailbox": "other@example.org"}).save("refresh-other")
    now = backend.login_store(
        location,
        **{**before, "mailbox": "news@example.org", "token_url": "https://login.example.org/b/token"},
    )
    assert now.load() is None
    assert now.others() == [{**before}]
    assert "refresh" not in str(now.others())
