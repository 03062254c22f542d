"""The dry run's sign-off page: what would go out, to whom, and the first message framed as
a desktop and a phone reader see it, light or dark.

``render_proof_page`` is pure: it takes a ``ProofData`` and returns HTML text (the caller
writes the file). The page works offline from ``file://``: inline CSS, no script at all (the
light/dark switch is a checkbox and CSS ``:has()``), and a Content-Security-Policy that
forbids scripts and remote loads in case a value ever slipped through unescaped. Every value
comes from files a stranger may have written (subjects, addresses, names, reasons), so each
is escaped, isolated from the surrounding text direction (``<bdi>``), and shown with its
invisible control and direction-override characters made visible.

Dark mode in the frames: Chromium lets ``prefers-color-scheme`` inside an ``<iframe>``
follow the frame element's own ``color-scheme``, so the switch sets ``color-scheme: dark``
on the frames and the message applies its own dark rules.
"""

from __future__ import annotations

import html
import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import PurePosixPath
from typing import Protocol
from urllib.parse import quote

# The 600 px card plus the message's outer margins, above its 620 px phone breakpoint: the
# desktop frame shows the card whole, with the desktop rules.
DESKTOP_WIDTH = 640
PHONE_WIDTH = 375
FRAME_HEIGHT = 900
MAX_SKIPPED = 50
OPEN_SKIPPED = 10  # a longer list of skipped rows starts folded

# C0/C1 controls and the characters that reorder text (bidi embeddings, overrides, isolates,
# marks) or hide in it (BOM): shown as a visible code in short values.
_INVISIBLE = re.compile("[\x00-\x1f\x7f-\x9f\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069\ufeff]")
# In multi-line blocks tabs and line ends are the text itself.
_BLOCK_INVISIBLE = re.compile(
    "[\x00-\x08\x0b-\x1f\x7f-\x9f\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069\ufeff]"
)
# In the plain-text part only controls are marked: direction marks there are the reader's text.
_TEXT_INVISIBLE = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\ufeff]")


class SkippedRow(Protocol):
    """A list row left out (``dispatch.lists.subscribers.Skipped`` fits)."""

    @property
    def line(self) -> int: ...

    @property
    def reason(self) -> str: ...


def _check_relative(name: str) -> None:
    path = PurePosixPath(name)
    if not name or path.is_absolute() or ".." in path.parts or "\\" in name:
        raise ValueError(f"{name!r}: expected a file name relative to the proof page")


@dataclass(frozen=True)
class MessageEntry:
    """One written message: its number, recipient, files (relative to the page) and status."""

    number: int
    email: str
    name: str
    html: str
    eml: str
    status: str = "will be sent"

    def __post_init__(self) -> None:
        _check_relative(self.html)
        _check_relative(self.eml)


@dataclass(frozen=True)
class FirstMessage:
    """The message framed on the page: its ``.html`` file (relative), text part and headers."""

    html: str
    text: str
    headers: str
    email: str = ""

    def __post_init__(self) -> None:
        _check_relative(self.html)


@dataclass(frozen=True)
class ProofData:
    """Everything the sign-off page shows. ``messages`` may be a generator: it is read once,
    as the page is produced, so a list of any length never sits in memory twice."""

    subject: str
    sender: str  # the From header
    campaign: str
    to_send: int
    reply_to: str = ""
    list_id: str = ""
    already_sent: int = 0
    skipped: Sequence[SkippedRow] = ()
    skipped_total: int | None = None  # all skipped rows (``skipped`` may hold only the first ones)
    warnings: Sequence[str] = ()
    problems: Sequence[str] = ()  # blocking: a real send would refuse, and so does the dry run
    refused: Sequence[str] = ()  # example values: a real send would refuse them
    state: str = ""  # where the journal and the suppression store are, and how it was found
    rows: int | None = None  # the list's rows, which ``accounting`` adds up to
    accounting: Sequence[tuple[str, int]] = ()  # (what happened, how many) for every row
    suppressed: Sequence[tuple[str, str]] = ()  # (address, reason), the first of them
    suppressed_total: int = 0
    suppressed_by: Mapping[str, int] = field(
        default_factory=dict
    )  # reason -> how many (bounced, complained…)
    first: FirstMessage | None = None
    messages: Iterable[MessageEntry] = ()
    max_skipped: int = MAX_SKIPPED


def _visible(value: str, pattern: re.Pattern[str]) -> str:
    """HTML-escaped ``value`` with each character ``pattern`` matches shown as its code."""
    out: list[str] = []
    last = 0
    for found in pattern.finditer(value):
        out.append(html.escape(value[last : found.start()]))
        code = f"U+{ord(found.group()):04X}"
        out.append(f'<span class="cc" title="invisible character {code}">{code}</span>')
        last = found.end()
    out.append(html.escape(value[last:]))
    return "".join(out)


