"""The built-in message in a real browser (headless Chromium through Playwright): 600px on a
desktop, no sideways scrolling on a phone (also when a client drops <style>), a dark card in
dark mode (also Outlook.com's), and a type scale that reads on a phone.

Runs where Chromium is installed (CI installs it, see .ci/run). The browser never reaches the
network: every request other than the page itself is refused."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from io import BytesIO
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import CHROMIUM, CHROMIUM_ARGS
from tests.test_render import EXAMPLES, EXTRAS, GARDEN, render_message

pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="Chromium is not installed (.ci/run installs it)")

LONG_WORDS = (
    "Long links and words must wrap\n\nRegister here: https://example.org/events/2024/annual-conference/"
    "registration?utm_source=newsletter&utm_medium=email&utm_campaign=june2024&utm_content=footer-link\n"
    "Pneumonoultramicroscopicsilicovolcanoconiosis-and-more-hyphenated-compound-words-without-spaces\n"
)


# --- the browser -------------------------------------------------------------------------------


@contextmanager
def chromium() -> Iterator[Any]:
    """The system Chromium, driven by Playwright (no browser is ever downloaded)."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield launched
        finally:
            launched.close()


def _local_only(route: Any) -> None:
    """Let the page itself load; refuse anything that would leave this machine."""
    url: str = route.request.url
    if url.startswith(("about:", "data:", "file:", "http://127.0.0.1/")):
        route.continue_()
    else:
        route.abort("blockedbyclient")


def open_in(browser: Any, html: str, width: int, scheme: str = "light", *, strip_style: bool = False) -> Any:
    """A page ``width`` pixels wide showing ``html`` in the ``scheme`` colour scheme."""
    page = browser.new_page(viewport={"width": width, "height": 900}, color_scheme=scheme)
    page.route("**/*", _local_only)
    page.set_content(html, wait_until="load")
    if strip_style:  # Gmail's apps for non-Google accounts drop <style> and its @media rules
        page.evaluate("document.querySelectorAll('style').forEach(s => s.remove())")
    return page


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    with chromium() as launched:
        yield launched


@pytest.fixture
def open_page(browser: Any) -> Iterator[Callable[..., Any]]:
    """``open_page(html, width, scheme="light", strip_style=False)``; closed after the test."""
    pages: list[Any] = []

    def open_(html: str, width: int, scheme: str = "light", *, strip_style: bool = False) -> Any:
        pages.append(open_in(browser, html, width, scheme, strip_style=strip_style))
        return pages[-1]

    yield open_
    for page in pages:
        page.close()


def scroll_width(page: Any) -> int:
    return int(page.evaluate("document.documentElement.scrollWidth"))


def box_width(page: Any, selector: str) -> float:
    return float(page.evaluate(f"document.querySelector({selector!r}).getBoundingClientRect().width"))


def style_of(page: Any, selector: str, prop: str) -> str:
    return str(page.evaluate(f"getComputedStyle(document.querySelector({selector!r})).{prop}"))


def px(value: str) -> float:
    return float(value.removesuffix("px"))


# --- layout ------------------------------------------------------------------------------------


