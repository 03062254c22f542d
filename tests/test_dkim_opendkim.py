"""A real receiver checks the signatures: dispatch sends through a private Postfix whose smtpd
hands every message to Debian's OpenDKIM as a milter (verifying only), and relays it to an
aiosmtpd next hop; the Authentication-Results header OpenDKIM wrote must say dkim=pass for the
RSA and the Ed25519 signature of every message.

Postfix and OpenDKIM run as this test's children on 127.0.0.1 (never port 25), their
configuration, queue and logs in tmp_path; OpenDKIM takes the public keys from a file
(``TestDNSData``) instead of DNS. Needs root (Postfix's queue) and the postfix and opendkim
packages (.ci/run installs them); the test says so when it is skipped.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from dispatch.compose.dkim import Signatures, load_signer
from dispatch.compose.issue import plan_issue
from dispatch.send.delivery import SendOptions, run_send
from dispatch.send.transport import SmtpTransport
from dispatch.settings import Settings
from dispatch.state.journal import Journal
from tests.smtp_servers import Server, free_port
from tests.test_dkim_canon import dns_for, verifies
from tests.test_dkim_send import Key, dkim_env, issue_files, keys  # noqa: F401 - fixtures

MASTER = Path("/usr/lib/postfix/sbin/master")
OPENDKIM = Path("/usr/sbin/opendkim")


def _missing() -> str:
    if os.geteuid() != 0:
        return "needs root: Postfix's queue belongs to root and postfix"
    absent = [str(p) for p in (MASTER, OPENDKIM) if not p.exists()] + [
        name for name in ("postfix",) if shutil.which(name) is None
    ]
    return f"not installed: {', '.join(absent)} (.ci/run installs postfix and opendkim)" if absent else ""


pytestmark = pytest.mark.skipif(bool(_missing()), reason=_missing() or "ready")

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
myhostname = relay.example.net
mydomain = example.net
mydestination =
relay_domains =
local_recipient_maps =
alias_maps =
alias_database =
inet_interfaces = 127.0.0.1
inet_protocols = ipv4
mynetworks = 127.0.0.0/8
smtpd_relay_restrictions = permit_mynetworks, reject
smtpd_peername_lookup = no
relayhost = [127.0.0.1]:{next_hop}
smtp_dns_support_level = disabled
smtpd_milters = inet:127.0.0.1:{milter}
milter_default_action = tempfail
biff = no
"""
MASTER_CF = """\
127.0.0.1:{port} inet n - n - - smtpd
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
smtp      unix  - - n -  - smtp
relay     unix  - - n -  - smtp
anvil     unix  - - n -  1 anvil
scache    unix  - - n -  1 scache
postlog   unix-dgram n - n - 1 postlogd
"""
OPENDKIM_CONF = """\
Mode v
Socket inet:{milter}@127.0.0.1
AuthservID verifier.example.net
Background no
Syslog no
AlwaysAddARHeader yes
TestDNSData file:{records}
PidFile {work}/opendkim.pid
"""


def _wait_listening(port: int, proc: subprocess.Popen[bytes], what: str, log: Path) -> None:
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited: {log.read_text(errors='replace')[-500:]}")
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise RuntimeError(f"{what} is not listening on 127.0.0.1:{port}")


