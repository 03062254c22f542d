"""Child processes measured whole (wall clock, CPU and peak RSS from ``wait4``), and the C sink and
client from postfix. Every server is a child bound to 127.0.0.1 on a free port, stopped by its pid."""

from __future__ import annotations

import contextlib
import os
import pwd
import re
import signal
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from harness.fixtures import LOOPBACK

SMTP_SINK = Path("/usr/sbin/smtp-sink")
SMTP_SOURCE = Path("/usr/sbin/smtp-source")
GNU_TIME = Path("/usr/bin/time")


@dataclass(frozen=True)
class Measured:
    """One child process, start to exit: wall seconds, CPU seconds (user + system, its own and
    its waited-for children's) and peak resident set size in MB, as the kernel reports them."""

    wall: float
    cpu: float
    rss_mb: float
    returncode: int
    stdout: bytes
    stderr: bytes
    timed_out: bool = False

    def check(self, what: str) -> Measured:
        if self.returncode != 0:
            tail = (self.stderr or self.stdout).decode(errors="replace").strip().splitlines()[-3:]
            raise RuntimeError(f"{what} exited with {self.returncode}: {' | '.join(tail)}")
        return self


def run_measured(
    cmd: Sequence[str | Path],
    *,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
    keep_stdout: bool = True,
    timeout: float = 3600,
) -> Measured:
    """Run ``cmd`` to completion under GNU ``time`` and measure it: wall clock here, CPU from
    ``os.wait4`` (user + system, including what ``time`` waited for), peak RSS from ``time``'s %M.

    Why ``time`` in between: Linux carries the parent's RSS high-water mark into a child across
    fork/vfork + exec, so ``wait4`` on a child of this ~50 MB Python would never report less than
    ~50 MB. GNU ``time`` is a small process, and it reports its own child's peak. Output goes to
    files, not pipes (a chatty child never blocks). The child gets a process group of its own.
    After ``timeout`` seconds the group gets SIGINT (GNU time ignores it and still reports the
    peak so far; dispatch stops as on Ctrl-C), and SIGKILL 10 s later; if this script is
    interrupted the group is killed at once."""
    with _scratch() as out_path, _scratch() as err_path, _scratch() as rss_path:
        argv = [str(part) for part in cmd]
        if GNU_TIME.exists():
            argv = [str(GNU_TIME), "-f", "%M", "-o", str(rss_path), *argv]
        with (out_path if keep_stdout else Path(os.devnull)).open("wb") as out, err_path.open("wb") as err:
            start = time.perf_counter()
            proc = subprocess.Popen(
                argv, stdin=subprocess.DEVNULL, stdout=out, stderr=err,
                env=dict(env) if env is not None else None, cwd=cwd, start_new_session=True,
            )  # fmt: skip
            expired = threading.Event()

            def interrupt() -> None:
                expired.set()
                _signal_group(proc.pid, signal.SIGINT)
                if not finished.wait(10):
                    _signal_group(proc.pid, signal.SIGKILL)

            finished = threading.Event()
            timer = threading.Timer(timeout, interrupt)
            timer.daemon = True
            timer.start()
            try:
                _, status, usage = os.wait4(proc.pid, 0)
            except BaseException:
                _signal_group(proc.pid, signal.SIGKILL)
                os.wait4(proc.pid, 0)
                raise
            finally:
                finished.set()
                timer.cancel()
            wall = time.perf_counter() - start
        proc.returncode = os.waitstatus_to_exitcode(status)
        stdout = out_path.read_bytes() if keep_stdout else b""
        stderr = err_path.read_bytes()
        peak_kib = usage.ru_maxrss  # an upper bound (see above), only without GNU time
        with contextlib.suppress(OSError, ValueError, IndexError):
            peak_kib = int(rss_path.read_text().split()[-1])
    return Measured(
        wall=wall,
        cpu=usage.ru_utime + usage.ru_stime,
        rss_mb=peak_kib / 1024,
        returncode=proc.returncode,
        stdout=stdout,
        stderr=stderr,
        timed_out=expired.is_set(),
    )


def _signal_group(pid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, sig)


_SCRATCH_DIR: list[Path] = []


def set_scratch(folder: Path) -> None:
    """Where the captured output of measured children is written (the run's folder)."""
    folder.mkdir(parents=True, exist_ok=True)
    _SCRATCH_DIR[:] = [folder]


@contextlib.contextmanager
def _scratch() -> Iterator[Path]:
    folder = _SCRATCH_DIR[0] if _SCRATCH_DIR else Path(tempfile.gettempdir())
    path = folder / f"child-{os.getpid()}-{time.monotonic_ns()}.out"
    try:
        yield path
    finally:
        path.unlink(missing_ok=True)


