"""dispatch.unsubscribe.tokens: sealed unsubscribe tokens (issue 7), and where they go in a URL."""

from __future__ import annotations

import base64
import string
from urllib.parse import urlsplit

import pytest

from dispatch.addresses import validate_address
from dispatch.errors import ConfigError, InputError
from dispatch.unsubscribe.tokens import (
    MAX_TOKEN_LENGTH,
    BadToken,
    make_token,
    read_token,
    token_from_request,
    unsubscribe_link,
)

SECRET = "k3y-for-tests-only-0123456789-abcdefghij"
LIST = "news.example.org"
B64URL = string.ascii_letters + string.digits + "-_"
LONG_LOCAL = "a" * 30 + "." + "b" * 33  # 64 characters, the most a local part may have
ADDRESSES = [
    "ann@example.org",
    "Ann.Example+news@Example.COM",
    "zoe@bücher.example",
    "o'neil_{x}=y@xn--mnchen-3ya.example",
    f"{LONG_LOCAL}@{'c' * 60}.{'d' * 60}.example.org",
]
LISTS = [LIST, "weekly-digest.example-foundation.org", "a.b", "News.Example.ORG", "odd(list)[1]:x,y.example"]


@pytest.mark.parametrize("address", ADDRESSES)
@pytest.mark.parametrize("list_id", LISTS)
def test_round_trip(address: str, list_id: str) -> None:
    token = make_token(SECRET, list_id, address)
    assert read_token(SECRET, token) == (list_id.lower(), validate_address(address).lower())
    assert len(token) <= MAX_TOKEN_LENGTH


@pytest.mark.parametrize("length", range(1, 9))
def test_round_trip_for_every_padding(length: int) -> None:
    """Packing 6 bits a character leaves 0, 2, 4 or 6 spare bits: each case reads back."""
    list_id = "l" * length + ".example"
    assert read_token(SECRET, make_token(SECRET, list_id, "ann@example.org"))[0] == list_id


def test_the_same_inputs_give_the_same_token_and_others_differ() -> None:
    token = make_token(SECRET, LIST, "ann@example.org")
    assert make_token(SECRET, LIST, " ANN@example.org ") == token  # the key: trimmed, case-folded
    others = {
        make_token(SECRET, LIST, "bob@example.org"),
        make_token(SECRET, "other.example.org", "ann@example.org"),
        make_token(SECRET + "x", LIST, "ann@example.org"),
    }
    assert token not in others
    assert len(others) == 3


def test_documented_lengths() -> None:
    """The figures in the module docstring."""
    assert len(make_token(SECRET, LIST, "ann.example@gmail.com")) == 62
    assert len(make_token(SECRET, "x" * 21 + ".org", "y" * 18 + "@example.com")) == 79
    longest = make_token(SECRET, "a" * 196 + ".org", LONG_LOCAL + "@" + "c" * 60 + "." + "d" * 60 + ".org")
    assert len(longest) < MAX_TOKEN_LENGTH == 1388


def test_every_single_character_change_is_refused() -> None:
    token = make_token(SECRET, LIST, "ann@example.org")
    for at, original in enumerate(token):
        for char in B64URL + "=.~% é":
            if char != original:
                with pytest.raises(BadToken):
                    read_token(SECRET, token[:at] + char + token[at + 1 :])


def test_every_bit_flip_of_the_bytes_is_refused() -> None:
    data = base64.urlsafe_b64decode(make_token(SECRET, LIST, "ann@example.org") + "==")
    for at in range(len(data)):
        for bit in range(8):
            changed = bytearray(data)
            changed[at] ^= 1 << bit
            with pytest.raises(BadToken):
                read_token(SECRET, base64.urlsafe_b64encode(bytes(changed)).rstrip(b"=").decode())


def test_every_truncation_and_extension_is_refused() -> None:
    token = make_token(SECRET, LIST, "ann@example.org")
    for end in range(len(token)):
        with pytest.raises(BadToken):
            read_token(SECRET, token[:end])
        with pytest.raises(BadToken):
            read_token(SECRET, token[end + 1 :])
    for extra in ("A", "AA", "AAAA", "="):
        with pytest.raises(BadToken):
            read_token(SECRET, token + extra)


def test_another_secret_cannot_read_or_forge() -> None:
    token = make_token("another-secret-" + SECRET, LIST, "ann@example.org")
    with pytest.raises(BadToken, match="another secret"):
        read_token(SECRET, token)


def test_a_token_reads_only_as_its_own_list() -> None:
    ann_news = make_token(SECRET, LIST, "ann@example.org")
    ann_other = make_token(SECRET, "other.example.org", "ann@example.org")
    assert read_token(SECRET, ann_other) == ("other.example.org", "ann@example.org")
    assert read_token(SECRET, ann_news)[0] == LIST


@pytest.mark.parametrize(
    "token",
    ["", "not a token", "abc+def/ghi", "AAAA====", "%41%42", "A" * (MAX_TOKEN_LENGTH + 1), "A" * 30],
)
def test_not_tokens_are_refused(token: str) -> None:
    with pytest.raises(BadToken):
        read_token(SECRET, token)


def test_another_version_is_refused_by_name() -> None:
    data = bytearray(base64.urlsafe_b64decode(make_token(SECRET, LIST, "ann@example.org") + "=="))
    data[0] = 2
    with pytest.raises(BadToken, match="version 2"):
        read_token(SECRET, base64.urlsafe_b64encode(bytes(data)).rstrip(b"=").decode())


