"""Tokens that fit a local part: the envelope sender that names a message (VERP without an
address) and the mailto unsubscribe; and how a send writes them (MAIL FROM, List-Unsubscribe)."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from dispatch.errors import ConfigError
from dispatch.settings import Settings
from dispatch.unsubscribe.address_tokens import (
    BOUNCE,
    MAX_BOUNCE_LOCAL,
    UNSUBSCRIBE,
    Maker,
    campaign_ref,
    found_in,
    make,
    read,
    reader_ref,
)
from dispatch.unsubscribe.tokens import BadToken
from tests.smtp_servers import FaultPlan, Server

SECRET = "address-token-secret-0123456789-abcdefghij"
OLD = "the-secret-before-the-rotation-0123456789ab"
LIST = "news.example.org"


def test_a_token_is_32_lower_case_base32_characters_and_fits_the_longest_local_part() -> None:
    token = make(SECRET, BOUNCE, LIST, "spring-2026", "ann.example@example.com")
    assert re.fullmatch(r"[a-z2-7]{32}", token)
    assert len("b" * MAX_BOUNCE_LOCAL + "+u-" + token) == 64


@given(st.text(min_size=1, max_size=60), st.emails(), st.sampled_from([BOUNCE, UNSUBSCRIBE]))
def test_the_per_campaign_maker_makes_the_same_token_as_make(campaign: str, email: str, kind: str) -> None:
    maker = Maker(SECRET, f"<{LIST}>", campaign)
    assert maker.token(kind, email.lower()) == make(SECRET, kind, LIST, campaign, email.lower())
    assert maker.token(kind, email.lower()) == maker.token(kind, email.lower())  # the keyed copy is reused


@given(st.text(min_size=1, max_size=100), st.emails())
def test_a_token_opens_to_its_campaign_and_reader_and_holds_no_address(campaign: str, email: str) -> None:
    key = email.lower()
    token = make(SECRET, BOUNCE, LIST, campaign, key)
    opened = read(token.upper(), BOUNCE, [SECRET], [LIST])  # a relay may change its case
    assert (opened.campaign_ref, opened.reader_ref) == (
        campaign_ref(SECRET, campaign),
        reader_ref(SECRET, key),
    )
    assert opened.list_id == LIST
    assert key.split("@")[0][:6].lower() not in token or len(key.split("@")[0]) < 6


@pytest.mark.parametrize(
    ("secrets", "kind", "lists", "why"),
    [
        (["another-secret-0123456789-abcdefghijklmno"], BOUNCE, [LIST], "another secret"),
        ([SECRET], BOUNCE, ["other.example.org"], "another list"),
        ([SECRET], UNSUBSCRIBE, [LIST], "a bounce token is no unsubscribe token"),
    ],
)
def test_a_token_opens_only_for_its_secret_list_and_kind(
    secrets: list[str], kind: str, lists: list[str], why: str
) -> None:
    token = make(SECRET, BOUNCE, LIST, "spring", "ann@example.com")
    with pytest.raises(BadToken):
        read(token, kind, secrets, lists)
    assert read(token, BOUNCE, [SECRET], [LIST]).kind == BOUNCE  # control


@pytest.mark.parametrize("position", [0, 7, 20, 31])
def test_any_changed_character_is_refused(position: int) -> None:
    token = make(SECRET, BOUNCE, LIST, "spring", "ann@example.com")
    changed = token[:position] + ("a" if token[position] != "a" else "b") + token[position + 1 :]
    with pytest.raises(BadToken):
        read(changed, BOUNCE, [SECRET], [LIST])


def test_a_token_made_before_a_rotation_still_opens_with_the_previous_secret() -> None:
    token = make(OLD, UNSUBSCRIBE, LIST, "spring", "ann@example.com")
    assert read(token, UNSUBSCRIBE, [SECRET, OLD], [LIST]).secret == OLD


def test_tokens_are_found_where_they_stand_and_nowhere_else() -> None:
    token = make(SECRET, BOUNCE, LIST, "spring", "ann@example.com")
    assert found_in(f"bounces+{token}") == [(BOUNCE, token)]
    assert found_in(f"unsubscribe u-{token}") == [(UNSUBSCRIBE, token)]
    assert found_in(f"x{token}") == []
    assert found_in("bounces") == []


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("bounces+news@news.example.org", "without a '+'"),
        ("a" * 30 + "@news.example.org", "at most 29"),
        ("Bounces <bounces@news.example.org>", "no name"),
        ("not an address", "not an address"),
    ],
)
def test_a_bounce_address_that_cannot_carry_a_token_is_refused(value: str, message: str) -> None:
    with pytest.raises(ConfigError, match="DISPATCH_BOUNCE_ADDRESS") as raised:
        Settings.from_mapping({"DISPATCH_BOUNCE_ADDRESS": value})
    assert message in str(raised.value)


def _send(
    tmp_path: Path, server: Server, env_file: Callable[..., Path], invoke: Callable[..., object], **extra: str
) -> object:
    people = tmp_path / "list.csv"
    people.write_text(
        "email,name\nann@example.com,Ann\nbob@example.com,Bob\ncy@example.com,Cy\n", encoding="utf-8"
    )
    issue = tmp_path / "issue.md"
    issue.write_text("---\ntitle: Spring\ncampaign: spring\n---\n\nHello.\n", encoding="utf-8")
    env = env_file(**server.env(), DISPATCH_UNSUBSCRIBE_URL="https://news.example.org/u/{token}", **extra)
    return invoke("send", issue, "-s", people, "--env-file", env, "--yes")


@pytest.mark.parametrize("connections", ["1", "2"])
def test_each_message_goes_out_from_its_own_bounce_address(
    tmp_path: Path, plain_server: Server, env_file: Callable[..., Path], invoke: Callable[..., object],
    connections: str,
) -> None:  # fmt: skip
    result = _send(
        tmp_path, plain_server, env_file, invoke, DISPATCH_BOUNCE_ADDRESS="bounces@news.example.org",
        DISPATCH_CONNECTIONS=connections,
    )  # fmt: skip
    assert getattr(result, "exit_code", None) == 0, getattr(result, "stderr", "")
    senders = {r.rcpt_tos[0]: r.mail_from for r in plain_server.received}
    assert len(senders) == 3
    assert len(set(senders.values())) == 3
    for reader, sender in senders.items():
        token = re.fullmatch(r"bounces\+([a-z2-7]{32})@news\.example\.org", sender)
        assert token is not None, sender
        assert read(token[1], BOUNCE, [env_secret()], [Settings.from_mapping(base()).list_id]).kind == BOUNCE
        assert reader.split("@")[0] not in sender


def test_without_a_bounce_address_mail_from_is_the_from_address_as_before(
    tmp_path: Path, plain_server: Server, env_file: Callable[..., Path], invoke: Callable[..., object]
) -> None:
    _send(tmp_path, plain_server, env_file, invoke)
    assert {r.mail_from for r in plain_server.received} == {"news@example.org"}


def test_a_relay_refusing_the_bounce_address_names_the_setting_and_no_token(
    tmp_path: Path,
    smtp_server: Callable[..., Server],
    env_file: Callable[..., Path],
    invoke: Callable[..., object],
) -> None:
    server = smtp_server(faults=FaultPlan(refuse_sender="550 5.7.1 sender not allowed"))
    result = _send(tmp_path, server, env_file, invoke, DISPATCH_BOUNCE_ADDRESS="bounces@news.example.org")
    stderr = str(getattr(result, "stdout", "")) + str(getattr(result, "stderr", ""))
    assert getattr(result, "exit_code", None) == 3
    assert "refused the sender bounces+…@news.example.org" in stderr
    assert "check DISPATCH_BOUNCE_ADDRESS" in stderr
    assert re.search(r"[a-z2-7]{32}", stderr) is None


def base() -> dict[str, str]:
    from tests.conftest import BASE_ENV

    return dict(BASE_ENV)


def env_secret() -> str:
    return base()["DISPATCH_UNSUBSCRIBE_SECRET"]
