"""Attacks on what ``--out`` and ``preview --out`` write (issue 6, class 3), kept as regression tests.

Expected: dispatch replaces or removes only files it can prove it wrote, never writes through a
symlink, refuses an output that is one of the run's inputs or a file someone else owns (exit 2,
one line, nothing changed), writes previews private (0600), and a dry run of a campaign that was
already sent still writes its preview.
"""

from __future__ import annotations

import hashlib
import os
import stat
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.attack_helpers import (
    Relays,
    clean_environ,
    eml_files,
    judge_error,
    no_crash,
    run_dispatch,
    settings_file,
    tree,
    write_article,
    write_list,
)

Invoke = Callable[..., Any]
USER_TEXT = b"the user's own file: do not touch\n"
NOBODY = 65534


@pytest.fixture
def scene(tmp_path: Path) -> dict[str, Path]:
    return {
        "tmp": tmp_path,
        "article": write_article(tmp_path / "issue.md"),
        "list": write_list(
            tmp_path / "people.csv",
            [("ann@example.org", "Ann"), ("bob@example.com", "Bob"), ("cy@example.org", "Cy")],
        ),
        "env": settings_file(tmp_path),
        "out": tmp_path / "out",
    }


def dry_run(invoke: Invoke, scene: dict[str, Path], out: Path | None = None, *extra: str | Path) -> Any:
    return invoke(
        "send", scene["article"], "-s", scene["list"], "--env-file", scene["env"], "--dry-run",
        "--out", out or scene["out"], *extra,
    )  # fmt: skip


def preview(invoke: Invoke, scene: dict[str, Path], out: Path, *extra: str | Path) -> Any:
    return invoke(
        "preview", scene["article"], "-s", scene["list"], "--env-file", scene["env"], "--out", out, *extra
    )


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# ------------------------------------------------------------------------- users' files stay


@pytest.mark.parametrize(
    "name",
    [
        "20240115-minutes.html",
        "notes.eml",
        "00001-minutes.html",
        "12345-report.eml",
        "00002-ann@home.html",
        "00001-ann@example.org.html.bak",
        "00001-ann@example.org.txt",
        "INDEX.HTML",
    ],
)
def test_users_files_survive_two_dry_runs(invoke: Invoke, scene: dict[str, Path], name: str) -> None:
    scene["out"].mkdir()
    mine = scene["out"] / name
    mine.write_bytes(USER_TEXT)
    first = dry_run(invoke, scene)
    second = dry_run(invoke, scene)
    no_crash(first.stderr + second.stderr)
    assert mine.read_bytes() == USER_TEXT


def test_user_file_with_a_message_like_name_is_not_replaced(invoke: Invoke, scene: dict[str, Path]) -> None:
    """``00001-ann@example.org.html`` that the user put there: a foreign file, refused, kept."""
    scene["out"].mkdir()
    mine = scene["out"] / "00001-ann@example.org.html"
    mine.write_bytes(USER_TEXT)
    result = dry_run(invoke, scene)
    assert result.exit_code == 2
    judge_error(result.stderr, str(mine))
    assert mine.read_bytes() == USER_TEXT


def test_user_file_for_a_recipient_not_in_this_run_is_not_removed(
    invoke: Invoke, scene: dict[str, Path]
) -> None:
    scene["out"].mkdir()
    mine = scene["out"] / "00009-zed@example.org.eml"
    mine.write_bytes(USER_TEXT)
    dry_run(invoke, scene)
    dry_run(invoke, scene)
    assert mine.read_bytes() == USER_TEXT


def test_foreign_index_html_is_refused_and_nothing_is_written(invoke: Invoke, scene: dict[str, Path]) -> None:
    scene["out"].mkdir()
    (scene["out"] / "index.html").write_bytes(USER_TEXT)
    before = tree(scene["out"])
    result = dry_run(invoke, scene, None, "--json")
    assert result.exit_code == 2
    judge_error(result.stderr, "index.html")
    assert tree(scene["out"]) == before


@pytest.mark.parametrize("name", ["index.html", "00001-ann@example.org.html", "00002-bob@example.com.eml"])
@pytest.mark.parametrize("dangling", [False, True], ids=["to-user-file", "dangling"])
def test_symlinked_output_is_never_written_through(
    invoke: Invoke, scene: dict[str, Path], name: str, dangling: bool
) -> None:
    scene["out"].mkdir()
    target = scene["tmp"] / "elsewhere" / "precious.html"
    target.parent.mkdir()
    if not dangling:
        target.write_bytes(USER_TEXT)
    (scene["out"] / name).symlink_to(target)
    result = dry_run(invoke, scene)
    assert result.exit_code == 2
    judge_error(result.stderr, name)
    if dangling:
        assert not target.exists(), "a file was created through a dangling symlink"
    else:
        assert target.read_bytes() == USER_TEXT
    assert (scene["out"] / name).is_symlink()


