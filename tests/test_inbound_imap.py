"""``dispatch inbound --imap`` against a real Dovecot on 127.0.0.1: every message of the folder
once, read ones moved to 'processed', unreadable ones to 'unreadable'; over TLS with the
certificate verified; a refused login is one line, without the password."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
import trustme

from tests.dovecot_private import AVAILABLE, PASSWORD, PrivateDovecot
from tests.inbound_helpers import (  # noqa: F401 - fixtures
    Sent,
    inbound_state_fixture,
    make_sent_fixture,
    sent_fixture,
)
from tests.inbound_samples import dsn, out_of_office, received_copy

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not AVAILABLE, reason="Debian's dovecot-imapd is not installed (.ci/run installs it)"),
]


@pytest.fixture
def dovecot(ca: trustme.CA) -> Iterator[PrivateDovecot]:
    server = PrivateDovecot(ca).start()
    try:
        yield server
    finally:
        server.stop()


def with_settings(sent: Sent, **values: str) -> None:
    text = sent.env.read_text(encoding="utf-8")
    sent.env.write_text(text + "".join(f"{k}='{v}'\n" for k, v in values.items()), encoding="utf-8")


@pytest.mark.parametrize("inbound_state", ["sqlite", "postgresql"], indirect=True)
def test_an_imap_folder_is_read_once_and_moved_aside(sent: Sent, dovecot: PrivateDovecot) -> None:
    data, mail_from = sent.copy_of("bob@example.com")
    dovecot.append(
        dsn(mail_from, "bob@example.com", received_copy(data, mail_from)),
        out_of_office(mail_from, "bob@example.com", "News spring"),
        b"From: someone@example.com\r\nSubject: Undelivered Mail\r\nReturn-Path: <>\r\n\r\n?\r\n",
    )
    with_settings(sent, **dovecot.env())
    result = sent.dispatch("inbound", "--imap", "--json")
    assert result.exit_code == 0, result.stderr + dovecot.log()[-2000:]
    summary = json.loads(result.stdout)
    assert summary["outcomes"] == {"suppressed": 1, "ignored": 1, "kept": 1}
    assert sent.suppressed() == {"bob@example.com": ("bounced", "*")}
    assert (dovecot.count("INBOX"), dovecot.count("processed"), dovecot.count("unreadable")) == (0, 2, 1)
    again = sent.dispatch("inbound", "--imap", "--json")
    assert json.loads(again.stdout)["read"] == 0


def test_imap_over_tls_verifies_the_certificate(
    sent: Sent, dovecot: PrivateDovecot, ca_file: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    data, mail_from = sent.copy_of("cy@example.com")
    dovecot.append(dsn(mail_from, "cy@example.com", data))
    tls = {**dovecot.env(), "DISPATCH_IMAP_SECURITY": "ssl", "DISPATCH_IMAP_PORT": str(dovecot.tls_port)}
    with_settings(sent, **tls)
    untrusted = sent.dispatch("inbound", "--imap")
    assert untrusted.exit_code == 3
    assert "cannot reach the IMAP server" in untrusted.stderr
    assert "CERTIFICATE_VERIFY_FAILED" in untrusted.stderr
    monkeypatch.setenv("SSL_CERT_FILE", ca_file)
    result = sent.dispatch("inbound", "--imap")
    assert result.exit_code == 0, result.stderr
    assert sent.suppressed() == {"cy@example.com": ("bounced", "*")}


@pytest.mark.parametrize(
    ("setting", "value", "code", "names"),
    [
        ("DISPATCH_IMAP_PASSWORD", "wrong-password", 3, "DISPATCH_IMAP_PASSWORD"),
        ("DISPATCH_IMAP_FOLDER", "No Such Folder", 3, "DISPATCH_IMAP_FOLDER"),
        ("DISPATCH_IMAP_HOST", "imap.example.com", 2, "DISPATCH_IMAP_SECURITY=none"),
    ],
)
def test_a_login_folder_or_setting_that_fails_is_one_line_without_the_password(
    sent: Sent, dovecot: PrivateDovecot, setting: str, value: str, code: int, names: str
) -> None:
    with_settings(sent, **{**dovecot.env(), setting: value})
    result = sent.dispatch("inbound", "--imap")
    assert result.exit_code == code, result.stderr
    assert names in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert PASSWORD not in result.stderr
    assert "wrong-password" not in result.stderr
    assert "(b'" not in result.stderr  # the server's words, not a Python bytes value


def test_without_an_imap_host_it_names_the_setting(sent: Sent, tmp_path: Path) -> None:
    result = sent.dispatch("inbound", "--imap")
    assert result.exit_code == 2
    assert "DISPATCH_IMAP_HOST" in result.stderr
