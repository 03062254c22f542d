"""Attacks through the relay and through header lengths (issue 6, classes 4, 7, 8 and 9), kept
as regression tests. Every relay is a real aiosmtpd server on 127.0.0.1 whose handler
misbehaves on purpose.

Expected: no line of any message over 998 octets (header lines within 78 where possible) and
nobody lost; a 5xx the sender caused fails nobody and a re-run (or ``--retry-failed``) delivers;
a relay that loses every reply stops the run (exit 3) without duplicates; replies classified by
code and enhanced code (a rate limit stops the run, a content rejection fails that recipient,
a message-size reply stops the campaign); ``SIZE`` read before the first message and sent in
``MAIL FROM``; ``attempts`` is the real number of tries; ``DISPATCH_EHLO_NAME`` is what the relay
sees; concurrent campaigns never exceed the shared daily limit.
"""

from __future__ import annotations

import json
import re
import sqlite3
import subprocess
import sys
import unicodedata
from collections.abc import Callable
from email import message_from_bytes, policy
from email.header import decode_header, make_header
from pathlib import Path
from typing import Any

import pytest

from tests.attack_helpers import (
    Recording,
    Relays,
    all_lines,
    clean_environ,
    header_lines,
    judge_error,
    no_crash,
    parse,
    readers,
    settings_file,
    settings_values,
    write_article,
    write_list,
    write_settings,
)

Invoke = Callable[..., Any]


def send(invoke: Invoke, article: Path, listed: Path, env: Path, *extra: str) -> Any:
    return invoke("send", article, "-s", listed, "--env-file", env, "--yes", "--json", *extra)


def status(invoke: Invoke, env: Path, campaign: str = "") -> dict[str, Any]:
    args = ["status", *([campaign] if campaign else []), "--env-file", env, "--json"]
    result = invoke(*args)
    assert result.exit_code == 0, result.stderr
    data: dict[str, Any] = json.loads(result.stdout)
    return data


def only_campaign(invoke: Invoke, env: Path) -> dict[str, Any]:
    campaigns = status(invoke, env)["campaigns"]
    assert len(campaigns) == 1, campaigns
    return status(invoke, env, campaigns[0]["campaign"])


def check_lines(data: bytes, *, header_limit: int = 78) -> None:
    """Every line within 998 octets; header lines within ``header_limit`` unless the line is one
    word that cannot be folded (a long URI)."""
    long_lines = [len(line) for line in all_lines(data) if len(line) > 998]
    assert not long_lines, f"lines over 998 octets: {long_lines[:5]}"
    foldable = []
    for line in header_lines(data):
        if len(line) <= header_limit:
            continue
        rest = line.strip()
        if not line[:1].isspace() and b":" in rest:
            rest = rest.split(b":", 1)[1].strip()
        if b" " in rest or b"\t" in rest:
            foldable.append(line[:60])
    assert not foldable, f"header lines over {header_limit} octets that could be folded: {foldable[:3]}"


@pytest.fixture
def scene(tmp_path: Path) -> dict[str, Path]:
    return {"tmp": tmp_path, "article": write_article(tmp_path / "issue.md")}


# ============================================================================ class 4: long headers

LONG_NAMES = {
    "ascii-words": " ".join(["Annabelle"] * 200),
    "ascii-no-spaces": "A" * 2000,
    "latin": "é" * 2000,
    "cjk": "漢字" * 1000,
    "emoji-zwj": "👨\u200d👩\u200d👧\u200d👦" * 300,
    "quotes-backslashes": '"\\' * 1000,
    "encoded-word-lookalike": "=?utf-8?q?x?= " * 150,
    "combining-marks": "e\u0301" * 1000,
    "rtl-and-bidi": "\u202eעברית " * 300,
    "commas-and-angles": "Doe, John <x@example.org>; " * 80,
}


@pytest.mark.parametrize("name", LONG_NAMES.values(), ids=LONG_NAMES.keys())
def test_long_display_names_in_the_list_lose_nobody(
    invoke: Invoke, scene: dict[str, Path], relay: Relays, name: str
) -> None:
    server = relay.start()
    listed = scene["tmp"] / "list.csv"
    quoted = '"' + name.replace('"', '""') + '"'
    listed.write_text(
        f"email,name\nann@example.org,{quoted}\nbob@example.com,Bob\ncy@example.org,{quoted}\n",
        encoding="utf-8",
    )
    env = settings_file(scene["tmp"], server)
    result = send(invoke, scene["article"], listed, env)
    no_crash(result.stderr)
    assert result.exit_code == 0, result.stdout + result.stderr
    got = sorted(r for item in server.received for r in item.rcpt_tos)
    assert got == ["ann@example.org", "bob@example.com", "cy@example.org"]
    for item in server.received:
        check_lines(item.data)
        message = parse(item.data)
        to = message["To"].addresses
        assert len(to) == 1
        assert to[0].addr_spec == item.rcpt_tos[0]
        shown = shown_name(item.data)
        if item.rcpt_tos[0] != "bob@example.com":
            clean = unicodedata.normalize("NFC", " ".join(name.split()))
            assert clean.startswith(shown.rstrip(" …")[:40]), f"the name was garbled: {shown[:80]!r}"
            if len(shown.rstrip(" …")) < len(clean):
                warnings = " ".join(json.loads(result.stdout)["warnings"])
                assert "line 2" in warnings or "2," in warnings, "shortened without a warning"


