"""The built messages (email-standards.md sections A, B and F), checked byte by byte.

Messages are built the way ``dispatch send`` builds them: ``plan_issue`` on a real article
file and a real CSV list with settings from the ``env`` fixture, then ``issue.message()`` per
subscriber. Each property is checked on every message, for the bundled plain-text article and
a Markdown article, with the built-in templates and with a user template folder that
personalises by name and CSV column.
"""

from __future__ import annotations

import html as html_lib
import re
from collections.abc import Callable
from dataclasses import dataclass
from email import message_from_bytes, policy
from email.header import decode_header, make_header
from email.message import EmailMessage
from email.utils import getaddresses, parsedate_to_datetime
from functools import cached_property
from pathlib import Path
from urllib.parse import quote

import pytest

from dispatch.compose.issue import Issue, plan_issue
from dispatch.lists.subscribers import Subscriber
from dispatch.settings import Settings
from dispatch.unsubscribe.tokens import read_token
from tests.conftest import BASE_ENV

WriteFile = Callable[..., Path]

UNSUBSCRIBE_URL = "https://example.org/unsubscribe?email={email}"
LIST_ID = "example-foundation.example.org"  # the default: the organisation on the From domain
POSTAL_ADDRESS = "1 Example Street, Springfield"
EXPECTED_HEADERS = {
    "From",
    "Reply-To",
    "Subject",
    "To",
    "Date",
    "Message-ID",
    "List-Id",
    "List-Unsubscribe",
    "List-Unsubscribe-Post",
    "MIME-Version",
    "Content-Type",
}
SINGLE_HEADERS = ("From", "To", "Subject", "Date", "Message-ID", "MIME-Version")
MESSAGE_ID = re.compile(r"^<[^<>@\s]+@example\.org>$")
ENCODED_WORD = re.compile(rb"=\?[^?\s]+\?[bBqQ]\?[^?\s]*\?=")
LONG_PARAGRAPH = " ".join(f"word{i:04d}" for i in range(560))  # one line, > 5000 characters
UNBROKEN = "https://example.org/" + "x" * 5000  # no space anywhere to break at

# (email, name, city): written to a real CSV with csv-style quoting.
PEOPLE = [
    ("ann@example.org", "Ann Example", "Paris"),
    ("zoe@example.org", "Zoë Łukasiewicz-Ørsted Ñandú Пётр Чайковский", "Kraków"),
    ("john@example.com", 'Doe, John "JD"', "Oslo"),
    ("tom@example.org", "<script>Tom & Jerry</script>", "{{ 7*7 }}"),
    ("eve@example.org", "Eve\r\nBcc: victim", "Lyon"),
    ("uni@example.org", "U\u2028Bcc: x@example.com", "Rome"),
    ("user@bücher.example", "Büch", "Bonn"),
    ("nobody@example.org", "", ""),
]
WIRE_EMAILS = [p[0] for p in PEOPLE[:-2]] + ["user@xn--bcher-kva.example", "nobody@example.org"]

MARKDOWN = f"""---
title: Grüße aus Köln
subject: Ünïcödé-Betreff — “Grüße” aus Köln, Zürich und Łódź, ein langer Betreff zum Falten
preheader: Ein kurzer Vorspann
author: Zoë Example
---
## Ein Überblick

A first paragraph with a [link](https://example.org/story?a=1&b=2) and *emphasis*.

{LONG_PARAGRAPH}

> A quotation, “typographic” — with dashes.

- one
- two
"""

CUSTOM_HTML = """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>{{ subject }}</title>
<style>
.greeting { color: #123456; font-size: 18px; }
.footer { font-size: 12px; color: #666666; }
@media only screen and (max-width: 620px) { .greeting { font-size: 16px !important; } }
</style>
</head>
<body>
<p class="greeting">Hello {{ subscriber.name | otherwise('friend') }} from {{ subscriber.city }}</p>
{{ article.body_html | safe }}
<p class="footer"><a href="{{ unsubscribe_url }}">Unsubscribe</a> {{ postal_address }}</p>
</body>
</html>
"""

