"""Campaigns: plan an issue once, then stream the list through one message per recipient.

A dry run and a real send share every step except the last one: a dry run writes each
message to a preview folder, a send hands it to an SMTP transport and records the outcome in
the journal as it happens.
"""

from __future__ import annotations

import hashlib
import queue
import random
import re
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dispatch import journal as j
from dispatch.article import Article, load_article
from dispatch.errors import AbortError, ExitCode, InputError
from dispatch.message import MessageFactory
from dispatch.preview import PreviewWriter
from dispatch.render import RenderedIssue, column_key, render_issue
from dispatch.settings import Rate, Settings
from dispatch.subscribers import ListStats, Skipped, Subscriber, SubscriberList, validate_address
from dispatch.transport import Result, SmtpTransport, Status, Unreachable, probe

Progress = Callable[[int], None]
MIN_SAMPLE_FOR_RATIO = 20
MAX_BACKOFF = 60.0


def campaign_id(article: Article) -> str:
    """Front matter ``campaign``, else a slug of the title plus a short hash of it."""
    if article.campaign:
        return article.campaign
    slug = re.sub(r"[^a-z0-9]+", "-", article.title.lower()).strip("-")[:48].strip("-")
    digest = hashlib.sha256(article.title.encode()).hexdigest()[:6]
    return f"{slug or 'issue'}-{digest}"


@dataclass(frozen=True)
class Issue:
    """An issue planned once: the article rendered and inlined, the list checked."""

    article: Article
    subscribers: SubscriberList
    stats: ListStats
    rendered: RenderedIssue
    factory: MessageFactory
    campaign: str
    settings: Settings
    test_send: bool = False

    @property
    def subject(self) -> str:
        """The Subject header's text."""
        return self.rendered.subject

    def bodies(self, sub: Subscriber) -> tuple[str, str]:
        """This recipient's (HTML, text) bodies."""
        values = {column_key(k): v for k, v in sub.fields.items()}
        values |= {
            "email": sub.email,
            "name": sub.name,
            "unsubscribe_url": self.factory.unsubscribe_target(sub.email),
        }
        return self.rendered.personalise(values)

    def message(self, sub: Subscriber, *, message_id: str = "") -> tuple[bytes, str, str]:
        """(wire bytes, HTML body, Message-ID) of this recipient's copy."""
        html, text = self.bodies(sub)
        salt = str(time.time_ns()) if self.test_send else ""
        mid = message_id or self.factory.message_id(sub.key, salt=salt)
        data = self.factory.build(email=sub.email, name=sub.name, text=text, html=html, message_id=mid)
        return data, html, mid


def plan_issue(
    article_path: Path,
    subscribers_path: Path,
    settings: Settings,
    *,
    subject: str = "",
    template_dir: Path | None = None,
    encoding: str = "utf-8-sig",
    campaign: str = "",
    test_send: bool = False,
) -> Issue:
    """Everything that can be checked before the first message: article, list, templates."""
    sender = settings.require_sending_identity()
    article = load_article(article_path)
    subscribers = SubscriberList(subscribers_path, encoding)
    title = article.subject or subject or article.title
    if test_send:
        title = f"[TEST] {title}"
    rendered = render_issue(
        article,
        subject=title,
        columns=subscribers.columns,
        organization=settings.organization,
        postal_address=settings.postal_address,
        template_dir=template_dir,
        test_send=test_send,
    )
    name = campaign or campaign_id(article)
    factory = MessageFactory(
        sender=sender,
        subject=title,
        campaign=name,
        reply_to=settings.reply_to,
        unsubscribe_url=settings.unsubscribe_url,
        unsubscribe_mailto=settings.unsubscribe_mailto,
        fingerprint=article.fingerprint,
    )
    stats = subscribers.scan()
    return Issue(article, subscribers, stats, rendered, factory, name, settings, test_send)


@dataclass(frozen=True)
class Failure:
    """A recipient the server refused, with its reply."""

    email: str
    code: int | None
    message: str
    state: str = j.FAILED


