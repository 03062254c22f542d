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


# --------------------------------------------------------------------------- web addresses

BAD_WEB_ADDRESSES = [
    ("UNSUBSCRIBE_URL", "https://[::1/u/{token}", "closed brackets"),
    ("UNSUBSCRIBE_URL", "https://news.example.com:99999/u/{token}", "1 to 65535"),
    ("UNSUBSCRIBE_URL", "https://news.example.com:0/u/{token}", "1 to 65535"),
    ("UNSUBSCRIBE_URL", "https://news.example.com/u/{tok", "outside a placeholder"),
    ("UNSUBSCRIBE_URL", "https://news.example.com/u/token}", "outside a placeholder"),
    ("UNSUBSCRIBE_URL", "https://news.example.com/u/%{token}", "%25"),
    ("UNSUBSCRIBE_MAILTO", "unsubscribe@example.org?subject={tok", "outside a placeholder"),
    ("WEB_URL", "abc", "https://"),
    ("WEB_URL", "https://[::1/news/", "closed brackets"),
    ("WEB_URL", "https://example.org:70000/news/", "1 to 65535"),
    ("WEB_URL", "https://example.org/news/{campain}.html", "{campaign}"),
    ("WEB_URL", "https://example.org/news/%zz", "%25"),
]


@pytest.mark.parametrize(("setting", "value", "hint"), BAD_WEB_ADDRESSES)
@pytest.mark.parametrize("command", ["send", "status"])
def test_a_web_address_that_cannot_work_is_refused_when_read(
    invoke: Invoke,
    tmp_path: Path,
    inputs: tuple[Path, Path],
    setting: str,
    value: str,
    hint: str,
    command: str,
) -> None:
    env = settings_file(tmp_path, **{setting: value})
    args = ("send", *inputs[:1], "-s", inputs[1], "--dry-run") if command == "send" else (command,)
    result = invoke(*args, "--env-file", env)
    refused(result, f"DISPATCH_{setting}:", hint)
    assert not (tmp_path / "state").exists()


@pytest.mark.parametrize(
    "url",
    ["https://[::1/token", "https://login.example.org:99999/token", "https://login.example.org/%token"],
)
def test_an_oauth_endpoint_that_cannot_work_is_refused(invoke: Invoke, tmp_path: Path, url: str) -> None:
    env = settings_file(
        tmp_path, SMTP_AUTH="oauth2", OAUTH_PROVIDER="custom", OAUTH_CLIENT_ID="client",
        SMTP_USER="news@example.org", SMTP_HOST="smtp.example.org", OAUTH_TOKEN_URL=url,
    )  # fmt: skip
    result = invoke("status", "--env-file", env)
    refused(result, "DISPATCH_OAUTH_TOKEN_URL:")


# --------------------------------------------------------------------------- numbers


@pytest.mark.parametrize(
    ("setting", "value"),
    [
        ("SMTP_TIMEOUT", "inf"),
        ("SMTP_TIMEOUT", "99999999999999999999999"),
        ("SMTP_TIMEOUT", "1e400"),
        ("SMTP_TIMEOUT", "30,inf"),
        ("GIVE_UP_DAYS", "inf"),
        ("GIVE_UP_DAYS", "1e300"),
    ],
)
def test_an_endless_number_is_refused_when_read(
    invoke: Invoke, tmp_path: Path, inputs: tuple[Path, Path], setting: str, value: str
) -> None:
    """``inf`` seconds passed the dry run, then the real send died on the platform's time_t."""
    env = settings_file(tmp_path, **{setting: value})
    result = invoke("send", inputs[0], "-s", inputs[1], "--dry-run", "--env-file", env)
    line = refused(result, f"DISPATCH_{setting}:", "between 0 and ")
    assert "inf" not in line.partition("between")[2].partition(", got")[0]


@pytest.mark.parametrize("value", ["0.5", "0.9", "0.0001KB"])
def test_a_size_under_one_byte_is_refused_not_taken_for_no_limit(
    invoke: Invoke, tmp_path: Path, inputs: tuple[Path, Path], value: str
) -> None:
    env = settings_file(tmp_path, MAX_MESSAGE_SIZE=value)
    result = invoke("send", inputs[0], "-s", inputs[1], "--dry-run", "--env-file", env)
    refused(result, "DISPATCH_MAX_MESSAGE_SIZE:", "less than a byte")
