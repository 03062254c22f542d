"""The sign-off page: first as text (escaping, what it lists), then over a real dry run's folder
in a real Chromium (frames, the dark switch, axe-core, no network). The browser tests run where
Chromium is installed (.ci/run installs it) and say so when skipped."""

from __future__ import annotations

import email
import email.policy
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from email.message import EmailMessage
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest

from dispatch.proof.signoff import (
    DESKTOP_WIDTH,
    PHONE_WIDTH,
    FirstMessage,
    MessageEntry,
    ProofData,
    proof_page_chunks,
    render_proof_page,
)
from tests.conftest import CHROMIUM, CHROMIUM_ARGS, needs_chromium

ROOT = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class Row:
    line: int
    reason: str


class Tags(HTMLParser):
    """Every element and attribute name the page really contains."""

    def __init__(self) -> None:
        super().__init__()
        self.tags: set[str] = set()
        self.attrs: set[str] = set()

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.add(tag)
        self.attrs.update(name for name, _ in attrs)


def parse(page: str) -> Tags:
    tags = Tags()
    tags.feed(page)
    tags.close()
    return tags


def data(**changes: Any) -> ProofData:
    values: dict[str, Any] = {
        "subject": "Spring issue",
        "sender": "Newsroom <news@example.org>",
        "campaign": "spring-1a2b3c",
        "to_send": 2,
        "first": FirstMessage(
            "00001-ann@example.org.html", "Hello\n", "Subject: Spring issue\n", "ann@example.org"
        ),
        "messages": [
            MessageEntry(
                1, "ann@example.org", "Ann", "00001-ann@example.org.html", "00001-ann@example.org.eml"
            )
        ],
    }
    return ProofData(**(values | changes))


HOSTILE = '"><img src=x onerror=alert(1)><script>alert(2)</script>'
RLO = "gro.elpmaxe@\u202eann"


def test_hostile_values_are_text_never_markup() -> None:
    page = render_proof_page(
        data(
            subject=f"Hi {HOSTILE}",
            sender=f"{HOSTILE} <news@example.org>",
            reply_to=RLO,
            list_id=HOSTILE,
            campaign=HOSTILE,
            skipped=[Row(4, f"bad row </td></tr></table>{HOSTILE}")],
            warnings=[HOSTILE],
            problems=[HOSTILE],
            first=FirstMessage("m.html", f"text {HOSTILE}", f"Subject: {HOSTILE}\nTo: {RLO}\n", RLO),
            messages=[MessageEntry(1, RLO, HOSTILE, "m.html", "m.eml", status=HOSTILE)],
        )
    )
    found = parse(page)
    assert "script" not in found.tags
    assert "img" not in found.tags
    assert not {name for name in found.attrs if name.startswith("on")}
    assert "&lt;script&gt;alert(2)&lt;/script&gt;" in page
    assert page.count("<table>") == page.count("</table>") == 2  # the skipped rows and the messages
    # a right-to-left override would reverse the address on screen: it is shown as a code instead
    assert "\u202e" not in page
    assert "U+202E</span>" in page
    assert "<bdi>gro.elpmaxe@" in page


def test_right_to_left_names_are_kept_and_isolated() -> None:
    page = render_proof_page(
        data(messages=[MessageEntry(1, "layla@example.org", "ليلى أحمد", "m.html", "m.eml")])
    )
    assert "<td><bdi>ليلى أحمد</bdi></td>" in page  # shown as written, without leaking into the row


def test_control_characters_are_visible_and_text_part_keeps_its_lines() -> None:
    page = render_proof_page(
        data(subject="a\x1b[31mb", first=FirstMessage("m.html", "line one\r\nline two\x07\n", "X: y\n"))
    )
    assert "\x1b" not in page
    assert "\x07" not in page
    assert "U+001B" in page
    assert "line one\nline two" in page


def test_file_names_become_relative_links_only() -> None:
    page = render_proof_page(
        data(messages=[MessageEntry(1, "a@example.org", "A", "javascript:alert(1)", 'x" onclick="y.eml')])
    )
    assert 'href="javascript%3Aalert%281%29"' in page
    assert 'href="x%22%20onclick%3D%22y.eml"' in page
    assert "onclick" not in parse(page).attrs


@pytest.mark.parametrize("name", ["../secret.html", "/etc/passwd", "", "a\\..\\b.html", "sub/../../x.eml"])
def test_file_names_outside_the_folder_are_refused(name: str) -> None:
    with pytest.raises(ValueError, match="relative to the proof page"):
        MessageEntry(1, "a@example.org", "A", "ok.html", name)


def test_thousands_of_skipped_rows_show_the_first_ones_and_a_count() -> None:
    rows = [Row(n, f"invalid address on line {n}") for n in range(2, 3002)]
    page = render_proof_page(data(skipped=rows, max_skipped=50))
    assert page.count("invalid address on line") == 50
    assert "line 51<" in page
    assert "line 52<" not in page
    assert "… and 2,950 more skipped rows, not listed here." in page
    assert "<dt>Skipped rows</dt><dd>3,000</dd>" in page
    assert "<details>" in page  # folded: the message stays near the top


