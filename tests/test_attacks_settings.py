"""Attacks on settings (issue 6, class 6), kept as regression tests.

Expected: a misspelled setting in the settings file stops the run (exit 2) naming it and the
closest known name, and in the process environment is a warning; the send summary shows the
relay ``host:port`` and the From address; ``DISPATCH_UNSUBSCRIBE_MAILTO`` (like the URL) that
would smuggle another URI into ``List-Unsubscribe`` is refused before anything is sent.
"""

from __future__ import annotations

import json
import os
import pty
import re
import select
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.attack_helpers import (
    Recording,
    Relays,
    clean_environ,
    judge_error,
    no_crash,
    parse,
    settings_values,
    write_article,
    write_list,
    write_settings,
)

Invoke = Callable[..., Any]
SECRET = "hunter2-s3cret-value-in-a-typo"


@pytest.fixture
def scene(tmp_path: Path, relay: Relays) -> dict[str, Any]:
    server = relay.start(Recording())
    return {
        "tmp": tmp_path,
        "server": server,
        "article": write_article(tmp_path / "issue.md"),
        "list": write_list(tmp_path / "people.csv", [("ann@example.org", "Ann"), ("bob@example.com", "Bob")]),
    }


def env_with_line(scene: dict[str, Any], line: str, **overrides: str | None) -> Path:
    path = write_settings(
        scene["tmp"] / "typo.env", settings_values(scene["tmp"], scene["server"], **overrides)
    )
    path.write_text(path.read_text(encoding="utf-8") + line + "\n", encoding="utf-8")
    return path


# ------------------------------------------------------------------------- misspelled names

TYPOS = [
    ("DISPATCH_SMTP_HOTS=relay.example.org", "DISPATCH_SMTP_HOTS", "DISPATCH_SMTP_HOST"),
    ("DISPATCH_POSTAL_ADRESS='2 Other Street'", "DISPATCH_POSTAL_ADRESS", "DISPATCH_POSTAL_ADDRESS"),
    ("DISPATCH_UNSUBSCRIBE_SECERT=abc", "DISPATCH_UNSUBSCRIBE_SECERT", "DISPATCH_UNSUBSCRIBE_SECRET"),
    (f"DISPATCH_SMTP_PASWORD={SECRET}", "DISPATCH_SMTP_PASWORD", "DISPATCH_SMTP_PASSWORD"),
    ("DISPATCH_DAILY_LIMT=10", "DISPATCH_DAILY_LIMT", "DISPATCH_DAILY_LIMIT"),
    ("DISPATCH_CONECTIONS=4", "DISPATCH_CONECTIONS", "DISPATCH_CONNECTIONS"),
    ("export DISPATCH_SMTP_PROT=2525", "DISPATCH_SMTP_PROT", "DISPATCH_SMTP_PORT"),
    ("DISPATCH_SMTP_HOST_=relay.example.org", "DISPATCH_SMTP_HOST_", "DISPATCH_SMTP_HOST"),
    ("dispatch_smtp_host=relay.example.org", "dispatch_smtp_host", "DISPATCH_SMTP_HOST"),
    ("Dispatch_Smtp_Port=2525", "Dispatch_Smtp_Port", "DISPATCH_SMTP_PORT"),
    ("DISPATH_SMTP_HOST=relay.example.org", "DISPATH_SMTP_HOST", "DISPATCH_SMTP_HOST"),
    ("DISPACTH_FROM='Other <other@example.org>'", "DISPACTH_FROM", "DISPATCH_FROM"),
    (f"DISPATCHSMTP_PASSWORD={SECRET}", "DISPATCHSMTP_PASSWORD", "DISPATCH_SMTP_PASSWORD"),
]


@pytest.mark.parametrize(("line", "name", "close"), TYPOS, ids=[t[1] for t in TYPOS])
@pytest.mark.parametrize("mode", ["dry-run", "send"])
def test_misspelled_setting_in_the_file_stops_the_run(
    invoke: Invoke, scene: dict[str, Any], line: str, name: str, close: str, mode: str
) -> None:
    env = env_with_line(scene, line)
    args = ("--dry-run", "--out", scene["tmp"] / "out") if mode == "dry-run" else ("--yes", "--json")
    result = invoke("send", scene["article"], "-s", scene["list"], "--env-file", env, *args)
    assert result.exit_code == 2, result.stdout + result.stderr
    judge_error(result.stderr, name, close)
    assert SECRET not in result.stdout + result.stderr
    assert scene["server"].received == []
    if mode == "send":
        assert json.loads(result.stdout)["exit_code"] == 2


