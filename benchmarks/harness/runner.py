"""What every section shares: the configuration, the fixtures, and how dispatch is driven
(a real ``dispatch send`` process; only section 5 calls the library)."""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import shutil
import sys
import traceback
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness.fixtures import SETTINGS
from harness.procs import Measured, SmtpSink, dumped_message, run_measured
from harness.report import Report

Log = Callable[[str], None]


@dataclass(frozen=True)
class Config:
    quick: bool
    recipients: int  # the send list (sections 1, 2, 5, 6, 7)
    rounds: int  # interleaved rounds of the send sections (1, 5, 6, 7)
    postfix_rounds: int
    dry_rows: int
    dry_runs: int
    dry_timeout: float  # seconds; a slower dry run is stopped and reported as too slow
    startup_rounds: int
    suppressed: int
    import_runs: int
    paragraphs: int
    sections: frozenset[str]


@dataclass
class Bench:
    cfg: Config
    repo: Path
    work: Path  # benchmarks/.work: kept between runs (mailmerge virtualenv, cached lists)
    run: Path  # benchmarks/.work/run: this run's files, emptied at the start
    article: Path
    send_list: Path
    one_list: Path
    env_file: Path
    mailmerge: Path
    report: Report
    log: Log
    cli: Path | None = None  # --dispatch: another dispatch executable to measure
    wire: dict[str, int] = field(default_factory=dict)  # message sizes on the wire, by variant
    # The state folder's cache after the dry run (premailer's inlined HTML), copied into
    # every fresh state folder unless a run asks for a cold one: a send after its dry run.
    dry_run_cache: Path | None = None
    segments: Path | None = None  # the two-segment template folder, and its dry run's cache
    segments_cache: Path | None = None
    _states: Iterator[int] = field(default_factory=itertools.count)

    @property
    def dispatch(self) -> list[str]:
        """``--dispatch``, else the console script next to this Python, else ``python -m dispatch``."""
        if self.cli is not None:
            return [str(self.cli)]
        script = Path(sys.executable).parent / "dispatch"
        return [str(script)] if script.exists() else [sys.executable, "-m", "dispatch"]

    def env(self, **extra: str) -> dict[str, str]:
        """This environment without any DISPATCH_* setting of the caller's, plus ``extra``."""
        base = {k: v for k, v in os.environ.items() if not k.startswith("DISPATCH_")}
        return {**base, **extra}

    def fresh_state(self, *, warm: bool = True, cache: Path | None = None) -> Path:
        """An empty state folder; ``warm``: holding what the issue's dry run left in its cache
        (``cache``: that of another dry run)."""
        path = self.run / "state" / f"s{next(self._states)}"
        path.mkdir(parents=True)
        cache = cache or self.dry_run_cache
        if warm and cache is not None:
            shutil.copytree(cache, path / cache.name)
        return path

    def send_cmd(self, subscribers: Path, connections: int, template: Path | None = None) -> list[str]:
        return [
            *self.dispatch, "send", str(self.article), "-s", str(subscribers), "--yes", "--json",
            "--env-file", str(self.env_file), "--connections", str(connections),
            *(["--template", str(template)] if template is not None else []),
        ]  # fmt: skip

    def cli_send(
        self,
        port: int,
        *,
        connections: int = 1,
        subscribers: Path | None = None,
        state: Path | None = None,
        extra: Mapping[str, str] | None = None,
        expect: int | None = None,
        check: bool = True,
        warm: bool = True,
        template: Path | None = None,
        cache: Path | None = None,
    ) -> tuple[Measured, dict[str, Any]]:
        """One real ``dispatch send --yes --json`` process, journal on, in a fresh state folder
        (``warm``: as after the issue's dry run, or the dry run that left ``cache``) or
        ``state``, with the built-in templates or those in ``template``; checks its exit code
        and (with ``check``) that it sent ``expect`` messages, by default the whole send list."""
        folder = state or self.fresh_state(warm=warm, cache=cache)
        env = self.env(DISPATCH_SMTP_PORT=str(port), DISPATCH_STATE_DIR=str(folder), **(extra or {}))
        measured = run_measured(
            self.send_cmd(subscribers or self.send_list, connections, template), env=env, cwd=self.run
        )
        measured.check("dispatch send")
        summary: dict[str, Any] = json.loads(measured.stdout)
        want = self.cfg.recipients if expect is None else expect
        if check and summary.get("sent_now") != want:
            raise RuntimeError(f"dispatch send: sent_now={summary.get('sent_now')}, expected {want}")
        shutil.rmtree(folder, ignore_errors=True)
        return measured, summary

    def capture(self, sends: Sequence[Callable[[int], object]]) -> list[bytes]:
        """Run each of ``sends`` (given the port) against a dumping smtp-sink of its own, and
        return the messages as they arrived."""
        got = []
        for send in sends:
            dump = self.run / f"dump-{next(self._states)}"
            with SmtpSink(self.run, dump=dump) as sink:
                send(sink.port)
                sink.expect(0, 1, "capture")
            got.append(dumped_message(dump))
        return got


def rotated(names: Sequence[str], round_no: int) -> list[str]:
    """The variants in this round's order: rotated by one each round, so that no variant is
    always first (or always after the same neighbour)."""
    shift = round_no % len(names)
    return list(names[shift:]) + list(names[:shift])


def settings_mapping(**extra: str) -> dict[str, str]:
    return {**SETTINGS, **extra}


def guarded(b: Bench, section: str, title: str, run: Callable[[Bench], None]) -> None:
    """Run one section; if it fails, the table says so and the other sections still run."""
    b.log(f"{section}: {title}")
    try:
        run(b)
    except Exception as err:
        traceback.print_exc()
        b.report.missing(section, f"{title}: failed", f"{type(err).__name__}: {err}")
    with contextlib.suppress(OSError):
        shutil.rmtree(b.run / "state", ignore_errors=True)
