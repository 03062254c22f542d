"""The built-in layout in a real browser (headless Chromium): 600px on a desktop, no sideways
scrolling on a phone. Runs where Chromium is installed (CI installs it, see .ci/run)."""

from __future__ import annotations

import html
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from dispatch.campaign import plan_issue
from dispatch.settings import Settings
from dispatch.subscribers import Subscriber

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="Chromium is not installed (.ci/run installs it)")

# The message is shown in an iframe exactly ``width`` pixels wide (a browser window cannot be
# narrower than 500px); the frame reports its document's scroll width and the container's width.
FRAME = """<!DOCTYPE html><html><body style="margin:0">
<iframe id="f" style="border:0" width="{width}" height="900" srcdoc="{page}" onload="
  const d = this.contentDocument, box = d.querySelector('table.container');
  document.body.setAttribute('data-measure',
    [d.documentElement.scrollWidth, box ? box.getBoundingClientRect().width : -1].join(','));
"></iframe></body></html>"""


def measure(page: Path, width: int, tmp_path: Path) -> tuple[int, float]:
    """(scroll width of the message, width of its 600px container) in a frame ``width`` wide."""
    probe = page.with_name(f"probe-{width}.html")
    framed = FRAME.format(width=width, page=html.escape(page.read_text(encoding="utf-8"), quote=True))
    probe.write_text(framed, encoding="utf-8")
    assert CHROMIUM is not None
    result = subprocess.run(
        [CHROMIUM, "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         f"--user-data-dir={tmp_path / f'profile-{width}'}", "--window-size=1280,1000",
         "--dump-dom", probe.as_uri()],
        capture_output=True, text=True, timeout=120, check=True,
    )  # fmt: skip
    found = re.search(r'data-measure="(\d+),([\d.]+)"', result.stdout)
    assert found, result.stdout[-500:]
    return int(found[1]), float(found[2])


LONG_WORDS = (
    "Long links and words must wrap\n\nRegister here: https://example.org/events/2024/annual-conference/"
    "registration?utm_source=newsletter&utm_medium=email&utm_campaign=june2024&utm_content=footer-link\n"
    "Pneumonoultramicroscopicsilicovolcanoconiosis-and-more-hyphenated-compound-words-without-spaces\n"
)


@pytest.fixture(scope="module", params=["example", "long-words"])
def page(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Path:
    from tests.conftest import BASE_ENV, EXAMPLE_ARTICLE, EXAMPLE_SUBSCRIBERS

    folder = tmp_path_factory.mktemp("browser")
    article = EXAMPLE_ARTICLE
    if request.param == "long-words":
        article = folder / "long.txt"
        article.write_text(LONG_WORDS, encoding="utf-8")
    issue = plan_issue(article, EXAMPLE_SUBSCRIBERS, Settings.from_mapping(BASE_ENV))
    first = next(s for s in issue.subscribers if isinstance(s, Subscriber))
    path = folder / "message.html"
    path.write_text(issue.bodies(first)[0], encoding="utf-8")
    return path


def test_desktop_layout_is_600px(page: Path, tmp_path: Path) -> None:
    scroll, container = measure(page, 1024, tmp_path)
    assert container == 600
    assert scroll <= 1024


@pytest.mark.parametrize("width", [320, 390])
def test_phone_layout_never_scrolls_sideways(page: Path, tmp_path: Path, width: int) -> None:
    scroll, container = measure(page, width, tmp_path)
    assert scroll <= width, f"the page is {scroll}px wide in a {width}px window"
    assert container <= width
