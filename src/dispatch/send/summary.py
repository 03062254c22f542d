"""What a run did, counted so that every row of the list is accounted for once; the CLI prints
it and ``--json`` serialises it."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dispatch.compose.issue import Issue
from dispatch.errors import ExitCode
from dispatch.lists.subscribers import ListStats
from dispatch.send.skips import Skip
from dispatch.settings import StateLocation
from dispatch.state import journal as j


# Without DISPATCH_UNSUBSCRIBE_SECRET a dry run or a preview still shows a link of the right
# shape, sealed with this well-known key; a real send refuses to start (``require_sendable``).
@dataclass(frozen=True)
class Failure:
    """A recipient the server refused, with its reply."""

    email: str
    code: int | None
    message: str
    state: str = j.FAILED


MAX_LISTED_SUPPRESSED = 10_000  # addresses a summary names (all are counted)


@dataclass
class RunSummary:
    """What a run did; the CLI prints it, ``--json`` serialises it.

    Every row of the list is accounted for once (:meth:`accounting`): sent now (or, in a dry
    run, would be sent), failed, deferred or unknown now, already sent, suppressed, left as an
    earlier run's failure or unknown outcome, not tried this run, or a skipped row.
    """

    campaign: str
    subject: str
    recipients: int
    skipped: ListStats  # the rows left out, with their lines (the first 10,000 of them)
    html_size: int
    dry_run: bool = False
    test_send: bool = False
    state: StateLocation | None = None  # where the journal and the suppression store are
    rows: int = 0  # the list's rows (a test send: its addresses)
    sent: int = 0  # campaign total
    sent_now: int = 0
    failed: int = 0  # campaign totals, as the journal has them
    deferred: int = 0
    unknown: int = 0
    failed_now: int = 0  # this run's outcomes
    deferred_now: int = 0
    unknown_now: int = 0
    pending: int = 0  # a dry run: would be sent; a send: not tried this run (limit, stop, budget)
    beyond_limit: int = 0  # a dry run: recipients after --limit
    already_sent: int = 0
    left_failed: int = 0  # failed in an earlier run, not sent again (--retry-failed)
    left_unknown: int = 0  # unknown from an earlier run, not sent again (--resend-unknown)
    suppressed: int = 0  # unsubscribed from this list, or bounced, complained, removed by hand
    suppressed_by: dict[str, int] = field(default_factory=dict)  # reason -> how many
    suppressed_who: list[tuple[str, str]] = field(default_factory=list)  # (address, reason), the first 10,000
    recovered_unknown: int = 0
    given_up: int = 0  # deferred for longer than DISPATCH_GIVE_UP_DAYS: now failed
    content_changed: bool = False
    daily_limit_reached: bool = False
    failures: list[Failure] = field(default_factory=list)
    aborted: str = ""
    interrupted: bool = False
    preview: Path | None = None
    written: int = 0
    warnings: list[str] = field(default_factory=list)
    blocking: list[str] = field(default_factory=list)  # a real send would refuse (a dry run shows them)
    refused: list[str] = field(default_factory=list)  # example values: a real send refuses, a dry run shows
    relays: list[dict[str, Any]] = field(default_factory=list)  # what each relay did (send.relays)
    shared: bool = False  # one of several senders on the campaign (PostgreSQL state)
    other_senders: int = 0  # rows this run found to do that other senders took

    @property
    def exit_code(self) -> ExitCode:
        """0 all done; 130 interrupted; 3 aborted; 1 failed, deferred, unknown or over the
        daily limit in this run (recipients left by ``--limit`` are a choice, not a failure;
        an earlier run's failures are listed, but this run did what it could)."""
        if self.blocking:
            return ExitCode.BAD_INPUT
        if self.interrupted:
            return ExitCode.INTERRUPTED
        if self.aborted:
            return ExitCode.ABORTED
        unknown = self.unknown_now + self.recovered_unknown  # found in flight: this run made them unknown
        if self.failed_now or self.deferred_now or unknown or self.daily_limit_reached:
            return ExitCode.INCOMPLETE
        return ExitCode.OK

    def count_skip(self, skip: Skip, detail: str = "", email: str = "") -> None:
        """Count a recipient this run leaves out on purpose."""
        self.already_sent += skip is Skip.SENT
        self.left_failed += skip is Skip.FAILED
        self.left_unknown += skip is Skip.UNKNOWN
        if skip is Skip.SUPPRESSED:
            self.suppressed += 1
            self.suppressed_by[detail] = self.suppressed_by.get(detail, 0) + 1
            if email and len(self.suppressed_who) < MAX_LISTED_SUPPRESSED:
                self.suppressed_who.append((email, detail))

    def accounting(self) -> list[tuple[str, int]]:
        """Where every row went, in order; the counts add up to :attr:`rows`."""
        if self.dry_run:
            first = [("would be sent", self.pending), ("after --limit", self.beyond_limit)]
        else:
            first = [("sent now", self.sent_now), ("failed now", self.failed_now),
                     ("deferred now", self.deferred_now), ("unknown now", self.unknown_now),
                     ("not tried this run", self.pending),
                     *([("by other senders", self.other_senders)] if self.shared else [])]  # fmt: skip
        return [
            *first,
            ("already sent", self.already_sent),
            ("suppressed", self.suppressed),
            ("failed earlier", self.left_failed),
            ("unknown earlier", self.left_unknown),
            ("skipped rows", self.skipped.skipped_total),
        ]

    def stopped(self, reason: str) -> None:
        """The run stopped (``reason``, unless one was given first), perhaps before it reached
        every row (the state failing under it): the rows it never reached were not tried this
        run, and the counts still add up."""
        self.aborted = self.aborted or reason
        if not self.dry_run:
            self.pending += max(0, self.rows - sum(n for _, n in self.accounting()))

    def state_json(self) -> dict[str, Any] | None:
        """Where the state is, for ``--json``."""
        if self.state is None:
            return None
        return self.state.as_json()

    def as_json(self) -> dict[str, Any]:
        """A machine-readable summary (stable keys)."""
        return {
            "campaign": self.campaign,
            "subject": self.subject,
            "dry_run": self.dry_run,
            "test_send": self.test_send,
            "state": self.state_json(),
            "rows": self.rows,
            "accounting": dict(self.accounting()),
            "recipients": self.recipients,
            "sent": self.sent,
            "sent_now": self.sent_now,
            "already_sent": self.already_sent,
            "suppressed": self.suppressed,
            "suppressed_by_reason": dict(sorted(self.suppressed_by.items())),
            "suppressed_recipients": [{"email": e, "reason": r} for e, r in self.suppressed_who],
            "failed": self.failed,
            "deferred": self.deferred,
            "unknown": self.unknown,
            "failed_now": self.failed_now,
            "deferred_now": self.deferred_now,
            "unknown_now": self.unknown_now,
            "recovered_unknown": self.recovered_unknown,
            "relays": self.relays,
            "failed_earlier": self.left_failed,
            "unknown_earlier": self.left_unknown,
            "skipped": self.skipped.skipped_total,
            "pending": self.pending,
            "failures": [
                {"email": f.email, "code": f.code, "message": f.message, "state": f.state}
                for f in self.failures
            ],
            "skipped_rows": [{"line": s.line, "reason": s.reason} for s in self.skipped.skipped],
            "skipped_rows_complete": self.skipped.skipped_total == len(self.skipped.skipped),
            "aborted": self.aborted or None,
            "interrupted": self.interrupted,
            "content_changed": self.content_changed,
            "daily_limit_reached": self.daily_limit_reached,
            "html_size": self.html_size,
            "preview": str(self.preview) if self.preview else None,
            "warnings": self.warnings,
            "blocking": self.blocking,
            "refused_by_send": self.refused,
            "exit_code": int(self.exit_code),
        }


def summary_for(issue: Issue, **kw: Any) -> RunSummary:
    return RunSummary(
        campaign=issue.campaign,
        subject=issue.subject,
        recipients=issue.stats.valid,
        skipped=ListStats(skipped=list(issue.stats.skipped), skipped_total=issue.stats.skipped_total),
        html_size=issue.rendered.html_size,
        test_send=issue.test_send,
        state=issue.settings.state,
        rows=issue.stats.valid + issue.stats.skipped_total,
        warnings=[
            *issue.rendered.warnings,
            *issue.subscribers.notes,
            *(
                ["the list has no valid subscriber: there is nobody to send to"]
                if not issue.stats.valid
                else []
            ),
        ],
        **kw,
    )
