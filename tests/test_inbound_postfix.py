"""Judged through a real Postfix: a send whose next hop refuses some readers after Postfix has
accepted every message; Postfix's own bounce reports, read from its Maildir, suppress exactly
those readers, once; a complaint, a mailto unsubscribe and an out-of-office reply arrive on
standard input; ``status`` counts them; the next issue skips all five."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from dispatch.cli import app
from tests.inbound_samples import (
    complaint,
    header,
    mailto_of,
    mailto_unsubscribe,
    out_of_office,
    received_copy,
    redact,
)
from tests.postfix_private import AVAILABLE, PrivatePostfix
from tests.smtp_servers import FaultPlan, Server, start_server

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        not AVAILABLE, reason="Debian's postfix is not installed (.ci/run installs it) or not root"
    ),
]
READERS = [f"reader{n:02d}@example.com" for n in range(1, 13)]
DEAD = ["reader03@example.com", "reader07@example.com", "reader11@example.com"]
TOKEN_SENDER = re.compile(r"bounces\+([a-z2-7]{32})@news\.example\.org")


@dataclass
class Scene:
    """A campaign sent through a private Postfix whose next hop refused three readers."""

    postfix: PrivatePostfix
    next_hop: Server
    env: Path
    tmp: Path
    runner: CliRunner

    def dispatch(self, *args: str | Path, stdin: bytes | None = None) -> Any:
        return self.runner.invoke(app, [*map(str, args), "--env-file", str(self.env)], input=stdin)

    def copy_of(self, reader: str) -> tuple[bytes, str]:
        """The message the next hop received for ``reader``, and its envelope sender."""
        got = next(r for r in self.next_hop.received if r.rcpt_tos == [reader])
        return got.data, got.mail_from

    def send(self, campaign: str) -> None:
        issue = self.tmp / f"{campaign}.md"
        issue.write_text(
            f"---\ntitle: {campaign} news\ncampaign: {campaign}\n---\n\nThe garden.\n", encoding="utf-8"
        )
        result = self.dispatch("send", issue, "-s", self.tmp / "list.csv", "--yes")
        assert result.exit_code == 0, result.stderr

    def passed_on(self, readers: set[str], timeout: float = 60.0) -> set[str]:
        """Wait until Postfix has handed the next hop a copy for each of ``readers`` (it queues
        first and delivers afterwards, so a send's exit does not mean they arrived); who got one."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            got = {r.rcpt_tos[0] for r in self.next_hop.received}
            if got >= readers:
                return got
            time.sleep(0.2)
        return {r.rcpt_tos[0] for r in self.next_hop.received}

    def suppressed(self) -> dict[str, str]:
        result = self.dispatch("suppress", "list", "--json")
        assert result.exit_code == 0, result.stderr
        return {e["email"]: e["reason"] for e in json.loads(result.stdout)}


@contextmanager
def started(tmp: Path, runner: CliRunner, replies: dict[str, str], extra: str = "") -> Iterator[Scene]:
    """A private Postfix whose next hop answers ``replies`` (address → reply), settings for it,
    and the list of READERS; stopped afterwards."""
    next_hop = start_server(faults=FaultPlan(reject=replies))
    try:
        postfix = PrivatePostfix("example.com", next_hop.port, "news.example.org", extra).start()
    except BaseException:
        next_hop.stop()
        raise
    values = {
        "DISPATCH_FROM": "Example News <news@example.org>",
        "DISPATCH_ORGANIZATION": "Example News",
        "DISPATCH_POSTAL_ADDRESS": "1 Example Street, Springfield",
        "DISPATCH_LIST_ID": "news.example.org",
        "DISPATCH_UNSUBSCRIBE_URL": "https://news.example.org/unsubscribe/{token}",
        "DISPATCH_UNSUBSCRIBE_SECRET": "postfix-scene-secret-0123456789-abcdefghij",
        "DISPATCH_BOUNCE_ADDRESS": "bounces@news.example.org",
        "DISPATCH_STATE_DIR": str(tmp / "state"),
        **postfix.env(),
    }
    env = tmp / "news.env"
    env.write_text("".join(f"{k}='{v}'\n" for k, v in values.items()), encoding="utf-8")
    env.chmod(0o600)
    (tmp / "list.csv").write_text(
        "email,name\n" + "".join(f"{r},Reader {n}\n" for n, r in enumerate(READERS, 1)), encoding="utf-8"
    )
    try:
        yield Scene(postfix, next_hop, env, tmp, runner)
    finally:
        postfix.stop()
        next_hop.stop()


@pytest.fixture
def scene(tmp_path: Path, runner: CliRunner) -> Iterator[Scene]:
    with started(tmp_path, runner, {r: f"550 5.1.1 <{r}>: no such user" for r in DEAD}) as scene:
        scene.send("spring")
        scene.postfix.wait_for(len(DEAD))  # the bounce reports
        scene.passed_on(set(READERS) - set(DEAD))  # and every living reader's copy
        yield scene


def test_each_message_goes_out_with_its_own_envelope_sender_and_no_address_in_it(scene: Scene) -> None:
    scene.postfix.wait_for(len(DEAD))
    senders = {r.rcpt_tos[0]: r.mail_from for r in scene.next_hop.received}
    assert set(senders) == set(READERS) - set(DEAD)  # the next hop took the living ones
    logged = re.findall(r"from=<([^>]*)>", scene.postfix.log_text())  # what Postfix itself was given
    assert len({s for s in logged if s}) == len(READERS)
    for reader, sender in senders.items():
        assert TOKEN_SENDER.fullmatch(sender), sender
        assert len(sender.split("@")[0]) <= 64
        assert reader.split("@")[0] not in sender
        assert "example.com" not in sender
    assert len(set(senders.values())) == len(senders)


def test_postfix_bounce_reports_suppress_exactly_the_refused_readers_and_once(scene: Scene) -> None:
    scene.postfix.wait_for(len(DEAD))
    assert {to: s for to, s in scene.postfix.statuses().items() if s == "bounced"} == dict.fromkeys(
        DEAD, "bounced"
    )
    result = scene.dispatch("inbound", "--maildir", scene.postfix.maildir, "--json")
    assert result.exit_code == 0, result.stderr
    summary = json.loads(result.stdout)
    assert summary["read"] == len(DEAD)
    assert summary["suppressed"] == {"bounced": len(DEAD)}
    assert scene.suppressed() == dict.fromkeys(DEAD, "bounced")
    lines = [line for line in result.stderr.splitlines() if line.startswith("dispatch inbound:")]
    assert len(lines) == len(DEAD)  # one line per decision, naming the reader, never a token
    assert all(TOKEN_SENDER.search(line) is None and "secret" not in line for line in lines)
    assert scene.postfix.delivered() == []  # every report moved aside

    again = scene.dispatch("inbound", "--maildir", scene.postfix.maildir, "--json")
    assert again.exit_code == 0
    assert json.loads(again.stdout)["read"] == 0
    for report in (scene.postfix.maildir / ".processed" / "cur").iterdir():  # the same reports once more
        shutil.copy(report, scene.postfix.maildir / "new" / (report.name.split(":")[0] + ".again"))
    repeat = json.loads(scene.dispatch("inbound", "--maildir", scene.postfix.maildir, "--json").stdout)
    assert repeat["outcomes"] == {"read before": len(DEAD)}
    assert scene.suppressed() == dict.fromkeys(DEAD, "bounced")


def test_complaint_unsubscribe_and_auto_reply_then_status_and_the_next_issue(scene: Scene) -> None:
    scene.postfix.wait_for(len(DEAD))
    assert scene.dispatch("inbound", "--maildir", scene.postfix.maildir).exit_code == 0
    complainer, leaver, away = "reader01@example.com", "reader05@example.com", "reader09@example.com"

    original, mail_from = scene.copy_of(complainer)
    redacted = redact(received_copy(original, mail_from), complainer)
    assert complainer.encode() not in redacted
    report = complaint(redacted, to="fbl@news.example.org")
    result = scene.dispatch("inbound", stdin=report)
    assert result.exit_code == 0, result.stderr
    assert "suppressed, reason complained" in result.stderr

    copy, _ = scene.copy_of(leaver)
    result = scene.dispatch("inbound", stdin=mailto_unsubscribe(mailto_of(copy), leaver))
    assert result.exit_code == 0, result.stderr
    assert "suppressed, reason unsubscribed" in result.stderr

    copy, mail_from = scene.copy_of(away)
    before = scene.suppressed()
    result = scene.dispatch("inbound", stdin=out_of_office(mail_from, away, header(copy, "Subject")))
    assert result.exit_code == 0, result.stderr
    assert "auto-reply: ignored" in result.stderr
    assert scene.suppressed() == before

    assert scene.suppressed() == {
        **dict.fromkeys(DEAD, "bounced"),
        complainer: "complained",
        leaver: "unsubscribed",
    }
    status = json.loads(scene.dispatch("status", "spring", "--json").stdout)
    assert (status["bounced"], status["complained"], status["unsubscribed"]) == (3, 1, 1)
    assert status["delivered"] == len(READERS)  # Postfix accepted every message

    scene.next_hop.handler.received.clear()
    (scene.tmp / "issue2.md").write_text(
        "---\ntitle: Summer news\ncampaign: summer\n---\n\nHot.\n", encoding="utf-8"
    )
    sent = scene.dispatch("send", scene.tmp / "issue2.md", "-s", scene.tmp / "list.csv", "--yes", "--json")
    assert sent.exit_code == 0, sent.stderr
    summary = json.loads(sent.stdout)
    skipped = {*DEAD, complainer, leaver}
    assert summary["suppressed"] == len(skipped)
    assert summary["sent_now"] == len(READERS) - len(skipped)
    assert summary["suppressed_by_reason"] == {"bounced": 3, "complained": 1, "unsubscribed": 1}
    wanted = set(READERS) - skipped
    assert scene.passed_on(wanted) == wanted
    for reader in skipped:  # Postfix itself saw them once: in the first issue
        assert scene.postfix.log_text().count(f"to=<{reader}>") == 1, reader


def test_inbound_as_a_pipe_reads_standard_input_of_the_real_command(scene: Scene) -> None:
    """What a Postfix pipe transport or an alias does: the console script, a report on stdin."""
    report = scene.postfix.wait_for(len(DEAD))[0].read_bytes()
    argv = [sys.executable, "-m", "dispatch", "inbound", "--env-file", str(scene.env)]
    done = subprocess.run(argv, input=report, capture_output=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    assert b"suppressed, reason bounced" in done.stderr
    assert len(scene.suppressed()) == 1


def test_a_full_mailbox_three_issues_in_a_row_is_suppressed_once_postfix_gives_up(
    tmp_path: Path, runner: CliRunner
) -> None:
    """Postfix's own soft reports: a "delayed" warning, then a failure with 4.2.2 when the message
    expires; both count once for their issue, and the third issue in a row suppresses."""
    full = "reader02@example.com"
    lifetimes = "delay_warning_time = 1s\nmaximal_queue_lifetime = 4s\nbounce_queue_lifetime = 4s\n"
    with started(tmp_path, runner, {full: "452 4.2.2 mailbox full"}, lifetimes) as scene:
        for n, campaign in enumerate(("spring", "summer", "autumn"), start=1):
            scene.send(campaign)
            scene.postfix.wait_for(2, timeout=60)  # the warning and the failure
            result = scene.dispatch("inbound", "--maildir", scene.postfix.maildir, "--json")
            assert result.exit_code == 0, result.stderr
            kinds = json.loads(result.stdout)["kinds"]
            assert kinds == {"soft bounce": 2}, result.stderr
            assert scene.suppressed() == ({} if n < 3 else {full: "bounced"}), result.stderr
            assert f"{n} of 3 in a row" in result.stderr
        assert json.loads(scene.dispatch("status", "autumn", "--json").stdout)["bounced"] == 1
