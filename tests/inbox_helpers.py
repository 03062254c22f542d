"""Helpers for the end-to-end tests of issue 7 (tests/test_inbox_e2e.py): the real ``dispatch``
command run as a subprocess, a real ``dispatch serve`` process spoken to over HTTP, and small
readers for the raw bytes an SMTP server stored.

Nothing here is a mock: every helper drives the installed product the way a user or a mail
client would (a process, a TCP port, the bytes on the wire).
"""

from __future__ import annotations

import asyncio
import contextlib
import http.client
import json
import os
import re
import secrets
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from email import message_from_bytes, policy
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from tests.smtp_servers import Handler, Server, free_port

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE_ARTICLE = ROOT / "examples" / "thin-line-in-iraq.txt"
EXAMPLE_SUBSCRIBERS = ROOT / "subscribers.example.csv"
EXAMPLE_ENV = ROOT / ".env.example"

NEWS = "news.example.org"
OTHER = "other.example.org"
SECRET = "e2e-secret-0123456789-abcdefghijklmnopqrstuv"
UNSUBSCRIBE_URL = "https://example.org/mail/unsubscribe/{token}"
ONE_CLICK = "List-Unsubscribe=One-Click"

# What every newsletter of these tests starts from (the SMTP server and state folder are added).
SETTINGS = {
    "DISPATCH_FROM": "Newsroom <news@example.org>",
    "DISPATCH_UNSUBSCRIBE_URL": UNSUBSCRIBE_URL,
    "DISPATCH_UNSUBSCRIBE_MAILTO": "unsubscribe@example.org",
    "DISPATCH_UNSUBSCRIBE_SECRET": SECRET,
    "DISPATCH_ORGANIZATION": "Example Foundation",
    "DISPATCH_POSTAL_ADDRESS": "1 Example Street, Springfield",
    "DISPATCH_LIST_ID": NEWS,
    "DISPATCH_RETRY_DELAY": "0.01",
}
READERS = ("ann@example.org", "bob@example.com", "cy@example.org", "dee@example.net")
COMMAND_TIMEOUT = 300  # a safety net for a hung process, never an assertion about speed


def clean_environ(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """This process's environment without any DISPATCH_* variable, plus ``extra``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("DISPATCH_")}
    env.update(extra or {})
    return env


def write_env(path: Path, values: Mapping[str, str]) -> Path:
    """A settings file as a user writes one (mode 0600)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(f"{k}='{v}'\n" for k, v in values.items()), encoding="utf-8")
    path.chmod(0o600)
    return path


def write_subscribers(path: Path, addresses: tuple[str, ...] | list[str]) -> Path:
    rows = "".join(f"{a},{a.split('@')[0].title()} Reader\n" for a in addresses)
    path.write_text("email,name\n" + rows, encoding="utf-8")
    return path


# Root reads every file whatever its mode. To see what a user sees with a file they cannot
# read, a run as root drops the two capabilities that let it (util-linux's setpriv), and is
# then held to the file's owner bits like anyone else.
AS_OWNER_ONLY = ("setpriv", "--bounding-set", "-dac_override,-dac_read_search")


def dispatch(
    *args: str | Path,
    cwd: Path | None = None,
    env: Mapping[str, str] | None = None,
    honour_file_modes: bool = False,
) -> subprocess.CompletedProcess[str]:
    """Run ``python -m dispatch ARGS`` (the installed product) to completion, stdin closed.
    ``honour_file_modes``: even as root, a file whose mode forbids reading cannot be read."""
    prefix = AS_OWNER_ONLY if honour_file_modes and os.geteuid() == 0 else ()
    return subprocess.run(
        [*prefix, sys.executable, "-m", "dispatch", *(str(a) for a in args)],
        cwd=cwd,
        env=clean_environ(env),
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=COMMAND_TIMEOUT,
        check=False,
    )


def json_out(done: subprocess.CompletedProcess[str]) -> Any:
    """The JSON a ``--json`` command printed on stdout (the test fails with its stderr if none)."""
    try:
        return json.loads(done.stdout)
    except json.JSONDecodeError:
        raise AssertionError(
            f"no JSON on stdout (exit {done.returncode})\nstdout: {done.stdout}\nstderr: {done.stderr}"
        ) from None


def error_lines(done: subprocess.CompletedProcess[str]) -> list[str]:
    return [line for line in done.stderr.splitlines() if line.strip()]