@dataclass
class RunSummary:
    """What a run did; the CLI prints it, ``--json`` serialises it."""

    campaign: str
    subject: str
    recipients: int
    skipped: list[Skipped]
    html_size: int
    dry_run: bool = False
    test_send: bool = False
    sent: int = 0
    sent_now: int = 0
    failed: int = 0
    deferred: int = 0
    unknown: int = 0
    pending: int = 0
    already_sent: int = 0
    recovered_unknown: int = 0
    content_changed: bool = False
    daily_limit_reached: bool = False
    failures: list[Failure] = field(default_factory=list)
    aborted: str = ""
    interrupted: bool = False
    preview: Path | None = None
    written: int = 0

    @property
    def exit_code(self) -> ExitCode:
        """0 all done; 130 interrupted; 3 aborted; 1 failed, deferred, unknown or over the
        daily limit (recipients left by ``--limit`` are a choice, not a failure)."""
        if self.interrupted:
            return ExitCode.INTERRUPTED
        if self.aborted:
            return ExitCode.ABORTED
        if self.failed or self.deferred or self.unknown or self.daily_limit_reached:
            return ExitCode.INCOMPLETE
        return ExitCode.OK

    def as_json(self) -> dict[str, Any]:
        """A machine-readable summary (stable keys)."""
        return {
            "campaign": self.campaign,
            "subject": self.subject,
            "dry_run": self.dry_run,
            "test_send": self.test_send,
            "recipients": self.recipients,
            "sent": self.sent,
            "sent_now": self.sent_now,
            "already_sent": self.already_sent,
            "failed": self.failed,
            "deferred": self.deferred,
            "unknown": self.unknown,
            "skipped": len(self.skipped),
            "pending": self.pending,
            "failures": [
                {"email": f.email, "code": f.code, "message": f.message, "state": f.state}
                for f in self.failures
            ],
            "skipped_rows": [{"line": s.line, "reason": s.reason} for s in self.skipped],
            "aborted": self.aborted or None,
            "interrupted": self.interrupted,
            "content_changed": self.content_changed,
            "daily_limit_reached": self.daily_limit_reached,
            "html_size": self.html_size,
            "preview": str(self.preview) if self.preview else None,
            "exit_code": int(self.exit_code),
        }


def _summary(issue: Issue, **kw: Any) -> RunSummary:
    return RunSummary(
        campaign=issue.campaign,
        subject=issue.subject,
        recipients=issue.stats.valid,
        skipped=issue.stats.skipped,
        html_size=issue.rendered.html_size,
        test_send=issue.test_send,
        **kw,
    )


def _recipients(issue: Issue) -> Iterator[Subscriber]:
    return (item for item in issue.subscribers if isinstance(item, Subscriber))


def named_recipients(issue: Issue, addresses: list[str]) -> list[Subscriber]:
    """``--to`` addresses as recipients, with their list row's fields when they have one."""
    wanted: dict[str, Subscriber] = {}
    for raw in addresses:
        try:
            email = validate_address(raw)
        except ValueError as err:
            raise InputError(f"--to {raw!r}: {err}") from err
        wanted[email.lower()] = Subscriber(email, "", 0, dict.fromkeys(issue.subscribers.columns, ""))
    for sub in _recipients(issue):
        if sub.key in wanted:
            wanted[sub.key] = sub
    return list(wanted.values())


def run_dry(
    issue: Issue,
    folder: Path,
    *,
    write_all: bool,
    preview_count: int = 5,
    limit: int = 0,
    state: j.Journal | None = None,
    only: list[Subscriber] | None = None,
) -> RunSummary:
    """Render and check every message; write all (or the first few) to ``folder``."""
    summary = _summary(issue, dry_run=True)
    writer = PreviewWriter(folder, issue.subject)
    try:
        for sub in only if only is not None else _recipients(issue):
            if state is not None and state.state(issue.campaign, sub.key) in (j.SENT, j.FAILED):
                summary.already_sent += 1
                continue
            if limit and summary.pending >= limit:
                break
            data, html, _ = issue.message(sub)
            summary.pending += 1
            if write_all or summary.written < preview_count:
                writer.add(summary.pending, sub.email, sub.name, data, html)
                summary.written += 1
    finally:
        summary.preview = writer.close()
    return summary


