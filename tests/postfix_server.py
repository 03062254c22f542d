"""A real Postfix of the tests' own: a private instance in a temporary folder, listening on
127.0.0.1 only, logging to a file of its own (``maillog_file``), never the system's.

    with postfix_relay(next_hop=server.port) as relay:     # relay every message to 127.0.0.1:PORT
        ... send through relay.env() ...
        relay.wait_for_log(r"status=sent", count=3)
        text = relay.log()

Without ``next_hop`` it discards every message after queueing it (the log still shows it
queued and "delivered"). ``mailbox_domain="news.example.org"`` keeps mail for that domain in
a Maildir (``relay.maildir``: ``new/`` holds what arrived), for bounce reports and replies.
Needs Debian's ``postfix`` package and root (Postfix starts as root and drops to its own user);
:data:`POSTFIX_MISSING` says why not when it cannot run, for ``pytest.mark.skipif``.
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path

from tests.smtp_servers import free_port

POSTFIX = shutil.which("postfix") or "/usr/sbin/postfix"
SYSTEM_MASTER_CF = Path("/etc/postfix/master.cf")


def _missing() -> str:
    if not Path(POSTFIX).exists() or not SYSTEM_MASTER_CF.exists():
        return "Postfix is not installed (apt-get install postfix; .ci/run installs it)"
    if os.geteuid() != 0:
        return "a private Postfix must be started as root"
    return ""


POSTFIX_MISSING = _missing()


@dataclass
class PostfixRelay:
    """A running private Postfix."""

    folder: Path
    port: int
    maillog: Path
    maildir: Path  # Maildir of ``mailbox_domain`` (new/ holds what arrived)

    @property
    def conf(self) -> Path:
        return self.folder / "conf"

    def env(self) -> dict[str, str]:
        """Settings that make dispatch send through this relay."""
        return {
            "DISPATCH_SMTP_HOST": "127.0.0.1",
            "DISPATCH_SMTP_PORT": str(self.port),
            "DISPATCH_SMTP_SECURITY": "none",
            "DISPATCH_SMTP_TIMEOUT": "10",
        }

    def log(self) -> str:
        """The log so far."""
        return self.maillog.read_text(encoding="utf-8", errors="replace") if self.maillog.exists() else ""

    def wait_for_log(self, pattern: str, *, count: int = 1, timeout: float = 15.0) -> list[str]:
        """Wait until ``pattern`` (a regular expression) matches ``count`` lines; those lines."""
        deadline = time.monotonic() + timeout
        while True:
            found = [line for line in self.log().splitlines() if re.search(pattern, line)]
            if len(found) >= count:
                return found
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"Postfix logged {len(found)} of {count} lines like {pattern!r}:\n{self.log()}"
                )
            time.sleep(0.05)

    def queue_empty(self) -> bool:
        """No message waits in the queue (delivered or discarded)."""
        return not any(
            p.is_file()
            for sub in ("incoming", "active", "deferred")
            for p in (self.folder / "queue" / sub).rglob("*")
        )

    def stop(self) -> None:
        """Stop it and wait for its master process to end."""
        pid_file = self.folder / "queue" / "pid" / "master.pid"
        pid = int(pid_file.read_text().split()[0]) if pid_file.exists() else 0
        subprocess.run([POSTFIX, "-c", str(self.conf), "stop"], capture_output=True, check=False, timeout=30)
        deadline = time.monotonic() + 15
        while pid and time.monotonic() < deadline:
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                return
            time.sleep(0.05)


def _master_cf(port: int) -> str:
    """Debian's master.cf with the smtpd service on 127.0.0.1:PORT and nothing chrooted."""
    lines = []
    for line in SYSTEM_MASTER_CF.read_text(encoding="utf-8").splitlines():
        fields = line.split()
        if line[:1] in ("", "#", " ", "\t") or len(fields) < 8:
            lines.append(line)  # a comment, or a service's continued arguments
            continue
        if fields[:2] == ["smtp", "inet"]:
            fields[0] = f"127.0.0.1:{port}"
        fields[4] = "n"
        lines.append("  ".join(fields[:7]) + "  " + " ".join(fields[7:]))
    return "\n".join(lines) + "\n"