@dataclass
class Newsletter:
    """One newsletter's folder: settings files, a subscriber list, a state folder, an SMTP server."""

    root: Path
    server: Server
    article: Path
    subscribers: Path
    values: dict[str, str] = field(default_factory=dict)

    @property
    def state(self) -> Path:
        return Path(self.values["DISPATCH_STATE_DIR"])

    def env_file(self, name: str = "news.env", **overrides: str) -> Path:
        """Write the settings (with ``overrides``; an empty string clears a setting) to ``name``."""
        return write_env(self.root / name, {**self.values, **overrides})

    def run(
        self, *args: str | Path, env_file: Path | None = None, honour_file_modes: bool = False
    ) -> subprocess.CompletedProcess[str]:
        """``dispatch ARGS --env-file FILE`` from the newsletter's folder (the option goes
        before a ``--`` that ends the options)."""
        words: list[str | Path] = list(args)
        at = words.index("--") if "--" in words else len(words)
        words[at:at] = ["--env-file", env_file or self.env_file()]
        return dispatch(*words, cwd=self.root, honour_file_modes=honour_file_modes)

    def send(
        self, *args: str | Path, env_file: Path | None = None, honour_file_modes: bool = False
    ) -> tuple[subprocess.CompletedProcess[str], Any]:
        """``dispatch send ARTICLE -s LIST --yes --json ARGS``: the process and its JSON summary."""
        done = self.run(
            "send", self.article, "-s", self.subscribers, "--yes", "--json", *args,
            env_file=env_file, honour_file_modes=honour_file_modes,
        )  # fmt: skip
        return done, json_out(done)

    def preview_links(self, env_file: Path | None = None, folder: str = "preview") -> dict[str, str]:
        """A dry run with ``--out`` (what an editor looks at first): each recipient's https
        unsubscribe link, read from the .eml files it wrote (the bytes a send puts on the wire)."""
        out = self.root / folder
        done = self.run(
            "send", self.article, "-s", self.subscribers, "--dry-run", "--out", out, env_file=env_file
        )
        assert done.returncode == 0, done.stderr
        links = {}
        for eml in sorted(out.glob("*.eml")):
            address = eml.stem.split("-", 1)[1]
            links[address] = unsubscribe_links(eml.read_bytes())[0]
        return links

    def suppressed(self, env_file: Path | None = None) -> list[dict[str, str]]:
        """``dispatch suppress list --json``."""
        done = self.run("suppress", "list", "--json", env_file=env_file)
        assert done.returncode == 0, done.stderr
        return list(json_out(done))

    def received_by(self) -> list[str]:
        """The recipients of every message the server stored, in order."""
        return [rcpt for message in self.server.received for rcpt in message.rcpt_tos]


class GatedHandler(Handler):
    """A slow relay: it holds the reply to the first message's data until ``release`` is set
    (``first`` tells the test the send is under way); every later message goes through."""

    def __init__(self) -> None:
        super().__init__()
        self.first = threading.Event()
        self.release = threading.Event()

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        if not self.first.is_set():
            self.first.set()
            deadline = time.monotonic() + COMMAND_TIMEOUT  # never hang the suite
            while not self.release.is_set() and time.monotonic() < deadline:
                await asyncio.sleep(0.02)
        return await super().handle_DATA(server, session, envelope)


def make_newsletter(root: Path, server: Server, readers: tuple[str, ...] = READERS) -> Newsletter:
    root.mkdir(parents=True, exist_ok=True)
    article = root / "thin-line-in-iraq.txt"
    article.write_bytes(EXAMPLE_ARTICLE.read_bytes())
    subscribers = write_subscribers(root / "subscribers.csv", readers)
    values = {**SETTINGS, **server.env(), "DISPATCH_STATE_DIR": str(root / "state")}
    return Newsletter(root, server, article, subscribers, values)


# --- raw messages ---------------------------------------------------------------------------


def header_block(data: bytes) -> bytes:
    return data.split(b"\r\n\r\n", 1)[0]


def raw_header_lines(data: bytes, name: str) -> list[bytes]:
    """Every physical line (first line and continuations) of each ``name`` header field."""
    lines = header_block(data).split(b"\r\n")
    found: list[bytes] = []
    inside = False
    for line in lines:
        if line[:1] in (b" ", b"\t"):
            if inside:
                found.append(line)
            continue
        inside = line.lower().startswith(name.lower().encode() + b":")
        if inside:
            found.append(line)
    return found