def shown_name(data: bytes) -> str:
    """The To display name as an RFC 2047 reader shows it (the whitespace between adjacent
    encoded-words dropped, which Python's address parser does not do)."""
    raw = message_from_bytes(data, policy=policy.compat32)["To"]
    phrase = re.sub(r"\r?\n[ \t]", " ", str(raw)).rsplit("<", 1)[0].strip()
    if "=?" in phrase:
        return str(make_header(decode_header(phrase)))
    return str(parse(data)["To"].addresses[0].display_name)


PUNCTUATED_NAMES = {
    "angle-address-in-name": "x" * 70 + " <evil@example.org>",
    "comma-list": "Doe, John <x@example.org>; Roe, Jane <y@example.org>; Moe, Max <z@example.org>",
    "comma-and-words": "Smith, Jane, Head of Communications and Public Affairs at the Example Foundation",
    "semicolon-group": "Readers: evil@example.org, other@example.org; and a few more words to fold it",
    "quotes-inside": 'Jane "The Editor" Doe, who writes the weekly column about the neighbourhood news',
    "at-sign-words": "jane@home and jane@work, both of them, are the same person writing this long name",
}


@pytest.mark.parametrize("name", PUNCTUATED_NAMES.values(), ids=PUNCTUATED_NAMES.keys())
def test_punctuated_display_name_never_adds_an_address_to_to(
    invoke: Invoke, scene: dict[str, Path], relay: Relays, name: str
) -> None:
    """A name long enough to be folded keeps its quoting: To holds exactly the recipient."""
    server = relay.start()
    listed = scene["tmp"] / "list.csv"
    listed.write_text(
        f'email,name\nann@example.org,"{name.replace(chr(34), chr(34) * 2)}"\n', encoding="utf-8"
    )
    env = settings_file(scene["tmp"], server)
    result = send(invoke, scene["article"], listed, env)
    assert result.exit_code == 0, result.stderr
    (item,) = server.received
    check_lines(item.data)
    to = parse(item.data)["To"].addresses
    assert [a.addr_spec for a in to] == ["ann@example.org"], f"To shows {[a.addr_spec for a in to]}"
    assert shown_name(item.data) == name


@pytest.mark.parametrize("setting", ["FROM", "REPLY_TO"])
@pytest.mark.parametrize(
    "name",
    [
        "The Newsroom, Weekly Edition of the Example Foundation <boss@evil.test>; and friends",
        "Newsroom of the Example Foundation, Springfield branch, weekly edition for readers",
    ],
    ids=["smuggled-address", "commas"],
)
def test_punctuated_sender_name_never_adds_an_address(
    invoke: Invoke, scene: dict[str, Path], relay: Relays, setting: str, name: str
) -> None:
    server = relay.start()
    listed = write_list(scene["tmp"] / "list.csv", [("ann@example.org", "Ann")])
    address = "news@example.org" if setting == "FROM" else "editors@example.org"
    env = settings_file(scene["tmp"], server, **{setting: f'"{name}" <{address}>'})
    result = send(invoke, scene["article"], listed, env)
    no_crash(result.stderr)
    if result.exit_code == 2:
        judge_error(result.stderr, f"DISPATCH_{setting}")
        assert server.received == []
        return
    (item,) = server.received
    header = "From" if setting == "FROM" else "Reply-To"
    shown = parse(item.data)[header].addresses
    assert [a.addr_spec for a in shown] == [address], f"{header} shows {[a.addr_spec for a in shown]}"


SENDER_NAMES = {
    "ascii-words": " ".join(["Newsroom"] * 250),
    "ascii-no-spaces": "N" * 2000,
    "non-ascii": "Редакция" * 250,
}


@pytest.mark.parametrize("setting", ["FROM", "REPLY_TO"])
@pytest.mark.parametrize("name", SENDER_NAMES.values(), ids=SENDER_NAMES.keys())
def test_long_sender_name_is_refused_before_sending_or_fits(
    invoke: Invoke, scene: dict[str, Path], relay: Relays, setting: str, name: str
) -> None:
    server = relay.start()
    listed = write_list(scene["tmp"] / "list.csv", [(a, "Reader") for a in readers(20)])
    address = "news@example.org" if setting == "FROM" else "editors@example.org"
    env = settings_file(scene["tmp"], server, **{setting: f'"{name}" <{address}>'})
    result = send(invoke, scene["article"], listed, env)
    no_crash(result.stderr)
    if result.exit_code == 2:
        judge_error(result.stderr, f"DISPATCH_{setting}")
        assert server.received == []
        assert json.loads(result.stdout)["exit_code"] == 2
        return
    assert result.exit_code == 0, result.stderr
    assert len(server.received) == 20
    for item in server.received:
        check_lines(item.data)