def _v(value: str) -> str:
    """A short untrusted value, escaped and isolated from the text around it."""
    return f"<bdi>{_visible(value, _INVISIBLE)}</bdi>" if value else '<span class="none">none</span>'


def _href(name: str) -> str:
    return html.escape(quote(name, safe="/"), quote=True)


def _plural(n: int, word: str) -> str:
    return f"{n:,} {word}{'' if n == 1 else 's'}"


STYLE = """
:root{color-scheme:light;--ink:#1a1a1a;--muted:#4d4d4d;--line:#c4c4c4;--link:#0b57d0}
*{box-sizing:border-box} a{color:var(--link)}
body{margin:0;font:16px/1.5 system-ui,"Segoe UI",Roboto,Helvetica,Arial,sans-serif;color:var(--ink)}
header,main,footer,nav{max-width:1120px;margin:0 auto;padding:0 24px} header{padding-top:24px}
.kicker{margin:0;font-weight:600;color:var(--muted);text-transform:uppercase;letter-spacing:.06em;font-size:14px}
h1{margin:4px 0 12px;font-size:28px;line-height:1.25;overflow-wrap:anywhere}
h2{margin:36px 0 12px;font-size:22px;border-bottom:1px solid var(--line);padding-bottom:4px}
nav ul{list-style:none;margin:0;padding:0;display:flex;flex-wrap:wrap;gap:4px 20px}
nav a{display:inline-block;padding:4px 0;min-height:24px}
summary{padding:4px 0;min-height:24px;cursor:pointer;font-weight:600}
dl.summary{display:grid;grid-template-columns:max-content 1fr;gap:6px 20px;margin:0}
dl.summary dt{font-weight:600} dl.summary dd{margin:0;overflow-wrap:anywhere}
.cc{font:12px/1 ui-monospace,monospace;border:1px solid #8a1c1c;color:#8a1c1c;padding:0 2px;border-radius:3px}
.none{color:var(--muted);font-style:italic}
.box{border-left:6px solid;padding:12px 16px;margin:16px 0;border-radius:4px} .box h2{margin-top:0;border:0}
.problems{border-color:#b3261e;background:#fdecea} .warnings{border-color:#8a6d00;background:#fff8db}
.ok{border-color:#1e7a34;background:#e9f6ec} .box ul{margin:0;padding-left:20px}
.box li{overflow-wrap:anywhere}
table{border-collapse:collapse;width:100%;margin:8px 0} caption{text-align:left;font-weight:600;padding:4px 0}
th,td{border:1px solid var(--line);padding:6px 10px;text-align:left;vertical-align:top;overflow-wrap:anywhere}
thead th{background:#f0f0f0} th.num{width:7em} details{margin:12px 0}
.switch{display:flex;align-items:center;gap:10px;margin:8px 0 16px}
.switch input{width:24px;height:24px;margin:0;accent-color:#1f3a5f}
.frames{display:flex;flex-wrap:wrap;gap:24px;align-items:flex-start}
.frames figure{margin:0;max-width:100%;overflow-x:auto} .frames figcaption{font-weight:600;margin:0 0 6px}
.frames iframe{box-sizing:content-box;display:block;border:1px solid #767676;color-scheme:light}
body:has(#dark-switch:checked) .frames iframe{color-scheme:dark}
pre{margin:0;padding:12px 16px;background:#f6f6f6;border:1px solid var(--line);border-radius:4px;
  font:14px/1.5 ui-monospace,Menlo,Consolas,monospace;white-space:pre-wrap;overflow-wrap:anywhere}
pre.text{unicode-bidi:plaintext}
.vh{position:absolute;width:1px;height:1px;margin:-1px;overflow:hidden;clip:rect(0 0 0 0);white-space:nowrap}
footer{margin-top:40px;padding-bottom:32px;color:var(--muted);font-size:14px}
"""

CSP = (
    "default-src 'none'; style-src 'unsafe-inline'; frame-src 'self' file:; img-src 'self' data:; "
    "base-uri 'none'; form-action 'none'"
)


def _head(data: ProofData) -> str:
    return (
        '<!DOCTYPE html>\n<html lang="en" dir="ltr">\n<head>\n<meta charset="utf-8">\n'
        f'<meta http-equiv="Content-Security-Policy" content="{CSP}">\n'
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        '<meta name="referrer" content="no-referrer">\n'
        f"<title>Proof: {_visible(data.subject, _INVISIBLE)}</title>\n<style>{STYLE}</style>\n</head>\n"
    )