def _stop(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM to the process group this test started (master and its children), by pid."""
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def _start(cmd: list[str], log: Path) -> subprocess.Popen[bytes]:
    with log.open("wb") as out:
        return subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True)  # fmt: skip


@pytest.fixture
def relay(smtp_server: Callable[..., Server], keys: dict[str, Key]) -> Iterator[tuple[int, Server]]:  # noqa: F811
    """Postfix on a free port with OpenDKIM as its milter, relaying to an aiosmtpd next hop.
    Its folder is outside tmp_path, whose parents only root may enter: Postfix's master opens
    its lock as the postfix user."""
    work = Path(tempfile.mkdtemp(prefix="dispatch-dkim-relay-"))
    work.chmod(0o755)
    (work / "etc").mkdir(parents=True)
    (work / "spool").mkdir()
    (work / "data").mkdir()
    shutil.chown(work / "data", "postfix")
    next_hop = smtp_server()
    port, milter = free_port(), free_port()
    records = work / "keys.txt"
    records.write_text("".join(f"{r.name} {r.value}\n" for _, r in keys.values()), encoding="utf-8")
    (work / "opendkim.conf").write_text(
        OPENDKIM_CONF.format(milter=milter, records=records, work=work), encoding="utf-8"
    )
    values = {"work": work, "next_hop": next_hop.port, "milter": milter, "port": port}
    (work / "etc" / "main.cf").write_text(MAIN_CF.format(**values), encoding="utf-8")
    (work / "etc" / "master.cf").write_text(MASTER_CF.format(**values), encoding="utf-8")
    subprocess.run(["postfix", "-c", str(work / "etc"), "check"], check=True, capture_output=True)
    opendkim = _start([str(OPENDKIM), "-f", "-x", str(work / "opendkim.conf")], work / "opendkim.log")
    master: subprocess.Popen[bytes] | None = None
    try:
        _wait_listening(milter, opendkim, "opendkim", work / "opendkim.log")
        master = _start([str(MASTER), "-c", str(work / "etc"), "-d"], work / "master.log")
        _wait_listening(port, master, "postfix", work / "maillog")
        yield port, next_hop
    finally:
        if master is not None:
            _stop(master)
        _stop(opendkim)
        shutil.rmtree(work, ignore_errors=True)


def _results(data: bytes) -> list[str]:
    """The dkim= results of the Authentication-Results field OpenDKIM added, unfolded."""
    head = data.split(b"\r\n\r\n", 1)[0].decode("utf-8", "replace")
    found = re.search(r"^Authentication-Results: verifier\.example\.net;(.*?)(?=^\S)", head, re.M | re.S)
    assert found, head[:2000]
    return [" ".join(part.split()) for part in found[1].split(";") if part.strip().startswith("dkim=")]


def test_opendkim_behind_postfix_passes_both_signatures(
    relay: tuple[int, Server],
    env: dict[str, str],
    keys: dict[str, Key],  # noqa: F811
    issue_files: tuple[Path, Path, Path],  # noqa: F811
) -> None:
    port, next_hop = relay
    article, people, attachment = issue_files
    relay_env = {
        "DISPATCH_SMTP_HOST": "127.0.0.1",
        "DISPATCH_SMTP_PORT": str(port),
        "DISPATCH_SMTP_SECURITY": "none",
    }
    settings = Settings.from_mapping({**env, **relay_env, **dkim_env(keys)})
    issue = plan_issue(article, people, settings, attach=[attachment])
    journal = Journal(settings.state.path)
    try:
        summary = run_send(issue, journal, SendOptions())
    finally:
        journal.close()
    assert summary.sent_now == 5
    deadline = time.monotonic() + 60
    while len(next_hop.received) < 5 and time.monotonic() < deadline:
        time.sleep(0.1)
    assert len(next_hop.received) == 5
    answers = dns_for(keys["rsa"][1], keys["ed"][1])
    for received in next_hop.received:
        results = _results(received.data)
        assert len(results) == 2, results
        assert any(
            r.startswith("dkim=pass") and "header.a=rsa-sha256" in r and "header.s=s2026" in r
            for r in results
        )
        assert any(r.startswith("dkim=pass") and "header.a=ed25519-sha256" in r for r in results), results
        # what the receiver passed, dkimpy passes too (after Postfix's Received and OpenDKIM's header)
        assert verifies(received.data, answers, 0)


def test_opendkim_fails_a_message_changed_on_the_way(
    relay: tuple[int, Server],
    keys: dict[str, Key],  # noqa: F811
) -> None:
    """The receiver is not a rubber stamp: a signed message whose body changed fails."""
    port, next_hop = relay
    rsa, ed = (load_signer(keys[k][0], keys[k][1].selector, "example.org") for k in ("rsa", "ed"))
    message = (
        b"From: news@example.org\r\nTo: ann@example.com\r\nSubject: x\r\nMessage-ID: <x@example.org>\r\n"
    )
    message += b"Date: Mon, 07 Dec 2026 10:00:00 +0000\r\n\r\nthe body\r\n"
    changed = Signatures((rsa, ed)).signed(message).replace(b"the body", b"the b0dy")
    settings = Settings.from_mapping({"DISPATCH_SMTP_HOST": "127.0.0.1", "DISPATCH_SMTP_PORT": str(port),
                                      "DISPATCH_SMTP_SECURITY": "none"})  # fmt: skip
    transport = SmtpTransport(settings)
    try:
        transport.send("news@example.org", "ann@example.com", changed, lambda: None)
    finally:
        transport.close()
    deadline = time.monotonic() + 60
    while not next_hop.received and time.monotonic() < deadline:
        time.sleep(0.1)
    results = _results(next_hop.received[0].data)
    assert len(results) == 2, results
    assert all(r.startswith("dkim=fail") for r in results), results
