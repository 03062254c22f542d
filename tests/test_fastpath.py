"""The fast message path against a straightforward build.

Each message is assembled from chunks encoded once per issue, with only the recipient's
values encoded in between (dispatch.compose.message). Here every such message is compared, parsed,
with the same recipient's message built the plain way: the issue's parts joined into text
(dispatch.compose.render.RenderedIssue.personalise) and given to ``email.message.EmailMessage``.
Headers, structure and both decoded parts must agree, and no line may pass 998 octets.
"""

from __future__ import annotations

import quopri
import random
from collections.abc import Callable
from email import message_from_bytes, policy
from email.headerregistry import Address
from email.message import EmailMessage
from pathlib import Path

import pytest

from dispatch.compose.dkimkeys import generate_key
from dispatch.compose.issue import Issue, plan_issue, recipients
from dispatch.compose.message import WireMessage, _qp
from dispatch.send.delivery import SendOptions, run_send
from dispatch.settings import Settings
from dispatch.state.journal import Journal
from tests.conftest import EXAMPLE_ARTICLE
from tests.smtp_servers import Server

WriteFile = Callable[..., Path]

NAMES = [
    "Ann Example",
    "Zoë Łukasiewicz-Ørsted",
    "山田 太郎",
    "محمد العربي",
    'Doe, John "JD"',
    "=?utf-8?q?not-an-encoded-word?=",
    "Equals = sign, trailing space ",
    ".dot at the start",
    ".",
    "a" * 73 + "." * 80,
    "=" * 30 + "." * 50,
    "x" * 2000,
    "Émile " * 300,
    "",
]
MARKDOWN = """---
title: Grüße — a “quoted” title that is long enough to be folded in the Subject header
---

Dear {{ reader }}, this paragraph has an equals sign = and soft line breaks that must not
appear, *emphasis*, **bold**, and a link to https://example.org/a/very/long/path/that/goes/on/and/on?x=1&y=2.

.A line that starts with a dot.

.
xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx..........................................................................................

- one
- two

| a | b |
|---|---|
| 1 | 2 |
"""
CJK = "---\ntitle: 日本語のニュース\n---\n\n" + ("日本語の文章です。" * 400 + "\n\n") * 3


def _cell(value: str) -> str:
    return '"' + value.replace('"', '""') + '"'


def _list(write_file: WriteFile) -> Path:
    rows = "".join(
        f"reader{i}@example.org,{_cell(name)},{_cell('Köln = ' + name[:40])}\n"
        for i, name in enumerate(NAMES)
    )
    return write_file("list.csv", "email,name,city\n" + rows)


def _reference(issue: Issue, email: str, name: str, values: dict[str, str], message_id: str) -> EmailMessage:
    """The same recipient's message, built the plain way."""
    html, text = issue.rendered.personalise(values)
    settings = issue.settings
    msg = EmailMessage(policy=policy.SMTP)
    assert settings.sender is not None
    msg["From"] = settings.sender
    if settings.reply_to is not None:
        msg["Reply-To"] = settings.reply_to
    msg["To"] = Address(display_name=" ".join(name.split())[:200].rstrip(), addr_spec=email)
    msg["Subject"] = issue.subject
    msg["Message-ID"] = message_id
    msg.set_content(text)
    msg.add_alternative(html, subtype="html")
    return msg


def _parts(msg: EmailMessage) -> dict[str, str]:
    """Each text part, decoded; EmailMessage adds a final newline a part may not have."""
    return {
        part.get_content_type(): str(part.get_content()).replace("\r\n", "\n").removesuffix("\n")  # type: ignore[attr-defined]
        for part in msg.walk()
        if part.get_content_maintype() == "text"
    }


def _squeezed(text: str) -> str:
    # Python's parser puts a space between adjacent encoded-words of a display name, which
    # RFC 2047 says to ignore: compare without spaces.
    return "".join(text.split())


