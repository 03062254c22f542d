"""DKIM canonicalisation and signing, held against dkimpy for any input (hypothesis, bounded).

dispatch canonicalises relaxed/relaxed itself (dispatch.compose.dkimcanon); dkimpy is the
reference: the same header fields selected and canonicalised, the same body hash, and every
signature, RSA and Ed25519, verified by dkimpy. Headers are written by the product's own
folding (RFC 2047 encoded-words for non-ASCII names and subjects, folded long lines).
"""

from __future__ import annotations

import base64
import hashlib
from pathlib import Path

import dkim as dkimpy
import pytest
from dkim.canonicalization import Relaxed
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dispatch.compose.dkim import Signatures, load_signer, sign_message
from dispatch.compose.dkimcanon import (
    MAX_LINE,
    OVERSIGNED_HEADERS,
    SIGNED_HEADERS,
    Canonicaliser,
    folded,
    relaxed_body,
)
from dispatch.compose.dkimkeys import KeyRecord, generate_key
from dispatch.compose.message import fold, fold_mailbox

BOUNDED = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# Bodies made of what changes canonical form: spaces, tabs, line breaks (and lone CR or LF),
# dots at the start of lines, quoted-printable soft breaks, and UTF-8.
BODY_BITS = [b"a", b"Zo\xc3\xab", b" ", b"  ", b"\t", b"\r\n", b"\r", b"\n", b".", b"..", b"=\r\n", b"=20"]
bodies = st.lists(st.sampled_from(BODY_BITS), max_size=40).map(b"".join)
# What SMTP carries: no CR or LF but in CRLF (dkimpy's parser turns a lone LF into CRLF).
crlf_bodies = st.lists(st.sampled_from([b for b in BODY_BITS if b not in (b"\r", b"\n")]), max_size=40).map(
    b"".join
)


def _dkimpy_body(body: bytes) -> bytes:
    return bytes(Relaxed.canonicalize_body(body))


@BOUNDED
@given(bodies)
def test_the_body_is_canonicalised_as_dkimpy_does(body: bytes) -> None:
    assert relaxed_body(body) == _dkimpy_body(body)


def _fresh(pieces: list[bytes]) -> list[bytes]:
    """The same bytes as new objects, as each recipient's own values are."""
    return [bytes(bytearray(piece)) for piece in pieces]


@BOUNDED
@given(
    st.lists(bodies, max_size=8), st.lists(bodies, max_size=8), st.sampled_from([b"", b"\r\n", b"\r\n\r\n"])
)
def test_a_body_in_pieces_is_canonicalised_and_hashed_as_the_whole(
    first: list[bytes], second: list[bytes], end: bytes
) -> None:
    """Pieces are canonicalised one by one where one ends a line, remembered when they recur
    (the same objects again, as an issue's constant parts are), and the start that messages
    share is hashed once: the result is always that of the whole body, for the first message
    and the ones after it, whatever follows the shared start (empty lines only, too)."""
    canon = Canonicaliser()
    shared = first[: len(first) // 2]  # recurs in every message below
    messages = [first, shared + second, shared + _fresh(second), second + shared, first, [*shared, end]]
    messages += [shared + _fresh(first), shared, [*shared, *_fresh(shared), end], [end]]
    for pieces in messages * 2:
        whole = _dkimpy_body(b"".join(pieces))
        assert canon.body(pieces) == whole
        assert canon.body_hash(pieces) == hashlib.sha256(whole).digest()


# Header values: printable ASCII and white space, folded (CRLF, then a space or a tab).
words = st.text(st.characters(min_codepoint=0x21, max_codepoint=0x7E), min_size=1, max_size=12)
gaps = st.sampled_from([" ", "  ", "\t", " \t ", "\r\n ", "\r\n\t", " \r\n  "])
values = st.lists(st.tuples(gaps, words), max_size=6).map(lambda parts: "".join(g + w for g, w in parts))
names = st.sampled_from(
    ["From", "FROM", "To", "to", "Subject", "Cc", "Reply-To", "List-Id", "Date", "Message-ID",
     "List-Unsubscribe", "Received", "X-Mailer", "Content-Type", "MIME-Version"]
)  # fmt: skip
fields = st.lists(st.tuples(names, values), max_size=10)


def _message(head: list[tuple[str, str]], body: bytes) -> bytes:
    lines = [f"{name}:{value}\r\n".encode() for name, value in [("From", " a@example.org"), *head]]
    return b"".join(lines) + b"\r\n" + body


def _dkimpy_covers(message: bytes) -> tuple[bytes, bytes]:
    """What dkimpy signs for dispatch's h= list: the header data and the body hash."""
    headers, body = dkimpy.rfc822_parse(message)
    canonical = Relaxed.canonicalize_headers(headers)
    present = [name.lower().decode() for name, _ in canonical]
    include = [n.encode() for n in SIGNED_HEADERS for _ in range(present.count(n))]
    include += [n.encode() for n in OVERSIGNED_HEADERS]
    data = b"".join(name + b":" + value for name, value in dkimpy.select_headers(canonical, include))
    return data, base64.b64encode(hashlib.sha256(_dkimpy_body(body)).digest())


@BOUNDED
@given(fields, crlf_bodies)
def test_the_signed_fields_and_body_hash_are_dkimpys(head: list[tuple[str, str]], body: bytes) -> None:
    message = _message(head, body)
    covered = Canonicaliser().covered(message)
    assert (covered.headers, covered.body_hash) == _dkimpy_covers(message)
    # the From every message has, the generated ones, and one more (over-signed)
    assert covered.names.count(b"from") == 2 + sum(name.lower() == "from" for name, _ in head)


def test_a_message_without_from_or_with_a_stray_line_cannot_be_signed(tmp_path: Path) -> None:
    canon = Canonicaliser()
    with pytest.raises(ValueError, match="From"):
        canon.covered(b"Subject: hi\r\n\r\nbody\r\n")
    with pytest.raises(ValueError, match="starts no field"):
        canon.covered(b"From: a@example.org\r\nnot a field\r\n\r\nbody\r\n")


@BOUNDED
@given(st.lists(st.tuples(st.sampled_from([b"", b" "]), st.binary(min_size=1, max_size=70)), max_size=30))
def test_folded_lines_stay_within_78(words_: list[tuple[bytes, bytes]]) -> None:
    words_ = [(glue, word.replace(b"\r", b"").replace(b"\n", b"")) for glue, word in words_]
    result = folded(b"DKIM-Signature:", [(g, w) for g, w in words_ if w])
    assert all(len(line) <= MAX_LINE for line in result.split(b"\r\n"))
    assert result.replace(b"\r\n ", b"").replace(b" ", b"") == (
        b"DKIM-Signature:" + b"".join(w for _, w in words_ if w).replace(b" ", b"")
    )


# --- signatures, verified by dkimpy -------------------------------------------------------------


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Path, KeyRecord]]:
    folder = tmp_path_factory.mktemp("keys")
    return {
        "rsa": (folder / "rsa.pem", generate_key(folder / "rsa.pem", selector="s2026", domain="example.org")),
        "ed": (
            folder / "ed.pem",
            generate_key(folder / "ed.pem", selector="e2026", domain="example.org", algorithm="ed25519"),
        ),
    }