def test_symlink_planted_after_a_first_run_is_not_followed(invoke: Invoke, scene: dict[str, Path]) -> None:
    """Dispatch's own index.html swapped for a symlink between two runs."""
    assert dry_run(invoke, scene).exit_code == 0
    target = scene["tmp"] / "precious.txt"
    target.write_bytes(USER_TEXT)
    index = scene["out"] / "index.html"
    index.unlink()
    index.symlink_to(target)
    result = dry_run(invoke, scene)
    assert result.exit_code == 2
    judge_error(result.stderr, "index.html")
    assert target.read_bytes() == USER_TEXT


def test_edited_preview_is_neither_replaced_nor_removed(invoke: Invoke, scene: dict[str, Path]) -> None:
    assert dry_run(invoke, scene).exit_code == 0
    page = scene["out"] / "00001-ann@example.org.html"
    page.write_bytes(USER_TEXT)
    stale = scene["out"] / "00003-cy@example.org.eml"
    stale.write_bytes(USER_TEXT)
    write_list(scene["list"], [("ann@example.org", "Ann")])
    dry_run(invoke, scene)
    assert page.read_bytes() == USER_TEXT
    assert stale.read_bytes() == USER_TEXT


def test_rerun_replaces_and_removes_only_its_own_files(invoke: Invoke, scene: dict[str, Path]) -> None:
    scene["out"].mkdir()
    mine = scene["out"] / "20240115-minutes.html"
    mine.write_bytes(USER_TEXT)
    assert dry_run(invoke, scene).exit_code == 0
    assert (scene["out"] / "00003-cy@example.org.eml").exists()
    write_list(scene["list"], [("ann@example.org", "Ann"), ("bob@example.com", "Bob")])
    assert dry_run(invoke, scene).exit_code == 0
    assert not (scene["out"] / "00003-cy@example.org.eml").exists(), "its own stale file was kept"
    assert (scene["out"] / "00002-bob@example.com.eml").exists()
    assert mine.read_bytes() == USER_TEXT


# ------------------------------------------------------------------------- planted manifests


def plant_manifest(folder: Path, files: dict[str, bytes], *, owner: int | None, mode: int) -> Path:
    manifest = folder / ".dispatch-files"
    manifest.write_text("".join(f"{sha(data)}  {name}\n" for name, data in files.items()), encoding="utf-8")
    manifest.chmod(mode)
    if owner is not None:
        os.chown(manifest, owner, owner)
    return manifest


PLANTERS = [
    pytest.param(NOBODY, 0o644, id="owned-by-another-user"),
    pytest.param(None, 0o666, id="writable-by-anyone"),
]


@pytest.mark.parametrize(("owner", "mode"), PLANTERS)
def test_planted_manifest_cannot_make_a_users_file_removable(
    invoke: Invoke, scene: dict[str, Path], owner: int | None, mode: int
) -> None:
    if owner is not None and os.geteuid() != 0:
        pytest.skip("planting a file owned by another user needs root")
    scene["out"].mkdir()
    victim = scene["out"] / "00007-zed@example.org.html"
    victim.write_bytes(USER_TEXT)
    plant_manifest(scene["out"], {victim.name: USER_TEXT}, owner=owner, mode=mode)
    dry_run(invoke, scene)
    assert victim.exists(), "a user's file was deleted on the word of a manifest dispatch did not write"
    assert victim.read_bytes() == USER_TEXT


@pytest.mark.parametrize(("owner", "mode"), PLANTERS)
def test_planted_manifest_cannot_make_a_users_index_replaceable(
    invoke: Invoke, scene: dict[str, Path], owner: int | None, mode: int
) -> None:
    if owner is not None and os.geteuid() != 0:
        pytest.skip("planting a file owned by another user needs root")
    scene["out"].mkdir()
    index = scene["out"] / "index.html"
    index.write_bytes(USER_TEXT)
    plant_manifest(scene["out"], {"index.html": USER_TEXT}, owner=owner, mode=mode)
    dry_run(invoke, scene)
    assert index.read_bytes() == USER_TEXT


def test_manifest_entry_naming_a_path_outside_the_folder_is_harmless(
    invoke: Invoke, scene: dict[str, Path]
) -> None:
    scene["out"].mkdir()
    outside = scene["tmp"] / "00001-ann@example.org.html"
    outside.write_bytes(USER_TEXT)
    plant_manifest(scene["out"], {"../00001-ann@example.org.html": USER_TEXT}, owner=None, mode=0o600)
    dry_run(invoke, scene)
    dry_run(invoke, scene)
    assert outside.read_bytes() == USER_TEXT


# ------------------------------------------------------------------------- outputs onto inputs