def test_sender_name_refused_then_fixed_leaves_nobody_failed(
    invoke: Invoke, scene: dict[str, Path], relay: Relays
) -> None:
    server = relay.start()
    listed = write_list(scene["tmp"] / "list.csv", [(a, "Reader") for a in readers(20)])
    bad = settings_file(scene["tmp"], server, name="bad.env", FROM=f'"{"N" * 2000}" <news@example.org>')
    send(invoke, scene["article"], listed, bad)
    good = settings_file(scene["tmp"], server, name="good.env")
    result = send(invoke, scene["article"], listed, good)
    assert result.exit_code == 0, result.stderr
    assert sorted(server.handler.copies().values()) == [1] * 20  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    "subject",
    ["S" * 2000, "Ü" * 2000, "https://example.org/" + "a" * 1980, "=?utf-8?b?" + "QQ" * 995 + "?="],
    ids=["ascii-no-spaces", "non-ascii-no-spaces", "long-url", "encoded-word-lookalike"],
)
def test_long_subject_folds_within_limits(
    invoke: Invoke, scene: dict[str, Path], relay: Relays, subject: str
) -> None:
    server = relay.start()
    article = scene["tmp"] / "subject.md"
    article.write_text(f"---\ntitle: Plain title\nsubject: '{subject}'\n---\n\nBody.\n", encoding="utf-8")
    listed = write_list(scene["tmp"] / "list.csv", [("ann@example.org", "Ann")])
    env = settings_file(scene["tmp"], server)
    result = send(invoke, article, listed, env)
    no_crash(result.stderr)
    assert result.exit_code == 0, result.stderr
    (item,) = server.received
    check_lines(item.data)
    assert " ".join(str(parse(item.data)["Subject"]).split()) == subject


def test_long_subject_from_the_command_line(invoke: Invoke, scene: dict[str, Path], relay: Relays) -> None:
    server = relay.start()
    article = scene["tmp"] / "plain.md"
    article.write_text("# Plain title\n\nBody text of the issue.\n", encoding="utf-8")
    listed = write_list(scene["tmp"] / "list.csv", [("ann@example.org", "Ann")])
    env = settings_file(scene["tmp"], server)
    result = send(invoke, article, listed, env, "--subject", "Ж" * 1500 + "x" * 1500)
    no_crash(result.stderr)
    if result.exit_code == 2:
        judge_error(result.stderr, "--subject")
        assert server.received == []
        return
    assert result.exit_code == 0, result.stderr
    (item,) = server.received
    check_lines(item.data)


@pytest.mark.parametrize(
    "overrides",
    [
        {"ORGANIZATION": "Org " * 500},
        {"ORGANIZATION": "O" * 2000},
        {"ORGANIZATION": "Организация" * 200},
        {"LIST_ID": "a" * 190 + ".example.org"},
        {"POSTAL_ADDRESS": "Street " * 300},
        {"UNSUBSCRIBE_URL": "https://example.org/" + "u" * 700 + "/{token}"},
        {"UNSUBSCRIBE_MAILTO": "unsubscribe@example.org?subject=" + "s" * 600},
    ],
    ids=[
        "org-words",
        "org-no-spaces",
        "org-non-ascii",
        "list-id-200",
        "postal-long",
        "url-700",
        "mailto-600",
    ],
)
def test_long_settings_fit_or_are_refused(
    invoke: Invoke, scene: dict[str, Path], relay: Relays, overrides: dict[str, str]
) -> None:
    server = relay.start()
    listed = write_list(scene["tmp"] / "list.csv", [("ann@example.org", "Ann"), ("bob@example.com", "Bob")])
    env = settings_file(scene["tmp"], server, **overrides)  # type: ignore[arg-type]
    result = send(invoke, scene["article"], listed, env)
    no_crash(result.stderr)
    if result.exit_code == 2:
        judge_error(result.stderr, *(f"DISPATCH_{k}" for k in overrides))
        assert server.received == []
        return
    assert result.exit_code == 0, result.stderr
    assert len(server.received) == 2
    unavoidable = "UNSUBSCRIBE" in next(iter(overrides))
    for item in server.received:
        check_lines(item.data, header_limit=998 if unavoidable else 78)


@pytest.mark.parametrize(
    ("setting", "value"),
    [
        ("UNSUBSCRIBE_URL", "https://example.org/" + "u" * 990 + "/{token}"),
        ("UNSUBSCRIBE_MAILTO", "unsubscribe@example.org?subject=" + "s" * 990),
    ],
)
def test_unsubscribe_setting_too_long_for_a_header_is_refused_before_sending(
    invoke: Invoke, scene: dict[str, Path], relay: Relays, setting: str, value: str
) -> None:
    server = relay.start()
    listed = write_list(scene["tmp"] / "list.csv", [("ann@example.org", "Ann")])
    env = settings_file(scene["tmp"], server, **{setting: value})
    result = send(invoke, scene["article"], listed, env)
    assert result.exit_code == 2, result.stdout + result.stderr
    judge_error(result.stderr, f"DISPATCH_{setting}")
    assert server.received == []