@pytest.fixture(scope="module", params=[*EXAMPLES, "long-words"], ids=lambda p: getattr(p, "name", p))
def message(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> str:
    article = request.param
    if article == "long-words":
        article = tmp_path_factory.mktemp("browser") / "long.txt"
        article.write_text(LONG_WORDS, encoding="utf-8")
    return render_message(article, **EXTRAS)


def test_desktop_layout_is_600px(message: str, open_page: Callable[..., Any]) -> None:
    page = open_page(message, 1024)
    assert box_width(page, "table.container") == 600
    assert scroll_width(page) <= 1024


@pytest.mark.parametrize("width", [320, 375, 390])
def test_phone_layout_never_scrolls_sideways(message: str, open_page: Callable[..., Any], width: int) -> None:
    page = open_page(message, width)
    assert scroll_width(page) <= width, f"the page is {scroll_width(page)}px wide in a {width}px window"
    assert box_width(page, "table.container") <= width


@pytest.mark.parametrize("width", [320, 375])
def test_phone_without_style_element_is_fluid(
    message: str, open_page: Callable[..., Any], width: int
) -> None:
    """Clients that drop <style> still get the inlined width:100%; max-width:600px."""
    page = open_page(message, width, strip_style=True)
    assert page.evaluate("document.querySelectorAll('style').length") == 0
    assert scroll_width(page) <= width, f"the page is {scroll_width(page)}px wide in a {width}px window"
    assert box_width(page, "table.container") <= width


def test_outlook_for_windows_keeps_its_600px_table(message: str) -> None:
    assert '<!--[if mso]><table role="presentation" width="600"' in message


# --- dark mode ---------------------------------------------------------------------------------


def _luminance(png: bytes) -> float:
    from PIL import Image, ImageStat

    grey = Image.open(BytesIO(png)).convert("L")
    return float(ImageStat.Stat(grey).mean[0]) / 255


def _card_crop(page: Any) -> dict[str, float]:
    box = page.evaluate(
        "(() => { const r = document.querySelector('td.content').getBoundingClientRect();"
        " return {x: r.x, y: r.y, width: r.width, height: Math.min(r.height, 600)}; })()"
    )
    return {k: float(v) for k, v in box.items()}


@pytest.mark.parametrize(("scheme", "dark"), [("light", False), ("dark", True)])
def test_the_card_follows_the_colour_scheme(
    open_page: Callable[..., Any], scheme: str, dark: bool, tmp_path: Path
) -> None:
    page = open_page(render_message(EXAMPLES[0], **EXTRAS), 600, scheme)
    shot = tmp_path / f"{scheme}.png"
    png = page.screenshot(path=str(shot), clip=_card_crop(page))
    luminance = _luminance(png)
    background = style_of(page, "table.container", "backgroundColor")
    if dark:
        assert luminance < 0.4, f"the card is not dark ({luminance:.2f} of white)"
        assert background == "rgb(27, 30, 34)"
    else:
        assert luminance > 0.75, f"the card is not light ({luminance:.2f} of white)"
        assert background == "rgb(255, 255, 255)"


def test_outlook_com_dark_rules_apply(open_page: Callable[..., Any]) -> None:
    """Outlook.com marks the message with data-ogsc/data-ogsb when it darkens it."""
    page = open_page(render_message(EXAMPLES[0], **EXTRAS), 600)
    page.evaluate(
        "document.documentElement.setAttribute('data-ogsc', '');"
        "document.documentElement.setAttribute('data-ogsb', '')"
    )
    assert style_of(page, "table.container", "backgroundColor") == "rgb(27, 30, 34)"
    assert style_of(page, "h1.title", "color") == "rgb(207, 224, 255)"
    assert style_of(page, "td.footer", "backgroundColor") == "rgb(21, 24, 27)"


# --- type on a phone ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def garden() -> str:
    return render_message(GARDEN, **EXTRAS)


@pytest.mark.parametrize("width", [375, 800])
def test_type_scale_steps_from_title_to_subheadings(
    garden: str, open_page: Callable[..., Any], width: int
) -> None:
    page = open_page(garden, width)
    title = px(style_of(page, "h1.title", "fontSize"))
    h2 = px(style_of(page, ".article h2", "fontSize"))
    h3 = px(style_of(page, ".article h3", "fontSize"))
    motto = px(style_of(page, ".motto-text", "fontSize"))
    body = px(style_of(page, ".article p", "fontSize"))
    assert title >= 1.3 * h2, (title, h2)
    assert h2 > h3 >= body
    assert motto <= 0.6 * title, "the motto must not compete with the headline"


@pytest.mark.parametrize("width", [375, 800])
@pytest.mark.parametrize("selector", [".article p", ".article li", ".article td"])
def test_body_text_is_at_least_16px_with_room_between_lines(
    garden: str, open_page: Callable[..., Any], width: int, selector: str
) -> None:
    page = open_page(garden, width)
    size = px(style_of(page, selector, "fontSize"))
    if selector == ".article td":
        assert size >= 15  # table cells: a little smaller on a phone, so columns fit
        return
    assert size >= 16
    assert px(style_of(page, selector, "lineHeight")) >= 1.5 * size


@pytest.mark.parametrize("width", [320, 375, 800])
@pytest.mark.parametrize("selector", ["a.topbar-link", "a.footer-link"])
def test_own_links_are_touch_targets_of_24px(
    garden: str, open_page: Callable[..., Any], width: int, selector: str
) -> None:
    page = open_page(garden, width)
    height = float(page.evaluate(f"document.querySelector({selector!r}).getBoundingClientRect().height"))
    assert height >= 24, f"{selector} is {height}px tall"
