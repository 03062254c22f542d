"""dispatch benchmarks: speed and memory as ratios against naive peers, measured side by side.

Run from the repository root::

    .venv/bin/python benchmarks/bench.py            # full run, under 3 minutes on a quiet 2-core box
    .venv/bin/python benchmarks/bench.py --quick    # smaller sizes, under 40 s

Every timed variant runs in interleaved rounds (the machine is shared and noisy), and the table
gives the median over the rounds with min..max, plus the ratio of the medians. All network
traffic goes to a sink this script starts as its own child, bound to 127.0.0.1, and stops by pid.
Fixtures (a ~3,000-word Markdown article, subscriber lists) are generated in a temporary folder.
See benchmarks/README.md for what each row means.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import dataclasses
import gc
import itertools
import os
import platform
import random
import re
import shutil
import signal
import smtplib
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import tracemalloc
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from email.message import EmailMessage
from email.policy import SMTP
from pathlib import Path
from typing import Any

import jinja2

from dispatch import ExitCode, SendOptions, Settings, Subscriber, SubscriberList, plan_issue, run_send
from dispatch.campaign import Issue
from dispatch.message import unsubscribe_link
from dispatch.render import Field, builtin_template_dir, column_key, inline_css
from dispatch.state import journal as j

SMTP_SINK = Path("/usr/sbin/smtp-sink")
LOOPBACK = "127.0.0.1"
ENV = {
    "DISPATCH_FROM": "Newsroom <news@example.org>",
    "DISPATCH_REPLY_TO": "editors@example.org",
    "DISPATCH_UNSUBSCRIBE_URL": "https://example.org/unsubscribe?email={email}",
    "DISPATCH_UNSUBSCRIBE_MAILTO": "unsubscribe@example.org",
    "DISPATCH_ORGANIZATION": "Example Foundation",
    "DISPATCH_POSTAL_ADDRESS": "1 Example Street, Springfield",
    "DISPATCH_SMTP_HOST": LOOPBACK,
    "DISPATCH_SMTP_SECURITY": "none",
    "DISPATCH_RETRY_DELAY": "0.01",
    "DISPATCH_SMTP_TIMEOUT": "30",
}


# --------------------------------------------------------------------------- fixtures

VOCABULARY = """the a of and to in policy region security forces government agreement election militia
coalition pressure strategy withdrawal presence advisory training minister parliament border economy
oil trade reform stability alliance talks envoy sanctions ceasefire capital province analysts observers
report budget reconstruction water energy drought migration youth protest court tribunal mandate"""
WORDS = VOCABULARY.split()
NAMES = ["Ada Lovelace", "Grace Hopper", "Katherine Johnson", "Hedy Lamarr", "Leïla Sadri", "Zoë Ørsted"]
CITIES = ["Paris", "London", "Vienna", "Tehran", "Hampton", "Arlington", "São Paulo"]


def _sentence(rng: random.Random, words: int) -> str:
    text = " ".join(rng.choice(WORDS) for _ in range(words))
    return text[0].upper() + text[1:] + "."


def write_article(path: Path) -> None:
    """A deterministic ~3,000-word Markdown issue: 30 paragraphs (each with a link, strong and
    em), 4 subheads, a block quote and a list; front matter with motto, author and date."""
    rng = random.Random(2026)
    out = [
        "---",
        "title: As elections approach, a thin line between old wars and new rivals",
        "subtitle: What the end of combat missions means for the region",
        "author: Alessandro Minuto-Rizzo",
        "date: 2026-11-25",
        "motto: The spirit of our endeavour is, to strive, to seek, to find and not to yield",
        "motto_attribution: Alfred Tennyson",
        "---",
        "",
    ]
    for i in range(30):
        if i % 8 == 4:
            out += [f"## {_sentence(rng, 5)[:-1]}", ""]
        if i == 12:
            out += [f"> {_sentence(rng, 24)}", ""]
        if i == 20:
            out += [f"- {_sentence(rng, 8)}" for _ in range(4)] + [""]
        parts = [_sentence(rng, rng.randint(9, 16)) for _ in range(7)]
        parts[1] = f"It is **{parts[1][:-1]}**, and *{_sentence(rng, 4)[:-1]}*."
        parts[4] = f"[{parts[4][:-1]}](https://example.org/analysis/{i}?src=newsletter)."
        out += [" ".join(parts), ""]
    path.write_text("\n".join(out), encoding="utf-8")


def write_subscribers(path: Path, rows: int, *, seed: int = 7) -> None:
    """``rows`` unique valid subscribers: email, name, city, signup_date, plan."""
    rng = random.Random(seed)
    with path.open("w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["email", "name", "city", "signup_date", "plan"])
        for i in range(rows):
            name = NAMES[i % len(NAMES)]
            local = name.split()[0].lower().encode("ascii", "ignore").decode() or "reader"
            writer.writerow(
                [
                    f"{local}.{i}@example.org",
                    name,
                    rng.choice(CITIES),
                    f"20{rng.randint(15, 26)}-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d}",
                    rng.choice(("free", "pro", "team")),
                ]
            )


def settings(**extra: str) -> Settings:
    return Settings.from_mapping({**ENV, **extra})


def recipients(issue: Issue, count: int) -> list[Subscriber]:
    subs = [s for s in itertools.islice(issue.subscribers, count) if isinstance(s, Subscriber)]
    assert len(subs) == count, f"fixture list has fewer than {count} valid rows"
    return subs


# --------------------------------------------------------------------------- the naive peers


class _Row:
    """``subscriber.<column>`` with real values, for the naive per-recipient render."""

    def __init__(self, values: Mapping[str, str]) -> None:
        self._values = dict(values)

    def __getattr__(self, name: str) -> str:
        if name.startswith("_"):
            raise AttributeError(name)
        return self._values[name]

    def __getitem__(self, name: str) -> str:
        return self._values[column_key(name)]


def _env(*, autoescape: bool) -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(builtin_template_dir()),
        autoescape=autoescape,
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["otherwise"] = lambda value, fallback: value or fallback
    return env


class NaiveRenderer:
    """What a mailer without "inline once" does: render the templates with this recipient's
    values, then inline the CSS of that render with premailer (dispatch.render.inline_css)."""

    def __init__(self, issue: Issue) -> None:
        self.issue = issue
        self.html = _env(autoescape=True).get_template("email.html")
        self.text = _env(autoescape=False).get_template("email.txt")
        s = issue.settings
        self.base = {
            "article": issue.article,
            "subject": issue.subject,
            "preheader": issue.article.summary,
            "organization": s.organization,
            "postal_address": s.postal_address,
            "meta": issue.article.meta,
            "test_send": False,
        }

    def bodies(self, sub: Subscriber) -> tuple[str, str]:
        values = {column_key(k): v for k, v in sub.fields.items()}
        values |= {"email": sub.email, "name": sub.name}
        values["unsubscribe_url"] = self.issue.factory.unsubscribe_target(sub.email)
        context = {**self.base, **values, "subscriber": _Row(values)}
        return inline_css(self.html.render(context)), self.text.render(context)

    def message(self, sub: Subscriber) -> bytes:
        html, text = self.bodies(sub)
        factory = self.issue.factory
        mid = factory.message_id(sub.key)
        return factory.build(email=sub.email, name=sub.name, text=text, html=html, message_id=mid)


def stdlib_message(issue: Issue, sub: Subscriber, text: str, html: str) -> bytes:
    """The same message built the usual way: EmailMessage(policy=SMTP), the same headers and
    bodies, text/plain then text/html in multipart/alternative."""
    factory = issue.factory
    msg = EmailMessage(policy=SMTP)
    msg["From"] = str(factory.sender)
    if factory.reply_to is not None:
        msg["Reply-To"] = str(factory.reply_to)
    msg["To"] = f"{sub.name} <{sub.email}>" if sub.name else sub.email
    msg["Subject"] = factory.subject
    msg["Date"] = datetime.now().astimezone()
    msg["Message-ID"] = factory.message_id(sub.key)
    url = unsubscribe_link(issue.settings.unsubscribe_url, sub.email)
    msg["List-Unsubscribe"] = f"<{url}>, <mailto:{issue.settings.unsubscribe_mailto}?subject=unsubscribe>"
    msg["List-Unsubscribe-Post"] = "List-Unsubscribe=One-Click"
    msg.set_content(text)
    msg.add_alternative(html, subtype="html")
    return msg.as_bytes()


def jinja_source(parts: Sequence[str | Field]) -> str:
    """The already-inlined issue as a Jinja template (a mail-merge tool's input)."""
    out = []
    for part in parts:
        if isinstance(part, Field):
            out.append(f"{{{{ v[{part.name!r}] or {part.fallback!r} }}}}")
        else:
            out.append("{% raw %}" + part + "{% endraw %}")
    return "".join(out)


# --------------------------------------------------------------------------- timing


@dataclasses.dataclass
class Row:
    section: str
    label: str
    samples: list[float]
    unit: str
    digits: int = 1
    note: str = ""

    @property
    def median(self) -> float:
        return statistics.median(self.samples)


@dataclasses.dataclass
class Ratio:
    section: str
    label: str
    value: float
    spread: tuple[float, float] | None = None


@dataclasses.dataclass
class Report:
    rows: list[Row | Ratio] = dataclasses.field(default_factory=list)
    notes: list[str] = dataclasses.field(default_factory=list)

    def add(self, row: Row) -> Row:
        self.rows.append(row)
        return row

    def ratio(self, section: str, label: str, top: Row, bottom: Row) -> None:
        """The median of the per-round ratios (the variants ran side by side in each round),
        with their min..max; a single measurement on each side gives the plain ratio."""
        pairs = [a / b for a, b in zip(top.samples, bottom.samples, strict=True)]
        spread = (min(pairs), max(pairs)) if len(pairs) > 1 else None
        self.rows.append(Ratio(section, label, statistics.median(pairs), spread))


def timed_rounds(
    variants: Mapping[str, Callable[[], object]], rounds: int, target: float
) -> dict[str, list[float]]:
    """Seconds per call of each variant: calibrated batches of about ``target`` seconds, the
    variants interleaved round by round (rotating the order), one sample per round."""
    sizes: dict[str, int] = {}
    for name, fn in variants.items():
        fn()  # warm up
        n, spent = 1, 0.0
        while True:
            start = time.perf_counter()
            for _ in range(n):
                fn()
            spent = time.perf_counter() - start
            if spent >= target / 4 or n >= 1 << 20:
                break
            n *= 4
        sizes[name] = max(1, round(n * target / max(spent, 1e-9)))
    samples: dict[str, list[float]] = {name: [] for name in variants}
    names = list(variants)
    for r in range(rounds):
        for name in names[r % len(names) :] + names[: r % len(names)]:
            fn, n = variants[name], sizes[name]
            start = time.perf_counter()
            for _ in range(n):
                fn()
            samples[name].append((time.perf_counter() - start) / n)
    return samples


def cycling(items: Sequence[Any]) -> Callable[[], Any]:
    it = itertools.cycle(items)
    return lambda: next(it)


# --------------------------------------------------------------------------- 1 and 2: per recipient


def bench_per_recipient(report: Report, issue: Issue, subs: list[Subscriber], cfg: Config) -> None:
    naive = NaiveRenderer(issue)
    sample = subs[0]
    # The two paths must produce the same bodies (premailer output is deterministic).
    ours_html, ours_text = issue.bodies(sample)
    naive_html, naive_text = naive.bodies(sample)
    assert ours_text == naive_text, "naive text render differs from dispatch's"
    same_html = ours_html == naive_html
    report.notes.append(
        f"1: one recipient's HTML, inlined once per issue vs per recipient: {len(ours_html.encode()):,} B "
        f"vs {len(naive_html.encode()):,} B ({'identical' if same_html else 'not byte-identical'})"
    )
    next_sub = cycling(subs)
    samples = timed_rounds(
        {
            "ours_msg": lambda: issue.message(next_sub()),
            "naive_msg": lambda: naive.message(next_sub()),
            "ours_bodies": lambda: issue.bodies(next_sub()),
            "naive_bodies": lambda: naive.bodies(next_sub()),
        },
        cfg.rounds,
        cfg.target,
    )
    us = {k: [v * 1e6 for v in vals] for k, vals in samples.items()}
    a = report.add(Row("1", "dispatch: issue.message(sub) (fill in + MIME)", us["ours_msg"], "µs/recipient"))
    b = report.add(Row("1", "naive: Jinja + premailer + MIME per recipient", us["naive_msg"], "µs/recipient"))
    report.ratio("1", "per-message cost, naive / dispatch", b, a)
    c = report.add(Row("1", "dispatch: issue.bodies(sub) (fill in only)", us["ours_bodies"], "µs/recipient"))
    d = report.add(Row("1", "naive: Jinja render + premailer inline", us["naive_bodies"], "µs/recipient"))
    report.ratio("1", "body cost, naive / dispatch", d, c)


def bench_mime(report: Report, issue: Issue, subs: list[Subscriber], cfg: Config) -> None:
    prepared = [(sub, *issue.bodies(sub)) for sub in subs[:64]]
    factory = issue.factory
    ours_size = len(issue.message(subs[0])[0])
    theirs_size = len(stdlib_message(issue, *prepared[0]))
    next_item = cycling(prepared)

    def ours() -> bytes:
        sub, html, text = next_item()
        return factory.build(
            email=sub.email, name=sub.name, text=text, html=html, message_id=factory.message_id(sub.key)
        )

    def theirs() -> bytes:
        sub, html, text = next_item()
        return stdlib_message(issue, sub, text, html)

    samples = timed_rounds({"ours": ours, "theirs": theirs}, cfg.rounds, cfg.target)
    a = report.add(
        Row("2", f"MessageFactory.build ({ours_size:,} B)", [v * 1e6 for v in samples["ours"]], "µs/msg")
    )
    b = report.add(
        Row(
            "2",
            f"EmailMessage(policy=SMTP) ({theirs_size:,} B)",
            [v * 1e6 for v in samples["theirs"]],
            "µs/msg",
        )
    )
    report.ratio("2", "MIME build, EmailMessage / MessageFactory", b, a)


# --------------------------------------------------------------------------- 3: memory


def _stream(path: Path, limit: int | None = None) -> int:
    items = SubscriberList(path)
    return sum(isinstance(item, Subscriber) for item in itertools.islice(items, limit))


def _listed(path: Path, limit: int | None = None) -> int:
    with path.open(encoding="utf-8", newline="") as handle:
        rows = list(itertools.islice(csv.DictReader(handle), limit))
    return len(rows)


def _peak(fn: Callable[[], int]) -> tuple[int, int]:
    gc.collect()
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        count = fn()
        return tracemalloc.get_traced_memory()[1], count
    finally:
        tracemalloc.stop()


def bench_memory(report: Report, folder: Path, cfg: Config) -> None:
    path = folder / f"subscribers_{cfg.rows}.csv"
    write_subscribers(path, cfg.rows)
    size = path.stat().st_size
    # tracemalloc peaks are deterministic (one run each); tracemalloc slows the stream ~10x,
    # so the time per row comes from separate untraced, interleaved passes.
    peak_list, n_list = _peak(lambda: _listed(path))
    peak_stream, n_stream = _peak(lambda: _stream(path))
    assert n_list == n_stream == cfg.rows, (n_list, n_stream)
    a = report.add(Row("3", f"SubscriberList stream, {cfg.rows:,} rows: peak", [peak_stream / 1e6], "MB", 2))
    b = report.add(Row("3", f"list(csv.DictReader), {cfg.rows:,} rows: peak", [peak_list / 1e6], "MB", 2))
    a.note = f"{peak_stream / cfg.rows:,.0f} B/row"
    b.note = f"{peak_list / cfg.rows:,.0f} B/row"
    report.ratio("3", "peak memory, list / stream", b, a)
    timed = min(cfg.rows, cfg.timed_rows)
    samples: dict[str, list[float]] = {"stream": [], "list": []}
    for r in range(cfg.rounds_memory):
        order = ("stream", "list") if r % 2 == 0 else ("list", "stream")
        for name in order:
            fn = _stream if name == "stream" else _listed
            gc.collect()
            start = time.perf_counter()
            assert fn(path, timed) == timed
            samples[name].append((time.perf_counter() - start) / timed * 1e6)
    c = report.add(Row("3", "SubscriberList stream (validate + de-dup)", samples["stream"], "µs/row", 2))
    d = report.add(Row("3", "list(csv.DictReader) (no checks)", samples["list"], "µs/row", 2))
    report.ratio("3", "time per row, stream / list", c, d)
    report.notes.append(
        f"3: CSV of {cfg.rows:,} rows, {size / 1e6:.1f} MB; peaks by tracemalloc (one traced pass each); "
        f"time per row over the first {timed:,} rows, {cfg.rounds_memory} untraced rounds"
    )


# --------------------------------------------------------------------------- 4: throughput

AIOSMTPD_SINK = """
import signal, sys
from aiosmtpd.controller import Controller

class Discard:
    async def handle_DATA(self, server, session, envelope):
        return "250 2.0.0 OK"

controller = Controller(Discard(), hostname="127.0.0.1", port=int(sys.argv[1]))
controller.start()
print("ready", flush=True)
signal.sigwait({signal.SIGTERM, signal.SIGINT})
controller.stop()
"""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((LOOPBACK, 0))
        return int(sock.getsockname()[1])


class Sink:
    """A discarding SMTP server on 127.0.0.1, run as a child process and stopped by its pid."""

    def __init__(self, kind: str, folder: Path) -> None:
        self.kind = kind
        self.port = free_port()
        self.log = folder / f"sink-{self.port}.log"
        if kind == "smtp-sink":
            cmd = [str(SMTP_SINK), "-c"]
            if os.geteuid() == 0:
                cmd += ["-u", "nobody"]
            cmd += [f"{LOOPBACK}:{self.port}", "256"]
        else:
            cmd = [sys.executable, "-c", AIOSMTPD_SINK, str(self.port)]
        with self.log.open("wb") as out:
            self.proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT)
        self._wait_ready()

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.kind} exited: {self.log.read_text(errors='replace')}")
            with contextlib.suppress(OSError), socket.create_connection((LOOPBACK, self.port), timeout=1):
                return
            time.sleep(0.05)
        raise RuntimeError(f"{self.kind} did not start listening on {LOOPBACK}:{self.port}")

    def delivered(self) -> int | None:
        """smtp-sink's message counter (from ``-c``); None for the aiosmtpd sink."""
        if self.kind != "smtp-sink":
            return None
        found = re.findall(rb"mesg=(\d+)", self.log.read_bytes())
        return int(found[-1]) if found else 0

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                os.kill(self.proc.pid, signal.SIGKILL)
                self.proc.wait()


