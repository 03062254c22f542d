"""``dispatch init``'s library half: the newsletter folder it writes (real files, no mocks), and
the acceptance: a check and a dry run work in the new folder at once."""

from __future__ import annotations

import os
import re
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from dotenv import dotenv_values

from dispatch.compose.render import builtin_template_dir
from dispatch.errors import ExitCode, InputError
from dispatch.scaffold import TEMPLATE_FILES, scaffold
from dispatch.settings import PREFIX, SETTINGS, Settings, unknown_settings
from dispatch.settings.table import PLACEHOLDERS

SETTING_LINE = re.compile(r"^#?\s*(DISPATCH_[A-Z0-9_]+)=", re.MULTILINE)


def env_values(folder: Path) -> dict[str, str]:
    return {k: v or "" for k, v in dotenv_values(folder / ".env").items()}


def snapshot(folder: Path) -> dict[str, bytes | str]:
    """Every entry under ``folder``: a file's bytes, a symlink's target."""
    found: dict[str, bytes | str] = {}
    for path in sorted(folder.rglob("*")):
        name = str(path.relative_to(folder))
        if path.is_symlink():
            found[name] = f"-> {os.readlink(path)}"
        elif path.is_file():
            found[name] = path.read_bytes()
    return found


def test_env_names_every_setting_and_parses(tmp_path: Path) -> None:
    scaffold(tmp_path)
    text = (tmp_path / ".env").read_text(encoding="utf-8")
    assert set(SETTING_LINE.findall(text)) == {s.key for s in SETTINGS}
    values = env_values(tmp_path)
    assert unknown_settings(values) == []
    settings = Settings.from_mapping(values, settings_file=tmp_path / ".env")
    assert (settings.smtp_host, settings.smtp_security) == ("127.0.0.1", "none")
    assert settings.subscribers == Path("subscribers.csv")
    assert settings.unsubscribe_url == "https://example.org/unsubscribe/{token}"
    assert settings.sender is not None
    assert settings.sender.domain == "example.org"
    assert settings.list_id == "newsletter.example.org"
    assert "example" in settings.postal_address
    assert "EDIT" in text
    # the state is named explicitly, next to the .env: every run that reads it finds the same one
    assert settings.state.explicit
    assert settings.state.path == tmp_path / "dispatch-state"
    # every example value is marked, except the secret, which is fresh
    assert sorted(settings.placeholders()) == sorted(set(PLACEHOLDERS) - {PREFIX + "UNSUBSCRIBE_SECRET"})


@pytest.mark.parametrize("umask", [0o000, 0o022, 0o077])
def test_folders_are_private_whatever_the_umask(tmp_path: Path, umask: int) -> None:
    old = os.umask(umask)
    try:
        scaffold(tmp_path / "deep" / "letter", templates=True)
    finally:
        os.umask(old)
    for folder in (
        tmp_path / "deep",
        tmp_path / "deep" / "letter",
        tmp_path / "deep" / "letter" / "templates",
    ):
        assert stat.S_IMODE(folder.stat().st_mode) == 0o700, folder
    for name in (".env", "subscribers.csv"):
        assert stat.S_IMODE((tmp_path / "deep" / "letter" / name).stat().st_mode) == 0o600


def test_env_is_private_from_the_start_with_a_fresh_secret(tmp_path: Path) -> None:
    first, second = scaffold(tmp_path / "a"), scaffold(tmp_path / "b")
    for result in (first, second):
        assert stat.S_IMODE((result.folder / ".env").stat().st_mode) == 0o600
        assert stat.S_IMODE((result.folder / "subscribers.csv").stat().st_mode) == 0o600
    secrets = [env_values(tmp_path / name)["DISPATCH_UNSUBSCRIBE_SECRET"] for name in ("a", "b")]
    assert all(len(secret) >= 32 for secret in secrets)
    assert secrets[0] != secrets[1]


def test_writes_the_example_list_and_issue(tmp_path: Path) -> None:
    result = scaffold(tmp_path)
    assert [p.name for p in result.written] == [".env", "subscribers.csv", "article.md"]
    rows = (tmp_path / "subscribers.csv").read_text(encoding="utf-8").splitlines()
    assert rows[0] == "email,name,status"
    assert sum(row.endswith(",unsubscribed") for row in rows) == 1
    assert all(re.search(r"@example\.(org|com),", row) for row in rows[1:])
    article = (tmp_path / "article.md").read_text(encoding="utf-8")
    for key in ("title", "subject", "preheader", "date", "issue", "lang", "motto"):
        assert re.search(rf"^{key}: \S", article, re.MULTILINE), key
    for shape in (r"^## ", r"^- ", r"\]\(https://", r"^> "):
        assert re.search(shape, article, re.MULTILINE), shape
    assert not (tmp_path / "templates").exists()


def test_templates_are_copies_of_the_builtins(tmp_path: Path) -> None:
    result = scaffold(tmp_path, templates=True)
    for name in TEMPLATE_FILES:
        assert (tmp_path / "templates" / name).read_bytes() == (builtin_template_dir() / name).read_bytes()
    assert len(result.written) == 3 + len(TEMPLATE_FILES) == 6
    assert all("--template templates" in command for command in result.commands[1:])