# ------------------------------------------------------------------------- 500 Line too long

SENDER_CAUSED = [
    "500 Line too long",
    "500 5.5.2 Line too long",
    "554 5.6.0 Message has lines too long for transport",
    "552 5.3.4 Error: message file too big",
    "552 Message size exceeds maximum permitted",
    "554 5.0.0 Line too long",
    "550 5.0.0 Message size exceeds fixed limit",
    "550 Line too long.",
]


class Switch:
    """A relay fault that can be turned off ("the cause was fixed")."""

    def __init__(self, reply: str) -> None:
        self.reply = reply
        self.on = True

    def __call__(self, _address: str, _nth: int) -> str | None:
        return self.reply if self.on else None


@pytest.mark.parametrize("reply", SENDER_CAUSED)
def test_sender_caused_5xx_fails_nobody_and_a_rerun_delivers(
    invoke: Invoke, scene: dict[str, Path], relay: Relays, reply: str
) -> None:
    handler = Recording()
    fault = Switch(reply)
    handler.data_reply = fault
    server = relay.start(handler)
    listed = write_list(scene["tmp"] / "list.csv", [(a, "Reader") for a in readers(25)])
    env = settings_file(scene["tmp"], server)
    first = send(invoke, scene["article"], listed, env)
    no_crash(first.stderr)
    assert first.exit_code == 3, first.stdout + first.stderr
    assert json.loads(first.stdout)["failed"] == 0
    assert only_campaign(invoke, env)["failed"] == 0
    fault.on = False
    second = send(invoke, scene["article"], listed, env)
    assert second.exit_code == 0, second.stdout + second.stderr
    assert handler.copies() == dict.fromkeys(readers(25), 1)


def mark_failed(state: Path, reply: str, code: int, count: int) -> list[str]:
    """Make the journal look like an older dispatch recorded ``count`` recipients failed."""
    with sqlite3.connect(state / "journal.sqlite3") as db:
        rows = db.execute("SELECT key FROM recipients ORDER BY key LIMIT ?", (count,)).fetchall()
        db.executemany(
            "UPDATE recipients SET state = 'failed', code = ?, reply = ?, sent_at = NULL WHERE key = ?",
            [(code, reply, r[0]) for r in rows],
        )
    return [r[0] for r in rows]


@pytest.mark.parametrize(
    ("code", "reply"), [(500, "Line too long"), (552, "5.3.4 Error: message file too big")]
)
def test_retry_failed_delivers_recipients_an_older_run_failed(
    invoke: Invoke, scene: dict[str, Path], relay: Relays, code: int, reply: str
) -> None:
    handler = Recording()
    server = relay.start(handler)
    addresses = readers(6)
    listed = write_list(scene["tmp"] / "list.csv", [(a, "Reader") for a in addresses])
    env = settings_file(scene["tmp"], server)
    assert send(invoke, scene["article"], listed, env).exit_code == 0
    victims = mark_failed(scene["tmp"] / "state", reply, code, 3)
    handler.received.clear()
    plain = send(invoke, scene["article"], listed, env)
    no_crash(plain.stderr)
    assert handler.received == []
    retried = send(invoke, scene["article"], listed, env, "--retry-failed")
    assert retried.exit_code == 0, retried.stderr
    assert sorted(handler.copies()) == sorted(victims)
    assert set(handler.copies().values()) == {1}
    assert only_campaign(invoke, env)["failed"] == 0


def test_retry_failed_never_resends_a_hard_bounce(
    invoke: Invoke, scene: dict[str, Path], relay: Relays
) -> None:
    handler = Recording()
    handler.rcpt_reply = lambda a, _n: "550 5.1.1 no such user" if a == "reader01@example.org" else None
    server = relay.start(handler)
    listed = write_list(scene["tmp"] / "list.csv", [(a, "Reader") for a in readers(4)])
    env = settings_file(scene["tmp"], server)
    assert send(invoke, scene["article"], listed, env).exit_code == 1
    handler.rcpt_reply = lambda _a, _n: None
    retried = send(invoke, scene["article"], listed, env, "--retry-failed")
    no_crash(retried.stderr)
    assert handler.rcpts["reader01@example.org"] == 1
    assert handler.copies()["reader01@example.org"] == 0


# ============================================================================ class 7: lost replies


def lossy(kind: str) -> Recording:
    handler = Recording()
    if kind == "drop-after-dot":
        handler.drop_after_data = True
    else:
        reply = {"garbage": "garbage without a code", "999": "999 what?", "354": "354 go ahead",
                 "600": "600 6.0.0 hm", "bare-2": "2", "text-250ish": "25O OK"}[kind]  # fmt: skip

        def answer(address: str, _nth: int) -> str:
            with handler.lock:
                handler.received.append(_received(handler, address))
            return reply

        handler.data_reply = answer
    return handler