def mailmerge_like(issue: Issue, csv_path: Path, port: int) -> int:
    """mailmerge 2.3's loop: stream the CSV, render the pre-inlined issue with Jinja2, build an
    EmailMessage, and open a new SMTP connection for every message."""
    env_html = jinja2.Environment(autoescape=True)
    env_text = jinja2.Environment(autoescape=False)  # the text/plain part
    html_t = env_html.from_string(jinja_source(issue.rendered.html_parts))
    text_t = env_text.from_string(jinja_source(issue.rendered.text_parts))
    sender = issue.factory.sender.addr_spec
    sent = 0
    with csv_path.open(encoding="utf-8", newline="") as handle:
        for row in csv.DictReader(handle):
            sub = Subscriber(row["email"], row["name"], 0, row)
            values = {column_key(k): v for k, v in row.items()}
            values["unsubscribe_url"] = issue.factory.unsubscribe_target(sub.email)
            data = stdlib_message(issue, sub, text_t.render(v=values), html_t.render(v=values))
            with smtplib.SMTP(LOOPBACK, port, timeout=30) as smtp:
                smtp.sendmail(sender, [sub.email], data)
            sent += 1
    return sent


def bench_throughput(report: Report, folder: Path, article: Path, cfg: Config) -> None:
    kind = cfg.sink
    if kind == "auto":
        kind = "smtp-sink" if SMTP_SINK.exists() else "aiosmtpd"
    csv_path = folder / f"send_{cfg.messages}.csv"
    write_subscribers(csv_path, cfg.messages, seed=11)
    sink = Sink(kind, folder)
    try:
        base = plan_issue(article, csv_path, settings(DISPATCH_SMTP_PORT=str(sink.port)))
        assert base.stats.valid == cfg.messages
        issues = {n: dataclasses.replace(base, settings=settings(
            DISPATCH_SMTP_PORT=str(sink.port), DISPATCH_CONNECTIONS=str(n))) for n in (1, 4)}  # fmt: skip

        def dispatch_run(connections: int, journal: bool) -> int:
            state = Path(tempfile.mkdtemp(prefix="state-", dir=folder))
            book = j.Journal(state) if journal else None
            try:
                start = time.perf_counter()
                summary = run_send(issues[connections], book, SendOptions())
                spent = time.perf_counter() - start
            finally:
                if book is not None:
                    book.close()
                shutil.rmtree(state, ignore_errors=True)
            assert summary.exit_code is ExitCode.OK, summary.as_json()
            assert summary.sent_now == cfg.messages, summary.as_json()
            return round(cfg.messages / spent)

        def peer_run() -> int:
            start = time.perf_counter()
            assert mailmerge_like(base, csv_path, sink.port) == cfg.messages
            return round(cfg.messages / (time.perf_counter() - start))

        variants: dict[str, Callable[[], int]] = {
            "d1": lambda: dispatch_run(1, True),
            "d4": lambda: dispatch_run(4, True),
            "d1nj": lambda: dispatch_run(1, False),
            "mm": peer_run,
        }
        samples: dict[str, list[float]] = {k: [] for k in variants}
        names = list(variants)
        for r in range(cfg.rounds_send):
            for name in names[r % len(names) :] + names[: r % len(names)]:
                before = sink.delivered()
                samples[name].append(variants[name]())
                after = sink.delivered()
                if before is not None and after is not None:
                    assert after - before == cfg.messages, f"sink counted {after - before} for {name}"
    finally:
        sink.stop()
    size = len(base.message(recipients(base, 1)[0])[0])
    unit = "msgs/s"
    a = report.add(Row("4", "dispatch run_send + journal, 1 connection", samples["d1"], unit, 0))
    b = report.add(Row("4", "dispatch run_send + journal, 4 connections", samples["d4"], unit, 0))
    c = report.add(Row("4", "dispatch run_send, no journal, 1 connection", samples["d1nj"], unit, 0))
    m = report.add(Row("4", "mailmerge-like: reconnect per message", samples["mm"], unit, 0))
    report.ratio("4", "dispatch 1 conn / mailmerge-like", a, m)
    report.ratio("4", "dispatch 4 conn / mailmerge-like", b, m)
    report.ratio("4", "journal cost, no journal / journal (1 conn)", c, a)
    checked = "message counts checked at the sink" if kind == "smtp-sink" else "counts from 250 replies"
    cap = "" if kind == "smtp-sink" else "; aiosmtpd caps throughput near 660 msgs/s for 40 KB messages"
    report.notes.append(
        f"4: sink = {kind} on {LOOPBACK}:{sink.port}; N={cfg.messages} messages of ~{size:,} B per run, "
        f"{cfg.rounds_send} interleaved rounds; {checked}{cap}"
    )


