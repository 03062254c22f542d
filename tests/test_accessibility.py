"""Accessible by default: the right language and direction, layout tables that screen readers
skip, one h1, text alternatives, link text that says where it goes, contrast of at least 4.5:1
in light and dark, and axe-core finding nothing serious on any example, on a desktop and a
phone, light and dark.

The language checks need no browser; the rest runs in the system Chromium (skipped, and said
so, where it is not installed)."""

from __future__ import annotations

import re
from collections.abc import Iterator
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest

from dispatch.content.language import detect_language, direction, normalise_tag, readable_date, words
from tests.conftest import CHROMIUM, needs_chromium
from tests.test_browser import chromium, open_in
from tests.test_render import ARABIC, EXAMPLES, EXTRAS, render_message

# --- the language of an issue ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("افتتحت مكتبة الحيّ يوم السبت الماضي قاعةً جديدة مخصّصة للأطفال واليافعين.", "ar"),
        ("در سه سال گذشته، شمار باغ‌های پشت‌بامی در محله‌های مرکزی تهران دو برابر شده است.", "fa"),
        ("یہ نیوز لیٹر ہر مہینے شائع ہوتا ہے اور اس میں شہر کی خبریں ہوتی ہیں۔", "ur"),
        ("הספרייה השכונתית פתחה השבוע אולם חדש לילדים ולבני נוער.", "he"),
        ("د ښار کتابتون د ماشومانو لپاره یوه نوې خونه پرانیستله او ټول خوشاله دي.", "ps"),
        ("The library opened a new room for children and teenagers on Saturday.", "en"),
        ("La bibliothèque du quartier a ouvert une salle pour les enfants et les jeunes.", "fr"),
        ("Die Bibliothek hat am Samstag einen neuen Raum für die Kinder und Jugendlichen eröffnet.", "de"),
        ("La biblioteca del barrio abrió una sala nueva para los niños y los jóvenes de la ciudad.", "es"),
        ("Районная библиотека открыла новый зал для детей и подростков.", "ru"),
        ("Районна бібліотека відкрила нову залу для дітей і підлітків.", "uk"),
        ("Η βιβλιοθήκη της γειτονιάς άνοιξε μια νέα αίθουσα για παιδιά.", "el"),
        ("図書館は土曜日に子ども向けの新しい部屋を開きました。", "ja"),
        ("社区图书馆星期六为儿童和青少年开放了一个新的阅览室。", "zh"),
        ("동네 도서관이 토요일에 어린이를 위한 새 방을 열었습니다.", "ko"),
        ("2026 — 14:00 — 3,500", ""),
    ],
)
def test_detect_language(text: str, expected: str) -> None:
    assert detect_language(text) == expected


@pytest.mark.parametrize(
    ("tag", "expected"),
    [
        ("ar", "rtl"), ("he", "rtl"), ("fa", "rtl"), ("ur", "rtl"), ("ps", "rtl"), ("ckb", "rtl"),
        ("ar-EG", "rtl"), ("az-Arab", "rtl"), ("en", "ltr"), ("fr-CA", "ltr"), ("uz-Latn", "ltr"),
        ("ja", "ltr"), ("xx", "ltr"),
    ],
)  # fmt: skip
def test_direction(tag: str, expected: str) -> None:
    assert direction(tag) == expected


@pytest.mark.parametrize(
    ("value", "expected"),
    [("pt_br", "pt-BR"), ("EN-gb", "en-GB"), ("zh-hant-tw", "zh-Hant-TW"), ("es-419", "es-419"),
     ("", ""), ("english please", ""), ('"><script>', ""), (None, "")],
)  # fmt: skip
def test_normalise_tag(value: object, expected: str) -> None:
    assert normalise_tag(value) == expected


@pytest.mark.parametrize(
    ("value", "tag", "expected"),
    [
        ("2026-03-14", "en", "14 March 2026"),
        ("2026-03-14T09:30:00+01:00", "en", "14 March 2026"),
        ("2026-03-14", "en-US", "March 14, 2026"),
        ("2026-03-14", "he", "14 במרץ 2026"),
        ("2026-03-14", "fa", "۱۴ مارس ۲۰۲۶"),
        ("2026-03-14", "xx", "14 March 2026"),
        ("2026-02-30", "en", "2026-02-30"),
        ("Spring 2026", "en", "Spring 2026"),
    ],
)
def test_readable_date(value: str, tag: str, expected: str) -> None:
    assert readable_date(value, tag) == expected