CUSTOM_TEXT = """Hello {{ subscriber.name | otherwise('friend') }} from {{ subscriber.city }}

{{ article.body_text }}

Unsubscribe: {{ unsubscribe_url }}
{{ postal_address }}
"""


@dataclass(frozen=True)
class Built:
    """One recipient's message: wire bytes and their parse."""

    sub: Subscriber
    raw: bytes
    mid: str

    @cached_property
    def msg(self) -> EmailMessage:
        return message_from_bytes(self.raw, policy=policy.default)  # type: ignore[return-value]

    @property
    def head(self) -> bytes:
        return self.raw.split(b"\r\n\r\n", 1)[0]

    @cached_property
    def text(self) -> str:
        return part(self.msg, "plain")

    @cached_property
    def html(self) -> str:
        return part(self.msg, "html")


def part(msg: EmailMessage, subtype: str) -> str:
    body = msg.get_body((subtype,))
    assert body is not None, f"no text/{subtype} part"
    # The wire form has CRLF line ends; compare content with LF, as a reader sees it.
    return str(body.get_content()).replace("\r\n", "\n")  # type: ignore[attr-defined]


def raw_headers(head: bytes) -> list[tuple[str, bytes]]:
    """(name, unfolded raw value) for each header line of a CRLF header block."""
    fields: list[tuple[str, bytes]] = []
    for line in head.split(b"\r\n"):
        if line[:1] in (b" ", b"\t"):
            name, value = fields[-1]
            fields[-1] = (name, (value + line).strip())  # folding whitespace at either end is not value
        else:
            name, _, value = line.partition(b":")
            fields.append((name.decode("ascii"), value.strip()))
    return fields


def raw_header(built: Built, name: str) -> bytes:
    (value,) = [v for n, v in raw_headers(built.head) if n.lower() == name.lower()]
    return value


def to_mailbox(built: Built) -> tuple[str, str]:
    """The To header decoded per RFC 2047 (adjacent encoded-words joined) and parsed."""
    raw = raw_header(built, "To")
    decoded = str(make_header(decode_header(raw.decode("ascii"))))
    found = getaddresses([decoded])
    if len(found) != 1:  # a decoded display name holding specials: let the email package parse it
        address = message_from_bytes(b"To: " + raw + b"\r\n\r\n", policy=policy.default)["To"].addresses[0]
        return address.display_name, address.addr_spec
    (mailbox,) = found
    return mailbox


def csv_cell(value: str) -> str:
    return '"' + value.replace('"', '""') + '"'


def write_people(write_file: WriteFile, people: list[tuple[str, str, str]]) -> Path:
    rows = "".join(f"{csv_cell(e)},{csv_cell(n)},{csv_cell(c)}\r\n" for e, n, c in people)
    return write_file("people.csv", ("email,name,city\r\n" + rows).encode("utf-8"))


def assert_link_for(url: str, email: str) -> None:
    """The recipient's unsubscribe link: the configured URL, plus a token that reads back (with
    the secret) as this address on this newsletter's list."""
    prefix = UNSUBSCRIBE_URL.replace("{email}", quote(email, safe="@"))
    assert url.startswith(prefix + "&t="), url
    token = url.removeprefix(prefix + "&t=")
    assert read_token(BASE_ENV["DISPATCH_UNSUBSCRIBE_SECRET"], token) == (LIST_ID, email.lower())


def build_all(issue: Issue) -> list[Built]:
    out = []
    for sub in issue.subscribers:
        assert isinstance(sub, Subscriber), sub
        raw, mid = issue.message(sub)
        out.append(Built(sub, raw, mid))
    return out


# --- Fixtures --------------------------------------------------------------------------------


@pytest.fixture
def settings(env: dict[str, str]) -> Settings:
    return Settings.from_mapping(env)


@pytest.fixture
def markdown_article(write_file: WriteFile) -> Path:
    return write_file("issue.md", MARKDOWN)


@pytest.fixture
def custom_templates(tmp_path: Path) -> Path:
    folder = tmp_path / "my-templates"
    folder.mkdir()
    (folder / "email.html").write_text(CUSTOM_HTML, encoding="utf-8")
    (folder / "email.txt").write_text(CUSTOM_TEXT, encoding="utf-8")
    return folder