# --------------------------------------------------------------------------- output


def _num(value: float, digits: int) -> str:
    return f"{value:,.{digits}f}"


def render_table(report: Report) -> str:
    lines = [
        "| # | measure | median | min..max | unit | note |",
        "| --- | --- | ---: | ---: | --- | --- |",
    ]
    for row in report.rows:
        if isinstance(row, Row):
            lo, hi = min(row.samples), max(row.samples)
            spread = f"{_num(lo, row.digits)}..{_num(hi, row.digits)}" if len(row.samples) > 1 else "(1 run)"
            lines.append(
                f"| {row.section} | {row.label} | {_num(row.median, row.digits)} | {spread} | {row.unit} "
                f"| {row.note} |"
            )
        else:
            spread = f"{row.spread[0]:,.2f}..{row.spread[1]:,.2f}" if row.spread else ""
            digits = 0 if row.value >= 100 else 2
            lines.append(
                f"| {row.section} | **ratio: {row.label}** | **{row.value:,.{digits}f}x** | {spread} "
                f"| {'per-round ratios' if row.spread else 'one run each'} | |"
            )
    return "\n".join(lines)


def machine() -> str:
    model = ""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    return f"{os.cpu_count()} CPUs ({model or platform.machine()}), {platform.system()} {platform.release()}"


