"""One state per newsletter, found from its settings file wherever dispatch runs: cron under
``env -i`` with another HOME in ``/``, ``dispatch serve`` started elsewhere under yet another
HOME, and a terminal in the folder all read and write the same journal and suppression store.

Every run here is the real ``dispatch`` in a subprocess, against a real SMTP server and a real
``dispatch serve`` on 127.0.0.1, in a folder made by ``dispatch init``.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path

import pytest

from tests.inbox_helpers import local_target, serving, unsubscribe_links
from tests.smtp_servers import Server

pytestmark = pytest.mark.slow

MINE = {  # what a new user puts in place of init's examples
    "DISPATCH_FROM": "Harbour News <news@example.com>",
    "DISPATCH_REPLY_TO": "desk@example.com",
    "DISPATCH_ORGANIZATION": "Harbour Society",
    "DISPATCH_POSTAL_ADDRESS": "5 Harbour Road, 12345 Portsmouth",
    "DISPATCH_LIST_ID": "news.example.com",
    "DISPATCH_UNSUBSCRIBE_URL": "https://news.example.com/unsubscribe/{token}",
    "DISPATCH_RETRY_DELAY": "0.01",
}
READERS = [f"reader{n}@example.org" for n in range(6)]
ISSUE_2 = """---
title: The harbour walk is back
date: 2026-12-14
---

