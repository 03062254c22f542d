"""Issue 7, end to end: the acceptance points proven by driving the real product as a user
would — ``dispatch`` run as a process, messages received by a real SMTP server (aiosmtpd),
a real ``dispatch serve`` process spoken to over HTTP, DKIM checked with dkimpy, spam scored
by SpamAssassin, and ``check --dns`` asking a real DNS server (dnslib) on 127.0.0.1.

Every test works in its own tmp_path with free ports, so two runs of the suite can go at the
same time; nothing asserts on timing.
"""

from __future__ import annotations

import base64
import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

import dkim
import dns.resolver
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from tests.dns_server import dns_server
from tests.inbox_helpers import (
    COMMAND_TIMEOUT,
    EXAMPLE_ARTICLE,
    EXAMPLE_ENV,
    EXAMPLE_SUBSCRIBERS,
    NEWS,
    OTHER,
    READERS,
    GatedHandler,
    Newsletter,
    PrintedRecord,
    clean_environ,
    dispatch,
    error_lines,
    header_value,
    json_out,
    local_target,
    make_newsletter,
    message_parts,
    printed_txt_record,
    raw_header_lines,
    replace_in_header,
    serving,
    short_rsa_pem,
    token_of,
    unsubscribe_links,
)
from tests.smtp_servers import FaultPlan, Server

pytestmark = pytest.mark.slow  # every test runs dispatch as a process

ANN, BOB, CY, DEE = READERS
SPAMASSASSIN = shutil.which("spamassassin")
needs_spamassassin = pytest.mark.skipif(
    SPAMASSASSIN is None,
    reason="spamassassin is not installed, so the spam score cannot be checked here "
    "(apt-get install spamassassin; .ci/run installs it)",
)


@pytest.fixture
def news(tmp_path: Path, plain_server: Server) -> Newsletter:
    """A newsletter folder whose settings send to a real aiosmtpd server."""
    return make_newsletter(tmp_path / "news", plain_server)


def _links_by_recipient(server: Server) -> dict[str, str]:
    return {m.rcpt_tos[0]: unsubscribe_links(m.data)[0] for m in server.received}


def _assert_plain_200(reply: Any) -> None:
    """RFC 8058: the one-click POST is answered at once, with no redirect, cookie or login."""
    assert reply.status == 200, reply.text
    for header in ("location", "set-cookie", "www-authenticate", "refresh"):
        assert reply.header(header) is None, (header, reply.header(header))


def _send_next_issue(news: Newsletter) -> tuple[Any, dict[str, Any], list[str]]:
    """The next issue to the same list: (the finished process, its summary, who received it)."""
    before = len(news.server.received)
    done, summary = news.send("--campaign", "next-issue")
    assert done.returncode == 0, done.stderr
    return done, summary, news.received_by()[before:]


def _flip(char: str) -> str:
    return "B" if char == "A" else "A"


# --- 1. List-Unsubscribe, List-Id, and a real `dispatch serve` ------------------------------


def test_every_sent_message_carries_one_click_unsubscribe_and_list_id(
    tmp_path: Path, plain_server: Server
) -> None:
    long_address = "a.rather.long.local-part.for.folding.checks@newsletters.subdomain.example.org"
    news = make_newsletter(tmp_path / "news", plain_server, (*READERS, long_address))
    done, summary = news.send()
    assert done.returncode == 0, done.stderr
    assert summary["sent_now"] == 5
    assert sorted(news.received_by()) == sorted((*READERS, long_address))

    tokens = set()
    for message in plain_server.received:
        data, address = message.data, message.rcpt_tos[0]
        lines = raw_header_lines(data, "List-Unsubscribe")
        assert lines, "no List-Unsubscribe header"
        assert not [line for line in lines if b"=?" in line], lines  # never an RFC 2047 encoded-word
        assert all(len(line) <= 998 for line in lines)

        https, mailto = unsubscribe_links(data)
        assert https.startswith("https://example.org/mail/unsubscribe/"), https
        assert mailto.startswith("mailto:unsubscribe@example.org"), mailto
        token = token_of(https)
        assert re.fullmatch(r"[A-Za-z0-9_-]{20,}", token), token
        # Opaque: the address shows in no readable form, not even in the token's bytes (a local
        # part is looked for only when long enough not to turn up in random base64 by chance).
        local = address.split("@")[0]
        shown = [address, quote(address), quote(address, safe=""), *([local] if len(local) >= 8 else [])]
        for text in shown:
            assert text.lower() not in https.lower()
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
        for text in shown:
            assert text.encode() not in raw
        tokens.add(token)

        assert raw_header_lines(data, "List-Unsubscribe-Post") == [
            b"List-Unsubscribe-Post: List-Unsubscribe=One-Click"
        ]
        list_id = header_value(data, "List-Id")
        assert list_id.endswith(f"<{NEWS}>"), list_id

        text, html = message_parts(data)
        assert https in text  # the visible link in the body is the header's link
        assert f'href="{https}"' in html
    assert len(tokens) == 5  # one token per reader


URL_SHAPES = {
    "token in the path": {"DISPATCH_UNSUBSCRIBE_URL": "https://example.org/mail/unsubscribe/{token}"},
    "token in a query value": {"DISPATCH_UNSUBSCRIBE_URL": "https://example.org/u?list=weekly&token={token}"},
    "token appended": {"DISPATCH_UNSUBSCRIBE_URL": "https://example.org/newsletter/unsubscribe"},
    "default list id": {"DISPATCH_LIST_ID": ""},
}


