"""Pictures and files that travel with an issue (issue 9): local images embedded as cid:
parts, numeric widths, --attach, the logo, the web version, init, and a preview without
settings. Messages are checked as they arrive at a real SMTP server, or as a dry run wrote
them."""

from __future__ import annotations

import re
import stat
import subprocess
import sys
from collections.abc import Callable
from email import message_from_bytes, policy
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from tests.smtp_servers import Server

WriteFile = Callable[..., Path]
EnvFile = Callable[..., Path]
Invoke = Callable[..., Any]

ARTICLE = """---
title: Pictures and papers
date: 2026-03-14
issue: 12
---

Here is the chart.

![Sales by month](charts/sales.png)

And a small icon: ![Icon](icon.gif)

Seen twice: ![Sales by month](charts/sales.png)

![Remote photo](https://example.org/photo.jpg)
"""


def parse(data: bytes) -> EmailMessage:
    return message_from_bytes(data, policy=policy.default)  # type: ignore[return-value]


@pytest.fixture
def issue(tmp_path: Path, write_file: WriteFile) -> Path:
    (tmp_path / "charts").mkdir()
    Image.new("RGB", (1200, 600), (200, 40, 40)).save(tmp_path / "charts" / "sales.png")
    Image.new("RGB", (40, 40), (0, 0, 200)).save(tmp_path / "icon.gif")
    return write_file("issue.md", ARTICLE)


@pytest.fixture
def people(write_file: WriteFile) -> Path:
    return write_file("list.csv", "email,name\nann@example.org,Ann\nbob@example.com,Bob\n")


def _inline_images(msg: EmailMessage) -> dict[str, EmailMessage]:
    return {str(p["Content-ID"]).strip("<>"): p for p in msg.walk() if p.get_content_maintype() == "image"}


def test_local_images_arrive_as_inline_parts_the_html_references(
    invoke: Invoke, issue: Path, people: Path, env_file: EnvFile, plain_server: Server
) -> None:
    result = invoke("send", issue, "-s", people, "--env-file", env_file(**plain_server.env()), "--yes")
    assert result.exit_code == 0, result.output
    assert len(plain_server.received) == 2
    for received in plain_server.received:
        msg = parse(received.data)
        assert msg.get_content_type() == "multipart/related"
        images = _inline_images(msg)
        assert len(images) == 2  # the chart once, though shown twice; and the icon
        html = msg.get_body(("html",)).get_content()  # type: ignore[union-attr]
        sources = re.findall(r'<img [^>]*src="([^"]+)"', html)
        cids = [s.removeprefix("cid:") for s in sources if s.startswith("cid:")]
        assert set(cids) == set(images)
        assert sources.count(f"cid:{cids[0]}") >= 1
        assert "https://example.org/photo.jpg" in sources
        for tag in re.findall(r"<img [^>]*>", html):
            width = re.search(r'\bwidth="(\d+)"', tag)
            assert width, tag
            assert int(width[1]) <= 536
            assert 'height="auto"' not in tag
        chart = next(p for p in images.values() if p.get_filename() == "sales.png")
        assert chart.get_content_type() == "image/png"
        assert chart.get_content_disposition() == "inline"
        assert Image.open(__import__("io").BytesIO(chart.get_content())).size == (1200, 600)
        assert max(len(line) for line in received.data.split(b"\r\n")) <= 998


def test_a_missing_image_is_an_error_with_its_path_and_nothing_is_sent(
    invoke: Invoke, write_file: WriteFile, people: Path, env_file: EnvFile, plain_server: Server
) -> None:
    article = write_file("issue.md", "# Title\n\n![Gone](missing/chart.png)\n")
    result = invoke("send", article, "-s", people, "--env-file", env_file(**plain_server.env()), "--yes")
    assert result.exit_code == 2
    assert "missing/chart.png" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert plain_server.received == []


def test_a_file_that_is_not_a_picture_is_refused(
    invoke: Invoke, write_file: WriteFile, people: Path, env_file: EnvFile
) -> None:
    write_file("secret.png", "DISPATCH_SMTP_PASSWORD=hunter2\n")
    article = write_file("issue.md", "# Title\n\n![x](secret.png)\n")
    result = invoke("send", article, "-s", people, "--env-file", env_file(), "--dry-run")
    assert result.exit_code == 2
    assert "secret.png" in result.stderr
    assert "hunter2" not in result.output


