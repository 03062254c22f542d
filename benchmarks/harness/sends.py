"""Sections 1 and 2: real sends of the same issue to the same list, whole processes side by side.

1. into postfix's ``smtp-sink``: real mailmerge 2.3.0, ``dispatch send`` with 1 and 4
   connections, and the C ``smtp-source`` ceiling at 1 and 4 sessions with the same message size;
2. into a real, private Postfix that queues and discards (when it can be started here)."""

from __future__ import annotations

import shutil
import statistics
from collections.abc import Callable

from harness import mailmerge as mm
from harness.fixtures import write_segment_templates
from harness.postfix import PrivatePostfix, unavailable_reason
from harness.procs import Measured, SmtpSink, run_measured, smtp_source_cmd
from harness.report import Row, Target
from harness.runner import Bench, rotated

FIVE_TIMES = Target(">=", 5.0, "≥ 5×")
HALF_CEILING = Target(">=", 0.5, "≥ 0.5×")
HALF_BUILTIN = Target(">=", 0.5, "≥ 0.5×")
SOURCE_HEADERS = 140  # smtp-source adds From, To, Date and Message-Id to its -l body


def prepare_mailmerge(b: Bench) -> None:
    """The mailmerge template and database (from a dispatch dry run for a sentinel subscriber)."""
    folder = b.run / "mailmerge"
    folder.mkdir()
    columns = b.send_list.open(encoding="utf-8").readline().strip().split(",")
    sentinel = folder / "sentinel.csv"
    mm.sentinel_list(sentinel, columns)
    out = folder / "sample"
    cmd = [*b.dispatch, "send", str(b.article), "-s", str(sentinel), "--dry-run", "--out", str(out),
           "--env-file", str(b.env_file)]  # fmt: skip
    state = b.fresh_state(warm=False)
    run_measured(cmd, env=b.env(DISPATCH_STATE_DIR=str(state)), cwd=b.run).check("dispatch dry run")
    if (state / "cache").is_dir():  # the sends below run as after this dry run (an editor's preview)
        b.dry_run_cache = b.run / "preview-state" / "cache"  # outside run/state: each section empties it
        shutil.copytree(state / "cache", b.dry_run_cache)
    emls = sorted(out.glob("*.eml"))
    if not emls:
        raise RuntimeError(f"the dispatch dry run wrote no .eml into {out}")
    sample = mm.parse_sample(emls[0].read_bytes())
    mm.write_template(folder / "template.txt", sample)
    mm.write_database(folder / "database.csv", b.send_list)
    mm.write_database(folder / "one.csv", b.send_list, limit=1)


def mailmerge_cmd(b: Bench, port: int, database: str = "database.csv") -> list[str]:
    folder = b.run / "mailmerge"
    config = folder / f"server-{port}.conf"
    mm.write_config(config, port)
    return mm.command(b.mailmerge, folder / "template.txt", folder / database, config)


def measure_sizes(b: Bench) -> None:
    """One message of each variant through a dumping smtp-sink: the sizes on the wire."""

    def dispatch_one(port: int) -> None:
        b.cli_send(port, subscribers=b.one_list, expect=1)

    def mailmerge_one(port: int) -> None:
        run_measured(mailmerge_cmd(b, port, "one.csv"), env=b.env(), keep_stdout=False).check("mailmerge")

    got = b.capture([dispatch_one, mailmerge_one])
    b.wire["dispatch"], b.wire["mailmerge"] = len(got[0]), len(got[1])
    body = max(1000, b.wire["dispatch"] - SOURCE_HEADERS)

    def source_one(port: int) -> None:
        run_measured(smtp_source_cmd(port, messages=1, sessions=1, size=body)).check("smtp-source")

    b.wire["smtp-source"] = len(b.capture([source_one])[0])
    b.wire["smtp-source -l"] = body


def prepare_segments(b: Bench) -> None:
    """The two-segment template, and its dry run's cache (the sends of it run after their preview,
    as the built-in ones do)."""
    b.segments = write_segment_templates(b.run / "segments")
    state = b.fresh_state(warm=False)
    cmd = [*b.dispatch, "send", str(b.article), "-s", str(b.send_list), "--dry-run", "--json",
           "--env-file", str(b.env_file), "--template", str(b.segments)]  # fmt: skip
    run_measured(cmd, env=b.env(DISPATCH_STATE_DIR=str(state)), cwd=b.run).check(
        "dispatch dry run (segments)"
    )
    if (state / "cache").is_dir():
        b.segments_cache = b.run / "segments-state" / "cache"
        shutil.copytree(state / "cache", b.segments_cache)


