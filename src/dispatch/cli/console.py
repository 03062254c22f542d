"""The process and the terminal during a send: the collector quiet while the process starts,
a progress bar with rate and ETA, and signals that stop it cleanly. Nothing here runs without
a terminal except the collector's settings and the signal handling (cron needs them too)."""

from __future__ import annotations

import gc
import os
import signal
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from dispatch.errors import ExitCode

# Start-up (imports, settings, the plan) makes objects that live until the process ends: the
# collector's passes over them cost ~50 ms per run, and find nothing. Until the work starts,
# a pass comes only every STARTUP_GEN0 new objects; then what exists is set aside for good.
STARTUP_GEN0 = 100_000
_THRESHOLDS = gc.get_threshold()


def start_up() -> None:
    """The process starts: collect only every STARTUP_GEN0 new objects until :func:`work_starts`."""
    gc.set_threshold(STARTUP_GEN0, *_THRESHOLDS[1:])


def work_starts() -> None:
    """Start-up is over: what exists now stays (gc.freeze); collect as usual from here on. Does
    nothing where :func:`start_up` did not run (a command invoked inside another program): the
    threshold itself says whether the process is starting."""
    if gc.get_threshold()[0] == STARTUP_GEN0:
        gc.freeze()
        gc.set_threshold(*_THRESHOLDS)


def _say(line: str) -> None:
    sys.stderr.write(f"dispatch: {line}\n")
    sys.stderr.flush()


@contextmanager
def stop_on_signals(stop: threading.Event, last_words: Callable[[str], None] | None = None) -> Iterator[None]:
    """SIGINT/SIGTERM set ``stop``: the messages in flight finish and are recorded, then the run
    ends. A second signal leaves at once (the kernel frees the campaign lock as the process goes),
    after ``last_words`` (the ``--json`` line a cron log expects of every run) with what it says."""

    received: list[int] = []  # counted here: the event is also set by aborts and the daily limit

    def handler(signum: int, _frame: Any) -> None:
        received.append(signum)
        if len(received) > 1:
            said = "stopped at once; messages in flight will show as unknown"
            _say(said)
            if last_words is not None:
                last_words(said)
            sys.stdout.flush()
            os._exit(int(ExitCode.INTERRUPTED))
        stop.set()
        _say(f"{signal.Signals(signum).name}: finishing the messages in flight…")

    old = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for s, previous in old.items():
            signal.signal(s, previous)


@contextmanager
def progress_bar(total: int, *, enabled: bool) -> Iterator[Callable[[int], None] | None]:
    """A progress bar (messages, percentage, rate, ETA) on stderr, or None when ``enabled`` is
    false (no terminal, or ``--json``)."""
    if not enabled:
        yield None
        return
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TaskProgressColumn,
        TextColumn,
        TimeRemainingColumn,
    )  # fmt: skip

    rate = TextColumn("{task.fields[rate]}")
    columns = (TextColumn("sending"), BarColumn(), MofNCompleteColumn(), TaskProgressColumn(), rate,
               TimeRemainingColumn())  # fmt: skip
    with Progress(*columns, transient=True) as bar:
        task = bar.add_task("send", total=total, rate="")

        def advance(n: int) -> None:
            bar.advance(task, n)
            speed = bar.tasks[task].speed
            bar.update(task, rate=f"{speed:.1f} msg/s" if speed else "")

        yield advance
