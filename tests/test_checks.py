"""Pre-send checks: each planted problem gives its line at the right level; clean input gives none.

DNS verdicts come from a real dnslib server on 127.0.0.1 (tests/dns_server.py); the spam
score from the real SpamAssassin, on a message the product itself rendered in a dry run.
"""

from __future__ import annotations

import base64
import dataclasses
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization

from dispatch.checks.dns import DnsReport, dns_problems
from dispatch.checks.rules import (
    BLOCKING,
    MESSAGES,
    Footer,
    Problem,
    content_problems,
    footer_presence,
    settings_problems,
)
from dispatch.checks.spam import SpamReport, parse_spam_report, spam_report, spamassassin_missing
from dispatch.compose.dkim import load_signer
from dispatch.compose.dkimkeys import KeyRecord, generate_key
from dispatch.settings import Settings
from tests.dns_server import dns_server, silent_server

ROOT = Path(__file__).resolve().parents[1]
CLEAN_ENV = {
    "DISPATCH_FROM": "Newsroom <news@example.org>",
    "DISPATCH_UNSUBSCRIBE_URL": "https://example.org/u/{token}",
    "DISPATCH_UNSUBSCRIBE_MAILTO": "unsubscribe@example.org",
    "DISPATCH_UNSUBSCRIBE_SECRET": "k" * 43,
    "DISPATCH_POSTAL_ADDRESS": "1 Example Street, Springfield",
    "DISPATCH_DKIM_KEY_FILE": "dkim.pem",
    "DISPATCH_DKIM_SELECTOR": "s2026",
    "DISPATCH_DKIM_DOMAIN": "example.org",
}


def codes(problems: list[Problem]) -> dict[str, str]:
    """code -> level, after checking that every message is one line."""
    assert all("\n" not in p.message and p.message for p in problems)
    return {p.code: p.level for p in problems}


def settings(**overrides: str) -> Settings:
    """The clean settings with some changed: ``settings(from_="x@example.com", rate="1/s")``."""
    env = {f"DISPATCH_{k.rstrip('_').upper()}": v for k, v in overrides.items()}
    return Settings.from_mapping({**CLEAN_ENV, **env})


# --- settings -------------------------------------------------------------------------------


def test_clean_settings_have_no_problem() -> None:
    assert settings_problems(settings()) == []


def test_every_code_has_a_message_and_a_level() -> None:
    assert set(BLOCKING) <= set(MESSAGES)
    assert len(MESSAGES) == len({m.lower() for m in MESSAGES.values()})


PLANTED_SETTINGS = [
    ("no-unsubscribe", "blocking", {"unsubscribe_url": "", "unsubscribe_mailto": ""}),
    ("no-postal-address", "blocking", {"postal_address": ""}),
    ("unsubscribe-not-https", "blocking", {"unsubscribe_url": "http://example.org/u/{token}"}),
    ("dkim-not-aligned", "blocking", {"dkim_domain": "example.com"}),
    ("no-unsubscribe-secret", "blocking", {"unsubscribe_secret": ""}),
    ("short-unsubscribe-secret", "blocking", {"unsubscribe_secret": "x" * 31}),
    ("no-from", "blocking", {"sender": None, "dkim_domain": ""}),
    ("address-in-unsubscribe-url", "warning", {"unsubscribe_url": "https://example.org/u?e={email}"}),
]


@pytest.mark.parametrize(("code", "level", "change"), PLANTED_SETTINGS, ids=[c[0] for c in PLANTED_SETTINGS])
def test_each_planted_settings_problem_is_reported(code: str, level: str, change: dict[str, object]) -> None:
    # replace() can build what from_mapping refuses (an http URL): the check must see it anyway
    found = codes(settings_problems(dataclasses.replace(settings(), **change)))  # type: ignore[arg-type]
    assert found == {code: level}