def prepare_peer(b: Bench) -> None:
    prepare_mailmerge(b)
    prepare_segments(b)
    measure_sizes(b)


def _loop(
    b: Bench,
    rows: dict[str, Row],
    variants: dict[str, Callable[[], Measured]],
    rounds: int,
    check: Callable[[str, Callable[[], Measured]], Measured],
) -> None:
    n = b.cfg.recipients
    for r in range(rounds):
        b.log(f"    round {r + 1}/{rounds}")
        for name in rotated(list(variants), r):
            measured = check(name, variants[name])
            rows[name].add(n / measured.wall, cpu_ms=measured.cpu / n * 1e3, rss_mb=measured.rss_mb)


def _peers_and_dispatch(b: Bench, port: int) -> dict[str, Callable[[], Measured]]:
    """The variants every send section runs: the real mailmerge, dispatch on 1 and 4 connections."""
    return {
        "mailmerge": lambda: run_measured(mailmerge_cmd(b, port), env=b.env(), keep_stdout=False),
        "dispatch 1": lambda: b.cli_send(port, connections=1)[0],
        "dispatch 4": lambda: b.cli_send(port, connections=4)[0],
    }


def bench_sink(b: Bench) -> None:
    n, report = b.cfg.recipients, b.report
    body = b.wire["smtp-source -l"]
    with SmtpSink(b.run) as sink:
        port = sink.port
        variants: dict[str, Callable[[], Measured]] = {
            **_peers_and_dispatch(b, port),
            "dispatch 1 cold": lambda: b.cli_send(port, connections=1, warm=False)[0],
            "dispatch 1 segments": lambda: b.cli_send(
                port, connections=1, template=b.segments, cache=b.segments_cache
            )[0],
            "smtp-source 1": lambda: run_measured(smtp_source_cmd(port, messages=n, sessions=1, size=body)),
            "smtp-source 4": lambda: run_measured(smtp_source_cmd(port, messages=n, sessions=4, size=body)),
        }
        labels = {
            "mailmerge": f"real mailmerge 2.3.0 (new connection per message), {b.wire['mailmerge']:,} B",
            "dispatch 1": f"dispatch send, journal on, 1 connection, {b.wire['dispatch']:,} B",
            "dispatch 4": f"dispatch send, journal on, 4 connections, {b.wire['dispatch']:,} B",
            "dispatch 1 cold": "dispatch send, 1 connection, no dry run before (premailer runs)",
            "dispatch 1 segments": "dispatch send, journal on, 1 connection, two-segment template",
            "smtp-source 1": f"smtp-source (C ceiling), 1 session, {b.wire['smtp-source']:,} B",
            "smtp-source 4": f"smtp-source (C ceiling), 4 sessions, {b.wire['smtp-source']:,} B",
        }
        rows = {name: report.row("1", labels[name], chart="send: smtp-sink") for name in variants}

        sink_ms: dict[str, list[float]] = {name: [] for name in variants}

        def check(name: str, run: Callable[[], Measured]) -> Measured:
            before, cpu = sink.messages(), sink.cpu_seconds()
            measured = run().check(name)
            sink.expect(before, n, name)  # every message arrived
            sink_ms[name].append((sink.cpu_seconds() - cpu) / n * 1e3)
            return measured

        _loop(b, rows, variants, b.cfg.rounds, check)
    report.ratio(
        "1", "dispatch 1 connection / mailmerge", rows["dispatch 1"], rows["mailmerge"], target=FIVE_TIMES
    )
    report.ratio(
        "1", "dispatch 4 connections / mailmerge", rows["dispatch 4"], rows["mailmerge"], target=FIVE_TIMES
    )
    report.ratio("1", "dispatch 1 connection, no dry run before / mailmerge", rows["dispatch 1 cold"],
                 rows["mailmerge"])  # fmt: skip
    report.ratio(
        "1", "two-segment template / built-in template (1 connection)", rows["dispatch 1 segments"],
        rows["dispatch 1"], target=HALF_BUILTIN,
    )  # fmt: skip
    report.ratio(
        "1", "dispatch 1 connection / smtp-source 1 session", rows["dispatch 1"], rows["smtp-source 1"],
        target=HALF_CEILING,
    )  # fmt: skip
    report.ratio(
        "1", "dispatch 4 connections / smtp-source 4 sessions", rows["dispatch 4"], rows["smtp-source 4"],
        target=HALF_CEILING,
    )  # fmt: skip
    report.notes.append(
        f"1: {n:,} recipients per run, {b.cfg.rounds} interleaved rounds, one smtp-sink -c on 127.0.0.1 "
        f"whose message counter was checked after every run (all {n:,} arrived each time). Whole processes: "
        "msgs/s = recipients / wall time from start to exit (start-up, planning and the list included); "
        "CPU per msg = (user + system, wait4) / recipients; peak RSS from GNU time. Sizes: one message as "
        f"received: dispatch text + HTML (quoted-printable) {b.wire['dispatch']:,} B; mailmerge the "
        f"same HTML only, base64 (it marks any non-ASCII message utf-8), {b.wire['mailmerge']:,} B; "
        f"smtp-source -l {body:,}, {b.wire['smtp-source']:,} B. Each dispatch send has a fresh state "
        "folder (empty journal) holding what the issue's dry run left in its cache (premailer's "
        "inlined HTML, see src/dispatch/compose/inlining.py), as a send after its preview does; mailmerge's "
        "template comes from that same dry run. The 'no dry run before' row has an empty state "
        "folder, so that run imports premailer and inlines the CSS itself (~0.14 s). The two-segment "
        "row sends the same issue with benchmarks/harness/fixtures.py's SEGMENT_HTML and SEGMENT_TEXT "
        "(`--template`: the built-ins with a greeting that differs by the list's `plan` column and "
        'prints the name or "reader"), after its own dry run. '
        "The sink's own CPU per message "
        "(median; /proc, 10 ms ticks): "
        + ", ".join(f"{name} {statistics.median(ms):.2f} ms" for name, ms in sink_ms.items())
        + ". The sink is one process: it can take at most 1 / that many messages a second."
    )


