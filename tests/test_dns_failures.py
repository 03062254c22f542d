"""``check --dns`` tells a failed lookup from "none published" (issue 14), and shows TXT data with
control characters, escape sequences and bidi overrides neutralised (D11). Every server is real
and on 127.0.0.1: dnslib answering SERVFAIL or REFUSED, a port that never answers, a closed port,
an answer truncated with no TCP behind it, and one that is not a DNS message."""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from dnslib import RCODE

from dispatch.checks.dns import DnsReport, dns_problems
from dispatch.checks.rules import Problem
from dispatch.compose.dkimkeys import generate_key
from dispatch.untrusted import shown
from tests.dns_server import closed_port, dns_server, garbling_server, silent_server
from tests.inbox_helpers import EXAMPLE_ARTICLE, SETTINGS, dispatch, write_env

DOMAIN = "example.org"
DKIM_NAME = "s2026._domainkey.example.org"
SPF = "v=spf1 ip4:192.0.2.10 -all"
DMARC = "v=DMARC1; p=reject"
DKIM = "v=DKIM1; k=ed25519; p=11qYAYKxCrfVS/7TyWQHOg7hcvPapiMlrwIaaPcHURo="
GOOD = {DOMAIN: [SPF], f"_dmarc.{DOMAIN}": [DMARC], DKIM_NAME: [DKIM]}
LONG = [f"verification-{i}={'x' * 90}" for i in range(8)]  # over 512 bytes: truncated over UDP


# Each way a lookup of the From domain's SPF record fails: a word its reason holds, and whether
# the server fails every other lookup too (it is down) or only that one (SPF alone fails).
FAILURES = {
    "servfail": ("SERVFAIL", False),
    "refused": ("REFUSED", False),
    "truncated, no TCP": ("truncated answer over UDP", False),
    "never answers": ("no answer from", True),
    "closed port": ("connection refused", True),
    "garbled": ("cannot be read", True),
}


@contextmanager
def failing(kind: str) -> Iterator[str]:
    """A DNS server on 127.0.0.1 (its host:port) where looking up the SPF record fails so."""
    if kind == "never answers":
        with silent_server() as address:
            yield address
    elif kind == "closed port":
        yield closed_port()
    elif kind == "garbled":
        with garbling_server() as address:
            yield address
    else:
        records = {**GOOD, DOMAIN: [SPF, *LONG]} if kind == "truncated, no TCP" else GOOD
        rcodes = {DOMAIN: RCODE.SERVFAIL if kind == "servfail" else RCODE.REFUSED}
        with dns_server(records, rcodes={} if kind == "truncated, no TCP" else rcodes, tcp=False) as dns:
            yield dns.address


def codes(problems: list[Problem]) -> dict[str, str]:
    assert all(p.message and "\n" not in p.message for p in problems)
    return {p.code: p.level for p in problems}


def check(server: str, domain: str = DOMAIN, timeout: float = 0.5) -> tuple[list[Problem], DnsReport]:
    return dns_problems(domain, dkim_selector="s2026", dkim_domain=DOMAIN, server=server, timeout=timeout)


@pytest.mark.parametrize("kind", FAILURES)
def test_a_failed_lookup_is_never_none_published(kind: str) -> None:
    word, server_down = FAILURES[kind]
    with failing(kind) as server:
        problems, report = check(server)
    assert report.spf is None
    assert report.spf_error is not None
    assert report.spf_error.startswith(f"could not look up {DOMAIN} (")
    assert word in report.spf_error
    assert report.lines()[0] == f"SPF:   {report.spf_error}"
    assert "none published" not in " ".join(report.lines())
    expected = {"dns-error": "warning"}
    if server_down:  # the DKIM key, which must be published, cannot be checked: that blocks
        expected["dkim-lookup-failed"] = "blocking"
        assert report.dkim_error is not None
        assert report.dmarc_error is not None
    else:
        assert (report.dmarc_policy, report.dkim) == ("reject", DKIM)
    assert codes(problems) == expected
    assert problems[0].message.startswith(report.spf_error)


def test_nxdomain_and_an_empty_answer_are_none_published() -> None:
    with dns_server({DOMAIN: [], DKIM_NAME: [DKIM]}) as dns:  # the domain has no TXT; no _dmarc name
        problems, report = check(dns.address)
    assert codes(problems) == {"no-spf": "warning", "no-dmarc": "warning"}
    assert (report.spf_error, report.dmarc_error, report.dkim_error) == (None, None, None)
    assert report.lines()[:2] == ["SPF:   none published", "DMARC: none published"]


def test_a_failed_dkim_lookup_blocks() -> None:
    with dns_server(GOOD, failing=[DKIM_NAME]) as dns:
        problems, report = check(dns.address)
    assert codes(problems) == {"dkim-lookup-failed": "blocking"}
    assert report.dkim is None
    assert (
        report.lines()[2]
        == f"DKIM:  {DKIM_NAME}: could not look up {DKIM_NAME} ({dns.address} answered SERVFAIL)"
    )
    assert "DISPATCH_DNS_SERVER" in problems[0].message


def test_a_failed_dmarc_lookup_does_not_fall_back_to_the_parent() -> None:
    records = {**GOOD, "news.example.org": [SPF]}
    with dns_server(records, rcodes={"_dmarc.news.example.org": RCODE.REFUSED}) as dns:
        problems, report = check(dns.address, domain="news.example.org")
        assert "_dmarc.example.org" not in [name for name, _ in dns.resolver.asked]
    assert codes(problems) == {"dns-error": "warning"}
    assert report.dmarc is None
    assert report.dmarc_error == f"could not look up _dmarc.news.example.org ({dns.address} answered REFUSED)"


