"""Attacks on error handling, the journal and the state folder (issue 6, classes 10, 11, 12),
kept as regression tests.

Expected: every failure a user or the machine can cause maps to its documented exit code with
one line on stderr (and a JSON object on stdout with ``--json``); ``--debug`` changes no exit
code; a damaged, newer or foreign journal is exit 2 for send, dry run and status, before anything
is sent; nothing in the state folder is written through a planted symlink; ``preview --open``
without a browser says so; ``status --prune`` forgets campaigns that never recorded anyone.
"""

from __future__ import annotations

import fcntl
import json
import os
import random
import sqlite3
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.attack_helpers import (
    Recording,
    Relays,
    clean_environ,
    judge_error,
    no_crash,
    readers,
    run_dispatch,
    settings_file,
    tree,
    write_article,
    write_list,
)
from tests.smtp_servers import Server

Invoke = Callable[..., Any]
CAMPAIGN = "spring-2026"
# the test relays take AUTH without TLS on 127.0.0.1 on purpose
pytestmark = pytest.mark.filterwarnings("ignore:Requiring AUTH while not requiring TLS:UserWarning")
PASSWORD = "pässwörd-€-密码 with spaces"


@pytest.fixture
def scene(tmp_path: Path, relay: Relays) -> dict[str, Any]:
    handler = Recording()
    server = relay.start(handler)
    return {
        "tmp": tmp_path,
        "server": server,
        "handler": handler,
        "state": tmp_path / "state",
        "article": write_article(tmp_path / "issue.md"),
        "list": write_list(tmp_path / "people.csv", [(a, "Reader") for a in readers(12)]),
        "env": settings_file(tmp_path, server),
    }


@pytest.fixture
def shared(tmp_path: Path, relay: Relays, state_backend: dict[str, str]) -> dict[str, Any]:
    """The scene on each backend (a state folder, or PostgreSQL): for the attacks on the state
    that do not depend on its being files."""
    handler = Recording()
    server = relay.start(handler)
    extra = {k.removeprefix("DISPATCH_"): v for k, v in state_backend.items()}
    return {
        "tmp": tmp_path,
        "server": server,
        "handler": handler,
        "state": tmp_path / "state",
        "article": write_article(tmp_path / "issue.md"),
        "list": write_list(tmp_path / "people.csv", [(a, "Reader") for a in readers(12)]),
        "env": settings_file(tmp_path, server, **extra),
        "backend": extra,
    }


def send(invoke: Invoke, scene: dict[str, Any], *extra: str | Path, campaign: str = CAMPAIGN) -> Any:
    return invoke(
        "send", scene["article"], "-s", scene["list"], "--env-file", scene["env"], "--campaign", campaign,
        "--yes", *extra,
    )  # fmt: skip


def dry(invoke: Invoke, scene: dict[str, Any], *extra: str | Path, campaign: str = CAMPAIGN) -> Any:
    return invoke(
        "send", scene["article"], "-s", scene["list"], "--env-file", scene["env"], "--campaign", campaign,
        "--dry-run", "--out", scene["tmp"] / "out", *extra,
    )  # fmt: skip


def json_error(result: Any, code: int) -> dict[str, Any]:
    """With --json, stdout holds one JSON object with the error and its exit code."""
    data: dict[str, Any] = json.loads(result.stdout)
    assert data["exit_code"] == code, data
    return data


# ============================================================================ class 10: full disk


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Callable[..., Path]]:
    """Mount small tmpfs file systems under tmp_path (root only); all unmounted afterwards."""
    mounted: list[Path] = []

    def mount(name: str, size: str = "512k", inodes: int = 0) -> Path:
        point = tmp_path / name
        point.mkdir()
        options = f"size={size}" + (f",nr_inodes={inodes}" if inodes else "")
        done = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(point)],
            capture_output=True,
            text=True,
            check=False,
        )
        if done.returncode != 0:
            pytest.skip(f"mounting a small tmpfs is not permitted here: {done.stderr.strip()}")
        mounted.append(point)
        return point

    yield mount
    for point in reversed(mounted):
        subprocess.run(["umount", "-l", str(point)], capture_output=True, check=False)