def _received(handler: Recording, address: str) -> Any:
    from tests.smtp_servers import Received

    return Received("", [address], b"")


@pytest.mark.parametrize("kind", ["drop-after-dot", "garbage", "999", "354", "600", "bare-2", "text-250ish"])
@pytest.mark.parametrize("connections", [1, 3])
def test_relay_that_loses_every_reply_stops_the_run(
    invoke: Invoke, scene: dict[str, Path], relay: Relays, kind: str, connections: int
) -> None:
    handler = lossy(kind)
    server = relay.start(handler)
    addresses = readers(40)
    listed = write_list(scene["tmp"] / "list.csv", [(a, "Reader") for a in addresses])
    env = settings_file(scene["tmp"], server, RETRIES="3")
    result = send(invoke, scene["article"], listed, env, "--connections", str(connections))
    no_crash(result.stderr)
    assert result.exit_code == 3, result.stdout + result.stderr
    data = json.loads(result.stdout)
    assert data["aborted"]
    copies = handler.copies()
    assert max(copies.values()) == 1, f"a message went out more than once: {copies.most_common(3)}"
    assert sum(copies.values()) <= 10 + 2 * connections, f"{sum(copies.values())} messages before stopping"
    record = only_campaign(invoke, env)
    assert record["failed"] == 0
    assert record["pending"] >= 40 - 10 - 2 * connections


# ============================================================================ class 8: real replies


def test_relay_size_limit_stops_before_the_first_message(
    invoke: Invoke, scene: dict[str, Path], relay: Relays
) -> None:
    handler = Recording()
    server = relay.start(handler, data_size_limit=10000)
    listed = write_list(scene["tmp"] / "list.csv", [(a, "Reader") for a in readers(5)])
    env = settings_file(scene["tmp"], server)
    result = send(invoke, scene["article"], listed, env)
    assert result.exit_code in (2, 3), result.stdout + result.stderr
    line = judge_error(result.stderr)
    assert re.search(r"10[,.\s]?000\b|10(\.0)?\s?KB|0\.01\s?MB", line), f"the limit is not stated: {line}"
    assert re.search(r"\d[\d,.]*\s?(bytes|KB|kB|MB)", line), line
    assert json.loads(result.stdout)["exit_code"] == result.exit_code
    assert handler.datas == {}
    assert server.received == []


def test_message_too_big_for_one_reader_fails_nobody_for_good(
    invoke: Invoke, scene: dict[str, Path], relay: Relays
) -> None:
    handler = Recording()
    limited = relay.start(handler, data_size_limit=50_000)
    listed = scene["tmp"] / "list.csv"
    listed.write_text(
        "email,name,bio\nann@example.org,Ann,short\nbob@example.com,Bob," + "b " * 30_000
        + "\ncy@example.org,Cy,short\n", encoding="utf-8",
    )  # fmt: skip
    tpl = scene["tmp"] / "tpl"
    tpl.mkdir()
    (tpl / "email.txt").write_text(
        '{% extends "builtin/email.txt" %}{% block body %}{{ subscriber.bio }}\n{{ super() }}{% endblock %}',
        encoding="utf-8",
    )
    env = settings_file(scene["tmp"], limited)
    first = send(invoke, scene["article"], listed, env, "--template", str(tpl))
    no_crash(first.stderr)
    assert "bob@example.com" not in handler.copies()
    roomy_handler = Recording()
    roomy = relay.start(roomy_handler)
    env2 = write_settings(scene["tmp"] / "roomy.env", settings_values(scene["tmp"], roomy))
    second = send(invoke, scene["article"], listed, env2, "--template", str(tpl), "--retry-failed")
    no_crash(second.stderr)
    assert roomy_handler.copies().get("bob@example.com") == 1
    assert handler.copies() + roomy_handler.copies() == dict.fromkeys(
        ["ann@example.org", "bob@example.com", "cy@example.org"], 1
    )


@pytest.mark.parametrize("stage", ["MAIL", "RCPT", "DATA"])
def test_552_534_stops_the_campaign_and_fails_nobody(
    invoke: Invoke, scene: dict[str, Path], relay: Relays, stage: str
) -> None:
    handler = Recording()
    fault = Switch("552 5.3.4 Error: message file too big")
    if stage == "MAIL":
        handler.mail_reply = lambda _n: fault("", 0)
    elif stage == "RCPT":
        handler.rcpt_reply = fault
    else:
        handler.data_reply = fault
    server = relay.start(handler)
    addresses = readers(20)
    listed = write_list(scene["tmp"] / "list.csv", [(a, "Reader") for a in addresses])
    env = settings_file(scene["tmp"], server)
    first = send(invoke, scene["article"], listed, env)
    no_crash(first.stderr)
    assert first.exit_code == 3, first.stdout + first.stderr
    assert json.loads(first.stdout)["failed"] == 0
    fault.on = False
    second = send(invoke, scene["article"], listed, env)
    assert second.exit_code == 0, second.stdout + second.stderr
    assert handler.copies() == dict.fromkeys(addresses, 1)