@pytest.mark.parametrize(
    ("sender", "free"),
    [
        ("News <news.desk@gmail.com>", True),
        ("news@yahoo.co.uk", True),
        ("news@hotmail.fr", True),
        ("news@proton.me", True),
        ("news@mail.ru", True),
        ("news@example.org", False),
        ("news@gmail.example.org", False),
        ("news@outlook.example.com", False),
    ],
)
def test_a_free_mail_sender_is_a_warning(sender: str, free: bool) -> None:
    found = codes(
        settings_problems(settings(from_=sender, dkim_key_file="", dkim_selector="", dkim_domain=""))
    )
    assert found == ({"free-mail-from": "warning"} if free else {})


def test_a_dkim_domain_above_the_from_domain_aligns() -> None:
    assert settings_problems(settings(from_="news@news.example.org")) == []


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        ({"smtp_host": "smtp.gmail.com", "daily_limit": "2000"}, set()),
        ({"smtp_host": "smtp.gmail.com", "daily_limit": "5000"}, {"daily-limit-above-relay"}),
        ({"smtp_host": "smtp.gmail.com"}, {"no-daily-limit-for-relay"}),
        ({"smtp_host": "smtp.office365.com", "rate": "30/min", "daily_limit": "10000"}, set()),
        ({"smtp_host": "smtp.office365.com", "rate": "1/s", "daily_limit": "10000"}, {"rate-above-relay"}),
        ({"smtp_host": "smtp.office365.com", "daily_limit": "10000"}, {"no-rate-for-relay"}),
        (
            {"smtp_host": "smtp.office365.com", "rate": "20/min", "daily_limit": "9000", "connections": "4"},
            {"connections-above-relay"},
        ),
        (
            {"smtp_host": "email-smtp.eu-west-1.amazonaws.com"},
            {"no-rate-for-relay", "no-daily-limit-for-relay"},
        ),
        ({"smtp_host": "email-smtp.eu-west-1.amazonaws.com", "rate": "14/s", "daily_limit": "50000"}, set()),
        ({"smtp_host": "mail.example.org", "rate": "500/s"}, set()),
    ],
)
def test_relay_limits(overrides: dict[str, str], expected: set[str]) -> None:
    found = codes(settings_problems(settings(**overrides)))
    assert set(found) == expected
    assert set(found.values()) <= {"warning"}


# --- content --------------------------------------------------------------------------------

LINK = "https://example.org/u/AbCdEf0123456789"
CLEAN_HTML = f"""<!doctype html><html lang="en"><head><title>Issue</title></head><body>
<div style="display:none; max-height:0; overflow:hidden">The preheader</div>
<table role="presentation" width="600"><tr><td>
<img src="https://example.org/logo.png" alt="Example" width="120" height="40">
<img src="cid:photo-1" alt="">
<p>Read <a href="https://example.org/story">the story</a>, jump to <a href="#notes">the notes</a>
or write to <a href="mailto:editors@example.org">the editors</a>.</p>
<p class="footer">Example Foundation<br>1 Example Street,<br>Springfield<br>
<a href="{LINK}">Unsubscribe</a></p>
</td></tr></table></body></html>"""
CLEAN_TEXT = (
    f"Read the story [1].\n\nExample Foundation, 1 Example Street, Springfield\nUnsubscribe: {LINK}\n"
)
SUBJECT = "As elections approach, the US walk a thin line in Iraq"


def test_clean_content_has_no_problem() -> None:
    address = CLEAN_ENV["DISPATCH_POSTAL_ADDRESS"]
    footer = footer_presence(CLEAN_HTML, CLEAN_TEXT, unsubscribe_link=LINK, postal_address=address)
    assert footer == Footer(True, True, True, True)
    assert content_problems(CLEAN_HTML, CLEAN_TEXT, SUBJECT, footer=footer) == []


