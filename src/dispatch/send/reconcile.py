"""Unknown recipients settled from the relay's log (``dispatch reconcile``).

A recipient is unknown when its message was in flight as a run died, or the reply to its final
dot was lost: the relay may or may not have it, so no run sends it again by itself. The
relay's own log knows. For each unknown recipient, by the Message-ID its message went out with
(recorded before its final dot):

* the log shows the relay **kept** a message with that Message-ID (see
  :mod:`dispatch.send.maillog`): it is **sent** (however many times the log names it);
* otherwise it is **safe to send again** (the next run sends it, once) only when the log
  proves the relay never took it: the log covers the whole span in which its message could have
  reached the relay, from its first try not settled since to its last (every try goes out with
  the same Message-ID), without a hole (each file covers its first line to its last, a line
  stamped in whole seconds counting for that whole second: see :mod:`dispatch.send.maillog`; a rotated file
  left out between two given is a hole, and is named), and the relay's clock agrees with this
  machine's (no line from the future; the times at which the log shows unknown messages match
  the journal's within :data:`CLOCK_TOLERANCE`). A message the relay read and then dropped (the
  connection ended before the final dot) is judged the same way: that one attempt was dropped,
  an earlier one outside the log might not have been;
* otherwise it stays **unknown**, with the reason (the log starts too late, ends too early, has a
  hole, its clock differs, no Message-ID was recorded).

Nothing changes while a run of the campaign is going (its lock is held throughout), and a row a
dead run left in flight is first counted as unknown, as the next run would.
"""

from __future__ import annotations

import glob
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dispatch.errors import InputError, LockedError
from dispatch.send.maillog import RelayLog, covered, hole, read_relay_log
from dispatch.state import journal as j
from dispatch.state.journal import Journal
from dispatch.state.unknowns import Unknown
from dispatch.untrusted import shown

# maillog.1, mail.log.2.gz, maillog.3.bz2: a file rotated N times (the current one is 0)
_ROTATED = re.compile(r"(?P<base>.+?)\.(?P<n>\d{1,6})(?:\.(?:gz|bz2|xz|zst))?")
CLOCK_TOLERANCE = 120.0  # seconds the relay's clock may differ from this machine's
SENT, AGAIN, UNKNOWN = "sent", "send again", "unknown"


@dataclass(frozen=True)
class Decision:
    """What became of one unknown recipient, and why."""

    email: str
    key: str
    outcome: str  # SENT, AGAIN or UNKNOWN
    why: str


@dataclass
class Reconciliation:
    """What ``dispatch reconcile`` found and changed."""

    campaign: str
    recovered: int = 0  # rows a dead run left in flight, counted as unknown first
    decisions: list[Decision] = field(default_factory=list)
    log: RelayLog | None = None
    clock: str = ""  # why the log's times were not trusted, if they were not

    def outcome(self, outcome: str) -> list[Decision]:
        return [d for d in self.decisions if d.outcome == outcome]

    def as_json(self) -> dict[str, Any]:
        files = self.log.files if self.log is not None else []
        return {
            "campaign": self.campaign,
            "logs": [
                {"path": str(f.path), "lines": f.lines, "postfix_lines": f.postfix_lines,
                 "skipped_lines": f.skipped, "first": moment(f.first), "last": moment(f.last)}
                for f in files
            ],
            "unknown_before": len(self.decisions),
            "recovered_in_flight": self.recovered,
            "counts": {"sent": len(self.outcome(SENT)), "send_again": len(self.outcome(AGAIN)),
                       "unknown": len(self.outcome(UNKNOWN))},
            "sent": [{"email": d.email, "why": d.why} for d in self.outcome(SENT)],
            "send_again": [{"email": d.email, "why": d.why} for d in self.outcome(AGAIN)],
            "unknown": [{"email": d.email, "why": d.why} for d in self.outcome(UNKNOWN)],
            "clock": self.clock or None,
        }  # fmt: skip


def reconcile(journal: Journal, campaign: str, logs: list[Path], now: float | None = None) -> Reconciliation:
    """Settle the campaign's unknown recipients from the relay's log files (see the module).
    LockedError while a run of the campaign is going; InputError for an unknown campaign or a
    log that cannot be read (nothing is changed then)."""
    if journal.shared and journal.running(campaign):  # several senders: joining excludes nobody
        raise LockedError(
            f"campaign {campaign!r} is being sent (a sender's lease is live; see 'dispatch status'); "
            "reconcile once every sender has finished"
        )
    with journal.lock(campaign):
        if journal.campaign(campaign) is None:
            raise InputError(f"no campaign {campaign!r} in {journal.state_dir}; 'dispatch status' lists them")
        result = Reconciliation(campaign)
        ids = [u.message_id for u in journal.unknowns(campaign)]
        ids += [r.message_id for r in journal.records(campaign, (j.IN_FLIGHT,))]  # a dead run's
        if not ids:
            return result
        now = time.time() if now is None else now
        result.log = read_relay_log(logs, {mid.strip() for mid in ids if mid}, now)  # (nothing changed yet)
        result.recovered = journal.recover(campaign)
        unknowns = journal.unknowns(campaign)
        result.clock = clock_problem(result.log, unknowns, now)
        result.decisions = [decide(u, result.log, result.clock, logs) for u in unknowns]
        journal.settle_unknowns(
            campaign,
            sent={d.key: f"reconciled: {d.why}" for d in result.outcome(SENT)},
            again={d.key: f"reconciled: {d.why}" for d in result.outcome(AGAIN)},
        )
    return result