def test_every_translation_has_every_word() -> None:
    for tag in ("en", "ar", "he", "fa", "ur", "fr", "de", "es", "it", "pt", "nl", "ru"):
        said = words(tag)
        assert said["lang"] == tag
        assert "{email}" in said["reason"]
        assert "{n}" in said["issue"]
        assert "{author}" in said["by"]
        assert len(said["quotes"]) == 2
        assert all(value for value in said.values()), tag
    assert words("sv")["lang"] == "en"


# --- the markup --------------------------------------------------------------------------------


class Outline(HTMLParser):
    """What a screen reader relies on, collected from the message."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.tables: list[dict[str, str | None]] = []
        self.images: list[dict[str, str | None]] = []
        self.links: list[list[str]] = []
        self.title = ""
        self.html_attrs: dict[str, str | None] = {}
        self._in: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        found = dict(attrs)
        if tag == "table":
            self.tables.append(found)
        elif tag == "img":
            self.images.append(found)
        elif tag == "html":
            self.html_attrs = found
        elif tag == "a":
            self.links.append([])
        self._in.append(tag)

    def handle_endtag(self, tag: str) -> None:
        if tag in self._in:
            while self._in.pop() != tag:
                pass

    def handle_data(self, data: str) -> None:
        if "title" in self._in:
            self.title += data
        if "a" in self._in and self.links:
            self.links[-1].append(data)


VAGUE_LINK_TEXT = {"click here", "here", "read more", "more", "link", "this link", "click"}


@pytest.mark.parametrize("article", EXAMPLES, ids=lambda p: p.name)
def test_the_markup_is_accessible(article: Path) -> None:
    html = render_message(article, **EXTRAS)
    outline = Outline()
    outline.feed(html)
    layout = [t for t in outline.tables if "class" in t]  # an article's own tables hold data
    assert len(layout) >= 2, "the layout is made of tables"
    assert all(t.get("role") == "presentation" for t in layout), layout
    assert outline.title.strip() == article.stem
    assert outline.html_attrs.get("lang")
    assert outline.html_attrs.get("dir") in {"ltr", "rtl"}
    assert all(img.get("alt") is not None for img in outline.images)
    texts = [" ".join("".join(parts).split()).lower() for parts in outline.links]
    assert all(texts), "a link without text"
    assert not VAGUE_LINK_TEXT & set(texts), texts


def test_the_arabic_example_is_arabic_and_right_to_left() -> None:
    html = render_message(ARABIC)
    assert '<html lang="ar" dir="rtl"' in html
    assert re.search(r'<div class="wrapper" [^>]*lang="ar" dir="rtl"', html)


# --- in the browser ----------------------------------------------------------------------------

WIDTHS = {"desktop": 800, "phone": 375}
SCHEMES = ("light", "dark")


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    if CHROMIUM is None:
        pytest.skip("Chromium is not installed (.ci/run installs it)")
    with chromium() as launched:
        yield launched


@pytest.fixture
def page_of(browser: Any) -> Iterator[Any]:
    pages: list[Any] = []

    def open_(html: str, width: int, scheme: str = "light") -> Any:
        pages.append(open_in(browser, html, width, scheme))
        return pages[-1]

    yield open_
    for page in pages:
        page.close()


def _serious(page: Any) -> list[str]:
    from axe_playwright_python.sync_playwright import Axe

    results = Axe().run(page).response
    return [
        f"{v['id']} ({v['impact']}): {v['help']} at {[n['target'] for n in v['nodes']][:3]}"
        for v in results["violations"]
        if v["impact"] in {"serious", "critical"}
    ]


@needs_chromium
@pytest.mark.parametrize("scheme", SCHEMES)
@pytest.mark.parametrize("width", WIDTHS.values(), ids=WIDTHS.keys())
@pytest.mark.parametrize("article", EXAMPLES, ids=lambda p: p.name)
def test_axe_finds_nothing_serious(page_of: Any, article: Path, width: int, scheme: str) -> None:
    page = page_of(render_message(article), width, scheme)
    assert _serious(page) == []


@needs_chromium
@pytest.mark.parametrize("scheme", SCHEMES)
def test_axe_finds_nothing_serious_with_everything_shown(page_of: Any, scheme: str) -> None:
    """Logo, "View in browser", test-send banner, untranslated words marked as English."""
    html = render_message(EXAMPLES[0], language="sv", test_send=True, **EXTRAS)
    page = page_of(html, WIDTHS["phone"], scheme)
    assert _serious(page) == []


# Text whose contrast must reach 4.5:1 (WCAG AA for normal text), against what is really behind it.
CONTRAST_SELECTORS = (
    ".article p", ".article li", ".article a", ".article td", ".title", ".subtitle", ".byline",
    ".motto-text", ".motto-attribution", ".kicker", ".masthead-meta", ".topbar-link",
    ".footer-note", ".footer-link", ".footer-address", ".footer-email", ".test-banner",
)  # fmt: skip
_COLOURS = """(selector) => {
  const el = document.querySelector(selector);
  if (!el) return null;
  let back = el, bg = 'rgba(0, 0, 0, 0)';
  while (back) {
    bg = getComputedStyle(back).backgroundColor;
    if (bg !== 'rgba(0, 0, 0, 0)' && bg !== 'transparent') break;
    back = back.parentElement;
  }
  return [getComputedStyle(el).color, back ? bg : 'rgb(255, 255, 255)'];
}"""


def _channels(css: str) -> tuple[float, ...]:
    return tuple(float(v) for v in re.findall(r"[\d.]+", css)[:3])


def _luminance(rgb: tuple[float, ...]) -> float:
    def linear(channel: float) -> float:
        c = channel / 255
        return c / 12.92 if c <= 0.04045 else ((c + 0.055) / 1.055) ** 2.4

    r, g, b = (linear(c) for c in rgb)
    return 0.2126 * r + 0.7152 * g + 0.0722 * b


def contrast(foreground: str, background: str) -> float:
    """The WCAG contrast ratio of two CSS ``rgb()`` colours."""
    light, dark = sorted((_luminance(_channels(foreground)), _luminance(_channels(background))), reverse=True)
    return (light + 0.05) / (dark + 0.05)


def test_contrast_formula() -> None:
    assert contrast("rgb(0, 0, 0)", "rgb(255, 255, 255)") == pytest.approx(21)
    assert contrast("rgb(118, 118, 118)", "rgb(255, 255, 255)") == pytest.approx(4.54, abs=0.01)


KICKER_ARTICLE = (
    "University News\n\nThe greenhouse opens its doors to every student this spring\n\n"
    "By Jane Doe\n\n" + "The new greenhouse is open to students from every faculty this term. " * 3 + "\n"
)


def measure_contrast(page: Any, mode: str) -> dict[str, float]:
    """Contrast of each text style present in the page; ``mode`` "outlook.com dark" marks the
    page as Outlook.com does when it darkens a message."""
    if mode.startswith("outlook"):
        page.evaluate(
            "document.documentElement.setAttribute('data-ogsc', '');"
            "document.documentElement.setAttribute('data-ogsb', '')"
        )
    measured = {}
    for selector in CONTRAST_SELECTORS:
        colours = page.evaluate(_COLOURS, selector)
        if colours:
            measured[selector] = round(contrast(*colours), 2)
    return measured


@needs_chromium
@pytest.mark.parametrize("mode", ["light", "dark", "outlook.com dark"])
def test_text_contrast_in_both_schemes(page_of: Any, mode: str, tmp_path: Path) -> None:
    kicker = tmp_path / "kicker.txt"
    kicker.write_text(KICKER_ARTICLE, encoding="utf-8")
    measured: dict[str, float] = {}
    for article in (EXAMPLES[0], kicker):
        page = page_of(
            render_message(article, test_send=True, **EXTRAS),
            WIDTHS["desktop"],
            "dark" if mode == "dark" else "light",
        )
        measured |= measure_contrast(page, mode)
    assert set(measured) == set(CONTRAST_SELECTORS), "every text style was measured"
    low = {selector: ratio for selector, ratio in measured.items() if ratio < 4.5}
    assert not low, f"below 4.5:1 in {mode}: {low}"
