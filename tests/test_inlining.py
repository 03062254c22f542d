"""The state folder's cache of premailer's output: a send after its dry run skips premailer and
gets the very same message; a damaged, foreign or unwritable cache only means premailer runs
again; text that looks like a cached token never becomes a field."""

from __future__ import annotations

import os
import stat
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from dispatch.compose import inlining
from dispatch.compose.issue import plan_issue
from dispatch.compose.render import RenderedIssue, render_issue
from dispatch.content.article import load_article
from dispatch.settings import Settings

VALUES = {
    "email": "ann@example.org",
    "name": "Ann",
    "unsubscribe_url": "https://example.org/u/1",
    "city": "Oslo",
}


def rendered(article: Path, cache: Path | None) -> RenderedIssue:
    """An issue whose HTML is inlined (or read from ``cache``) for one recipient."""
    issue = render_issue(
        load_article(article),
        subject="S",
        columns=["city"],
        organization="Example",
        postal_address="1 Example Street",
        cache=cache,
    )
    issue.personalise(VALUES)
    return issue


def shape(issue: RenderedIssue) -> str:
    """One recipient's HTML: equal for equal issues of different renders."""
    return issue.personalise(VALUES)[0]


def links_are_slots(issue: RenderedIssue) -> bool:
    """Another recipient's link goes into the inlined document without premailer running again."""
    before = issue.personal.inlined
    other = issue.personalise({**VALUES, "unsubscribe_url": "https://example.org/u/2"})[0]
    return 'href="https://example.org/u/2"' in other and issue.personal.inlined == before