class Pacer:
    """A shared rate limit: at most one message every ``interval`` seconds, no bursts."""

    def __init__(self, rate: Rate | None) -> None:
        self.interval = rate.interval if rate else 0.0
        self._next = 0.0
        self._lock = threading.Lock()

    def wait(self, stop: threading.Event) -> None:
        """Block until the next message may go (or ``stop`` is set)."""
        if not self.interval:
            return
        with self._lock:
            now = time.monotonic()
            slot = max(now, self._next)
            self._next = slot + self.interval
        if slot > now:
            stop.wait(slot - now)


@dataclass
class SendOptions:
    """How a real send behaves."""

    limit: int = 0
    resend_unknown: bool = False
    only: list[Subscriber] | None = None  # a test send to these recipients
    progress: Progress | None = None
    stop: threading.Event = field(default_factory=threading.Event)
    sleep: Callable[[float], None] = time.sleep


class _Run:
    """The shared state of one send across its worker threads."""

    def __init__(self, issue: Issue, journal: j.Journal | None, options: SendOptions) -> None:
        self.issue = issue
        self.journal = journal
        self.options = options
        self.settings = issue.settings
        self.pacer = Pacer(self.settings.rate)
        self.lock = threading.Lock()
        self.stop = threading.Event()
        self.abort = ""
        self.attempted = self.failed = self.sent = 0
        self.untouched = 0  # recipients never tried before and not tried now: still pending
        self.budget: int | None = None
        self.test_results: list[tuple[Subscriber, Result]] = []

    def halt(self, reason: str) -> None:
        with self.lock:
            self.abort = self.abort or reason
        self.stop.set()

    def take_budget(self) -> bool:
        with self.lock:
            if self.budget is None:
                return True
            if self.budget <= 0:
                return False
            self.budget -= 1
            return True

    def leave(self, prior: str | None) -> None:
        """A recipient this run will not try after all."""
        if prior is None:
            with self.lock:
                self.untouched += 1

    def worker(self, work: queue.Queue[tuple[Subscriber, str | None] | None]) -> None:
        transport = SmtpTransport(self.settings)
        try:
            while True:
                item = work.get()
                if item is None:
                    return
                sub, prior = item
                if self.stop.is_set() or self.options.stop.is_set():
                    self.leave(prior)  # draining after a stop
                    continue
                if not self.take_budget():
                    self.leave(prior)
                    self.stop.set()  # the daily limit: the rest wait for a later run
                    continue
                self.pacer.wait(self.options.stop)
                try:
                    self.deliver(transport, sub)
                except AbortError as err:
                    self.halt(str(err))
        finally:
            transport.close()

    def deliver(self, transport: SmtpTransport, sub: Subscriber) -> None:
        issue, campaign, journal = self.issue, self.issue.campaign, self.journal
        data, _, mid = issue.message(sub)
        sender = issue.factory.sender.addr_spec

        def mark() -> None:
            if journal is not None:
                journal.in_flight(campaign, sub.key, sub.email, mid)

        result = self._attempts(transport, sender, sub.email, data, mark)
        with self.lock:
            self.attempted += 1
            self.sent += result.status is Status.SENT
            self.failed += result.status is Status.FAILED
            failed, attempted = self.failed, self.attempted
        if journal is not None:
            journal.outcome(
                campaign, sub.key, sub.email, str(result.status),
                code=result.code, enhanced=result.enhanced, reply=result.text,
                hard_bounce=result.hard_bounce, message_id=mid, attempted=not result.data_started,
            )  # fmt: skip
        else:
            with self.lock:
                self.test_results.append((sub, result))
        if self.options.progress is not None:
            self.options.progress(1)
        if result.stops_campaign:
            raise AbortError(f"the server asked to stop: {result.line()}; run again later")
        ratio = self.settings.max_failure_ratio
        if ratio and attempted >= MIN_SAMPLE_FOR_RATIO and failed / attempted > ratio:
            raise AbortError(
                f"{failed} of {attempted} recipients were refused permanently (more than "
                f"{ratio:.0%}); stopping to protect the sender's reputation: see 'dispatch status'"
            )

    def _attempts(
        self, transport: SmtpTransport, sender: str, to: str, data: bytes, mark: Callable[[], None]
    ) -> Result:
        retries, delay = self.settings.retries, self.settings.retry_delay
        result = Result(Status.DEFERRED, None, "not attempted")
        for attempt in range(retries + 1):
            try:
                result = transport.send(sender, to, data, mark)
            except Unreachable as err:
                if attempt == retries:
                    raise AbortError(f"{err} (after {retries + 1} tries)") from err
                result = Result(Status.DEFERRED, None, str(err))
            if result.status is not Status.DEFERRED or result.stops_campaign:
                return result
            if attempt < retries and not self.options.stop.is_set():
                backoff = min(MAX_BACKOFF, delay * 2**attempt)
                self.options.sleep(backoff * random.uniform(0.5, 1.5))
        return result


