"""What ``dispatch inbound`` does with each message, once.

* a hard bounce (5.x.x) suppresses the reader on every list, reason ``bounced``;
* a soft bounce (4.x.x, delayed, or a 5.x.x about the message or the sender: 5.3.4, 5.6.x,
  5.7.x but a 5.7.1 that refuses the recipient) counts once per issue; a reader whose last
  ``DISPATCH_SOFT_BOUNCE_LIMIT`` (3) issues in a row bounced softly is suppressed, ``bounced``;
* a complaint suppresses the reader on every list, reason ``complained``;
* a mailto unsubscribe suppresses the reader on the list its token names, ``unsubscribed``;
* an auto-reply, a delivery notice, anything else, and a report that names nobody this state
  folder sent to (or holds a token that is not ours) changes nothing, and is counted;
* a report whose token is ours but names a campaign this state does not hold (read against
  the wrong state?) is kept, like an unreadable message, and not remembered as read.

A report read before (its Message-ID, or its content without one) changes nothing the second
time. Every decision is one :class:`Decision`, shown as one line.
"""

from __future__ import annotations

from collections import Counter
from contextlib import ExitStack, closing
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from dispatch.inbound.classify import read_report
from dispatch.inbound.readers import NotOurs, Reader, Readers, WrongState
from dispatch.inbound.reports import Kind, Report, Unreadable
from dispatch.state import backend
from dispatch.state import suppression as s
from dispatch.state.feedback import BOUNCED, COMPLAINED, SOFT, UNSUBSCRIBED
from dispatch.untrusted import shown

if TYPE_CHECKING:
    from dispatch.settings import Settings, StateLocation

SUPPRESSED, ALREADY, COUNTED, IGNORED, REPEAT, KEPT = (
    "suppressed", "already suppressed", "counted", "ignored", "read before", "kept",
)  # fmt: skip
OUTCOMES = (SUPPRESSED, ALREADY, COUNTED, IGNORED, REPEAT, KEPT)
_REASON = {
    Kind.HARD: s.BOUNCED,
    Kind.SOFT: s.BOUNCED,
    Kind.COMPLAINT: s.COMPLAINED,
    Kind.UNSUBSCRIBE: s.UNSUBSCRIBED,
}


@dataclass(frozen=True)
class Decision:
    """What was done about one message."""

    kind: str  # a Kind's value, or "unreadable"
    outcome: str  # one of OUTCOMES
    detail: str = ""  # a status code, why it was ignored, where it was kept
    reader: str = ""  # the reader's address (never a token)
    campaign: str = ""
    reason: str = ""  # the suppression's reason

    def line(self, source: str) -> str:
        """The decision as one line (every outside value made inert)."""
        what = (
            f"{self.kind} ({self.detail})"
            if self.detail and self.outcome not in (IGNORED, KEPT)
            else self.kind
        )
        on = f" (campaign {self.campaign})" if self.campaign else ""
        if self.outcome in (SUPPRESSED, ALREADY):
            verb = "suppressed" if self.outcome == SUPPRESSED else "was already suppressed"
            text = f"{what}: {self.reader} {verb}, reason {self.reason}{on}"
        elif self.outcome == COUNTED:
            text = f"{what}: {self.reader} counted{on}"
        elif self.outcome == REPEAT:
            text = f"{self.kind}: read before, nothing changes ({self.detail})"
        elif self.outcome == KEPT:
            text = f"{self.kind}, kept for a person: {self.detail}"
        else:
            text = f"{self.kind}: ignored: {self.detail}" if self.detail else f"{self.kind}: ignored"
        return shown(f"{source}: {text}", limit=600)

    def as_json(self, source: str) -> dict[str, str]:
        """The decision for ``--json``."""
        return {
            "source": shown(source), "kind": self.kind, "outcome": self.outcome, "detail": shown(self.detail),
            "reader": shown(self.reader), "campaign": shown(self.campaign), "reason": self.reason,
        }  # fmt: skip


@dataclass
class Tally:
    """What a run did: messages read, by kind and by outcome."""

    read: int = 0
    kinds: Counter[str] = field(default_factory=Counter)
    outcomes: Counter[str] = field(default_factory=Counter)
    suppressed: Counter[str] = field(default_factory=Counter)  # by reason
    problems: list[str] = field(default_factory=list)  # a message that could not be read or moved

    def add(self, decision: Decision) -> None:
        """Count one decision."""
        self.read += 1
        self.kinds[decision.kind] += 1
        self.outcomes[decision.outcome] += 1
        if decision.outcome == SUPPRESSED:
            self.suppressed[decision.reason] += 1