def fill(folder: Path, leave: int = 0) -> Path:
    """Fill the file system holding ``folder`` (leaving about ``leave`` bytes)."""
    filler = folder / "filler.bin"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        while True:
            os.write(fd, b"\0" * 4096)
    except OSError:
        pass
    finally:
        os.close(fd)
    if leave:
        os.truncate(filler, max(0, filler.stat().st_size - leave))
    return filler


def test_full_disk_under_the_state_folder_before_the_run(
    invoke: Invoke, scene: dict[str, Any], small_disk: Callable[..., Path]
) -> None:
    state = small_disk("fullstate")
    fill(state)
    env = settings_file(scene["tmp"], scene["server"], name="full.env", STATE_DIR=str(state))
    result = invoke("send", scene["article"], "-s", scene["list"], "--env-file", env, "--yes", "--json")
    assert result.exit_code == 2, result.stdout + result.stderr
    judge_error(result.stderr, str(state))
    json_error(result, 2)
    assert scene["server"].received == []


def test_disk_filling_up_during_a_send_loses_nobody(
    invoke: Invoke, scene: dict[str, Any], small_disk: Callable[..., Path]
) -> None:
    state = small_disk("fillingstate", size="8m")
    env = settings_file(scene["tmp"], scene["server"], name="filling.env", STATE_DIR=str(state))
    addresses = readers(300)
    listed = write_list(scene["tmp"] / "many.csv", [(a, "Reader " * 20) for a in addresses])
    first = invoke("send", scene["article"], "-s", listed, "--env-file", env, "--yes", "--limit", "1")
    assert first.exit_code == 0, first.stderr
    filler = fill(state, leave=48_000)
    during = invoke("send", scene["article"], "-s", listed, "--env-file", env, "--yes", "--json")
    no_crash(during.stderr)
    data = json.loads(during.stdout)
    assert data["exit_code"] == during.exit_code
    assert during.exit_code in (1, 2, 3), during.stdout
    if "dispatch: error:" in during.stderr:
        judge_error(during.stderr)
    filler.unlink()
    after = invoke("send", scene["article"], "-s", listed, "--env-file", env, "--yes", "--json")
    no_crash(after.stderr)
    copies = scene["handler"].copies()
    assert max(copies.values()) == 1, f"sent twice: {copies.most_common(3)}"
    missing = set(addresses) - set(copies)
    unknown = json.loads(after.stdout)["unknown"]
    assert len(missing) <= unknown, (
        f"{len(missing)} recipients never mailed, only {unknown} unknown:\n{during.stderr}\n"
        f"{after.stdout[-1500:]}\n{after.stderr}"
    )


@pytest.mark.parametrize("inodes", [0, 5], ids=["no-space", "no-inodes"])
def test_full_disk_under_the_out_folder(
    invoke: Invoke, scene: dict[str, Any], small_disk: Callable[..., Path], inodes: int
) -> None:
    out = small_disk("fullout", size="64k", inodes=inodes)
    if not inodes:
        fill(out)
    result = invoke(
        "send", scene["article"], "-s", scene["list"], "--env-file", scene["env"], "--dry-run", "--out", out,
        "--json",
    )  # fmt: skip
    assert result.exit_code == 2, result.stdout + result.stderr
    judge_error(result.stderr, str(out))
    json_error(result, 2)


def test_full_disk_under_a_preview_file(
    invoke: Invoke, scene: dict[str, Any], small_disk: Callable[..., Path]
) -> None:
    out = small_disk("fullpreview", size="64k")
    fill(out)
    result = invoke(
        "preview", scene["article"], "-s", scene["list"], "--env-file", scene["env"], "--out", out / "p.html"
    )
    assert result.exit_code == 2, result.stdout + result.stderr
    judge_error(result.stderr, str(out))


# ============================================================================ class 10: odd inputs