PLANTED_CONTENT = [
    ("html-clipped", {"html": CLEAN_HTML.replace("</body>", "<p>" + "words " * 20_000 + "</p></body>")}),
    ("img-no-alt", {"html": CLEAN_HTML.replace(' alt="Example"', "")}),
    ("insecure-link", {"html": CLEAN_HTML.replace("https://example.org/story", "http://example.org/story")}),
    (
        "insecure-link",
        {"html": CLEAN_HTML.replace("https://example.org/logo.png", "http://example.org/logo.png")},
    ),
    ("relative-link", {"html": CLEAN_HTML.replace("https://example.org/story", "/story")}),
    ("relative-link", {"html": CLEAN_HTML.replace("https://example.org/logo.png", "images/logo.png")}),
    ("empty-subject", {"subject": "  "}),
    ("long-subject", {"subject": "A subject that goes on " * 5}),
    ("no-text-part", {"text": ""}),
    ("no-text-part", {"text": " \r\n "}),
]


@pytest.mark.parametrize(("code", "change"), PLANTED_CONTENT, ids=[c[0] for c in PLANTED_CONTENT])
def test_each_planted_content_problem_is_a_warning(code: str, change: dict[str, str]) -> None:
    given = {"html": CLEAN_HTML, "text": CLEAN_TEXT, "subject": SUBJECT, **change}
    assert codes(content_problems(given["html"], given["text"], given["subject"])) == {code: "warning"}


HIDDEN = {"no-unsubscribe-link-html", "no-postal-address-html"}  # a hidden footer hides both
OPEN_LINK = f'<a href="{LINK}">'
FOOTER = '<p class="footer">'


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        pytest.param({"html": CLEAN_HTML.replace(LINK, "https://example.org/other")},
                     {"no-unsubscribe-link-html"}, id="other-link-in-html"),
        pytest.param({"html": CLEAN_HTML.replace('<p class="footer">', '<p style="display: none">')},
                     HIDDEN, id="footer-display-none"),
        pytest.param({"html": CLEAN_HTML.replace('<p class="footer">', '<p class="footer" hidden>')},
                     HIDDEN, id="footer-hidden-attribute"),
        pytest.param({"text": CLEAN_TEXT.replace(LINK, "")},
                     {"no-unsubscribe-link-text"}, id="no-link-in-text"),
        pytest.param({"html": CLEAN_HTML.replace(">Unsubscribe</a>", "></a>")},
                     {"no-unsubscribe-link-html"}, id="link-with-no-text"),
        pytest.param({"html": CLEAN_HTML.replace(">Unsubscribe</a>", "> <!-- Unsubscribe --> </a>")},
                     {"no-unsubscribe-link-html"}, id="link-with-only-a-comment"),
        pytest.param({"html": CLEAN_HTML.replace(">Unsubscribe</a>", '><img src="cid:x" alt=""></a>')},
                     {"no-unsubscribe-link-html"}, id="link-with-a-picture-without-alt"),
        pytest.param({"html": CLEAN_HTML.replace(OPEN_LINK, OPEN_LINK[:-1] + ' style="font-size: 0">')},
                     {"no-unsubscribe-link-html"}, id="link-font-size-0"),
        pytest.param({"html": CLEAN_HTML.replace(OPEN_LINK, OPEN_LINK[:-1] + ' style="opacity:0.0">')},
                     {"no-unsubscribe-link-html"}, id="link-opacity-0"),
        pytest.param({"html": CLEAN_HTML.replace(FOOTER, '<p style="position:absolute;left:-999px">')},
                     HIDDEN, id="footer-off-screen"),
        pytest.param({"html": CLEAN_HTML.replace("1 Example Street,<br>", "")},
                     {"no-postal-address-html"}, id="no-address-in-html"),
        pytest.param({"text": CLEAN_TEXT.replace("Springfield", "")},
                     {"no-postal-address-text"}, id="no-address-in-text"),
    ],
)  # fmt: skip
def test_a_footer_without_the_link_or_address_blocks(change: dict[str, str], expected: set[str]) -> None:
    given = {"html": CLEAN_HTML, "text": CLEAN_TEXT, **change}
    address = CLEAN_ENV["DISPATCH_POSTAL_ADDRESS"]
    footer = footer_presence(given["html"], given["text"], unsubscribe_link=LINK, postal_address=address)
    found = codes(content_problems(given["html"], given["text"], SUBJECT, footer=footer))
    assert found == dict.fromkeys(expected, "blocking")


