"""Shared pieces of the attack tests (``tests/test_attacks_*.py``): settings files, CLI runs as
a subprocess, messages read back from a preview folder or a server, a judge for "one clean
error line", and real aiosmtpd relays that misbehave on purpose.

Nothing here is a mock: every relay is aiosmtpd on 127.0.0.1 on a free port, every input a
real file under the test's ``tmp_path``.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import threading
from collections import Counter
from collections.abc import Callable, Iterable
from email import message_from_bytes, policy
from email.message import EmailMessage
from pathlib import Path
from types import TracebackType
from typing import Any

from aiosmtpd.controller import Controller

from tests.conftest import BASE_ENV
from tests.smtp_servers import Handler, Received, Server, authenticator, free_port

ROOT = Path(__file__).resolve().parents[1]
ERROR_PREFIX = "dispatch: error:"
QUIET_PREFIXES = ("dispatch: warning:", "dispatch: note:")


# --------------------------------------------------------------------------- settings


def env_line(key: str, value: str) -> str:
    """One ``KEY=value`` line python-dotenv reads back exactly."""
    if "'" not in value:
        return f"{key}='{value}'\n"
    escaped = value.replace("\\", "\\\\").replace('"', '\\"')
    return f'{key}="{escaped}"\n'


def write_settings(path: Path, values: dict[str, str]) -> Path:
    """A private settings file holding exactly ``values``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(env_line(k, v) for k, v in values.items()), encoding="utf-8")
    path.chmod(0o600)
    return path


def settings_values(tmp_path: Path, server: Server | None = None, **overrides: str | None) -> dict[str, str]:
    """BASE_ENV, a state folder in ``tmp_path``, the server's settings, then ``overrides``
    (``SMTP_HOST="x"`` sets DISPATCH_SMTP_HOST; None removes a setting)."""
    values = {
        **BASE_ENV,
        "DISPATCH_UNSUBSCRIBE_URL": "https://example.org/u/{token}",
        "DISPATCH_STATE_DIR": str(tmp_path / "state"),
    }
    if server is not None:
        values.update(server.env())
    for key, value in overrides.items():
        name = key if key.startswith("DISPATCH_") else f"DISPATCH_{key}"
        if value is None:
            values.pop(name, None)
        else:
            values[name] = value
    return values


def settings_file(
    tmp_path: Path, server: Server | None = None, name: str = "attack.env", **overrides: str | None
) -> Path:
    """:func:`settings_values` written to ``tmp_path / name``."""
    return write_settings(tmp_path / name, settings_values(tmp_path, server, **overrides))


# --------------------------------------------------------------------------- inputs


def write_list(path: Path, rows: Iterable[tuple[str, str]], header: str = "email,name") -> Path:
    """A simple CSV list (no quoting needed in the values given)."""
    body = "".join(f"{email},{name}\n" for email, name in rows)
    path.write_text(f"{header}\n{body}", encoding="utf-8", newline="")
    return path


def readers(count: int, prefix: str = "reader") -> list[str]:
    return [f"{prefix}{i:02d}@example.{'org' if i % 2 else 'com'}" for i in range(count)]


def write_article(path: Path, title: str = "Attack surface", body: str = "") -> Path:
    """A small Markdown article with front matter."""
    text = body or "A short paragraph for the attack tests.\n\nA second paragraph.\n"
    path.write_text(f"---\ntitle: {title}\ndate: 2024-05-01\n---\n\n{text}", encoding="utf-8")
    return path


# --------------------------------------------------------------------------- judging output


def judge_error(stderr: str, *needles: str) -> str:
    """The one ``dispatch: error:`` line of ``stderr`` (asserting there is exactly one, no
    traceback, no "internal error", nothing else but warnings and notes); each needle must be
    in it. Returns the line."""
    assert "Traceback" not in stderr, stderr
    assert "internal error" not in stderr, stderr
    lines = [line for line in stderr.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith(ERROR_PREFIX)]
    assert len(errors) == 1, f"expected exactly one error line, got:\n{stderr}"
    others = [line for line in lines if line not in errors and not line.startswith(QUIET_PREFIXES)]
    assert not others, f"stray lines on stderr:\n{stderr}"
    for needle in needles:
        assert needle in errors[0], f"{needle!r} not in the error line: {errors[0]}"
    return errors[0]


def no_crash(stderr: str) -> None:
    """Whatever happened, it was not a crash."""
    assert "Traceback" not in stderr, stderr
    assert "internal error" not in stderr, stderr


def parse(data: bytes) -> EmailMessage:
    return message_from_bytes(data, policy=policy.default)  # type: ignore[return-value]


def part(message: EmailMessage, subtype: str) -> str:
    body = message.get_body((subtype,))
    assert body is not None, f"no text/{subtype} part"
    return str(body.get_content())


def eml_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.glob("*.eml") if p.is_file())


def between(text: str, start: str, end: str) -> str:
    """The text between the first ``start`` and the next ``end`` (asserting both are there)."""
    assert start in text, f"{start!r} not found in:\n{text[:2000]}"
    rest = text.split(start, 1)[1]
    assert end in rest, f"{end!r} not found after {start!r}"
    return rest.split(end, 1)[0]


def unfolded_qp(data: bytes) -> bytes:
    """Raw message bytes with quoted-printable soft line breaks removed (a token split by one
    is still found)."""
    return data.replace(b"=\r\n", b"")


def tokens_in(text: str) -> list[str]:
    """Internal placeholder tokens (``zqx…``) that leaked into ``text``."""
    return list(re.findall(r"zqx[0-9a-f]{6,}", text, re.IGNORECASE))


