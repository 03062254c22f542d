"""``dispatch reconcile`` against a real Postfix (issue 16): sends killed with SIGKILL leave
unknown recipients; the relay's own log settles them, and the next run sends exactly the
recipients the relay never took, once (counted at the next hop Postfix relays to)."""

from __future__ import annotations

import json
import random
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from dispatch.state import journal as j
from tests.postfix_server import POSTFIX_MISSING, PostfixRelay, postfix_relay
from tests.smtp_servers import Server

pytestmark = pytest.mark.skipif(bool(POSTFIX_MISSING), reason=POSTFIX_MISSING)
Invoke = Callable[..., Any]
READERS = [f"reader{n:02d}@example.{'org' if n % 2 else 'com'}" for n in range(12)]

# A send that SIGKILLs itself at a chosen moment: right after the Nth in-flight record is
# committed (the relay has not had the final dot: it must drop the message), or when the Nth
# 250 arrives, before it is recorded (the relay has queued it).
KILLED_SEND = """
import json, os, signal, sys
from pathlib import Path
from dispatch.compose.issue import plan_issue
from dispatch.send.delivery import SendOptions, run_send
from dispatch.settings import Settings
from dispatch.state import journal as j

article, csv, env, when, n = sys.argv[1], sys.argv[2], json.loads(sys.argv[3]), sys.argv[4], int(sys.argv[5])
count = 0
real_in_flight, real_outcome = j.Journal.in_flight, j.Journal.outcome

def in_flight(self, *args):
    global count
    real_in_flight(self, *args)
    count += when == "after-mark"
    if count == n:
        os.kill(os.getpid(), signal.SIGKILL)

def outcome(self, campaign, key, email, state, **kw):
    global count
    count += when == "at-250" and state == "sent"
    if count == n:
        os.kill(os.getpid(), signal.SIGKILL)
    return real_outcome(self, campaign, key, email, state, **kw)

j.Journal.in_flight, j.Journal.outcome = in_flight, outcome
issue = plan_issue(Path(article), Path(csv), Settings.from_mapping(env))
print(issue.campaign, flush=True)
run_send(issue, j.Journal(Path(env["DISPATCH_STATE_DIR"])), SendOptions())
"""


@pytest.fixture
def relay(smtp_server: Callable[..., Server]) -> Iterator[tuple[PostfixRelay, Server]]:
    """A private Postfix relaying every message to an aiosmtpd next hop (which counts them)."""
    hop = smtp_server()
    with postfix_relay(next_hop=hop.port) as postfix:
        yield postfix, hop


@pytest.fixture
def readers(tmp_path: Path) -> Path:
    path = tmp_path / "list.csv"
    path.write_text("email,name\n" + "".join(f"{a},Reader\n" for a in READERS), encoding="utf-8")
    return path