@pytest.mark.parametrize(
    ("name", "content_type"),
    [("Report 2026.pdf", "application/pdf"), ("Rapport annuel é à ü.pdf", "application/pdf"),
     ("data.csv", "text/csv"), ("no-extension", "application/octet-stream")],
)  # fmt: skip
def test_attachments_arrive_with_their_names_and_types(
    name: str, content_type: str, invoke: Invoke, tmp_path: Path, issue: Path, people: Path,
    env_file: EnvFile, plain_server: Server,
) -> None:  # fmt: skip
    attached = tmp_path / name
    attached.write_bytes(b"%PDF-1.4 example content\n" * 50)
    result = invoke(
        "send",
        issue,
        "-s",
        people,
        "--env-file",
        env_file(**plain_server.env()),
        "--yes",
        "--attach",
        attached,
    )
    assert result.exit_code == 0, result.output
    for received in plain_server.received:
        msg = parse(received.data)
        assert msg.get_content_type() == "multipart/mixed"
        files = [p for p in msg.walk() if p.get_content_disposition() == "attachment"]
        assert len(files) == 1
        assert files[0].get_filename() == name
        assert files[0].get_content_type() == content_type
        assert files[0].get_payload(decode=True) == attached.read_bytes()
        assert _inline_images(msg)  # the pictures are still there, in their multipart/related
        assert max(len(line) for line in received.data.split(b"\r\n")) <= 998


def test_attachments_are_in_the_dry_runs_eml_files_too(
    invoke: Invoke, tmp_path: Path, issue: Path, people: Path, env_file: EnvFile
) -> None:
    attached = tmp_path / "agenda.txt"
    attached.write_text("1. Welcome\n", encoding="utf-8")
    out = tmp_path / "out"
    result = invoke("send", issue, "-s", people, "--env-file", env_file(), "--dry-run", "--out", out,
                    "--attach", attached)  # fmt: skip
    assert result.exit_code == 0, result.output
    emls = sorted(out.glob("*.eml"))
    assert len(emls) == 2
    for eml in emls:
        files = [p for p in parse(eml.read_bytes()).walk() if p.get_content_disposition() == "attachment"]
        assert [f.get_filename() for f in files] == ["agenda.txt"]


def test_an_attachment_over_the_size_limit_is_a_clear_error(
    invoke: Invoke, tmp_path: Path, issue: Path, people: Path, env_file: EnvFile
) -> None:
    attached = tmp_path / "huge.bin"
    attached.write_bytes(b"\0" * 2_000_000)
    result = invoke("send", issue, "-s", people, "--env-file", env_file(DISPATCH_MAX_MESSAGE_SIZE="1MB"),
                    "--dry-run", "--attach", attached)  # fmt: skip
    assert result.exit_code == 2
    assert "huge.bin" in result.stderr
    assert "DISPATCH_MAX_MESSAGE_SIZE" in result.stderr


def test_a_local_logo_is_embedded_and_an_https_logo_linked(
    invoke: Invoke, tmp_path: Path, issue: Path, people: Path, env_file: EnvFile
) -> None:
    Image.new("RGB", (400, 120), (0, 80, 0)).save(tmp_path / "logo.png")
    for logo, embedded in (
        (str(tmp_path / "logo.png"), True),
        ("https://example.org/logo.png#300x90", False),
    ):
        out = tmp_path / f"out-{embedded}"
        result = invoke("send", issue, "-s", people, "--env-file", env_file(DISPATCH_LOGO=logo), "--dry-run",
                        "--out", out)  # fmt: skip
        assert result.exit_code == 0, result.output
        msg = parse(sorted(out.glob("*.eml"))[0].read_bytes())
        html = msg.get_body(("html",)).get_content()  # type: ignore[union-attr]
        tag = re.search(r'<img [^>]*class="logo"[^>]*>', html)
        assert tag, html[:2000]
        if embedded:
            assert 'src="cid:' in tag[0]
            assert any(p.get_filename() == "logo.png" for p in msg.walk())
        else:
            assert 'src="https://example.org/logo.png"' in tag[0]
        assert re.search(r'width="\d+"', tag[0])