@pytest.mark.parametrize(
    "link",
    [
        f'<a href="{LINK}"><img src="cid:x" alt="Unsubscribe"></a>',
        f'<a href="{LINK}" style="font-size:12px;opacity:0.8"><span>Unsubscribe</span></a>',
        f'<a href="{LINK}" style="margin-left:-10px">Unsubscribe</a>',
    ],
    ids=["picture-with-alt", "small-and-faint-but-there", "small-negative-margin"],
)
def test_a_link_that_shows_something_counts(link: str) -> None:
    html = CLEAN_HTML.replace(f'<a href="{LINK}">Unsubscribe</a>', link)
    footer = footer_presence(html, CLEAN_TEXT, unsubscribe_link=LINK, postal_address="")
    assert footer.unsubscribe_in_html


def test_a_footer_given_as_booleans_is_checked() -> None:
    found = codes(content_problems(CLEAN_HTML, CLEAN_TEXT, SUBJECT, footer=Footer(True, False, True, True)))
    assert found == {"no-unsubscribe-link-text": "blocking"}


# --- DNS ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Path, KeyRecord]]:
    folder = tmp_path_factory.mktemp("dkim")
    made = {}
    for name in ("ours", "other"):
        path = folder / f"{name}.pem"
        made[name] = (path, generate_key(path, selector="s2026", domain="example.org"))
    return made


def good_records(
    record: KeyRecord, **changes: list[str | tuple[str, ...]]
) -> dict[str, list[str | tuple[str, ...]]]:
    records: dict[str, list[str | tuple[str, ...]]] = {
        "example.org": ["v=spf1 include:_spf.example.com ~all", "google-site-verification=abc123"],
        "_dmarc.example.org": ["v=DMARC1; p=quarantine; rua=mailto:dmarc@example.org"],
        record.name: [record.strings],  # one record, split into strings of at most 255 bytes
    }
    return {**records, **changes}


def check(
    server: str, key_file: Path | None = None, domain: str = "example.org"
) -> tuple[dict[str, str], DnsReport]:
    public = load_signer(key_file, "s2026", "example.org").public_key_b64 if key_file else None
    found, report = dns_problems(
        domain,
        dkim_selector="s2026",
        dkim_domain="example.org",
        dkim_public_key=public,
        server=server,
        timeout=3,
    )
    return codes(found), report


def test_good_records_pass(keys: dict[str, tuple[Path, KeyRecord]]) -> None:
    path, record = keys["ours"]
    assert len(record.strings) >= 2  # a 2048-bit key does not fit one TXT string
    with dns_server(good_records(record)) as dns:
        found, report = check(dns.address, path)
    assert found == {}
    assert report.spf == "v=spf1 include:_spf.example.com ~all"
    assert report.dmarc_policy == "quarantine"
    assert report.dkim == record.value
    assert report.dkim_matches is True
    assert any("matches the key file" in line for line in report.lines())


def test_dmarc_p_none_is_reported_as_such(keys: dict[str, tuple[Path, KeyRecord]]) -> None:
    path, record = keys["ours"]
    with dns_server(good_records(record, **{"_dmarc.example.org": ["v=DMARC1; p=none"]})) as dns:
        found, report = check(dns.address, path)
    assert found == {}
    assert report.dmarc_policy == "none"
    assert "DMARC: p=none (monitoring only)" in report.lines()


def test_missing_records(keys: dict[str, tuple[Path, KeyRecord]]) -> None:
    with dns_server({"example.org": ["some-verification=1"]}) as dns:
        found, report = check(dns.address, keys["ours"][0])
        problems, _ = dns_problems("example.org", server=dns.address, timeout=3)
    assert found == {"no-spf": "warning", "no-dmarc": "warning", "no-dkim-record": "blocking"}
    assert report.dkim is None
    messages = " ".join(p.message for p in problems)
    assert 'example.org TXT "v=spf1 ' in messages
    assert '_dmarc.example.org TXT "v=DMARC1; p=none; rua=mailto:' in messages


