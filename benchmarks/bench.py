"""dispatch against the real mailmerge 2.3.0 and the C smtp-source ceiling, side by side.

Run from the repository root (as root on a fresh Debian/Ubuntu machine it installs postfix and
mailmerge itself; see benchmarks/README.md)::

    .venv/bin/python benchmarks/bench.py            # full run: 10-20 minutes on 2 cores
    .venv/bin/python benchmarks/bench.py --quick    # about a minute: smaller lists, fewer rounds

It prints a Markdown table on stdout (progress on stderr) and draws benchmarks/chart.png.
Sections: 1 sends into postfix smtp-sink; 2 sends into a real Postfix that discards; 3 the big dry
run; 4 start-up; 5 the journal's cost; 6 DKIM's cost; 7 suppression; 8 several senders on one
campaign with the state in PostgreSQL (1, 2 and 4 processes), SQLite beside them. All traffic goes to
127.0.0.1, to sinks started here as children on free ports and stopped by their pids.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import time
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path

from harness import install
from harness.chart import draw
from harness.cli_runs import bench_dry_run, bench_startup
from harness.features import bench_dkim, bench_journal, bench_suppression
from harness.fixtures import SETTINGS, write_article, write_env_file, write_subscribers
from harness.procs import set_scratch
from harness.report import Report, machine, render_table, revision, tool_versions
from harness.runner import Bench, Config, guarded
from harness.senders import bench_senders
from harness.sends import bench_postfix, bench_sink, prepare_peer

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
MARK_START, MARK_END = "<!-- results:start -->", "<!-- results:end -->"


def parse_args(argv: Sequence[str] | None) -> tuple[Config, argparse.Namespace]:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="about a minute: smaller lists, fewer rounds")
    parser.add_argument("--only", default="12345678", help="sections to run, e.g. --only 13 (default: all)")
    parser.add_argument("--recipients", type=int, help="send list size (2,000; 300 with --quick)")
    parser.add_argument(
        "--rounds", type=int, help="interleaved rounds of the send sections (5; 2 with --quick)"
    )
    parser.add_argument(
        "--dry-rows", type=int, help="rows of the dry-run list (1,000,000; 20,000 with --quick)"
    )
    parser.add_argument("--dry-timeout", type=float, help="minutes the dry run may take (15; 3 with --quick)")
    parser.add_argument("--chart", type=Path, help="PNG to write (benchmarks/chart.png; .work/ with --quick)")
    parser.add_argument(
        "--update-readme", action="store_true", help="replace the results block of benchmarks/README.md"
    )
    parser.add_argument("--dispatch", type=Path, help="the dispatch executable (default: .venv/bin/dispatch)")
    parser.add_argument("--keep", action="store_true", help="keep .work/run (logs, sink dumps) afterwards")
    args = parser.parse_args(argv)
    quick = bool(args.quick)
    rounds = args.rounds or (2 if quick else 5)
    cfg = Config(
        quick=quick,
        recipients=args.recipients or (300 if quick else 2000),
        rounds=rounds,
        postfix_rounds=min(rounds, 1 if quick else 3),
        dry_rows=args.dry_rows or (20_000 if quick else 1_000_000),
        dry_runs=1,
        dry_timeout=60 * (args.dry_timeout or (3 if quick else 15)),
        startup_rounds=3 if quick else 10,
        suppressed=20_000 if quick else 100_000,
        import_runs=1 if quick else 3,
        paragraphs=32,
        sections=frozenset(args.only),
    )
    return cfg, args


def prepare(cfg: Config, cli: Path | None, log: install.Log) -> Bench:
    work = HERE / ".work"
    run = work / "run"
    shutil.rmtree(run, ignore_errors=True)
    run.mkdir(parents=True)
    set_scratch(run / "out")
    install.ensure_debian_packages(log)
    mailmerge = install.ensure_mailmerge(work, log)
    if cli is None:  # (another executable, an installed wheel, was compiled by its install)
        install.compile_dispatch(log)
    article = run / "issue.md"
    write_article(article, cfg.paragraphs)
    send_list = run / f"subscribers-{cfg.recipients}.csv"
    write_subscribers(send_list, cfg.recipients, seed=11)
    one_list = run / "subscribers-1.csv"
    write_subscribers(one_list, 1, seed=11)
    env_file = run / "bench.env"
    write_env_file(env_file, SETTINGS)
    return Bench(
        cfg=cfg, repo=REPO, work=work, run=run, article=article, send_list=send_list,
        one_list=one_list, env_file=env_file, mailmerge=mailmerge, report=Report(), log=log, cli=cli,
    )  # fmt: skip


def header(b: Bench, stamp: str, elapsed: float, load: tuple[float, float]) -> list[str]:
    cfg = b.cfg
    return [
        f"**{stamp}**, commit `{revision(REPO)}`{' (--quick)' if cfg.quick else ''}",
        f"machine: {machine()}; {tool_versions(b.mailmerge)}",
        f"load average (1 min): {load[0]:.2f} at the start, {load[1]:.2f} at the end; the run took "
        f"{elapsed / 60:.1f} min; send list {cfg.recipients:,} recipients, {cfg.rounds} rounds "
        f"({cfg.postfix_rounds} into Postfix); issue: a {cfg.paragraphs}-paragraph Markdown article, "
        "built-in templates",
    ]


def update_readme(text: str) -> None:
    readme = HERE / "README.md"
    content = readme.read_text(encoding="utf-8")
    start, end = content.find(MARK_START), content.find(MARK_END)
    if start < 0 or end < start:
        raise SystemExit(f"{readme}: no {MARK_START} … {MARK_END} block to replace")
    readme.write_text(
        content[: start + len(MARK_START)] + "\n" + text + "\n" + content[end:], encoding="utf-8"
    )


def main(argv: Sequence[str] | None = None) -> int:
    cfg, args = parse_args(argv)
    started = time.perf_counter()

    def log(message: str) -> None:
        print(f"[{time.perf_counter() - started:6.1f}s] {message}", file=sys.stderr, flush=True)

    stamp = datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z")
    load_start = os.getloadavg()[0]
    b = prepare(cfg, args.dispatch.resolve() if args.dispatch else None, log)
    chart_ok = install.ensure_matplotlib(REPO, log)
    want = cfg.sections
    if want & {"1", "2"}:
        guarded(b, "1", "mailmerge template and message sizes", prepare_peer)
    steps = [
        ("1", "real sends into smtp-sink", bench_sink),
        ("2", "real sends into a private Postfix that discards", bench_postfix),
        ("3", "dry run of a big list", bench_dry_run),
        ("4", "start-up", bench_startup),
        ("5", "journal cost (library)", bench_journal),
        ("6", "DKIM cost", bench_dkim),
        ("7", "suppression", bench_suppression),
        ("8", "several senders on one campaign (PostgreSQL state)", bench_senders),
    ]
    for section, title, run in steps:
        if section in want:
            guarded(b, section, title, run)
    elapsed = time.perf_counter() - started
    lines = header(b, stamp, elapsed, (load_start, os.getloadavg()[0]))
    table = render_table(b.report)
    notes = [f"- {note}" for note in b.report.notes]
    text = "\n".join([*(f"{line}  " for line in lines[:-1]), lines[-1], "", table, "", *notes])
    print(text)
    (b.work / "last-run.md").write_text(text + "\n", encoding="utf-8")
    chart = args.chart or (b.work / "chart-quick.png" if cfg.quick else HERE / "chart.png")
    if chart_ok:
        draw(b.report, chart, f"dispatch benchmarks, {stamp}, commit {revision(REPO)}")
        log(f"chart: {chart}")
    if args.update_readme:
        update_readme(text)
        log("benchmarks/README.md: results block replaced")
    if not args.keep:
        shutil.rmtree(b.run, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
