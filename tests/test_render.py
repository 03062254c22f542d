"""Template rendering: compliance warnings, user templates reaching the built-ins, the
``otherwise`` filter, premailer staying quiet and offline, and the built-in message itself:
its language and direction, masthead, dates, words, dark-mode rules and plain-text twin."""

from __future__ import annotations

import itertools
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from dispatch.compose.context import template_context
from dispatch.compose.render import RenderedIssue, builtin_template_dir, render_issue
from dispatch.content.article import load_article
from dispatch.content.markup import demote_headings, render_markdown
from dispatch.content.textpart import wrap_without_orphan
from dispatch.errors import ConfigError, TemplateError

ROOT = Path(__file__).resolve().parents[1]

VALUES = {
    "email": "ann@example.org",
    "name": "",
    "unsubscribe_url": "https://example.org/u/1",
    "city": "Oslo",
}


def render(
    article: Path, template_dir: Path | None = None, postal: str = "1 Example Street"
) -> RenderedIssue:
    return render_issue(
        load_article(article),
        subject="S",
        columns=["city"],
        organization="Example",
        postal_address=postal,
        template_dir=template_dir,
    )


def test_builtin_templates_raise_no_warnings(article: Path) -> None:
    issue = render(article)
    assert issue.warnings == ()


@pytest.mark.parametrize(
    ("html", "text", "expected"),
    [
        (
            "<p>{{ article.title }} {{ postal_address }}</p>",
            None,
            "a visible unsubscribe link in the HTML part",
        ),
        ('<p><a href="{{ unsubscribe_url }}">u</a></p>', None, "the postal address in the HTML part"),
        (None, "{{ article.title }} {{ postal_address }}\n", "the unsubscribe link in the text part"),
    ],
)
def test_user_templates_missing_compliance_parts_are_flagged_once(
    article: Path, tmp_path: Path, html: str | None, text: str | None, expected: str,
    invoke: Any, subscribers: Path, env_file: Any,
) -> None:  # fmt: skip
    """The checks (one rule set for check, the dry run and a send) name it once, as blocking."""
    folder = tmp_path / "mine"
    folder.mkdir()
    if html is not None:
        (folder / "email.html").write_text(f"<html><body>{html}</body></html>", encoding="utf-8")
    if text is not None:
        (folder / "email.txt").write_text(text, encoding="utf-8")
    done = invoke("check", article, "-s", subscribers, "--template", folder, "--env-file", env_file())
    assert done.exit_code == 2
    named = [line for line in done.stdout.splitlines() if expected in line]
    assert len(named) == 1, done.stdout
    assert named[0].startswith("  Blocking:")


def test_missing_postal_address_is_flagged_once(
    article: Path, invoke: Any, subscribers: Path, env_file: Any
) -> None:
    done = invoke("check", article, "-s", subscribers, "--env-file", env_file(DISPATCH_POSTAL_ADDRESS=""))
    assert done.exit_code == 2
    assert len([line for line in done.stdout.splitlines() if "DISPATCH_POSTAL_ADDRESS" in line]) == 1


def test_user_template_extends_the_builtin_one(article: Path, tmp_path: Path) -> None:
    folder = tmp_path / "mine"
    folder.mkdir()
    (folder / "email.txt").write_text('{% extends "builtin/email.txt" %}', encoding="utf-8")
    issue = render(article, folder)
    _, text = issue.personalise(VALUES)
    assert "As elections approach, the US walk a thin line in Iraq" in text
    assert "https://example.org/u/1" in text


def test_otherwise_fills_empty_values_only(article: Path, tmp_path: Path) -> None:
    folder = tmp_path / "mine"
    folder.mkdir()
    (folder / "email.txt").write_text(
        "Dear {{ subscriber.name | otherwise('reader') }} in {{ subscriber.city | otherwise('?') }}\n"
        "{{ unsubscribe_url }} {{ postal_address }}\n",
        encoding="utf-8",
    )
    issue = render(article, folder)
    assert issue.personalise(VALUES)[1].startswith("Dear reader in Oslo")
    named = {**VALUES, "name": "Ann"}
    assert issue.personalise(named)[1].startswith("Dear Ann in Oslo")


