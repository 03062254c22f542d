"""Delivery: stream the planned issue's recipients through SMTP connections, recording each
outcome in the journal as it happens.

Worker threads each own one connection; the main thread feeds them from the streamed list.
A shared pacer enforces the rate, the journal's reservations the daily limit (across every
run in the state folder), and one stop event lets SIGINT/SIGTERM, an abort reply or the daily
limit end the run after the messages in flight.
"""

from __future__ import annotations

import queue
import threading
from contextlib import nullcontext
from dataclasses import replace

from dispatch.compose.issue import Issue, recipients
from dispatch.errors import ConfigError
from dispatch.lists.subscribers import Skipped
from dispatch.send.campaign import campaign_warnings, list_identity, list_use
from dispatch.send.claiming import ClaimFeed
from dispatch.send.preflight import preflight, require_no_blocking
from dispatch.send.relays import start_pool
from dispatch.send.skips import Skip
from dispatch.send.summary import Failure, RunSummary, summary_for
from dispatch.send.transport import Status
from dispatch.send.worker import Item, Pool, Run, SendOptions

__all__ = ["SendOptions", "run_send"]
from dispatch.state import journal as j
from dispatch.state.db import StateError
from dispatch.untrusted import shown


def run_send(issue: Issue, journal: j.Journal | None, options: SendOptions) -> RunSummary:
    """Send the issue. With a journal (a campaign send) holds the campaign lock throughout.

    A wrong password, a dead server or messages larger than the relay takes end the run before
    any message, and before the journal records the campaign at all."""
    issue.require_unsubscribe_link()
    problems = preflight(issue)
    require_no_blocking(problems)
    warnings = [p.message for p in problems]
    pool = start_pool(issue.settings, options.tokens, warnings.append)  # every relay, once
    for relay in pool.live():
        issue.check_size(relay.info.size_limit if relay.info else 0, f"the relay {relay.name} (its SIZE)")
    if journal is None:
        summary = summary_for(issue)
        summary.warnings += warnings
        return _send(issue, None, options, summary, pool)
    finished: RunSummary | None = None
    try:
        with journal.lock(issue.campaign):
            finished = _campaign(issue, journal, options, warnings, pool)
    except StateError as err:
        if finished is None:
            raise  # before or while sending: the run said nothing yet (a send is halted inside)
        finished.stopped(str(err))  # leaving the campaign failed: say so, exit 3
    assert finished is not None
    return finished


def _campaign(
    issue: Issue, journal: j.Journal, options: SendOptions, warnings: list[str], pool: Pool
) -> RunSummary:
    """The campaign's send, under its lock (see run_send)."""
    summary = summary_for(issue)
    identity = list_identity(issue, journal)
    summary.warnings += warnings + campaign_warnings(issue, journal) + list(identity.notes)
    options = replace(options, list_ids=identity.list_ids)
    journal.record_list(list_use(issue.settings))
    source = str(issue.article.source.resolve())
    old = journal.begin(
        issue.campaign, issue.subject, issue.article.fingerprint, source, issue.article.body_fingerprint
    )
    summary.content_changed = old is not None
    summary.recovered_unknown = journal.recover(issue.campaign)
    if issue.settings.give_up_days:
        summary.given_up = journal.give_up(issue.campaign, issue.settings.give_up_days)
    journal.set_recipients(issue.campaign, issue.stats.valid)
    return _send(issue, journal, options, summary, pool)


def _put(work: queue.Queue[Item | None], item: Item | None, threads: list[threading.Thread]) -> bool:
    """Queue an item while any worker is alive to take it (a dead pool must not hang the run);
    False when no worker is left."""
    while any(t.is_alive() for t in threads):
        try:
            work.put(item, timeout=0.5)
            return True
        except queue.Full:
            continue
    return False


def _send(
    issue: Issue, journal: j.Journal | None, options: SendOptions, summary: RunSummary, pool: Pool
) -> RunSummary:
    run = Run(issue, journal, options, pool)
    try:
        with journal.grouped() if journal is not None else nullcontext():
            _feed(issue, run, options, summary)
    except StateError as err:  # the journal's last writes failed (a full disk): say so, stop
        run.halt(str(err))
    if journal is not None and journal.shared:
        _settle_share(run, summary)
    if run.crash is not None:
        raise run.crash  # a bug: the CLI reports it (with the traceback under --debug)
    try:
        _collect(run, summary)
    except StateError as err:  # the campaign's counts come from the journal: this run's are kept
        run.halt(str(err))
        summary.sent, summary.failed = summary.sent_now, summary.failed_now
        summary.deferred, summary.unknown = summary.deferred_now, summary.unknown_now
    if run.abort:
        summary.stopped(run.abort)
    return summary


