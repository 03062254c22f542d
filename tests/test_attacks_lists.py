"""Attacks with malformed subscriber lists (issue 6, class 5), kept as regression tests.

Expected: nothing is silently merged (a quote left open is refused, exit 2, or the damaged rows
are reported by line), two address columns are named, an encoded-word address is skipped as
invalid with its line in the dry run and the send alike, a FIFO (or any non-regular file) as an
input stops at once with exit 2, and no input ever produces "internal error".
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.attack_helpers import (
    Recording,
    Relays,
    judge_error,
    no_crash,
    parse,
    run_dispatch,
    settings_file,
    write_article,
)
from tests.smtp_servers import Server

Invoke = Callable[..., Any]
ADDRESS = re.compile(r"[A-Za-z0-9._+-]+@[^\s,;\"<>]+")


@pytest.fixture
def scene(tmp_path: Path, relay: Relays) -> dict[str, Any]:
    server = relay.start(Recording())
    return {
        "tmp": tmp_path,
        "article": write_article(tmp_path / "issue.md"),
        "env": settings_file(tmp_path, server),
        "server": server,
        "out": tmp_path / "out",
    }


def write_raw(path: Path, text: str | bytes) -> Path:
    if isinstance(text, str):
        path.write_text(text, encoding="utf-8", newline="")
    else:
        path.write_bytes(text)
    return path


def dry(invoke: Invoke, scene: dict[str, Any], listed: Path) -> Any:
    return invoke(
        "send", scene["article"], "-s", listed, "--env-file", scene["env"], "--dry-run", "--out",
        scene["out"], "--json",
    )  # fmt: skip


def send(invoke: Invoke, scene: dict[str, Any], listed: Path) -> Any:
    return invoke("send", scene["article"], "-s", listed, "--env-file", scene["env"], "--yes", "--json")


def summary(result: Any) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(result.stdout)
    return data


def received(server: Server) -> dict[str, list[bytes]]:
    found: dict[str, list[bytes]] = {}
    for item in server.received:
        for rcpt in item.rcpt_tos:
            found.setdefault(rcpt.lower(), []).append(item.data)
    return found


# ------------------------------------------------------------------------- quotes left open

OPEN_QUOTES = {
    "name-quote-to-eof": 'email,name\nann@example.org,"Ann\nbob@example.org,Bob\ncy@example.org,Cy\n',
    "name-quote-closed-later": (
        'email,name\nann@example.org,"Ann\nbob@example.org,Bob\ncy@example.org,Cy"\ndan@example.org,Dan\n'
    ),
    "email-quote": 'email,name\n"ann@example.org,Ann\nbob@example.org,Bob\n"\ndan@example.org,Dan\n',
    "semicolons": 'email;name\nann@example.org;"Ann\nbob@example.org;Bob\ncy@example.org;Cy\n',
    "tabs": 'email\tname\nann@example.org\t"Ann\nbob@example.org\tBob\n"\ncy@example.org\tCy\n',
    "crlf": 'email,name\r\nann@example.org,"Ann\r\nbob@example.org,Bob\r\ncy@example.org,Cy\r\n',
    "last-row-open": 'email,name\nann@example.org,Ann\nbob@example.org,Bob\ncy@example.org,"Cy Example\n',
    "idn-tld-ragged-rows": (
        'email,name,city\nann@example.org,"Ann,Paris\nboris@pochta.рф,Boris\nvera@pochta.рф,Vera",Moscow\n'
        "cy@example.org,Cy,Rome\n"
    ),
    "idn-tld-one-column": 'email\n"ann@example.org\nboris@pochta.рф\nvera@почта.рф"\ncy@example.org\n',
    "angle-addresses": (
        'email,name,city\nann@example.org,"Ann,Paris\nBob <bob@example.org>\nCy <cy@example.org>",Rome\n'
    ),
}


def physical_addresses(text: str) -> dict[int, list[str]]:
    """Line number → the address-looking words on that physical line (header excluded); a
    line ends at CR LF, CR or LF, as the CSV reader counts them."""
    found: dict[int, list[str]] = {}
    for number, line in enumerate(re.split(r"\r\n|\r|\n", text), start=1):
        if number > 1:
            words = [w.strip("\x00\ufeff") for w in ADDRESS.findall(line)]
            if words:
                found[number] = words
    return found


def reported_lines(data: dict[str, Any]) -> set[int]:
    """Every line a skipped row names: its own, and any ``lines 2–4`` range in its reason."""
    lines = {int(row["line"]) for row in data["skipped_rows"]}
    for row in data["skipped_rows"]:
        for first, last in re.findall(r"(\d+)\s*[–-]\s*(\d+)", row["reason"]):
            lines.update(range(int(first), int(last) + 1))
    return lines


def mailed(data: dict[str, Any], server: Server | None) -> dict[str, list[bytes]]:
    """Address → messages: received by the server, or (a dry run) written to the preview."""
    if server is not None:
        return received(server)
    found: dict[str, list[bytes]] = {}
    if data.get("preview"):
        for eml in Path(data["preview"]).parent.glob("*.eml"):
            raw = eml.read_bytes()
            found.setdefault(parse(raw)["To"].addresses[0].addr_spec.lower(), []).append(raw)
    return found


def same_address(word: str, delivered: dict[str, list[bytes]]) -> bool:
    key = word.lower()
    return any(key == k or (key.split("@")[0] == k.split("@")[0] and not key.isascii()) for k in delivered)


def judge_no_merge(result: Any, text: str, listed: Path, server: Server | None) -> None:
    """Refused (exit 2, the list named, nothing sent), or every address-bearing line either
    mailed to that address alone or reported by its line number."""
    no_crash(result.stderr)
    if result.exit_code == 2 and not summary_ok(result):
        judge_error(result.stderr, str(listed))
        assert not (received(server) if server is not None else {}), "a refused list still sent mail"
        return
    data = summary(result)
    reported = reported_lines(data)
    reasons = " ".join(row["reason"] for row in data["skipped_rows"]).lower()
    delivered = mailed(data, server)
    everyone = {w.lower() for ws in physical_addresses(text).values() for w in ws}
    for number, words in physical_addresses(text).items():
        for word in words:
            named = number in reported or word.lower() in reasons
            assert same_address(word, delivered) or named, (
                f"line {number} ({word}) was neither mailed nor reported: {data['skipped_rows']}"
            )
    for address, copies in delivered.items():
        for payload in copies:
            message = parse(payload)
            to = [a.addr_spec.lower() for a in message["To"].addresses]
            assert to == [address], f"To holds more than its recipient: {message['To']}"
            header_block = payload.split(b"\r\n\r\n", 1)[0].decode("ascii", "replace").lower()
            leaked = [o for o in everyone - {address} if o.isascii() and o in header_block]
            assert not leaked, f"{address}'s message headers show other readers: {leaked}"


def summary_ok(result: Any) -> bool:
    try:
        data = json.loads(result.stdout)
    except ValueError:
        return False
    return "skipped_rows" in data


@pytest.mark.parametrize("text", OPEN_QUOTES.values(), ids=OPEN_QUOTES.keys())
def test_open_quote_never_merges_rows_in_a_dry_run(invoke: Invoke, scene: dict[str, Any], text: str) -> None:
    listed = write_raw(scene["tmp"] / "list.csv", text)
    result = dry(invoke, scene, listed)
    judge_no_merge(result, text, listed, None)


@pytest.mark.parametrize("text", OPEN_QUOTES.values(), ids=OPEN_QUOTES.keys())
def test_open_quote_never_merges_rows_in_a_send(invoke: Invoke, scene: dict[str, Any], text: str) -> None:
    listed = write_raw(scene["tmp"] / "list.csv", text)
    result = send(invoke, scene, listed)
    judge_no_merge(result, text, listed, scene["server"])


# ------------------------------------------------------------------------- two address columns

TWO_ADDRESS_COLUMNS = {
    "email-and-e-mail": ("email,e-mail,name", "ann@example.org,bob@example.org,Ann"),
    "email-and-email-address": ("Email,Name,E-Mail Address", "ann@example.org,Ann,bob@example.org"),
    "duplicated-header": ("email,name,email", "ann@example.org,Ann,bob@example.org"),
    "mail-and-email": ("mail,Email,name", "ann@example.org,bob@example.org,Ann"),
    "underscore-spelling": ("e_mail,name,EMAIL", "ann@example.org,Ann,bob@example.org"),
    "zero-width-space": ("email,name,e\u200bmail", "ann@example.org,Ann,bob@example.org"),
    "trailing-space": ("email ,name, email", "ann@example.org,Ann,bob@example.org"),
}


@pytest.mark.parametrize(("header", "row"), TWO_ADDRESS_COLUMNS.values(), ids=TWO_ADDRESS_COLUMNS.keys())
@pytest.mark.parametrize("mode", ["dry-run", "send"])
def test_two_address_columns_are_named_never_mixed(
    invoke: Invoke, scene: dict[str, Any], header: str, row: str, mode: str
) -> None:
    listed = write_raw(scene["tmp"] / "list.csv", f"{header}\n{row}\ncy@example.org,cy@example.com,Cy\n")
    result = dry(invoke, scene, listed) if mode == "dry-run" else send(invoke, scene, listed)
    no_crash(result.stderr)
    columns = [c.strip().replace("\u200b", "") for c in header.split(",")]
    address_columns = [c for c in columns if "mail" in c.lower()]
    if result.exit_code == 2:
        line = judge_error(result.stderr, str(listed))
        assert all(
            c.strip() in line.replace("\u200b", "") or c.lower() in line.lower() for c in address_columns
        )
        assert received(scene["server"]) == {}
        return
    warnings = " ".join(summary(result)["warnings"]) + result.stderr
    for column in address_columns:
        assert column in warnings.replace("\u200b", ""), f"column {column!r} not named: {warnings}"


# ------------------------------------------------------------------------- encoded-word addresses

ENCODED_WORDS = [
    "=?utf-8?q?victim=40evil.test?=@example.org",
    "=?UTF-8?B?dmljdGltQGV2aWwudGVzdA==?=@example.org",
    "=?iso-8859-1?q?victim=40evil.test?=@example.org",
    "=?utf-8*en?q?victim=40evil.test?=@example.org",
    "x=?utf-8?q?y?=@example.org",
    "victim@=?utf-8?q?evil.test?=",
    '"=?utf-8?q?victim=40evil.test?="@example.org',
    "=?utf-8?q?victim=40evil.test?=@EXAMPLE.ORG",
]


@pytest.mark.parametrize("address", ENCODED_WORDS)
def test_encoded_word_address_is_skipped_alike_in_dry_run_and_send(
    invoke: Invoke, scene: dict[str, Any], address: str
) -> None:
    cell = address if '"' not in address else '"' + address.replace('"', '""') + '"'
    listed = write_raw(
        scene["tmp"] / "list.csv", f"email,name\nann@example.org,Ann\n{cell},Victim\nbob@example.com,Bob\n"
    )
    dry_result = dry(invoke, scene, listed)
    no_crash(dry_result.stderr)
    assert dry_result.exit_code == 0, dry_result.stderr
    dry_lines = {r["line"] for r in summary(dry_result)["skipped_rows"]}
    assert dry_lines == {3}
    sent = send(invoke, scene, listed)
    no_crash(sent.stderr)
    assert sent.exit_code == 0, sent.stderr
    assert {r["line"] for r in summary(sent)["skipped_rows"]} == dry_lines
    assert sorted(received(scene["server"])) == ["ann@example.org", "bob@example.com"]
    assert all(
        "evil.test" not in d.decode("ascii", "replace")
        for ds in received(scene["server"]).values()
        for d in ds
    )


@pytest.mark.parametrize("address", ENCODED_WORDS[:3])
def test_encoded_word_test_send_address_is_refused(
    invoke: Invoke, scene: dict[str, Any], address: str
) -> None:
    listed = write_raw(scene["tmp"] / "list.csv", "email,name\nann@example.org,Ann\n")
    result = invoke(
        "send", scene["article"], "-s", listed, "--env-file", scene["env"], "--to", address, "--yes"
    )
    assert result.exit_code == 2
    judge_error(result.stderr, "--to")
    assert received(scene["server"]) == {}


@pytest.mark.parametrize(
    ("setting", "value"),
    [
        ("FROM", "News <=?utf-8?q?boss=40evil.test?=@example.org>"),
        ("FROM", "=?utf-8?q?boss=40evil.test?=@example.org"),
        ("REPLY_TO", "=?utf-8?q?attacker=40evil.test?=@example.org"),
        ("REPLY_TO", "Editors <=?UTF-8?B?YXR0YWNrZXJAZXZpbC50ZXN0?=@example.org>"),
    ],
)
def test_encoded_word_address_in_settings_is_refused(
    invoke: Invoke, scene: dict[str, Any], setting: str, value: str
) -> None:
    listed = write_raw(scene["tmp"] / "list.csv", "email,name\nann@example.org,Ann\n")
    env = settings_file(scene["tmp"], scene["server"], name="ew.env", **{setting: value})
    for args in (("--dry-run", "--out", scene["out"]), ("--yes",)):
        result = invoke("send", scene["article"], "-s", listed, "--env-file", env, *args)
        assert result.exit_code == 2, result.stdout + result.stderr
        judge_error(result.stderr, f"DISPATCH_{setting}")
    assert received(scene["server"]) == {}


# ------------------------------------------------------------------------- not a regular file


@pytest.mark.slow
@pytest.mark.parametrize("which", ["list", "article", "env-file", "dkim-key", "ca-file", "suppress-import"])
def test_fifo_input_stops_at_once(scene: dict[str, Any], which: str) -> None:
    tmp: Path = scene["tmp"]
    listed = write_raw(tmp / "list.csv", "email,name\nann@example.org,Ann\n")
    article, env = scene["article"], scene["env"]
    fifo = tmp / f"fifo-{which}"
    if which == "article":
        fifo = tmp / "fifo.md"
    os.mkfifo(fifo)
    if which == "list":
        listed = fifo
    elif which == "article":
        article = fifo
    elif which == "env-file":
        env = fifo
    elif which == "dkim-key":
        env = settings_file(
            tmp, scene["server"], name="dkim.env", DKIM_KEY_FILE=str(fifo), DKIM_SELECTOR="s1",
            DKIM_DOMAIN="example.org",
        )  # fmt: skip
    elif which == "ca-file":
        env = settings_file(tmp, scene["server"], name="ca.env", SMTP_CA_FILE=str(fifo))
    if which == "suppress-import":
        result = run_dispatch("suppress", "import", fifo, "--env-file", env, cwd=tmp, timeout=60)
    else:
        result = run_dispatch(
            "send", article, "-s", listed, "--env-file", env, "--dry-run", "--out", scene["out"],
            cwd=tmp, timeout=60,
        )  # fmt: skip
    assert result.returncode == 2, result.stderr
    judge_error(result.stderr, str(fifo))


@pytest.mark.parametrize("device", ["/dev/zero", "/dev/null"])
def test_device_as_list_is_refused(invoke: Invoke, scene: dict[str, Any], device: str) -> None:
    result = dry(invoke, scene, Path(device))
    assert result.exit_code == 2
    judge_error(result.stderr, device)


# ------------------------------------------------------------------------- oversized and odd bytes


def test_ten_megabyte_field_names_its_row_and_the_rest_are_mailed(
    invoke: Invoke, scene: dict[str, Any]
) -> None:
    big = "x" * 10_000_000
    listed = write_raw(
        scene["tmp"] / "list.csv",
        f"email,name,notes\nann@example.org,Ann,short\nbob@example.com,Bob,{big}\ncy@example.org,Cy,ok\n",
    )
    result = send(invoke, scene, listed)
    no_crash(result.stderr)
    skipped = summary(result)["skipped_rows"]
    assert [r["line"] for r in skipped] == [3]
    assert "10,000,000" in skipped[0]["reason"] or "long" in skipped[0]["reason"], skipped[0]["reason"]
    assert sorted(received(scene["server"])) == ["ann@example.org", "cy@example.org"]


def test_twenty_megabyte_field_names_its_row(invoke: Invoke, scene: dict[str, Any]) -> None:
    big = "y" * 20_000_000
    listed = write_raw(
        scene["tmp"] / "list.csv",
        f"email,name\nann@example.org,Ann\nbob@example.com,{big}\ncy@example.org,Cy\n",
    )
    result = dry(invoke, scene, listed)
    no_crash(result.stderr)
    if result.exit_code == 2 and not summary_ok(result):
        line = judge_error(result.stderr, str(listed), "line 3")
        assert "MB" in line or "long" in line, line
        return
    skipped = summary(result)["skipped_rows"]
    assert [r["line"] for r in skipped] == [3]


ODD_BYTES = {
    "nul-in-name": b"email,name\nann@example.org,A\x00nn\nbob@example.com,Bob\n",
    "nul-in-email": b"email,name\nann@example.org\x00,Ann\nbob@example.com,Bob\n",
    "bom-mid-file": (
        "email,name\nann@example.org,Ann\n\ufeffbob@example.com,Bob\ncy@example.org,Cy\n".encode()
    ),
    "two-files-concatenated": (
        "\ufeffemail,name\nann@example.org,Ann\n\ufeffemail,name\nbob@example.com,Bob\n".encode()
    ),
    "bom-in-value": "email,name\nann@example.org,A\ufeffnn\nbob@example.com,Bob\n".encode(),
    "cr-only": b"email,name\rann@example.org,Ann\rbob@example.com,Bob\r",
    "cr-only-quoted": b'email,name\r"ann@example.org","Ann"\r"bob@example.com","Bob, Jr"\r',
    "mixed-line-ends": b"email,name\r\nann@example.org,Ann\rbob@example.com,Bob\ncy@example.org,Cy\r\n",
    "lone-surrogate-escape": b"email,name\nann@example.org,Ann\xed\xa0\x80\nbob@example.com,Bob\n",
    "utf16": "email,name\nann@example.org,Ann\n".encode("utf-16"),
    "header-only-cr": b"email,name\r",
    "form-feed-and-vtab": b"email,name\nann@example.org,A\x0cn\x0bn\nbob@example.com,Bob\n",
    "unicode-line-separator": (
        "email,name\nann@example.org,Ann\u2028bob@example.com\nbob@example.com,Bob\n".encode()
    ),
}


@pytest.mark.parametrize("data", ODD_BYTES.values(), ids=ODD_BYTES.keys())
@pytest.mark.parametrize("mode", ["dry-run", "send"])
def test_odd_bytes_are_cleaned_or_reported_never_a_crash(
    invoke: Invoke, scene: dict[str, Any], data: bytes, mode: str
) -> None:
    listed = write_raw(scene["tmp"] / "list.csv", data)
    result = dry(invoke, scene, listed) if mode == "dry-run" else send(invoke, scene, listed)
    no_crash(result.stderr)
    if result.exit_code == 2 and not summary_ok(result):
        judge_error(result.stderr, str(listed))
        assert received(scene["server"]) == {}
        return
    text = data.decode("utf-8", "replace")
    got = summary(result)
    reported = reported_lines(got)
    delivered = mailed(got, scene["server"] if mode == "send" else None)
    for number, words in physical_addresses(text).items():
        for word in words:
            if word.lower() == "email" or not word.isascii():
                continue
            assert word.lower() in delivered or number in reported, (
                f"line {number} ({word!r}) was neither mailed nor reported: {got['skipped_rows']}"
            )
    for copies in delivered.values():
        for payload in copies:
            assert b"\x00" not in payload.split(b"\r\n\r\n", 1)[0]