def test_a_condition_on_a_value_is_decided_per_recipient(article: Path, tmp_path: Path) -> None:
    folder = tmp_path / "mine"
    folder.mkdir()
    (folder / "email.txt").write_text(
        "{% if subscriber.name %}hi {{ name }}{% else %}hello{% endif %} {{ unsubscribe_url }}\n",
        encoding="utf-8",
    )
    issue = render(article, folder)
    assert issue.personalise(VALUES)[1].startswith("hello https://example.org/u/1")
    assert issue.personalise({**VALUES, "name": "Ann"})[1].startswith("hi Ann https://")


def test_a_column_the_list_lacks_is_an_error_naming_it(article: Path, tmp_path: Path) -> None:
    folder = tmp_path / "mine"
    folder.mkdir()
    (folder / "email.txt").write_text("\n{{ subscriber.citty }}\n", encoding="utf-8")
    with pytest.raises(
        TemplateError, match=r"email\.txt line 2: 'citty' is not a column .*columns: city, email, name"
    ):
        render(article, folder).personalise(VALUES)


def test_inlining_is_offline_and_quiet(
    article: Path, monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str]
) -> None:
    import socket

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("premailer tried to use the network")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    issue = render(article)
    html, _ = issue.personalise(VALUES)
    assert 'style="' in html
    assert "@media" in html  # the phone rules stay in <style>
    assert "!important" in html  # ...and keep their priority over the inlined widths
    captured = capfd.readouterr()
    assert captured.err == ""
    assert captured.out == ""


def test_builtin_template_folder_has_the_three_files() -> None:
    folder = builtin_template_dir()
    assert {p.name for p in folder.iterdir()} >= {"email.html", "email.txt", "style.css"}


def test_every_block_kind_renders_in_the_builtin_html(write_file: Callable[..., Path]) -> None:
    source = write_file(
        "all.md",
        "---\ntitle: Kinds\nauthor: Jane Doe\ndate: 2026-11-25\nsubtitle: A standfirst\n---\n"
        "Intro with a [link](https://example.org/a).\n\n## Sub\n\n- one\n- two\n\n> quoted\n\n"
        "![alt text](https://example.org/i.png)\n\n```\ncode\n```\n\n| a | b |\n|---|---|\n| 1 | 2 |\n",
    )
    issue = render(source)
    html, text = issue.personalise(VALUES)
    for fragment in (
        "By Jane Doe",
        "25 November 2026",
        "A standfirst",
        "<h2",
        "<ul",
        "<blockquote",
        "<img",
        "<pre",
        "<table",
    ):
        assert fragment in html, fragment
    assert "[1] https://example.org/a" in text


@pytest.mark.parametrize(
    ("name", "override"),
    [
        (
            "email.html",
            '{% block body %}<p>Dear {{ subscriber.name | otherwise("reader") }},</p>'
            "{{ super() }}{% endblock %}",
        ),
        (
            "email.txt",
            '{% block body %}Dear {{ subscriber.name | otherwise("reader") }},\n\n'
            "{{ super() }}{% endblock %}",
        ),
    ],
)
def test_a_user_template_overrides_one_block_of_the_builtin(
    article: Path, tmp_path: Path, name: str, override: str
) -> None:
    folder = tmp_path / "mine"
    folder.mkdir()
    (folder / name).write_text(f'{{% extends "builtin/{name}" %}}\n{override}', encoding="utf-8")
    issue = render(article, folder)
    html, text = issue.personalise({**VALUES, "name": "Ann"})
    shown = html if name.endswith(".html") else text
    assert "Dear Ann," in shown
    assert "Part of the ongoing efforts" in shown  # super() kept the article
    assert "https://example.org/u/1" in shown  # and the rest of the built-in layout
    assert issue.warnings == ()


# --- the built-in message ------------------------------------------------------------------------