@pytest.fixture
def people(write_file: WriteFile) -> Path:
    return write_people(write_file, PEOPLE)


@pytest.fixture(params=["example-txt", "markdown"])
def article_path(request: pytest.FixtureRequest, article: Path, markdown_article: Path) -> Path:
    return article if request.param == "example-txt" else markdown_article


@pytest.fixture(params=["builtin", "custom"])
def templates(request: pytest.FixtureRequest, custom_templates: Path) -> Path | None:
    return None if request.param == "builtin" else custom_templates


@pytest.fixture
def issue(article_path: Path, people: Path, settings: Settings, templates: Path | None) -> Issue:
    return plan_issue(article_path, people, settings, template_dir=templates)


@pytest.fixture
def built(issue: Issue) -> list[Built]:
    messages = build_all(issue)
    assert [b.sub.email for b in messages] == WIRE_EMAILS
    return messages


@pytest.fixture
def personalised(
    markdown_article: Path, people: Path, settings: Settings, custom_templates: Path
) -> dict[str, Built]:
    issue = plan_issue(markdown_article, people, settings, template_dir=custom_templates)
    return {b.sub.email: b for b in build_all(issue)}


# --- Structure (MSG-06, MSG-07, MSG-09) ------------------------------------------------------


def test_every_message_is_multipart_alternative_plain_then_html(built: list[Built]) -> None:
    for b in built:
        msg = b.msg
        assert msg.defects == []
        assert msg.get_content_type() == "multipart/alternative"
        parts = list(msg.iter_parts())
        assert [p.get_content_type() for p in parts] == ["text/plain", "text/html"]
        for p in parts:
            assert p.defects == []
            assert p.get_content_charset() == "utf-8"
            assert p["Content-Transfer-Encoding"] in ("quoted-printable", "base64")
        assert b.text.strip()
        assert "<html" in b.html


def test_single_instance_headers_appear_exactly_once(built: list[Built], settings: Settings) -> None:
    for b in built:
        msg = b.msg
        for name in SINGLE_HEADERS:
            assert len(msg.get_all(name) or []) == 1, (name, b.sub.email)
        assert {name for name, _ in raw_headers(b.head)} == EXPECTED_HEADERS
        assert set(msg.keys()) == EXPECTED_HEADERS
        assert msg["MIME-Version"] == "1.0"
        assert parsedate_to_datetime(msg["Date"]).tzinfo is not None
        assert str(msg["From"]) == "Newsroom <news@example.org>"
        assert str(msg["Reply-To"]) == "editors@example.org"
        assert settings.sender is not None
        assert msg["From"].addresses[0].domain == settings.sender.domain


def test_to_holds_only_the_recipient(built: list[Built]) -> None:
    for b in built:
        msg = b.msg
        assert msg["Cc"] is None
        assert msg["Bcc"] is None
        (address,) = msg["To"].addresses
        assert address.addr_spec == b.sub.email
        assert to_mailbox(b) == (b.sub.name, b.sub.email)


def test_idn_recipient_goes_out_as_punycode(personalised: dict[str, Built]) -> None:
    b = personalised["user@xn--bcher-kva.example"]
    assert to_mailbox(b) == ("Büch", "user@xn--bcher-kva.example")
    assert b"xn--bcher-kva.example" in raw_header(b, "List-Unsubscribe")
    assert "bücher" not in b.raw.decode("ascii")


# --- Message-ID (MSG-03, IDEM-03) ------------------------------------------------------------


def test_message_id_is_on_the_sender_domain_and_unique(built: list[Built], issue: Issue) -> None:
    ids = [b.msg["Message-ID"] for b in built]
    assert all(MESSAGE_ID.match(mid) for mid in ids), ids
    assert ids == [b.mid for b in built]
    assert len(set(ids)) == len(ids)
    again = [issue.message(b.sub)[1] for b in built]
    assert again == ids