@pytest.mark.parametrize("shape", URL_SHAPES.values(), ids=URL_SHAPES.keys())
def test_a_one_click_post_to_dispatch_serve_suppresses_that_list_only(
    news: Newsletter, shape: dict[str, str]
) -> None:
    news.values.update(shape)
    done, _ = news.send()
    assert done.returncode == 0, done.stderr
    links = _links_by_recipient(news.server)
    list_id = re.findall(r"<([^>]+)>", header_value(news.server.received[0].data, "List-Id"))[-1]
    if shape.get("DISPATCH_LIST_ID") is None:
        assert list_id == NEWS

    with serving(news.env_file(), news.root) as serve:
        # RFC 8058 §3.1: multipart/form-data, and the form-urlencoded body it also allows.
        urlencoded = serve.one_click(local_target(links[ANN]))
        multipart = serve.one_click_multipart(local_target(links[BOB]))
        for reply in (urlencoded, multipart):
            _assert_plain_200(reply)
            assert "unsubscribed" in reply.text.lower()
        _assert_plain_200(serve.one_click(local_target(links[ANN])))  # a provider retrying: harmless

        entries = news.suppressed()
        assert sorted((e["email"], e["reason"], e["list"]) for e in entries) == [
            (ANN, "unsubscribed", list_id),
            (BOB, "unsubscribed", list_id),
        ]

        # The next issue to this list skips them, counted as suppressed with the reason.
        done, summary, received = _send_next_issue(news)
        assert received == [CY, DEE]
        assert summary["suppressed"] == 2
        assert summary["suppressed_by_reason"] == {"unsubscribed": 2}
        assert "Suppressed:    2 (2 unsubscribed)" in done.stderr

        # A test send to a list member who unsubscribed does not reach them either.
        before = len(news.server.received)
        done, summary = news.send("--to", ANN, "--campaign", "test-issue")
        assert news.received_by()[before:] == []
        assert summary["suppressed"] == 1

        # Another newsletter (another List-Id) in the same state folder still mails them.
        other = news.env_file("other.env", DISPATCH_LIST_ID=OTHER)
        before = len(news.server.received)
        done, summary = news.send("--campaign", "other-issue", env_file=other)
        assert done.returncode == 0, done.stderr
        assert sorted(news.received_by()[before:]) == sorted(READERS)
        assert summary["suppressed"] == 0
        assert header_value(news.server.received[-1].data, "List-Id").endswith(f"<{OTHER}>")


def test_a_resumed_or_retried_campaign_skips_an_address_unsubscribed_in_between(
    tmp_path: Path, smtp_server: Callable[..., Server]
) -> None:
    server = smtp_server(faults=FaultPlan(reject={BOB: "451 4.3.0 mailbox busy, try again later"}))
    news = make_newsletter(tmp_path / "news", server)
    links = news.preview_links()
    _, summary = news.send("--limit", "2")  # Ann is sent; Bob is deferred; Cy and Dee wait
    assert news.received_by() == [ANN]
    assert summary["deferred"] == 1
    server.handler.faults.reject.clear()  # the relay is fine again

    with serving(news.env_file(), news.root) as serve:
        _assert_plain_200(serve.one_click(local_target(links[BOB])))
        _assert_plain_200(serve.one_click_multipart(local_target(links[CY])))
    done, summary = news.send()  # the same command again: resume, and retry the deferred
    assert news.received_by() == [ANN, DEE]
    assert summary["suppressed_by_reason"] == {"unsubscribed": 2}, summary
    assert summary["deferred"] == 0, summary  # Bob is no longer waiting for a retry
    assert done.returncode == 0, done.stderr


def test_the_reader_can_undo_an_unsubscribe_with_the_same_link(news: Newsletter) -> None:
    news.send()
    target = local_target(_links_by_recipient(news.server)[ANN])
    with serving(news.env_file(), news.root) as serve:
        _assert_plain_200(serve.one_click(target))
        page = serve.request("GET", target)  # the link again: the page says so, and offers to undo
        assert page.status == 200
        assert re.search(r'<button[^>]*name="action"[^>]*value="resubscribe"', page.text), page.text
        undo = serve.request(
            "POST", target, "action=resubscribe", {"Content-Type": "application/x-www-form-urlencoded"}
        )
        _assert_plain_200(undo)
        assert news.suppressed() == []
    _, _, received = _send_next_issue(news)
    assert ANN in received


def test_a_get_shows_a_form_and_suppresses_nothing(news: Newsletter) -> None:
    news.send()
    link = _links_by_recipient(news.server)[ANN]

    with serving(news.env_file(), news.root) as serve:
        for _ in range(3):  # a link scanner, then the reader, then the scanner again
            page = serve.request("GET", local_target(link))
            assert page.status == 200
            assert page.header("set-cookie") is None
            assert (page.header("content-type") or "").startswith("text/html")
            form = re.search(r"<form\b[^>]*>.*?</form>", page.text, re.S | re.I)
            assert form, page.text
            assert re.search(r'method="?post"?', form[0], re.I)
            assert re.search(r'name="List-Unsubscribe"[^>]*value="One-Click"', form[0])
            assert "Example Foundation" in page.text
        head = serve.request("HEAD", local_target(link))
        assert head.status == 200
        # What scanners and prefetchers also do: the one-click words in a GET's query, and
        # POSTs that do not carry List-Unsubscribe=One-Click.
        assert serve.request("GET", local_target(link) + "?List-Unsubscribe=One-Click").status < 500
        form_type = {"Content-Type": "application/x-www-form-urlencoded"}
        for body in ("", "List-Unsubscribe=Yes", "one-click"):
            assert serve.request("POST", local_target(link), body, form_type).status != 200, body
        assert news.suppressed() == []

        _, summary, received = _send_next_issue(news)
        assert sorted(received) == sorted(READERS)
        assert summary["suppressed"] == 0


def test_a_tampered_truncated_or_forged_token_gets_a_4xx_and_changes_nothing(news: Newsletter) -> None:
    news.send()
    link = _links_by_recipient(news.server)[ANN]
    token = token_of(link)
    prefix = local_target(link)[: -len(token)]
    middle = len(token) // 2
    forged_env = news.env_file("forged.env", DISPATCH_UNSUBSCRIBE_SECRET="another-secret-" + "x" * 40)
    forged = token_of(news.preview_links(forged_env, "forged")[ANN])
    assert forged != token
    bad = {
        "one character changed": token[:middle] + _flip(token[middle]) + token[middle + 1 :],
        "first character changed": _flip(token[0]) + token[1:],
        "last character changed": token[:-1] + _flip(token[-1]),
        "one character cut": token[:-1],
        "cut in half": token[:middle],
        "one character added": token + "A",
        "empty": "",
        "made with another secret": forged,
    }

    with serving(news.env_file(), news.root) as serve:
        for what, value in bad.items():
            target = prefix + value
            for reply in (
                serve.one_click(target),
                serve.one_click_multipart(target),
                serve.request("GET", target),
            ):
                assert 400 <= reply.status < 500, (what, reply.status)
                assert reply.header("set-cookie") is None
        assert news.suppressed() == []

        _, summary, received = _send_next_issue(news)
        assert sorted(received) == sorted(READERS)
        assert summary["suppressed"] == 0