def test_blocking_problems_come_first_and_stand_out() -> None:
    page = render_proof_page(data(problems=["the HTML template shows no unsubscribe link"], warnings=["w1"]))
    assert (
        page.index("A real send would refuse: 1 problem")
        < page.index("1 warning")
        < page.index('<h2 id="summary">')
    )
    assert 'class="box problems"' in page
    assert "No blocking problems" in render_proof_page(data())


def test_summary_lists_every_fact() -> None:
    page = render_proof_page(
        data(reply_to="editors@example.org", list_id="News <news.example.org>", to_send=1234, already_sent=56)
    )
    for label, value in [
        ("Subject", "<bdi>Spring issue</bdi>"),
        ("From", "<bdi>Newsroom &lt;news@example.org&gt;</bdi>"),
        ("Reply-To", "<bdi>editors@example.org</bdi>"),
        ("List-Id", "<bdi>News &lt;news.example.org&gt;</bdi>"),
        ("Campaign", "<bdi>spring-1a2b3c</bdi>"),
        ("Will be sent", "1,234"),
        ("Already sent", "56"),
    ]:
        assert f"<dt>{label}</dt><dd>{value}</dd>" in page


def test_messages_can_stream_from_a_generator() -> None:
    def entries() -> Iterator[MessageEntry]:
        for n in range(1, 1001):
            yield MessageEntry(n, f"r{n}@example.org", "", f"{n:05d}.html", f"{n:05d}.eml", "already sent")

    chunks = list(proof_page_chunks(data(messages=entries())))
    page = "".join(chunks)
    assert len(chunks) > 1000
    assert "1,000 messages written." in page
    assert page.count("already sent") == 1000


def test_no_message_written_says_so() -> None:
    page = render_proof_page(data(first=None, messages=[], to_send=0))
    assert "No message was written" in page
    assert "<iframe" not in page


def test_the_page_runs_no_script_and_loads_nothing_remote() -> None:
    page = render_proof_page(data())
    found = parse(page)
    assert "script" not in found.tags
    assert "link" not in found.tags
    assert "Content-Security-Policy" in page
    assert "http://" not in page
    assert "https://" not in page


# ---- A real dry run's folder, in Chromium ---------------------------------------------------


DRY_RUN = "send examples/thin-line-in-iraq.txt -s subscribers.example.csv --env-file .env.example --dry-run"


