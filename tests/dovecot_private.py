"""A real, private Dovecot IMAP server (Debian's dovecot-imapd) for the tests: one user, plain
IMAP on a free 127.0.0.1 port and, with a certificate, IMAPS on another; started with
``dovecot -c FILE`` (it daemonises) and stopped with ``doveadm -c FILE stop``."""

from __future__ import annotations

import imaplib
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import trustme

from tests.smtp_servers import free_port

DOVECOT = shutil.which("dovecot") or "/usr/sbin/dovecot"
DOVEADM = shutil.which("doveadm") or "/usr/bin/doveadm"
AVAILABLE = Path(DOVECOT).exists() and Path(DOVEADM).exists() and os.geteuid() == 0
USER, PASSWORD = "bounces", "imap-Pa55-word"


class PrivateDovecot:
    """One private instance with one mailbox, ``USER``/``PASSWORD``."""

    def __init__(self, ca: trustme.CA | None = None) -> None:
        self.root = Path(tempfile.mkdtemp(prefix="dispatch-dovecot-", dir="/tmp"))
        self.root.chmod(0o755)
        self.port, self.tls_port = free_port(), free_port()
        nobody = pwd.getpwnam("nobody")
        for name in ("run", "state", "mail", "home"):
            (self.root / name).mkdir()
            (self.root / name).chmod(0o755)  # whatever the umask (a test may leave it 077)
        for name in ("mail", "home"):
            shutil.chown(self.root / name, nobody.pw_uid, nobody.pw_gid)
        (self.root / "passwd").write_text(f"{USER}:{{PLAIN}}{PASSWORD}\n", encoding="utf-8")
        ssl_lines = "ssl = no\n"
        if ca is not None:
            cert = ca.issue_cert("127.0.0.1", "localhost")
            cert.private_key_and_cert_chain_pem.write_to_path(str(self.root / "server.pem"))
            ssl_lines = f"ssl = yes\nssl_cert = <{self.root}/server.pem\nssl_key = <{self.root}/server.pem\n"
        self.config = self.root / "dovecot.conf"
        self.config.write_text(
            f"""protocols = imap
listen = 127.0.0.1
base_dir = {self.root}/run
state_dir = {self.root}/state
log_path = {self.root}/log
info_log_path = {self.root}/log
{ssl_lines}disable_plaintext_auth = no
auth_mechanisms = plain login
mail_location = maildir:{self.root}/mail/%u
passdb {{
  driver = passwd-file
  args = {self.root}/passwd
}}
userdb {{
  driver = static
  args = uid=nobody gid=nogroup home={self.root}/home/%u
}}
service imap-login {{
  inet_listener imap {{
    address = 127.0.0.1
    port = {self.port}
  }}
  inet_listener imaps {{
    address = 127.0.0.1
    port = {self.tls_port if ca is not None else 0}
  }}
}}
service pop3-login {{
  inet_listener pop3 {{
    port = 0
  }}
  inet_listener pop3s {{
    port = 0
  }}
}}
""",
            encoding="utf-8",
        )

    def start(self) -> PrivateDovecot:
        """Start it and wait until it greets."""
        for path in self.root.iterdir():
            if path.is_file():
                path.chmod(0o644)
        # It daemonises: its output is not waited for (the daemon keeps the pipes open).
        quiet = subprocess.DEVNULL
        subprocess.run(
            [DOVECOT, "-c", str(self.config)], check=True, stdin=quiet, stdout=quiet, stderr=quiet, timeout=60
        )
        try:
            return self._wait()
        except BaseException:
            self.stop()
            raise

    def _wait(self) -> PrivateDovecot:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1) as sock:
                    if sock.recv(100).startswith(b"* OK"):
                        return self
            except OSError:
                time.sleep(0.1)
        raise RuntimeError(f"the private Dovecot did not answer: {self.log()[-2000:]}")

    def stop(self) -> None:
        """Stop it and remove its folder."""
        subprocess.run(
            [DOVEADM, "-c", str(self.config), "stop"], capture_output=True, timeout=60, check=False
        )
        shutil.rmtree(self.root, ignore_errors=True)

    def log(self) -> str:
        path = self.root / "log"
        return path.read_text(encoding="utf-8", errors="replace") if path.exists() else ""

    def env(self) -> dict[str, str]:
        """Settings that read its INBOX over plain IMAP (to 127.0.0.1 only)."""
        return {"DISPATCH_IMAP_HOST": "127.0.0.1", "DISPATCH_IMAP_PORT": str(self.port),
                "DISPATCH_IMAP_SECURITY": "none", "DISPATCH_IMAP_USER": USER,
                "DISPATCH_IMAP_PASSWORD": PASSWORD, "DISPATCH_IMAP_FOLDER": "INBOX"}  # fmt: skip

    def client(self) -> imaplib.IMAP4:
        conn = imaplib.IMAP4("127.0.0.1", self.port, timeout=10)
        conn.login(USER, PASSWORD)
        return conn

    def append(self, *messages: bytes) -> None:
        """Put messages into the INBOX."""
        conn = self.client()
        try:
            for data in messages:
                kind, answer = conn.append("INBOX", None, None, data)
                assert kind == "OK", answer
        finally:
            conn.logout()

    def count(self, folder: str) -> int:
        """How many messages a folder holds (0 when it does not exist)."""
        conn = self.client()
        try:
            kind, data = conn.select(f'"{folder}"', readonly=True)
            return int(data[0] or 0) if kind == "OK" else 0
        finally:
            conn.logout()