def send_with_reply(
    invoke: Invoke,
    scene: dict[str, Path],
    relay: Relays,
    stage: str,
    address: str,
    reply: str,
    addresses: list[str],
    **settings: str,
) -> tuple[Any, dict[str, Any], Recording]:
    """Send to ``addresses`` through a relay that answers ``reply`` at ``stage`` (RCPT or DATA)
    for ``address`` only: (the run, its JSON summary, the relay's record)."""
    handler = Recording()
    rule = lambda a, _n: reply if a == address else None  # noqa: E731
    if stage == "RCPT":
        handler.rcpt_reply = rule
    else:
        handler.data_reply = rule
    server = relay.start(handler)
    listed = write_list(scene["tmp"] / "list.csv", [(a, "Reader") for a in addresses])
    result = send(invoke, scene["article"], listed, settings_file(scene["tmp"], server, **settings))
    no_crash(result.stderr)
    return result, json.loads(result.stdout), handler


CONTENT_REJECTIONS = [
    "550 5.7.1 Message rejected: spam score exceeded threshold",
    "554 5.7.1 Message content rejected: too many links",
    "550 5.7.1 Rejected: message exceeded the spam limit",
    "554 5.7.1 Content rejected; rate of spam words too high",
]


@pytest.mark.parametrize("reply", CONTENT_REJECTIONS)
@pytest.mark.parametrize("stage", ["RCPT", "DATA"])
def test_permanent_content_rejection_fails_that_recipient_only(
    invoke: Invoke, scene: dict[str, Path], relay: Relays, reply: str, stage: str
) -> None:
    victim = "reader01@example.org"
    result, data, _ = send_with_reply(invoke, scene, relay, stage, victim, reply, readers(5))
    assert result.exit_code == 1, result.stdout
    assert data["aborted"] is None
    assert data["failed"] == 1
    assert data["sent"] == 4
    assert [f["email"] for f in data["failures"]] == [victim]


RATE_LIMITS = [
    "450 4.7.1 Error: too much mail from 127.0.0.1",
    "450 4.7.1 Error: too many recipients from 127.0.0.1",
    "421 4.7.0 Error: too many connections from 127.0.0.1",
    "454 Throttling failure: Maximum sending rate exceeded",
    "454 Throttling failure: Daily message quota exceeded",
    "432 4.3.2 Concurrent connections limit exceeded",
    "421 4.4.2 Message submission rate for this client has exceeded the configured limit",
    "554 5.2.0 STOREDRV.Submission.Exception:SubmissionQuotaExceededException; Failed to process message",
    "421 4.7.28 Our system has detected an unusual rate of unsolicited mail originating from your IP address",
    "550 5.4.5 Daily user sending quota exceeded",
    "451 4.7.1 Please slow down",
]


@pytest.mark.parametrize("reply", RATE_LIMITS)
@pytest.mark.parametrize("stage", ["RCPT", "DATA"])
def test_rate_limit_reply_stops_the_run_and_fails_nobody(
    invoke: Invoke, scene: dict[str, Path], relay: Relays, reply: str, stage: str
) -> None:
    limited = "reader02@example.com"
    result, data, handler = send_with_reply(
        invoke, scene, relay, stage, limited, reply, readers(8), RETRIES="1"
    )
    assert result.exit_code == 3, result.stdout
    assert data["aborted"]
    assert data["failed"] == 0
    assert limited not in handler.copies()
    assert sum(handler.copies().values()) <= 3, "the run went on after the relay asked to stop"


@pytest.mark.parametrize(
    "reply",
    [
        "550 5.7.515 Access denied, sending domain example.org does not meet the required authentication "
        "level",
        "550 5.2.252 Sender throttled due to continuous invalid recipients errors",
        "550 5.7.26 Unauthenticated email from example.org is not accepted due to domain's DMARC policy",
    ],
)
def test_sender_policy_reply_stops_and_fails_nobody(
    invoke: Invoke, scene: dict[str, Path], relay: Relays, reply: str
) -> None:
    handler = Recording()
    handler.data_reply = lambda _a, _n: reply
    server = relay.start(handler)
    listed = write_list(scene["tmp"] / "list.csv", [(a, "Reader") for a in readers(10)])
    env = settings_file(scene["tmp"], server)
    result = send(invoke, scene["article"], listed, env)
    no_crash(result.stderr)
    assert result.exit_code == 3, result.stdout
    assert json.loads(result.stdout)["failed"] == 0
    assert sum(handler.datas.values()) == 1


def test_recipient_rate_reply_defers_only_that_recipient(
    invoke: Invoke, scene: dict[str, Path], relay: Relays
) -> None:
    handler = Recording()
    busy = "reader01@example.org"
    handler.rcpt_reply = lambda a, _n: (
        "450 4.2.1 The user you are trying to contact is receiving mail at a rate that prevents additional "
        "messages from being delivered"
        if a == busy
        else None
    )
    server = relay.start(handler)
    addresses = readers(6)
    listed = write_list(scene["tmp"] / "list.csv", [(a, "Reader") for a in addresses])
    env = settings_file(scene["tmp"], server, RETRIES="1")
    result = send(invoke, scene["article"], listed, env)
    data = json.loads(result.stdout)
    assert result.exit_code == 1, result.stdout
    assert data["aborted"] is None
    assert data["deferred"] == 1
    assert data["sent"] == 5