The harbour walk starts again on Saturday at ten, from the old crane. Bring good shoes.
"""


def run(
    *args: str | Path, cwd: Path | str, home: Path, environ: Mapping[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """``dispatch ARGS`` as cron runs it: ``env -i`` (only PATH and HOME), stdin closed."""
    env = {"PATH": "/usr/bin:/bin", "HOME": str(home), **(environ or {})}
    return subprocess.run(
        [sys.executable, "-m", "dispatch", *(str(a) for a in args)], cwd=cwd, env=env,
        stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip


def one_json(done: subprocess.CompletedProcess[str]) -> dict[str, object]:
    """Standard output holds exactly one JSON document, on one line, and nothing else."""
    lines = done.stdout.splitlines()
    assert len(lines) == 1, f"stdout: {done.stdout!r}\nstderr: {done.stderr}"
    data = json.loads(lines[0])
    assert isinstance(data, dict)
    return data


def set_values(env_file: Path, values: Mapping[str, str]) -> None:
    """Replace (or add) settings in a settings file, as a person edits it."""
    text = env_file.read_text(encoding="utf-8")
    for key, value in values.items():
        line = f'{key}="{value}"'
        text, found = re.subn(rf"^#?\s*{key}=.*$", lambda _m, line=line: line, text, flags=re.M)
        if not found:
            text += line + "\n"
    env_file.write_text(text, encoding="utf-8")


def unname_state(newsletter: Path, replacement: str = "") -> Path:
    """Take DISPATCH_STATE_DIR out of init's .env and the empty state init made: a newsletter
    whose state nobody named and that has none yet."""
    env_file = newsletter / ".env"
    text = env_file.read_text(encoding="utf-8")
    env_file.write_text(re.sub(r"^DISPATCH_STATE_DIR=.*$", replacement, text, flags=re.M))
    shutil.rmtree(newsletter / "dispatch-state")
    return env_file


@pytest.fixture
def newsletter(tmp_path: Path, plain_server: Server) -> Path:
    """A folder made by ``dispatch init``, its example values replaced, pointed at the server."""
    made = run("init", tmp_path / "news", cwd=tmp_path, home=tmp_path / "home-init")
    assert made.returncode == 0, made.stderr
    folder = tmp_path / "news"
    set_values(folder / ".env", {**MINE, **plain_server.env()})
    (folder / "subscribers.csv").write_text("email,name\n" + "".join(f"{a},R\n" for a in READERS))
    return folder


def test_cron_serve_and_terminal_share_one_state(
    newsletter: Path, plain_server: Server, tmp_path: Path
) -> None:
    env_file = newsletter / ".env"
    state = newsletter / "dispatch-state"
    first = run("send", newsletter / "article.md", "--env-file", env_file, "--yes", "--json",
                cwd="/", home=tmp_path / "home-a")  # fmt: skip
    assert first.returncode == 0, first.stderr
    summary = one_json(first)
    assert summary["sent_now"] == len(READERS)
    assert summary["state"] == {
        "backend": "sqlite",
        "path": str(state),
        "found_by": f"DISPATCH_STATE_DIR in {env_file}",
    }
    assert len(plain_server.received) == len(READERS)

    # cron again, another HOME: the issue is finished, nobody gets it twice
    again = run("send", newsletter / "article.md", "--env-file", env_file, "--yes", "--json",
                cwd="/", home=tmp_path / "home-b")  # fmt: skip
    assert again.returncode == 0, again.stderr
    assert (one_json(again)["sent_now"], one_json(again)["already_sent"]) == (0, len(READERS))
    assert len(plain_server.received) == len(READERS)

    # serve, started elsewhere under yet another HOME, records an unsubscribe in the same state
    leaving = READERS[2]
    message = next(m for m in plain_server.received if m.rcpt_tos == [leaving])
    link = unsubscribe_links(message.data)[0]
    elsewhere = tmp_path / "web"
    elsewhere.mkdir()
    with serving(env_file, elsewhere, environ={"HOME": str(tmp_path / "home-c")}) as endpoint:
        assert endpoint.one_click(local_target(link)).status == 200

    # the next issue, from cron under a fourth HOME: the reader who left is not sent it
    issue = newsletter / "issue-2.md"
    issue.write_text(ISSUE_2, encoding="utf-8")
    second = run("send", issue, "--env-file", env_file, "--yes", "--json", cwd="/", home=tmp_path / "home-d")
    assert second.returncode == 0, second.stderr
    data = one_json(second)
    assert (data["sent_now"], data["suppressed"]) == (len(READERS) - 1, 1)
    assert data["suppressed_recipients"] == [{"email": leaving, "reason": "unsubscribed"}]
    assert sum(data["accounting"].values()) == data["rows"] == len(READERS)  # type: ignore[union-attr]
    assert [m.rcpt_tos for m in plain_server.received[len(READERS) :]] == [
        [a] for a in READERS if a != leaving
    ]

    # status, from the terminal in the folder: that reader is suppressed, not pending
    status = run("status", data["campaign"], "--json", cwd=newsletter, home=tmp_path / "home-e")  # type: ignore[arg-type]
    counts = one_json(status)
    assert (counts["suppressed"], counts["pending"], counts["sent"]) == (1, 0, len(READERS) - 1)
    assert counts["state"]["path"] == str(state)  # type: ignore[index]

    # the sign-off page of a dry run names the suppressed reader and where the state is
    dry = run("send", issue, "--dry-run", cwd=newsletter, home=tmp_path / "home-f")
    assert dry.returncode == 0, dry.stderr
    page = (newsletter / "dispatch-preview" / "index.html").read_text(encoding="utf-8")
    assert leaving in page
    assert "unsubscribed" in page
    assert str(state) in page
    assert "Every row" in page


def test_the_cron_log_is_one_json_document_per_line(newsletter: Path, tmp_path: Path) -> None:
    log = tmp_path / "send.jsonl"
    for home in ("one", "two"):
        done = run("send", newsletter / "article.md", "--env-file", newsletter / ".env", "--yes", "--json",
                   cwd="/", home=tmp_path / home)  # fmt: skip
        with log.open("a", encoding="utf-8") as handle:
            handle.write(done.stdout)
    assert [json.loads(line)["exit_code"] for line in log.read_text().splitlines()] == [0, 0]


@pytest.mark.parametrize("in_file", [False, True])
def test_the_summary_says_where_the_state_was_named(newsletter: Path, tmp_path: Path, in_file: bool) -> None:
    """The real environment beats the settings file, so a state named there is the
    environment's, even when the file names another: the summary must not send a person
    looking in the wrong place."""
    elsewhere = tmp_path / "cron-state"
    if in_file:
        set_values(newsletter / ".env", {"DISPATCH_STATE_DIR": str(tmp_path / "file-state")})
    done = run("send", newsletter / "article.md", "--env-file", newsletter / ".env", "--dry-run", "--json",
               cwd="/", home=tmp_path / "home", environ={"DISPATCH_STATE_DIR": str(elsewhere)})  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert one_json(done)["state"] == {
        "backend": "sqlite", "path": str(elsewhere), "found_by": "DISPATCH_STATE_DIR in the environment",
    }  # fmt: skip


def test_a_send_that_would_start_an_unnamed_new_state_is_refused(
    newsletter: Path, plain_server: Server, tmp_path: Path
) -> None:
    env_file = unname_state(newsletter, "# DISPATCH_STATE_DIR=")
    done = run(
        "send",
        newsletter / "article.md",
        "--env-file",
        env_file,
        "--yes",
        "--json",
        cwd="/",
        home=tmp_path / "h",
    )
    assert done.returncode == 2
    would = newsletter / "dispatch-state"
    assert f"no dispatch state at {would} yet" in done.stderr
    assert f"Set DISPATCH_STATE_DIR in {env_file}" in done.stderr
    assert one_json(done)["exit_code"] == 2
    assert plain_server.received == []
    assert not (would / "journal.sqlite3").exists()

    # a state that exists is this newsletter's: found next to the settings file, and used
    named = run("send", newsletter / "article.md", "--env-file", env_file, "--yes", "--json", cwd="/",
                home=tmp_path / "h", environ={"DISPATCH_STATE_DIR": str(would)})  # fmt: skip
    assert named.returncode == 0, named.stderr
    assert one_json(named)["state"]["path"] == str(would)  # type: ignore[index]
    later = run(
        "send",
        newsletter / "article.md",
        "--env-file",
        env_file,
        "--yes",
        "--json",
        cwd="/",
        home=tmp_path / "h",
    )
    assert later.returncode == 0, later.stderr
    assert one_json(later)["state"] == {
        "backend": "sqlite",
        "path": str(would),
        "found_by": f"next to {env_file}: the default",
    }
    assert one_json(later)["already_sent"] == len(READERS)


def test_an_earlier_state_under_home_is_named_in_the_refusal(newsletter: Path, tmp_path: Path) -> None:
    env_file = unname_state(newsletter)
    home = tmp_path / "old-home"
    legacy = home / ".local" / "state" / "dispatch"
    legacy.mkdir(parents=True)
    (legacy / "journal.sqlite3").write_bytes(b"")
    done = run("send", newsletter / "article.md", "--env-file", env_file, "--yes", cwd="/", home=home)
    assert done.returncode == 2
    assert (
        f"an earlier dispatch kept its state in {legacy}: DISPATCH_STATE_DIR={legacy} keeps it" in done.stderr
    )


@pytest.mark.parametrize("command", [["serve", "--port", "1"], ["suppress", "add", "x@example.org"]])
def test_other_writers_refuse_an_unnamed_new_state_too(
    newsletter: Path, tmp_path: Path, command: list[str]
) -> None:
    env_file = unname_state(newsletter)
    done = run(*command, "--env-file", env_file, cwd="/", home=tmp_path / "h")
    assert done.returncode == 2
    assert "no dispatch state at" in done.stderr
    assert not (newsletter / "dispatch-state").exists()


def test_serve_with_a_settings_file_copied_away_from_its_state_refuses(
    newsletter: Path, tmp_path: Path
) -> None:
    """Unsubscribes recorded in a second, empty state would reach no send."""
    copy = tmp_path / "web" / ".env"
    copy.parent.mkdir()
    copy.write_text((newsletter / ".env").read_text(encoding="utf-8"), encoding="utf-8")
    done = run("serve", "--port", "1", "--env-file", copy, cwd="/", home=tmp_path / "h")
    assert done.returncode == 2
    assert f"no dispatch state at {copy.parent / 'dispatch-state'} yet" in done.stderr
    assert not (copy.parent / "dispatch-state").exists()


def test_a_settings_file_copied_away_from_its_state_never_starts_a_new_one(
    newsletter: Path, plain_server: Server, tmp_path: Path
) -> None:
    """init writes a relative DISPATCH_STATE_DIR: a copy of the .env elsewhere points at a state
    that does not exist. A cron send must not start it (it would mail everyone again, the
    unsubscribed included); a dry run says it is new; an absolute path follows the file."""
    env_file = newsletter / ".env"
    first = run(
        "send", newsletter / "article.md", "--env-file", env_file, "--yes", cwd="/", home=tmp_path / "h"
    )
    assert first.returncode == 0, first.stderr
    sent = len(plain_server.received)
    assert sent == len(READERS)
    copy = tmp_path / "etc" / ".env"
    copy.parent.mkdir()
    copy.write_text(env_file.read_text(encoding="utf-8"), encoding="utf-8")
    would = copy.parent / "dispatch-state"
    args = ("send", newsletter / "article.md", "-s", newsletter / "subscribers.csv", "--env-file", copy)

    dry = run(*args, "--dry-run", cwd="/", home=tmp_path / "h")
    assert (
        f"State:         {would} (DISPATCH_STATE_DIR in {copy}) — new: nothing recorded there yet"
        in dry.stdout
    )

    cron = run(*args, "--yes", "--json", cwd="/", home=tmp_path / "h")
    assert cron.returncode == 2
    assert f"no dispatch state at {would} yet (DISPATCH_STATE_DIR in {copy}, relative to" in cron.stderr
    assert "copied or moved away from its state" in cron.stderr
    assert one_json(cron)["exit_code"] == 2
    assert len(plain_server.received) == sent, "nobody was mailed again"
    assert not (would / "journal.sqlite3").exists()

    set_values(
        copy, {"DISPATCH_STATE_DIR": str(newsletter / "dispatch-state")}
    )  # the state, by its full path
    again = run(*args, "--yes", "--json", cwd="/", home=tmp_path / "h")
    assert again.returncode == 0, again.stderr
    assert one_json(again)["already_sent"] == len(READERS)
    assert len(plain_server.received) == sent


def test_a_relative_state_dir_is_never_taken_from_the_working_folder(tmp_path: Path) -> None:
    done = run("status", cwd=tmp_path, home=tmp_path, environ={"DISPATCH_STATE_DIR": "somewhere"})
    assert done.returncode == 2
    assert "DISPATCH_STATE_DIR: somewhere is relative, and there is no settings file" in done.stderr
    assert not (tmp_path / "somewhere").exists()


def _issue(folder: Path, n: int) -> Path:
    path = folder / f"issue-{n}.md"
    path.write_text(f"---\ntitle: Issue {n}\ndate: 2026-12-{n:02d}\n---\n\nWhat happened in week {n}.\n")
    return path


def test_unsubscribe_links_from_the_first_issue_outlive_renames_and_a_rotation(
    newsletter: Path, plain_server: Server, tmp_path: Path
) -> None:
    """Issue 14's acceptance: rename the organisation (the list id follows it), then set another
    list id, then rotate the secret; a link from the very first issue still unsubscribes its
    reader from the next one."""
    env_file = newsletter / ".env"
    set_values(env_file, {"DISPATCH_LIST_ID": ""})  # the list id comes from the organisation's name

    def send(n: int) -> dict[str, object]:
        done = run("send", _issue(newsletter, n), "--env-file", env_file, "--yes", "--json", cwd="/",
                   home=tmp_path / f"h{n}")  # fmt: skip
        assert done.returncode == 0, done.stderr
        return one_json(done)

    first = send(1)
    links = {m.rcpt_tos[0]: unsubscribe_links(m.data)[0] for m in plain_server.received}
    assert first["sent_now"] == len(READERS)

    set_values(env_file, {"DISPATCH_ORGANIZATION": "Harbour and Docks Society"})
    renamed = send(2)
    assert any("the list id is now harbour-and-docks-society.example.com" in w for w in renamed["warnings"])  # type: ignore[union-attr]

    set_values(env_file, {"DISPATCH_LIST_ID": "letters.example.com"})
    relisted = send(3)
    assert any("the list id is now letters.example.com" in w for w in relisted["warnings"])  # type: ignore[union-attr]

    old = re.search(r'^DISPATCH_UNSUBSCRIBE_SECRET="?([^"\n]+)"?$', env_file.read_text(), re.M)
    assert old is not None
    set_values(env_file, {"DISPATCH_UNSUBSCRIBE_SECRET": "rotated-" + "x" * 40,
                          "DISPATCH_UNSUBSCRIBE_PREVIOUS_SECRETS": old[1]})  # fmt: skip

    leaving = READERS[4]
    with serving(env_file, tmp_path, environ={"HOME": str(tmp_path / "web-home")}) as endpoint:
        assert endpoint.one_click(local_target(links[leaving])).status == 200

    before = len(plain_server.received)
    fourth = send(4)
    assert fourth["suppressed_recipients"] == [{"email": leaving, "reason": "unsubscribed"}]
    assert sorted(m.rcpt_tos[0] for m in plain_server.received[before:]) == sorted(set(READERS) - {leaving})


def test_a_dry_run_says_when_the_state_folder_cannot_be_made(newsletter: Path, tmp_path: Path) -> None:
    """A dry run shows what a send would do: with a state folder that cannot be created (here
    in /proc, which nobody can write, root included) the send stops at its journal, so the dry
    run marks it Blocking and exits 2 too; the preview is still written."""
    state = Path("/proc/1/dispatch-state")
    out = tmp_path / "preview"
    done = run("send", newsletter / "article.md", "--env-file", newsletter / ".env", "--dry-run",
               "--out", out, cwd=newsletter, home=tmp_path / "home",
               environ={"DISPATCH_STATE_DIR": str(state)})  # fmt: skip
    assert done.returncode == 2, done.stdout + done.stderr
    assert f"Blocking:      the state folder {state} cannot be used: " in done.stdout
    assert "Traceback" not in done.stderr
    assert (out / "index.html").is_file()
    sent = run("send", newsletter / "article.md", "--env-file", newsletter / ".env", "--yes", cwd=newsletter,
               home=tmp_path / "home", environ={"DISPATCH_STATE_DIR": str(state)})  # fmt: skip
    assert sent.returncode == 2, sent.stdout + sent.stderr
    assert "DISPATCH_STATE_DIR" in sent.stderr