@pytest.mark.parametrize("source", ["seed", "markdown", "cjk"])
def test_the_fast_path_gives_the_message_a_plain_build_gives(
    source: str, write_file: WriteFile, env: dict[str, str]
) -> None:
    article = {
        "seed": EXAMPLE_ARTICLE,
        "markdown": write_file("issue.md", MARKDOWN),
        "cjk": write_file("cjk.md", CJK),
    }[source]
    issue = plan_issue(article, _list(write_file), Settings.from_mapping(env))
    checked = 0
    for sub in recipients(issue):
        raw, message_id = issue.message(sub)
        assert max(len(line) for line in raw.split(b"\r\n")) <= 998
        assert not [line for line in raw.split(b"\r\n") if line.startswith(b".")], "would need dot-stuffing"
        assert isinstance(issue.factory.for_wire(raw), WireMessage)  # sent without a scan
        ours = message_from_bytes(raw, policy=policy.default)
        plain = _reference(issue, sub.email, sub.name, issue.values(sub), message_id)
        theirs = message_from_bytes(plain.as_bytes(), policy=policy.default)
        for header in ("From", "Reply-To", "Subject", "Message-ID"):
            assert str(ours[header]).strip() == str(theirs[header]).strip(), header
        ours_to, theirs_to = ours["To"].addresses[0], theirs["To"].addresses[0]
        assert ours_to.addr_spec == theirs_to.addr_spec == sub.email
        shown = " ".join(sub.name.split())[:200].rstrip()
        assert _squeezed(ours_to.display_name) == _squeezed(shown)
        if "=?" not in shown:  # the stdlib decodes a look-alike encoded-word; dispatch keeps it literal
            assert _squeezed(theirs_to.display_name) == _squeezed(shown)
        assert ours.get_content_type() == "multipart/alternative"
        assert [p.get_content_type() for p in ours.iter_parts()] == ["text/plain", "text/html"]
        assert _parts(ours) == _parts(theirs)
        assert _parts(ours)["text/html"] == issue.bodies(sub)[0].replace("\r\n", "\n").removesuffix("\n")
        checked += 1
    assert checked == len(NAMES)


def test_every_encoded_body_line_is_at_most_76_octets(write_file: WriteFile, env: dict[str, str]) -> None:
    issue = plan_issue(write_file("issue.md", MARKDOWN), _list(write_file), Settings.from_mapping(env))
    for sub in recipients(issue):
        raw, _ = issue.message(sub)
        body = raw.split(b"\r\n\r\n", 1)[1]
        assert max(len(line) for line in body.split(b"\r\n")) <= 76


def _pieces_of_text() -> list[str]:
    """Texts built to put a dot at the start of an encoded line: after hard breaks, right where
    quoted-printable breaks a long line, next to escapes that may not be split."""
    rng = random.Random(8)
    made = [".", "..", ".\n.", "x\n.y", "." * 200, "a" * 75 + ".b", "é" * 25 + "." * 40]
    alphabet = ["a", ".", " ", "=", "é", "\n", "中", "\t"]
    made += ["".join(rng.choice(alphabet) for _ in range(rng.randint(1, 400))) for _ in range(300)]
    return made


def test_encoded_values_never_start_a_line_with_a_dot() -> None:
    for text in _pieces_of_text():
        encoded = _qp(text)
        lines = encoded.split(b"\r\n")
        assert not [line for line in lines if line.startswith(b".")], text
        assert max(len(line) for line in lines) <= 76, text
        expected = text.replace("\r\n", "\n").replace("\n", "\r\n").encode()
        assert quopri.decodestring(encoded) == expected, text


def test_a_signed_message_is_vouched_for_too(
    tmp_path: Path, write_file: WriteFile, env: dict[str, str]
) -> None:
    """dispatch writes the DKIM-Signature field itself, folded like the recipient's headers
    (each continuation line starts with a space): a signed message needs no scan either."""
    key = tmp_path / "dkim.pem"
    generate_key(key, selector="s1", domain="example.org")
    settings = {**env, "DISPATCH_DKIM_KEY_FILE": str(key), "DISPATCH_DKIM_SELECTOR": "s1"}
    settings["DISPATCH_DKIM_DOMAIN"] = "example.org"
    issue = plan_issue(write_file("issue.md", MARKDOWN), _list(write_file), Settings.from_mapping(settings))
    raw, _ = issue.message(next(iter(recipients(issue))))
    assert raw.startswith(b"DKIM-Signature:")
    assert not [line for line in raw.split(b"\r\n") if line.startswith(b".")]
    wire = issue.factory.for_wire(raw)
    assert isinstance(wire, WireMessage)
    assert wire == raw


def test_lines_of_dots_arrive_whole_through_a_real_server(
    smtp_server: Callable[..., Server], write_file: WriteFile, env: dict[str, str], tmp_path: Path
) -> None:
    """Sent without the transport's search for lines to stuff: a line "." that slipped through
    would end the DATA early at the server. Every message must arrive with both parts intact."""
    server = smtp_server()
    settings = Settings.from_mapping({**env, **server.env()})
    issue = plan_issue(write_file("issue.md", MARKDOWN), _list(write_file), settings)
    summary = run_send(issue, Journal(tmp_path / "state"), SendOptions())
    assert summary.exit_code == 0
    got = {item.rcpt_tos[0]: item.message for item in server.received}
    assert len(got) == len(NAMES)
    for sub in recipients(issue):
        built = message_from_bytes(issue.message(sub)[0], policy=policy.default)
        assert _parts(got[sub.email]) == _parts(built), sub.name  # type: ignore[arg-type]