class Processor:
    """Reads reports against one state (a folder, or PostgreSQL) and acts on them: the
    suppressions it adds go to the store every send reads, durably (a report taken from the
    mail system must not be lost once it is acknowledged)."""

    def __init__(self, settings: Settings, location: StateLocation) -> None:
        self.settings = settings
        with ExitStack() as opened:  # (on a failure, what was opened is closed again)
            self.journal = opened.enter_context(closing(backend.journal_reads(location)))
            self.readers = Readers(settings, self.journal)
            self.store = opened.enter_context(backend.open_suppressions(location, durable=True))
            self.feedback = opened.enter_context(backend.open_feedback(location, durable=True))
            opened.pop_all()

    def close(self) -> None:
        """Close the files (or the database)."""
        for thing in (self.journal, self.store, self.feedback):
            thing.close()

    def handle(self, data: bytes) -> Decision:
        """Read one message and act on it (once: a report read before changes nothing)."""
        try:
            report = read_report(data)
        except Unreadable as err:
            return Decision("unreadable", KEPT, str(err))
        with self.feedback.exclusive():
            earlier = self.feedback.outcome(report.report_id)
            if earlier is not None:
                return Decision(str(report.kind), REPEAT, earlier)
            decision = self._decide(report)
            if decision.outcome != KEPT:  # (kept: to be read again, against the right state)
                self.feedback.remember(report.report_id, f"{decision.outcome}: {decision.kind}")
        return decision

    def _decide(self, report: Report) -> Decision:
        kind = str(report.kind)
        if report.kind not in _REASON:
            return Decision(kind, IGNORED, report.detail)
        try:
            reader = self.readers.of(report)
        except WrongState as err:
            return Decision(kind, KEPT, str(err))
        except NotOurs as err:
            return Decision(kind, IGNORED, str(err))
        if report.kind is Kind.SOFT:
            return self._soft(report, reader)
        event = {Kind.HARD: BOUNCED, Kind.COMPLAINT: COMPLAINED, Kind.UNSUBSCRIBE: UNSUBSCRIBED}[report.kind]
        return self._suppress(report, reader, event)

    def _suppress(self, report: Report, reader: Reader, event: str, detail: str = "") -> Decision:
        reason = _REASON[report.kind]
        scope = (reader.list_id or self.settings.list_id) if reason == s.UNSUBSCRIBED else None
        added = self.store.add(
            reader.email, reason, scope=scope, source=f"inbound:{reader.campaign or 'mail'}"
        )
        if reader.campaign:
            self.feedback.record(reader.campaign, reader.key, event, detail or report.detail)
        return Decision(
            str(report.kind), SUPPRESSED if added else ALREADY, detail or report.detail, reader.email,
            reader.campaign, reason,
        )  # fmt: skip

    def _soft(self, report: Report, reader: Reader) -> Decision:
        """Count a soft bounce once per issue; suppress after the limit in a row."""
        if reader.campaign:
            self.feedback.record(reader.campaign, reader.key, SOFT, report.detail)
        streak = self._streak(reader)
        limit = self.settings.soft_bounce_limit
        detail = (
            f"{report.detail}; {streak} of {limit} in a row"
            if report.detail
            else f"{streak} of {limit} in a row"
        )
        if streak >= limit:
            return self._suppress(report, reader, BOUNCED, detail)
        return Decision(str(report.kind), COUNTED, detail, reader.email, reader.campaign)

    def _streak(self, reader: Reader) -> int:
        """How many issues in a row, up to this report's, bounced softly for this reader."""
        if not reader.campaign:
            return 1
        softly = self.feedback.soft_campaigns(reader.key)
        reached = [c for c, _ in self.journal.campaigns() if self.journal.reader(c, reader.key) is not None]
        if reader.campaign in reached:
            reached = reached[: reached.index(reader.campaign) + 1]
        streak = 0
        for campaign in reversed(reached):
            if campaign not in softly:
                break
            streak += 1
        return max(streak, 1)