EXAMPLES = sorted((ROOT / "examples").glob("*.*"))
GARDEN = ROOT / "examples" / "community-garden-spring.md"
ARABIC = ROOT / "examples" / "neighbourhood-library-ar.md"
SEED = ROOT / "examples" / "thin-line-in-iraq.txt"
RECIPIENT = {
    "email": "ann.example@example.org",
    "name": "Ann Example",
    "unsubscribe_url": "https://example.org/unsubscribe?t=Zm9vYmFyYmF6cXV4cXV1eA",
}
ORGANIZATION = "Example Foundation"
POSTAL = "1 Example Street, Springfield"
# Everything the masthead can show, as the CLI passes it.
EXTRAS: dict[str, Any] = {
    "web_url": "https://example.org/issues/12",
    "logo": {"src": "https://example.org/logo.png", "alt": "", "width": 480, "height": 120},
}


def render_parts(article: Path, *, test_send: bool = False, **extra: Any) -> tuple[str, str]:
    """One recipient's (HTML, text) of ``article`` with the built-in templates; ``extra`` reaches
    the template context (``web_url``, ``logo``, ``language`` …) as the CLI's own values will."""

    def with_extra(*args: Any, **kwargs: Any) -> dict[str, Any]:
        return template_context(*args, **{**kwargs, **extra})

    patch = pytest.MonkeyPatch()
    try:
        patch.setattr("dispatch.compose.render.template_context", with_extra)
        issue = render_issue(
            load_article(article),
            subject=f"[TEST] {article.stem}" if test_send else article.stem,
            columns=[],
            organization=ORGANIZATION,
            postal_address=POSTAL,
            test_send=test_send,
        )
    finally:
        patch.undo()
    return issue.personalise(RECIPIENT)


def render_message(article: Path, **extra: Any) -> str:
    """One recipient's HTML of ``article`` (see :func:`render_parts`)."""
    return render_parts(article, **extra)[0]


def _plain(value: Any, where: str = "context") -> None:
    if isinstance(value, dict):
        for key, item in value.items():
            assert isinstance(key, str), where
            _plain(item, f"{where}.{key}")
    elif isinstance(value, list):
        for i, item in enumerate(value):
            _plain(item, f"{where}[{i}]")
    else:
        assert value is None or isinstance(value, str | bool | int | float), (where, type(value))


def test_the_template_context_is_plain_data() -> None:
    context = template_context(
        load_article(GARDEN), subject="S", columns=["city", "Signup Date"],
        organization=ORGANIZATION, postal_address=POSTAL, language="en", issue_date="2026-03-20", **EXTRAS,
    )  # fmt: skip
    _plain(context)
    for name in ("lang", "dir", "issue_date", "issue_date_iso", "issue_number", "logo", "web_url", "words"):
        assert name in context


@pytest.mark.parametrize(
    ("front_matter", "body", "setting", "lang", "direction"),
    [
        ("lang: fr\n", "Le jardin se réveille et les voisins sont là.", "de", "fr", "ltr"),
        ("", "The garden wakes up and the neighbours are all there for it.", "de", "de", "ltr"),
        ("", "The garden wakes up and the neighbours are all there for it.", "", "en", "ltr"),
        ("", "افتتحت مكتبة الحيّ قاعةً جديدة مخصّصة للأطفال واليافعين في المدينة.", "", "ar", "rtl"),
        ("", "הספרייה השכונתית פתחה אולם חדש לילדים ולבני הנוער של העיר.", "", "he", "rtl"),
        ("", "کتابخانه‌ی محله یک سالن تازه برای کودکان و نوجوانان باز کرده است.", "", "fa", "rtl"),
        ("", "محلے کی لائبریری نے بچوں کے لیے ایک نیا ہال کھولا ہے اور سب خوش ہیں۔", "", "ur", "rtl"),
        ("lang: ar\n", "A bilingual issue whose editors say it is Arabic first.", "", "ar", "rtl"),
        ("lang: ar\ndir: ltr\n", "An issue that asks for its own direction.", "", "ar", "ltr"),
    ],
)
def test_language_and_direction_on_html_and_wrapper(
    write_file: Callable[..., Path], front_matter: str, body: str, setting: str, lang: str, direction: str
) -> None:
    article = write_file("issue.md", f"---\ntitle: Issue\n{front_matter}---\n{body}\n")
    html = render_message(article, language=setting)
    assert f'<html lang="{lang}" dir="{direction}"' in html
    assert re.search(rf'<div class="wrapper" [^>]*lang="{lang}" dir="{direction}"', html)
    assert re.search(rf'<table role="presentation" class="container"[^>]* dir="{direction}"', html)