def test_a_server_that_stopped_answering_is_not_waited_for_again() -> None:
    with silent_server() as server:
        began = time.monotonic()
        problems, report = check(server, timeout=0.5)
        took = time.monotonic() - began
    assert took < 1.4  # one lookup waited 0.5 s; asking all three would take 1.5 s
    assert all(
        "no answer from" in (e or "") for e in (report.spf_error, report.dmarc_error, report.dkim_error)
    )
    assert len(problems) == 3


# --- D11: what DNS publishes is shown, never obeyed ---------------------------------------------

HOSTILE = {
    DOMAIN: ["v=spf1 \x1b[2J\x1b]0;pwned\x07 -all\u202e"],
    f"_dmarc.{DOMAIN}": ["v=DMARC1; p=\x1b[31mreject\u2066"],
    DKIM_NAME: ["v=DKIM1; k=ed25519; n=\x1b[5m\u200f\r\n; p=11qYAYKxCrfVS/7TyWQHOg7hcvPapiMlrwIaaPcHURo="],
}


@pytest.mark.parametrize(
    ("raw", "safe"),
    [
        ("v=spf1 -all", "v=spf1 -all"),
        ("a\x1b[31mb", "a\\x1b[31mb"),
        ("left\u202eright", "left\\u202eright"),
        ("tab\there\r\n", "tab\\there\\r\\n"),
        (
            "\u2066isolate\u2069 \u200bzw \x85nel \U000e0041tag",
            "\\u2066isolate\\u2069 \\u200bzw \\x85nel \\U000e0041tag",
        ),
        ("café ünïcode", "café ünïcode"),
    ],
)
def test_shown(raw: str, safe: str) -> None:
    assert shown(raw) == safe  # the one function every outside text goes through


def test_txt_data_is_shown_with_control_characters_neutralised() -> None:
    with dns_server(HOSTILE) as dns:
        problems, report = check(dns.address)
    texts = [
        *report.lines(),
        *(p.message for p in problems),
        json.dumps(dataclasses.asdict(report), ensure_ascii=False),
    ]
    for text in texts:
        assert text.isprintable(), text
    assert report.spf == "v=spf1 \\x1b[2J\\x1b]0;pwned\\x07 -all\\u202e"
    assert report.dkim is not None
    assert "\\x1b[5m\\u200f\\r\\n" in report.dkim
    assert codes(problems) == {"dmarc-invalid": "warning"}  # p= is not a policy once the ESC is in it
    assert "\\x1b[31mreject\\u2066" in problems[0].message


# --- the real command ---------------------------------------------------------------------------


@pytest.fixture
def check_dns(tmp_path: Path) -> Callable[[str, bool], tuple[int, str]]:
    """``dispatch check ARTICLE -s LIST --dns [--json] --env-file FILE`` against a DNS server."""
    key = tmp_path / "dkim.pem"
    generate_key(key, selector="s2026", domain=DOMAIN, algorithm="ed25519")
    subscribers = tmp_path / "subscribers.csv"
    subscribers.write_text("email\nann@example.org\n", encoding="utf-8")

    def run(server: str, as_json: bool) -> tuple[int, str]:
        env = write_env(tmp_path / "dns.env", {
            **SETTINGS, "DISPATCH_STATE_DIR": str(tmp_path / "state"), "DISPATCH_DNS_SERVER": server,
            "DISPATCH_DKIM_KEY_FILE": str(key), "DISPATCH_DKIM_SELECTOR": "s2026",
            "DISPATCH_DKIM_DOMAIN": DOMAIN,
        })  # fmt: skip
        args = ["check", EXAMPLE_ARTICLE, "-s", subscribers, "--dns", "--env-file", env]
        done = dispatch(*args, *(["--json"] if as_json else []), cwd=tmp_path)
        return done.returncode, done.stdout

    return run


@pytest.mark.slow
def test_check_dns_says_a_lookup_failed_and_blocks_when_the_dkim_key_cannot_be_checked(
    check_dns: Callable[[str, bool], tuple[int, str]],
) -> None:
    refused = dict.fromkeys(GOOD, RCODE.REFUSED)
    with dns_server(GOOD, rcodes=refused) as dns:
        code, text = check_dns(dns.address, False)
        json_code, out = check_dns(dns.address, True)
    assert code == json_code == 2, text
    assert f"SPF:   could not look up {DOMAIN} ({dns.address} answered REFUSED)" in text
    assert "none published" not in text
    # a send looks nothing up in DNS: the verdict must not say it would refuse to start
    assert "1 blocking problem(s) in DNS: a send does not look these up and would start" in text
    report = json.loads(out)
    assert report["dns"]["dkim_error"] == f"could not look up {DKIM_NAME} ({dns.address} answered REFUSED)"
    assert [p["code"] for p in report["blocking"]] == ["dkim-lookup-failed"]
    assert {p["code"] for p in report["warnings"]} >= {"dns-error"}


@pytest.mark.slow
def test_check_dns_prints_no_escape_sequence_from_dns(
    check_dns: Callable[[str, bool], tuple[int, str]],
) -> None:
    with dns_server(HOSTILE) as dns:
        _, text = check_dns(dns.address, False)
        _, out = check_dns(dns.address, True)
    for printed in (text, out, json.dumps(json.loads(out)["dns"], ensure_ascii=False)):
        assert "\x1b" not in printed
        assert not any(c in printed for c in "\u202e\u2066\u200f\x07\r")
    assert "\\x1b[2J" in text