def test_a_published_key_that_is_not_the_key_file_blocks(keys: dict[str, tuple[Path, KeyRecord]]) -> None:
    with dns_server(good_records(keys["other"][1])) as dns:
        found, report = check(dns.address, keys["ours"][0])
    assert found == {"dkim-mismatch": "blocking"}
    assert report.dkim_matches is False


def test_a_key_published_in_pkcs1_form_matches(keys: dict[str, tuple[Path, KeyRecord]]) -> None:
    path, record = keys["ours"]
    public = load_signer(path, "s2026", "example.org").public_key_b64
    pkcs1 = serialization.load_der_public_key(base64.b64decode(public)).public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.PKCS1
    )
    published = f"v=DKIM1; k=rsa; p={base64.b64encode(pkcs1).decode()}"
    strings = (published[:255], published[255:])
    with dns_server(good_records(record, **{record.name: [strings]})) as dns:
        found, report = check(dns.address, path)
    assert found == {}
    assert report.dkim_matches is True


def test_a_revoked_key_blocks(keys: dict[str, tuple[Path, KeyRecord]]) -> None:
    record = keys["ours"][1]
    with dns_server(good_records(record, **{record.name: ["v=DKIM1; k=rsa; p="]})) as dns:
        found, _ = check(dns.address, keys["ours"][0])
    assert found == {"dkim-revoked": "blocking"}


def test_without_a_key_file_the_record_is_only_looked_up(keys: dict[str, tuple[Path, KeyRecord]]) -> None:
    with dns_server(good_records(keys["other"][1])) as dns:
        found, report = check(dns.address)
    assert found == {}
    assert report.dkim_matches is None


def test_two_spf_records_and_a_bad_dmarc_are_warnings(keys: dict[str, tuple[Path, KeyRecord]]) -> None:
    record = keys["ours"][1]
    changes = {"example.org": ["v=spf1 mx -all", "v=spf1 a -all"], "_dmarc.example.org": ["v=DMARC1; rua=x"]}
    with dns_server(good_records(record, **changes)) as dns:
        found, _ = check(dns.address, keys["ours"][0])
    assert found == {"multiple-spf": "warning", "dmarc-invalid": "warning"}


def test_a_subdomain_sender_uses_the_parent_dmarc_record(keys: dict[str, tuple[Path, KeyRecord]]) -> None:
    record = keys["ours"][1]
    with dns_server(
        good_records(record, **{"news.example.org": ["v=spf1 include:_spf.example.com -all"]})
    ) as dns:
        found, report = check(dns.address, keys["ours"][0], domain="news.example.org")
        assert ("_dmarc.news.example.org", "udp") in dns.resolver.asked
    assert found == {}
    assert report.dmarc_policy == "quarantine"


def test_a_long_answer_comes_over_tcp(keys: dict[str, tuple[Path, KeyRecord]]) -> None:
    path, record = keys["ours"]
    padding = [f"verification-{i}={'x' * 60}" for i in range(8)]
    with dns_server(good_records(record, **{"example.org": ["v=spf1 -all", *padding]})) as dns:
        found, report = check(dns.address, path)
        assert ("example.org", "tcp") in dns.resolver.asked  # truncated over UDP, asked again over TCP
    assert found == {}
    assert report.spf == "v=spf1 -all"


def test_servfail_is_one_line(keys: dict[str, tuple[Path, KeyRecord]]) -> None:
    with dns_server(good_records(keys["ours"][1]), failing=["_dmarc.example.org"]) as dns:
        problems, report = dns_problems("example.org", server=dns.address, timeout=3)
    assert codes(problems) == {"dns-error": "warning"}
    assert "_dmarc.example.org" in problems[0].message
    assert "SERVFAIL" in problems[0].message
    assert report.spf is not None