def test_a_right_to_left_issue_is_mirrored() -> None:
    html = render_message(ARABIC)
    content = re.search(r'<td class="content" style="([^"]*)"', html)
    assert content
    assert "text-align:right" in content[1]
    assert re.search(r'<ul style="[^"]*padding-right:26px', html)
    assert re.search(r'<blockquote style="[^"]*border-right:3px solid', html)
    assert "font-style:italic" not in html  # Arabic has no italics: a slanted script reads badly
    assert "text-transform:uppercase" not in html
    body = html.split("<body", 1)[1]
    assert "text-align:left" not in body.replace('<pre style="', "").split("<pre")[0]


@pytest.mark.parametrize(
    ("meta", "shown"),
    [
        ("lang: en", "14 March 2026"),
        ("lang: en-US", "March 14, 2026"),
        ("lang: fr", "14 mars 2026"),
        ("lang: de", "14. März 2026"),
        ("lang: ar", "14 مارس 2026"),
        ("lang: fa", "۱۴ مارس ۲۰۲۶"),
    ],
)
def test_iso_dates_read_as_a_person_writes_them(
    write_file: Callable[..., Path], meta: str, shown: str
) -> None:
    article = write_file("dated.md", f"---\ntitle: Dated\n{meta}\ndate: 2026-03-14\n---\nBody text.\n")
    html, text = render_parts(article)
    assert f'<time datetime="2026-03-14">{shown}</time>' in html
    assert shown in text
    assert "2026-03-14" not in text


@pytest.mark.parametrize(
    ("line", "shown"), [("3 January 2020", "3 January 2020"), ("2024-03-12", "12 March 2024")]
)
def test_a_plain_text_date_is_shown_as_written_unless_iso(
    write_file: Callable[..., Path], line: str, shown: str
) -> None:
    article = write_file(
        "dated.txt", f"A headline for the test\nBy Jane Doe\n{line}\n\n{'Words here. ' * 12}\n"
    )
    html, text = render_parts(article)
    assert shown in html
    assert shown in text


def test_masthead_shows_date_issue_logo_and_web_version() -> None:
    html, text = render_parts(GARDEN, **EXTRAS)
    masthead = html.split('class="masthead"', 1)[1].split("</td>", 1)[0]
    assert re.search(
        r'<img src="https://example.org/logo.png" alt="Example Foundation" width="200" height="50"', masthead
    )
    assert '<time datetime="2026-03-14">14 March 2026</time> · <span>Issue 12</span>' in masthead
    assert re.search(
        r'<a href="https://example.org/issues/12" class="topbar-link"[^>]*>View in browser</a>', html
    )
    assert text.startswith(
        f"{ORGANIZATION}\n14 March 2026 · Issue 12\nView in browser: https://example.org/issues/12\n"
    )


def test_masthead_without_extras_shows_the_organisation() -> None:
    html, text = render_parts(SEED)
    assert 'class="masthead-name"' in html
    assert f">{ORGANIZATION}</p>" in html
    assert "View in browser" not in html + text
    assert "<img" not in html
    assert text.startswith(f"{ORGANIZATION}\n\n")


@pytest.mark.parametrize(
    ("logo", "message"),
    [
        ({"src": "http://example.org/l.png", "width": 10, "height": 10}, "https:// URL or an embedded cid:"),
        ({"src": "javascript:alert(1)", "width": 10, "height": 10}, "https:// URL or an embedded cid:"),
        ({"src": "cid:logo", "width": 0, "height": 10}, "width and height"),
        ({"src": "cid:logo", "width": "wide", "height": 10}, "whole numbers"),
    ],
)
def test_a_logo_that_cannot_work_is_refused(logo: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(message)):
        render_parts(SEED, logo=logo)


def test_an_embedded_logo_keeps_its_cid_and_alt() -> None:
    html = render_message(SEED, logo={"src": "cid:logo@example.org", "alt": "EF", "width": 100, "height": 40})
    assert '<img src="cid:logo@example.org" alt="EF" width="100" height="40" class="logo"' in html


def test_web_url_must_be_a_web_address() -> None:
    with pytest.raises(ConfigError, match="must start with https://"):
        render_parts(SEED, web_url="file:///etc/passwd")