# ------------------------------------------------------------------------- attempts


@pytest.mark.parametrize("where", ["DATA", "RCPT", "RCPT-then-DATA", "drop-at-RCPT"])
def test_attempts_is_the_real_number_of_tries(
    invoke: Invoke, scene: dict[str, Path], relay: Relays, where: str
) -> None:
    handler = Recording()
    slow = "reader01@example.org"

    def rcpt(address: str, nth: int) -> str | None:
        if address != slow:
            return None
        if where == "RCPT" or (where == "RCPT-then-DATA" and nth % 2):
            return "451 4.3.0 try again later"
        return None

    def data(address: str, _nth: int) -> str | None:
        return (
            "451 4.3.0 temporary failure" if address == slow and where in ("DATA", "RCPT-then-DATA") else None
        )

    handler.rcpt_reply = rcpt
    handler.data_reply = data
    if where == "drop-at-RCPT":
        original = handler.handle_RCPT

        async def dropping(server: Any, session: Any, envelope: Any, address: str, options: list[str]) -> str:
            if address == slow:
                with handler.lock:
                    handler.rcpts[address] += 1
                server.transport.abort()
                return "421 4.4.2 dropping"
            return await original(server, session, envelope, address, options)

        handler.handle_RCPT = dropping  # type: ignore[method-assign]
    server = relay.start(handler)
    listed = write_list(scene["tmp"] / "list.csv", [(a, "Reader") for a in readers(3)])
    env = settings_file(scene["tmp"], server, RETRIES="3")
    for run in (1, 2):
        result = send(invoke, scene["article"], listed, env)
        no_crash(result.stderr)
        problems = only_campaign(invoke, env)["problems"]
        (row,) = [p for p in problems if p["email"] == slow]
        tries = handler.rcpts[slow]
        assert tries == 4 * run, f"the relay saw {tries} tries after run {run}"
        assert row["attempts"] == tries, f"journal says {row['attempts']}, the relay saw {tries}"


# ------------------------------------------------------------------------- SIZE= and EHLO


def test_size_is_declared_in_mail_from(invoke: Invoke, scene: dict[str, Path], relay: Relays) -> None:
    handler = Recording()
    server = relay.start(handler)
    listed = write_list(scene["tmp"] / "list.csv", [(a, "Reader") for a in readers(3)])
    env = settings_file(scene["tmp"], server)
    assert send(invoke, scene["article"], listed, env).exit_code == 0
    assert len(handler.mail_options) == 3
    for options, item in zip(handler.mail_options, handler.received, strict=True):
        sizes = [int(o.split("=", 1)[1]) for o in options if o.upper().startswith("SIZE=")]
        assert sizes, f"no SIZE= in MAIL FROM: {options}"
        assert sizes[0] >= len(item.data), f"declared {sizes[0]}, sent {len(item.data)}"


@pytest.mark.parametrize("name", ["mail.example.org", "[192.0.2.1]", "MX-1.Example.ORG"])
@pytest.mark.parametrize("connections", [1, 3])
def test_ehlo_name_is_what_the_relay_sees(
    invoke: Invoke, scene: dict[str, Path], relay: Relays, name: str, connections: int
) -> None:
    handler = Recording()
    server = relay.start(handler)
    listed = write_list(scene["tmp"] / "list.csv", [(a, "Reader") for a in readers(6)])
    env = settings_file(scene["tmp"], server, EHLO_NAME=name)
    result = send(invoke, scene["article"], listed, env, "--connections", str(connections))
    assert result.exit_code == 0, result.stderr
    assert handler.ehlo_names
    assert set(handler.ehlo_names) == {name}


@pytest.mark.parametrize(
    "name", ["bad name", "mail.example.org\x00x", "-dash.example.org", "a" * 300, "[999.1.1.1"]
)
def test_bad_ehlo_name_is_refused_before_connecting(
    invoke: Invoke, scene: dict[str, Path], relay: Relays, name: str
) -> None:
    handler = Recording()
    server = relay.start(handler)
    listed = write_list(scene["tmp"] / "list.csv", [("ann@example.org", "Ann")])
    env = settings_file(scene["tmp"], server, EHLO_NAME=name)
    result = send(invoke, scene["article"], listed, env)
    assert result.exit_code == 2, result.stdout + result.stderr
    judge_error(result.stderr, "DISPATCH_EHLO_NAME")
    assert handler.ehlo_names == []


# ============================================================================ class 9: daily limit