def killed_send(tmp_path: Path, article: Path, csv: Path, values: dict[str, str], when: str, n: int) -> str:
    """Run the send that kills itself; its campaign."""
    script = tmp_path / "killed_send.py"
    script.write_text(KILLED_SEND, encoding="utf-8")
    done = subprocess.run(
        [sys.executable, str(script), str(article), str(csv), json.dumps(values), when, str(n)],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert done.returncode == -signal.SIGKILL, done.stderr
    return done.stdout.strip()


def delivered(postfix: PostfixRelay, hop: Server) -> Counter[str]:
    """Messages per reader at the next hop, once Postfix has passed on all it queued."""
    deadline = time.monotonic() + 20
    while not postfix.queue_empty() and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(0.2)
    return Counter(r for message in list(hop.received) for r in message.rcpt_tos)


def reconcile(invoke: Invoke, campaign: str, settings: Path, *logs: Path) -> tuple[int, dict[str, Any]]:
    args: list[str | Path] = ["reconcile", campaign, "--env-file", settings, "--json"]
    for log in logs:
        args += ["--maillog", log]
    result = invoke(*args)
    assert "Traceback" not in result.output
    data: dict[str, Any] = json.loads(result.stdout)
    assert data["exit_code"] == result.exit_code
    return result.exit_code, data


def status(invoke: Invoke, campaign: str, settings: Path) -> dict[str, Any]:
    result = invoke("status", campaign, "--env-file", settings, "--json")
    data: dict[str, Any] = json.loads(result.stdout)
    return data


@pytest.mark.parametrize(
    ("when", "n", "connections", "expect"),
    [("after-mark", 3, 1, "send_again"), ("at-250", 3, 1, "sent"),
     ("after-mark", 5, 2, None), ("at-250", 5, 2, None)],
    ids=["dot-withheld-1conn", "queued-1conn", "dot-withheld-2conn", "queued-2conn"],
)  # fmt: skip
def test_reconcile_settles_every_unknown_and_the_next_run_sends_only_what_the_relay_never_took(
    relay: tuple[PostfixRelay, Server], invoke: Invoke, tmp_path: Path, article: Path, readers: Path,
    env: dict[str, str], env_file: Callable[..., Path], when: str, n: int, connections: int,
    expect: str | None,
) -> None:  # fmt: skip
    postfix, hop = relay
    values = {**env, **postfix.env(), "DISPATCH_CONNECTIONS": str(connections)}
    campaign = killed_send(tmp_path, article, readers, values, when, n)
    settings = env_file(**postfix.env(), DISPATCH_CONNECTIONS=str(connections))
    postfix.wait_for_log(r"disconnect from|lost connection", count=1)
    time.sleep(0.3)  # the relay notices the dead connections

    code, data = reconcile(invoke, campaign, settings, postfix.maillog)

    assert (code, data["counts"]["unknown"]) == (0, 0), data
    assert data["unknown_before"] >= 1
    assert data["counts"]["sent"] + data["counts"]["send_again"] == data["unknown_before"]
    if expect is not None:  # one connection: exactly the Nth reader is the unknown one
        assert [d["email"] for d in data[expect]] == [READERS[n - 1]], data
    taken = {d["email"] for d in data["sent"]}
    never = {d["email"] for d in data["send_again"]}
    before = delivered(postfix, hop)
    assert taken <= set(before), "what the log says the relay kept, it delivered"
    assert not never & set(before), "what the log says it never took, it never delivered"
    seen = status(invoke, campaign, settings)
    assert (seen["unknown"], seen["in_flight"]) == (0, 0), seen

    rerun = invoke(
        "send", article, "-s", readers, "--env-file", settings, "--campaign", campaign, "--yes", "--json"
    )
    again = json.loads(rerun.stdout)
    after = delivered(postfix, hop)
    assert rerun.exit_code == 0, rerun.output
    assert after == dict.fromkeys(READERS, 1), "every reader exactly once, at the relay's next hop"
    assert never <= set(after - before), "the rerun sent whom the relay never took"
    assert not taken & set(after - before), "and not whom it kept"
    assert (again["sent_now"], again["sent"], again["unknown"]) == (
        len(READERS) - len(before),
        len(READERS),
        0,
    )


def test_random_sigkills_then_reconcile_leave_no_unknown_and_no_duplicate(
    relay: tuple[PostfixRelay, Server], invoke: Invoke, tmp_path: Path, article: Path,
    env_file: Callable[..., Path], spawn: Callable[..., subprocess.Popen[str]],
) -> None:  # fmt: skip
    postfix, hop = relay
    readers = [f"many{n:03d}@example.{'org' if n % 3 else 'com'}" for n in range(300)]
    csv = tmp_path / "many.csv"
    csv.write_text("email\n" + "\n".join(readers) + "\n", encoding="utf-8")
    settings = env_file(**postfix.env(), DISPATCH_CONNECTIONS="3")
    args = ["send", article, "-s", csv, "--env-file", settings, "--campaign", "kills", "--yes"]
    rng = random.Random(16)
    settled = 0
    for threshold in (40, 140):
        proc = spawn(*args)
        while len(postfix.log().split("message-id=")) <= threshold and proc.poll() is None:
            time.sleep(0.002)
        time.sleep(rng.uniform(0, 0.02))
        proc.send_signal(signal.SIGKILL)
        proc.communicate(timeout=30)
        assert proc.returncode == -signal.SIGKILL, "the kill must land while the run is going"
        time.sleep(0.3)
        code, data = reconcile(invoke, "kills", settings, postfix.maillog)
        assert (code, data["counts"]["unknown"]) == (0, 0), data
        settled += data["unknown_before"]

    assert settled >= 1, "three connections killed mid-run leave someone in flight"
    final = invoke(*args, "--json")
    data = json.loads(final.stdout)
    assert (final.exit_code, data["unknown"], data["sent"]) == (0, 0, len(readers)), final.output
    assert delivered(postfix, hop) == dict.fromkeys(readers, 1)


def test_the_message_id_is_recorded_before_the_final_dot_on_every_path(
    relay: tuple[PostfixRelay, Server], tmp_path: Path, article: Path, readers: Path, env: dict[str, str],
) -> None:  # fmt: skip
    """The journal's Message-ID of an unknown row is the one the relay logged for its message."""
    postfix, _ = relay
    values = {**env, **postfix.env(), "DISPATCH_CONNECTIONS": "1"}
    campaign = killed_send(tmp_path, article, readers, values, "at-250", 2)
    journal = j.Journal(Path(env["DISPATCH_STATE_DIR"]))
    try:
        journal.recover(campaign)
        (unknown,) = journal.unknowns(campaign)
    finally:
        journal.close()
    postfix.wait_for_log(r"message-id=", count=2)
    assert f"message-id={unknown.message_id}" in postfix.log()
    assert unknown.email == READERS[1]