def bench_postfix(b: Bench) -> None:
    n, report = b.cfg.recipients, b.report
    label = "real Postfix on 127.0.0.1 (queue, then discard)"
    why = unavailable_reason()
    if why:
        report.missing("2", label, f"not run: {why}")
        return
    body = b.wire["smtp-source -l"]
    drains: list[float] = []
    with PrivatePostfix(b.run / "postfix") as postfix:
        port = postfix.port
        variants: dict[str, Callable[[], Measured]] = {
            **_peers_and_dispatch(b, port),
            "smtp-source 4": lambda: run_measured(smtp_source_cmd(port, messages=n, sessions=4, size=body)),
        }
        labels = {
            "mailmerge": "→ Postfix: real mailmerge 2.3.0",
            "dispatch 1": "→ Postfix: dispatch send, journal on, 1 connection",
            "dispatch 4": "→ Postfix: dispatch send, journal on, 4 connections",
            "smtp-source 4": "→ Postfix: smtp-source, 4 sessions",
        }
        rows = {name: report.row("2", labels[name], chart="send: Postfix") for name in variants}

        def check(name: str, run: Callable[[], Measured]) -> Measured:
            before = postfix.delivered()
            measured = run().check(name)
            drains.append(postfix.drain(before, n, name))  # all n queued, delivered, queue empty
            return measured

        _loop(b, rows, variants, b.cfg.postfix_rounds, check)
    report.ratio("2", "→ Postfix: dispatch 1 connection / mailmerge", rows["dispatch 1"], rows["mailmerge"])
    report.ratio("2", "→ Postfix: dispatch 4 connections / mailmerge", rows["dispatch 4"], rows["mailmerge"])
    report.ratio(
        "2", "→ Postfix: dispatch 4 connections / smtp-source 4", rows["dispatch 4"], rows["smtp-source 4"]
    )
    report.notes.append(
        f"2: a private Postfix ({postfix.etc}) with smtpd on 127.0.0.1:{port} only, default_transport = "
        f"discard; {b.cfg.postfix_rounds} interleaved rounds of {n:,} recipients. msgs/s is the hand-off "
        "rate (until the client exits); after every run the script waited for `postqueue -p` to report an "
        f"empty queue and counted {n:,} new `status=sent` lines of the discard transport in the mail log "
        f"(the queue was empty {statistics.median(drains):.1f} s after the client exited, median)."
    )