def _feed(issue: Issue, run: Run, options: SendOptions, summary: RunSummary) -> None:
    """Read the list, leave out whom the journal says to, build each message, and hand it to
    the workers (one per connection); they check the suppression store just before sending."""
    relays = run.pool.live()  # each relay's connections take from the one queue
    work: queue.Queue[Item | None] = queue.Queue(maxsize=sum(r.settings.connections for r in relays) * 4)
    threads = [
        threading.Thread(target=run.worker, args=(work, relay), name=f"smtp-{r}-{n}", daemon=True)
        for r, relay in enumerate(relays)
        for n in range(relay.settings.connections)
    ]
    for thread in threads:
        thread.start()
    if run.journal is not None and run.journal.shared:  # one of several senders: claims
        try:
            run.share = ClaimFeed(issue, run, options, summary, lambda item: _put(work, item, threads))
            run.share.run_feed()
        finally:
            _finish(work, threads)
        return
    todo = 0
    try:
        for sub in options.only if options.only is not None else recipients(issue):
            # (with --limit, suppressed readers must not use up the limit: ask the store now)
            state, reason, detail = run.rules.check(sub.key, store=bool(options.limit))
            if reason is None and ((options.limit and todo >= options.limit) or run.stop.is_set()):
                entry = run.rules.suppressed(sub.key)  # left for later, unless suppressed: say which
                reason, detail = (Skip.SUPPRESSED, entry.reason) if entry is not None else (None, "")
                if reason is None:
                    run.leave(state)  # counted as left, nothing more is sent
                    continue
            if reason is not None:
                summary.count_skip(reason, detail, sub.email)
                if reason is Skip.SUPPRESSED:
                    run.settle_suppressed(sub, detail)
                continue
            todo += 1
            try:
                data, mid = issue.message(sub)
                data = issue.factory.for_wire(data)
            except (ValueError, UnicodeError, ConfigError) as err:  # as in a dry run: skipped, with its line
                run.unbuildable.append(Skipped(sub.line, f"the message could not be built: {err}"))
                continue  # (counted among the skipped rows, once)
            if not _put(work, (sub, state, data, mid), threads):
                run.leave(state)
    finally:
        _finish(work, threads)


def _finish(work: queue.Queue[Item | None], threads: list[threading.Thread]) -> None:
    """Tell every worker the list is done, and wait for them."""
    for _ in threads:
        _put(work, None, threads)
    for thread in threads:
        thread.join()


def _settle_share(run: Run, summary: RunSummary) -> None:
    """With several senders: what this one left to the others (see ClaimFeed.settle)."""
    if run.share is None:
        return
    try:
        run.share.settle()
    except StateError as err:
        run.halt(str(err))
    lost = run.journal.fenced_out if run.journal is not None else 0
    if lost:
        summary.warnings.append(
            f"{lost} write(s) about recipients were not recorded: this sender's claims had passed to another "
            "sender (it was paused past its lease); those recipients read as unknown"
        )


def _collect(run: Run, summary: RunSummary) -> None:
    """Fill in the summary: from the journal for a campaign, from the results for a test send."""
    for email, reason in run.late_suppressed:
        summary.count_skip(Skip.SUPPRESSED, reason, email)
    summary.sent_now = run.sent
    summary.failed_now, summary.deferred_now, summary.unknown_now = run.failed, run.deferred, run.unknown
    for item in run.unbuildable:
        summary.skipped.skip(item)
    summary.aborted = run.abort
    summary.relays = [relay.report() for relay in run.pool.relays]
    summary.interrupted = run.stop.is_set() and not run.abort and not run.limit_reached
    summary.pending = run.untouched
    summary.daily_limit_reached = run.limit_reached and summary.pending > 0
    if run.journal is not None:
        campaign = run.issue.campaign
        counts = run.journal.counts(campaign)
        summary.sent, summary.failed = counts[j.SENT], counts[j.FAILED]
        summary.deferred, summary.unknown = counts[j.DEFERRED], counts[j.UNKNOWN]
        summary.failures = [
            Failure(r.email, r.code, shown(r.reply), r.state)  # (a reply an older version stored raw)
            for r in run.journal.records(campaign, (j.FAILED, j.DEFERRED, j.UNKNOWN))
        ]
        return
    for sub, result in run.test_results:
        summary.sent += result.status is Status.SENT
        summary.failed += result.status is Status.FAILED
        summary.deferred += result.status is Status.DEFERRED
        summary.unknown += result.status is Status.UNKNOWN
        if result.status is not Status.SENT:
            summary.failures.append(Failure(sub.email, result.code, result.text, str(result.status)))
