"""DKIM through the product: a real send with both signatures (RSA and the optional Ed25519),
every message verified by dkimpy as a real SMTP server received it; dot-stuffing; the settings
of the second signature; its DNS check; and what signing costs (no dkimpy, no dnspython)."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from dispatch.compose.dkim import Signatures, load_signatures, load_signer
from dispatch.compose.dkimkeys import DkimError, KeyRecord, generate_key
from dispatch.compose.issue import plan_issue, recipients
from dispatch.errors import ConfigError, ExitCode
from dispatch.send.delivery import SendOptions, run_send
from dispatch.send.transport import SmtpTransport, Status
from dispatch.settings import Settings
from dispatch.state.journal import Journal
from tests.dns_server import dns_server
from tests.smtp_servers import Server
from tests.test_dkim_canon import dns_for, verifies

SUBJECT = "Élections : « la ligne étroite » — what Washington and Baghdad say now, in 2026 (part 1 of 3)"
Key = tuple[Path, KeyRecord]
ARTICLE = f"""---
subject: "{SUBJECT}"
---
# Grüße aus Łódź, and a title long enough to be folded

Hello {{{{ name }}}}, a paragraph with a picture: ![A red chart](chart.png)

.A line that starts with a dot
..and one with two
.

Text  with  double  spaces,\ta tab, and a trailing space{" "}
"""
PEOPLE = (
    "email,name\n"
    'leila@example.com,"Leïla Sadri-Ghorbani, Département des études persanes et orientales"\n'
    '"katherine@example.com","Johnson, Katherine"\n'
    "zoe@exämple.org,Zoë Ünicode\n"
    "plain@example.org,\n"
    "ali@example.com,علي رضا\n"
)


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Key]:
    folder = tmp_path_factory.mktemp("keys")

    def make(name: str, selector: str, algorithm: str = "rsa") -> tuple[Path, KeyRecord]:
        path = folder / f"{name}.pem"
        return path, generate_key(path, selector=selector, domain="example.org", algorithm=algorithm)  # type: ignore[arg-type]

    return {"rsa": make("rsa", "s2026"), "ed": make("ed", "e2026", "ed25519"), "rsa2": make("rsa2", "x2026")}


def dkim_env(keys: dict[str, Key], *, second: str = "ed", main: str = "rsa") -> dict[str, str]:
    env = {
        "DISPATCH_DKIM_KEY_FILE": str(keys[main][0]),
        "DISPATCH_DKIM_SELECTOR": keys[main][1].selector,
        "DISPATCH_DKIM_DOMAIN": "example.org",
    }
    if second:
        env["DISPATCH_DKIM_ED25519_KEY_FILE"] = str(keys[second][0])
        env["DISPATCH_DKIM_ED25519_SELECTOR"] = keys[second][1].selector
    return env


@pytest.fixture
def issue_files(write_file: Callable[..., Path], tmp_path: Path) -> tuple[Path, Path, Path]:
    Image.new("RGB", (300, 120), (200, 40, 40)).save(tmp_path / "chart.png")
    attachment = write_file("programme.txt", "Programme\n.with a dot\n" * 50)
    return write_file("issue.md", ARTICLE), write_file("people.csv", PEOPLE), attachment


def test_every_message_of_a_send_verifies_with_both_signatures(
    plain_server: Server,
    env: dict[str, str],
    keys: dict[str, Key],
    issue_files: tuple[Path, Path, Path],
    tmp_path: Path,
) -> None:
    """Non-ASCII names and subject (RFC 2047, folded), an embedded picture, an attachment and
    lines that start with dots, sent through a real SMTP server: what it received verifies."""
    article, people, attachment = issue_files
    settings = Settings.from_mapping({**env, **plain_server.env(), **dkim_env(keys)})
    issue = plan_issue(article, people, settings, attach=[attachment])
    journal = Journal(settings.state.path)
    try:
        summary = run_send(issue, journal, SendOptions())
    finally:
        journal.close()
    assert summary.sent_now == 5
    answers = dns_for(keys["rsa"][1], keys["ed"][1])
    for received in plain_server.received:
        data = received.data
        assert verifies(data, answers, 0), received.rcpt_tos
        assert verifies(data, answers, 1), received.rcpt_tos
        head = data.split(b"\r\n\r\n", 1)[0]
        assert head.startswith(b"DKIM-Signature: v=1; a=rsa-sha256;")
        assert b"\r\nDKIM-Signature: v=1; a=ed25519-sha256;" in head
        signatures = head[: head.index(b"\r\nFrom:")]
        assert [line for line in signatures.split(b"\r\n") if len(line) > 78] == []
        message = received.message
        types = {part.get_content_type() for part in message.walk()}
        assert {"multipart/mixed", "multipart/related", "image/png", "text/plain", "text/html"} <= types
        assert str(message["Subject"]) == SUBJECT
        assert b"\r\nSubject: =?" in head  # RFC 2047, folded
    names = {str(r.message["To"]) for r in plain_server.received}
    assert {"Zoë Ünicode <zoe@xn--exmple-cua.org>", "علي رضا <ali@example.com>"} <= names


def test_lines_that_start_with_dots_arrive_as_they_were_signed(
    plain_server: Server, env: dict[str, str], keys: dict[str, Key]
) -> None:
    """The signature covers the message before dot-stuffing: the transport doubles each leading
    dot, the server takes them off again, and the verifier sees the signed bytes."""
    message = (
        b"From: News <news@example.org>\r\nTo: ann@example.org\r\nSubject: dots\r\n"
        b"MIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n"
        b"\r\n.\r\n..\r\n.leading\r\n...three\r\nmiddle . dot\r\n.\r\n"
    )
    rsa, ed = (load_signer(keys[k][0], keys[k][1].selector, "example.org") for k in ("rsa", "ed"))
    signed = Signatures((rsa, ed)).signed(message)
    transport = SmtpTransport(Settings.from_mapping({**env, **plain_server.env()}))
    try:
        result = transport.send("news@example.org", "ann@example.org", signed, lambda: None)
    finally:
        transport.close()
    assert result.status is Status.SENT
    received = plain_server.received[0].data
    assert received == signed
    answers = dns_for(keys["rsa"][1], keys["ed"][1])
    assert verifies(received, answers, 0)
    assert verifies(received, answers, 1)


def test_without_the_second_settings_a_message_has_one_signature(
    env: dict[str, str], keys: dict[str, Key], issue_files: tuple[Path, Path, Path]
) -> None:
    article, people, _ = issue_files
    issue = plan_issue(article, people, Settings.from_mapping({**env, **dkim_env(keys, second="")}))
    raw, _ = issue.message(next(iter(recipients(issue))))
    assert raw.count(b"DKIM-Signature:") == 1
    assert verifies(raw, dns_for(keys["rsa"][1]))


SETTING_ERRORS = {
    "second without the first": (
        {"DISPATCH_DKIM_ED25519_KEY_FILE": "ed.pem", "DISPATCH_DKIM_ED25519_SELECTOR": "e2026"},
        "DISPATCH_DKIM_KEY_FILE, DISPATCH_DKIM_SELECTOR, DISPATCH_DKIM_DOMAIN",
    ),
    "key without its selector": (
        {"DISPATCH_DKIM_ED25519_KEY_FILE": "ed.pem"},
        "DISPATCH_DKIM_ED25519_SELECTOR",
    ),
    "selector without its key": (
        {"DISPATCH_DKIM_ED25519_SELECTOR": "e2026"},
        "DISPATCH_DKIM_ED25519_KEY_FILE",
    ),
    "a bad selector": (
        {
            "DISPATCH_DKIM_KEY_FILE": "rsa.pem",
            "DISPATCH_DKIM_SELECTOR": "s2026",
            "DISPATCH_DKIM_DOMAIN": "example.org",
            "DISPATCH_DKIM_ED25519_KEY_FILE": "ed.pem",
            "DISPATCH_DKIM_ED25519_SELECTOR": "e 2026",
        },
        "DISPATCH_DKIM_ED25519_SELECTOR: 'e 2026' is not a DNS label",
    ),
}


@pytest.mark.parametrize(("given", "words"), SETTING_ERRORS.values(), ids=SETTING_ERRORS.keys())
def test_the_second_signature_settings_come_together(
    env: dict[str, str], given: dict[str, str], words: str
) -> None:
    with pytest.raises(ConfigError, match=words) as caught:
        Settings.from_mapping({**env, **given})
    assert "\n" not in str(caught.value)


def test_the_second_selector_must_differ(env: dict[str, str], keys: dict[str, Key]) -> None:
    given = {**dkim_env(keys), "DISPATCH_DKIM_ED25519_SELECTOR": "s2026"}
    with pytest.raises(ConfigError, match="selector of its own"):
        Settings.from_mapping({**env, **given})


KEY_ERRORS = {
    "an RSA key as the second": (
        {"second": "rsa2"},
        "DISPATCH_DKIM_ED25519_KEY_FILE",
        "takes an Ed25519 key",
    ),
    "Ed25519 twice": ({"main": "ed", "second": "ed"}, "DISPATCH_DKIM_KEY_FILE", "is an Ed25519 key too"),
}


@pytest.mark.parametrize(("choice", "setting", "words"), KEY_ERRORS.values(), ids=KEY_ERRORS.keys())
def test_the_second_key_must_be_ed25519_beside_rsa(
    env: dict[str, str],
    keys: dict[str, Key],
    choice: dict[str, str],
    setting: str,
    words: str,
) -> None:
    given = dkim_env(keys, **choice)
    if choice.get("main") == "ed":
        given["DISPATCH_DKIM_ED25519_SELECTOR"] = "other"
    with pytest.raises(DkimError) as caught:
        load_signatures(Settings.from_mapping({**env, **given}))
    message = str(caught.value)
    assert message.startswith(setting + ":")
    assert words in message
    assert "\n" not in message
    assert caught.value.exit_code == ExitCode.BAD_INPUT


def test_a_missing_second_key_stops_a_dry_run_with_one_line(
    invoke: Callable[..., Any],
    env_file: Callable[..., Path],
    keys: dict[str, Key],
    issue_files: tuple[Path, Path, Path],
    tmp_path: Path,
) -> None:
    article, people, _ = issue_files
    missing = tmp_path / "nowhere.pem"
    settings = env_file(**{**dkim_env(keys), "DISPATCH_DKIM_ED25519_KEY_FILE": str(missing)})
    done = invoke("send", article, "-s", people, "--env-file", settings, "--dry-run")
    assert done.exit_code == ExitCode.BAD_INPUT
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert f"DISPATCH_DKIM_ED25519_KEY_FILE: {missing} does not exist" in lines[0]
    assert "Traceback" not in done.stderr


def test_keygen_for_ed25519_tells_how_to_add_it_as_a_second_signature(
    invoke: Callable[..., Any], tmp_path: Path
) -> None:
    out = tmp_path / "e2026.pem"
    args = ("--selector", "e2026", "--domain", "example.org", "--algorithm", "ed25519", "--out", out)
    done = invoke("dkim", "keygen", *args)
    assert done.exit_code == 0, done.stderr
    assert "k=ed25519; p=" in done.stdout
    assert f"DISPATCH_DKIM_ED25519_KEY_FILE={out.resolve()}" in done.stdout
    assert "DISPATCH_DKIM_ED25519_SELECTOR=e2026" in done.stdout
    rsa = invoke(
        "dkim", "keygen", "--selector", "s2026", "--domain", "example.org", "--out", tmp_path / "s.pem"
    )
    assert "ED25519" not in rsa.stdout


def _records(*keys: KeyRecord) -> dict[str, list[Any]]:
    records: dict[str, list[Any]] = {
        "example.org": ["v=spf1 include:_spf.example.com ~all"],
        "_dmarc.example.org": ["v=DMARC1; p=quarantine"],
    }
    for key in keys:
        records[key.name] = [key.strings]
    return records


@pytest.mark.parametrize(
    ("published", "expected"),
    [
        ("right", {}),
        ("wrong", {"dkim-mismatch": "DISPATCH_DKIM_ED25519_KEY_FILE"}),
        ("none", {"no-dkim-record": "e2026._domainkey.example.org"}),
    ],
)
def test_check_dns_looks_up_both_keys(
    invoke: Callable[..., Any],
    env_file: Callable[..., Path],
    keys: dict[str, Key],
    issue_files: tuple[Path, Path, Path],
    published: str,
    expected: dict[str, str],
) -> None:
    article, people, _ = issue_files
    rsa, ed = keys["rsa"][1], keys["ed"][1]
    wrong = KeyRecord(ed.selector, ed.domain, "ed25519", keys["rsa2"][1].public_key_b64, 256)
    second = {"right": [ed], "wrong": [wrong], "none": []}[published]
    with dns_server(_records(rsa, *second)) as dns:
        settings = env_file(**dkim_env(keys), DISPATCH_DNS_SERVER=dns.address)
        done = invoke("check", article, "-s", people, "--dns", "--json", "--env-file", settings)
    report = json.loads(done.stdout)
    codes = {p["code"]: p["message"] for p in report["blocking"] + report["warnings"] if "dkim" in p["code"]}
    assert set(codes) == set(expected), codes
    for code, words in expected.items():
        assert words in codes[code]
    dns_report = report["dns"]
    assert dns_report["dkim_matches"] is True
    assert dns_report["dkim_ed25519_name"] == "e2026._domainkey.example.org"
    assert dns_report["dkim_ed25519_matches"] is {"right": True, "wrong": False, "none": None}[published]
    assert done.exit_code == (ExitCode.BAD_INPUT if expected else 0)