@pytest.mark.parametrize("mechanism", ["PLAIN", "LOGIN"])
def test_non_ascii_password_authenticates(
    invoke: Invoke, scene: dict[str, Any], relay: Relays, mechanism: str
) -> None:
    handler = Recording()
    excluded = ["LOGIN"] if mechanism == "PLAIN" else ["PLAIN"]
    server = relay.start(handler, user="mailer", password=PASSWORD, auth_exclude_mechanism=excluded)
    env = settings_file(scene["tmp"], server, name="auth.env")
    result = invoke("send", scene["article"], "-s", scene["list"], "--env-file", env, "--yes", "--json")
    no_crash(result.stderr)
    assert result.exit_code == 0, result.stdout + result.stderr
    assert len(handler.received) == 12
    assert PASSWORD not in result.stdout + result.stderr


def test_wrong_non_ascii_password_is_exit_3_and_never_shown(
    invoke: Invoke, scene: dict[str, Any], relay: Relays
) -> None:
    handler = Recording()
    server = relay.start(handler, user="mailer", password=PASSWORD)
    wrong = "wröng-pässwörd-€"
    env = settings_file(scene["tmp"], server, name="auth.env", SMTP_PASSWORD=wrong)
    for debug in ([], ["--debug"]):
        result = invoke(
            "send", scene["article"], "-s", scene["list"], "--env-file", env, "--yes", "--json", *debug
        )
        assert result.exit_code == 3, result.stdout + result.stderr
        if not debug:
            judge_error(result.stderr, "DISPATCH_SMTP_PASSWORD")
        json_error(result, 3)
        assert wrong not in result.stdout + result.stderr
    assert handler.received == []


@pytest.mark.parametrize(
    "campaign",
    ["c" * 300, "x" * 101, "line\nbreak", "tab\there", "nul\x00byte", "bell\x07"],
    ids=["300-chars", "101-chars", "newline", "tab", "nul", "bell"],
)
@pytest.mark.parametrize("mode", ["send", "dry-run"])
def test_bad_campaign_id_is_one_clean_line(
    invoke: Invoke, scene: dict[str, Any], campaign: str, mode: str
) -> None:
    run = send if mode == "send" else dry
    result = run(invoke, scene, "--json", campaign=campaign)
    assert result.exit_code == 2, result.stdout + result.stderr
    judge_error(result.stderr, "--campaign")
    json_error(result, 2)
    assert scene["server"].received == []


def test_front_matter_campaign_of_300_characters(invoke: Invoke, scene: dict[str, Any]) -> None:
    article = scene["tmp"] / "long.md"
    article.write_text(f"---\ntitle: Long\ncampaign: {'c' * 300}\n---\n\nBody.\n", encoding="utf-8")
    result = invoke("send", article, "-s", scene["list"], "--env-file", scene["env"], "--yes", "--json")
    assert result.exit_code == 2, result.stdout + result.stderr
    judge_error(result.stderr, str(article))
    json_error(result, 2)


@pytest.mark.parametrize("campaign", ["../../outside", "/etc/passwd", "..", ".hidden", "a/b"])
def test_path_like_campaign_never_leaves_the_state_folder(
    invoke: Invoke, shared: dict[str, Any], campaign: str
) -> None:
    before = {k for k in tree(shared["tmp"]) if not k.startswith("state")}
    result = send(invoke, shared, campaign=campaign)
    no_crash(result.stderr)
    after = {k for k in tree(shared["tmp"]) if not k.startswith("state")}
    assert after == before
    assert not Path("/etc/passwd.lock").exists()


def test_status_of_a_300_character_campaign(invoke: Invoke, shared: dict[str, Any]) -> None:
    assert send(invoke, shared).exit_code == 0
    result = invoke("status", "c" * 300, "--env-file", shared["env"], "--json")
    assert result.exit_code == 2
    judge_error(result.stderr)
    json_error(result, 2)


# ============================================================================ class 10/11: the journal


def checkpoint(state: Path) -> Path:
    path = state / "journal.sqlite3"
    with sqlite3.connect(path) as db:
        db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    for side in ("-wal", "-shm"):
        (state / f"journal.sqlite3{side}").unlink(missing_ok=True)
    return path