def test_out_in_the_articles_folder_changes_no_input(invoke: Invoke, scene: dict[str, Path]) -> None:
    inputs = {p: p.read_bytes() for p in (scene["article"], scene["list"], scene["env"])}
    for _ in range(2):
        result = dry_run(invoke, scene, scene["tmp"])
        no_crash(result.stderr)
    assert {p: p.read_bytes() for p in inputs} == inputs


def test_out_in_the_template_folder_changes_no_template(invoke: Invoke, scene: dict[str, Path]) -> None:
    tpl = scene["tmp"] / "tpl"
    tpl.mkdir()
    (tpl / "email.txt").write_text(
        '{% extends "builtin/email.txt" %}{% block body %}Hi {{ name }}\n{{ super() }}{% endblock %}',
        encoding="utf-8",
    )
    (tpl / "index.html").write_text("{# a partial the user keeps here #}", encoding="utf-8")
    before = tree(tpl)
    result = dry_run(invoke, scene, tpl, "--template", tpl)
    assert result.exit_code == 2
    judge_error(result.stderr, "index.html")
    assert tree(tpl) == before


@pytest.mark.parametrize("which", ["list", "env", "article"])
def test_out_that_is_an_input_file_is_refused(invoke: Invoke, scene: dict[str, Path], which: str) -> None:
    before = scene[which].read_bytes()
    result = dry_run(invoke, scene, scene[which])
    assert result.exit_code == 2
    judge_error(result.stderr, str(scene[which]))
    assert scene[which].read_bytes() == before


def test_list_named_index_html_in_the_out_folder_is_not_overwritten(
    invoke: Invoke, scene: dict[str, Path]
) -> None:
    listed = scene["tmp"] / "index.html"
    listed.write_bytes(scene["list"].read_bytes())
    scene["list"] = listed
    before = listed.read_bytes()
    result = dry_run(invoke, scene, scene["tmp"])
    assert result.exit_code == 2
    judge_error(result.stderr, "index.html")
    assert listed.read_bytes() == before


@pytest.mark.parametrize(
    ("make", "out_name"),
    [
        ("article-txt", "issue.html"),
        ("article-same-name", "issue.txt"),
        ("list-txt", "readers.html"),
        ("env-txt", "prod.html"),
        ("env-eml", "prod.html"),
        ("template", "tpl/email.html"),
        ("template-txt", "tpl/email.htm"),
    ],
)
def test_preview_out_onto_an_input_is_refused(
    invoke: Invoke, scene: dict[str, Path], make: str, out_name: str
) -> None:
    tmp = scene["tmp"]
    article, listed, env = scene["article"], scene["list"], scene["env"]
    extra: list[str | Path] = []
    if make.startswith("article"):
        article = tmp / "issue.txt"
        article.write_text("A title\n\nA paragraph of the article.\n", encoding="utf-8")
    elif make == "list-txt":
        listed = tmp / "readers.txt"
        listed.write_bytes(scene["list"].read_bytes())
    elif make.startswith("env"):
        env = tmp / ("prod.txt" if make == "env-txt" else "prod.eml")
        env.write_bytes(scene["env"].read_bytes())
        env.chmod(0o600)
    else:
        (tmp / "tpl").mkdir()
        (tmp / "tpl" / "email.html").write_text('{% extends "builtin/email.html" %}', encoding="utf-8")
        (tmp / "tpl" / "email.txt").write_text('{% extends "builtin/email.txt" %}', encoding="utf-8")
        extra = ["--template", tmp / "tpl"]
    watched = [p for p in tmp.rglob("*") if p.is_file()]
    before = {p: p.read_bytes() for p in watched}
    result = invoke("preview", article, "-s", listed, "--env-file", env, "--out", tmp / out_name, *extra)
    assert result.exit_code == 2, result.stdout + result.stderr
    judge_error(result.stderr)
    assert {p: p.read_bytes() for p in watched} == before


@pytest.mark.parametrize("name", ["preview.html", "preview.eml", "preview.txt"])
@pytest.mark.parametrize("kind", ["file", "symlink", "dangling-symlink"])
def test_preview_refuses_a_foreign_or_symlinked_file(
    invoke: Invoke, scene: dict[str, Path], name: str, kind: str
) -> None:
    folder = scene["tmp"] / "look"
    folder.mkdir()
    elsewhere = scene["tmp"] / "elsewhere"
    elsewhere.mkdir()
    target = elsewhere / "precious.html"
    if kind != "dangling-symlink":
        target.write_bytes(USER_TEXT)
    if kind == "file":
        (folder / name).write_bytes(USER_TEXT)
    else:
        (folder / name).symlink_to(target)
    before = tree(elsewhere)
    result = preview(invoke, scene, folder / "preview.html")
    assert result.exit_code == 2, result.stdout + result.stderr
    judge_error(result.stderr)
    assert tree(elsewhere) == before, "something was written through the symlink"
    if kind == "file":
        assert (folder / name).read_bytes() == USER_TEXT


