"""Hostile setting values, kept as regression tests: each is refused when the settings are read,
by every command, with one line naming the setting (exit 2), never a traceback, an "internal
error" or a password."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.attack_helpers import judge_error, settings_file, write_article, write_list

Invoke = Callable[..., Any]
PASSWORD = "S3CRET%zzPW"


@pytest.fixture
def inputs(tmp_path: Path) -> tuple[Path, Path]:
    return write_article(tmp_path / "issue.md"), write_list(
        tmp_path / "people.csv", [("ann@example.org", "Ann")]
    )


def refused(result: Any, setting: str, *needles: str) -> str:
    """The run stopped with one error line naming ``setting``; returns the line."""
    assert result.exit_code == 2, result.stdout + result.stderr
    return judge_error(result.stderr, setting, *needles)


# --------------------------------------------------------------------------- DISPATCH_STATE_URL

BAD_STATE_URLS = [
    (f"postgresql://u:{PASSWORD}@127.0.0.1:1/db", "%25"),
    ("postgresql://u:S3CRET@[::1/db", "closed brackets"),
    ("postgresql://u:pa/ss-S3CRET@127.0.0.1/db", "%2F"),
    ("postgresql://u:S3CRET@127.0.0.1:99999/db", "1 to 65535"),
]


@pytest.mark.parametrize(("url", "hint"), BAD_STATE_URLS)
@pytest.mark.parametrize(
    "command", [("send", "--dry-run"), ("status",), ("status", "--json"), ("state", "--json")]
)
def test_a_malformed_state_url_is_refused_without_its_password(
    invoke: Invoke, tmp_path: Path, inputs: tuple[Path, Path], url: str, hint: str, command: tuple[str, ...]
) -> None:
    env = settings_file(tmp_path, STATE_URL=url)
    args = ("send", inputs[0], "-s", inputs[1], "--dry-run") if command[0] == "send" else command
    result = invoke(*args, "--env-file", env)
    for output in (result.stdout, result.stderr):
        assert "S3CRET" not in output
    assert result.exit_code == 2, result.stdout + result.stderr
    if "--json" in command:
        answer = json.loads(result.stdout)
        assert answer["kind"] != "internal error"
        assert "DISPATCH_STATE_URL" in answer["error"]
        assert hint in answer["error"]
    else:
        refused(result, "DISPATCH_STATE_URL", hint, "postgresql://u@")


def test_a_url_libpq_cannot_read_is_named_without_its_words(tmp_path: Path) -> None:
    """What passes the setting's checks but not libpq's (an unknown ?option): libpq's message,
    which quotes what it could not read, is never shown."""
    pytest.importorskip("psycopg")
    from dispatch.state.group import StateError
    from dispatch.state.pg import PgDatabase

    with pytest.raises(StateError) as caught:
        PgDatabase("postgresql://u:S3CRET@127.0.0.1:1/db?nosuchoption=1")
    assert "S3CRET" not in str(caught.value)
    assert "'postgresql://u@127.0.0.1:1/db?nosuchoption=1' is not a connection URL" in str(caught.value)