def test_message_id_is_stable_per_campaign_and_recipient(
    article: Path, people: Path, settings: Settings
) -> None:
    first = [b.mid for b in build_all(plan_issue(article, people, settings))]
    second = [b.mid for b in build_all(plan_issue(article, people, settings))]
    assert first == second
    named = [b.mid for b in build_all(plan_issue(article, people, settings, campaign="spring"))]
    other = [b.mid for b in build_all(plan_issue(article, people, settings, campaign="autumn"))]
    assert all(MESSAGE_ID.match(mid) for mid in named + other)
    assert not set(named) & set(other)
    assert not set(named) & set(first)


# --- List-Unsubscribe (BULK-05, MSG-13) -------------------------------------------------------


def test_list_unsubscribe_is_raw_https_and_mailto_with_one_click(built: list[Built]) -> None:
    for b in built:
        value = raw_header(b, "List-Unsubscribe")
        assert b"=?" not in value
        match = re.fullmatch(rb"<(https://[^>\s]+)>,\s*<(mailto:[^>\s]+)>", value)
        assert match, value
        assert_link_for(match[1].decode(), b.sub.email)
        assert match[2].startswith(b"mailto:unsubscribe@example.org")
        assert raw_header(b, "List-Unsubscribe-Post") == b"List-Unsubscribe=One-Click"
        assert b.raw.count(b"\r\nList-Unsubscribe-Post: List-Unsubscribe=One-Click\r\n") == 1


def test_mailto_only_without_an_unsubscribe_url(env: dict[str, str], article: Path, people: Path) -> None:
    settings = Settings.from_mapping({k: v for k, v in env.items() if k != "DISPATCH_UNSUBSCRIBE_URL"})
    for b in build_all(plan_issue(article, people, settings)):
        value = raw_header(b, "List-Unsubscribe")
        assert re.fullmatch(rb"<mailto:unsubscribe@example\.org(\?[^>\s]*)?>", value), value
        assert "List-Unsubscribe-Post" not in b.msg
        assert b"List-Unsubscribe-Post" not in b.head
        link = value.decode().strip("<>")
        assert link in b.text
        assert html_lib.escape(link) in b.html


def test_no_reply_to_header_unless_set(env: dict[str, str], article: Path, people: Path) -> None:
    settings = Settings.from_mapping({k: v for k, v in env.items() if k != "DISPATCH_REPLY_TO"})
    for b in build_all(plan_issue(article, people, settings)):
        assert "Reply-To" not in b.msg
        assert {name for name, _ in raw_headers(b.head)} == EXPECTED_HEADERS - {"Reply-To"}


# --- Wire format (MSG-08, MSG-10, MSG-11, MSG-12) ---------------------------------------------


def test_no_line_over_998_octets_and_body_lines_at_most_76(built: list[Built]) -> None:
    for b in built:
        lines = b.raw.split(b"\r\n")
        assert max(len(line) for line in lines) <= 998
        body = b.raw.split(b"\r\n\r\n", 1)[1]
        assert max(len(line) for line in body.split(b"\r\n")) <= 76


def test_crlf_only(built: list[Built]) -> None:
    for b in built:
        assert b.raw.endswith(b"\r\n")
        rest = b.raw.replace(b"\r\n", b"")
        assert b"\r" not in rest
        assert b"\n" not in rest


def test_headers_are_ascii_with_short_encoded_words(built: list[Built], issue: Issue) -> None:
    for b in built:
        assert b.head.isascii()
        assert not re.search(rb"[\x00-\x08\x0b-\x1f\x7f]", b.head.replace(b"\r\n", b""))
        for word in ENCODED_WORD.findall(b.head):
            assert len(word) <= 75, word
        assert str(b.msg["Subject"]).strip() == issue.subject
    if not issue.subject.isascii():
        assert ENCODED_WORD.search(raw_header(built[0], "Subject"))
    zoe = next(b for b in built if b.sub.email == "zoe@example.org")
    assert ENCODED_WORD.search(raw_header(zoe, "To"))


