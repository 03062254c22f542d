"""``dispatch inbound`` with the state in PostgreSQL (DISPATCH_STATE_URL), against a real
cluster: bounces and complaints read on one "host" (its own folder, HOME and settings file, the
same database) are skipped by the next send on another, and counted where ``dispatch status``
looks on every host; the same report read by several hosts at once counts once; a database
that is down makes a piped message wait in the mail system (exit 75) and loses nothing; a state
folder's feedback is migrated; and a database of the schema before the feedback tables is
brought forward."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
import pytest

from dispatch.settings import StateLocation
from dispatch.state import backend, pgschema
from tests.inbound_helpers import READERS, Sent, inbound_state_fixture, make_sent_fixture, settings_file  # noqa: F401
from tests.inbound_samples import complaint, dsn, redact
from tests.pg_server import Cluster, private_cluster
from tests.smtp_servers import Server

pytestmark = pytest.mark.slow  # real processes and a real PostgreSQL
STATE_FILES = ("journal.sqlite3", "suppression.sqlite3", "feedback.sqlite3")


@dataclass
class Host:
    """One machine: its own folder (and state folder for the cache), HOME and settings file."""

    folder: Path
    settings: Path
    server: Server

    def run(self, *args: str, stdin: bytes = b"") -> subprocess.CompletedProcess[str]:
        argv = [sys.executable, "-m", "dispatch", *args, "--env-file", str(self.settings)]
        done = subprocess.run(argv, input=stdin, env=self.environ(), cwd=self.folder, capture_output=True,
                              timeout=300, check=False)  # fmt: skip
        return subprocess.CompletedProcess(argv, done.returncode, done.stdout.decode(), done.stderr.decode())

    def start_inbound(self) -> subprocess.Popen[bytes]:
        """``dispatch inbound --json``, its standard input a pipe the test writes to."""
        argv = [sys.executable, "-m", "dispatch", "inbound", "--json", "--env-file", str(self.settings)]
        pipe = subprocess.PIPE
        return subprocess.Popen(
            argv, stdin=pipe, stdout=pipe, stderr=pipe, env=self.environ(), cwd=self.folder
        )

    def environ(self) -> dict[str, str]:
        return {
            "PATH": os.environ.get("PATH", os.defpath),
            "HOME": str(self.folder / "home"),
            "LC_ALL": "C.UTF-8",
        }

    def send(self, campaign: str) -> dict[str, Any]:
        issue = self.folder / f"{campaign}.md"
        issue.write_text(
            f"---\ntitle: News {campaign}\ncampaign: {campaign}\n---\n\nHello.\n", encoding="utf-8"
        )
        done = self.run("send", str(issue), "-s", str(self.folder / "list.csv"), "--yes", "--json")
        assert done.returncode == 0, done.stderr
        data: dict[str, Any] = json.loads(done.stdout)
        return data

    def copy_of(self, reader: str, campaign: str = "spring") -> tuple[bytes, str]:
        """The reader's message of a campaign, as the relay received it, and its envelope sender."""
        got = [
            m
            for m in self.server.received
            if m.rcpt_tos == [reader] and f"News {campaign}".encode() in m.data
        ]
        return got[-1].data, got[-1].mail_from

    def status(self, *campaign: str) -> dict[str, Any]:
        done = self.run("status", *campaign, "--json")
        assert done.returncode == 0, done.stderr
        data: dict[str, Any] = json.loads(done.stdout)
        return data

    def wrote_no_state_files(self) -> bool:
        """Nothing was written into this host's folder instead of the database."""
        return not any((self.folder / "state" / name).exists() for name in STATE_FILES)


@pytest.fixture
def hosts(tmp_path: Path, smtp_server: Callable[..., Server]) -> Callable[..., Host]:
    """Make a "host" on a database (the same URL for every host of a test), sending to one relay."""
    server = smtp_server()

    def make(name: str, url: str) -> Host:
        folder = tmp_path / name
        (folder / "home").mkdir(parents=True)
        (folder / "list.csv").write_text(
            "email,name\n" + "".join(f"{r},R\n" for r in READERS), encoding="utf-8"
        )
        env = settings_file(folder, server, DISPATCH_STATE_URL=url, DISPATCH_STATE_DIR=str(folder / "state"))
        return Host(folder, env, server)

    return make


