"""Hostile values in imported files and options (issue 14, D5 and D15), kept as regression tests.

Expected: every value in a suppression import's time column (year 0, year 99999, a negative
epoch, 1e300, NaN, odd offsets) gives an entry that ``suppress list``, ``suppress export``,
``status`` and a send can read, and the address stays suppressed; a store another program wrote
odd times into is read all the same; ``--encoding`` with a codec that is not a text encoding is
one line naming the option; UTF-16 and UTF-32 lists are read with or without their byte-order
mark (or refused with what to pass); a DKIM key of a type or size that cannot sign is one line
naming DISPATCH_DKIM_KEY_FILE.
"""

from __future__ import annotations

import codecs
import csv
import io
import json
import math
import re
import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import dsa, ec, ed448, rsa, x25519

from tests.attack_helpers import (
    Recording,
    Relays,
    eml_files,
    judge_error,
    no_crash,
    parse,
    run_dispatch,
    settings_file,
    write_article,
)

Invoke = Callable[..., Any]
ISO_UTC = r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ"


@pytest.fixture
def scene(tmp_path: Path, relay: Relays) -> dict[str, Any]:
    handler = Recording()
    server = relay.start(handler)
    return {
        "tmp": tmp_path,
        "server": server,
        "article": write_article(tmp_path / "issue.md"),
        "env": settings_file(tmp_path, server),
        "out": tmp_path / "out",
    }


def write(path: Path, data: str | bytes) -> Path:
    if isinstance(data, str):
        path.write_text(data, encoding="utf-8", newline="")
    else:
        path.write_bytes(data)
    return path


def summary(result: Any) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(result.stdout)
    return data


# ------------------------------------------------------------------------- D5: times in suppression imports

ODD_TIMES = {
    "year-0": "0000-01-01T00:00:00",
    "year-99999": "99999-01-01",
    "negative-epoch": "-1",
    "very-negative-epoch": "-99999999999999",
    "1e300": "1e300",
    "nan": "nan",
    "infinity": "inf",
    "past-year-9999": "253402300800",
    "2-to-the-63": "9223372036854775808",
    "huge-integer": "9" * 400,
    "offset-past-year-1": "0001-01-01T00:00:00+14:00",
    "offset-past-year-9999": "9999-12-31T23:59:59-14:00",
    "offset-23-59": "2024-01-01T00:00:00+23:59",
    "in-the-future": "2999-01-01",
    "not-a-time": "yesterday-ish",
    "formula": "=NOW()",
}


@pytest.mark.parametrize("when", ODD_TIMES.values(), ids=ODD_TIMES.keys())
def test_any_imported_time_leaves_a_store_every_command_reads(
    invoke: Invoke, scene: dict[str, Any], when: str
) -> None:
    env, tmp = scene["env"], scene["tmp"]
    rows = write(tmp / "odd.csv", f"email,reason,time\nann@example.org,bounced,{when}\n")
    imported = invoke("suppress", "import", rows, "--env-file", env, "--json")
    assert imported.exit_code == 0, imported.output
    assert summary(imported)["added"] == 1
    listed = invoke("suppress", "list", "--env-file", env)
    assert listed.exit_code == 0, listed.output
    assert "ann@example.org" in listed.stdout
    exported = invoke("suppress", "export", "--env-file", env)
    assert exported.exit_code == 0, exported.output
    [row] = list(csv.DictReader(io.StringIO(exported.stdout)))
    assert row["email"] == "ann@example.org"
    assert re.fullmatch(ISO_UTC, row["time"]), row
    assert "1970-01-01" <= row["time"][:10] <= "2999-12-31"
    as_json = invoke("suppress", "export", "--json", "--env-file", env)
    assert as_json.exit_code == 0, as_json.output
    assert json.loads(as_json.stdout)[0]["email"] == "ann@example.org"
    status = invoke("status", "--env-file", env)
    assert status.exit_code == 0, status.output
    people = write(tmp / "people.csv", "email,name\nann@example.org,Ann\nbob@example.com,Bob\n")
    dry = invoke("send", scene["article"], "-s", people, "--env-file", env, "--dry-run", "--out",
                 scene["out"], "--json")  # fmt: skip
    assert dry.exit_code == 0, dry.output
    assert summary(dry)["suppressed"] == 1