def test_a_5000_character_single_line_paragraph_yields_no_long_lines(
    write_file: WriteFile, people: Path, settings: Settings
) -> None:
    path = write_file("long.txt", f"A long one\n\n{LONG_PARAGRAPH}\n\n{UNBROKEN}\n\nÜnïcödé {'é' * 3000}\n")
    for b in build_all(plan_issue(path, people, settings)):
        assert max(len(line) for line in b.raw.split(b"\r\n")) <= 998
        body = b.raw.split(b"\r\n\r\n", 1)[1]
        assert max(len(line) for line in body.split(b"\r\n")) <= 76
        for content in (b.text, b.html):
            assert UNBROKEN in content  # soft line breaks never split the content itself
            assert "é" * 3000 in content
        assert "word0000" in b.text
        assert "word0559" in b.text


# --- Header injection (MSG-16, SEC) ---------------------------------------------------------


def assert_no_injected_header(b: Built) -> None:
    assert {name for name, _ in raw_headers(b.head)} == EXPECTED_HEADERS
    assert set(b.msg.keys()) == EXPECTED_HEADERS
    rest = b.raw.replace(b"\r\n", b"")
    assert b"\r" not in rest
    assert b"\n" not in rest
    assert b.head.isascii()
    assert not re.search(rb"[\x00-\x08\x0b-\x1f\x7f]", b.head.replace(b"\r\n", b""))
    assert len(b.msg["To"].addresses) == 1


# A line break followed by an address in a quoted CSV value makes the list refused outright
# (tests/test_subscribers.py); without the address the value is cleaned and mailed.
INJECTED_NAMES = [
    pytest.param("Eve\r\nBcc: victim", id="crlf"),
    pytest.param("Eve\nBcc: victim", id="lf"),
    pytest.param("Eve\rBcc: victim", id="cr"),
    pytest.param("Eve\u2028Bcc: x@example.com", id="u2028"),
    pytest.param("Eve\u2029\x85\x0b\x0cBcc: x@example.com", id="other-breaks"),
    pytest.param("Eve\r\n\r\n<html>body</html>", id="blank-line"),
    pytest.param(
        "=?UTF-8?Q?=0A?=Bcc: x@example.com",
        id="encoded-lf",
    ),
    pytest.param(
        "=?utf-8?q?Eve=0D=0ABcc=3A_x=40example=2Ecom?=",
        id="encoded-crlf",
    ),
    pytest.param(
        "Eve\x00Bcc: x@example.com",
        id="nul",
    ),
]


@pytest.mark.parametrize("name", INJECTED_NAMES)
def test_names_never_create_a_header(
    write_file: WriteFile, article: Path, settings: Settings, name: str
) -> None:
    people = write_people(
        write_file, [("ann@example.org", "Ann", "Paris"), ("eve@example.org", name, "Lyon")]
    )
    built = build_all(plan_issue(article, people, settings))
    assert [b.sub.email for b in built] == ["ann@example.org", "eve@example.org"]
    for b in built:
        assert_no_injected_header(b)
    eve = built[1]
    assert to_mailbox(eve)[1] == "eve@example.org"
    assert "Bcc" not in {n for n, _ in raw_headers(eve.head)}


@pytest.mark.parametrize(
    ("front_matter", "argument"),
    [
        pytest.param('title: "Hi\\r\\nBcc: x@example.com"', "", id="fm-title-crlf"),
        pytest.param('title: T\nsubject: "Hi\\r\\nBcc: x@example.com"', "", id="fm-subject-crlf"),
        pytest.param('title: T\nsubject: "Hi\\u2028Bcc: x@example.com"', "", id="fm-u2028"),
        pytest.param(
            'title: T\nsubject: "=?UTF-8?Q?=0A?=Bcc: x@example.com"',
            "",
            id="fm-encoded-lf",
        ),
        pytest.param(
            'title: "Hi\\0there"',
            "",
            id="fm-title-nul",
        ),
        pytest.param(
            "title: T",
            "Hi\r\nBcc: x@example.com",
            id="arg-crlf",
        ),
        pytest.param(
            "title: T",
            "Hi\nBcc: x@example.com",
            id="arg-lf",
        ),
        pytest.param(
            "title: T",
            "Hi\x00\x1bthere",
            id="arg-controls",
        ),
        pytest.param("title: T", "Hi\u2028Bcc: x@example.com", id="arg-u2028"),
    ],
)
def test_subjects_never_create_a_header(
    write_file: WriteFile, people: Path, settings: Settings, front_matter: str, argument: str
) -> None:
    path = write_file("inject.md", f"---\n{front_matter}\n---\nBody.\n")
    for b in build_all(plan_issue(path, people, settings, subject=argument)):
        assert_no_injected_header(b)
        assert "Bcc" not in b.msg


