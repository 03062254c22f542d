"""A private, real Postfix on 127.0.0.1 that queues every message and then discards it.

Its config_directory, queue_directory, data_directory and mail log live in the run's folder;
smtpd listens on a free high port on 127.0.0.1 only; every recipient goes to the ``discard``
transport. ``master`` runs in the foreground (``-d``) as this script's child, in its own process
group, and is stopped by its pid. Deliveries are counted from the mail log (``status=sent``)
once ``postqueue -p`` says the queue is empty."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import time
from pathlib import Path

from harness.fixtures import LOOPBACK
from harness.install import POSTFIX_MASTER
from harness.procs import free_port, stop_pid, wait_listening

MAIN_CF = """\
compatibility_level = 3.6
queue_directory = {work}/spool
data_directory = {work}/data
command_directory = /usr/sbin
daemon_directory = /usr/lib/postfix/sbin
shlib_directory = /usr/lib/postfix
meta_directory = /etc/postfix
mail_owner = postfix
setgid_group = postdrop
maillog_file = {work}/maillog
maillog_file_prefixes = {work}
myhostname = bench.example.org
mydomain = example.org
mydestination =
relay_domains =
local_recipient_maps =
alias_maps =
alias_database =
inet_interfaces = {loopback}
inet_protocols = ipv4
mynetworks = 127.0.0.0/8
smtpd_relay_restrictions = permit_mynetworks, reject
smtpd_peername_lookup = no
default_transport = discard
relay_transport = discard
local_transport = discard
biff = no
"""

# Only the services a queue-and-discard relay uses; nothing chrooted; smtpd on one port only.
MASTER_CF = """\
{loopback}:{port} inet n - n - - smtpd
pickup    unix  n - n 60 1 pickup
cleanup   unix  n - n -  0 cleanup
qmgr      unix  n - n 300 1 qmgr
rewrite   unix  - - n -  - trivial-rewrite
bounce    unix  - - n -  0 bounce
defer     unix  - - n -  0 bounce
trace     unix  - - n -  0 bounce
verify    unix  - - n -  1 verify
flush     unix  n - n 1000? 0 flush
proxymap  unix  - - n -  - proxymap
showq     unix  n - n -  - showq
error     unix  - - n -  - error
retry     unix  - - n -  - error
discard   unix  - - n -  - discard
anvil     unix  - - n -  1 anvil
scache    unix  - - n -  1 scache
postlog   unix-dgram n - n - 1 postlogd
"""


_SENT = re.compile(rb"postfix/discard\[\d+\]: [^\n]* status=sent")


def unavailable_reason() -> str:
    """Why a private Postfix cannot be started here, or "" when it can."""
    if os.geteuid() != 0:
        return "needs root (postfix's master and its queue must be owned by root/postfix)"
    if not POSTFIX_MASTER.exists() or shutil.which("postfix") is None:
        return f"{POSTFIX_MASTER} not installed"
    return ""


class PrivatePostfix:
    def __init__(self, work: Path) -> None:
        self.work = work
        self.etc = work / "etc"
        self.port = free_port()
        self.maillog = work / "maillog"
        self._offset = 0
        self._count = 0
        self.etc.mkdir(parents=True, exist_ok=True)
        (work / "spool").mkdir(exist_ok=True)
        data = work / "data"
        data.mkdir(exist_ok=True)
        shutil.chown(data, "postfix")
        values = {"work": str(work), "loopback": LOOPBACK, "port": self.port}
        (self.etc / "main.cf").write_text(MAIN_CF.format(**values), encoding="utf-8")
        (self.etc / "master.cf").write_text(MASTER_CF.format(**values), encoding="utf-8")
        # `postfix check` creates the queue's subdirectories with their owners and modes.
        check = subprocess.run(
            ["postfix", "-c", str(self.etc), "check"], capture_output=True, text=True, check=False
        )
        if check.returncode != 0:
            raise RuntimeError(f"postfix check failed: {self._last_log_line() or check.stderr.strip()}")
        with (work / "master.out").open("wb") as out:
            self.proc = subprocess.Popen(
                [str(POSTFIX_MASTER), "-c", str(self.etc), "-d"],
                stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
            )  # fmt: skip
        try:
            wait_listening(self.port, self.proc, "postfix master")
        except RuntimeError as err:
            self.stop()
            raise RuntimeError(f"{err}: {self._last_log_line()}") from err

    def _last_log_line(self) -> str:
        if not self.maillog.exists():
            return ""
        lines = self.maillog.read_text(errors="replace").strip().splitlines()
        return lines[-1] if lines else ""

    def delivered(self) -> int:
        """Messages the discard transport has delivered so far (``status=sent`` log lines),
        read incrementally from the mail log."""
        if not self.maillog.exists():
            return 0
        with self.maillog.open("rb") as log:
            log.seek(self._offset)
            chunk = log.read()
        end = chunk.rfind(b"\n") + 1  # whole lines only
        self._count += len(_SENT.findall(chunk[:end]))
        self._offset += end
        return self._count

    def queue_empty(self) -> bool:
        done = subprocess.run(
            ["postqueue", "-c", str(self.etc), "-p"], capture_output=True, text=True, check=False
        )
        return "Mail queue is empty" in done.stdout

    def drain(self, before: int, count: int, what: str, seconds: float = 300) -> float:
        """Wait until the queue is empty and ``count`` more deliveries are logged; return the
        seconds it took."""
        start = time.perf_counter()
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            if self.delivered() - before >= count and self.queue_empty():
                break
            time.sleep(0.1)
        got = self.delivered() - before
        if got != count:
            raise RuntimeError(f"{what}: postfix delivered (discarded) {got} messages, expected {count}")
        return time.perf_counter() - start

    def stop(self) -> None:
        """SIGTERM to master's own process group (master and its children), by pid."""
        stop_pid(self.proc, group=True)

    def __enter__(self) -> PrivatePostfix:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