def header_value(data: bytes, name: str) -> str:
    """The unfolded value of the first ``name`` header, as raw text (no RFC 2047 decoding)."""
    lines = raw_header_lines(data, name)
    if not lines:
        return ""
    first = lines[0].split(b":", 1)[1]
    return b" ".join([first, *(line.strip() for line in lines[1:])]).decode("ascii").strip()


def unsubscribe_links(data: bytes) -> tuple[str, str]:
    """The https and the mailto URI of a message's List-Unsubscribe header ("" when absent)."""
    uris = re.findall(r"<([^>]*)>", header_value(data, "List-Unsubscribe"))
    https = next((u for u in uris if u.startswith("https://")), "")
    mailto = next((u for u in uris if u.startswith("mailto:")), "")
    return https, mailto


def token_of(link: str) -> str:
    """The token in an unsubscribe link made from UNSUBSCRIBE_URL (the last path segment)."""
    return urlsplit(link).path.rsplit("/", 1)[1]


def local_target(link: str) -> str:
    """The path and query of a public https link: what the proxy forwards to ``dispatch serve``."""
    parts = urlsplit(link)
    return parts.path + (f"?{parts.query}" if parts.query else "")


def message_parts(data: bytes) -> tuple[str, str]:
    """The decoded text/plain and text/html parts of a message."""
    message: Any = message_from_bytes(data, policy=policy.default)
    text = message.get_body(("plain",)).get_content()
    html = message.get_body(("html",)).get_content()
    return text, html


def replace_in_header(data: bytes, name: str, old: bytes, new: bytes) -> bytes:
    """``data`` with ``old`` replaced by ``new`` once, inside the ``name`` header only."""
    head, sep, body = data.partition(b"\r\n\r\n")
    lines = raw_header_lines(data, name)
    field_bytes = b"\r\n".join(lines)
    assert field_bytes in head, name
    assert old in field_bytes, (name, old)
    changed = field_bytes.replace(old, new, 1)
    return head.replace(field_bytes, changed, 1) + sep + body


# --- dispatch serve -------------------------------------------------------------------------


@dataclass
class Reply:
    status: int
    headers: dict[str, str]
    text: str

    def header(self, name: str) -> str | None:
        return self.headers.get(name.lower())


@dataclass
class ServeProcess:
    """A running ``dispatch serve`` process on 127.0.0.1:port."""

    process: subprocess.Popen[str]
    port: int

    def request(
        self,
        method: str,
        target: str,
        body: bytes | str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> Reply:
        """One HTTP/1.1 request on a new connection (as a mail provider's one-click POST is)."""
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        try:
            conn.request(method, target, body=body, headers=dict(headers or {}))
            response = conn.getresponse()
            raw_headers = response.getheaders()
            text = response.read().decode("utf-8", "replace")
        finally:
            conn.close()
        names = [k.lower() for k, _ in raw_headers]
        joined = {k.lower(): v for k, v in raw_headers}
        if names.count("set-cookie") > 1:
            joined["set-cookie"] = "; ".join(v for k, v in raw_headers if k.lower() == "set-cookie")
        return Reply(response.status, joined, text)

    def one_click(self, target: str) -> Reply:
        """RFC 8058 section 3.2, the form-urlencoded variant."""
        return self.request("POST", target, ONE_CLICK, {"Content-Type": "application/x-www-form-urlencoded"})

    def one_click_multipart(self, target: str) -> Reply:
        """RFC 8058 section 3.1: the POST content SHOULD be multipart/form-data (RFC 7578)."""
        boundary = "----e2e" + secrets.token_hex(8)
        body = (
            f"--{boundary}\r\n"
            'Content-Disposition: form-data; name="List-Unsubscribe"\r\n\r\n'
            "One-Click\r\n"
            f"--{boundary}--\r\n"
        )
        return self.request(
            "POST", target, body, {"Content-Type": f"multipart/form-data; boundary={boundary}"}
        )

    def raw_status(self, head: bytes, body: bytes = b"") -> int | None:
        """Send raw request bytes (a head that may announce more body than is sent) and return
        the status code of the answer, or None when the server closed without one."""
        with socket.create_connection(("127.0.0.1", self.port), timeout=30) as sock:
            sock.sendall(head + body)
            answer = b""
            with contextlib.suppress(ConnectionResetError, TimeoutError):
                while b"\r\n" not in answer and (chunk := sock.recv(4096)):
                    answer += chunk
        found = re.match(rb"HTTP/1\.[01] (\d{3}) ", answer)
        return int(found[1]) if found else None


def _port_open(port: int) -> bool:
    with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=1):
        return True
    return False