def revision() -> str:
    """The checkout's commit (``-dirty`` with uncommitted changes), or "unknown"."""
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        done = subprocess.run(
            ["git", "describe", "--always", "--dirty"],
            cwd=Path(__file__).resolve().parent,
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        )
        return done.stdout.strip() or "unknown"
    return "unknown"


@dataclasses.dataclass(frozen=True)
class Config:
    quick: bool
    rounds: int
    target: float
    rows: int
    timed_rows: int
    rounds_memory: int
    messages: int
    rounds_send: int
    sink: str


def parse_args(argv: Sequence[str] | None) -> tuple[Config, set[str]]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="smaller sizes and fewer rounds (< 40 s)")
    parser.add_argument("--rows", type=int, help="subscriber CSV rows for the memory bench (200,000)")
    parser.add_argument("--messages", type=int, help="messages per send run (500)")
    parser.add_argument("--sink", choices=("auto", "smtp-sink", "aiosmtpd"), default="auto")
    parser.add_argument(
        "--only", default="1234", help="which sections to run, e.g. --only 14 (default: all of 1234)"
    )
    args = parser.parse_args(argv)
    if args.sink == "smtp-sink" and not SMTP_SINK.exists():
        parser.error(f"{SMTP_SINK} not found (Debian: apt-get install --no-install-recommends postfix)")
    quick = bool(args.quick)
    cfg = Config(
        quick=quick,
        rounds=5 if quick else 7,
        target=0.08 if quick else 0.25,
        rows=args.rows or (20_000 if quick else 200_000),
        timed_rows=10_000 if quick else 40_000,
        rounds_memory=3,
        messages=args.messages or (100 if quick else 500),
        rounds_send=3 if quick else 5,
        sink=args.sink,
    )
    return cfg, set(args.only)


