"""A real, private Postfix (Debian's) for the tests: it listens on a free 127.0.0.1 port, relays
one domain to a next hop of the test's own (an aiosmtpd server that may refuse some readers),
and delivers the bounce domain's mail (``recipient_delimiter = +``) into a Maildir, where its
own RFC 3464 bounce reports land. The system instance is never touched; nothing listens on
port 25. Started and stopped by the test (``postfix -c DIR/conf start|stop``).
"""

from __future__ import annotations

import os
import pwd
import re
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

from tests.smtp_servers import free_port

MASTER_CF = Path("/etc/postfix/master.cf")
POSTFIX = shutil.which("postfix") or "/usr/sbin/postfix"
AVAILABLE = Path(POSTFIX).exists() and MASTER_CF.exists() and os.geteuid() == 0


def _master_cf(port: int) -> str:
    """Debian's master.cf with the smtpd on 127.0.0.1:PORT and no service chrooted."""
    lines = []
    for line in MASTER_CF.read_text(encoding="utf-8").splitlines():
        fields = line.split()
        if line[:1].strip() and not line.startswith("#") and len(fields) >= 8:
            if fields[0] == "smtp" and fields[1] == "inet":
                fields[0] = f"127.0.0.1:{port}"
            elif fields[1] == "inet":
                continue  # submission, smtps… stay off
            fields[4] = "n"
            lines.append(" ".join(fields))
            continue
        lines.append(line)
    return "\n".join(lines) + "\n"


class PrivatePostfix:
    """One private instance; ``relay_to`` is the next hop for ``relay_domain``."""

    def __init__(self, relay_domain: str, relay_port: int, local_domain: str, extra: str = "") -> None:
        # Under /tmp (maillog_file_prefixes), and readable by the postfix user: pytest's own
        # tmp_path is private to root.
        self.root = Path(tempfile.mkdtemp(prefix="dispatch-postfix-", dir="/tmp"))
        self.root.chmod(0o755)
        self.port = free_port()
        self.conf = self.root / "conf"
        self.mail = self.root / "mail"
        self.maildir = self.mail / "box"
        self.log = self.root / "maillog"
        nobody = pwd.getpwnam("nobody")
        for folder in (self.conf, self.root / "queue", self.root / "data", self.mail):
            folder.mkdir()
            folder.chmod(0o755)  # whatever the umask (a test may leave it 077): the daemons are not root
        shutil.chown(self.root / "data", "postfix")
        shutil.chown(self.mail, nobody.pw_uid, nobody.pw_gid)
        (self.conf / "master.cf").write_text(_master_cf(self.port), encoding="utf-8")
        (self.conf / "main.cf").write_text(
            f"""compatibility_level = 3.6
queue_directory = {self.root}/queue
data_directory = {self.root}/data
mail_owner = postfix
inet_interfaces = 127.0.0.1
inet_protocols = ipv4
myhostname = relay.example.net
mydomain = example.net
myorigin = $myhostname
mydestination =
mynetworks = 127.0.0.0/8
smtpd_relay_restrictions = permit_mynetworks, reject
relay_domains = {relay_domain}
transport_maps = inline:{{ {relay_domain}=smtp:[127.0.0.1]:{relay_port} }}
smtp_dns_support_level = disabled
smtp_tls_security_level = none
virtual_mailbox_domains = {local_domain}
virtual_mailbox_base = {self.mail}
virtual_mailbox_maps = static:box/
virtual_uid_maps = static:{nobody.pw_uid}
virtual_gid_maps = static:{nobody.pw_gid}
recipient_delimiter = +
alias_maps =
alias_database =
local_transport = error:5.1.1 no local delivery here
default_transport = error:5.1.2 no other destinations here
maillog_file = {self.log}
maillog_file_prefixes = /tmp
queue_run_delay = 1s
minimal_backoff_time = 1s
maximal_backoff_time = 2s
biff = no
{extra}""",
            encoding="utf-8",
        )

    def start(self) -> PrivatePostfix:
        """Start it and wait until its smtpd answers (stopped again if it does not)."""
        for name in ("main.cf", "master.cf"):
            (self.conf / name).chmod(0o644)
        done = subprocess.run(
            [POSTFIX, "-c", str(self.conf), "start"], capture_output=True, timeout=60, check=False
        )
        if done.returncode:
            self.stop()
            raise RuntimeError(f"postfix start failed: {done.stderr.decode(errors='replace')[-2000:]}")
        try:
            return self._wait()
        except BaseException:
            self.stop()
            raise

    def _wait(self) -> PrivatePostfix:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1) as sock:
                    if sock.recv(100).startswith(b"220"):
                        return self
            except OSError:
                time.sleep(0.1)
        raise RuntimeError(f"the private Postfix did not answer on {self.port}: {self.log_text()[-2000:]}")

    def stop(self) -> None:
        """Stop it and remove its folder."""
        subprocess.run([POSTFIX, "-c", str(self.conf), "stop"], capture_output=True, timeout=60, check=False)
        shutil.rmtree(self.root, ignore_errors=True)

    def env(self) -> dict[str, str]:
        """Settings that send through it."""
        return {"DISPATCH_SMTP_HOST": "127.0.0.1", "DISPATCH_SMTP_PORT": str(self.port),
                "DISPATCH_SMTP_SECURITY": "none", "DISPATCH_SMTP_TIMEOUT": "20"}  # fmt: skip

    def log_text(self) -> str:
        """The mail log so far."""
        return self.log.read_text(encoding="utf-8", errors="replace") if self.log.exists() else ""

    def delivered(self) -> list[Path]:
        """The messages in its Maildir (new and cur)."""
        return sorted(p for sub in ("new", "cur") for p in (self.maildir / sub).glob("*") if p.is_file())

    def wait_for(self, count: int, *, timeout: float = 30.0) -> list[Path]:
        """Wait until the Maildir holds ``count`` messages (the bounce reports), and the queue
        is empty of them."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = self.delivered()
            if len(found) >= count:
                return found
            time.sleep(0.2)
        raise AssertionError(
            f"{len(self.delivered())} of {count} messages arrived; log:\n{self.log_text()[-3000:]}"
        )

    def statuses(self) -> dict[str, str]:
        """``to=<address>`` → its last ``status=`` in the log (sent, deferred, bounced)."""
        found: dict[str, str] = {}
        for to, status in re.findall(r"to=<([^>]+)>.*? status=(\w+)", self.log_text()):
            found[to] = status
        return found