def _main_cf(folder: Path, next_hop: int | None, mailbox_domain: str, extra: Mapping[str, str]) -> str:
    settings = {
        "compatibility_level": "3.6",
        "queue_directory": str(folder / "queue"),
        "data_directory": str(folder / "data"),
        "mail_owner": "postfix",
        "setgid_group": "postdrop",
        "myhostname": "relay.example.org",
        "inet_interfaces": "127.0.0.1",
        "inet_protocols": "ipv4",
        "mydestination": "",
        "mynetworks": "127.0.0.0/8",
        "smtpd_relay_restrictions": "permit_mynetworks, reject",
        "maillog_file": str(folder / "maillog"),
        "maillog_file_prefixes": str(folder),
        "smtp_dns_support_level": "disabled",
        "alias_maps": "",
        "alias_database": "",
        "smtpd_tls_security_level": "none",
        "smtp_tls_security_level": "none",
        "biff": "no",
    }
    if next_hop is None:
        settings.update({f"{kind}_transport": "discard:" for kind in ("default", "relay", "local")})
    else:
        settings["relayhost"] = f"[127.0.0.1]:{next_hop}"
    if mailbox_domain:
        uid, gid = _nobody()
        settings.update({
            "virtual_mailbox_domains": mailbox_domain, "virtual_mailbox_base": str(folder / "mail"),
            "virtual_mailbox_maps": "static:box/", "virtual_uid_maps": f"static:{uid}",
            "virtual_gid_maps": f"static:{gid}", "recipient_delimiter": "+",
        })  # fmt: skip
    else:
        settings["virtual_transport"] = "discard:"
    settings.update(extra)
    return "".join(f"{key} = {value}\n" for key, value in settings.items())


def _nobody() -> tuple[int, int]:
    import pwd  # POSIX only, like Postfix

    entry = pwd.getpwnam("nobody")
    return entry.pw_uid, entry.pw_gid


def _wait_listening(port: int, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        with suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=1) as sock:
            sock.recv(512)  # the greeting: smtpd is up
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"Postfix did not start listening on 127.0.0.1:{port}")
        time.sleep(0.05)


@contextmanager
def postfix_relay(
    *, next_hop: int | None = None, mailbox_domain: str = "", extra: Mapping[str, str] | None = None
) -> Iterator[PostfixRelay]:
    """Start a private Postfix on a free 127.0.0.1 port; stop it and remove its folder after.

    ``next_hop``: relay every message to the SMTP server on 127.0.0.1 at that port (else discard
    it); ``mailbox_domain``: keep that domain's mail in a Maildir; ``extra``: more main.cf lines.
    The folder has a short name under /tmp (Postfix's sockets live in it: a socket's path must
    stay under 108 bytes)."""
    if POSTFIX_MISSING:
        raise RuntimeError(POSTFIX_MISSING)
    folder = Path(tempfile.mkdtemp(prefix="pfx-", dir="/tmp"))
    port = free_port()
    for name in ("conf", "queue", "data", "mail"):
        (folder / name).mkdir()
    for each in (folder, folder / "conf", folder / "queue"):
        each.chmod(0o755)  # whatever the umask: Postfix's own user walks through them
    shutil.chown(folder / "data", "postfix")
    uid, gid = _nobody()
    os.chown(folder / "mail", uid, gid)
    (folder / "conf" / "master.cf").write_text(_master_cf(port), encoding="utf-8")
    (folder / "conf" / "main.cf").write_text(_main_cf(folder, next_hop, mailbox_domain, extra or {}), "utf-8")
    for each in (folder / "conf").iterdir():
        each.chmod(0o644)
    relay = PostfixRelay(folder, port, folder / "maillog", folder / "mail" / "box")
    try:
        started = subprocess.run(  # (with the usual umask, whatever the suite's is: Postfix makes its queue)
            ["/bin/sh", "-c", 'umask 022 && exec "$0" -c "$1" start', POSTFIX, str(relay.conf)],
            capture_output=True, text=True, check=False, timeout=60,
        )  # fmt: skip
        if started.returncode != 0:
            raise AssertionError(f"postfix start failed: {started.stdout}{started.stderr}")
        _wait_listening(port)
        yield relay
    finally:
        relay.stop()
        shutil.rmtree(folder, ignore_errors=True)