@pytest.mark.slow
@pytest.mark.parametrize("round_", range(2))
@pytest.mark.parametrize(("campaigns", "connections", "limit"), [(5, 3, 17), (8, 4, 23)])
def test_concurrent_campaigns_never_exceed_the_daily_limit(
    scene: dict[str, Path], relay: Relays, round_: int, campaigns: int, connections: int, limit: int
) -> None:
    handler = Recording()
    server = relay.start(handler)
    tmp = scene["tmp"]
    env = settings_file(tmp, server)
    per = 12
    procs = []
    for n in range(campaigns):
        article = write_article(tmp / f"issue{n}.md", f"Race {round_} issue {n}", f"Issue {n}'s own text.\n")
        listed = write_list(tmp / f"list{n}.csv", [(a, "Reader") for a in readers(per, prefix=f"c{n}r")])
        procs.append(
            subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "dispatch",
                    "send",
                    str(article),
                    "-s",
                    str(listed),
                    "--env-file",
                    str(env),
                    "--yes",
                    "--connections",
                    str(connections),
                    "--daily-limit",
                    str(limit),
                ],
                cwd=tmp,
                env=clean_environ(),
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
        )
    outputs = [p.communicate(timeout=300) for p in procs]
    for proc, (_out, err) in zip(procs, outputs, strict=True):
        no_crash(err)
        assert proc.returncode in (0, 1), err
    total = sum(handler.copies().values())
    assert total <= limit, f"{total} messages reached the relay with a daily limit of {limit}"
    assert total == limit, f"only {total} of the {limit} allowed went out"
    with sqlite3.connect(tmp / "state" / "journal.sqlite3") as db:
        counted = db.execute("SELECT COUNT(*) FROM recipients WHERE sent_at IS NOT NULL").fetchone()[0]
    assert counted == total


# ------------------------------------------------------------------------- a relay that ends sessions


def hanging_up_at_mail(reply: str, when: Callable[[Any], bool]) -> Recording:
    """A relay that answers a MAIL with ``reply`` and hangs up at once, reading nothing more, as
    Postfix does, whenever ``when(server)`` says so (``server``: that session's protocol)."""
    handler = Recording()
    original = handler.handle_MAIL

    async def mail(server: Any, session: Any, envelope: Any, address: str, options: list[str]) -> str:
        if when(server):
            await server.push(reply)
            server.transport.close()
            return "421 4.7.0 closing"  # written to a closed transport: never sent
        return await original(server, session, envelope, address, options)

    handler.handle_MAIL = mail  # type: ignore[method-assign]
    return handler


def send_to_readers(
    invoke: Invoke, scene: dict[str, Path], relay: Relays, handler: Recording, count: int, connections: int
) -> tuple[Any, dict[str, Any], list[str]]:
    """Send to ``count`` readers through ``handler`` with 3 retries: (the run, its summary, the
    addresses)."""
    server = relay.start(handler)
    addresses = readers(count)
    listed = write_list(scene["tmp"] / "list.csv", [(a, "Reader") for a in addresses])
    env = settings_file(scene["tmp"], server, RETRIES="3", CONNECTIONS=str(connections))
    result = send(invoke, scene["article"], listed, env)
    no_crash(result.stderr)
    return result, json.loads(result.stdout), addresses


@pytest.mark.parametrize("connections", [1, 2])
def test_a_relay_that_ends_each_session_after_three_messages_loses_nobody(
    invoke: Invoke, scene: dict[str, Path], relay: Relays, connections: int
) -> None:
    """Postfix-style: after three messages a session's next MAIL gets 421 and the relay hangs
    up. With one connection that MAIL went behind the third message's final dot; either way the
    421 must cost a reconnect and a retry, never a message, and never a second copy."""
    per_session: dict[int, int] = {}

    def fourth(server: Any) -> bool:
        per_session[id(server)] = per_session.get(id(server), 0) + 1
        return per_session[id(server)] > 3

    handler = hanging_up_at_mail("421 4.7.0 Error: too many messages in this session", fourth)
    result, summary, addresses = send_to_readers(invoke, scene, relay, handler, 11, connections)
    assert result.exit_code == 0, result.stdout + result.stderr
    assert (summary["sent"], summary["unknown"], summary["deferred"]) == (len(addresses), 0, 0)
    assert handler.copies() == dict.fromkeys(addresses, 1)


@pytest.mark.parametrize("connections", [1, 2])
def test_a_421_to_pipelined_commands_is_read_as_the_relay_said_it(
    invoke: Invoke, scene: dict[str, Path], relay: Relays, connections: int
) -> None:
    """A 421 to MAIL is followed by the relay hanging up, so the replies to RCPT and DATA never
    come. dispatch must act on the 421 (here a rate reply: stop, blame nobody) instead of
    reporting a lost connection and burning retries."""
    reply = "421 4.7.0 Error: too much mail from 127.0.0.1, slow down"
    handler = hanging_up_at_mail(reply, lambda _server: handler.mails >= 2)
    result, summary, _ = send_to_readers(invoke, scene, relay, handler, 6, connections)
    assert result.exit_code == 3, result.stdout + result.stderr
    assert "too much mail" in summary["aborted"], summary["aborted"]
    assert (summary["failed"], summary["unknown"]) == (0, 0)
    assert max(handler.copies().values()) == 1
