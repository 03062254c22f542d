"""Dry runs and previews: output a person can open, one ``.eml`` and one ``.html`` per
message, and an ``index.html`` that links to each.

Everything is written through :class:`dispatch.files.OutputFolder`: only files dispatch wrote
are ever replaced or removed, never through a symlink, never over an input, and all private.
"""

from __future__ import annotations

import re
import tempfile
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from email import policy
from email.headerregistry import Address
from email.parser import BytesHeaderParser
from pathlib import Path

from dispatch.compose.assets import previewable
from dispatch.compose.issue import Issue, recipients
from dispatch.errors import ConfigError, InputError
from dispatch.files import OutputFolder
from dispatch.lists.subscribers import Skipped, Subscriber
from dispatch.proof.signoff import FirstMessage, MessageEntry, ProofData, proof_page_chunks
from dispatch.send.campaign import campaign_warnings, list_identity
from dispatch.send.preflight import preflight
from dispatch.send.skips import Skip, SkipRules
from dispatch.send.summary import RunSummary, summary_for
from dispatch.settings import Settings
from dispatch.state import journal as j
from dispatch.state.suppression import SuppressionStore

_UNSAFE = re.compile(r"[^A-Za-z0-9@._+-]+")
# The names message_stem makes (an address always has an "@"); a user's "20240115-minutes.html"
# can never be one of them, so it is never touched.
MESSAGE_FILES = re.compile(r"\d{5,}-[A-Za-z0-9._+-]*@[A-Za-z0-9@._+-]*\.(?:eml|html)")
INDEX = "index.html"
MAX_INDEX_ROWS = 10_000  # messages listed on the sign-off page (all are written to the folder)
WILL_BE_SENT = "will be sent"


def message_stem(number: int, email: str) -> str:
    """``00001-ann@example.org``: sortable and recognisable file names."""
    return f"{number:05d}-{_UNSAFE.sub('_', email)[:80]}"


@dataclass
class PreviewWriter:
    """Writes messages into a folder as they are rendered, then the sign-off page. Before
    anything is written, a file this run could replace that dispatch did not write stops the
    run (exit 2)."""

    folder: Path
    subject: str
    inputs: Iterable[Path] = ()
    rows: int = 0
    _entries: list[MessageEntry] = field(default_factory=list, repr=False)
    _first: FirstMessage | None = field(default=None, repr=False)
    out: OutputFolder = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self.out = OutputFolder(self.folder, inputs=self.inputs)
        self.out.refuse_foreign(INDEX)
        self.out.refuse_foreign_like(MESSAGE_FILES)

    def add(self, number: int, sub: Subscriber, message: bytes, bodies: tuple[str, str], status: str) -> Path:
        """Write one message's ``.eml`` and ``.html``; returns the ``.html`` path."""
        stem = message_stem(number, sub.email)
        self.out.write(f"{stem}.eml", message)
        page = self.out.write(f"{stem}.html", bodies[0].encode())
        if self._first is None:
            self._first = FirstMessage(f"{stem}.html", bodies[1], readable_headers(message), sub.email)
        if len(self._entries) < MAX_INDEX_ROWS:
            self._entries.append(
                MessageEntry(number, sub.email, sub.name, f"{stem}.html", f"{stem}.eml", status)
            )
        self.rows += 1
        return page

    def close(self, summary: RunSummary, settings: Settings) -> Path:
        """Write the sign-off page, remove what an earlier dry run left, save the manifest."""
        data = ProofData(
            subject=summary.subject,
            sender=str(settings.sender or ""),
            campaign=summary.campaign,
            to_send=summary.pending,
            reply_to=str(settings.reply_to or ""),
            list_id=settings.list_id,
            already_sent=summary.already_sent,
            skipped=summary.skipped.skipped,
            skipped_total=summary.skipped.skipped_total,
            warnings=summary.warnings,
            problems=summary.blocking,
            refused=summary.refused,
            state=summary.state.describe() if summary.state is not None else "",
            rows=summary.rows,
            accounting=summary.accounting(),
            suppressed=summary.suppressed_who,
            suppressed_total=summary.suppressed,
            suppressed_by=summary.suppressed_by,
            first=self._first,
            messages=self._entries,
        )
        with self.out.stream(INDEX) as write:
            for chunk in proof_page_chunks(data):
                write(chunk)
        self.out.remove_stale(MESSAGE_FILES)
        self.out.close()
        return self.folder / INDEX