def test_the_footer_is_friendly_and_complete_in_both_parts() -> None:
    html, text = render_parts(SEED)
    footer = html.split('class="footer"', 1)[1]
    assert "Thanks for reading." in footer
    assert "You receive this newsletter at <span" in footer
    assert RECIPIENT["email"] in footer
    assert re.search(r'<a href="[^"]+" class="footer-link"[^>]*>Unsubscribe in one click</a>', footer)
    assert f"{ORGANIZATION} · {POSTAL}" in footer
    signature = text.split("\n-- \n", 1)
    assert len(signature) == 2, "the text part needs a '-- ' signature line"
    assert f"You receive this newsletter at {RECIPIENT['email']}" in signature[1]
    assert f"Unsubscribe in one click: {RECIPIENT['unsubscribe_url']}" in signature[1]
    assert signature[1].rstrip().endswith(f"{ORGANIZATION}, {POSTAL}")
    assert RECIPIENT["unsubscribe_url"] not in signature[0]


def test_own_words_follow_the_language_of_the_issue() -> None:
    html, text = render_parts(ARABIC, **EXTRAS)
    for words in ("عرض في المتصفح", "العدد 7", "بقلم سلمى الخطيب", "ألغِ الاشتراك بنقرة واحدة"):
        assert words in html
    assert "ألغِ الاشتراك بنقرة واحدة: https://example.org/unsubscribe" in text
    assert f"تصلك هذه النشرة على {RECIPIENT['email']}" in text
    assert "Unsubscribe" not in html + text


def test_untranslated_words_are_marked_as_english(write_file: Callable[..., Path]) -> None:
    article = write_file(
        "sv.md", "---\ntitle: Trädgården vaknar\nlang: sv\n---\nDet är vår och det är dags.\n"
    )
    html = render_message(article, **EXTRAS)
    assert '<html lang="sv" dir="ltr"' in html
    assert re.search(r'<a href="https://example.org/issues/12" class="topbar-link" lang="en" dir="ltr"', html)
    assert re.search(r'<p class="footer-note" lang="en" dir="ltr"[^>]*><strong>Thanks for reading.', html)


def test_markdown_gets_typographic_quotes_and_dashes(write_file: Callable[..., Path]) -> None:
    article = write_file("typo.md", '---\ntitle: T\n---\nShe said "yes" -- and it\'s done... (c) 2026\n')
    html, text = render_parts(article)
    assert "She said “yes” – and it’s done… © 2026" in html
    assert "She said “yes” – and it’s done… © 2026" in text


def _heading_levels(html: str) -> list[int]:
    return [int(level) for level in re.findall(r"<h([1-6])\b", html)]


@pytest.mark.parametrize("article", EXAMPLES, ids=lambda p: p.name)
def test_headings_start_at_the_title_and_never_skip(article: Path) -> None:
    levels = _heading_levels(render_message(article))
    assert levels[0] == 1
    assert levels.count(1) == 1, "the title is the only h1"
    assert all(b <= a + 1 for a, b in itertools.pairwise(levels)), levels


def test_body_headings_are_demoted_under_the_title(write_file: Callable[..., Path]) -> None:
    article = write_file(
        "h.md", "---\ntitle: Title\n---\n# Part\n\n### Deep\n\n#### Deeper\n\n# Next\n\n<h3>Raw</h3>\n"
    )
    assert _heading_levels(render_message(article)) == [1, 2, 3, 4, 2, 3]


@pytest.mark.parametrize(
    ("html", "expected"),
    [
        ("<h1>A</h1><h2>B</h2>", "<h2>A</h2><h3>B</h3>"),
        ("<h3>A</h3><h5 id=x>B</h5><h2>C</h2>", "<h2>A</h2><h3 id=x>B</h3><h2>C</h2>"),
        (
            "<h2>A</h2><hr><header>x</header><h4>B</h4><h3>C</h3>",
            "<h2>A</h2><hr><header>x</header><h3>B</h3><h3>C</h3>",
        ),
        ("<p>no headings</p>", "<p>no headings</p>"),
    ],
)
def test_demote_headings(html: str, expected: str) -> None:
    assert demote_headings(html) == expected