def _bounce_of(host: Host, reader: str) -> bytes:
    data, mail_from = host.copy_of(reader)
    return dsn(mail_from, reader, data)


def _complaint_of(host: Host, reader: str) -> bytes:
    data, mail_from = host.copy_of(reader)
    return complaint(redact(data, reader), mail_from=mail_from)


def _spring(status: dict[str, Any]) -> dict[str, Any]:
    return next(c for c in status["campaigns"] if c["campaign"] == "spring")


# --------------------------------------------------------------------------- the acceptance tests


def test_a_bounce_and_a_complaint_read_on_one_host_are_skipped_by_the_next_send_on_another(
    hosts: Callable[..., Host], pg_url: str
) -> None:
    a, b = hosts("host-a", pg_url), hosts("host-b", pg_url)
    a.send("spring")
    bounced = b.run("inbound", stdin=_bounce_of(a, "bob@example.com"))
    assert bounced.returncode == 0, bounced.stderr
    assert "bob@example.com suppressed, reason bounced (campaign spring)" in bounced.stderr
    complained = b.run("inbound", "--json", stdin=_complaint_of(a, "ann@example.com"))
    assert complained.returncode == 0, complained.stderr
    summary = json.loads(complained.stdout)
    assert summary["suppressed"] == {"complained": 1}
    assert summary["state"]["backend"] == "postgresql"
    assert b.wrote_no_state_files()

    summer = a.send("summer")
    assert sorted(summer["suppressed_recipients"], key=lambda r: r["email"]) == [
        {"email": "ann@example.com", "reason": "complained"},
        {"email": "bob@example.com", "reason": "bounced"},
    ]
    got = sorted(r for m in a.server.received if b"News summer" in m.data for r in m.rcpt_tos)
    assert got == ["cy@example.com", "dee@example.com"]
    for host in (a, b):
        spring = _spring(host.status())
        assert (spring["bounced"], spring["bounced_later"], spring["complained"]) == (1, 1, 1), host.folder
        assert host.status("spring")["complained"] == 1


def _reading_stdin(proc: subprocess.Popen[bytes]) -> bool:
    """Whether the process waits in read(0, …): it opened the state and now reads its message."""
    return Path(f"/proc/{proc.pid}/syscall").read_text(encoding="ascii").startswith("0 0x0 ")


def test_the_same_report_read_by_three_hosts_at_once_counts_once(
    hosts: Callable[..., Host], pg_url: str
) -> None:
    a = hosts("host-a", pg_url)
    a.send("spring")
    report = _bounce_of(a, "cy@example.com")
    started = [hosts(f"mx-{n}", pg_url).start_inbound() for n in range(3)]
    deadline = time.monotonic() + 120
    while not all(_reading_stdin(proc) for proc in started):  # all three ready: then the report, at once
        assert time.monotonic() < deadline, "the three commands did not start"
        time.sleep(0.01)
    for proc in started:
        assert proc.stdin is not None
        proc.stdin.write(report)
        proc.stdin.close()
    outcomes = []
    for proc in started:
        assert proc.stdout is not None
        assert proc.stderr is not None
        out, err = proc.stdout.read(), proc.stderr.read()
        assert proc.wait(timeout=120) == 0, err.decode()
        outcomes.append(json.loads(out)["outcomes"])
    assert sorted(outcomes, key=str) == [{"read before": 1}, {"read before": 1}, {"suppressed": 1}]
    spring = _spring(a.status())
    assert (spring["bounced"], spring["bounced_later"]) == (1, 1)
    counts = json.loads(a.run("state", "--json").stdout)["counts"]
    assert (counts["reports"], counts["events"]) == (1, 1)


def test_one_report_at_a_time_on_every_host(tmp_path: Path, pg_url: str) -> None:
    """The feedback store's lock is the database's: a reader on a second host (another
    folder, the same database) waits for the first."""
    first, second = (
        backend.open_feedback(StateLocation(tmp_path / host, "test", True, url=pg_url)) for host in "ab"
    )
    entered = threading.Event()

    def other() -> None:
        with second.exclusive():
            entered.set()

    try:
        with first.exclusive():
            thread = threading.Thread(target=other)
            thread.start()
            assert not entered.wait(0.5), "a second reader went in while the first held the lock"
        assert entered.wait(10)
        thread.join(timeout=10)
    finally:
        first.close()
        second.close()


