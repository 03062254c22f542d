"""Pictures and attachments (issue 14, D4, D14 and part of D15), kept as regression tests.

Expected: an article embeds only pictures inside its own folder (no ``..`` out of it, no
absolute path, no symlink leading out, however the name is written), refused with one line
naming the article and the picture; names with spaces and non-ASCII letters work as CommonMark
writes them (``<my chart.png>``, ``%20``, ``grafik-übersicht.png``, ``图表.png``), with ASCII
Content-IDs, RFC 2231 file names and previews that show every picture; an attachment whose
name holds CR, LF or other control characters never puts them in a header; an attachment
larger than DISPATCH_MAX_MESSAGE_SIZE is refused by its size, before it is read.
"""

from __future__ import annotations

import itertools
import json
import re
import resource
import subprocess
import sys
from collections.abc import Callable
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from tests.attack_helpers import (
    Recording,
    Relays,
    clean_environ,
    eml_files,
    header_lines,
    judge_error,
    parse,
    settings_file,
)

Invoke = Callable[..., Any]
COLOURS = itertools.count()  # every picture its own pixels, so no two share a hash by chance


def picture(path: Path, size: tuple[int, int] = (40, 30)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    n = next(COLOURS)
    Image.new("RGB", size, (n % 256, n // 256 % 256, 90)).save(path, format="PNG")
    return path


def article(folder: Path, body: str, name: str = "issue.md") -> Path:
    path = folder / name
    path.write_text(f"---\ntitle: Pictures\ndate: 2026-03-01\n---\n\nAbove.\n\n{body}\n\nBelow.\n", "utf-8")
    return path


@pytest.fixture
def scene(tmp_path: Path, relay: Relays) -> dict[str, Any]:
    handler = Recording()
    server = relay.start(handler)
    news = tmp_path / "news"
    news.mkdir()
    listed = tmp_path / "people.csv"
    listed.write_text("email,name\nann@example.org,Ann\nbob@example.com,Bob\n", encoding="utf-8")
    picture(tmp_path / "private" / "holiday.png")  # outside the article's folder
    return {
        "tmp": tmp_path,
        "news": news,
        "list": listed,
        "env": settings_file(tmp_path, server),
        "server": server,
        "out": tmp_path / "out",
    }


def dry(invoke: Invoke, scene: dict[str, Any], issue: Path, *extra: str | Path) -> Any:
    return invoke(
        "send", issue, "-s", scene["list"], "--env-file", scene["env"], "--dry-run", "--out", scene["out"],
        *extra,
    )  # fmt: skip


def send(invoke: Invoke, scene: dict[str, Any], issue: Path, *extra: str | Path) -> Any:
    return invoke("send", issue, "-s", scene["list"], "--env-file", scene["env"], "--yes", *extra)


def images(message: EmailMessage) -> dict[str, EmailMessage]:
    return {str(p["Content-ID"]): p for p in message.walk() if p.get_content_maintype() == "image"}


# ------------------------------------------------------------------------- D4: only the article's folder


def _escapes(scene: dict[str, Any]) -> dict[str, str]:
    """Ways an article could name a picture outside its folder (built in ``scene``)."""
    news, private = scene["news"], scene["tmp"] / "private"
    (news / "link.png").symlink_to(private / "holiday.png")
    (news / "albums").symlink_to(private)
    (news / "loop.png").symlink_to(news / "loop.png")
    return {
        "dot-dot": "![x](../private/holiday.png)",
        "dot-dot-deeper": "![x](sub/../../private/holiday.png)",
        "percent-encoded-dot-dot": "![x](%2e%2e/private/holiday.png)",
        "percent-encoded-slashes": "![x](..%2Fprivate%2Fholiday.png)",
        "absolute": f"![x]({private / 'holiday.png'})",
        "absolute-in-angle-brackets": f"![x](<{private / 'holiday.png'}>)",
        "symlinked-file": "![x](link.png)",
        "symlinked-folder": "![x](albums/holiday.png)",
        "raw-html-dot-dot": '<img src="../private/holiday.png" alt="x">',
        "raw-html-absolute": f'<img src="{private / "holiday.png"}" alt="x">',
        "raw-html-entity-dots": '<img src="&#46;&#46;/private/holiday.png" alt="x">',
        "reference-style": "![x][pic]\n\n[pic]: ../private/holiday.png",
        "symlink-loop": "![x](loop.png)",
    }


ESCAPES = [
    "dot-dot", "dot-dot-deeper", "percent-encoded-dot-dot", "percent-encoded-slashes", "absolute",
    "absolute-in-angle-brackets", "symlinked-file", "symlinked-folder", "raw-html-dot-dot",
    "raw-html-absolute", "raw-html-entity-dots", "reference-style", "symlink-loop",
]  # fmt: skip


@pytest.mark.parametrize("how", ESCAPES)
def test_a_picture_from_outside_the_articles_folder_is_refused(
    invoke: Invoke, scene: dict[str, Any], how: str
) -> None:
    body = _escapes(scene)[how]
    issue = article(scene["news"], body)
    result = dry(invoke, scene, issue)
    assert result.exit_code == 2, result.output
    line = judge_error(result.stderr, str(issue), "the picture")
    assert "folder" in line or "absolute" in line or "symlink" in line, line
    assert not scene["out"].exists() or not eml_files(scene["out"])


def test_a_refused_picture_stops_a_real_send_before_the_first_message(
    invoke: Invoke, scene: dict[str, Any]
) -> None:
    issue = article(scene["news"], _escapes(scene)["symlinked-folder"])
    result = send(invoke, scene, issue)
    assert result.exit_code == 2
    judge_error(result.stderr, "albums/holiday.png")
    assert scene["server"].received == []


def test_links_and_dots_that_stay_inside_the_folder_are_fine(invoke: Invoke, scene: dict[str, Any]) -> None:
    news = scene["news"]
    picture(news / "charts" / "sales.png")
    (news / "latest.png").symlink_to(news / "charts" / "sales.png")  # a link that stays inside
    issue = article(news, "![a](charts/../charts/sales.png) ![b](latest.png) ![c](./charts/sales.png)")
    result = send(invoke, scene, issue)
    assert result.exit_code == 0, result.output
    message = parse(scene["server"].received[0].data)
    assert len(images(message)) == 1  # one file, named three ways


def test_the_logo_setting_may_name_a_file_anywhere(invoke: Invoke, scene: dict[str, Any]) -> None:
    """DISPATCH_LOGO is the sender's own setting, not the article's: it may live anywhere
    (here beside the settings file, outside the article's folder)."""
    logo = picture(scene["tmp"] / "brand" / "logo.png", (200, 60))
    env = settings_file(scene["tmp"], scene["server"], name="logo.env", LOGO=str(logo))
    issue = article(scene["news"], "No pictures in the body.")
    result = invoke("send", issue, "-s", scene["list"], "--env-file", env, "--dry-run", "--out", scene["out"])
    assert result.exit_code == 0, result.output
    message = parse(eml_files(scene["out"])[0].read_bytes())
    assert [p.get_filename() for p in images(message).values()] == ["logo.png"]


# ------------------------------------------------------------------------- D14: names as people write them

NAMES = {
    "my chart.png": ["![Chart](<my chart.png>)", "![Chart again](my%20chart.png)",
                     '<img src="my chart.png" alt="Chart, raw HTML">'],
    "grafik-übersicht.png": ["![Übersicht](grafik-übersicht.png)", "![Also](grafik-%C3%BCbersicht.png)"],
    "图表.png": ["![图表](图表.png)"],
    "100% sure.png": ["![Sure](<100% sure.png>)"],
}  # fmt: skip


def _named_pictures(scene: dict[str, Any]) -> Path:
    for name in NAMES:
        picture(scene["news"] / name)
    return article(scene["news"], "\n\n".join(ref for refs in NAMES.values() for ref in refs))


def test_pictures_named_with_spaces_and_other_letters_are_embedded(
    invoke: Invoke, scene: dict[str, Any]
) -> None:
    issue = _named_pictures(scene)
    result = send(invoke, scene, issue)
    assert result.exit_code == 0, result.output
    for received in scene["server"].received:
        message = parse(received.data)
        parts = images(message)
        assert sorted(p.get_filename() for p in parts.values()) == sorted(NAMES)
        html = message.get_body(("html",)).get_content()  # type: ignore[union-attr]
        sources = re.findall(r'<img [^>]*src="([^"]+)"', html)
        assert len(sources) == sum(map(len, NAMES.values()))
        assert {f"<{s.removeprefix('cid:')}>" for s in sources} == set(parts)
        for cid in parts:  # safe in a header and in a cid: URL, whatever the file was called
            assert re.fullmatch(r"<[A-Za-z0-9.-]+@example\.org>", cid), cid
        for line in header_lines(received.data):
            assert line.isascii()
            assert len(line) <= 998


def test_file_names_go_out_encoded_per_rfc_2231(invoke: Invoke, scene: dict[str, Any]) -> None:
    issue = _named_pictures(scene)
    report = scene["tmp"] / "Jahresbericht März.pdf"
    report.write_bytes(b"%PDF-1.4 Jahresbericht\n")
    result = send(invoke, scene, issue, "--attach", report)
    assert result.exit_code == 0, result.output
    raw = scene["server"].received[0].data
    unfolded = re.sub(rb"\r\n[ \t]+", b" ", raw)
    assert b"filename*=utf-8''Jahresbericht%20M%C3%A4rz.pdf" in unfolded
    assert b"filename*=utf-8''%E5%9B%BE%E8%A1%A8.png" in unfolded
    message = parse(raw)
    attached = [p for p in message.walk() if p.get_content_disposition() == "attachment"]
    assert [p.get_filename() for p in attached] == ["Jahresbericht März.pdf"]
    assert attached[0].get_content_type() == "application/pdf"


def test_previews_show_every_picture_whatever_its_name(invoke: Invoke, scene: dict[str, Any]) -> None:
    issue = _named_pictures(scene)
    result = dry(invoke, scene, issue)
    assert result.exit_code == 0, result.output
    pages = sorted(scene["out"].glob("0*.html"))
    assert pages
    for page in pages:
        html = page.read_text(encoding="utf-8")
        sources = re.findall(r'<img [^>]*src="([^"]+)"', html)
        assert len(sources) == sum(map(len, NAMES.values())), sources
        assert all(s.startswith("data:image/png;base64,") for s in sources), [s[:40] for s in sources]
    assert "cid:" not in (scene["out"] / "index.html").read_text(encoding="utf-8")


def test_a_markdown_image_named_with_a_bare_space_is_not_silently_shown_as_text(
    invoke: Invoke, scene: dict[str, Any]
) -> None:
    """CommonMark has no picture in ``![Chart](my chart.png)``: a dry run says how to write it."""
    picture(scene["news"] / "my chart.png")
    issue = article(scene["news"], "![Chart](my chart.png)")
    result = dry(invoke, scene, issue, "--json")
    assert result.exit_code == 0, result.output
    warnings = json.loads(result.stdout)["warnings"]
    assert any("<my chart.png>" in w and "%20" in w for w in warnings), warnings


# ------------------------------------------------------------------------- attachment names and sizes

HOSTILE_NAMES = {
    "crlf-header": "report\r\nBcc: victim@example.com\r\n.pdf",
    "lf-only": "report\nX-Injected: yes.pdf",
    "cr-only": "report\rX-Injected: yes.pdf",
    "escape-and-bell": "rep\x1b[31mort\x07.pdf",
    "tab": "annual\treport.pdf",
    "right-to-left-override": "invoice\u202efdp.exe",
    "line-separator": "a\u2028b.pdf",
    "only-controls": "\r\n\t",
}


@pytest.mark.parametrize("name", HOSTILE_NAMES.values(), ids=HOSTILE_NAMES.keys())
def test_control_characters_in_attachment_names_never_reach_a_header(
    invoke: Invoke, scene: dict[str, Any], name: str
) -> None:
    attached = scene["tmp"] / name
    attached.write_bytes(b"attachment body\n")
    issue = article(scene["news"], "No pictures.")
    result = send(invoke, scene, issue, "--attach", attached)
    assert result.exit_code == 0, result.output
    handler = scene["server"].handler
    assert sorted(r for item in handler.received for r in item.rcpt_tos) == [
        "ann@example.org",
        "bob@example.com",
    ]
    for received in handler.received:
        message = parse(received.data)
        assert not message.defects
        assert message["Bcc"] is None
        assert message["X-Injected"] is None
        attached_parts = [p for p in message.walk() if p.get_content_disposition() == "attachment"]
        assert len(attached_parts) == 1
        shown = attached_parts[0].get_filename() or ""
        assert shown
        assert not any(c in shown for c in "\r\n\t\x1b\x07\u2028\u202e"), repr(shown)
        assert attached_parts[0].get_content() == b"attachment body\n"
        for part in message.walk():
            assert not any(k.lower() in {"bcc", "x-injected"} for k in part)


def _limited_to(gigabytes: int) -> Callable[[], None]:
    def limit() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (gigabytes << 30, gigabytes << 30))

    return limit


@pytest.mark.slow
def test_an_attachment_far_over_the_limit_is_refused_by_its_size_before_it_is_read(
    scene: dict[str, Any],
) -> None:
    """A sparse 64 GB file, with the process allowed 3 GB of memory: reading it would fail
    (or take minutes); its size alone must refuse it."""
    huge = scene["tmp"] / "backup.tar"
    with huge.open("wb") as handle:
        handle.truncate(64 << 30)
    issue = article(scene["news"], "No pictures.")
    result = subprocess.run(
        [sys.executable, "-m", "dispatch", "send", str(issue), "-s", str(scene["list"]), "--env-file",
         str(scene["env"]), "--dry-run", "--out", str(scene["out"]), "--attach", str(huge)],
        cwd=scene["tmp"], env=clean_environ(), capture_output=True, text=True, timeout=60,
        preexec_fn=_limited_to(3), check=False,
    )  # fmt: skip
    assert result.returncode == 2, result.stderr
    line = judge_error(result.stderr, str(huge), "DISPATCH_MAX_MESSAGE_SIZE")
    assert "68.7 GB" in line, line


def test_attachments_that_together_exceed_the_limit_are_refused_before_reading(
    invoke: Invoke, scene: dict[str, Any]
) -> None:
    first, second = scene["tmp"] / "part1.bin", scene["tmp"] / "part2.bin"
    for path in (first, second):
        with path.open("wb") as handle:
            handle.truncate(700_000)
    env = settings_file(scene["tmp"], scene["server"], name="small.env", MAX_MESSAGE_SIZE="1MB")
    issue = article(scene["news"], "No pictures.")
    result = invoke("send", issue, "-s", scene["list"], "--env-file", env, "--dry-run", "--out", scene["out"],
                    "--attach", first, "--attach", second)  # fmt: skip
    assert result.exit_code == 2
    judge_error(result.stderr, str(second), "1.4 MB", "1.0 MB", "DISPATCH_MAX_MESSAGE_SIZE")
