"""What the benchmark needs on a fresh machine, installed by the benchmark itself:
postfix's smtp-sink, smtp-source and daemons (apt, without starting a mail server), the real
mailmerge 2.3.0 in its own virtualenv, and matplotlib (the project's ``bench`` dependency group)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

from harness.procs import GNU_TIME, SMTP_SINK, SMTP_SOURCE

POSTFIX_MASTER = Path("/usr/lib/postfix/sbin/master")
POLICY_RC_D = Path("/usr/sbin/policy-rc.d")
MAILMERGE_VERSION = "2.3.0"

Log = Callable[[str], None]


def _run(cmd: list[str], log: Log, **kwargs: object) -> None:
    log("  $ " + " ".join(cmd))
    subprocess.run(cmd, check=True, **kwargs)  # type: ignore[call-overload]


def ensure_debian_packages(log: Log) -> None:
    """Install Debian's postfix (smtp-sink, smtp-source, the daemons) and GNU time if missing.

    ``/usr/sbin/policy-rc.d`` exiting 101 keeps the package from starting a mail server on port 25;
    where the image has none, one is created for the install and removed afterwards."""
    packages = [] if SMTP_SINK.exists() and SMTP_SOURCE.exists() and POSTFIX_MASTER.exists() else ["postfix"]
    packages += [] if GNU_TIME.exists() else ["time"]
    if not packages:
        return
    if os.geteuid() != 0 or shutil.which("apt-get") is None:
        raise SystemExit(
            f"missing: {' '.join(packages)} (smtp-sink, smtp-source, GNU time); as root on Debian run:\n"
            "  apt-get update && echo 'postfix postfix/main_mailer_type select No configuration' "
            "| debconf-set-selections\n"
            "  DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends postfix time\n"
            "(with an /usr/sbin/policy-rc.d that exits 101, so no daemon starts)"
        )
    log(f"installing {' '.join(packages)} with apt (no mail server is started)")
    created = False
    if POLICY_RC_D.exists():
        verdict = subprocess.run([str(POLICY_RC_D), "postfix", "start"], check=False).returncode
        if verdict != 101:
            raise SystemExit(
                f"{POLICY_RC_D} allows services to start (exit {verdict}, not 101): installing postfix "
                "now would start a mail server on port 25; make it exit 101 first"
            )
    else:
        POLICY_RC_D.write_text(
            "#!/bin/sh\n# made by dispatch's benchmarks/bench.py for one install\nexit 101\n"
        )
        POLICY_RC_D.chmod(0o755)
        created = True
    try:
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        _run(["apt-get", "update", "-q"], log, env=env)
        selection = "postfix postfix/main_mailer_type select No configuration\n"
        log("  $ debconf-set-selections <<< '" + selection.strip() + "'")
        subprocess.run(["debconf-set-selections"], input=selection, text=True, check=True)
        _run(["apt-get", "install", "-y", "-q", "--no-install-recommends", *packages], log, env=env)
    finally:
        if created:
            POLICY_RC_D.unlink(missing_ok=True)
    if not SMTP_SINK.exists():
        raise SystemExit(f"postfix was installed but {SMTP_SINK} is still missing")


def ensure_mailmerge(work: Path, log: Log) -> Path:
    """The real ``mailmerge`` from PyPI, pinned, in its own virtualenv under the work folder."""
    venv = work / f"mailmerge-{MAILMERGE_VERSION}"
    exe = venv / "bin" / "mailmerge"
    if exe.exists():
        done = subprocess.run([str(exe), "--version"], capture_output=True, text=True, check=False)
        if done.returncode == 0 and MAILMERGE_VERSION in done.stdout:
            return exe
    log(f"installing mailmerge=={MAILMERGE_VERSION} into {venv}")
    base = getattr(sys, "_base_executable", sys.executable)
    _run([base, "-m", "venv", "--clear", str(venv)], log)
    _run([str(venv / "bin" / "python"), "-m", "pip", "install", "-q", f"mailmerge=={MAILMERGE_VERSION}"], log)
    return exe


def compile_dispatch(log: Log) -> None:
    """Byte-compile the dispatch package this Python imports, as ``pip install .`` does.

    An editable install (the README's quick start) leaves the source tree uncompiled; the first
    run writes ``__pycache__`` beside it, unless ``PYTHONDONTWRITEBYTECODE`` is set (as on this
    machine), when every run would compile ~90 modules again (~0.1 s) and measure that instead
    of a send. mailmerge's virtualenv was compiled by pip at install time; this makes the two
    alike."""
    import importlib.util  # noqa: PLC0415

    spec = importlib.util.find_spec("dispatch")
    if spec is None or not spec.submodule_search_locations:
        return
    folder = next(iter(spec.submodule_search_locations))
    log(f"byte-compiling {folder} (as an install does)")
    _run([sys.executable, "-m", "compileall", "-q", folder], log, stdout=subprocess.DEVNULL)


def ensure_matplotlib(repo: Path, log: Log) -> bool:
    """matplotlib for the chart: the project's ``bench`` dependency group, installed into the
    running virtualenv when missing. Without it the table is still printed."""
    try:
        import matplotlib  # noqa: F401, PLC0415 - only to see whether it is there
    except ImportError:
        log("installing the 'bench' dependency group (matplotlib) into this virtualenv")
        try:
            _run([sys.executable, "-m", "pip", "install", "-q", "--group", "bench"], log, cwd=repo)
        except (OSError, subprocess.CalledProcessError) as err:
            log(f"  could not install matplotlib ({err}); the chart is skipped")
            return False
        import importlib  # noqa: PLC0415

        importlib.invalidate_caches()
    return True
