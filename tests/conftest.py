"""Shared fixtures: example inputs as real files, real SMTP servers, and a CLI runner."""

from __future__ import annotations

import shutil
import ssl
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
import trustme
from typer.testing import CliRunner

from dispatch.cli import app
from dispatch.errors import ConfigError
from dispatch.proof.chromium import LAUNCH_ARGS, find_chromium
from dispatch.settings import platform_state_dir
from tests.pg_server import Cluster, private_cluster
from tests.smtp_servers import FaultPlan, Server, start_server

if TYPE_CHECKING:
    from tests.attack_helpers import Relays

ROOT = Path(__file__).resolve().parents[1]


def _tree(folder: Path) -> dict[str, tuple[int, int]]:
    """Every file under ``folder``: (size, mtime in ns)."""
    if not folder.is_dir():
        return {}
    return {str(p): (p.stat().st_size, p.stat().st_mtime_ns) for p in folder.rglob("*") if p.is_file()}


# The real user's state folder, as platformdirs finds it before the suite moves HOME away: the
# suite must never write there (see the session fixture below and tests/test_isolation.py).
REAL_STATE = platform_state_dir()
REAL_STATE_BEFORE = _tree(REAL_STATE)
# Nor into the checkout's own state folder, the one the quick start's .env.example names.
CHECKOUT_STATE = ROOT / "dispatch-state"
CHECKOUT_STATE_BEFORE = _tree(CHECKOUT_STATE)


def pytest_configure(config: pytest.Config) -> None:
    """Byte-compile the dispatch package once before the tests, as ``pip install .`` does: the
    suite starts over a thousand ``python -m dispatch`` processes, and in a fresh clone under
    PYTHONDONTWRITEBYTECODE each of them would compile every module it imports again."""
    if hasattr(config, "workerinput"):
        return  # (an xdist worker: the controlling process has done it)
    import compileall

    import dispatch

    compileall.compile_dir(Path(dispatch.__file__).parent, quiet=1)


