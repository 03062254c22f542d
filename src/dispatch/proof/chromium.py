"""Pictures and a PDF of one message, for someone who signs an issue off from a chat or a
printout, made with a headless Chromium already on this machine (never downloaded).

The browser loads only ``file://`` URLs: every other request is refused, so a remote image in
a message simply does not show in the proof, and making a proof never touches the network.
A Chromium that crashes or hangs becomes one ``ProofError`` line, never a traceback.
"""

from __future__ import annotations

import os
import re
import secrets
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Literal

from playwright.sync_api import Browser, Page, Route, sync_playwright
from playwright.sync_api import Error as PlaywrightError
from playwright.sync_api import TimeoutError as PlaywrightTimeout

from dispatch.errors import ConfigError, DispatchError, InputError
from dispatch.proof.signoff import DESKTOP_WIDTH, PHONE_WIDTH

CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome")
INSTALL_HINT = "install it (apt-get install chromium) or set DISPATCH_CHROMIUM to its path"
# Without the background-networking flags Chromium reaches for the network at start-up.
LAUNCH_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-quic",
    "--no-first-run",
    "--no-default-browser-check",
]
VIEWPORT_HEIGHT = 800
TIMEOUT = 60.0  # seconds, for the launch and for each page

Scheme = Literal["light", "dark"]


class ProofError(DispatchError):
    """Chromium could not make a proof (it crashed, hung, or refused to start)."""


def find_chromium(setting: str = "") -> Path:
    """The Chromium to use: ``setting`` (``DISPATCH_CHROMIUM``, a path or a command name),
    else the first of ``chromium``, ``chromium-browser``, ``google-chrome`` on the PATH."""
    if setting:
        found = shutil.which(setting)
        if found is None:
            raise ConfigError(f"DISPATCH_CHROMIUM={setting!r} is not an executable Chromium; {INSTALL_HINT}")
        return Path(found).absolute()
    for name in CHROMIUM_NAMES:
        found = shutil.which(name)
        if found is not None:
            return Path(found).absolute()
    raise ConfigError(
        f"no Chromium found (looked for {', '.join(CHROMIUM_NAMES)} on the PATH); {INSTALL_HINT}"
    )


def _one_line(err: Exception) -> str:
    """Playwright's first line, plus the browser's exit code and last words when it died."""
    text = str(err).strip()
    first = text.splitlines()[0].strip()[:300] if text else type(err).__name__
    details = [f"exit code {code}" for code in re.findall(r"process did exit: exitCode=(\d+)", text)[-1:]]
    details += [f"it said: {said.strip()[:200]}" for said in re.findall(r"\]\[err\] (.+)", text)[-1:]]
    return f"{first} ({'; '.join(details)})" if details else first


@contextmanager
def _browser(chromium: Path, timeout: float) -> Iterator[Browser]:
    """A headless Chromium for the length of the block; its failures become ``ProofError``."""
    try:
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(
                executable_path=chromium, args=LAUNCH_ARGS, headless=True, timeout=timeout * 1000
            )
            try:
                yield browser
            finally:
                browser.close()
    except PlaywrightTimeout as err:
        raise ProofError(f"{chromium}: no answer within {timeout:g} s ({_one_line(err)})") from err
    except PlaywrightError as err:
        raise ProofError(f"{chromium} failed: {_one_line(err)}") from err


def _local_only(route: Route) -> None:
    if route.request.url.startswith("file:"):
        route.continue_()
    else:
        route.abort("blockedbyclient")


def _open(browser: Browser, html_file: Path, *, width: int, scheme: Scheme, timeout: float) -> Page:
    """``html_file`` in a fresh context ``width`` CSS pixels wide (one device pixel each)."""
    context = browser.new_context(
        viewport={"width": width, "height": VIEWPORT_HEIGHT},
        device_scale_factor=1,
        color_scheme=scheme,
        java_script_enabled=False,  # as in a mail client; Playwright's own calls still work
        service_workers="block",
    )
    context.set_default_timeout(timeout * 1000)
    context.route("**/*", _local_only)
    page = context.new_page()
    page.goto(html_file.absolute().as_uri(), wait_until="load")
    return page