@pytest.mark.parametrize(
    "command",
    [
        ("preview", "@ARTICLE@", "-s", "@LIST@", "--out", "@TMP@/p.html"),
        ("status",),
        ("check", "@ARTICLE@", "-s", "@LIST@"),
        ("suppress", "list"),
    ],
    ids=["preview", "status", "check", "suppress-list"],
)
def test_misspelled_setting_stops_every_command(
    invoke: Invoke, scene: dict[str, Any], command: tuple[str, ...]
) -> None:
    env = env_with_line(scene, "DISPATCH_STATE_DRI=/tmp/elsewhere")
    args = [
        a.replace("@ARTICLE@", str(scene["article"])).replace("@LIST@", str(scene["list"]))
        .replace("@TMP@", str(scene["tmp"]))
        for a in command
    ]  # fmt: skip
    result = invoke(*args, "--env-file", env)
    assert result.exit_code == 2, result.stdout + result.stderr
    judge_error(result.stderr, "DISPATCH_STATE_DRI", "DISPATCH_STATE_DIR")


def test_default_dot_env_with_a_typo_stops_the_run(invoke: Invoke, scene: dict[str, Any]) -> None:
    """The .env found in the working folder (no --env-file) is checked the same way."""
    dot_env = Path.cwd() / ".env"
    values = settings_values(scene["tmp"], scene["server"])
    write_settings(dot_env, values)
    dot_env.write_text(
        dot_env.read_text(encoding="utf-8") + "DISPATCH_REPLY_TOO=x@example.org\n", encoding="utf-8"
    )
    result = invoke("send", scene["article"], "-s", scene["list"], "--yes")
    assert result.exit_code == 2
    judge_error(result.stderr, "DISPATCH_REPLY_TOO", "DISPATCH_REPLY_TO")
    assert scene["server"].received == []


@pytest.mark.parametrize(
    ("line", "meant"), [("SMTP_PORT=2525", "DISPATCH_SMTP_PORT"), ("rate=5/s", "DISPATCH_RATE")]
)
def test_a_setting_without_its_prefix_in_the_file_is_named(
    invoke: Invoke, scene: dict[str, Any], line: str, meant: str
) -> None:
    """A .env may hold other programs' names, so it is a warning, not a refusal; but a dispatch
    setting written without DISPATCH_ is never silently ignored."""
    env = env_with_line(scene, line)
    result = invoke(
        "send",
        scene["article"],
        "-s",
        scene["list"],
        "--env-file",
        env,
        "--dry-run",
        "--out",
        scene["tmp"] / "o",
    )
    assert result.exit_code == 0, result.stderr
    name = line.split("=", maxsplit=1)[0]
    assert f"sets {name}, which dispatch does not read (did you mean {meant}?)" in result.stderr


@pytest.mark.parametrize(
    ("name", "close"),
    [("DISPATCH_SMTP_HOTS", "DISPATCH_SMTP_HOST"), ("DISPATCH_RETRYS", "DISPATCH_RETRIES")],
)
def test_misspelled_setting_in_the_environment_is_a_warning(
    invoke: Invoke, scene: dict[str, Any], monkeypatch: pytest.MonkeyPatch, name: str, close: str
) -> None:
    env = write_settings(scene["tmp"] / "ok.env", settings_values(scene["tmp"], scene["server"]))
    monkeypatch.setenv(name, "something")
    result = invoke("send", scene["article"], "-s", scene["list"], "--env-file", env, "--yes")
    no_crash(result.stderr)
    assert result.exit_code == 0, result.stderr
    warnings = [line for line in result.stderr.splitlines() if "warning" in line and name in line]
    assert warnings, result.stderr
    assert close in warnings[0]
    assert len(scene["server"].received) == 2


# ------------------------------------------------------------------------- the summary says where


@pytest.mark.parametrize("as_json", [False, True])
def test_send_summary_names_relay_and_sender(invoke: Invoke, scene: dict[str, Any], as_json: bool) -> None:
    env = write_settings(
        scene["tmp"] / "ok.env",
        settings_values(scene["tmp"], scene["server"], FROM="Weekly <weekly@example.org>"),
    )
    extra = ["--json"] if as_json else []
    result = invoke("send", scene["article"], "-s", scene["list"], "--env-file", env, "--yes", *extra)
    assert result.exit_code == 0, result.stderr
    report = result.stderr if as_json else result.stdout
    assert f"127.0.0.1:{scene['server'].port}" in report
    assert "weekly@example.org" in report


# ------------------------------------------------------------------------- unsubscribe settings

BAD_MAILTOS = [
    "unsubscribe@example.org>",
    "<unsubscribe@example.org>",
    "unsubscribe@example.org>, <https://evil.example.com/x",
    "unsubscribe@example.org,victim@example.org",
    "unsubscribe@example.org victim@example.org",
    "unsubscribe@example.org\tvictim@example.org",
    'unsub"@example.org',
    "mailto:unsubscribe@example.org?subject=x>,<https://evil.example.com/",
    "mailto:unsubscribe@example.org?subject=a b",
    "unsubscribe@exämple.org",
    "un\\subscribe@example.org",
    "unsubscribe@example.org;victim@example.org",
    "unsubscribe@example.org?subject=<x>",
]


