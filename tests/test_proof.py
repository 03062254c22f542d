"""Pictures and a PDF for approval, made by the system Chromium. The tests that need a real
Chromium are skipped, saying so, only where none is installed (.ci/run installs it); finding
Chromium and Chromium's failures are tested everywhere with stand-in executables."""

from __future__ import annotations

import email
import email.policy
import re
import shlex
import sys
import threading
import unicodedata
import zlib
from collections.abc import Iterator
from email.message import EmailMessage
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from PIL import Image, ImageStat

from dispatch.errors import ConfigError, DispatchError, ExitCode, InputError
from dispatch.proof.chromium import VIEWPORT_HEIGHT, ProofError, find_chromium, pdf, screenshots
from dispatch.proof.signoff import DESKTOP_WIDTH, PHONE_WIDTH
from tests.conftest import CHROMIUM, needs_chromium
from tests.test_proofpage import dry_run


class Recorder(BaseHTTPRequestHandler):
    """A web server on 127.0.0.1 that only notes what was asked of it."""

    seen: list[str]

    def do_GET(self) -> None:
        self.seen.append(self.path)
        self.send_response(404)
        self.end_headers()

    def log_message(self, format: str, *args: object) -> None:
        return


@pytest.fixture
def web(tmp_path: Path) -> Iterator[tuple[str, list[str]]]:
    seen: list[str] = []
    handler = type("Handler", (Recorder,), {"seen": seen})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}", seen
    server.shutdown()
    server.server_close()


LONG = """<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width"><meta name="color-scheme" content="light dark">
<title>Spring proof</title><link rel="stylesheet" href="{web}/remote.css">
<style>
body {{ margin: 0; background: #dddddd; }}
.card {{ width: 600px; margin: 0 auto; padding: 40px 0 0 0; background: #ffffff; color: #222222; }}
@media (max-width: 620px) {{ .card {{ width: 100%; }} }}
@media (prefers-color-scheme: dark) {{
  body {{ background: #000000; }} .card {{ background: #202020; color: #eeeeee; }}
}}
</style></head><body><div class="card"><h1>Spring proof</h1>
<img src="{web}/remote.png" width="200" height="50" alt="A remote picture">
{paragraphs}</div></body></html>"""