@pytest.mark.parametrize("address", ["ann.lee@example.org", "Zoe@Bücher.example", "abc@abc.example"])
def test_the_address_cannot_be_read_from_the_token(address: str) -> None:
    token = make_token(SECRET, LIST, address)
    key = validate_address(address).lower()
    local, _, domain = key.partition("@")
    raw = base64.urlsafe_b64decode(token + "==")
    for piece in (key, local, domain, LIST):
        assert piece not in token.lower()
        assert piece.encode() not in raw.lower()
    for shift in range(3):  # the address in base64, at each of the three alignments
        encoded = base64.urlsafe_b64encode(b"\0" * shift + key.encode()).decode()
        assert encoded[4:-4].lower() not in token.lower()


def test_no_secret_and_bad_inputs_are_errors_that_name_the_setting() -> None:
    with pytest.raises(ConfigError, match="DISPATCH_UNSUBSCRIBE_SECRET"):
        make_token("", LIST, "ann@example.org")
    with pytest.raises(ConfigError, match="DISPATCH_LIST_ID"):
        make_token(SECRET, "news@example.org", "ann@example.org")
    with pytest.raises(ConfigError, match="DISPATCH_LIST_ID"):
        make_token(SECRET, "", "ann@example.org")
    with pytest.raises(InputError, match="not an email address"):
        make_token(SECRET, LIST, "not-an-address")


@pytest.mark.parametrize(
    ("template", "expected"),
    [
        ("https://example.org/u/{token}", "https://example.org/u/TOKEN"),
        ("https://example.org/u/{token}?src=mail", "https://example.org/u/TOKEN?src=mail"),
        ("https://example.org/unsubscribe", "https://example.org/unsubscribe?t=TOKEN"),
        ("https://example.org/unsubscribe?list=a", "https://example.org/unsubscribe?list=a&t=TOKEN"),
        ("https://example.org/unsubscribe?", "https://example.org/unsubscribe?t=TOKEN"),
        ("https://example.org/u#top", "https://example.org/u?t=TOKEN#top"),
        ("https://example.org/u?e={email}", "https://example.org/u?e=a%2Bb@example.org&t=TOKEN"),
    ],
)
def test_unsubscribe_link(template: str, expected: str) -> None:
    assert unsubscribe_link(template, "a+b@example.org", "TOKEN") == expected


@pytest.mark.parametrize(
    "template",
    [
        "https://example.org/u/{token}",
        "https://example.org/news/u-{token}.html",
        "https://example.org/unsubscribe",
        "https://example.org/unsubscribe?list=weekly",
        "https://example.org/unsubscribe?id={token}&list=weekly",
        "https://example.org/unsubscribe?email={email}",
        "https://example.org/x/{email}/{token}",
        "https://example.org",
    ],
)
def test_the_server_finds_the_token_where_the_link_put_it(template: str) -> None:
    token = make_token(SECRET, LIST, "a+b@example.org")
    parts = urlsplit(unsubscribe_link(template, "a+b@example.org", token))
    assert token_from_request(template, parts.path or "/", parts.query) == token
    assert token_from_request(template, "/elsewhere", parts.query) is None


@pytest.mark.parametrize(
    ("template", "path", "query", "found"),
    [
        ("https://example.org/u/{token}", "/u/", "", ""),
        ("https://example.org/u/{token}", "/u/abc/def", "", None),
        ("https://example.org/u/{token}", "/u", "", None),
        ("https://example.org/unsubscribe", "/unsubscribe", "", ""),
        ("https://example.org/unsubscribe", "/unsubscribe", "t=abc&t=def", "abc"),
        ("https://example.org/unsubscribe?id=x-{token}", "/unsubscribe", "id=y-abc", ""),
        ("https://example.org/unsubscribe?id=x-{token}", "/unsubscribe", "id=x-abc", "abc"),
    ],
)
def test_token_from_request_shapes(template: str, path: str, query: str, found: str | None) -> None:
    assert token_from_request(template, path, query) == found


# --- rotating the secret ----------------------------------------------------------------------

OLD, OLDER = "old-" + SECRET, "older-" + SECRET


@pytest.mark.parametrize("made_with", [SECRET, OLD, OLDER])
def test_a_token_of_the_current_or_a_previous_secret_is_read(made_with: str) -> None:
    token = make_token(made_with, LIST, "ann@example.org")
    assert read_token(SECRET, token, (OLD, OLDER)) == (LIST, "ann@example.org")


def test_previous_secrets_open_nothing_else() -> None:
    stranger = make_token("stranger-" + SECRET, LIST, "ann@example.org")
    with pytest.raises(BadToken, match="another secret"):
        read_token(SECRET, stranger, (OLD, "", OLDER))
    token = make_token(OLD, LIST, "ann@example.org")
    with pytest.raises(BadToken, match="another secret"):
        read_token(SECRET, token)  # without the previous secret, the old link is refused
    altered = token[:-2] + ("AA" if not token.endswith("AA") else "BB")
    with pytest.raises(BadToken):
        read_token(SECRET, altered, (OLD,))


def test_new_tokens_use_the_current_secret_only() -> None:
    token = make_token(SECRET, LIST, "ann@example.org")
    with pytest.raises(BadToken):
        read_token(OLD, token)