@pytest.mark.parametrize("mailto", BAD_MAILTOS)
@pytest.mark.parametrize("mode", ["dry-run", "send"])
def test_unsubscribe_mailto_that_smuggles_a_uri_is_refused(
    invoke: Invoke, scene: dict[str, Any], mailto: str, mode: str
) -> None:
    env = write_settings(
        scene["tmp"] / "mailto.env",
        settings_values(scene["tmp"], scene["server"], UNSUBSCRIBE_MAILTO=mailto),
    )
    args = ("--dry-run", "--out", scene["tmp"] / "out") if mode == "dry-run" else ("--yes",)
    result = invoke("send", scene["article"], "-s", scene["list"], "--env-file", env, *args)
    assert result.exit_code == 2, result.stdout + result.stderr
    judge_error(result.stderr, "DISPATCH_UNSUBSCRIBE_MAILTO")
    assert scene["server"].received == []


BAD_URLS = [
    "https://example.org/u/{token}>, <https://evil.example.com/",
    "https://example.org/u/{token},https://evil.example.com/",
    "https://example.org/u/{token} x",
    "https://example.org/u/{token}\tx",
    'https://example.org/u/"{token}',
    "https://exämple.org/u/{token}",
    "http://example.org/u/{token}",
    "https://example.org/u/{token}{secret}",
]


@pytest.mark.parametrize("url", BAD_URLS)
def test_unsubscribe_url_that_smuggles_a_uri_is_refused(
    invoke: Invoke, scene: dict[str, Any], url: str
) -> None:
    env = write_settings(
        scene["tmp"] / "url.env", settings_values(scene["tmp"], scene["server"], UNSUBSCRIBE_URL=url)
    )
    result = invoke("send", scene["article"], "-s", scene["list"], "--env-file", env, "--yes")
    assert result.exit_code == 2, result.stdout + result.stderr
    judge_error(result.stderr, "DISPATCH_UNSUBSCRIBE_URL")
    assert scene["server"].received == []


@pytest.mark.parametrize(
    "mailto",
    [
        "unsubscribe@example.org",
        "mailto:unsub+{token}@example.org",
        "unsub@example.org?subject=unsubscribe%20me",
    ],
)
def test_list_unsubscribe_holds_exactly_the_two_uris(
    invoke: Invoke, scene: dict[str, Any], mailto: str
) -> None:
    env = write_settings(
        scene["tmp"] / "ok.env", settings_values(scene["tmp"], scene["server"], UNSUBSCRIBE_MAILTO=mailto)
    )
    result = invoke("send", scene["article"], "-s", scene["list"], "--env-file", env, "--yes")
    assert result.exit_code == 0, result.stderr
    for item in scene["server"].received:
        value = " ".join(str(parse(item.data)["List-Unsubscribe"]).split())
        uris = re.findall(r"<([^<>]*)>", value)
        assert len(uris) == 2, value
        assert uris[0].startswith("https://example.org/u/")
        assert uris[1].startswith("mailto:")
        assert re.fullmatch(r"(<[^<>]*>)(, ?<[^<>]*>)", value), value


@pytest.mark.parametrize(("answer", "code"), [("n", 1), ("ctrl-c", 130)])
def test_confirmation_prompt_names_relay_and_sender(scene: dict[str, Any], answer: str, code: int) -> None:
    """On a terminal, the question itself says where the mail goes and from whom; "n" sends
    nothing (exit 1), and neither does Ctrl-C (exit 130, as for any interruption)."""
    env = write_settings(
        scene["tmp"] / "ok.env",
        settings_values(scene["tmp"], scene["server"], FROM="Weekly <weekly@example.org>"),
    )
    leader, follower = pty.openpty()
    argv = [sys.executable, "-m", "dispatch", "send", str(scene["article"]), "-s", str(scene["list"])]
    proc = subprocess.Popen(
        [*argv, "--env-file", str(env)],
        stdin=follower,
        stdout=follower,
        stderr=follower,
        cwd=scene["tmp"],
        env=clean_environ(),
        close_fds=True,
    )
    os.close(follower)
    shown = b""
    try:
        while b"[y/N]" not in shown.split(b"Send", 1)[-1] or b"Send" not in shown:  # waiting for input
            ready, _, _ = select.select([leader], [], [], 60)
            assert ready, f"no confirmation prompt within 60 s: {shown!r}"
            chunk = os.read(leader, 4096)
            assert chunk, f"dispatch ended without asking: {shown!r}"
            shown += chunk
        if answer == "n":
            os.write(leader, b"n\n")
        else:
            time.sleep(0.2)  # (the prompt is written just before the read begins)
            proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=120) == code
    finally:
        if proc.poll() is None:
            proc.kill()
        os.close(leader)
    prompt = shown.decode("utf-8", "replace")
    assert f"127.0.0.1:{scene['server'].port}" in prompt
    assert "weekly@example.org" in prompt
    assert scene["server"].received == []
