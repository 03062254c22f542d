"""D3: the "undo (subscribe again)" of ``dispatch serve`` lifts only the unsubscribe that the same
link recorded through serve (source serve, reason unsubscribed, the token's list): never a
manual, imported, bounce or complaint suppression, nor an unsubscribe from another list. The
store is a real SQLite file in tmp_path; serve runs in a real waitress server on 127.0.0.1."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from dispatch.state.suppression import SuppressionStore
from tests.serve_helpers import NEWS, OTHER, running

ANN = "ann@example.org"
SERVE = "serve"  # the source of what dispatch serve records, as the store and its exports show it
Setup = Callable[[SuppressionStore, Path], object]


def _imported_unsubscribe(store: SuppressionStore, folder: Path) -> object:
    export = folder / "unsubscribed.csv"
    export.write_text(f"email,status,list\n{ANN},unsubscribed,{NEWS}\n", encoding="utf-8")
    return store.import_csv(export)


# What was there before the reader clicked: (a name, how it got there, the entry it leaves).
EARLIER: list[tuple[str, Setup, tuple[str, str, str]]] = [
    ("imported", _imported_unsubscribe, ("unsubscribed", NEWS, "import:unsubscribed.csv")),
    (
        "manual unsubscribe",
        lambda s, _: s.add(ANN, "unsubscribed", scope=NEWS, source="manual"),
        ("unsubscribed", NEWS, "manual"),
    ),
    ("manual", lambda s, _: s.add(ANN, "manual"), ("manual", "*", "manual")),
    (
        "bounce",
        lambda s, _: s.add(ANN, "bounced", source="bounce:issue-1"),
        ("bounced", "*", "bounce:issue-1"),
    ),
    ("complaint", lambda s, _: s.add(ANN, "complained", source="fbl"), ("complained", "*", "fbl")),
    (
        "other list",
        lambda s, _: s.add(ANN, "unsubscribed", scope=OTHER, source=SERVE),
        ("unsubscribed", OTHER, SERVE),
    ),
]


def entries(state: Path) -> list[tuple[str, str, str]]:
    with SuppressionStore(state, readonly=True) as store:
        return [(e.reason, e.scope, e.source) for e in store.entries()]


@pytest.mark.parametrize(
    ("setup", "left"), [(setup, left) for _, setup, left in EARLIER], ids=[e[0] for e in EARLIER]
)
def test_undo_never_lifts_what_serve_did_not_record(
    tmp_path: Path, setup: Setup, left: tuple[str, str, str]
) -> None:
    state = tmp_path / "state"
    with SuppressionStore(state) as store:
        setup(store, tmp_path)
    with running(state) as endpoint:
        assert endpoint.one_click(ANN).status == 200
        undone = endpoint.undo(ANN)
    assert undone.status == 200
    assert left in entries(state)
    assert ("unsubscribed", NEWS, SERVE) not in entries(state)  # serve's own entry, if any, is gone
    with SuppressionStore(state, readonly=True) as store:
        blocked_on_news = store.lookup(ANN, NEWS) is not None
    assert ("still blocked for another reason" in undone.text) == blocked_on_news
    assert ("You are subscribed again" in undone.text) == (not blocked_on_news)


def test_undo_lifts_serve_s_own_unsubscribe(tmp_path: Path) -> None:
    with running(tmp_path / "state") as endpoint:
        done = endpoint.one_click(ANN)
        assert 'name="action" value="resubscribe"' in done.text
        undone = endpoint.undo(ANN)
        assert "You are subscribed again" in undone.text
        assert entries(endpoint.state) == []


@pytest.mark.parametrize("setup", [EARLIER[0][1], EARLIER[1][1]], ids=["imported", "manual"])
def test_an_unsubscribe_serve_did_not_record_offers_no_undo(tmp_path: Path, setup: Setup) -> None:
    state = tmp_path / "state"
    with SuppressionStore(state) as store:
        setup(store, tmp_path)
    with running(state) as endpoint:
        for page in (endpoint.request("GET", endpoint.target(ANN)), endpoint.one_click(ANN)):
            assert page.status == 200
            assert "You are unsubscribed" in page.text
            assert "resubscribe" not in page.text
            assert "contact Example Foundation" in page.text


@pytest.mark.parametrize(
    ("later", "source"),
    [
        (_imported_unsubscribe, "import:unsubscribed.csv"),
        (lambda s, _: s.add(ANN, "unsubscribed", scope=NEWS, source="manual"), "manual"),
    ],
    ids=["imported", "manual"],
)
def test_an_unsubscribe_stated_again_after_serve_is_no_longer_undone(
    tmp_path: Path, later: Setup, source: str
) -> None:
    """Serve recorded it first; an import or `suppress add` then says the same: the entry is
    theirs now, and the reader's undo leaves it."""
    with running(tmp_path / "state") as endpoint:
        assert endpoint.one_click(ANN).status == 200
        with SuppressionStore(endpoint.state) as store:
            later(store, tmp_path)
        undone = endpoint.undo(ANN)
        assert "still blocked for another reason" in undone.text
    assert entries(tmp_path / "state") == [("unsubscribed", NEWS, source)]


def test_serve_recording_again_leaves_another_source_in_place(tmp_path: Path) -> None:
    with SuppressionStore(tmp_path / "state") as store:
        assert store.add(ANN, "unsubscribed", scope=NEWS, source="import:old.csv", when=100)
        assert not store.add(ANN, "unsubscribed", scope=NEWS, source=SERVE, when=200)
        assert store.remove(ANN, scope=NEWS, reason="unsubscribed", source=SERVE) == 0
        entry = store.entry(ANN, NEWS, "unsubscribed")
        assert entry is not None
        assert (entry.source, entry.when) == ("import:old.csv", 100)
        assert store.entry(ANN, OTHER, "unsubscribed") is None