def readable_headers(message: bytes) -> str:
    """A message's header block as a person reads it: unfolded, encoded-words decoded."""
    parsed = BytesHeaderParser(policy=policy.default).parsebytes(message)
    return "\n".join(f"{name}: {' '.join(str(value).split())}" for name, value in parsed.items())


@contextmanager
def sample_list() -> Iterator[Path]:
    """A one-reader list, for a preview when no subscriber list is given or configured."""
    with tempfile.TemporaryDirectory(prefix="dispatch-") as folder:
        path = Path(folder) / "sample.csv"
        path.write_text("email,name\nreader@example.org,Sample Reader\n", encoding="utf-8")
        yield path


def write_message(
    issue: Issue, sub: Subscriber, page: Path, *, inputs: Iterable[Path] = ()
) -> tuple[Path, Path, Path]:
    """One recipient's message as ``page`` (HTML) with ``.eml`` and ``.txt`` beside it; none of
    the three may replace an input or a file dispatch did not write (checked before writing)."""
    data, _ = issue.message(sub)
    html_body, text_body = issue.preview_html(sub), issue.bodies(sub)[1]
    out = OutputFolder(page.parent, inputs=inputs, what="preview --out")
    try:
        names = [page.name, page.with_suffix(".eml").name, page.with_suffix(".txt").name]
    except ValueError:  # a folder such as "/" has no file name to put a suffix on
        names = []
    if len(set(names)) < 3:
        raise InputError(f"{page}: give preview --out a file name ending in .html")
    for name in names:
        out.refuse_foreign(name)
    written = (
        out.write(names[0], html_body.encode()),
        out.write(names[1], data),
        out.write(names[2], text_body.encode()),
    )
    out.close()
    return written


def run_dry(
    issue: Issue,
    folder: Path,
    *,
    write_all: bool,
    preview_count: int = 5,
    limit: int = 0,
    state: j.Journal | None = None,
    suppressions: SuppressionStore | None = None,
    only: list[Subscriber] | None = None,
    resend_unknown: bool = False,
    retry_failed: bool = False,
    inputs: Iterable[Path] = (),
    refused: Iterable[str] = (),
) -> RunSummary:
    """Render and check every message a send would send; write all (or the first few) to
    ``folder``. With the journal (read-only), recipients a real send would skip are skipped
    here too, and still previewed (marked) among the first few, so a sent campaign can be
    looked at again. ``refused``: what a real send would refuse, found by the caller."""
    summary = summary_for(issue, dry_run=True)
    if only is not None:
        summary.rows = len(only)
    problems = preflight(issue)
    identity = list_identity(issue, state)
    summary.blocking = [p.message for p in problems if p.blocking]
    summary.refused = [p.message for p in problems if p.level == "refused"] + list(refused)
    summary.warnings += [p.message for p in problems if not p.refuses_send] + campaign_warnings(issue, state)
    summary.warnings += identity.notes
    if state is not None and state.running(issue.campaign):
        summary.warnings.append(
            f"a send of campaign {issue.campaign!r} is running now: these counts are as of this "
            "moment, and its messages in flight show as unknown until it records them"
        )
    writer = PreviewWriter(folder, issue.subject, inputs)
    if suppressions is not None and not suppressions.count():
        suppressions = None  # an empty store: a dry run (unlike a send) need not ask it again
    rules = SkipRules(state, suppressions, issue.campaign, identity.list_ids, resend_unknown, retry_failed)
    seen = 0
    try:
        for sub in only if only is not None else recipients(issue):
            _, reason, detail = rules.check(sub.key)
            if reason is None and limit and summary.pending >= limit:
                break
            seen += 1
            show = write_all or summary.written < preview_count
            _preview_one(issue, writer, summary, sub, (reason, detail), show=show)
    except BaseException:
        writer.out.close()  # what was written stays recorded as dispatch's own
        raise
    summary.beyond_limit = (len(only) if only is not None else issue.stats.valid) - seen
    summary.preview = writer.close(summary, issue.settings)
    return summary