def run_send(issue: Issue, journal: j.Journal | None, options: SendOptions) -> RunSummary:
    """Send the issue. With a journal (a campaign send) holds the campaign lock throughout."""
    if journal is None:
        return _send(issue, None, options, _summary(issue))
    with journal.lock(issue.campaign):
        summary = _summary(issue)
        old = journal.begin(
            issue.campaign, issue.subject, issue.article.fingerprint, str(issue.article.source)
        )
        summary.content_changed = old is not None
        summary.recovered_unknown = journal.recover(issue.campaign)
        journal.set_recipients(issue.campaign, issue.stats.valid)
        return _send(issue, journal, options, summary)


def _send(issue: Issue, journal: j.Journal | None, options: SendOptions, summary: RunSummary) -> RunSummary:
    settings = issue.settings
    run = _Run(issue, journal, options)
    if journal is not None and settings.daily_limit:
        run.budget = max(0, settings.daily_limit - journal.sent_within())
    probe(settings)  # a wrong password or a dead server ends the run before any message
    work: queue.Queue[tuple[Subscriber, str | None] | None]
    work = queue.Queue(maxsize=settings.connections * 4)
    threads = [
        threading.Thread(target=run.worker, args=(work,), name=f"smtp-{n}", daemon=True)
        for n in range(settings.connections)
    ]
    for thread in threads:
        thread.start()
    todo = 0
    try:
        for sub in options.only if options.only is not None else _recipients(issue):
            state = journal.state(issue.campaign, sub.key) if journal is not None else None
            if state in (j.SENT, j.FAILED) or (state == j.UNKNOWN and not options.resend_unknown):
                summary.already_sent += state == j.SENT
                continue
            todo += 1
            if (options.limit and todo > options.limit) or run.stop.is_set() or options.stop.is_set():
                run.leave(state)  # counted as left, nothing more is sent
                continue
            work.put((sub, state))
    finally:
        for _ in threads:
            work.put(None)
        for thread in threads:
            thread.join()
    summary.sent_now = run.sent
    summary.aborted = run.abort
    summary.interrupted = options.stop.is_set() and not run.abort
    summary.pending = run.untouched
    if journal is not None:
        counts = journal.counts(issue.campaign)
        summary.sent, summary.failed = counts[j.SENT], counts[j.FAILED]
        summary.deferred, summary.unknown = counts[j.DEFERRED], counts[j.UNKNOWN]
        summary.failures = [
            Failure(r.email, r.code, r.reply, r.state)
            for r in journal.records(issue.campaign, (j.FAILED, j.DEFERRED, j.UNKNOWN))
        ]
    else:
        for sub, result in run.test_results:
            summary.sent += result.status is Status.SENT
            summary.failed += result.status is Status.FAILED
            summary.deferred += result.status is Status.DEFERRED
            summary.unknown += result.status is Status.UNKNOWN
            if result.status is not Status.SENT:
                summary.failures.append(Failure(sub.email, result.code, result.text, str(result.status)))
    summary.daily_limit_reached = run.budget == 0 and summary.pending > 0
    return summary
