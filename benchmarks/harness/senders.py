"""Section 8: several ``dispatch send`` processes on one campaign, the state in PostgreSQL.

1, 2 and 4 sender processes (one connection each, as separate cron boxes would run them) start
together on the same campaign, list and ``DISPATCH_STATE_URL``, into one smtp-sink; the figure
is the list's size over the wall time from the first start to the last exit. Beside them, one
sender with the embedded SQLite state (a second one there is refused: one process per
campaign). Every run has a fresh database and fresh state folders (warm, as after the issue's
dry run); after each, the sink's counter must have grown by exactly the list's size (nobody
twice, nobody left out). The PostgreSQL cluster is Debian's, started here in a temporary
folder on 127.0.0.1 with its default durability settings, and stopped afterwards.
"""

from __future__ import annotations

import contextlib
import glob
import json
import os
import pwd
import resource
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

from harness.procs import SmtpSink, free_port
from harness.report import Target
from harness.runner import Bench, rotated

SENDERS = (1, 2, 4)
TWO_SENDERS = Target(">=", 1.4, "≥ 1.4×")


def _as_postgres(cmd: list[str]) -> list[str]:
    return ["runuser", "-u", "postgres", "--", *cmd] if os.geteuid() == 0 else cmd


@contextlib.contextmanager
def postgres() -> Iterator[str]:
    """A private PostgreSQL cluster on 127.0.0.1; yields the URL of its ``postgres`` database."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"))
    if not found:
        raise RuntimeError("PostgreSQL is not installed (apt-get install postgresql)")
    bin_dir = Path(found[-1]).parent
    folder = Path(tempfile.mkdtemp(prefix="dispatch-bench-pg-"))
    folder.chmod(0o755)
    if os.geteuid() == 0:
        owner = pwd.getpwnam("postgres")
        os.chown(folder, owner.pw_uid, owner.pw_gid)
    data, port = folder / "data", free_port()
    subprocess.run(_as_postgres([str(bin_dir / "initdb"), "-D", str(data), "-U", "postgres", "-A", "trust"]),
                   check=True, capture_output=True)  # fmt: skip
    options = f"-p {port} -k {folder} -c listen_addresses=127.0.0.1 -c max_connections=200"
    subprocess.run(_as_postgres([str(bin_dir / "pg_ctl"), "-D", str(data), "-l", str(folder / "log"), "-w",
                                 "-o", options, "start"]), check=True, capture_output=True)  # fmt: skip
    try:
        yield f"postgresql://postgres@127.0.0.1:{port}/postgres"
    finally:
        subprocess.run(_as_postgres([str(bin_dir / "pg_ctl"), "-D", str(data), "-m", "fast", "stop"]),
                       check=False, capture_output=True)  # fmt: skip
        shutil.rmtree(folder, ignore_errors=True)


def _database(url: str, name: str) -> str:
    import psycopg  # noqa: PLC0415 - only this section needs it

    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}"')
        conn.execute(f'CREATE DATABASE "{name}"')
    return url.rsplit("/", 1)[0] + "/" + name


def _together(b: Bench, port: int, count: int, url: str) -> tuple[float, float, list[int]]:
    """``count`` senders started together; (wall seconds, CPU seconds of them all, sent by each)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    env = {"DISPATCH_SMTP_PORT": str(port), **({"DISPATCH_STATE_URL": url} if url else {})}
    procs = []
    started = time.perf_counter()
    for _ in range(count):
        cmd = [*b.send_cmd(b.send_list, 1), "--campaign", "bench-shared"]
        procs.append(subprocess.Popen(cmd, env=b.env(DISPATCH_STATE_DIR=str(b.fresh_state()), **env),
                                      cwd=b.run, stdout=subprocess.PIPE, stderr=subprocess.PIPE))  # fmt: skip
    outputs = [p.communicate(timeout=3600) for p in procs]
    wall = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    sent = []
    for proc, (out, err) in zip(procs, outputs, strict=True):
        if proc.returncode != 0:
            raise RuntimeError(
                f"dispatch send exited with {proc.returncode}: {err.decode(errors='replace')[-300:]}"
            )
        sent.append(int(json.loads(out)["sent_now"]))
    cpu = (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)
    return wall, cpu, sent


def bench_senders(b: Bench) -> None:
    n, report = b.cfg.recipients, b.report
    labels = {0: "1 sender, SQLite state (the embedded default)"}
    labels |= {
        k: f"{k} sender process{'es' if k > 1 else ''}, PostgreSQL state, 1 connection each" for k in SENDERS
    }
    rows = {k: report.row("8", label, chart="send: several senders") for k, label in labels.items()}
    shares: dict[int, list[list[int]]] = {k: [] for k in SENDERS}
    with postgres() as server, SmtpSink(b.run) as sink:
        for r in range(b.cfg.rounds):
            b.log(f"    round {r + 1}/{b.cfg.rounds}")
            for k in rotated([0, *SENDERS], r):
                url = _database(server, f"bench_{r}_{k}") if k else ""
                before = sink.messages()
                wall, cpu, sent = _together(b, sink.port, k or 1, url)
                sink.expect(before, n, f"{k or 1} sender(s)")  # nobody twice, nobody left out
                if sum(sent) != n:
                    raise RuntimeError(f"{k} senders reported {sum(sent)} sent, expected {n}")
                rows[k].add(n / wall, cpu_ms=cpu / n * 1e3)
                if k:
                    shares[k].append(sent)
    report.ratio("8", "2 senders / 1 sender (PostgreSQL)", rows[2], rows[1], target=TWO_SENDERS)
    report.ratio("8", "4 senders / 1 sender (PostgreSQL)", rows[4], rows[1])
    report.ratio("8", "1 sender: PostgreSQL / SQLite", rows[1], rows[0])
    split = "; ".join(f"{k}: {' / '.join(str(x) for x in shares[k][-1])}" for k in SENDERS if shares[k])
    report.notes.append(
        f"8: {n:,} recipients, one campaign, {b.cfg.rounds} interleaved rounds; each run a fresh PostgreSQL "
        "database (Debian's cluster, started here, default fsync; DISPATCH_JOURNAL_SYNC=normal, so a "
        "commit does not wait for the disk) and fresh, warm state folders; the senders start together "
        "and msgs/s = recipients / (last exit − first start); CPU per msg adds up every sender process "
        f"(not the database's). The sink counted exactly {n:,} new messages after every run. How the "
        f"last round split the list between the senders: {split}."
    )