def _preview_one(
    issue: Issue,
    writer: PreviewWriter,
    summary: RunSummary,
    sub: Subscriber,
    skip: tuple[Skip | None, str],
    *,
    show: bool,
) -> None:
    """Count one recipient as a send would, and write its message if it is among those shown."""
    reason, detail = skip
    if reason is not None:
        summary.count_skip(reason, detail, sub.email)
        if not show:
            return  # a send would skip it: nothing to build
    try:
        data, _ = issue.message(sub)
    except (ValueError, UnicodeError, ConfigError) as err:  # as in a send: skipped, with its line
        if reason is None:
            summary.skipped.skip(Skipped(sub.line, f"the message could not be built: {err}"))
        return
    summary.pending += reason is None
    if show:
        summary.written += 1
        status = (f"{reason} ({detail})" if detail else str(reason)) if reason else WILL_BE_SENT
        writer.add(summary.written, sub, data, (issue.preview_html(sub), issue.bodies(sub)[1]), status)


SAMPLE_SENDER = Address("Sample sender (DISPATCH_FROM not set)", "sender@example.org")
SAMPLE_UNSUBSCRIBE_URL = "https://example.org/unsubscribe/{token}"


def with_samples(settings: Settings) -> tuple[Settings, list[str]]:
    """Settings a preview can use without any ``.env``: a sample From and unsubscribe link where
    none is set (marked as samples in the message itself), and the names of what was filled in."""
    filled: list[str] = []
    if settings.sender is None:
        settings = replace(settings, sender=SAMPLE_SENDER)
        filled.append("DISPATCH_FROM")
    if not (settings.unsubscribe_url or settings.unsubscribe_mailto):
        settings = replace(settings, unsubscribe_url=SAMPLE_UNSUBSCRIBE_URL)
        filled.append("DISPATCH_UNSUBSCRIBE_URL")
    return settings, filled


PROOFS_EXTRA = (
    "--png and --pdf need the proofs extra (Playwright, which drives this machine's Chromium; "
    "nothing is downloaded): pip install 'dispatch[proofs]'"
)


def require_proofs_extra() -> None:
    """ConfigError (exit 2) naming the extra to install when Playwright is not installed."""
    try:
        import playwright  # noqa: F401, PLC0415 - only asked when a proof is
    except ImportError as err:
        raise ConfigError(PROOFS_EXTRA) from err


def proof_files(
    issue: Issue,
    sub: Subscriber,
    page: Path,
    scratch: Path,
    *,
    png: Path | None,
    pdf: Path | None,
    inputs: Iterable[Path] = (),
) -> list[Path]:
    """Pictures (``--png DIR``) and a PDF (``--pdf FILE``) of one message for sign-off, made
    with the machine's Chromium in ``scratch`` and then written like every other output."""
    require_proofs_extra()
    from dispatch.proof import chromium as proof  # noqa: PLC0415 - Playwright loads only when a proof is asked for

    chromium = proof.find_chromium(issue.settings.chromium)
    made: list[Path] = []
    if png is not None:
        out = OutputFolder(png, inputs=inputs, what="--png")
        for name in ("desktop.png", "phone.png", "dark.png"):
            out.refuse_foreign(name)
        for picture in proof.screenshots(page, scratch, chromium):
            made.append(out.write(picture.name, picture.read_bytes()))
        out.close()
    if pdf is not None:
        out = OutputFolder(pdf.parent, inputs=inputs, what="--pdf")
        out.refuse_foreign(pdf.name)
        data, _ = issue.message(sub)
        headers = data.split(b"\r\n\r\n", 1)[0].decode("ascii", "replace")
        text = issue.bodies(sub)[1]
        made_pdf = proof.pdf(
            scratch / "proof.pdf", html_file=page, text=text, headers=headers, chromium=chromium
        )
        made.append(out.write(pdf.name, made_pdf.read_bytes()))
        out.close()
    return made


def write_archive(issue: Issue, folder: Path, *, inputs: Iterable[Path] = ()) -> Path:
    """The issue's web version (``preview --archive DIR``): ``DIR/<campaign>.html`` with no
    personal data — every subscriber value empty, no unsubscribe link — and its pictures inline,
    ready to publish at DISPATCH_WEB_URL. ``issue`` must be planned with ``web_version=True``."""
    nobody = Subscriber("reader@example.org", "", 0, dict.fromkeys(issue.subscribers.columns, ""))
    values = dict.fromkeys(issue.values(nobody), "")
    page = previewable(issue.rendered.personalise(values)[0], issue.previews)
    out = OutputFolder(folder, inputs=inputs, what="--archive", public=True)
    written = out.write(f"{issue.campaign}.html", page.encode())
    out.close()
    return written
