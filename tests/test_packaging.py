"""The wheel carries the templates: install it in a fresh virtualenv, dry-run from elsewhere."""

from __future__ import annotations

import subprocess
import sys
import venv
from email import message_from_bytes, policy
from pathlib import Path

import pytest

from tests.conftest import BASE_ENV, EXAMPLE_ARTICLE, EXAMPLE_SUBSCRIBERS, ROOT


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh virtualenv with dispatch installed from a freshly built wheel; returns its bin/."""
    base = tmp_path_factory.mktemp("wheel")
    dist = base / "dist"
    subprocess.run(
        [sys.executable, "-m", "build", "--wheel", "--outdir", str(dist), str(ROOT)],
        check=True, capture_output=True, timeout=600,
    )  # fmt: skip
    wheel = next(dist.glob("dispatch-*.whl"))
    env_dir = base / "venv"
    venv.create(env_dir, with_pip=True)
    pip = [str(env_dir / "bin" / "python"), "-m", "pip", "install", "-q", "--disable-pip-version-check"]
    subprocess.run([*pip, str(wheel)], check=True, capture_output=True, timeout=600)
    return env_dir / "bin"


@pytest.mark.slow
def test_installed_wheel_dry_run_from_another_folder(installed: Path, tmp_path: Path) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    settings = elsewhere / "settings.env"
    settings.write_text("".join(f"{k}='{v}'\n" for k, v in BASE_ENV.items()), encoding="utf-8")
    out = elsewhere / "out"
    result = subprocess.run(
        [str(installed / "dispatch"), "send", str(EXAMPLE_ARTICLE), "-s", str(EXAMPLE_SUBSCRIBERS),
         "--dry-run", "--out", str(out), "--env-file", str(settings)],
        cwd=elsewhere, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    emls = sorted(out.glob("*.eml"))
    assert len(emls) == 5  # the example list has 8 rows: 1 duplicate, 1 invalid, 1 unsubscribed
    for eml in emls:
        msg = message_from_bytes(eml.read_bytes(), policy=policy.default)
        assert msg.get_content_type() == "multipart/alternative"
        html = msg.get_body(("html",))
        assert html is not None
        assert 'style="' in html.get_content()
    assert (out / "index.html").is_file()
    # the templates came from the installed package, not from this checkout
    code = "from dispatch.compose.render import builtin_template_dir as d; print(d())"
    where = subprocess.run(
        [str(installed / "python"), "-c", code],
        cwd=elsewhere, capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    assert "site-packages" in where


@pytest.mark.slow
def test_installed_console_script_version(installed: Path) -> None:
    result = subprocess.run(
        [str(installed / "dispatch"), "--version"], capture_output=True, text=True, check=True
    )
    assert result.stdout.startswith("dispatch ")


@pytest.mark.slow
def test_a_plain_install_has_no_playwright_and_proofs_name_the_extra(installed: Path, tmp_path: Path) -> None:
    """Playwright (167 MB) is only for --png/--pdf: a plain install leaves it out, and asking for a
    proof says which extra to install (exit 2), before any other work."""
    found = subprocess.run(
        [str(installed / "python"), "-c", "import importlib.util as u; print(u.find_spec('playwright'))"],
        capture_output=True, text=True, check=True,
    ).stdout.strip()  # fmt: skip
    assert found == "None"
    done = subprocess.run(
        [str(installed / "dispatch"), "preview", str(EXAMPLE_ARTICLE), "--png", str(tmp_path / "png")],
        cwd=tmp_path, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert done.returncode == 2, done.stderr
    assert done.stderr.strip() == (
        "dispatch: error: --png and --pdf need the proofs extra (Playwright, which drives this machine's "
        "Chromium; nothing is downloaded): pip install 'dispatch[proofs]'"
    )
    assert not (tmp_path / "png").exists()


@pytest.mark.slow
def test_a_plain_install_stays_small(installed: Path) -> None:
    """Under 160 MB with everything a cron job needs."""
    site = next((installed.parent / "lib").glob("python3*/site-packages"))
    size = sum(p.stat().st_size for p in site.rglob("*") if p.is_file() and not p.is_symlink())
    pip = sum(p.stat().st_size for p in site.glob("pip*/**/*") if p.is_file())
    assert size - pip < 160 * 1024 * 1024, f"{(size - pip) / 1024 / 1024:.0f} MB"