@pytest.fixture
def own_cluster() -> Iterator[Cluster]:
    """A PostgreSQL of this test's own, which it may stop and start again."""
    with private_cluster("dispatch-pg-down-") as cluster:
        yield cluster


def test_with_the_database_down_a_piped_report_waits_in_the_mail_system_and_nothing_is_lost(
    hosts: Callable[..., Host], own_cluster: Cluster
) -> None:
    url = own_cluster.create_database()
    a, b = hosts("host-a", url), hosts("host-b", url)
    a.send("spring")
    report = _bounce_of(a, "dee@example.com")
    own_cluster.stop("fast")  # (what the send committed is on disk: a clean shutdown)
    for args in ((), ("--json",)):
        down = b.run("inbound", *args, stdin=report)
        assert down.returncode == 75, down.stderr
        assert "cannot open the PostgreSQL state" in down.stderr
        assert "delivers it again later" in down.stderr
        assert "Traceback" not in down.stderr
    assert json.loads(down.stdout)["exit_code"] == 75
    assert b.wrote_no_state_files(), "nothing may go to the folder instead"
    assert not (b.folder / "state" / "inbound-kept").exists()

    own_cluster.start()  # the mail system delivers it again
    again = b.run("inbound", stdin=report)
    assert again.returncode == 0, again.stderr
    assert "dee@example.com suppressed, reason bounced" in again.stderr
    assert _spring(a.status())["bounced_later"] == 1


# --------------------------------------------------------------------------- migration and schema


def test_a_state_folders_feedback_is_migrated_and_a_report_read_before_stays_read(
    make_sent: Callable[..., Sent], pg_url: str
) -> None:
    sent = make_sent()  # a state folder
    data, mail_from = sent.copy_of("bob@example.com")
    report = dsn(mail_from, "bob@example.com", data, status="4.2.2")  # a soft bounce: an event
    sent.inbound(report)
    with closing(
        sqlite3.connect(sent.tmp / "state" / "feedback.sqlite3")
    ) as file:  # SQLite's text may hold NUL
        file.execute("INSERT INTO reports VALUES (?, 'ignored: other', 0)", ("mid:old\x00one@example.com",))
        file.commit()
    moved = sent.dispatch("state", "migrate", "--to", pg_url, "--json")
    assert moved.exit_code == 0, moved.stderr
    copied = json.loads(moved.stdout)["copied"]
    assert (copied["reports"], copied["events"]) == (2, 1)
    again = json.loads(sent.dispatch("state", "migrate", "--to", pg_url, "--json").stdout)
    assert sum(again["copied"].values()) == 0, "a second migration copies nothing"
    assert (again["already_there"]["reports"], again["already_there"]["events"]) == (2, 1)

    with sent.env.open("a", encoding="utf-8") as settings:
        settings.write(f"DISPATCH_STATE_URL='{pg_url}'\n")
    assert sent.status()["soft_bounced"] == 1
    repeat = json.loads(sent.inbound(report, "--json").stdout)
    assert repeat["outcomes"] == {"read before": 1}
    assert repeat["state"]["backend"] == "postgresql"
    counts = json.loads(sent.dispatch("state", "--json").stdout)["counts"]
    assert (counts["reports"], counts["events"]) == (2, 1)


def test_a_database_from_before_the_feedback_tables_is_read_then_brought_forward(
    hosts: Callable[..., Host], pg_url: str
) -> None:
    a = hosts("host-a", pg_url)
    a.send("spring")
    with psycopg.connect(pg_url, autocommit=True) as conn:  # the schema as version 1 left it
        conn.execute("DROP TABLE dispatch.reports, dispatch.events")
        conn.execute("UPDATE dispatch.meta SET value = '1' WHERE name = 'schema'")
    assert _spring(a.status())["bounced_later"] == 0  # read-only: nothing to count yet
    shown = json.loads(a.run("state", "--json").stdout)
    assert shown["schema"]["version"] == 1
    assert "reports" not in shown["counts"]

    done = a.run("inbound", stdin=_bounce_of(a, "bob@example.com"))
    assert done.returncode == 0, done.stderr
    shown = json.loads(a.run("state", "--json").stdout)
    assert shown["schema"] == {"version": pgschema.VERSION, "this_dispatch": pgschema.VERSION}
    assert shown["counts"]["events"] == 1
    assert _spring(a.status())["bounced_later"] == 1