def test_a_send_after_importing_every_odd_time_skips_each_address(
    invoke: Invoke, scene: dict[str, Any]
) -> None:
    tmp = scene["tmp"]
    addresses = [f"odd{i}@example.org" for i in range(len(ODD_TIMES))]
    body = "".join(f"{a},{t}\n" for a, t in zip(addresses, ODD_TIMES.values(), strict=True))
    rows = write(tmp / "odd.csv", "email,unsub_time\n" + body)
    imported = invoke("suppress", "import", rows, "--list", "news.example.org", "--env-file", scene["env"])
    assert imported.exit_code == 0, imported.output
    people = write(
        tmp / "people.csv", "email\n" + "".join(f"{a}\n" for a in addresses) + "kept@example.com\n"
    )
    env = settings_file(tmp, scene["server"], name="list.env", LIST_ID="news.example.org")
    result = invoke("send", scene["article"], "-s", people, "--env-file", env, "--yes", "--json")
    assert result.exit_code == 0, result.output
    assert summary(result)["suppressed"] == len(addresses)
    assert [r for item in scene["server"].handler.received for r in item.rcpt_tos] == ["kept@example.com"]


STORED = {
    "text": "last tuesday",
    "real-1e300": 1e300,
    "very-negative": -(10**15),
    "int64-max": 2**63 - 1,
    "blob": b"\x00\xff",
}


@pytest.mark.parametrize("value", STORED.values(), ids=STORED.keys())
def test_a_store_holding_odd_times_from_elsewhere_is_still_read(
    invoke: Invoke, scene: dict[str, Any], value: object
) -> None:
    """A suppression store is a file other programs (and older versions) may have written: an
    odd time in it must not make list, export or a send fail."""
    env = scene["env"]
    added = invoke("suppress", "add", "ann@example.org", "--env-file", env)
    assert added.exit_code == 0, added.output
    with sqlite3.connect(scene["tmp"] / "state" / "suppression.sqlite3") as db:
        db.execute("UPDATE suppressions SET created = ?", (value,))
    for args in (("suppress", "list"), ("suppress", "export"), ("suppress", "export", "--json"), ("status",)):
        result = invoke(*args, "--env-file", env)
        no_crash(result.stderr)
        assert result.exit_code == 0, (args, result.output)
    people = write(scene["tmp"] / "people.csv", "email\nann@example.org\nbob@example.com\n")
    result = invoke("send", scene["article"], "-s", people, "--env-file", env, "--yes", "--json")
    assert result.exit_code == 0, result.output
    assert [r for item in scene["server"].handler.received for r in item.rcpt_tos] == ["bob@example.com"]


# ------------------------------------------------------------------------- D15: --encoding

NOT_TEXT_ENCODINGS = [
    "rot13", "uu_codec", "base64", "hex", "zlib_codec", "bz2_codec", "quopri", "idna", "punycode",
    "undefined", "unicode_escape", "raw_unicode_escape", "no-such-codec", "", "utf-8\x00", "x" * 5000,
]  # fmt: skip


@pytest.mark.parametrize("codec", NOT_TEXT_ENCODINGS, ids=lambda c: c[:20] or "empty")
@pytest.mark.parametrize("command", ["dry-run", "check", "suppress-import"])
def test_an_encoding_that_reads_no_text_is_one_line(
    invoke: Invoke, scene: dict[str, Any], codec: str, command: str
) -> None:
    people = write(scene["tmp"] / "people.csv", "email,name\nann@example.org,Ann\n")
    env, article = scene["env"], scene["article"]
    if command == "dry-run":
        result = invoke("send", article, "-s", people, "--env-file", env, "--dry-run", "--out", scene["out"],
                        "--encoding", codec)  # fmt: skip
    elif command == "check":
        result = invoke("check", article, "-s", people, "--env-file", env, "--encoding", codec)
    else:
        result = invoke("suppress", "import", people, "--env-file", env, "--encoding", codec)
    assert result.exit_code == 2, result.output
    line = judge_error(result.stderr, "--encoding")
    assert len(line) < 300, line  # the name is shortened, not echoed whole