def _stop(process: subprocess.Popen[str]) -> None:
    if process.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.kill(process.pid, signal.SIGKILL)
            process.wait(timeout=20)


@contextlib.contextmanager
def serving(
    env_file: Path, cwd: Path, stderr: Path | None = None, environ: Mapping[str, str] | None = None
) -> Iterator[ServeProcess]:
    """Start ``dispatch serve --host 127.0.0.1 --port FREE --env-file FILE``, wait for its port,
    and stop it by its pid afterwards. A port taken between the probe and the bind (tests
    running side by side) is retried with another. ``stderr``: a file that receives its
    standard error (the access log), read after the block."""
    for _ in range(10):
        port = free_port()
        log = stderr.open("w", encoding="utf-8") if stderr is not None else None
        process = subprocess.Popen(
            [sys.executable, "-m", "dispatch", "serve", "--host", "127.0.0.1", "--port", str(port),
             "--env-file", str(env_file)],
            cwd=cwd, env=clean_environ(environ), stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE, stderr=log or subprocess.PIPE, text=True,
        )  # fmt: skip
        try:
            deadline = time.monotonic() + 60  # start-up safety net, not an assertion
            while process.poll() is None and not _port_open(port) and time.monotonic() < deadline:
                time.sleep(0.05)
            if process.poll() is not None:
                _, err = process.communicate(timeout=20)
                err = err if stderr is None else stderr.read_text(encoding="utf-8")
                if "cannot listen" in err:
                    continue
                raise AssertionError(f"dispatch serve exited with {process.returncode}: {err}")
            if not _port_open(port):
                raise AssertionError("dispatch serve never opened its port")
            yield ServeProcess(process, port)
            return
        finally:
            _stop(process)
            for stream in (process.stdout, process.stderr, log):
                if stream is not None:
                    stream.close()
    raise AssertionError("found no free port for dispatch serve")


# --- DKIM -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class PrintedRecord:
    """The TXT record ``dispatch dkim keygen`` printed: its name and its character-strings."""

    name: str
    strings: tuple[str, ...]

    @property
    def value(self) -> str:
        """The strings joined, as a resolver hands a record to a DKIM verifier."""
        return "".join(self.strings)


def printed_txt_record(output: str) -> PrintedRecord:
    """The record in zone-file form after ``IN TXT``: the quoted strings inside the parentheses
    (or on the line, without them)."""
    found = re.search(r"^(\S+?)\.?\s+IN\s+TXT\s+(\(.*?\)|.*$)", output, re.M | re.S)
    assert found, f"no TXT record in the keygen output:\n{output}"
    strings = tuple(re.findall(r'"([^"]*)"', found[2]))
    assert strings, f"no quoted strings in the printed record:\n{found[0]}"
    return PrintedRecord(found[1].lower(), strings)


def _prime(bits: int) -> int:
    """A random prime with its top two bits set (Miller-Rabin, 32 rounds)."""
    while True:
        n = secrets.randbits(bits) | (3 << (bits - 2)) | 1
        d, r = n - 1, 0
        while d % 2 == 0:
            d, r = d // 2, r + 1
        for _ in range(32):
            x = pow(secrets.randbelow(n - 3) + 2, d, n)
            if x in (1, n - 1):
                continue
            for _ in range(r - 1):
                x = pow(x, 2, n)
                if x == n - 1:
                    break
            else:
                break
        else:
            if (n - 1) % 65537:
                return n


def short_rsa_pem(
    bits: int = 512, private_format: serialization.PrivateFormat = serialization.PrivateFormat.PKCS8
) -> bytes:
    """An RSA private key of ``bits`` bits, built with cryptography from two primes (its key
    generator refuses sizes under 1024 bits)."""
    p, q, e = _prime(bits // 2), _prime(bits // 2), 65537
    d = pow(e, -1, (p - 1) * (q - 1))
    numbers = rsa.RSAPrivateNumbers(
        p, q, d, rsa.rsa_crt_dmp1(d, p), rsa.rsa_crt_dmq1(d, q), rsa.rsa_crt_iqmp(p, q),
        rsa.RSAPublicNumbers(e, p * q),
    )  # fmt: skip
    key = numbers.private_key()
    assert key.key_size == bits
    return key.private_bytes(serialization.Encoding.PEM, private_format, serialization.NoEncryption())