def _banner(data: ProofData) -> str:
    sections = [("summary", "Summary"), ("message", "The message")]
    if data.first is not None:
        sections += [("text", "Plain text"), ("headers", "Headers")]
    sections.append(("messages", "Every message"))
    links = "".join(f'<li><a href="#{key}">{label}</a></li>' for key, label in sections)
    return (
        '<header>\n<p class="kicker">Dry run: nothing was sent</p>\n'
        f"<h1>Proof: {_v(data.subject)}</h1>\n</header>\n"
        f'<nav aria-label="Sections">\n<ul>{links}</ul>\n</nav>\n'
    )


def _checks(data: ProofData) -> str:
    parts: list[str] = []
    if data.refused:
        items = "".join(f"<li>{_v(p)}</li>" for p in data.refused)
        parts.append(
            '<section class="box problems" aria-labelledby="refused">\n'
            f'<h2 id="refused">A real send would refuse: {_plural(len(data.refused), "setting")} '
            "to replace</h2>\n"
            f"<ul>{items}</ul>\n<p>This dry run shows the issue anyway; replace them before sending.</p>\n"
            "</section>\n"
        )
    if data.problems:
        items = "".join(f"<li>{_v(p)}</li>" for p in data.problems)
        parts.append(
            '<section class="box problems" aria-labelledby="problems">\n'
            f'<h2 id="problems">A real send would refuse: {_plural(len(data.problems), "problem")}</h2>\n'
            f"<ul>{items}</ul>\n</section>\n"
        )
    elif not data.refused:
        parts.append('<p class="box ok">No blocking problems: a real send would go ahead.</p>\n')
    if data.warnings:
        items = "".join(f"<li>{_v(w)}</li>" for w in data.warnings)
        parts.append(
            '<section class="box warnings" aria-labelledby="warnings">\n'
            f'<h2 id="warnings">{_plural(len(data.warnings), "warning")}</h2>\n<ul>{items}</ul>\n</section>\n'
        )
    return "".join(parts)


def _summary(data: ProofData) -> str:
    rows = [
        ("Subject", _v(data.subject)),
        ("From", _v(data.sender)),
        ("Reply-To", _v(data.reply_to)),
        ("List-Id", _v(data.list_id)),
        ("Campaign", _v(data.campaign)),
        ("State", _v(data.state)),
        ("Will be sent", f"{data.to_send:,}"),
        ("Already sent", f"{data.already_sent:,}"),
        ("Suppressed", f"{data.suppressed_total:,}{_reasons(data.suppressed_by)}"),
        ("Skipped rows", f"{_skipped_total(data):,}"),
    ]
    if data.rows is not None:
        added = " + ".join(f"{n:,} {what}" for what, n in data.accounting if n)
        rows.append(("Every row", f"{data.rows:,} rows = {added or '0'}"))
    items = "".join(f"<dt>{label}</dt><dd>{value}</dd>" for label, value in rows)
    return (
        '<section aria-labelledby="summary">\n<h2 id="summary">Summary</h2>\n'
        f'<dl class="summary">{items}</dl>\n{_suppressed(data)}{_skipped(data)}</section>\n'
    )


def _reasons(counts: Mapping[str, int]) -> str:
    """`` (3 bounced, 1 complained, 1 unsubscribed)``: why they are suppressed, or ""."""
    shown = ", ".join(f"{n:,} {_v(reason)}" for reason, n in sorted(counts.items()) if n)
    return f" ({shown})" if shown else ""


def _skipped_total(data: ProofData) -> int:
    return len(data.skipped) if data.skipped_total is None else data.skipped_total


def _suppressed(data: ProofData) -> str:
    if not data.suppressed:
        return ""
    shown = data.suppressed[: max(data.max_skipped, 0)]
    rows = "".join(f"<tr><td>{_v(email)}</td><td>{_v(reason)}</td></tr>\n" for email, reason in shown)
    more = data.suppressed_total - len(shown)
    tail = f"<p>… and {_plural(more, 'more suppressed reader')}, not listed here.</p>\n" if more > 0 else ""
    is_open = " open" if data.suppressed_total <= OPEN_SKIPPED else ""
    return (
        f"<details{is_open}>\n<summary>Who is suppressed ({_plural(data.suppressed_total, 'reader')}), "
        "and why</summary>\n"
        '<table>\n<caption class="vh">Suppressed readers of the subscriber list</caption>\n'
        '<thead><tr><th scope="col">Address</th><th scope="col">Reason</th></tr></thead>\n'
        f"<tbody>\n{rows}</tbody>\n</table>\n{tail}</details>\n"
    )


def _skipped(data: ProofData) -> str:
    if not data.skipped:
        return ""
    shown = data.skipped[: max(data.max_skipped, 0)]
    rows = "".join(f"<tr><td>{s.line:,}</td><td>{_v(s.reason)}</td></tr>\n" for s in shown)
    total = _skipped_total(data)
    more = total - len(shown)
    tail = f"<p>… and {_plural(more, 'more skipped row')}, not listed here.</p>\n" if more > 0 else ""
    is_open = " open" if total <= OPEN_SKIPPED else ""
    return (
        f"<details{is_open}>\n<summary>Why {_plural(total, 'row')} of the list "
        f"{'is' if total == 1 else 'are'} skipped</summary>\n"
        '<table>\n<caption class="vh">Skipped rows of the subscriber list</caption>\n'
        '<thead><tr><th scope="col" class="num">Line</th><th scope="col">Reason</th></tr></thead>\n'
        f"<tbody>\n{rows}</tbody>\n</table>\n{tail}</details>\n"
    )