def test_a_resolver_that_never_answers_is_one_line_per_record() -> None:
    with silent_server() as address:
        problems, report = dns_problems(
            "example.org", dkim_selector="s", dkim_domain="example.org", server=address, timeout=0.3
        )
    # A failed lookup is not a pass: the DKIM key, which must be published, cannot be checked.
    assert codes(problems) == {"dns-error": "warning", "dkim-lookup-failed": "blocking"}
    assert problems[0].message.startswith(f"could not look up example.org (no answer from {address}")
    assert report.spf is None
    assert report.spf_error is not None


def test_a_resolver_that_is_not_an_address_is_one_line() -> None:
    problems, _ = dns_problems("example.org", server="resolver.example.org:53", timeout=0.3)
    assert codes(problems) == {"dns-error": "warning"}
    assert "DISPATCH_DNS_SERVER 'resolver.example.org:53' is not an IP address" in problems[0].message


# --- SpamAssassin ---------------------------------------------------------------------------

needs_spamassassin = pytest.mark.skipif(
    spamassassin_missing() is not None, reason=f"{spamassassin_missing()} (.ci/run installs it)"
)


@pytest.fixture(scope="module")
def example_message(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    """The first message a dry run of the example article writes: the default template's bytes."""
    out = tmp_path_factory.mktemp("preview")
    env = {k: v for k, v in os.environ.items() if not k.startswith("DISPATCH_")}
    env["DISPATCH_STATE_DIR"] = str(out.parent / "state")  # not the checkout's dispatch-state/
    command = [sys.executable, "-m", "dispatch", "send", "examples/thin-line-in-iraq.txt"]
    command += ["-s", "subscribers.example.csv", "--env-file", ".env.example", "--dry-run", "--out", str(out)]
    done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr
    return sorted(out.glob("*.eml"))[0].read_bytes()


@pytest.fixture(scope="module")
def report(example_message: bytes) -> SpamReport:
    """SpamAssassin's report on the example message (computed once: it takes a second or two)."""
    report = spam_report(example_message)
    assert report is not None
    return report


@pytest.mark.slow
@needs_spamassassin
def test_spamassassin_scores_a_product_message(report: SpamReport) -> None:
    assert report.required > 0
    assert report.rules, "SpamAssassin always reports some rule (HTML_MESSAGE at least)"
    assert all(rule.name.isupper() and rule.description for rule in report.rules)
    total = sum(rule.points for rule in report.rules)  # the table's points add up to the score
    assert abs(total - report.score) < 0.15


@pytest.mark.slow
@needs_spamassassin
def test_the_default_templates_example_message_scores_below_2_with_local_rules(report: SpamReport) -> None:
    fired = ", ".join(f"{rule.name} {rule.points:+.1f}" for rule in report.rules)
    assert report.score < 2.0, f"spamassassin -L scored {report.score}: {fired}"


@pytest.mark.slow
@needs_spamassassin
def test_scoring_writes_nothing_in_the_users_home(
    example_message: bytes, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    assert spam_report(example_message) is not None
    assert list(home.iterdir()) == []  # (spamassassin makes ~/.spamassassin even with -x)


def test_without_spamassassin_there_is_a_clear_note(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))  # an empty folder: no spamassassin on the PATH
    assert spam_report(b"Subject: hello\r\n\r\nbody\r\n") is None
    note = spamassassin_missing()
    assert note is not None
    assert "not installed" in note
    assert "\n" not in note


def test_the_report_parser_reads_status_and_table() -> None:
    output = (
        "X-Spam-Checker-Version: SpamAssassin 4.0.1 (2024-03-25) on host\r\n"
        "X-Spam-Status: No, score=1.7 required=5.0 tests=GB_CUSTOM_HTM_URI,\r\n"
        "\tHTML_FONT_LOW_CONTRAST,HTML_MESSAGE,NO_RECEIVED autolearn=no\r\n"
        "Subject: x\r\n\r\nbody\r\n"
        "Content analysis details:   (1.7 points, 5.0 required)\n\n"
        " pts rule name              description\n"
        "---- ---------------------- --------------------------------------------------\n"
        "-0.0 NO_RECEIVED            Informational: message has no Received headers\n"
        " 0.7 HTML_FONT_LOW_CONTRAST BODY: HTML font color similar or identical to\n"
        "                            background\n"
        " 0.0 HTML_MESSAGE           BODY: HTML included in message\n"
        " 1.0 GB_CUSTOM_HTM_URI      Custom html uri\n\n"
    )
    report = parse_spam_report(output)
    assert (report.score, report.required, report.is_spam) == (1.7, 5.0, False)
    assert [(r.name, r.points) for r in report.rules] == [
        ("NO_RECEIVED", -0.0),
        ("HTML_FONT_LOW_CONTRAST", 0.7),
        ("HTML_MESSAGE", 0.0),
        ("GB_CUSTOM_HTM_URI", 1.0),
    ]
    assert report.rules[1].description == "BODY: HTML font color similar or identical to background"


def test_a_dry_run_names_each_problem_once_with_one_figure(
    invoke: Any, write_file: Any, subscribers: Path, env_file: Any
) -> None:
    """One rule set: a missing postal address and an oversized HTML are each reported once,
    and the size in the warning is the size the summary shows."""
    words = " ".join(f"word{n % 97}" for n in range(30_000))
    article = write_file("big.md", f"---\ntitle: A long issue\n---\n\n{words}\n")
    settings = env_file(DISPATCH_POSTAL_ADDRESS="")
    done = invoke("send", article, "-s", subscribers, "--env-file", settings, "--dry-run")
    lines = done.stdout.splitlines()
    postal = [line for line in lines if "POSTAL_ADDRESS" in line]
    clipped = [line for line in lines if "Gmail" in line]
    assert len(postal) == 1, postal
    assert postal[0].startswith("  Blocking:")
    assert len(clipped) == 1, clipped
    [size_line] = [line for line in lines if line.startswith("  HTML size:")]
    shown = size_line.split()[2] + " " + size_line.split()[3]
    assert f"the HTML is {shown} per message" in clipped[0]


# --- the state folder -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("make", "relative", "why"),
    [
        (lambda root: None, "news/dispatch-state", None),  # made by the first send
        (lambda root: (root / "state").mkdir(), "state", None),
        (lambda root: (root / "file").write_text("x"), "file/state", "{root}/file is a file, not a folder"),
        (lambda root: (root / "state").write_text("x"), "state", "{root}/state is a file, not a folder"),
        (
            lambda root: (root / "link").symlink_to(root / "gone"),
            "link/state",
            "{root}/link is a link to nothing",
        ),
    ],
    ids=["to-be-made", "exists", "under-a-file", "is-a-file", "under-a-broken-link"],
)
def test_a_state_folder_that_cannot_be_used_blocks(
    tmp_path: Path, make: Any, relative: str, why: str | None
) -> None:
    make(tmp_path)
    before = sorted(tmp_path.rglob("*"))
    found = settings_problems(settings(state_dir=str(tmp_path / relative)))
    assert sorted(tmp_path.rglob("*")) == before  # the check leaves nothing behind
    if why is None:
        assert found == []
    else:
        assert [(p.code, p.level) for p in found] == [("state-unusable", "blocking")]
        assert why.format(root=tmp_path) in found[0].message
        assert "DISPATCH_STATE_DIR" in found[0].message


def test_a_state_folder_this_user_cannot_write_blocks(tmp_path: Path) -> None:
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o500)
    try:
        found = settings_problems(settings(state_dir=str(locked / "state")))
    finally:
        locked.chmod(0o700)
    if os.geteuid() == 0:  # root writes anywhere the file system lets it: nothing to find
        assert found == []
    else:
        assert [p.code for p in found] == ["state-unusable"]
        assert f"{locked} cannot be written by this user" in found[0].message


def test_a_postgresql_state_has_no_folder_to_check(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("x")
    state = settings(state_dir=str(blocker / "state"), state_url="postgresql://dispatch@127.0.0.1/news")
    assert settings_problems(state) == []