def _write_atomically(path: Path, data: bytes) -> Path:
    """``data`` into ``path`` through a new file in the same folder, renamed over it: a reader
    never sees half a file, and an existing symlink at ``path`` is replaced, not followed."""
    temp = path.with_name(f".{path.name}.{secrets.token_hex(6)}.tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o644)
        with os.fdopen(fd, "wb") as out:
            out.write(data)
            out.flush()
            os.fsync(out.fileno())
        os.replace(temp, path)
    except OSError as err:
        temp.unlink(missing_ok=True)
        raise InputError(f"{path}: cannot write the proof there: {err.strerror}") from err
    return path


def _existing(html_file: Path) -> Path:
    if not html_file.is_file():
        raise InputError(f"{html_file}: no such message file to make a proof of")
    return html_file


def screenshots(html_file: Path, out_dir: Path, chromium: Path, *, timeout: float = TIMEOUT) -> list[Path]:
    """Full-page pictures of a message: ``desktop.png`` (wide enough for the 600 px card and its
    margins), ``phone.png`` (375 px) and ``dark.png`` (desktop, the reader's device in dark mode).
    """
    _existing(html_file)
    shots: list[tuple[str, int, Scheme]] = [
        ("desktop.png", DESKTOP_WIDTH, "light"),
        ("phone.png", PHONE_WIDTH, "light"),
        ("dark.png", DESKTOP_WIDTH, "dark"),
    ]
    pictures: list[tuple[Path, bytes]] = []
    with _browser(chromium, timeout) as browser:
        page = _open(browser, html_file, width=DESKTOP_WIDTH, scheme="light", timeout=timeout)
        for name, width, scheme in shots:  # media queries follow the viewport and scheme live
            page.set_viewport_size({"width": width, "height": VIEWPORT_HEIGHT})
            page.emulate_media(color_scheme=scheme)
            pictures.append((out_dir / name, page.screenshot(full_page=True, animations="disabled")))
        page.context.close()
    return [_write_atomically(path, data) for path, data in pictures]


# Runs in the message's own document: a block of text that the message's CSS cannot restyle,
# filled with textContent (never parsed as HTML).
_INSERT = """([label, body, where]) => {
  const box = document.createElement('section');
  box.setAttribute('style', 'all:initial;display:block;box-sizing:border-box;margin:0 0 16px 0;'
    + 'padding:12px 16px;border:1px solid #888;background:#fff;color:#111;'
    + 'font:11px/1.45 ui-monospace,Menlo,Consolas,monospace;white-space:pre-wrap;'
    + 'overflow-wrap:anywhere;unicode-bidi:plaintext;'
    + (where === 'end' ? 'break-before:page;margin:16px 0 0 0;' : ''));
  const title = document.createElement('div');
  title.setAttribute('style', 'all:initial;display:block;font:bold 13px/1.6 sans-serif;color:#111');
  title.textContent = label;
  box.append(title, document.createTextNode(body));
  if (where === 'end') { document.body.append(box); } else { document.body.prepend(box); }
}"""


def pdf(
    out_file: Path, *, html_file: Path, text: str, headers: str, chromium: Path, timeout: float = TIMEOUT
) -> Path:
    """One PDF proof (A4): the headers, the message as rendered, then its plain-text part."""
    _existing(html_file)
    with _browser(chromium, timeout) as browser:
        page = _open(browser, html_file, width=DESKTOP_WIDTH, scheme="light", timeout=timeout)
        page.evaluate(_INSERT, ["Headers", headers.replace("\r\n", "\n").rstrip("\n"), "start"])
        page.evaluate(_INSERT, ["Plain-text part", text.replace("\r\n", "\n").rstrip("\n"), "end"])
        data = page.pdf(
            format="A4",
            print_background=True,
            margin={"top": "10mm", "bottom": "10mm", "left": "10mm", "right": "10mm"},
        )
        page.context.close()
    return _write_atomically(out_file, data)