def free_port() -> int:
    """A TCP port that is free on 127.0.0.1 right now (never 25: the kernel picks ephemeral ones)."""
    with socket.socket() as sock:
        sock.bind((LOOPBACK, 0))
        return int(sock.getsockname()[1])


def wait_listening(port: int, proc: subprocess.Popen[bytes], what: str, seconds: float = 15) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited with {proc.returncode} before listening on port {port}")
        with contextlib.suppress(OSError), socket.create_connection((LOOPBACK, port), timeout=1):
            return
        time.sleep(0.05)
    raise RuntimeError(f"{what} did not listen on {LOOPBACK}:{port} within {seconds:.0f} s")


def stop_pid(proc: subprocess.Popen[bytes], *, group: bool = False) -> None:
    """SIGTERM by pid (or to the child's own process group), then SIGKILL after 10 s."""
    if proc.poll() is not None:
        return
    kill = os.killpg if group else os.kill
    with contextlib.suppress(ProcessLookupError):
        kill(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            kill(proc.pid, signal.SIGKILL)
        proc.wait()


class SmtpSink:
    """postfix's ``smtp-sink -c`` on 127.0.0.1: accepts and discards, and counts messages.

    With ``dump`` (a folder), every message is also written there, one file each, as received."""

    def __init__(self, folder: Path, *, dump: Path | None = None) -> None:
        self.port = free_port()
        self.log = folder / f"smtp-sink-{self.port}.log"
        cmd = [str(SMTP_SINK), "-c"]
        if os.geteuid() == 0:
            cmd += ["-u", "nobody"]  # smtp-sink refuses to run as root without -u
        if dump is not None:
            dump.mkdir(parents=True, exist_ok=True)
            if os.geteuid() == 0:  # the sink writes as nobody
                nobody = pwd.getpwnam("nobody")
                os.chown(dump, nobody.pw_uid, nobody.pw_gid)
            cmd += ["-d", str(dump / "message-")]
        cmd += [f"{LOOPBACK}:{self.port}", "256"]
        with self.log.open("wb") as out:
            self.proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT)
        try:
            wait_listening(self.port, self.proc, "smtp-sink")
        except RuntimeError:
            self.stop()
            raise

    def cpu_seconds(self) -> float:
        """CPU the sink has used so far (user + system, from /proc): what the receiving side of
        each variant costs, since the sink is one process on the same cores."""
        fields = Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def messages(self) -> int:
        """The sink's ``mesg=`` counter (messages whose final dot it received)."""
        found = re.findall(rb"mesg=(\d+)", self.log.read_bytes())
        return int(found[-1]) if found else 0

    def expect(self, before: int, count: int, what: str) -> None:
        """Check that exactly ``count`` messages arrived since ``before`` (the counter is written
        when a session ends, so give it a moment)."""
        deadline = time.monotonic() + 5
        got = self.messages() - before
        while got < count and time.monotonic() < deadline:
            time.sleep(0.02)
            got = self.messages() - before
        if got != count:
            raise RuntimeError(f"{what}: smtp-sink counted {got} messages, expected {count}")

    def stop(self) -> None:
        stop_pid(self.proc)

    def __enter__(self) -> SmtpSink:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def smtp_source_cmd(port: int, *, messages: int, sessions: int, size: int) -> list[str]:
    """postfix's C client: ``sessions`` parallel sessions, each reusing its connection (-d),
    ``messages`` messages in all, each with a body of ``size`` bytes."""
    return [
        str(SMTP_SOURCE), "-d", "-s", str(sessions), "-m", str(messages), "-l", str(size),
        "-f", "news@example.org", "-t", "reader@example.com", "-M", "bench.example.org",
        f"{LOOPBACK}:{port}",
    ]  # fmt: skip


def dumped_message(dump: Path) -> bytes:
    """The one message in an ``smtp-sink -d`` folder as it was on the wire (CRLF line ends),
    without the sink's envelope lines (``X-Client-…``, ``X-…-Args``) and its ``Received`` header."""
    files = sorted(dump.iterdir())
    if len(files) != 1:
        raise RuntimeError(f"{dump}: expected one dumped message, found {len(files)}")
    lines = files[0].read_bytes().split(b"\n")
    i = 0
    while i < len(lines) and lines[i].startswith(b"X-"):
        i += 1
    if i < len(lines) and lines[i].startswith(b"Received: "):
        i += 1
        while i < len(lines) and lines[i][:1] in {b" ", b"\t"}:
            i += 1
    return b"\r\n".join(lines[i:]).rstrip(b"\r\n") + b"\r\n"