@pytest.mark.parametrize("kind", ["file", "symlink", "dangling symlink"])
@pytest.mark.parametrize("name", [".env", "subscribers.csv", "article.md", "templates/style.css"])
def test_never_overwrites_and_writes_nothing(tmp_path: Path, name: str, kind: str) -> None:
    folder = tmp_path / "letter"
    (folder / "templates").mkdir(parents=True)
    (tmp_path / "mine.txt").write_text("mine\n", encoding="utf-8")
    target = folder / name
    if kind == "file":
        target.write_text("mine\n", encoding="utf-8")
    else:
        target.symlink_to(tmp_path / ("mine.txt" if kind == "symlink" else "gone.txt"))
    before = snapshot(tmp_path)
    with pytest.raises(InputError) as caught:
        scaffold(folder, templates=True)
    assert str(caught.value) == (
        f"{target}: already exists; dispatch init never overwrites: move it or choose another folder"
    )
    assert caught.value.exit_code == ExitCode.BAD_INPUT
    assert snapshot(tmp_path) == before


@pytest.mark.parametrize("where", ["templates", "."])
def test_refuses_a_file_where_a_folder_goes(tmp_path: Path, where: str) -> None:
    folder = tmp_path / "letter"
    if where == "templates":
        folder.mkdir()
    (folder / where if where != "." else folder).write_text("mine\n", encoding="utf-8")
    before = snapshot(tmp_path)
    with pytest.raises(InputError, match="is a file or a symlink, not a folder; dispatch init never"):
        scaffold(folder, templates=True)
    assert snapshot(tmp_path) == before


def test_refuses_a_symlinked_templates_folder(tmp_path: Path) -> None:
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "letter").mkdir()
    (tmp_path / "letter" / "templates").symlink_to(tmp_path / "elsewhere")
    with pytest.raises(InputError, match=r"letter/templates: is a file or a symlink, not a folder"):
        scaffold(tmp_path / "letter", templates=True)
    assert list((tmp_path / "elsewhere").iterdir()) == []
    assert sorted(p.name for p in (tmp_path / "letter").iterdir()) == ["templates"]


def test_creates_the_folder_and_says_what_to_run_next(tmp_path: Path) -> None:
    folder = tmp_path / "new folder" / "news"
    result = scaffold(folder)
    assert folder.is_dir()
    assert result.commands == (
        f"cd '{folder}'",
        "dispatch check article.md",
        "dispatch send article.md --dry-run",
    )
    assert result.report() == (
        f"Wrote .env, subscribers.csv, article.md and an empty state (dispatch-state/) in {folder}\n"
        f"Next:\n  cd '{folder}'\n"
        "  dispatch check article.md\n  dispatch send article.md --dry-run\n" + result.then
    )
    assert "edit .env" in result.then


def test_no_cd_into_the_current_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    result = scaffold(Path())
    assert result.commands == ("dispatch check article.md", "dispatch send article.md --dry-run")
    assert (tmp_path / ".env").is_file()


def run_dispatch(folder: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """``python -m dispatch`` in ``folder``, with no DISPATCH_* variable and a private home."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(PREFIX)}
    env |= {"HOME": str(folder.parent / "home"), "XDG_STATE_HOME": str(folder.parent / "state")}
    return subprocess.run(
        [sys.executable, "-m", "dispatch", *args], cwd=folder, env=env, stdin=subprocess.DEVNULL,
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip


@pytest.mark.slow
@pytest.mark.parametrize("templates", [False, True], ids=["builtin", "copied-templates"])
def test_a_check_and_a_dry_run_work_at_once(tmp_path: Path, templates: bool) -> None:
    folder = tmp_path / "letter"
    result = scaffold(folder, templates=templates)
    check_args, dry_run_args = (command.split()[1:] for command in result.commands[1:])
    made = {p.name for p in (folder / "dispatch-state").iterdir()}
    assert made == {"suppression.sqlite3"}  # the newsletter's state, empty: its first send starts there

    checked = run_dispatch(folder, *check_args)
    assert checked.returncode == 2, checked.stderr  # init's example values: a send would refuse
    for key in set(PLACEHOLDERS) - {PREFIX + "UNSUBSCRIBE_SECRET"}:
        assert f"Blocking:      {key} is still the example" in checked.stdout, key
    assert "a send would refuse to start" in checked.stdout

    dry = run_dispatch(folder, *dry_run_args)
    assert dry.returncode == 0, dry.stderr  # a clean demo, that says what a send would refuse
    assert dry.stdout.startswith("Dry run: nothing was sent.")
    for key in set(PLACEHOLDERS) - {PREFIX + "UNSUBSCRIBE_SECRET"}:
        assert f"Refused:       {key} is still the example" in dry.stdout, key
    assert "4 would be sent" in dry.stdout
    assert "unsubscribed (status 'unsubscribed')" in dry.stdout
    preview = folder / "dispatch-preview"
    assert (preview / "index.html").is_file()
    messages = sorted(preview.glob("*.eml"))
    assert len(messages) >= 1
    assert b"To: Ada Lovelace <ada@example.org>" in messages[0].read_bytes()
    assert f"State:         {folder / 'dispatch-state'} (DISPATCH_STATE_DIR in" in dry.stdout
    assert not (tmp_path / "state").exists()
    # no journal (at most the CSS cache, and SQLite's companions of the store it read)
    left = {
        p.name for p in (folder / "dispatch-state").rglob("*") if p.is_file() and p.parent.name != "cache"
    }
    assert left - {"suppression.sqlite3-wal", "suppression.sqlite3-shm"} == made