def test_the_text_part_opens_with_the_organisation_and_keeps_the_motto_whole() -> None:
    _, text = render_parts(SEED)
    assert text.startswith(f"{ORGANIZATION}\n\n“")
    motto = text.removeprefix(f"{ORGANIZATION}\n\n").split("\n  — ", 1)[0].split("\n")
    assert motto[0].startswith("“The spirit of our endeavour")
    assert len(motto[-1].split()) >= 2, f"orphaned last word: {motto[-1]!r}"
    assert all(len(line) <= 72 for line in motto)


@pytest.mark.parametrize("width", [20, 40, 70])
def test_wrap_without_orphan(width: int) -> None:
    text = "“The spirit of our endeavour is, To strive, to seek, to find and not to yield”"
    lines = wrap_without_orphan(text, width).split("\n")
    assert " ".join(lines) == text
    assert all(len(line) <= width for line in lines)
    assert len(lines) == 1 or len(lines[-1].split()) >= 2, lines


def test_text_tables_are_aligned_columns() -> None:
    _, text = render_parts(GARDEN)
    assert (
        "Crop            Beds  Harvest (kg)  Went to the pantry\n"
        "--------------  ----  ------------  ------------------\n"
        "Winter lettuce     2          38.5         yes\n"
        "Kale               1          52.0         yes\n"
    ) in text


def test_a_table_too_wide_for_columns_becomes_records() -> None:
    long = "a description that goes on well past what one column of a plain-text email can hold"
    text = render_markdown(f"| Name | Note |\n|---|---|\n| Alpha | {long} |\n| Beta | short |\n").text
    assert text.startswith("Name: Alpha\nNote: a description")
    assert "\n\nName: Beta\nNote: short" in text
    assert all(len(line) <= 72 for line in text.split("\n"))


def test_dark_mode_rules_survive_inlining() -> None:
    html = render_message(GARDEN)
    head = html.split("</head>", 1)[0]
    assert '<meta name="color-scheme" content="light dark">' in head
    assert re.search(r":root\s*\{[^}]*color-scheme:\s*light dark", head)
    dark = head.split("@media (prefers-color-scheme: dark)", 1)
    assert len(dark) == 2, "the dark rules were lost in inlining"
    for selector in (
        ".container",
        ".content",
        ".title",
        ".article a",
        ".article blockquote",
        ".footer",
        ".footer-link",
    ):
        assert re.search(rf"{re.escape(selector)}\b[^{{]*\{{[^}}]*!important", dark[1]), selector
    for outlook in (
        "[data-ogsc] .title",
        "[data-ogsc] .article a",
        "[data-ogsb] .container",
        "[data-ogsb] .footer",
    ):
        assert outlook in head, outlook


def test_the_container_is_fluid_inline_and_600px_for_outlook() -> None:
    html = render_message(SEED)
    container = re.search(r'<table role="presentation" class="container"[^>]* style="([^"]*)"', html)
    assert container
    assert "width:100%" in container[1].replace(" ", "")
    assert "max-width:600px" in container[1].replace(" ", "")
    assert '<!--[if mso]><table role="presentation" width="600"' in html


@pytest.mark.parametrize("article", EXAMPLES, ids=lambda p: p.name)
def test_every_example_renders_with_both_compliance_parts(article: Path) -> None:
    issue = render_issue(
        load_article(article), subject="S", columns=[], organization=ORGANIZATION, postal_address=POSTAL
    )
    assert issue.warnings == ()
    html, text = issue.personalise(RECIPIENT)
    for part in (html, text):
        assert RECIPIENT["email"] in part
        assert ORGANIZATION in part
    assert f'href="{RECIPIENT["unsubscribe_url"]}"' in html
    assert RECIPIENT["unsubscribe_url"] in text
    assert POSTAL in html
    assert POSTAL in text


def test_a_date_that_is_not_iso_is_not_a_machine_readable_time(write_file: Callable[..., Path]) -> None:
    body = "Words of the article. " * 10
    html = render_message(
        write_file("dated.txt", f"A headline for the test\nBy Jane Doe\n3 January 2020\n\n{body}\n")
    )
    assert "3 January 2020" in html
    assert "<time" not in html