def test_preview_twice_replaces_its_own_files(invoke: Invoke, scene: dict[str, Path]) -> None:
    out = scene["tmp"] / "look" / "preview.html"
    assert preview(invoke, scene, out).exit_code == 0
    result = preview(invoke, scene, out)
    assert result.exit_code == 0, result.stderr
    assert out.with_suffix(".eml").exists()
    assert out.with_suffix(".txt").exists()


# ------------------------------------------------------------------------- privacy of what is written


def _modes(folder: Path, suffixes: tuple[str, ...]) -> dict[str, int]:
    return {
        p.name: stat.S_IMODE(p.stat().st_mode)
        for p in folder.iterdir()
        if p.is_file() and p.suffix in suffixes
    }


def test_previews_are_private_even_with_a_permissive_umask(scene: dict[str, Path]) -> None:
    env = clean_environ()
    common = ("--env-file", scene["env"])
    dry = subprocess.run(
        ["sh", "-c", 'umask 000 && exec "$0" -m dispatch "$@"', sys.executable, "send", scene["article"],
         "-s", scene["list"], *common, "--dry-run", "--out", scene["out"]],
        cwd=scene["tmp"], env=env, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert dry.returncode == 0, dry.stderr
    look = scene["tmp"] / "look"
    single = subprocess.run(
        ["sh", "-c", 'umask 000 && exec "$0" -m dispatch "$@"', sys.executable, "preview",
         scene["article"], "-s", scene["list"], *common, "--out", look / "p.html"],
        cwd=scene["tmp"], env=env, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert single.returncode == 0, single.stderr
    written = _modes(scene["out"], (".eml", ".html", ".txt")) | {
        f"look/{k}": v for k, v in _modes(look, (".eml", ".html", ".txt")).items()
    }
    assert len(written) >= 7
    assert {k: oct(v) for k, v in written.items() if v != 0o600} == {}


# ------------------------------------------------------------------------- already-sent campaigns


def test_dry_run_of_a_sent_campaign_still_writes_its_preview(
    invoke: Invoke, scene: dict[str, Path], relay: Relays
) -> None:
    server = relay.start()
    env = settings_file(scene["tmp"], server, name="send.env")
    sent = invoke("send", scene["article"], "-s", scene["list"], "--env-file", env, "--yes")
    assert sent.exit_code == 0, sent.stderr
    result = invoke(
        "send", scene["article"], "-s", scene["list"], "--env-file", env, "--dry-run", "--out", scene["out"]
    )
    no_crash(result.stderr)
    assert len(eml_files(scene["out"])) == 3
    index = (scene["out"] / "index.html").read_text(encoding="utf-8")
    assert "ann@example.org" in index
    assert "already sent" in index.lower()
    assert len(server.received) == 3


def test_default_preview_of_a_sent_campaign_is_not_empty(
    invoke: Invoke, scene: dict[str, Path], relay: Relays
) -> None:
    server = relay.start()
    env = settings_file(scene["tmp"], server, name="send.env")
    assert invoke("send", scene["article"], "-s", scene["list"], "--env-file", env, "--yes").exit_code == 0
    result = invoke("send", scene["article"], "-s", scene["list"], "--env-file", env, "--dry-run")
    no_crash(result.stderr)
    assert "the first 0 message" not in result.stdout
    assert list((Path.cwd() / "dispatch-preview").glob("*.eml"))


# ------------------------------------------------------------------------- the folder itself


def test_out_on_a_file_that_is_not_a_folder_changes_nothing(scene: dict[str, Path]) -> None:
    blocker = scene["tmp"] / "out"
    blocker.write_bytes(USER_TEXT)
    result = run_dispatch(
        "send", scene["article"], "-s", scene["list"], "--env-file", scene["env"], "--dry-run", "--out",
        blocker, "--json", cwd=scene["tmp"],
    )  # fmt: skip
    assert result.returncode == 2
    judge_error(result.stderr, str(blocker))
    assert blocker.read_bytes() == USER_TEXT


@pytest.mark.parametrize("kind", ["fifo", "directory"])
def test_odd_manifest_never_hangs_or_crashes(scene: dict[str, Path], kind: str) -> None:
    scene["out"].mkdir()
    manifest = scene["out"] / ".dispatch-files"
    if kind == "fifo":
        os.mkfifo(manifest)
    else:
        manifest.mkdir()
    result = run_dispatch(
        "send", scene["article"], "-s", scene["list"], "--env-file", scene["env"], "--dry-run", "--out",
        scene["out"], "--json", cwd=scene["tmp"], timeout=60,
    )  # fmt: skip
    no_crash(result.stderr)
    if result.returncode == 2:
        judge_error(result.stderr, str(scene["out"]))
    else:
        assert result.returncode == 0, result.stderr