@pytest.fixture
def long_message(tmp_path: Path, web: tuple[str, list[str]]) -> Path:
    """A long message with a 600 px card, dark rules, and pictures on a web server."""
    paragraph = "<p>" + "A line of the article that goes on. " * 12 + "</p>\n"
    path = tmp_path / "long.html"
    path.write_text(LONG.format(web=web[0], paragraphs=paragraph * 60), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def dry_run_message(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, EmailMessage]:
    """The first message of a real dry run of the example issue: its ``.html`` and parsed ``.eml``."""
    base = tmp_path_factory.mktemp("proof")
    dry_run(base / "out", base / "state")
    eml = sorted((base / "out").glob("*.eml"))[0]
    message = email.message_from_bytes(eml.read_bytes(), policy=email.policy.default)
    assert isinstance(message, EmailMessage)
    return eml.with_suffix(".html"), message


def image(path: Path) -> Image.Image:
    with Image.open(path) as picture:
        return picture.convert("RGB")


def luminance(picture: Image.Image, box: tuple[int, int, int, int]) -> float:
    return float(ImageStat.Stat(picture.convert("L").crop(box)).mean[0]) / 255


def white_run(picture: Image.Image, y: int) -> tuple[int, int]:
    """(first x, count) of the pure white pixels in row ``y``."""
    xs = [x for x in range(picture.width) if picture.getpixel((x, y)) == (255, 255, 255)]
    return (xs[0], len(xs)) if xs else (-1, 0)


@needs_chromium
def test_screenshots_are_full_pages_at_desktop_and_phone_width(
    long_message: Path, tmp_path: Path, web: tuple[str, list[str]]
) -> None:
    assert CHROMIUM is not None
    written = screenshots(long_message, tmp_path / "png", CHROMIUM)
    assert [p.name for p in written] == ["desktop.png", "phone.png", "dark.png"]
    desktop, phone, dark = (image(p) for p in written)
    assert (desktop.width, phone.width, dark.width) == (DESKTOP_WIDTH, PHONE_WIDTH, DESKTOP_WIDTH)
    for picture in (desktop, phone, dark):
        assert picture.height > 2 * VIEWPORT_HEIGHT  # the whole article, not one screen of it
    assert white_run(desktop, 10) == ((DESKTOP_WIDTH - 600) // 2, 600)  # the whole card, centred
    assert white_run(phone, 10) == (0, PHONE_WIDTH)  # the phone layout fills the screen
    card = (20, 0, 620, 2 * VIEWPORT_HEIGHT)
    assert luminance(desktop, card) > 0.8
    assert luminance(dark, card) < 0.4
    assert web[1] == []  # the remote stylesheet and picture were never fetched


@needs_chromium
def test_screenshots_of_a_real_dry_run_message(
    dry_run_message: tuple[Path, EmailMessage], tmp_path: Path
) -> None:
    assert CHROMIUM is not None
    written = screenshots(dry_run_message[0], tmp_path, CHROMIUM)
    desktop, phone, dark = (image(p) for p in written)
    assert [p.width for p in (desktop, phone, dark)] == [DESKTOP_WIDTH, PHONE_WIDTH, DESKTOP_WIDTH]
    assert all(p.height > VIEWPORT_HEIGHT for p in (desktop, phone, dark))
    card = (24, 40, DESKTOP_WIDTH - 24, 2 * VIEWPORT_HEIGHT)  # inside the 600 px card
    assert luminance(desktop, card) > 0.7
    assert luminance(dark, card) < 0.4  # the template's own dark rules, as a dark-mode reader sees them
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "dark.png",
        "desktop.png",
        "phone.png",
    ]  # no temp files


@needs_chromium
def test_screenshots_replace_a_symlink_instead_of_writing_through_it(
    long_message: Path, tmp_path: Path
) -> None:
    assert CHROMIUM is not None
    target = tmp_path / "precious.txt"
    target.write_text("keep me", encoding="utf-8")
    out = tmp_path / "png"
    out.mkdir()
    (out / "desktop.png").symlink_to(target)
    screenshots(long_message, out, CHROMIUM)
    assert target.read_text(encoding="utf-8") == "keep me"
    assert not (out / "desktop.png").is_symlink()
    assert image(out / "desktop.png").width == DESKTOP_WIDTH


def first_int(pattern: bytes, text: bytes) -> int:
    found = re.search(pattern, text)
    assert found is not None, pattern
    return int(found[1])


def pdf_objects(data: bytes) -> dict[int, tuple[bytes, bytes]]:
    """Each object of a PDF as (dictionary, inflated stream), read in file order so that binary
    stream data is skipped by its /Length, never searched."""
    objects: dict[int, tuple[bytes, bytes]] = {}
    start, end = re.compile(rb"(\d+) 0 obj"), re.compile(rb"stream\r?\n|endobj")
    pos = 0
    while (found := start.search(data, pos)) is not None:
        stop = end.search(data, found.end())
        assert stop is not None
        head, body, pos = data[found.end() : stop.start()], b"", stop.end()
        if stop[0].startswith(b"stream"):
            length = first_int(rb"/Length (\d+)", head)
            body = data[pos : pos + length]
            body = zlib.decompress(body) if b"/FlateDecode" in head else body
            pos += length
        objects[int(found[1])] = (head, body)
    return objects


def to_unicode(cmap: bytes) -> dict[int, str]:
    """A ToUnicode CMap's bfchar and bfrange entries: glyph code → text."""
    table: dict[int, str] = {}
    for src, dst in re.findall(rb"^<([0-9A-F]{4})> <([0-9A-F]+)>$", cmap, re.M):
        table[int(src, 16)] = bytes.fromhex(dst.decode()).decode("utf-16-be")
    for low, high, dst in re.findall(rb"^<([0-9A-F]{4})> <([0-9A-F]{4})> <([0-9A-F]{4})>$", cmap, re.M):
        for code in range(int(low, 16), int(high, 16) + 1):
            table[code] = chr(int(dst, 16) + code - int(low, 16))
    return table


def pdf_text(data: bytes) -> str:
    """The text of a PDF as Chromium (Skia) writes it, read as pdftotext would read it (which
    is not installed everywhere): each font's ToUnicode map applied to the glyph codes that its
    text objects show, a line per object."""
    objects = pdf_objects(data)
    lines: list[str] = []
    pages = [head for head, _ in objects.values() if re.search(rb"/Type /Page\b(?!s)", head)]
    assert pages
    for page in pages:
        maps = {
            name: to_unicode(objects[first_int(rb"/ToUnicode (\d+) 0 R", objects[int(ref)][0])][1])
            for name, ref in re.findall(rb"/(F\d+) (\d+) 0 R", page)
        }
        content = objects[first_int(rb"/Contents (\d+) 0 R", page)][1]
        for block in re.findall(rb"\bBT\b(.*?)\bET\b", content, re.S):
            font = re.search(rb"/(F\d+) [\d.]+ Tf", block)
            table = maps[font[1]] if font else {}
            codes = b"".join(re.findall(rb"<([0-9A-F]+)>", block))
            lines.append(
                "".join(table.get(int(codes[i : i + 4], 16), "\ufffd") for i in range(0, len(codes), 4))
            )
    return unicodedata.normalize("NFKC", "\n".join(lines))  # ligatures (ﬁ, ﬀ) as letters


@needs_chromium
def test_pdf_holds_headers_message_and_text_part(
    dry_run_message: tuple[Path, EmailMessage], tmp_path: Path
) -> None:
    assert CHROMIUM is not None
    html_file, message = dry_run_message
    text_part = message.get_body(("plain",))
    assert text_part is not None
    headers = "".join(f"{k}: {v}\n" for k, v in message.items())
    out = pdf(
        tmp_path / "proof.pdf",
        html_file=html_file,
        text=text_part.get_content(),
        headers=headers,
        chromium=CHROMIUM,
    )
    data = out.read_bytes()
    assert data.startswith(b"%PDF-")
    assert b"/MediaBox [0 0 595.91998 842.88]" in data  # A4
    text = pdf_text(data)
    subject = "As elections approach, the US walk a thin line in Iraq"
    flat = " ".join(text.split())
    headers_at = flat.index(f"Subject: {subject}")
    title_at = flat.index(subject, headers_at + 10)  # the headline of the message as rendered
    text_part_at = flat.index("Plain-text part")
    assert headers_at < title_at < text_part_at
    assert "From: The Example Society <newsletter@example.org>" in flat
    assert "=" * 20 in flat[text_part_at:]  # the text part's own underlined title
    assert flat.count("Part of the ongoing efforts") == 2  # once in the message, once in the text part


@needs_chromium
def test_pdf_never_fetches_remote_pictures(
    long_message: Path, tmp_path: Path, web: tuple[str, list[str]]
) -> None:
    assert CHROMIUM is not None
    out = pdf(
        tmp_path / "p.pdf",
        html_file=long_message,
        text="Hello",
        headers="Subject: Spring proof\n",
        chromium=CHROMIUM,
    )
    assert "Subject: Spring proof" in pdf_text(out.read_bytes())
    assert web[1] == []


def test_missing_message_file_is_an_input_error(tmp_path: Path) -> None:
    with pytest.raises(InputError, match=r"nope\.html: no such message file"):
        screenshots(tmp_path / "nope.html", tmp_path, tmp_path / "chromium")


def fake_browser(folder: Path, name: str, script: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_text(f"#!/bin/sh\n{script}\n", encoding="utf-8")
    path.chmod(0o755)
    return path


def test_a_setting_that_names_no_executable_says_how_to_install(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        find_chromium(str(tmp_path / "no-such-chromium"))
    assert caught.value.exit_code == ExitCode.BAD_INPUT
    message = str(caught.value)
    assert "DISPATCH_CHROMIUM=" in message
    assert "no-such-chromium" in message
    assert "apt-get install chromium" in message


def test_no_chromium_on_the_path_says_how_to_install(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    with pytest.raises(ConfigError) as caught:
        find_chromium()
    assert caught.value.exit_code == ExitCode.BAD_INPUT
    assert str(caught.value) == (
        "no Chromium found (looked for chromium, chromium-browser, google-chrome on the PATH); "
        "install it (apt-get install chromium) or set DISPATCH_CHROMIUM to its path"
    )


def test_chromium_is_found_on_the_path_in_order(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    bin_dir = tmp_path / "bin"
    chrome = fake_browser(bin_dir, "google-chrome", "exit 0")
    browser = fake_browser(bin_dir, "chromium-browser", "exit 0")
    fake_browser(tmp_path / "other", "not-executable", "exit 0").chmod(0o644)
    monkeypatch.setenv("PATH", str(bin_dir))
    assert find_chromium() == browser
    assert find_chromium("google-chrome") == chrome  # the setting may be a command name
    assert find_chromium(str(chrome)) == chrome
    with pytest.raises(ConfigError, match="not an executable Chromium"):
        find_chromium(str(tmp_path / "other" / "not-executable"))


def test_a_chromium_that_crashes_is_one_line(tmp_path: Path, long_message: Path) -> None:
    crashing = fake_browser(tmp_path / "bin", "chromium", "echo 'Segmentation fault' >&2; exit 139")
    with pytest.raises(ProofError) as caught:
        screenshots(long_message, tmp_path / "png", crashing)
    assert isinstance(caught.value, DispatchError)
    assert caught.value.exit_code == ExitCode.BAD_INPUT
    assert "\n" not in str(caught.value)
    assert str(caught.value).startswith(f"{crashing} failed: ")
    assert str(caught.value).endswith("(exit code 139; it said: Segmentation fault)")
    assert not (tmp_path / "png").exists()


def test_a_chromium_that_hangs_times_out_in_one_line(tmp_path: Path, long_message: Path) -> None:
    hanging = fake_browser(
        tmp_path / "bin", "chromium", f"exec {shlex.quote(sys.executable)} -c 'import time; time.sleep(60)'"
    )
    with pytest.raises(ProofError) as caught:
        pdf(tmp_path / "p.pdf", html_file=long_message, text="t", headers="h", chromium=hanging, timeout=2)
    assert "\n" not in str(caught.value)
    assert str(caught.value).startswith(f"{hanging}: no answer within 2 s")
    assert not (tmp_path / "p.pdf").exists()