def dry_run(out: Path, state: Path) -> dict[str, Any]:
    """Run the CLI's dry run of the example issue into ``out``; return its JSON summary.

    A dry run that finds blocking problems still writes every message (and exits 2): the page
    shows those problems, so only the written folder and the summary matter here.
    """
    environ = {k: v for k, v in os.environ.items() if not k.startswith("DISPATCH_")}
    result = subprocess.run(
        [sys.executable, "-m", "dispatch", *DRY_RUN.split(), "--out", str(out), "--json"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env=environ | {"DISPATCH_STATE_DIR": str(state)},
    )
    assert sorted(out.glob("*.eml")), f"exit {result.returncode}: {result.stderr[-2000:]}"
    summary, _ = json.JSONDecoder().raw_decode(result.stdout)
    assert isinstance(summary, dict)
    return summary


def read_eml(path: Path) -> EmailMessage:
    message = email.message_from_bytes(path.read_bytes(), policy=email.policy.default)
    assert isinstance(message, EmailMessage)
    return message


def proof_from_folder(folder: Path, summary: dict[str, Any]) -> ProofData:
    """What the lead's dry run hands to the page, read back from the folder it wrote."""
    emls = sorted(folder.glob("*.eml"))
    first = read_eml(emls[0])
    text_part = first.get_body(("plain",))
    assert text_part is not None
    return ProofData(
        subject=str(first["Subject"]),
        sender=str(first["From"]),
        reply_to=str(first["Reply-To"] or ""),
        list_id=str(first["List-Id"] or ""),
        campaign=summary["campaign"],
        to_send=summary["pending"],
        already_sent=summary["already_sent"],
        skipped=[Row(s["line"], s["reason"]) for s in summary["skipped_rows"]],
        warnings=summary["warnings"],
        problems=summary.get("blocking", []),
        first=FirstMessage(
            emls[0].with_suffix(".html").name,
            text_part.get_content(),
            "".join(f"{k}: {v}\n" for k, v in first.items()),
            str(first["To"]),
        ),
        messages=[
            MessageEntry(n, str(read_eml(p)["To"]), "", p.with_suffix(".html").name, p.name)
            for n, p in enumerate(emls, 1)
        ],
    )


@pytest.fixture(scope="module")
def proof(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, ProofData]:
    base = tmp_path_factory.mktemp("proofpage")
    folder = base / "out"
    proof = proof_from_folder(folder, dry_run(folder, base / "state"))
    page = folder / "proof.html"
    page.write_text(render_proof_page(proof), encoding="utf-8")
    return page, proof


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """One headless Chromium for the module's browser tests."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


@pytest.fixture
def browser_page(browser: Any, proof: tuple[Path, ProofData]) -> Iterator[tuple[Any, list[str]]]:
    """The proof page open in a fresh context (no colour scheme forced), and every URL requested."""
    from playwright.sync_api import Route

    requested: list[str] = []

    def local_only(route: Route) -> None:
        if route.request.url.startswith("file:"):
            route.continue_()
        else:
            route.abort("blockedbyclient")

    # Playwright forces "light" on every frame by default; "null" leaves each frame's scheme to
    # the page, as in a real browser.
    context = browser.new_context(viewport={"width": 1280, "height": 2200}, color_scheme="null")
    context.on("request", lambda request: requested.append(request.url))
    context.route("**/*", local_only)
    page = context.new_page()
    page.goto(proof[0].as_uri(), wait_until="load")
    yield page, requested
    context.close()


def frame_of(page: Any, key: str) -> Any:
    frame = page.locator(f'iframe[title*="{key} width"]').element_handle().content_frame()
    assert frame is not None
    return frame


def turn_dark(page: Any) -> None:
    """Turn the switch on from the keyboard, as a person without a mouse would."""
    switch = page.get_by_role("switch", name="Show the message in dark mode")
    switch.focus()
    page.keyboard.press("Space")
    assert switch.is_checked()


def luminance(png: bytes, box: tuple[int, int, int, int]) -> float:
    """Mean luminance (0 black … 1 white) of ``box`` in a screenshot."""
    import io

    from PIL import Image, ImageStat

    with Image.open(io.BytesIO(png)) as image:
        return float(ImageStat.Stat(image.convert("L").crop(box)).mean[0]) / 255


@needs_chromium
def test_frames_show_the_message_at_desktop_and_phone_width(
    browser_page: tuple[Any, list[str]], proof: tuple[Path, ProofData]
) -> None:
    page, _ = browser_page
    title = "As elections approach, the US walk a thin line in Iraq"
    for key, width in (("desktop", DESKTOP_WIDTH), ("phone", PHONE_WIDTH)):
        frame = frame_of(page, key)
        assert frame.evaluate("innerWidth") == width
        assert frame.evaluate("document.documentElement.scrollWidth") <= width  # nothing cut off
        assert title in frame.locator("body").inner_text()
        assert proof[1].first is not None
        assert frame.url.endswith(proof[1].first.html.replace("@", "%40"))
    card = frame_of(page, "desktop").evaluate(
        "document.querySelector('table.container').getBoundingClientRect().width"
    )
    assert card == 600  # the desktop frame shows the whole 600 px card, not the phone layout


@needs_chromium
def test_dark_switch_turns_the_framed_message_dark(browser_page: tuple[Any, list[str]]) -> None:
    page, _ = browser_page
    dark_query = "matchMedia('(prefers-color-scheme: dark)').matches"
    frames = [frame_of(page, key) for key in ("desktop", "phone")]
    box = frames[0].evaluate(
        "(() => { const r = document.querySelector('table.container').getBoundingClientRect();"
        " return [r.left, r.top, r.right, Math.min(r.bottom, innerHeight)].map(Math.round); })()"
    )
    card = (box[0] + 1, box[1] + 1, box[2] + 1, box[3] + 1)  # the frame's 1 px border
    margin = (2, 40, box[0] - 2, 800)  # the page around the card, left of it
    desktop = page.locator('iframe[title*="desktop width"]')
    light_png = desktop.screenshot()
    assert [frame.evaluate(dark_query) for frame in frames] == [False, False]

    turn_dark(page)

    assert [frame.evaluate(dark_query) for frame in frames] == [True, True]
    dark_png = desktop.screenshot()
    assert luminance(light_png, card) > 0.7
    assert luminance(dark_png, card) < 0.4
    assert luminance(dark_png, margin) < 0.4


@needs_chromium
@pytest.mark.parametrize("dark", [False, True], ids=["light", "dark-switch-on"])
@pytest.mark.parametrize("width", [1280, 375], ids=["desktop-viewer", "phone-viewer"])
def test_axe_finds_no_serious_or_critical_violation(
    browser_page: tuple[Any, list[str]], dark: bool, width: int
) -> None:
    from axe_playwright_python.sync_playwright import Axe

    page, _ = browser_page
    page.set_viewport_size({"width": width, "height": 900})
    if dark:
        turn_dark(page)
    # The page itself: the framed message is the template's own concern (tested there).
    results = Axe().run(page, options={"resultTypes": ["violations"], "iframes": False})
    bad = [
        (v["id"], v["impact"], len(v["nodes"]))
        for v in results.response["violations"]
        if v["impact"] in {"serious", "critical"}
    ]
    assert bad == []
    assert len(results.response["passes"]) > 10  # axe really ran its rules over the page


@needs_chromium
def test_nothing_leaves_file_urls(browser_page: tuple[Any, list[str]], proof: tuple[Path, ProofData]) -> None:
    page, requested = browser_page
    turn_dark(page)
    page.wait_for_load_state("networkidle")
    assert proof[1].first is not None
    assert sum(url.endswith(proof[1].first.html.replace("@", "%40")) for url in requested) == 2  # both frames
    assert [url for url in requested if not url.startswith("file://")] == []
