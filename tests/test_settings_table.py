"""The one table of settings: the parser, the example values a send refuses, the unsubscribe
URL's shape (D10), and the list identity that survives changes (D2)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from dispatch.errors import ConfigError, ExitCode
from dispatch.settings import EXAMPLE_SECRET, SETTINGS, Settings
from dispatch.settings.table import PLACEHOLDERS
from dispatch.state.identity import Use, identify, secret_digest
from tests.conftest import BASE_ENV
from tests.smtp_servers import Server


@pytest.mark.parametrize(
    "url",
    [
        "https://example.org/unsubscribe#{token}",
        "https://example.org/unsubscribe?t={token}#top",
        "https://{token}.example.org/unsubscribe",
        "https://{token}@example.org/unsubscribe",
        "https://user:pass@example.org/u/{token}",
        "https://example.org:{token}/u",
        "https:///u/{token}",
    ],
)
def test_an_unsubscribe_url_whose_token_cannot_reach_serve_is_refused(url: str) -> None:
    with pytest.raises(ConfigError, match="DISPATCH_UNSUBSCRIBE_URL"):
        Settings.from_mapping({**BASE_ENV, "DISPATCH_UNSUBSCRIBE_URL": url})


@pytest.mark.parametrize(
    "url",
    [
        "https://example.org/u/{token}",
        "https://example.org/u?t={token}&l=news",
        "https://example.org/unsubscribe",
    ],
)
def test_a_token_in_the_path_or_query_is_fine(url: str) -> None:
    assert Settings.from_mapping({**BASE_ENV, "DISPATCH_UNSUBSCRIBE_URL": url}).unsubscribe_url == url


@pytest.mark.parametrize("key", sorted(PLACEHOLDERS))
def test_each_example_value_is_named_unchanged_and_only_unchanged(key: str) -> None:
    example = {k: v for k, v in PLACEHOLDERS.items() if v is not None}
    held = Settings.from_mapping({**BASE_ENV, key: example[key]}).placeholders()
    assert held == [key]
    assert Settings.from_mapping(BASE_ENV).placeholders() == []


def test_an_example_address_with_another_name_is_still_the_example() -> None:
    settings = Settings.from_mapping({**BASE_ENV, "DISPATCH_FROM": "Our News <NEWSLETTER@example.org>"})
    assert settings.placeholders() == ["DISPATCH_FROM"]


@pytest.mark.parametrize("key", ["DISPATCH_FROM", "DISPATCH_LIST_ID", "DISPATCH_UNSUBSCRIBE_SECRET"])
def test_a_real_send_with_an_example_value_is_refused_and_sends_nothing(
    key: str, plain_server: Server, invoke: Callable[..., Any], article: Path, subscribers: Path,
    env_file: Callable[..., Path],
) -> None:  # fmt: skip
    settings = env_file(**plain_server.env(), **{key: PLACEHOLDERS[key]})
    done = invoke("send", article, "-s", subscribers, "--env-file", settings, "--yes")
    assert done.exit_code == ExitCode.BAD_INPUT
    assert key in done.stderr
    assert "refusing to send" in done.stderr
    assert plain_server.received == []
    checked = invoke("check", article, "-s", subscribers, "--env-file", settings)
    assert checked.exit_code == ExitCode.BAD_INPUT
    assert key in checked.stdout


def test_the_published_secret_is_the_example() -> None:
    assert PLACEHOLDERS["DISPATCH_UNSUBSCRIBE_SECRET"] == EXAMPLE_SECRET
    assert all(s.secret for s in SETTINGS if "SECRET" in s.name or "PASSWORD" in s.name)


# --- list identity (D2) --------------------------------------------------------------------

S1, S2, S3 = (secret_digest(s) for s in ("first secret", "second secret", "third secret"))
HERE = "/srv/news/.env"


def test_a_renamed_list_keeps_its_earlier_ids() -> None:
    known = [Use("acme-society.example.org", HERE, S1)]
    renamed = identify(Use("harbour-society.example.org", HERE, S1), (S1,), known)
    assert renamed.list_ids == ("harbour-society.example.org", "acme-society.example.org")
    assert "earlier list ids stay unsubscribed" in renamed.notes[0]


def test_a_chain_of_changes_keeps_every_id() -> None:
    known = [Use("a.example.org", HERE, S1), Use("b.example.org", HERE, S1), Use("c.example.org", HERE, S1)]
    rotated = identify(Use("c.example.org", HERE, S2), (S2, S1), known)  # the old secret is kept
    assert set(rotated.list_ids) == {"a.example.org", "b.example.org", "c.example.org"}
    assert rotated.notes == ()
    dropped = identify(Use("c.example.org", HERE, S3), (S3,), [*known, Use("c.example.org", HERE, S2)])
    assert set(dropped.list_ids) == {"a.example.org", "b.example.org", "c.example.org"}
    assert "secret changed" in dropped.notes[0]


@pytest.mark.parametrize("kept", [False, True])
def test_a_secret_changed_with_the_list_id_is_noticed_unless_kept(kept: bool) -> None:
    """Links of the issues sent under the earlier list id were sealed with the earlier secret."""
    known = [Use("a.example.org", HERE, S1)]
    both = identify(Use("b.example.org", HERE, S2), (S2, S1) if kept else (S2,), known)
    assert both.list_ids == ("b.example.org", "a.example.org")
    assert "earlier list ids stay unsubscribed" in both.notes[0]
    assert any("secret changed" in note for note in both.notes) is not kept


def test_a_list_id_sent_from_another_settings_file_is_still_the_same_list() -> None:
    moved = identify(
        Use("news.example.org", "/elsewhere/.env", S1), (S1,), [Use("news.example.org", HERE, S1)]
    )
    assert moved.list_ids == ("news.example.org",)
    assert moved.notes == ()


def test_another_newsletter_in_the_same_state_stays_apart() -> None:
    other = identify(
        Use("other.example.com", "/srv/other.env", S1), (S1,), [Use("news.example.org", HERE, S1)]
    )
    assert other.list_ids == ("other.example.com",)
    assert "do not apply to it" in other.notes[0]


def test_the_digest_is_keyed_and_reveals_nothing() -> None:
    assert secret_digest("s") != secret_digest("t")
    assert "s" * 3 not in secret_digest("sss")