UTF16_LIST = "email,name\nann@example.org,Änn Müller\nbob@example.com,李小龙\n"
WIDE = ["utf-16", "utf-16-le", "utf-16-be", "utf-32", "utf-32-le", "utf-32-be"]


@pytest.mark.parametrize("codec", WIDE)
@pytest.mark.parametrize("given", ["", "utf-16", "utf-32"], ids=["default", "said-utf-16", "said-utf-32"])
def test_a_utf16_or_utf32_list_is_read_with_or_without_its_mark(
    invoke: Invoke, scene: dict[str, Any], codec: str, given: str
) -> None:
    people = write(scene["tmp"] / "people.csv", UTF16_LIST.encode(codec))
    extra = ("--encoding", given) if given else ()
    result = invoke("send", scene["article"], "-s", people, "--env-file", scene["env"], "--dry-run", "--out",
                    scene["out"], "--json", *extra)  # fmt: skip
    if given and not codec.startswith(given):  # said UTF-16 of a UTF-32 file: told what to pass
        assert result.exit_code == 2, result.output
        judge_error(result.stderr, str(people), "--encoding")
        return
    assert result.exit_code == 0, result.output
    assert summary(result)["skipped_rows"] == []
    messages = [parse(eml.read_bytes()) for eml in eml_files(scene["out"])]
    assert [str(m["To"]) for m in messages] == ["Änn Müller <ann@example.org>", "李小龙 <bob@example.com>"]
    imported = invoke("suppress", "import", people, "--env-file", scene["env"], "--reason", "manual",
                      "--json", *extra)  # fmt: skip
    assert imported.exit_code == 0, imported.output
    assert summary(imported)["added"] == 2


def test_utf16_without_a_mark_that_cannot_be_told_apart_says_what_to_pass(
    invoke: Invoke, scene: dict[str, Any]
) -> None:
    people = write(scene["tmp"] / "people.csv", "email,name\nann@example.org,Ann\n")  # UTF-8, said UTF-16
    for args in (
        ("send", scene["article"], "-s", people, "--dry-run", "--out", scene["out"]),
        ("suppress", "import", people, "--reason", "manual"),
    ):
        result = invoke(*args, "--env-file", scene["env"], "--encoding", "utf-16")
        assert result.exit_code == 2, result.output
        judge_error(result.stderr, str(people), "utf-16-le", "UTF-8")


def test_a_bad_byte_in_a_utf16_list_names_its_line(invoke: Invoke, scene: dict[str, Any]) -> None:
    good = "email,name\n" + "".join(f"user{i}@example.org,User {i}\n" for i in range(3000))
    data = (
        codecs.BOM_UTF16_LE + good.encode("utf-16-le") + b"\x00\xd8" + "x\n".encode("utf-16-le")
    )  # lone surrogate
    people = write(scene["tmp"] / "people.csv", data)
    result = invoke("send", scene["article"], "-s", people, "--env-file", scene["env"], "--dry-run", "--out",
                    scene["out"])  # fmt: skip
    assert result.exit_code == 2, result.output
    judge_error(result.stderr, str(people), "line 3002", "UTF-16")


# ------------------------------------------------------------------------- D15: DKIM keys that cannot sign


def _pem(key: Any, encryption: serialization.KeySerializationEncryption | None = None) -> bytes:
    fmt = serialization.PrivateFormat.PKCS8
    data: bytes = key.private_bytes(
        serialization.Encoding.PEM, fmt, encryption or serialization.NoEncryption()
    )
    return data


