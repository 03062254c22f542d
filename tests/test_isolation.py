"""The suite never touches the real user's state folder: every test runs with a HOME of the
suite's own, so even a run that finds no settings file writes into a temporary folder."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from dispatch.settings import Settings, platform_state_dir
from tests.conftest import REAL_STATE, REAL_STATE_BEFORE, _tree


def test_the_default_state_folder_is_the_suites_own(private_home: Path) -> None:
    folder = Settings().state.path
    assert folder == platform_state_dir()
    assert folder.is_relative_to(private_home)
    assert not folder.is_relative_to(REAL_STATE) or REAL_STATE.is_relative_to(private_home)


def test_a_process_started_by_a_test_has_the_suites_home_too(private_home: Path, tmp_path: Path) -> None:
    found = subprocess.run(
        [sys.executable, "-c", "from dispatch.settings import Settings; print(Settings().state.path)"],
        capture_output=True, text=True, check=True, cwd=tmp_path, env=dict(os.environ),
    ).stdout.strip()  # fmt: skip
    assert Path(found).is_relative_to(private_home)


def test_the_real_state_folder_is_unchanged_so_far() -> None:
    """(The session fixture checks it again once every test has run.)"""
    assert _tree(REAL_STATE) == REAL_STATE_BEFORE
