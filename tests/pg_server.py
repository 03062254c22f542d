"""A real PostgreSQL cluster of the suite's own, from Debian's packages: ``initdb`` and
``pg_ctl`` in a temporary folder, listening on 127.0.0.1 only (and a Unix socket in that
folder), started once per test session; each test gets a database of its own.

PostgreSQL refuses to run as root: as root, the cluster runs as the ``postgres`` user through
``runuser``. Where no PostgreSQL is installed the tests that need one say so when skipped
(``.ci/run`` installs Debian's ``postgresql``).
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from tests.smtp_servers import free_port


def pg_bin() -> Path | None:
    """The newest Debian PostgreSQL's bin folder, or None."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"), key=lambda p: int(p.split("/")[4]))
    return Path(found[-1]).parent if found else None


def _as_owner(cmd: list[str]) -> list[str]:
    if os.geteuid() != 0:
        return cmd
    return ["runuser", "-u", "postgres", "--", *cmd]


@dataclass
class Cluster:
    """A running cluster: its folder, port and the URL of a database in it."""

    folder: Path
    port: int
    bin: Path

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"

    def create_database(self) -> str:
        """A fresh database; returns its URL."""
        import psycopg

        name = "t_" + uuid.uuid4().hex[:16]
        with psycopg.connect(self.url(), autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)

    def start(self) -> None:
        """Start it (again: a test may stop the database under a command, then bring it back)."""
        options = (
            f"-p {self.port} -k {self.folder} -c listen_addresses=127.0.0.1 -c max_connections=300 "
            "-c fsync=off -c full_page_writes=off"  # a test cluster: nothing here must survive a power cut
        )
        start = [str(self.bin / "pg_ctl"), "-D", str(self.folder / "data"), "-l", str(self.folder / "log"),
                 "-w", "-o", options, "start"]  # fmt: skip
        subprocess.run(_as_owner(start), capture_output=True, check=True, timeout=120)

    def stop(self, mode: str = "immediate") -> None:
        """Stop it: at once (the end of the session), or ``fast``, as an administrator would."""
        subprocess.run(
            _as_owner([str(self.bin / "pg_ctl"), "-D", str(self.folder / "data"), "-m", mode, "-w", "stop"]),
            capture_output=True, check=False, timeout=60,
        )  # fmt: skip


def start_cluster(parent: Path) -> Cluster:
    """initdb and start a cluster under ``parent`` (on 127.0.0.1 and a socket in that folder)."""
    bin_dir = pg_bin()
    if bin_dir is None:
        raise FileNotFoundError("no PostgreSQL under /usr/lib/postgresql (apt-get install postgresql)")
    folder = parent / "pg"
    folder.mkdir()
    if os.geteuid() == 0:
        owner = pwd.getpwnam("postgres")
        for path in (parent, folder):
            path.chmod(0o755)
        shutil.chown(folder, owner.pw_uid, owner.pw_gid)
    init = [
        str(bin_dir / "initdb"),
        "-D",
        str(folder / "data"),
        "-U",
        "postgres",
        "-A",
        "trust",
        "-E",
        "UTF8",
    ]
    subprocess.run(_as_owner(init), capture_output=True, check=True, timeout=120)
    cluster = Cluster(folder, free_port(), bin_dir)
    cluster.start()
    return cluster


@contextmanager
def private_cluster(prefix: str = "dispatch-pg-") -> Iterator[Cluster]:
    """A cluster in a temporary folder for the block (stopped and removed after it); pytest
    skips the caller, saying so, where PostgreSQL is not installed."""
    import pytest

    if pg_bin() is None:
        pytest.skip("PostgreSQL is not installed (.ci/run installs Debian's postgresql)")
    folder = Path(tempfile.mkdtemp(prefix=prefix))  # not tmp_path: the postgres user must reach it
    cluster = start_cluster(folder)
    try:
        yield cluster
    finally:
        cluster.stop()
        shutil.rmtree(folder, ignore_errors=True)