def _traditional_encrypted() -> bytes:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    data: bytes = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.BestAvailableEncryption(b"passphrase"),
    )
    return data


def _public() -> bytes:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048).public_key()
    return key.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)


def _mismatched_rsa(*, composite: bool) -> bytes:
    """A 2048-bit RSA key OpenSSL's own check would refuse: a private exponent one off from the
    right one, or the numbers all consistent but one "prime" the product of two primes."""
    e = 65537
    big = rsa.generate_private_key(e, 2048).private_numbers()
    p, q, d = big.p, big.q, big.d + 2
    while composite:  # until the product has 2048 bits and e has an inverse
        small = rsa.generate_private_key(e, 1024).private_numbers()  # noqa: S505 - two 512-bit primes
        p = small.p * small.q
        if (p * q).bit_length() == 2048 and math.gcd(e, math.lcm(p - 1, q - 1)) == 1:
            d = pow(e, -1, math.lcm(p - 1, q - 1))
            break
    numbers = rsa.RSAPrivateNumbers(
        p, q, d, d % (p - 1), d % (q - 1), pow(q, -1, p), rsa.RSAPublicNumbers(e, p * q)
    )
    return _pem(numbers.private_key(unsafe_skip_rsa_key_validation=True))


BAD_KEYS: dict[str, tuple[Callable[[], bytes], str]] = {
    "dsa": (lambda: _pem(dsa.generate_private_key(key_size=2048)), "DSA key"),
    "ec-p256": (lambda: _pem(ec.generate_private_key(ec.SECP256R1())), "an EC key"),
    "ed448": (lambda: _pem(ed448.Ed448PrivateKey.generate()), "Ed448 key"),
    "x25519": (lambda: _pem(x25519.X25519PrivateKey.generate()), "X25519 key"),
    "rsa-1024": (lambda: _pem(rsa.generate_private_key(65537, 1024)), "1024-bit"),  # noqa: S505 - the point
    "rsa-2047": (lambda: _pem(rsa.generate_private_key(65537, 2047)), "2047-bit"),  # noqa: S505
    "encrypted-pkcs8": (
        lambda: _pem(
            rsa.generate_private_key(public_exponent=65537, key_size=2048),
            serialization.BestAvailableEncryption(b"passphrase"),
        ),
        "passphrase",
    ),
    "encrypted-traditional": (_traditional_encrypted, "passphrase"),
    "public-key": (_public, "public key"),
    "garbage": (
        lambda: b"-----BEGIN PRIVATE KEY-----\nbm90IGEga2V5\n-----END PRIVATE KEY-----\n",
        "not a PEM",
    ),
    "binary": (lambda: bytes(range(256)) * 4, "not a PEM"),
    "rsa-wrong-exponent": (lambda: _mismatched_rsa(composite=False), "parts do not match"),
    "rsa-composite-prime": (lambda: _mismatched_rsa(composite=True), "parts do not match"),
}


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore:DSA is deprecated")  # making the test's own DSA key
@pytest.mark.parametrize("kind", BAD_KEYS.keys())
def test_a_dkim_key_that_cannot_sign_is_one_line_naming_the_setting(scene: dict[str, Any], kind: str) -> None:
    make, words = BAD_KEYS[kind]
    key = write(scene["tmp"] / "dkim.pem", make())
    key.chmod(0o600)
    env = settings_file(scene["tmp"], scene["server"], name="dkim.env", DKIM_KEY_FILE=str(key),
                        DKIM_SELECTOR="s1", DKIM_DOMAIN="example.org")  # fmt: skip
    people = write(scene["tmp"] / "people.csv", "email\nann@example.org\n")
    result = run_dispatch(
        "send", scene["article"], "-s", people, "--env-file", env, "--yes", cwd=scene["tmp"]
    )
    assert result.returncode == 2, result.stderr
    judge_error(result.stderr, "DISPATCH_DKIM_KEY_FILE", str(key), words)  # and no warning of the library's
    assert scene["server"].handler.received == []