def main(argv: Sequence[str] | None = None) -> int:
    cfg, sections = parse_args(argv)
    started = time.perf_counter()
    stamp = datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z")
    load_before = os.getloadavg()
    report = Report()

    def log(msg: str) -> None:
        print(f"[{time.perf_counter() - started:6.1f}s] {msg}", file=sys.stderr, flush=True)

    with tempfile.TemporaryDirectory(prefix="dispatch-bench-") as tmp:
        folder = Path(tmp)
        article = folder / "issue.md"
        write_article(article)
        issue_list = folder / "readers.csv"
        write_subscribers(issue_list, 512, seed=3)
        start = time.perf_counter()
        issue = plan_issue(article, issue_list, settings(DISPATCH_SMTP_PORT="2525"))
        planned = time.perf_counter() - start
        subs = recipients(issue, 512)
        report.notes.insert(
            0,
            f"fixture: {len(issue.article.body_text.split()):,}-word article; inlined HTML "
            f"{issue.rendered.html_size:,} B, text {issue.rendered.text_size:,} B; "
            f"plan_issue (render + premailer once, scan of a 512-row list): {planned * 1e3:,.0f} ms",
        )
        if "1" in sections:
            log("1: per-recipient cost")
            bench_per_recipient(report, issue, subs, cfg)
        if "2" in sections:
            log("2: MIME build")
            bench_mime(report, issue, subs, cfg)
        if "3" in sections:
            log(f"3: subscriber list memory ({cfg.rows:,} rows)")
            bench_memory(report, folder, cfg)
        if "4" in sections:
            log(f"4: send throughput ({cfg.messages} messages per run)")
            bench_throughput(report, folder, article, cfg)
    elapsed = time.perf_counter() - started
    load_after = os.getloadavg()
    print(f"dispatch benchmarks{' (--quick)' if cfg.quick else ''}: {stamp}")
    print(f"machine: {machine()}; Python {platform.python_version()}; dispatch at {revision()}")
    print(
        f"load average 1 min: {load_before[0]:.2f} at start, {load_after[0]:.2f} at end; "
        f"elapsed {elapsed:.0f} s; timing rounds: {cfg.rounds} (1, 2), {cfg.rounds_memory} (3), "
        f"{cfg.rounds_send} (4)"
    )
    print()
    print(render_table(report))
    print()
    for note in report.notes:
        print(f"- {note}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