_FRAMES = (
    ("desktop", f"Desktop: {DESKTOP_WIDTH} px wide (the 600 px message and its margins)", DESKTOP_WIDTH),
    ("phone", f"Phone: {PHONE_WIDTH} px wide", PHONE_WIDTH),
)


def _frames(first: FirstMessage) -> str:
    src = _href(first.html)
    whose = f" as {_v(first.email)} receives it" if first.email else ""
    frames = "".join(
        f'<figure tabindex="0" aria-labelledby="cap-{key}"><figcaption id="cap-{key}">{label}</figcaption>'
        f'<iframe src="{src}" width="{width}" height="{FRAME_HEIGHT}" '
        'sandbox="allow-popups allow-popups-to-escape-sandbox" '
        f'referrerpolicy="no-referrer" title="The message at {key} width ({width} px)" '
        f'aria-describedby="cap-{key}"></iframe></figure>\n'
        for key, label, width in _FRAMES
    )
    return (
        f'<p>The first message{whose}. <a href="{src}">Open it on its own</a>.</p>\n'
        '<p class="switch"><input type="checkbox" role="switch" id="dark-switch" '
        'aria-describedby="dark-note"><label for="dark-switch">Show the message in dark mode</label></p>\n'
        '<p id="dark-note">Dark mode shows the message as a reader whose device is set to dark sees it '
        "(in browsers that give a frame its own colour scheme, such as Chrome and Edge).</p>\n"
        f'<div class="frames">\n{frames}</div>\n'
    )


def _message(data: ProofData) -> str:
    first = data.first
    if first is None:
        body = "<p>No message was written: there is nobody to send to.</p>\n"
        return f'<section aria-labelledby="message">\n<h2 id="message">The message</h2>\n{body}</section>\n'
    text = first.text.replace("\r\n", "\n")
    headers = first.headers.replace("\r\n", "\n")
    return (
        '<section aria-labelledby="message">\n<h2 id="message">The message</h2>\n'
        f"{_frames(first)}</section>\n"
        '<section aria-labelledby="text">\n<h2 id="text">Plain-text part</h2>\n'
        f'<pre class="text" dir="auto">{_visible(text, _TEXT_INVISIBLE)}</pre>\n</section>\n'
        '<section aria-labelledby="headers">\n<h2 id="headers">Headers</h2>\n'
        f'<pre class="headers">{_visible(headers, _BLOCK_INVISIBLE)}</pre>\n</section>\n'
    )


def _message_rows(messages: Iterable[MessageEntry]) -> Iterator[str]:
    count = 0
    yield (
        '<section aria-labelledby="messages">\n<h2 id="messages">Every message</h2>\n'
        "<table>\n<caption>Each message exactly as it would leave: its web view and its .eml file</caption>\n"
        '<thead><tr><th scope="col">#</th><th scope="col">To</th><th scope="col">Name</th>'
        '<th scope="col">Status</th><th scope="col">Files</th></tr></thead>\n<tbody>\n'
    )
    for m in messages:
        count += 1
        yield (
            f"<tr><td>{m.number:,}</td><td>{_v(m.email)}</td><td>{_v(m.name)}</td><td>{_v(m.status)}</td>"
            f'<td><a href="{_href(m.html)}">HTML<span class="vh"> of message {m.number}</span></a> · '
            f'<a href="{_href(m.eml)}">.eml<span class="vh"> of message {m.number}</span></a></td></tr>\n'
        )
    yield f"</tbody>\n</table>\n<p>{_plural(count, 'message')} written.</p>\n</section>\n"


def proof_page_chunks(data: ProofData) -> Iterator[str]:
    """The sign-off page in pieces, for writing a long list without holding it in memory."""
    yield _head(data)
    yield "<body>\n"
    yield _banner(data)
    yield "<main>\n"
    yield _checks(data)
    yield _summary(data)
    yield _message(data)
    yield from _message_rows(data.messages)
    yield "</main>\n"
    yield (
        "<footer><p>Written by dispatch for a dry run. The links open the files next to this page. "
        "The page itself loads nothing from the network; images the message links to from the web "
        "load in its frames.</p></footer>\n</body>\n</html>\n"
    )


def render_proof_page(data: ProofData) -> str:
    """The sign-off page (``index.html`` of a dry run) as HTML text."""
    return "".join(proof_page_chunks(data))