def damage(path: Path, how: str) -> None:
    data = path.read_bytes()
    if how == "not-a-database":
        path.write_bytes(b"this is not a database, it is a shopping list\n" * 200)
    elif how == "truncated-half":  # whole pages, so the damage is the same on every run
        path.write_bytes(data[: len(data) // 4096 // 2 * 4096])
    elif how in ("recipients-page-zeroed", "index-pages-zeroed"):
        with sqlite3.connect(path) as db:
            size = db.execute("PRAGMA page_size").fetchone()[0]
            kind = "table" if how == "recipients-page-zeroed" else "index"
            roots = [r[0] for r in db.execute(
                "SELECT rootpage FROM sqlite_master WHERE tbl_name = 'recipients' AND type = ?", (kind,)
            )]  # fmt: skip
        pages = bytearray(data)
        for root in roots:
            pages[(root - 1) * size : root * size] = bytes(size)
        path.write_bytes(bytes(pages))
    elif how == "truncated-header":
        path.write_bytes(data[:100])
    elif how == "garbage-in-the-middle":
        middle = len(data) // 4096 // 2 * 4096  # the same pages every run, the same garbage
        path.write_bytes(data[:middle] + random.Random(6).randbytes(8192) + data[middle + 8192 :])
    elif how == "garbage-in-page-2":
        path.write_bytes(data[:4096] + b"\xff" * 4096 + data[8192:])
    elif how == "newer-version":
        with sqlite3.connect(path) as db:
            db.execute("PRAGMA user_version = 99")
    elif how == "extra-not-null-column":
        with sqlite3.connect(path) as db:
            db.execute("ALTER TABLE recipients ADD COLUMN tenant TEXT NOT NULL DEFAULT 'x'")
    elif how == "foreign-tables":
        path.unlink()
        with sqlite3.connect(path) as db:
            db.execute("CREATE TABLE notes (id INTEGER PRIMARY KEY, body TEXT)")
    elif how == "no-primary-key":
        with sqlite3.connect(path) as db:
            db.executescript(
                "CREATE TABLE r2 AS SELECT * FROM recipients; DROP TABLE recipients; "
                "ALTER TABLE r2 RENAME TO recipients;"
            )


DAMAGES = [
    "not-a-database", "truncated-half", "truncated-header", "recipients-page-zeroed", "index-pages-zeroed",
    "garbage-in-the-middle", "garbage-in-page-2", "newer-version", "extra-not-null-column", "foreign-tables",
    "no-primary-key",
]  # fmt: skip


@pytest.fixture
def damaged(invoke: Invoke, scene: dict[str, Any], request: pytest.FixtureRequest) -> dict[str, Any]:
    """A campaign sent to 12 readers, then its journal damaged; the list grows by 3."""
    first = send(invoke, scene)
    assert first.exit_code == 0, first.stderr
    path = checkpoint(scene["state"])
    damage(path, request.param)
    write_list(scene["list"], [(a, "Reader") for a in readers(15)])
    scene["handler"].received.clear()
    scene["journal"] = path
    return scene


@pytest.mark.parametrize("damaged", DAMAGES, indirect=True)
def test_damaged_journal_stops_a_send_before_anything_is_sent(
    invoke: Invoke, damaged: dict[str, Any]
) -> None:
    result = send(invoke, damaged, "--json")
    assert result.exit_code == 2, result.stdout + result.stderr
    judge_error(result.stderr, str(damaged["journal"]))
    json_error(result, 2)
    assert damaged["handler"].received == [], "a damaged journal still let mail go out"


@pytest.mark.parametrize("damaged", DAMAGES, indirect=True)
def test_damaged_journal_stops_a_dry_run(invoke: Invoke, damaged: dict[str, Any]) -> None:
    result = dry(invoke, damaged, "--json")
    assert result.exit_code == 2, result.stdout + result.stderr
    judge_error(result.stderr, str(damaged["journal"]))
    json_error(result, 2)


@pytest.mark.parametrize("damaged", DAMAGES, indirect=True)
@pytest.mark.parametrize("args", [(), ("--json",), (CAMPAIGN,), (CAMPAIGN, "--json"), ("--prune", "--json")])
def test_damaged_journal_stops_status(invoke: Invoke, damaged: dict[str, Any], args: tuple[str, ...]) -> None:
    result = invoke("status", *args, "--env-file", damaged["env"])
    assert result.exit_code == 2, result.stdout + result.stderr
    judge_error(result.stderr, str(damaged["journal"]))
    if "--json" in args:
        json_error(result, 2)


@pytest.mark.parametrize("how", ["not-a-database", "newer-version"])
def test_damaged_suppression_store_stops_a_send(invoke: Invoke, scene: dict[str, Any], how: str) -> None:
    assert send(invoke, scene).exit_code == 0
    store = scene["state"] / "suppression.sqlite3"
    assert store.exists()
    with sqlite3.connect(store) as db:
        db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    for side in ("-wal", "-shm"):
        Path(f"{store}{side}").unlink(missing_ok=True)
    damage(store, how)
    scene["handler"].received.clear()
    write_list(scene["list"], [(a, "Reader") for a in readers(15)])
    result = send(invoke, scene, "--json")
    assert result.exit_code == 2, result.stdout + result.stderr
    judge_error(result.stderr, str(store))
    assert scene["handler"].received == []


# ============================================================================ --debug and exit codes


def _bad_list(scene: dict[str, Any]) -> tuple[str | Path, ...]:
    bad = scene["tmp"] / "bad.csv"
    bad.write_text("name,city\nAnn,Paris\n", encoding="utf-8")
    return ("send", scene["article"], "-s", bad, "--env-file", scene["env"], "--yes")


def _auth(scene: dict[str, Any], relay: Relays) -> tuple[str | Path, ...]:
    server = relay.start(Recording(), user="mailer", password="right")
    env = settings_file(scene["tmp"], server, name="wrong.env", SMTP_PASSWORD="wrong")
    return ("send", scene["article"], "-s", scene["list"], "--env-file", env, "--yes")


def _refused(scene: dict[str, Any], relay: Relays) -> tuple[str | Path, ...]:
    handler = Recording()
    # a permanent refusal that is no hard bounce: the second run meets it again
    handler.rcpt_reply = lambda a, _n: "550 5.2.1 mailbox disabled" if a == "reader01@example.org" else None
    server = relay.start(handler)
    env = settings_file(scene["tmp"], server, name="refuse.env")
    return ("send", scene["article"], "-s", scene["list"], "--env-file", env, "--yes")


def _damaged(scene: dict[str, Any]) -> tuple[str | Path, ...]:
    scene["state"].mkdir(parents=True, exist_ok=True)
    (scene["state"] / "journal.sqlite3").write_bytes(b"garbage" * 1000)
    return ("status", "--env-file", scene["env"])


CASES = ["bad-list", "auth", "refused", "damaged-journal", "ok", "missing-article", "bad-setting", "locked"]


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("as_json", [False, True])
def test_debug_never_changes_the_exit_code(
    invoke: Invoke, scene: dict[str, Any], relay: Relays, case: str, as_json: bool
) -> None:
    held: list[int] = []
    if case == "bad-list":
        args = _bad_list(scene)
    elif case == "auth":
        args = _auth(scene, relay)
    elif case == "refused":
        args = _refused(scene, relay)
    elif case == "damaged-journal":
        args = _damaged(scene)
    elif case == "missing-article":
        args = ("send", scene["tmp"] / "nope.md", "-s", scene["list"], "--env-file", scene["env"], "--yes")
    elif case == "bad-setting":
        env = settings_file(scene["tmp"], scene["server"], name="bad.env", SMTP_PORT="seventy")
        args = ("send", scene["article"], "-s", scene["list"], "--env-file", env, "--yes")
    elif case == "locked":
        scene["state"].mkdir(parents=True, exist_ok=True)
        fd = os.open(scene["state"] / f"{CAMPAIGN}.lock", os.O_RDWR | os.O_CREAT, 0o600)
        fcntl.flock(fd, fcntl.LOCK_EX)
        held.append(fd)
        args = (*send_args(scene), "--campaign", CAMPAIGN)
    else:
        args = send_args(scene)
    extra = ("--json",) if as_json and args[0] in ("send", "status") else ()
    # the two runs must face the same situation: a send's second run of one campaign would find
    # the first run's work done (and exit 0: the exit code describes the run), so each has its own
    own = case not in ("locked", "missing-article") and args[0] == "send"
    try:
        plain = invoke(*args, *extra, *(("--campaign", "plain-run") if own else ()))
        debug = invoke(*args, *extra, "--debug", *(("--campaign", "debug-run") if own else ()))
    finally:
        for fd in held:
            os.close(fd)
    no_crash(plain.stderr)
    assert plain.exit_code == debug.exit_code, (plain.stderr, debug.stderr)
    expected = {"bad-list": 2, "auth": 3, "refused": 1, "damaged-journal": 2, "ok": 0, "missing-article": 2,
                "bad-setting": 2, "locked": 4}  # fmt: skip
    assert plain.exit_code == expected[case], plain.stdout + plain.stderr
    if extra:
        assert json.loads(plain.stdout)["exit_code"] == plain.exit_code
        assert json.loads(debug.stdout)["exit_code"] == debug.exit_code


def send_args(scene: dict[str, Any]) -> tuple[str | Path, ...]:
    return ("send", scene["article"], "-s", scene["list"], "--env-file", scene["env"], "--yes")


# ============================================================================ class 11: planted files


PRECIOUS = b"a file the attacker wants destroyed\n"


@pytest.mark.parametrize("kind", ["symlink", "dangling-symlink", "hardlink", "fifo", "directory"])
def test_planted_lock_file_is_refused_and_its_target_kept(
    invoke: Invoke, scene: dict[str, Any], kind: str
) -> None:
    scene["state"].mkdir(parents=True)
    lock = scene["state"] / f"{CAMPAIGN}.lock"
    target = scene["tmp"] / "precious.txt"
    if kind != "dangling-symlink":
        target.write_bytes(PRECIOUS)
    if kind in ("symlink", "dangling-symlink"):
        lock.symlink_to(target)
    elif kind == "hardlink":
        os.link(target, lock)
    elif kind == "fifo":
        os.mkfifo(lock)
    else:
        lock.mkdir()
    result = send(invoke, scene, "--json")
    if kind == "dangling-symlink":
        assert not target.exists(), "the lock was created through a dangling symlink"
    elif kind in ("symlink", "hardlink"):
        assert target.read_bytes() == PRECIOUS, "the planted lock's target was overwritten"
    assert result.exit_code == 2, result.stdout + result.stderr
    judge_error(result.stderr, str(lock))
    json_error(result, 2)
    assert scene["server"].received == []


@pytest.mark.parametrize("side", ["", "-wal", "-shm", "-journal"])
@pytest.mark.parametrize("store", ["journal.sqlite3", "suppression.sqlite3"])
@pytest.mark.parametrize("mode", ["send", "dry-run", "status"])
def test_planted_database_symlink_is_never_written_through(
    invoke: Invoke, scene: dict[str, Any], side: str, store: str, mode: str
) -> None:
    if mode != "send":
        assert send(invoke, scene).exit_code == 0  # the files exist; the symlink replaces one
        for name in (f"{store}-wal", f"{store}-shm"):
            (scene["state"] / name).unlink(missing_ok=True)
    scene["state"].mkdir(parents=True, exist_ok=True)
    planted = scene["state"] / f"{store}{side}"
    target = scene["tmp"] / "precious.db"
    target.write_bytes(PRECIOUS)
    if planted.exists():
        target.write_bytes(planted.read_bytes())
        planted.unlink()
    before = target.read_bytes()
    planted.symlink_to(target)
    if mode == "send":
        result = send(invoke, scene, "--json")
    elif mode == "dry-run":
        result = dry(invoke, scene, "--json")
    else:
        result = invoke("status", "--env-file", scene["env"], "--json")
    no_crash(result.stderr)
    assert target.read_bytes() == before, "written through a planted symlink"
    unread = store == "suppression.sqlite3" and mode == "status"
    if side != "-journal" and not unread:
        assert result.exit_code == 2, result.stdout + result.stderr
        judge_error(result.stderr, str(planted))


# ============================================================================ class 12: smaller things


@pytest.mark.parametrize("browser", ["false", "/nonexistent/browser"])
def test_preview_open_without_a_browser_says_so(scene: dict[str, Any], browser: str) -> None:
    env = clean_environ(BROWSER=browser)
    for name in ("DISPLAY", "WAYLAND_DISPLAY", "TERM"):
        env.pop(name, None)
    page = scene["tmp"] / "look.html"
    result = run_dispatch(
        "preview", scene["article"], "-s", scene["list"], "--env-file", scene["env"], "--out", page, "--open",
        cwd=scene["tmp"], env=env, timeout=120,
    )  # fmt: skip
    no_crash(result.stderr)
    assert result.returncode == 0, result.stderr
    assert page.exists()
    assert str(page) in result.stdout + result.stderr
    said = [line for line in result.stderr.splitlines() if "browser" in line.lower()]
    assert said, f"nothing says no browser opened: {result.stderr!r}"


def refused_sender(relay: Relays) -> tuple[Server, Recording]:
    handler = Recording()
    handler.mail_reply = lambda _n: "550 5.7.1 sender rejected"
    return relay.start(handler), handler


def test_prune_forgets_campaigns_that_never_recorded_anyone(
    invoke: Invoke, shared: dict[str, Any], relay: Relays
) -> None:
    server, _ = refused_sender(relay)
    bad_env = settings_file(shared["tmp"], server, name="refused.env", **shared["backend"])
    stuck = invoke(
        "send",
        shared["article"],
        "-s",
        shared["list"],
        "--env-file",
        bad_env,
        "--campaign",
        "stuck-one",
        "--yes",
    )
    assert stuck.exit_code == 3, stuck.stdout + stuck.stderr
    assert send(invoke, shared).exit_code == 0
    listed = json.loads(invoke("status", "--env-file", shared["env"], "--json").stdout)
    assert {c["campaign"] for c in listed["campaigns"]} >= {CAMPAIGN}
    pruned = invoke("status", "--prune", "--env-file", shared["env"], "--json")
    assert pruned.exit_code == 0, pruned.stderr
    after = json.loads(pruned.stdout)
    assert {c["campaign"] for c in after["campaigns"]} == {CAMPAIGN}


def test_prune_keeps_campaigns_with_deferred_or_failed_recipients(
    invoke: Invoke, shared: dict[str, Any], relay: Relays
) -> None:
    handler = Recording()
    handler.rcpt_reply = lambda _a, _n: "451 4.3.0 try later"
    server = relay.start(handler)
    env = settings_file(shared["tmp"], server, name="defer.env", RETRIES="0", **shared["backend"])
    listed = write_list(shared["tmp"] / "two.csv", [("ann@example.org", "Ann")])
    invoke("send", shared["article"], "-s", listed, "--env-file", env, "--campaign", "deferred-only", "--yes")
    handler2 = Recording()
    handler2.rcpt_reply = lambda _a, _n: "550 5.7.1 content rejected"
    server2 = relay.start(handler2)
    env2 = settings_file(shared["tmp"], server2, name="fail.env", **shared["backend"])
    invoke("send", shared["article"], "-s", listed, "--env-file", env2, "--campaign", "failed-only", "--yes")
    pruned = invoke("status", "--prune", "--env-file", env, "--json")
    assert pruned.exit_code == 0, pruned.stderr
    assert {c["campaign"] for c in json.loads(pruned.stdout)["campaigns"]} == {"deferred-only", "failed-only"}


def test_campaign_that_sent_nothing_is_not_warned_about(
    invoke: Invoke, shared: dict[str, Any], relay: Relays
) -> None:
    server, _ = refused_sender(relay)
    bad_env = settings_file(shared["tmp"], server, name="refused.env", **shared["backend"])
    old = invoke("send", shared["article"], "-s", shared["list"], "--env-file", bad_env, "--yes")
    assert old.exit_code == 3
    write_article(shared["article"], title="A new title for the same file")
    result = invoke(
        "send", shared["article"], "-s", shared["list"], "--env-file", shared["env"], "--yes", "--json"
    )
    assert result.exit_code == 0, result.stderr
    warnings = " ".join(json.loads(result.stdout)["warnings"])
    assert "came from the same file" not in warnings, warnings


def test_status_prune_json_is_pure_json(invoke: Invoke, shared: dict[str, Any]) -> None:
    assert send(invoke, shared).exit_code == 0
    result = invoke("status", "--prune", "--env-file", shared["env"], "--json")
    assert result.exit_code == 0
    json.loads(result.stdout)
    no_crash(result.stderr)