def dns_for(*records: KeyRecord) -> dict[bytes, bytes]:
    """The TXT answers dkimpy's dnsfunc gives, by name."""
    return {f"{r.name}.".encode(): "".join(r.strings).encode() for r in records}


def verifies(message: bytes, answers: dict[bytes, bytes], index: int = 0) -> bool:
    """dkimpy's verdict on the message's signature number ``index`` (0: the top one)."""
    checker = dkimpy.DKIM(message)
    try:
        return bool(checker.verify(idx=index, dnsfunc=lambda name, timeout=5: answers[name]))
    except dkimpy.ValidationError:  # a body hash that differs is raised, not returned
        return False


text = st.text(st.characters(blacklist_categories=("Cs",)), max_size=120)
line = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\r\n"), max_size=120)
# Lines of a body: the product writes CRLF only (a lone LF, which dkimpy would read as CRLF, never).
lines = st.lists(
    st.one_of(line, st.sampled_from([".", "..", ". leading dot", "trailing  ", "\ttab", ""])), max_size=12
)


@settings(max_examples=40, deadline=None)
@given(name=text, subject=text, body=lines)
def test_any_names_subjects_and_bodies_verify_with_both_signatures(
    keys: dict[str, tuple[Path, KeyRecord]], name: str, subject: str, body: list[str]
) -> None:
    rsa_signer = load_signer(keys["rsa"][0], "s2026", "example.org")
    ed_signer = load_signer(keys["ed"][0], "e2026", "example.org")
    head = fold_mailbox("From", name, "news@example.org") + fold_mailbox("To", name, "zoe@example.com")
    head += fold("Subject", subject) + b"MIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n"
    message = head + b"\r\n" + "\r\n".join(body).encode("utf-8", "surrogatepass") + b"\r\n"
    signed = Signatures((rsa_signer, ed_signer)).signed(message)
    answers = dns_for(keys["rsa"][1], keys["ed"][1])
    assert verifies(signed, answers, 0)
    assert verifies(signed, answers, 1)
    header = signed[: len(signed) - len(message)]
    assert header.count(b"DKIM-Signature:") == 2
    assert all(len(line) <= MAX_LINE for line in header.split(b"\r\n"))
    assert b"a=rsa-sha256;" in header.split(b"DKIM-Signature:")[1]
    assert b"a=ed25519-sha256;" in header.split(b"DKIM-Signature:")[2]
    tampered = signed.replace(b"\r\n\r\n", b"\r\n\r\nX", 1)
    assert not verifies(tampered, answers, 0)
    assert not verifies(tampered, answers, 1)


def test_the_pieces_given_need_not_match_the_message(keys: dict[str, tuple[Path, KeyRecord]]) -> None:
    """Pieces that do not add up to the message are ignored: the message itself is signed."""
    signer = load_signer(keys["rsa"][0], "s2026", "example.org")
    message = b"From: a@example.org\r\nSubject: x\r\n\r\nthe body\r\n"
    header = sign_message(message, (signer,), pieces=[b"From: a@example.org\r\n", b"something else\r\n"])
    assert verifies(header + message, dns_for(keys["rsa"][1]))