def decide(unknown: Unknown, log: RelayLog, clock: str, given: list[Path]) -> Decision:
    """What the log proves about one unknown recipient."""

    def said(outcome: str, why: str) -> Decision:
        return Decision(unknown.email, unknown.key, outcome, shown(why))

    if not unknown.message_id:
        return said(UNKNOWN, "no Message-ID was recorded for it (sent by an older version of dispatch)")
    sightings = log.seen(unknown.message_id)
    kept = [s for s in sightings if s.kept]
    if kept:
        more = f", and {len(kept) - 1} more time(s)" if len(kept) > 1 else ""
        return said(SENT, f"the relay {kept[0].said()}{more}")
    gap = clock or coverage_gap(log, unknown, given)
    if gap:
        return said(UNKNOWN, gap)
    if sightings:
        return said(AGAIN, f"the relay {sightings[-1].said()}, and never kept it")
    return said(AGAIN, "the relay's log covers the time it went out and never shows its Message-ID")


def coverage_gap(log: RelayLog, unknown: Unknown, given: list[Path]) -> str:
    """Why the log does not prove what the relay did in the unknown's span, or "" if it does:
    the span must lie within what the files cover without a hole (see :mod:`dispatch.send.maillog`)."""
    spans = covered(log.files)
    if not spans:
        return "the log's lines carry no time dispatch can read, so it cannot tell what span the log covers"
    if spans[0].start > unknown.earliest:
        older = _older_files(given)
        return (
            f"the log starts at {moment(spans[0].first.first)}, after its message may have gone out "
            f"({moment(unknown.earliest)}); give the older log files too" + (f" ({older})" if older else "")
        )
    if spans[-1].end <= unknown.latest:
        return (
            f"the log ends at {moment(spans[-1].last.last)}, before its message went out "
            f"({moment(unknown.latest)}); give the relay's current log"
        )
    gap = hole(spans, unknown.earliest, unknown.latest)
    if gap is None:
        return ""
    before, after = gap[0].last, gap[1].first
    names = _missing(given, before.path, after.path)
    wanted = (
        ", ".join(names[:3]) + (" …" if len(names) > 3 else "") if names else "the log files that cover it"
    )
    when = moment(unknown.earliest) if unknown.earliest == unknown.latest else (
        f"between {moment(unknown.earliest)} and {moment(unknown.latest)}"
    )  # fmt: skip
    return (
        f"the log files given leave a hole from {moment(before.last)} ({before.path.name}) to "
        f"{moment(after.first)} ({after.path.name}), when its message may have gone out ({when}); "
        f"give {wanted or 'the log files that cover it'} too"
    )


def clock_problem(log: RelayLog, unknowns: list[Unknown], now: float) -> str:
    """Why the relay's clock (or the time zone its log is read in) seems not to be this
    machine's, or ""."""
    last = log.last
    if last is not None and last > now + CLOCK_TOLERANCE:
        return (
            f"the log has lines from the future ({moment(last)}): the relay's clock or time zone differs "
            "from this machine's, so dispatch cannot tell what span the log covers"
        )
    for unknown in unknowns:
        times = (
            [s.when for s in log.seen(unknown.message_id) if s.when is not None] if unknown.message_id else []
        )
        if times and not any(_near(when, unknown) for when in times):
            return (
                f"the log shows {unknown.email}'s message at {moment(times[0])}, but it went out at "
                f"{moment(unknown.latest)} by this machine's clock: the relay's clock or time zone differs, "
                "so dispatch cannot tell what span the log covers"
            )
    return ""


def _near(when: float, unknown: Unknown) -> bool:
    return unknown.earliest - CLOCK_TOLERANCE <= when <= unknown.latest + CLOCK_TOLERANCE


def moment(when: float | None) -> str | None:
    if when is None:
        return None
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(when))


def _older_files(given: list[Path]) -> str:
    """Rotated files next to the given ones that were not given (maillog.1, mail.log.2.gz…)."""
    names = {p.name for p in given}
    found = sorted(
        {sibling.name for path in given if path.parent.is_dir()
         for sibling in path.parent.glob(f"{path.name}[.-]*") if sibling.name not in names}
    )  # fmt: skip
    return ", ".join(found[:3]) + (" …" if len(found) > 3 else "") + (" next to it" if found else "")


def _missing(given: list[Path], older: Path, newer: Path) -> list[str]:
    """Rotated files next to ``older``, not given, that lie between it and ``newer`` in the
    rotation (maillog.1 between maillog.2.gz and maillog); when the names do not tell their
    order, every rotated sibling of ``older`` not given."""
    names = {p.name for p in given}
    (base, old), (other, new) = _position(older.name), _position(newer.name)
    try:
        siblings = [
            s.name for s in older.parent.glob(f"{glob.escape(base)}*")
            if s.name not in names and _position(s.name)[0] == base and s.is_file()
        ]  # fmt: skip
    except OSError:
        return []
    if base == other and old > new:
        return sorted((s for s in siblings if new < _position(s)[1] < old), key=lambda s: _position(s)[1])
    return sorted(siblings)


def _position(name: str) -> tuple[str, int]:
    """(the log's name, how many times the file was rotated): ("maillog", 2) for maillog.2.gz."""
    found = _ROTATED.fullmatch(name)
    return (found["base"], int(found["n"])) if found else (name, 0)


__all__ = ["Decision", "Reconciliation", "reconcile"]