def test_healthz_answers_and_oversized_requests_are_refused(news: Newsletter) -> None:
    news.send()
    target = local_target(_links_by_recipient(news.server)[ANN])
    form = {"Content-Type": "application/x-www-form-urlencoded"}

    with serving(news.env_file(), news.root) as serve:
        health = serve.request("GET", "/healthz")
        assert health.status == 200

        padded = "List-Unsubscribe=One-Click&padding=" + "x" * 20_000
        assert serve.request("POST", target, padded, form).status == 413
        announced = (
            f"POST {target} HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            "Content-Type: application/x-www-form-urlencoded\r\nContent-Length: 50000000\r\n\r\n"
        ).encode()
        assert serve.raw_status(announced, b"List-Unsubscribe=One-Click") == 413
        long_url = serve.request("POST", target + "?" + "x" * 10_000, "List-Unsubscribe=One-Click", form)
        assert 400 <= long_url.status < 500
        assert news.suppressed() == []

        # and the endpoint still works afterwards
        _assert_plain_200(serve.one_click(target))
        assert [e["email"] for e in news.suppressed()] == [ANN]


def test_an_unsubscribe_during_a_long_send_is_honoured_for_the_remaining_messages(
    tmp_path: Path, smtp_server: Callable[..., Server]
) -> None:
    handler = GatedHandler()
    server = smtp_server(handler=handler)
    readers = tuple(f"reader{n}@example.org" for n in range(1, 7))
    news = make_newsletter(tmp_path / "news", server, readers)
    links = news.preview_links()  # the editor's dry run: the links each message will carry
    assert sorted(links) == sorted(readers)

    with serving(news.env_file(), news.root) as serve:
        send = subprocess.Popen(
            [sys.executable, "-m", "dispatch", "send", str(news.article), "-s", str(news.subscribers),
             "--yes", "--json", "--env-file", str(news.env_file())],
            cwd=news.root, env=clean_environ(), stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        try:
            # The relay is holding the first message: the send is under way.
            assert handler.first.wait(COMMAND_TIMEOUT), "the send never reached the server"
            _assert_plain_200(serve.one_click(local_target(links["reader4@example.org"])))
            _assert_plain_200(serve.one_click_multipart(local_target(links["reader6@example.org"])))
            handler.release.set()
            out, err = send.communicate(timeout=COMMAND_TIMEOUT)
        finally:
            handler.release.set()
            if send.poll() is None:
                send.kill()
                send.communicate()

    assert send.returncode == 0, err
    summary = json.loads(out)
    assert news.received_by() == [
        "reader1@example.org", "reader2@example.org", "reader3@example.org", "reader5@example.org"
    ]  # fmt: skip
    assert summary["sent_now"] == 4
    assert summary["suppressed"] == 2
    assert summary["suppressed_by_reason"] == {"unsubscribed": 2}


# --- 2. DKIM ----------------------------------------------------------------------------------


@dataclass
class DkimKey:
    path: Path
    record: PrintedRecord
    output: str

    def settings(self, selector: str = "s2026", domain: str = "example.org") -> dict[str, str]:
        return {
            "DISPATCH_DKIM_KEY_FILE": str(self.path),
            "DISPATCH_DKIM_SELECTOR": selector,
            "DISPATCH_DKIM_DOMAIN": domain,
        }

    def dnsfunc(self, name: bytes, timeout: float = 5) -> bytes:
        """What DNS would answer for the printed record (and nothing else)."""
        if name.decode().rstrip(".").lower() != self.record.name:
            return b""
        return self.record.value.encode()


def keygen(
    folder: Path, selector: str = "s2026", domain: str = "example.org", algorithm: str = "rsa"
) -> DkimKey:
    """``dispatch dkim keygen --selector S --domain D --out FILE``, as a user runs it."""
    path = folder / f"dkim-{selector}.pem"
    done = dispatch(
        "dkim", "keygen", "--selector", selector, "--domain", domain, "--out", path, "--algorithm", algorithm,
        cwd=folder,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    return DkimKey(path, printed_txt_record(done.stdout), done.stdout)


@pytest.fixture
def dkim_key(news: Newsletter) -> DkimKey:
    return keygen(news.root)


SIGNED = (
    "from", "to", "subject", "date", "message-id", "mime-version", "content-type", "list-id",
    "list-unsubscribe", "list-unsubscribe-post",
)  # fmt: skip


def test_keygen_writes_a_private_key_and_prints_the_record_to_publish(dkim_key: DkimKey) -> None:
    assert dkim_key.path.stat().st_mode & 0o777 == 0o600
    assert dkim_key.record.name == "s2026._domainkey.example.org"
    assert dkim_key.record.value.startswith("v=DKIM1; k=rsa; p=")
    assert all(len(s.encode()) <= 255 for s in dkim_key.record.strings)
    public = serialization.load_der_public_key(base64.b64decode(dkim_key.record.value.split("p=")[1]))
    assert isinstance(public, rsa.RSAPublicKey)
    assert public.key_size == 2048
    for line in ("DISPATCH_DKIM_SELECTOR=s2026", "DISPATCH_DKIM_DOMAIN=example.org"):
        assert line in dkim_key.output


# Names and a subject that Python's email package would fold or encode differently if it
# touched the headers after signing.
AWKWARD_LIST = (
    "email,name\n"
    'leila@example.com,"Leïla Sadri-Ghorbani, Département des études persanes et orientales"\n'
    '"katherine@example.com","Johnson, Katherine"\n'
    "zoe@exämple.org,Zoë Ünicode\n"
    "plain@example.org,\n"
)
AWKWARD_SUBJECT = (
    "Élections : « la ligne étroite » — what Washington and Baghdad say now, in 2026 (part 1 of 3)"
)


@pytest.mark.parametrize("algorithm", ["rsa", "ed25519"])
def test_received_messages_verify_against_the_printed_record(news: Newsletter, algorithm: str) -> None:
    key = keygen(news.root, algorithm=algorithm)
    assert key.record.value.startswith(f"v=DKIM1; k={algorithm}; p=")
    news.subscribers.write_text(AWKWARD_LIST, encoding="utf-8")
    signed = news.env_file("dkim.env", **key.settings())
    done, summary = news.send("--subject", AWKWARD_SUBJECT, env_file=signed)
    assert done.returncode == 0, done.stderr
    assert summary["sent_now"] == 4
    received = news.server.received
    assert len(received) == 4
    for message in received:
        assert dkim.verify(message.data, dnsfunc=key.dnsfunc), message.rcpt_tos
        signature = header_value(message.data, "DKIM-Signature")
        tags = {k.strip(): v for k, _, v in (part.partition("=") for part in signature.split(";"))}
        assert tags["a"].strip() == f"{algorithm}-sha256"
        assert tags["d"].strip() == "example.org"
        assert tags["s"].strip() == "s2026"
        headers = {h.strip().lower() for h in tags["h"].split(":")}
        assert set(SIGNED) <= headers, set(SIGNED) - headers

    # The same record published in a real DNS server, split into strings as keygen printed it.
    with dns_server({key.record.name: [key.record.strings]}) as server:
        resolver = dns.resolver.Resolver(configure=False)
        resolver.nameservers, resolver.port = ["127.0.0.1"], server.port

        def from_dns(name: bytes, timeout: float = 5) -> bytes:
            answer = resolver.resolve(name.decode(), "TXT", search=False)
            return b"".join(b"".join(r.strings) for r in answer)

        assert dkim.verify(received[0].data, dnsfunc=from_dns)


def test_tampering_with_a_signed_header_breaks_the_signature(news: Newsletter, dkim_key: DkimKey) -> None:
    news.send(env_file=news.env_file("dkim.env", **dkim_key.settings()))
    for message in news.server.received:
        data, address = message.data, message.rcpt_tos[0]
        assert dkim.verify(data, dnsfunc=dkim_key.dnsfunc)
        token = token_of(unsubscribe_links(data)[0]).encode()
        changed = token[:10] + _flip(chr(token[10])).encode() + token[11:]
        head, _, body = data.partition(b"\r\n\r\n")
        tampered = {
            "Subject": replace_in_header(data, "Subject", b"thin line", b"thin lime"),
            "List-Unsubscribe": replace_in_header(data, "List-Unsubscribe", token, changed),
            "List-Unsubscribe (another host)": replace_in_header(
                data, "List-Unsubscribe", b"https://example.org/", b"https://evil.example/"
            ),
            "To": replace_in_header(data, "To", address.encode(), b"eve@example.org"),
            "an added List-Unsubscribe": b"List-Unsubscribe: <https://evil.example/u>\r\n" + data,
            "the body": head + b"\r\n\r\n" + body.replace(b"Iraq", b"Iran", 1),
        }
        for what, changed_data in tampered.items():
            assert changed_data != data, what
            assert not dkim.verify(changed_data, dnsfunc=dkim_key.dnsfunc), f"{what} changed, still verifies"


BAD_KEYS = {
    "unreadable": "cannot be read",
    "512-bit": "512-bit RSA key",
    "garbage": "is not a PEM private key",
}


@pytest.mark.parametrize(("kind", "words"), BAD_KEYS.items(), ids=BAD_KEYS.keys())
def test_a_bad_dkim_key_is_a_one_line_error_before_the_first_message(
    news: Newsletter, kind: str, words: str
) -> None:
    key = news.root / "dkim.pem"
    if kind == "unreadable":  # a good key, as keygen writes it, that this user may not read
        key = keygen(news.root).path
        key.chmod(0)
    elif kind == "512-bit":
        key.write_bytes(short_rsa_pem(512))
        key.chmod(0o600)
    else:
        key.write_bytes(b"-----BEGIN PRIVATE KEY-----\nthis is not a key\n-----END PRIVATE KEY-----\n")
        key.chmod(0o600)
    if kind == "unreadable" and os.geteuid() == 0:
        assert shutil.which("setpriv"), "setpriv (util-linux) is needed to test an unreadable file as root"
    env = news.env_file("dkim.env", DISPATCH_DKIM_KEY_FILE=str(key), DISPATCH_DKIM_SELECTOR="s2026",
                        DISPATCH_DKIM_DOMAIN="example.org")  # fmt: skip

    done, summary = news.send(env_file=env, honour_file_modes=True)
    assert done.returncode == 2, done.stderr
    assert summary["exit_code"] == 2
    lines = error_lines(done)
    assert len(lines) == 1, lines
    assert lines[0].startswith("dispatch: error: "), lines
    assert "DISPATCH_DKIM_KEY_FILE" in lines[0]
    assert str(key) in lines[0]
    assert words in lines[0]
    assert news.server.received == []


# --- 3. SpamAssassin ------------------------------------------------------------------------


# .env.example's example values replaced, as a new user does before sending (real environment
# variables beat the settings file): a real send and `check` refuse the examples unchanged.
OWN_VALUES = {
    "DISPATCH_FROM": "Harbour News <news@example.org>",
    "DISPATCH_REPLY_TO": "desk@example.org",
    "DISPATCH_ORGANIZATION": "Harbour Society",
    "DISPATCH_POSTAL_ADDRESS": "5 Harbour Road, 12345 Portsmouth",
    "DISPATCH_LIST_ID": "news.example.org",
    "DISPATCH_UNSUBSCRIBE_URL": "https://news.example.org/unsubscribe/{token}",
    "DISPATCH_UNSUBSCRIBE_SECRET": "harbour-0123456789-abcdefghijklmnopqrstuvwxyz",
}


def _example_folder(root: Path) -> Path:
    """The bundled example, as a new user tries it: .env.example and the example list."""
    root.mkdir(parents=True)
    for source in (EXAMPLE_ENV, EXAMPLE_SUBSCRIBERS, EXAMPLE_ARTICLE):
        shutil.copy(source, root / source.name)
    return root


def _spam_score(data: bytes, home: Path) -> tuple[float, str]:
    assert SPAMASSASSIN is not None
    done = subprocess.run(
        [SPAMASSASSIN, "-L", "-t"], input=data, capture_output=True, timeout=COMMAND_TIMEOUT,
        env={**clean_environ(), "HOME": str(home)}, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    out = done.stdout.decode("utf-8", "replace")
    found = re.search(r"^X-Spam-Status: \w+, score=(-?[\d.]+)", out, re.M)
    assert found, out[:2000]
    return float(found[1]), out.rpartition("Content analysis details:")[2]


@needs_spamassassin
def test_check_spam_scores_the_example_issue_below_2(tmp_path: Path) -> None:
    folder = _example_folder(tmp_path / "example")
    args = (
        "check",
        EXAMPLE_ARTICLE.name,
        "-s",
        EXAMPLE_SUBSCRIBERS.name,
        "--env-file",
        EXAMPLE_ENV.name,
        "--spam",
    )
    env = {**OWN_VALUES, "DISPATCH_STATE_DIR": str(tmp_path / "state"), "HOME": str(tmp_path)}
    done = dispatch(*args, "--json", cwd=folder, env=env)
    report = json_out(done)
    assert done.returncode == 0, done.stdout + done.stderr
    assert report["spam"]["scored"] is True
    assert report["spam"]["score"] < 2.0, report["spam"]["rules"]

    text = dispatch(*args, cwd=folder, env=env)
    assert text.returncode == 0, text.stderr
    assert re.search(r"Spam score:\s+-?\d", text.stdout), text.stdout


@needs_spamassassin
def test_a_received_example_message_scores_below_2(tmp_path: Path, plain_server: Server) -> None:
    folder = _example_folder(tmp_path / "example")
    env = {**OWN_VALUES, **plain_server.env(), "DISPATCH_STATE_DIR": str(tmp_path / "state")}
    done = dispatch(
        "send", EXAMPLE_ARTICLE.name, "-s", EXAMPLE_SUBSCRIBERS.name, "--env-file", EXAMPLE_ENV.name,
        "--yes", "--json", cwd=folder, env=env,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert json_out(done)["sent_now"] == 5
    for message in (plain_server.received[0], plain_server.received[-1]):
        score, rules = _spam_score(message.data, tmp_path)
        assert score < 2.0, rules


# --- 4. dispatch check ------------------------------------------------------------------------


@dataclass(frozen=True)
class Planted:
    """One planted problem: settings to change, an article or extra options, what check says."""

    code: str
    blocking: bool
    words: str  # in the line that reports it
    settings: dict[str, str] = field(default_factory=dict)
    article: str = ""  # a file written by _plant, else the example article
    options: tuple[str, ...] = ()
    dkim: bool = False  # sign with a key from dkim keygen (for the DKIM settings)


PARA = (
    "The committee met again on Tuesday evening to review the plans for the community garden, "
    "and the minutes record a long discussion about water, tools and the rota for the summer. "
)
ARTICLES = {
    "img.md": "---\ntitle: Garden news\n---\n\nSpring is here.\n\n"
    '<img src="https://example.org/tulips.jpg">\n\nMore soon.\n',
    "http.md": "---\ntitle: Garden news\n---\n\nRead [the plan](http://example.org/plan) before Friday.\n",
    "big.md": "---\ntitle: Garden news\n---\n\n" + "\n\n".join(f"Item {i}. {PARA * 3}" for i in range(300)),
}
NO_FOOTER = '{% extends "builtin/email.html" %}{% block footer %}{% endblock %}'

PLANTED = {
    "no postal address": Planted("no-postal-address", True, "DISPATCH_POSTAL_ADDRESS",
                                 {"DISPATCH_POSTAL_ADDRESS": ""}),
    "secret missing": Planted("no-unsubscribe-secret", True, "DISPATCH_UNSUBSCRIBE_SECRET is not set",
                              {"DISPATCH_UNSUBSCRIBE_SECRET": ""}),
    "secret short": Planted("short-unsubscribe-secret", True, "under 32 characters",
                            {"DISPATCH_UNSUBSCRIBE_SECRET": "only-twenty-chars-ab"}),
    "dkim not aligned": Planted("dkim-not-aligned", True, "does not align with the From domain",
                                {"DISPATCH_DKIM_DOMAIN": "mailer.example.net"}, dkim=True),
    "template without footer": Planted("no-unsubscribe-link-html", True, "unsubscribe link",
                                       options=("--template", "no-footer")),
    "free-mail From": Planted("free-mail-from", False, "gmail.com",
                              {"DISPATCH_FROM": "Newsroom <newsroom.example@gmail.com>"}),
    "HTML over 100 KB": Planted("html-clipped", False, "Gmail clips it", article="big.md"),
    "image without alt": Planted("img-no-alt", False, "no alt text", article="img.md"),
    "{email} in the unsubscribe URL": Planted("address-in-unsubscribe-url", False, "{token}",
                                              {"DISPATCH_UNSUBSCRIBE_URL": "https://example.org/u?e={email}"}),
    "http: link": Planted("insecure-link", False, "http://example.org/plan", article="http.md"),
    "150-character subject": Planted("long-subject", False, "150 characters",
                                     options=("--subject", "S" * 150)),
}  # fmt: skip


def _write_articles_and_templates(news: Newsletter) -> None:
    for name, text in ARTICLES.items():
        (news.root / name).write_text(text, encoding="utf-8")
    (news.root / "no-footer").mkdir(exist_ok=True)
    (news.root / "no-footer" / "email.html").write_text(NO_FOOTER, encoding="utf-8")


def _plant(news: Newsletter, case: Planted) -> tuple[Path, Path, tuple[str, ...]]:
    """Write what the case needs; returns (article, settings file, extra options)."""
    _write_articles_and_templates(news)
    settings = dict(case.settings)
    if case.dkim:
        settings = {**keygen(news.root).settings(), **settings}
    article = news.root / case.article if case.article else news.article
    return article, news.env_file("planted.env", **settings), case.options


@pytest.mark.parametrize("case", PLANTED.values(), ids=PLANTED.keys())
def test_check_reports_each_planted_problem_with_a_line_and_the_exit_code(
    news: Newsletter, case: Planted
) -> None:
    article, env, options = _plant(news, case)
    expected_exit = 2 if case.blocking else 0

    text = news.run("check", article, "-s", news.subscribers, *options, env_file=env)
    assert text.returncode == expected_exit, text.stdout + text.stderr
    label = "Blocking:" if case.blocking else "Warning:"
    reported = [line for line in text.stdout.splitlines() if line.strip().startswith(label)]
    assert [line for line in reported if case.words in line], text.stdout
    verdict = text.stdout.strip().splitlines()[-1]
    assert ("refuse to start" in verdict) == case.blocking, verdict

    done = news.run("check", article, "-s", news.subscribers, *options, "--json", env_file=env)
    report = json_out(done)
    assert done.returncode == expected_exit
    assert report["exit_code"] == expected_exit
    blocking = [p["code"] for p in report["blocking"]]
    warnings = [p["code"] for p in report["warnings"]]
    assert case.code in (blocking if case.blocking else warnings), report
    assert report["counts"] == {"blocking": len(blocking), "warnings": len(warnings)}
    if not case.blocking:
        assert blocking == []  # exit 0 because only warnings were found


def test_check_of_a_clean_issue_finds_nothing(news: Newsletter, dkim_key: DkimKey) -> None:
    env = news.env_file("dkim.env", **dkim_key.settings())
    done = news.run("check", news.article, "-s", news.subscribers, "--json", env_file=env)
    report = json_out(done)
    assert done.returncode == 0
    assert report["counts"] == {"blocking": 0, "warnings": 0}, report
    assert report["list_id"] == NEWS


SETTINGS_REFUSED = {
    "no unsubscribe at all": (
        {"DISPATCH_UNSUBSCRIBE_URL": "", "DISPATCH_UNSUBSCRIBE_MAILTO": ""},
        "DISPATCH_UNSUBSCRIBE_URL",
    ),
    "http unsubscribe URL": (
        {"DISPATCH_UNSUBSCRIBE_URL": "http://example.org/mail/unsubscribe/{token}"},
        "must start with https://",
    ),
}


@pytest.mark.parametrize(("settings", "words"), SETTINGS_REFUSED.values(), ids=SETTINGS_REFUSED.keys())
def test_check_refuses_settings_that_can_never_comply(
    news: Newsletter, settings: dict[str, str], words: str
) -> None:
    """These are refused when the settings are read: one error line, exit 2 (and in --json)."""
    env = news.env_file("refused.env", **settings)
    done = news.run("check", news.article, "-s", news.subscribers, env_file=env)
    assert done.returncode == 2
    lines = error_lines(done)
    assert len(lines) == 1, lines
    assert lines[0].startswith("dispatch: error: ")
    assert words in lines[0]
    done = news.run("check", news.article, "-s", news.subscribers, "--json", env_file=env)
    assert done.returncode == 2
    report = json_out(done)
    assert report["exit_code"] == 2
    assert words in report["error"]


BLOCKED_SENDS = {
    "no postal address": ({"DISPATCH_POSTAL_ADDRESS": ""}, ()),
    "secret missing": ({"DISPATCH_UNSUBSCRIBE_SECRET": ""}, ()),
    "secret short": ({"DISPATCH_UNSUBSCRIBE_SECRET": "only-twenty-chars-ab"}, ()),
    "template without footer": ({}, ("--template", "no-footer")),
    "http unsubscribe URL": ({"DISPATCH_UNSUBSCRIBE_URL": "http://example.org/u/{token}"}, ()),
    "test send, no postal address": ({"DISPATCH_POSTAL_ADDRESS": ""}, ("--to", ANN)),
}


@pytest.mark.parametrize(("settings", "options"), BLOCKED_SENDS.values(), ids=BLOCKED_SENDS.keys())
def test_a_send_with_a_blocking_problem_sends_nothing(
    news: Newsletter, settings: dict[str, str], options: tuple[str, ...]
) -> None:
    _write_articles_and_templates(news)
    done, summary = news.send(*options, env_file=news.env_file("blocked.env", **settings))
    assert done.returncode == 2, done.stderr
    assert summary["exit_code"] == 2
    assert len(error_lines(done)) == 1, done.stderr
    assert news.server.received == []


def test_a_send_with_warnings_only_shows_them_and_sends(news: Newsletter) -> None:
    env = news.env_file("free.env", DISPATCH_FROM="Newsroom <newsroom.example@gmail.com>")
    done, summary = news.send(env_file=env)
    assert done.returncode == 0, done.stderr
    assert [w for w in summary["warnings"] if "gmail.com" in w], summary["warnings"]
    assert re.search(r"Warning:.*gmail\.com", done.stderr)
    assert sorted(news.received_by()) == sorted(READERS)


def test_a_send_with_a_dkim_domain_not_aligned_sends_nothing(news: Newsletter, dkim_key: DkimKey) -> None:
    env = news.env_file("dkim.env", **dkim_key.settings(domain="mailer.example.net"))
    done, summary = news.send(env_file=env)
    assert done.returncode == 2, done.stderr
    assert "align" in summary["error"]
    assert news.server.received == []


# check --dns against a real DNS server on 127.0.0.1


SPF = "v=spf1 ip4:192.0.2.10 -all"
DMARC = "v=DMARC1; p=reject; rua=mailto:dmarc-reports@example.org"
DNS_CODES = {"no-spf", "multiple-spf", "no-dmarc", "dmarc-invalid", "no-dkim-record", "dkim-revoked",
             "dkim-mismatch", "dns-error"}  # fmt: skip


@dataclass
class DnsRun:
    exit: int
    report: dict[str, Any]
    text: str
    asked: list[str]

    @property
    def codes(self) -> dict[str, str]:
        """code -> level of every DNS problem found."""
        found = {p["code"]: "blocking" for p in self.report["blocking"]}
        found |= {p["code"]: "warning" for p in self.report["warnings"]}
        return {code: level for code, level in found.items() if code in DNS_CODES}

    def message(self, code: str) -> str:
        return next(
            p["message"] for p in self.report["blocking"] + self.report["warnings"] if p["code"] == code
        )


@pytest.fixture
def check_dns(news: Newsletter, dkim_key: DkimKey) -> Callable[[dict[str, list[Any]]], DnsRun]:
    def run(records: dict[str, list[Any]]) -> DnsRun:
        with dns_server(records) as server:
            env = news.env_file("dns.env", **dkim_key.settings(), DISPATCH_DNS_SERVER=server.address)
            args = ("check", news.article, "-s", news.subscribers, "--dns")
            done = news.run(*args, "--json", env_file=env)
            text = news.run(*args, env_file=env)
            asked = [name for name, _ in server.resolver.asked]
        assert text.returncode == done.returncode, text.stdout + text.stderr
        return DnsRun(done.returncode, json_out(done), text.stdout, asked)

    return run


def test_check_dns_with_good_records(check_dns: Callable[..., DnsRun], dkim_key: DkimKey) -> None:
    result = check_dns({
        "example.org": [SPF],
        "_dmarc.example.org": [DMARC],
        dkim_key.record.name: [dkim_key.record.strings],
    })  # fmt: skip
    assert result.exit == 0, result.text
    assert result.codes == {}
    dns_report = result.report["dns"]
    assert dns_report["spf"] == SPF
    assert dns_report["dmarc_policy"] == "reject"
    assert dns_report["dkim_matches"] is True
    assert {"example.org", "_dmarc.example.org", "s2026._domainkey.example.org"} <= set(result.asked)
    assert re.search(
        r"DKIM:\s+s2026\._domainkey\.example\.org: published \(matches the key file\)", result.text
    )
    assert "Nothing blocks a send" in result.text


def test_check_dns_with_missing_spf_and_dmarc_warns_what_to_publish(
    check_dns: Callable[..., DnsRun], dkim_key: DkimKey
) -> None:
    result = check_dns({dkim_key.record.name: [dkim_key.record.strings]})
    assert result.exit == 0, result.text
    assert result.codes == {"no-spf": "warning", "no-dmarc": "warning"}
    assert "v=spf1" in result.message("no-spf")
    assert "_dmarc.example.org" in result.message("no-dmarc")
    assert "v=DMARC1" in result.message("no-dmarc")
    assert "SPF:   none published" in result.text


def test_check_dns_with_no_records_at_all(check_dns: Callable[..., DnsRun]) -> None:
    result = check_dns({})
    assert set(result.codes) == {"no-spf", "no-dmarc", "no-dkim-record"}
    assert result.codes["no-spf"] == result.codes["no-dmarc"] == "warning"
    assert result.exit == (2 if "blocking" in result.codes.values() else 0)
    assert "s2026._domainkey.example.org: none published" in result.text


def test_check_dns_with_a_published_key_that_is_not_the_key_file_blocks(
    check_dns: Callable[..., DnsRun], news: Newsletter
) -> None:
    other = keygen(news.root, selector="old")  # another key, published under our selector
    result = check_dns({
        "example.org": [SPF],
        "_dmarc.example.org": [DMARC],
        "s2026._domainkey.example.org": [other.record.strings],
    })  # fmt: skip
    assert result.exit == 2, result.text
    assert result.codes == {"dkim-mismatch": "blocking"}
    assert result.report["dns"]["dkim_matches"] is False
    assert "NOT the key file's key" in result.text
    assert "blocking problem(s) in DNS: a send does not look these up" in result.text


def test_check_dns_with_mismatched_spf_and_dmarc_records(
    check_dns: Callable[..., DnsRun], dkim_key: DkimKey
) -> None:
    result = check_dns({
        "example.org": [SPF, "v=spf1 include:_spf.example.net ~all", "google-site-verification=abc"],
        "_dmarc.example.org": ["v=DMARC1; p=bogus"],
        dkim_key.record.name: [dkim_key.record.strings],
    })  # fmt: skip
    assert result.exit == 0, result.text
    assert result.codes == {"multiple-spf": "warning", "dmarc-invalid": "warning"}
    assert "merge them into one" in result.message("multiple-spf")


def test_check_dns_reports_a_monitoring_only_dmarc_policy(
    check_dns: Callable[..., DnsRun], dkim_key: DkimKey
) -> None:
    result = check_dns({
        "example.org": [SPF],
        "_dmarc.example.org": ["v=DMARC1; p=none"],
        dkim_key.record.name: [dkim_key.record.strings],
    })  # fmt: skip
    assert result.exit == 0
    assert result.report["dns"]["dmarc_policy"] == "none"
    assert "p=none (monitoring only)" in result.text


# --- 5. dispatch suppress ---------------------------------------------------------------------


MAILCHIMP_UNSUBSCRIBED = (
    '"Email Address","First Name","Last Name","MEMBER_RATING","OPTIN_TIME","OPTIN_IP","CONFIRM_TIME",'
    '"CONFIRM_IP","LATITUDE","LONGITUDE","GMTOFF","DSTOFF","TIMEZONE","CC","REGION","UNSUB_TIME",'
    '"UNSUB_CAMPAIGN_TITLE","UNSUB_CAMPAIGN_ID","LEID","EUID","NOTES","UNSUB_REASON","UNSUB_REASON_OTHER"\r\n'
    '"ann@example.org","Ann","Reader",2,"2023-01-02 10:00:00",,"2023-01-02 10:01:00","203.0.113.5",,,,,,,,'
    '"2024-03-04 05:06:07","March issue","a1b2c3",123,"x1",,"I no longer want to receive these emails",\r\n'
    '"Bob@Example.COM","Bob","Reader",1,"2023-01-02 10:00:00",,"2023-01-02 10:01:00","203.0.113.6",,,,,,,,'
    '"2024-03-05 05:06:07","March issue","a1b2c3",124,"x2",,"Other","too many emails"\r\n'
)
MAILCHIMP_CLEANED = (
    "Email Address,First Name,Last Name,MEMBER_RATING,OPTIN_TIME,CLEAN_TIME,CLEAN_CAMPAIGN_TITLE,"
    "CLEAN_CAMPAIGN_ID,LEID,EUID,NOTES\r\n"
    "cy@example.org,Cy,Reader,2,2021-03-01 10:00:00,2024-05-06 07:08:09,Spring,abc,1,x,\r\n"
)
LISTMONK = (
    "uuid,email,name,attributes,status,created_at,updated_at\n"
    '5e3c3f0a-1b2c-4d5e-8f90-a1b2c3d4e5f6,cy@example.org,Cy Reader,"{""city"": ""Rome""}",blocklisted,'
    "2024-01-01 10:00:00.000+00,2024-02-01 10:00:00.000+00\n"
    '6f4d4a1b-2c3d-4e5f-9a01-b2c3d4e5f6a7,dee@example.net,Dee Reader,"{}",enabled,'
    "2024-01-01 10:00:00.000+00,2024-02-01 10:00:00.000+00\n"
)


def _send_and_see(
    news: Newsletter, campaign: str, env: Path | None = None
) -> tuple[list[str], dict[str, Any]]:
    before = len(news.server.received)
    done, summary = news.send("--campaign", campaign, env_file=env)
    assert done.returncode == 0, done.stderr
    return news.received_by()[before:], summary


def test_import_a_mailchimp_unsubscribed_export_for_a_list(news: Newsletter) -> None:
    export = news.root / "unsubscribed_members_export_4f2a.csv"
    export.write_text(MAILCHIMP_UNSUBSCRIBED, encoding="utf-8")
    done = news.run("suppress", "import", export, "--list", NEWS, "--json")
    assert done.returncode == 0, done.stderr
    report = json_out(done)
    assert {k: report[k] for k in ("added", "existing", "skipped")} == {
        "added": 2,
        "existing": 0,
        "skipped": [],
    }
    assert report["state"]["path"] == str(news.state)
    entries = {e["email"]: e for e in news.suppressed()}
    assert set(entries) == {ANN, BOB}
    assert entries[ANN]["reason"] == "unsubscribed"
    assert entries[ANN]["list"] == NEWS
    assert entries[ANN]["time"] == "2024-03-04T05:06:07Z"  # UNSUB_TIME

    got, summary = _send_and_see(news, "issue-1")
    assert sorted(got) == [CY, DEE]
    assert summary["suppressed_by_reason"] == {"unsubscribed": 2}
    got, summary = _send_and_see(news, "other-1", news.env_file("other.env", DISPATCH_LIST_ID=OTHER))
    assert sorted(got) == sorted(READERS)


def test_the_readme_mailchimp_import_works_without_a_list_option(news: Newsletter) -> None:
    """README: ``dispatch suppress import mailchimp-unsubscribed.csv  # addresses never to mail``;
    issue 7: "import takes a CSV with an address column (...; reason and list optional)". The
    settings name the newsletter's list (DISPATCH_LIST_ID), so the import needs no --list."""
    export = news.root / "mailchimp-unsubscribed.csv"
    export.write_text(MAILCHIMP_UNSUBSCRIBED, encoding="utf-8")
    done = news.run("suppress", "import", export)
    assert done.returncode == 0, done.stderr
    got, summary = _send_and_see(news, "issue-1")
    assert sorted(got) == [CY, DEE]
    assert summary["suppressed"] == 2


def test_import_a_mailchimp_cleaned_export_suppresses_every_list(news: Newsletter) -> None:
    export = news.root / "cleaned_members_export_4f2a.csv"
    export.write_text(MAILCHIMP_CLEANED, encoding="utf-8")
    done = news.run("suppress", "import", export, "--json")
    assert done.returncode == 0, done.stderr
    assert json_out(done)["added"] == 1
    for campaign, env in (("issue-1", None), ("other-1", news.env_file("other.env", DISPATCH_LIST_ID=OTHER))):
        got, summary = _send_and_see(news, campaign, env)
        assert CY not in got
        assert summary["suppressed_by_reason"] == {"bounced": 1}


def test_import_a_listmonk_export(news: Newsletter) -> None:
    export = news.root / "subscribers.listmonk.csv"
    export.write_text(LISTMONK, encoding="utf-8")
    done = news.run("suppress", "import", export, "--json")
    assert done.returncode == 0, done.stderr
    report = json_out(done)
    assert report["added"] == 1
    assert [s["line"] for s in report["skipped"]] == [3]  # 'enabled' is not an opt-out
    assert [(e["email"], e["list"]) for e in news.suppressed()] == [(CY, "*")]

    got, summary = _send_and_see(news, "issue-1")
    assert sorted(got) == [ANN, BOB, DEE]
    assert summary["suppressed"] == 1


def test_export_then_import_into_a_fresh_state_folder_round_trips(news: Newsletter) -> None:
    assert news.suppressed() == []  # nothing yet: an empty list, not an error
    export = news.root / "mc.csv"
    export.write_text(MAILCHIMP_UNSUBSCRIBED, encoding="utf-8")
    steps = [
        ("suppress", "import", export, "--list", NEWS),
        ("suppress", "add", "bounce@example.org", "--reason", "bounced"),
        ("suppress", "add", "angry@example.com", "--reason", "complained"),
        ("suppress", "add", "--", "=sum.a1@example.org", "-dash@example.org", "+plus@example.org"),
        ("suppress", "add", CY, "--reason", "unsubscribed", "--list", OTHER),
    ]
    for step in steps:
        done = news.run(*step)
        assert done.returncode == 0, (step, done.stderr)
    original = news.suppressed()
    assert len(original) == 8
    assert {e["reason"] for e in original} == {"unsubscribed", "bounced", "complained", "manual"}
    for entry in original:
        assert set(entry) == {"email", "reason", "list", "time", "source"}

    csv_file = news.root / "moved" / "suppressions.csv"
    csv_file.parent.mkdir()
    done = news.run("suppress", "export", "--out", csv_file)
    assert done.returncode == 0, done.stderr
    done = news.run("suppress", "export", "--json")
    assert json.loads(done.stdout) == original

    fresh = news.env_file("web-host.env", DISPATCH_STATE_DIR=str(news.root / "web-host-state"))
    assert news.suppressed(fresh) == []
    done = news.run("suppress", "import", csv_file, "--json", env_file=fresh)
    assert done.returncode == 0, done.stderr
    report = json_out(done)
    assert (report["added"], report["existing"], report["skipped"]) == (8, 0, [])
    assert report["state"]["found_by"].endswith("web-host.env")  # the web host's own state
    assert news.suppressed(fresh) == original

    done = news.run("suppress", "import", csv_file, "--json", env_file=fresh)  # again: no change
    assert {k: v for k, v in json_out(done).items() if k != "state"} == {
        "added": 0,
        "existing": 8,
        "skipped": [],
    }
    assert news.suppressed(fresh) == original


def test_a_web_host_that_is_not_the_sending_host_syncs_by_export_and_import(news: Newsletter) -> None:
    """README/issue: serve runs on a web host with its own state folder; the sending host
    imports what it exported before each send."""
    links = news.preview_links()
    web = news.env_file("web-host.env", DISPATCH_STATE_DIR=str(news.root / "web-host-state"))
    with serving(web, news.root) as serve:  # a state folder that does not exist yet
        assert serve.request("GET", "/healthz").status == 200
        _assert_plain_200(serve.one_click(local_target(links[BOB])))
    moved = news.root / "from-web-host.csv"
    done = news.run("suppress", "export", "--out", moved, env_file=web)
    assert done.returncode == 0, done.stderr
    done = news.run("suppress", "import", moved, "--json")  # on the sending host
    assert done.returncode == 0, done.stderr
    assert json_out(done)["added"] == 1
    assert news.suppressed() == news.suppressed(web)
    assert [(e["email"], e["reason"], e["list"], e["source"]) for e in news.suppressed()] == [
        (BOB, "unsubscribed", NEWS, "serve")
    ]

    got, summary = _send_and_see(news, "issue-1")
    assert sorted(got) == [ANN, CY, DEE]
    assert summary["suppressed_by_reason"] == {"unsubscribed": 1}


def test_a_hard_bounce_suppresses_the_address_on_every_list(
    tmp_path: Path, smtp_server: Callable[..., Server]
) -> None:
    server = smtp_server(faults=FaultPlan(reject={ANN: "550 5.1.1 no such user here"}))
    news = make_newsletter(tmp_path / "news", server)
    done, summary = news.send()
    assert done.returncode == 1  # a recipient failed
    assert [f["email"] for f in summary["failures"]] == [ANN]
    assert [(e["email"], e["reason"], e["list"]) for e in news.suppressed()] == [(ANN, "bounced", "*")]
    server.handler.faults.reject.clear()
    got, summary = _send_and_see(news, "other-1", news.env_file("other.env", DISPATCH_LIST_ID=OTHER))
    assert sorted(got) == [BOB, CY, DEE]
    assert summary["suppressed_by_reason"] == {"bounced": 1}


def test_suppress_remove_lets_the_address_be_mailed_again(news: Newsletter) -> None:
    done = news.run("suppress", "add", ANN)
    assert done.returncode == 0, done.stderr
    assert [(e["email"], e["reason"], e["list"]) for e in news.suppressed()] == [(ANN, "manual", "*")]

    before = len(news.server.received)
    done, summary = news.send()
    assert done.returncode == 0, done.stderr
    assert sorted(news.received_by()[before:]) == [BOB, CY, DEE]
    assert summary["suppressed_by_reason"] == {"manual": 1}

    done = news.run("suppress", "remove", ANN)
    assert done.returncode == 0, done.stderr
    assert news.suppressed() == []

    before = len(news.server.received)
    done, summary = news.send()  # the same command again: the rest of the campaign
    assert done.returncode == 0, done.stderr
    assert news.received_by()[before:] == [ANN]
    assert summary["suppressed"] == 0
    assert summary["already_sent"] == 3
