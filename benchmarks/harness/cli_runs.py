"""Sections 3 and 4, whole ``dispatch`` processes: the big dry run, and start-up."""

from __future__ import annotations

import json
import sys

from harness.fixtures import cached_subscribers
from harness.procs import Measured, run_measured
from harness.report import Row, Target
from harness.runner import Bench, rotated

DRY_RATE = Target(">=", 10_000, "≥ 10,000/s")
DRY_RSS = Target("<=", 128, "≤ 128 MB", on="rss")
STARTUP = Target("<=", 0.2, "≤ 0.2 s")


def bench_dry_run(b: Bench) -> None:
    rows_n = b.cfg.dry_rows
    b.log(f"    the {rows_n:,}-row list (generated once, then cached in {b.work / 'fixtures'})")
    csv_path = cached_subscribers(b.work / "fixtures", rows_n, seed=1)
    size_mb = csv_path.stat().st_size / 1e6
    scale = "1M" if rows_n == 1_000_000 else f"{rows_n:,}-row (--quick, not 1M)"
    rate = b.report.row(
        "3", f"dry run, {scale} list: messages/s", chart="dry run", targets=(DRY_RATE, DRY_RSS)
    )
    wall = b.report.row("3", f"dry run, {scale} list: wall time", unit="s", digits=1)
    folder = b.run / "dry-run"
    folder.mkdir()
    cmd = [*b.dispatch, "send", str(b.article), "-s", str(csv_path), "--dry-run", "--json",
           "--env-file", str(b.env_file)]  # fmt: skip
    recipients = 0
    for i in range(b.cfg.dry_runs):
        b.log(f"    dry run {i + 1}/{b.cfg.dry_runs}")
        env = b.env(DISPATCH_STATE_DIR=str(b.fresh_state(warm=False)))  # the dry run inlines itself
        measured = run_measured(cmd, env=env, cwd=folder, timeout=b.cfg.dry_timeout)
        if measured.timed_out:
            minutes, bound = b.cfg.dry_timeout / 60, rows_n / b.cfg.dry_timeout
            verdict = " (target ≥ 10,000/s: **missed**)" if bound < DRY_RATE.value else ""
            rate.missing = (
                f"stopped after {minutes:g} min, unfinished: under {bound:,.0f} msgs/s{verdict}; peak RSS "
                f"until then {measured.rss_mb:,.0f} MB, CPU {measured.cpu:,.0f} s. Raise the budget with "
                "--dry-timeout."
            )
            wall.missing = f"over {minutes:g} min"
            return
        measured.check("dispatch send --dry-run")
        summary = json.loads(measured.stdout)
        recipients = int(summary["recipients"])
        if recipients != rows_n:
            raise RuntimeError(f"dry run: {recipients} recipients, expected {rows_n} (every row is valid)")
        cpu_ms = measured.cpu / recipients * 1e3
        rate.add(recipients / measured.wall, cpu_ms=cpu_ms, rss_mb=measured.rss_mb)
        wall.add(measured.wall, rss_mb=measured.rss_mb)
    b.report.notes.append(
        f"3: `dispatch send ISSUE -s LIST --dry-run --json` as one process on a {rows_n:,}-row CSV "
        f"({size_mb:.0f} MB; email, name, city, signup_date, plan; about half the names with non-ASCII "
        f"letters, 2.5 % in non-Latin scripts, 4 % empty; every row valid and unique, so {recipients:,} "
        f"messages were rendered, encoded and checked); {b.cfg.dry_runs} run(s); peak RSS from GNU time."
    )


def bench_startup(b: Bench) -> None:
    variants = {
        "python": [sys.executable, "-c", "pass"],
        "help": [*b.dispatch, "--help"],
        "send help": [*b.dispatch, "send", "--help"],
        "mailmerge": [str(b.mailmerge), "--version"],
    }
    rows: dict[str, Row] = {
        "python": b.report.row("4", "`python -c pass` (this interpreter)", unit="s", digits=3),
        "help": b.report.row("4", "`dispatch --help`", unit="s", digits=3, targets=(STARTUP,)),
        "send help": b.report.row("4", "`dispatch send --help`", unit="s", digits=3, targets=(STARTUP,)),
        "mailmerge": b.report.row("4", "`mailmerge --version` (the peer, for scale)", unit="s", digits=3),
    }
    env = b.env()
    for r in range(b.cfg.startup_rounds):
        for name in rotated(list(variants), r):
            measured: Measured = run_measured(variants[name], env=env, cwd=b.run).check(name)
            rows[name].add(measured.wall, rss_mb=measured.rss_mb)
    b.report.notes.append(
        f"4: wall time from fork to exit, {b.cfg.startup_rounds} interleaved rounds, warm file cache."
    )