def tree(folder: Path) -> dict[str, bytes | str]:
    """Every entry under ``folder``: file contents, or ``->target`` for symlinks."""
    found: dict[str, bytes | str] = {}
    for path in sorted(folder.rglob("*")):
        rel = str(path.relative_to(folder))
        if path.is_symlink():
            found[rel] = "->" + os.readlink(path)
        elif path.is_file():
            found[rel] = path.read_bytes()
    return found


def header_lines(data: bytes) -> list[bytes]:
    return data.split(b"\r\n\r\n", 1)[0].split(b"\r\n")


def all_lines(data: bytes) -> list[bytes]:
    return data.split(b"\r\n")


# --------------------------------------------------------------------------- subprocess runs


def clean_environ(**extra: str) -> dict[str, str]:
    """The test process's environment without DISPATCH_* settings, plus ``extra``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("DISPATCH_")}
    env["PYTHONPATH"] = str(ROOT / "src") + os.pathsep + env.get("PYTHONPATH", "")
    env.update(extra)
    return env


def run_dispatch(
    *args: str | Path,
    cwd: Path,
    timeout: float = 120,
    env: dict[str, str] | None = None,
    stdin: int | None = subprocess.DEVNULL,
) -> subprocess.CompletedProcess[str]:
    """``python -m dispatch ARGS`` as a subprocess; a hang past ``timeout`` fails the test."""
    try:
        return subprocess.run(
            [sys.executable, "-m", "dispatch", *map(str, args)],
            cwd=cwd,
            env=env or clean_environ(),
            capture_output=True,
            text=True,
            timeout=timeout,
            stdin=stdin,
            check=False,
        )
    except subprocess.TimeoutExpired as err:
        raise AssertionError(f"dispatch {' '.join(map(str, args))} still running after {timeout} s") from err


# --------------------------------------------------------------------------- relays


class Recording(Handler):
    """The shared storing handler, plus what a relay sees: EHLO names, MAIL parameters, how many
    RCPT and DATA commands each address got. ``data_reply(address, nth)`` may return a reply
    line for the nth DATA of ``address`` (1-based) instead of accepting it; ``rcpt_reply`` the
    same for RCPT. ``drop_after_data`` stores each message and drops the connection."""

    def __init__(self) -> None:
        super().__init__()
        self.ehlo_names: list[str] = []
        self.mail_options: list[list[str]] = []
        self.rcpts: Counter[str] = Counter()
        self.datas: Counter[str] = Counter()
        self.data_reply: Callable[[str, int], str | None] = lambda _address, _nth: None
        self.rcpt_reply: Callable[[str, int], str | None] = lambda _address, _nth: None
        self.mail_reply: Callable[[int], str | None] = lambda _nth: None
        self.mails = 0
        self.drop_after_data = False

    async def handle_EHLO(
        self, server: Any, session: Any, envelope: Any, hostname: str, responses: list[str]
    ) -> list[str]:
        with self.lock:
            self.ehlo_names.append(hostname)
        return await super().handle_EHLO(server, session, envelope, hostname, responses)

    async def handle_MAIL(
        self, server: Any, session: Any, envelope: Any, address: str, mail_options: list[str]
    ) -> str:
        with self.lock:
            self.mails += 1
            nth = self.mails
            self.mail_options.append(list(mail_options))
        reply = self.mail_reply(nth)
        if reply is not None:
            return reply
        envelope.mail_from = address
        envelope.mail_options.extend(mail_options)
        return "250 OK"

    async def handle_RCPT(
        self, server: Any, session: Any, envelope: Any, address: str, rcpt_options: list[str]
    ) -> str:
        with self.lock:
            self.rcpts[address] += 1
            nth = self.rcpts[address]
        reply = self.rcpt_reply(address, nth)
        if reply is not None:
            return reply
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        address = envelope.rcpt_tos[0] if envelope.rcpt_tos else ""
        with self.lock:
            self.datas[address] += 1
            nth = self.datas[address]
        reply = self.data_reply(address, nth)
        if reply is not None:
            return reply
        with self.lock:
            self.received.append(
                Received(envelope.mail_from, list(envelope.rcpt_tos), envelope.original_content)
            )
        if self.drop_after_data:
            server.transport.abort()
        return "250 2.0.0 OK queued"

    def copies(self) -> Counter[str]:
        """How many copies each address received."""
        found: Counter[str] = Counter()
        for item in self.received:
            found.update(item.rcpt_tos)
        return found


class Relays:
    """Starts aiosmtpd relays with any handler and SMTP parameters; stops them all on exit."""

    def __init__(self) -> None:
        self.started: list[Server] = []
        self._lock = threading.Lock()

    def start(
        self,
        handler: Handler | None = None,
        *,
        user: str = "",
        password: str = "",
        **smtp_parameters: Any,
    ) -> Server:
        handler = handler if handler is not None else Recording()
        port = free_port()
        if user:
            smtp_parameters.update(
                authenticator=authenticator(user, password), auth_required=True, auth_require_tls=False
            )
        controller = Controller(handler, hostname="127.0.0.1", port=port, ready_timeout=10, **smtp_parameters)
        controller.start()
        server = Server(controller, handler, port, "none", "", user, password)
        with self._lock:
            self.started.append(server)
        return server

    def __enter__(self) -> Relays:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, value: BaseException | None, tb: TracebackType | None
    ) -> None:
        for server in self.started:
            if getattr(server.controller, "_thread", None) is not None:
                server.stop()