@pytest.fixture(scope="session", autouse=True)
def private_home(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """Every test, and every process it starts, runs with HOME and XDG_STATE_HOME in a folder of
    the suite's own; at the end the real user's state folder is what it was before."""
    import os

    home = tmp_path_factory.mktemp("home")
    saved = {k: os.environ.get(k) for k in ("HOME", "XDG_STATE_HOME")}
    os.environ["HOME"], os.environ["XDG_STATE_HOME"] = str(home), str(home / ".local" / "state")
    try:
        yield home
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
    assert _tree(REAL_STATE) == REAL_STATE_BEFORE, f"the test suite wrote into {REAL_STATE}"
    assert _tree(CHECKOUT_STATE) == CHECKOUT_STATE_BEFORE, f"the test suite wrote into {CHECKOUT_STATE}"


EXAMPLE_ARTICLE = ROOT / "examples" / "thin-line-in-iraq.txt"
EXAMPLE_SUBSCRIBERS = ROOT / "subscribers.example.csv"


def system_chromium() -> Path | None:
    """The Chromium dispatch itself would use (on the PATH), or None."""
    try:
        return find_chromium()
    except ConfigError:
        return None


CHROMIUM = system_chromium()
CHROMIUM_ARGS = LAUNCH_ARGS  # the flags dispatch launches it with (no network at start-up)
needs_chromium = pytest.mark.skipif(
    CHROMIUM is None, reason="Chromium is not installed (.ci/run installs it)"
)

BASE_ENV = {
    "DISPATCH_FROM": "Newsroom <news@example.org>",
    "DISPATCH_REPLY_TO": "editors@example.org",
    "DISPATCH_UNSUBSCRIBE_URL": "https://example.org/unsubscribe?email={email}",
    "DISPATCH_UNSUBSCRIBE_MAILTO": "unsubscribe@example.org",
    "DISPATCH_UNSUBSCRIBE_SECRET": "test-secret-0123456789-abcdefghijklmnop",
    "DISPATCH_ORGANIZATION": "Example Foundation",
    "DISPATCH_POSTAL_ADDRESS": "1 Example Street, Springfield",
    "DISPATCH_RETRY_DELAY": "0.01",
}


@pytest.fixture
def article(tmp_path: Path) -> Path:
    """The seed article, copied into tmp_path."""
    dest = tmp_path / "thin-line-in-iraq.txt"
    shutil.copy(EXAMPLE_ARTICLE, dest)
    return dest


@pytest.fixture
def write_file(tmp_path: Path) -> Callable[..., Path]:
    """Write text (or bytes) to a file in tmp_path and return its path."""

    def write(name: str, content: str | bytes, encoding: str = "utf-8") -> Path:
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(content, encoding=encoding, newline="")
        return path

    return write


@pytest.fixture
def subscribers(write_file: Callable[..., Path]) -> Path:
    """A small clean list."""
    return write_file(
        "subscribers.csv",
        "email,name,city\nann@example.org,Ann Example,Paris\nbob@example.com,Bob Example,Oslo\n"
        "cy@example.org,Cy Example,Rome\n",
    )


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    """Settings every test starts from; the state folder lives in tmp_path."""
    return {**BASE_ENV, "DISPATCH_STATE_DIR": str(tmp_path / "state")}


PG_LEASE = 2.0  # seconds: DISPATCH_STATE_LEASE in tests with PostgreSQL


@pytest.fixture(scope="session")
def pg_cluster() -> Iterator[Cluster]:
    """A real PostgreSQL of the suite's own (Debian's initdb and pg_ctl, on 127.0.0.1), started
    once per session; skipped, saying so, where PostgreSQL is not installed."""
    with private_cluster() as cluster:
        yield cluster


@pytest.fixture
def pg_url(pg_cluster: Cluster) -> str:
    """A fresh database of that cluster, for one test."""
    return pg_cluster.create_database()


@pytest.fixture(params=["sqlite", "postgresql"])
def state_backend(request: pytest.FixtureRequest) -> dict[str, str]:
    """The settings that choose a backend: the state folder (nothing), or a fresh PostgreSQL
    database. A module that overrides ``env`` with it runs its tests on both."""
    if request.param == "sqlite":
        return {}
    # a short lease: a killed sender's claims pass on within the test's patience
    return {"DISPATCH_STATE_URL": request.getfixturevalue("pg_url"), "DISPATCH_STATE_LEASE": str(PG_LEASE)}


def both_backends(tmp_path: Path, backend: dict[str, str]) -> dict[str, str]:
    """``env`` for a module whose tests run on both backends."""
    return {**BASE_ENV, "DISPATCH_STATE_DIR": str(tmp_path / "state"), **backend}


@pytest.fixture
def env_file(tmp_path: Path, env: dict[str, str]) -> Callable[..., Path]:
    """Write settings (BASE_ENV plus overrides) to a .env file for the CLI."""

    def write(**overrides: str) -> Path:
        path = tmp_path / "test.env"
        values = {**env, **overrides}
        path.write_text("".join(f"{k}='{v}'\n" for k, v in values.items()), encoding="utf-8")
        path.chmod(0o600)
        return path

    return write


@pytest.fixture
def runner(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> CliRunner:
    """A CliRunner in a clean working folder with no DISPATCH_* variables leaking in."""
    import os

    for key in list(os.environ):
        if key.startswith("DISPATCH_"):
            monkeypatch.delenv(key)
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    return CliRunner()


@pytest.fixture
def invoke(runner: CliRunner) -> Callable[..., Any]:
    """Run ``dispatch ARGS`` in-process; returns the click Result (stdout/stderr split)."""

    def run(*args: str | Path, input: str | None = None) -> Any:
        return runner.invoke(app, [str(a) for a in args], input=input, catch_exceptions=False)

    return run


@pytest.fixture(scope="session")
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture(scope="session")
def ca_file(ca: trustme.CA, tmp_path_factory: pytest.TempPathFactory) -> str:
    path = tmp_path_factory.mktemp("ca") / "ca.pem"
    ca.cert_pem.write_to_path(str(path))
    return str(path)


@pytest.fixture(scope="session")
def server_tls(ca: trustme.CA) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1", "localhost").configure_cert(context)
    return context


@pytest.fixture
def smtp_server() -> Iterator[Callable[..., Server]]:
    """Start real aiosmtpd servers on 127.0.0.1; all are stopped after the test."""
    started: list[Server] = []

    def start(**kwargs: Any) -> Server:
        server = start_server(**kwargs)
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()


@pytest.fixture
def plain_server(smtp_server: Callable[..., Server]) -> Server:
    return smtp_server()


@pytest.fixture
def starttls_server(smtp_server: Callable[..., Server], server_tls: ssl.SSLContext, ca_file: str) -> Server:
    return smtp_server(tls=server_tls, ca_file=ca_file, auth=True)


__all__ = ["FaultPlan"]


@pytest.fixture
def relay() -> Iterator[Relays]:
    """aiosmtpd relays on 127.0.0.1 started on demand (the red-team suites), stopped afterwards."""
    from tests.attack_helpers import Relays

    with Relays() as relays:
        yield relays


@pytest.fixture
def spawn(tmp_path: Path) -> Iterator[Callable[..., subprocess.Popen[str]]]:
    """Start ``python -m dispatch ARGS`` in tmp_path (``env=``: its whole environment), for
    tests that kill a run; any still running at teardown are killed."""
    procs: list[subprocess.Popen[str]] = []

    def start(*args: str | Path, env: dict[str, str] | None = None) -> subprocess.Popen[str]:
        proc = subprocess.Popen(
            [sys.executable, "-m", "dispatch", *(str(a) for a in args)], cwd=tmp_path, env=env,
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        procs.append(proc)
        return proc

    yield start
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
        proc.communicate()