# --- Personalisation (render + message) -------------------------------------------------


def test_markup_in_a_name_is_escaped_in_html_and_verbatim_in_text(
    personalised: dict[str, Built],
) -> None:
    tom = personalised["tom@example.org"]
    assert "&lt;script&gt;Tom &amp; Jerry&lt;/script&gt;" in tom.html
    assert "<script" not in tom.html.lower()
    assert "Hello <script>Tom & Jerry</script> from" in tom.text
    assert to_mailbox(tom) == ("<script>Tom & Jerry</script>", "tom@example.org")


def test_template_syntax_in_a_csv_value_renders_literally(
    personalised: dict[str, Built],
) -> None:
    tom = personalised["tom@example.org"]
    assert "from {{ 7*7 }}" in tom.text
    assert "from {{ 7*7 }}" in tom.html
    assert "49" not in tom.text.splitlines()[0]


def test_names_and_columns_reach_only_their_own_message(personalised: dict[str, Built]) -> None:
    for email, name, city in PEOPLE[:4]:
        b = personalised[email]
        assert f"Hello {name or 'friend'} from {city}" in b.text
        others = [p[1] for p in PEOPLE[:4] if p[0] != email]
        assert not any(other in b.text for other in others)
    nobody = personalised["nobody@example.org"]
    assert "Hello friend from \n" in nobody.text


def test_html_has_inlined_css_and_keeps_media_rules(built: list[Built]) -> None:
    for b in built:
        head, _, body = b.html.partition("</head>")
        styles = re.findall(r"<style[^>]*>(.*?)</style>", head, re.S)
        assert any("@media" in s and "!important" in s for s in styles)
        assert "<style" not in body
        footer = re.search(r'<[a-z0-9]+ class="footer"[^>]* style="([^"]+)"', body)
        assert footer, "the footer's CSS is not inlined"
        assert "font-size:12px" in footer[1].replace(" ", "")
        assert body.count(' style="') >= 2


def test_unsubscribe_url_and_postal_address_in_both_parts(built: list[Built]) -> None:
    for b in built:
        url = re.search(r"https://example\.org/unsubscribe\S+", b.text)
        assert url, b.text
        url = url[0]
        assert_link_for(url, b.sub.email)
        assert url in b.text
        assert POSTAL_ADDRESS in b.text
        assert f'href="{html_lib.escape(url)}"' in b.html
        assert html_lib.escape(POSTAL_ADDRESS) in b.html


# --- Subject precedence --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("front_matter", "argument", "expected"),
    [
        ("title: The Title\nsubject: Front Matter Subject", "Argument Subject", "Front Matter Subject"),
        ("title: The Title\nsubject: Front Matter Subject", "", "Front Matter Subject"),
        ("title: The Title", "Argument Subject", "Argument Subject"),
        ("title: The Title", "", "The Title"),
        ("title: Grüße", "Ärger über Œuvre", "Ärger über Œuvre"),
    ],
)
def test_subject_precedence(
    write_file: WriteFile,
    people: Path,
    settings: Settings,
    front_matter: str,
    argument: str,
    expected: str,
) -> None:
    path = write_file("issue.md", f"---\n{front_matter}\n---\nBody.\n")
    issue = plan_issue(path, people, settings, subject=argument)
    assert issue.subject == expected
    for b in build_all(issue):
        assert str(b.msg["Subject"]).strip() == expected


@pytest.mark.parametrize(("argument", "expected"), [("", None), ("Argument Subject", "Argument Subject")])
def test_plain_text_article_subject_is_argument_else_title(
    article: Path, people: Path, settings: Settings, argument: str, expected: str | None
) -> None:
    issue = plan_issue(article, people, settings, subject=argument)
    title = "As elections approach, the US walk a thin line in Iraq"
    assert issue.subject == (expected or title)
    assert str(build_all(issue)[0].msg["Subject"]).strip() == (expected or title)