def test_a_relative_logo_in_the_settings_file_is_found_next_to_it(
    invoke: Invoke, tmp_path: Path, issue: Path, people: Path, env_file: EnvFile
) -> None:
    """As the other paths there: a cron job runs from another folder (here tmp_path/work)."""
    Image.new("RGB", (400, 120), (0, 80, 0)).save(tmp_path / "logo.png")
    settings = env_file(DISPATCH_LOGO="logo.png")
    assert Path.cwd() != settings.parent
    result = invoke("send", issue, "-s", people, "--env-file", settings, "--dry-run", "--out", tmp_path / "o")
    assert result.exit_code == 0, result.output
    msg = parse(sorted((tmp_path / "o").glob("*.eml"))[0].read_bytes())
    assert any(p.get_filename() == "logo.png" for p in msg.walk())


def test_preview_files_show_embedded_pictures(
    invoke: Invoke, tmp_path: Path, issue: Path, people: Path, env_file: EnvFile
) -> None:
    result = invoke(
        "preview", issue, "-s", people, "--env-file", env_file(), "--out", tmp_path / "p" / "look.html"
    )
    assert result.exit_code == 0, result.output
    page = (tmp_path / "p" / "look.html").read_text(encoding="utf-8")
    assert "cid:" not in page  # a browser opening the file has no message to resolve cid: against
    assert 'src="data:image/png;base64,' in page
    for name in ("look.html", "look.eml", "look.txt"):
        assert stat.S_IMODE((tmp_path / "p" / name).stat().st_mode) == 0o600


def test_the_web_version_holds_no_personal_data(
    invoke: Invoke, tmp_path: Path, issue: Path, people: Path, env_file: EnvFile
) -> None:
    settings = env_file(DISPATCH_WEB_URL="https://example.org/news/")
    out = tmp_path / "dry"
    result = invoke("send", issue, "-s", people, "--env-file", settings, "--dry-run", "--out", out)
    assert result.exit_code == 0, result.output
    html = parse(sorted(out.glob("*.eml"))[0].read_bytes()).get_body(("html",)).get_content()  # type: ignore[union-attr]
    link = re.search(r'href="(https://example\.org/news/[^"]+\.html)"', html)
    assert link, "a View in browser link to the web version"
    archive = tmp_path / "site"
    result = invoke("preview", issue, "-s", people, "--env-file", settings, "--out", tmp_path / "p.html",
                    "--archive", archive)  # fmt: skip
    assert result.exit_code == 0, result.output
    pages = list(archive.glob("*.html"))
    assert [p.name for p in pages] == [link[1].rsplit("/", 1)[1]]
    page = pages[0].read_text(encoding="utf-8")
    assert "Pictures and papers" in page
    for personal in ("ann@example.org", "bob@example.com", "unsubscribe", "cid:"):
        assert personal not in page


def test_init_then_a_dry_run_works_in_the_new_folder(invoke: Invoke, tmp_path: Path) -> None:
    folder = tmp_path / "newsletter"
    result = invoke("init", folder, "--templates")
    assert result.exit_code == 0, result.output
    assert "dispatch send article.md --dry-run" in result.stdout
    assert stat.S_IMODE((folder / ".env").stat().st_mode) == 0o600
    assert (folder / "templates" / "email.html").is_file()
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "XDG_STATE_HOME": str(tmp_path / "state")}
    done = subprocess.run(
        [sys.executable, "-m", "dispatch", "send", "article.md", "--dry-run", "--template", "templates"],
        cwd=folder, env=env, capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert list((folder / "dispatch-preview").glob("*.eml"))
    again = invoke("init", folder)
    assert again.exit_code == 2
    assert ".env" in again.stderr


def test_preview_needs_no_settings_and_says_it_uses_samples(
    invoke: Invoke, tmp_path: Path, issue: Path
) -> None:
    result = invoke("preview", issue, "--out", tmp_path / "look.html")
    assert result.exit_code == 0, result.output
    assert "DISPATCH_FROM is not set" in result.stderr
    eml = parse((tmp_path / "look.eml").read_bytes())
    assert "Sample sender" in str(eml["From"])