@pytest.fixture
def premailer_calls(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Count the documents premailer really inlines."""
    calls: list[str] = []
    real = inlining._premailer

    def counting(document: str) -> str:
        calls.append(document)
        return real(document)

    monkeypatch.setattr(inlining, "_premailer", counting)
    return calls


def test_the_second_render_comes_from_the_cache_and_is_the_same(
    article: Path, tmp_path: Path, premailer_calls: list[str]
) -> None:
    cache = tmp_path / "state" / "cache"
    first = rendered(article, cache)
    second = rendered(article, cache)
    assert len(premailer_calls) == 1
    assert shape(second) == shape(first) == shape(rendered(article, None))
    assert links_are_slots(second)
    files = list(cache.iterdir())
    assert len(files) == 1
    assert stat.S_IMODE(cache.stat().st_mode) == 0o700
    assert stat.S_IMODE(files[0].stat().st_mode) == 0o600


def test_a_send_after_its_dry_run_sends_the_bytes_the_dry_run_would(
    article: Path, subscribers: Path, env: dict[str, str], premailer_calls: list[str]
) -> None:
    settings = Settings.from_mapping(env)
    cold = plan_issue(article, subscribers, settings)
    warm = plan_issue(article, subscribers, settings)
    assert len(premailer_calls) == 1
    assert shape(warm.rendered) == shape(cold.rendered)
    assert (Path(env["DISPATCH_STATE_DIR"]) / inlining.FOLDER).is_dir()


def damage_truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[:-40])


def damage_edit(path: Path) -> None:
    path.write_bytes(path.read_bytes().replace(b"</p>", b"</p><p>planted</p>", 1))


def damage_share(path: Path) -> None:
    path.chmod(0o644)


def damage_fifo(path: Path) -> None:
    path.unlink()
    os.mkfifo(path, 0o600)


def damage_symlink(path: Path) -> None:
    """The entry replaced by a link to someone's file (which must be neither read nor written)."""
    theirs = path.parent.parent / "theirs.html"
    theirs.write_bytes(path.read_bytes().replace(b"</p>", b"</p><p>planted</p>", 1))
    path.unlink()
    path.symlink_to(theirs)


@pytest.mark.parametrize("damage", [damage_truncate, damage_edit, damage_share, damage_fifo, damage_symlink])
def test_a_damaged_or_foreign_cache_file_is_ignored_and_replaced(
    article: Path, tmp_path: Path, premailer_calls: list[str], damage: Callable[[Path], None]
) -> None:
    cache = tmp_path / "cache"
    first = rendered(article, cache)
    (entry,) = cache.iterdir()
    damage(entry)
    again = rendered(article, cache)
    assert len(premailer_calls) == 2, "the damaged entry must not be used"
    assert shape(again) == shape(first)
    assert "planted" not in shape(again)
    assert rendered(article, cache) is not None
    assert len(premailer_calls) == 2, "the entry written again is used next time"
    theirs = tmp_path / "theirs.html"
    assert not theirs.exists() or b"planted" in theirs.read_bytes(), "a linked file must stay as it was"


def test_a_cache_folder_that_is_a_symlink_is_never_written_through(
    article: Path, tmp_path: Path, premailer_calls: list[str]
) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    cache = tmp_path / "cache"
    cache.symlink_to(elsewhere)
    first = rendered(article, cache)
    second = rendered(article, cache)
    assert list(elsewhere.iterdir()) == []
    assert len(premailer_calls) == 2
    assert shape(first) == shape(second)


def test_a_cache_that_cannot_be_written_never_stops_a_render(
    article: Path, tmp_path: Path, premailer_calls: list[str]
) -> None:
    blocked = tmp_path / "state"
    blocked.write_text("a file where the state folder should be", encoding="utf-8")
    issue = rendered(article, blocked / inlining.FOLDER)
    assert links_are_slots(issue)
    assert blocked.is_file()
    assert len(premailer_calls) == 1


def test_a_full_cache_forgets_its_oldest_entries(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, premailer_calls: list[str]
) -> None:
    cache, nonce = tmp_path / "cache", "0123456789ab"
    monkeypatch.setattr(inlining, "KEEP", 2)
    cache.mkdir()
    theirs = [cache / "notes.html", cache / "old-issue.html"]  # someone's files: never touched
    for path in theirs:
        path.write_text("mine", encoding="utf-8")
        os.utime(path, (1, 1))
    stale, fresh = cache / ".inlined-dead.tmp", cache / ".inlined-busy.tmp"
    stale.write_bytes(b"left by a killed run")
    os.utime(stale, (1, 1))
    fresh.write_bytes(b"another run is writing it")
    documents = [f"<html><body><p>issue {n} zqx{nonce}f0xqz</p></body></html>" for n in range(4)]
    for document in documents:
        inlining.remembered(document, cache, nonce, inlining.inline)
        time.sleep(0.02)  # distinct modification times
    assert len([p for p in cache.glob("*.html") if p not in theirs]) == 2
    assert all(p.read_text(encoding="utf-8") == "mine" for p in theirs)
    assert not stale.exists()
    assert fresh.exists()
    inlining.remembered(documents[3], cache, nonce, inlining.inline)
    assert len(premailer_calls) == 4, "the newest entries are kept"
    inlining.remembered(documents[0], cache, nonce, inlining.inline)
    assert len(premailer_calls) == 5, "the oldest was forgotten"


def test_text_that_looks_like_a_cached_token_never_becomes_a_slot(
    write_file: Callable[..., Path], tmp_path: Path, premailer_calls: list[str]
) -> None:
    """The cache stands a fixed marker in for the random part of the tokens. An article holding
    that marker (in any case) is never cached, so its text can never turn into a slot."""
    marker = inlining._MARKER.upper()
    forged = write_file("forged.md", f"# Forged\n\nA body with zqx{marker}f0xqz in it.\n")
    cache = tmp_path / "cache"
    for _ in range(2):
        issue = rendered(forged, cache)
        assert f"zqx{marker}f0xqz".lower() in shape(issue).lower()
    assert len(premailer_calls) == 2
    assert not cache.exists() or list(cache.iterdir()) == []


def test_a_state_folder_made_for_the_cache_is_private_whatever_the_umask(
    article: Path, tmp_path: Path
) -> None:
    state = tmp_path / "state"
    old = os.umask(0o022)
    try:
        rendered(article, state / inlining.FOLDER)
    finally:
        os.umask(old)
    assert stat.S_IMODE(state.stat().st_mode) == 0o700
    assert stat.S_IMODE((state / inlining.FOLDER).stat().st_mode) == 0o700


def test_the_key_names_the_installed_versions_and_a_new_one_misses(
    article: Path, tmp_path: Path, premailer_calls: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    versions = inlining._versions()
    for package in ("premailer", "cssutils", "lxml", "cssselect"):
        assert package in versions
    assert "?" not in versions
    cache = tmp_path / "cache"
    rendered(article, cache)
    monkeypatch.setattr(inlining, "_versions", lambda: versions.replace("premailer-", "premailer-9"))
    rendered(article, cache)
    assert len(premailer_calls) == 2, "an upgraded premailer must not reuse the old output"
