"""Plain-text reports of runs and of the journal (no terminal codes: cron mails them)."""

from __future__ import annotations

import time
from dataclasses import replace
from typing import Any

from dispatch.compose.issue import human_size
from dispatch.errors import InputError
from dispatch.inbound.counts import FIELDS, feedback_counts
from dispatch.send.summary import RunSummary
from dispatch.settings import StateLocation
from dispatch.state import journal as j
from dispatch.state.location import described
from dispatch.state.suppression import SuppressionStore
from dispatch.untrusted import shown

MAX_LISTED = 50


def _skipped(summary: RunSummary) -> list[str]:
    total = summary.skipped.skipped_total
    if not total:
        return ["  Skipped rows:  none"]
    lines = [f"  Skipped rows:  {total}"]
    lines += [f"    line {s.line}: {shown(s.reason)}" for s in summary.skipped.skipped[:MAX_LISTED]]
    if total > MAX_LISTED:
        lines.append(f"    … and {total - MAX_LISTED} more (see --json)")
    return lines


def _warnings(summary: RunSummary) -> list[str]:
    refused = "Refused:" if summary.dry_run else "Blocking:"
    return (
        [f"  Blocking:      {shown(b)}" for b in summary.blocking]
        + [f"  {refused:<14} {shown(r)}" for r in summary.refused]
        + [f"  Warning:       {shown(w)}" for w in summary.warnings]
    )


def _state(summary: RunSummary) -> list[str]:
    return [f"  State:         {described(summary.state)}"] if summary.state is not None else []


def _rows(summary: RunSummary) -> list[str]:
    """``Every row:     8 = 5 would be sent + 3 skipped rows``: the counts add up."""
    added = " + ".join(f"{n:,} {what}" for what, n in summary.accounting() if n)
    return [f"  Every row:     {summary.rows:,} = {added or '0'}"]


def _reasons(summary: RunSummary) -> str:
    return ", ".join(f"{n} {reason}" for reason, n in sorted(summary.suppressed_by.items()))


def dry_run_report(summary: RunSummary, *, all_written: bool) -> str:
    """What a dry run found and where its preview is."""
    lines = [
        f"Dry run: nothing was sent.{'  (test send)' if summary.test_send else ''}",
        f"  Subject:       {shown(summary.subject)}",
        f"  Campaign:      {summary.campaign}",
        f"  Recipients:    {summary.pending} would be sent"
        + (f" ({summary.already_sent} already sent earlier)" if summary.already_sent else ""),
        *([f"  Suppressed:    {summary.suppressed} ({_reasons(summary)})"] if summary.suppressed else []),
        *_skipped(summary),
        *_rows(summary),
        *_state(summary),
        f"  HTML size:     {human_size(summary.html_size)} per message, CSS inlined",
        *_warnings(summary),
    ]
    what = "every message" if all_written else f"the first {summary.written} message(s)"
    lines.append(f"  Preview:       {summary.preview}  ({what}: .eml and .html)")
    if summary.blocking:
        lines.append(
            "A real send would refuse to start: fix what is marked Blocking above, then dry-run again."
        )
    elif summary.refused:
        lines.append(
            "A real send would refuse to start until you replace what is marked Refused above "
            "(example values); then send without --dry-run."
        )
    else:
        lines.append("To send for real, run the same command without --dry-run.")
    return "\n".join(lines)


def send_report(summary: RunSummary, endpoint: str, sender: str = "") -> str:
    """The outcome of a send: counts, failures, and what to do next."""
    sender = f" from {sender}" if sender else ""
    lines = [
        f"{'Test send' if summary.test_send else 'Send'} «{shown(summary.subject)}»{sender} via {endpoint}",
        f"  Campaign:      {summary.campaign}",
        f"  Sent now:      {summary.sent_now}"
        + (f"  (campaign total {summary.sent})" if summary.sent != summary.sent_now else ""),
    ]
    if summary.already_sent:
        lines.append(f"  Already sent:  {summary.already_sent} (skipped: never sent twice)")
    if summary.suppressed:
        lines.append(f"  Suppressed:    {summary.suppressed} ({_reasons(summary)})")
    for label, now, total in (("Failed", summary.failed_now, summary.failed),
                              ("Deferred", summary.deferred_now, summary.deferred),
                              ("Unknown", summary.unknown_now, summary.unknown)):  # fmt: skip
        if total:
            overall = f" (campaign total {total})" if total != now else ""
            found = summary.recovered_unknown if label == "Unknown" else 0  # (the exit code counts them)
            died = f", {found} found in flight from a run that died" if found else ""
            lines.append(f"  {label + ':':<14} {now} now{died}{overall}")
    if summary.pending:
        lines.append(f"  Pending:       {summary.pending} (not tried this run)")
    lines += _relays(summary)
    lines += _skipped(summary)
    lines += _rows(summary) if not summary.test_send else []
    lines += _state(summary)
    lines += _warnings(summary)
    for failure in summary.failures[:MAX_LISTED]:
        code = f"{failure.code} " if failure.code else ""
        lines.append(f"    {failure.state}: {failure.email}: {code}{failure.message}".rstrip())
    if summary.given_up:
        lines.append(
            f"  Note: gave up on {summary.given_up} recipient(s) deferred for more than "
            "DISPATCH_GIVE_UP_DAYS; they are now failed."
        )
    if summary.recovered_unknown:
        lines.append(
            f"  Note: {summary.recovered_unknown} message(s) were in flight when an earlier run died; "
            "they are 'unknown' and were not resent (--resend-unknown resends them)."
        )
    if summary.aborted:
        lines.append(f"Aborted: {summary.aborted}")
    if summary.unknown:
        lines.append(
            f"Unknown: {summary.unknown} recipient(s) may or may not have the issue (the run stopped, "
            "or the connection dropped, while their message was being delivered). They are not sent "
            "again by themselves; --resend-unknown resends them with the same Message-ID."
        )
    if summary.daily_limit_reached:
        lines.append("Daily limit reached: the rest wait; run the same command again after the 24 hours.")
    elif summary.interrupted:
        lines.append(
            "Interrupted: messages in flight were finished and recorded. "
            "Run the same command again to resume."
        )
    elif summary.deferred or summary.pending:
        lines.append("Run the same command again to retry deferred and pending recipients.")
    return "\n".join(lines)


def _relays(summary: RunSummary) -> list[str]:
    """What each relay did, when the send had several."""
    if len(summary.relays) < 2:
        return []
    lines = []
    for relay in summary.relays:
        done = [
            f"{relay[k]} {k}" for k in ("sent", "failed", "deferred", "unknown") if relay[k] or k == "sent"
        ]
        if relay["handed_over"]:
            done.append(f"{relay['handed_over']} handed to the others")
        given_up = f"; given up: {shown(relay['given_up'])}" if relay["given_up"] else ""
        lines.append(f"  Relay:         {relay['relay']}: {', '.join(done)}{given_up}")
    return lines


def _ago(when: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M", time.localtime(when))


IN_FLIGHT_NOW = "in flight: the run sending it was stopped at once, or is still running"


def status_report(
    journal: j.Journal | None, campaign: str, location: StateLocation, store: SuppressionStore | None = None
) -> tuple[Any, str]:
    """(JSON-able data, text) for ``dispatch status [CAMPAIGN]``."""
    where = location.describe()
    state = location.as_json()
    if campaign:
        info = journal.campaign(campaign) if journal is not None else None
        if journal is None or info is None:
            raise InputError(f"no campaign {campaign!r} in {where}; run 'dispatch status' to list them")
        data, text = _campaign_report(
            journal, info, feedback_counts(location, {info.id: info.counts})[info.id]
        )
        return {"state": state, **data}, f"{text}\n  State: {where}"
    infos = journal.campaigns() if journal is not None else []
    said = feedback_counts(location, {c.id: c.counts for c in infos})
    data = {
        "state": state,
        "state_dir": str(location.path),
        "suppressed_addresses": store.count() if store is not None else 0,
        "campaigns": [
            {"campaign": c.id, "subject": c.subject, "recipients": c.recipients, "updated": _ago(c.updated),
             **_counts(c, journal), **said[c.id]}
            for c in infos
        ],
    }  # fmt: skip
    lines = [f"Campaigns in {where}:"] if infos else [f"No campaigns yet in {where}."]
    for c in infos:
        counts = ", ".join(
            f"{k} {v}" for k, v in _with_feedback(_counts(c, journal), said[c.id]).items() if v
        )
        lines.append(f"  {c.id}  ({_ago(c.updated)})  {shown(c.subject)}\n    {counts or 'nothing recorded'}")
    senders, sender_lines = _senders(journal, None)
    if journal is not None and journal.shared:
        data["senders"] = senders
    return data, "\n".join(lines + sender_lines)


def _senders(journal: j.Journal | None, campaign: str | None) -> tuple[list[dict[str, Any]], list[str]]:
    """Who is sending what (several senders, PostgreSQL state): each sender, its host and
    process, its lease and how many recipients it holds."""
    if journal is None or not journal.shared:
        return [], []
    found = journal.senders(campaign)  # type: ignore[attr-defined]  # a SharedJournal
    data = [
        {"sender": s.id, "campaign": s.campaign, "host": s.host, "pid": s.pid, "holds": s.claims,
         "lease_left": round(s.lease_left, 1), "alive": s.lease_left > 0}
        for s in found
    ]  # fmt: skip
    lines = ["Senders:" if found else "Senders:  none now"]
    for s in found:
        lease = f"lease {s.lease_left:.0f} s left" if s.lease_left > 0 else "lease ran out: claims pass on"
        lines.append(f"  {s.id} on {s.host} (pid {s.pid}): {s.campaign}, holds {s.claims}, {lease}")
    return data, lines


def _counts(info: j.CampaignInfo, journal: j.Journal | None) -> dict[str, int]:
    """Counts by state, with pending = the latest list's recipients not yet reached. Rows left
    in flight by a run that is no longer running are unknown, as the next run records them."""
    counts = dict(info.counts)
    if counts.get(j.IN_FLIGHT) and journal is not None and not journal.running(info.id):
        counts[j.UNKNOWN] = counts.get(j.UNKNOWN, 0) + counts.pop(j.IN_FLIGHT)
        counts[j.IN_FLIGHT] = 0
    reached = sum(v for k, v in counts.items() if k != j.PENDING)
    counts[j.PENDING] = max(0, info.recipients - reached)
    return counts


def _with_feedback(counts: dict[str, int], said: dict[str, int]) -> dict[str, int]:
    """The journal's counts, then what became of the messages: delivered, bounced, complained,
    unsubscribed (the split of each is in ``--json``), and the soft bounces reported by mail
    (they suppress no one until several come in a row, so they are not among the bounced)."""
    return {**counts, **{k: said[k] for k in FIELDS}, "soft-bounced": said.get("soft_bounced", 0)}


def _campaign_report(journal: j.Journal, info: j.CampaignInfo, said: dict[str, int]) -> tuple[Any, str]:
    running = journal.running(info.id)
    records = journal.records(
        info.id, (j.FAILED, j.DEFERRED, j.UNKNOWN, *(() if running else (j.IN_FLIGHT,)))
    )
    records = [
        r if r.state != j.IN_FLIGHT else replace(r, state=j.UNKNOWN, reply=r.reply or IN_FLIGHT_NOW)
        for r in records
    ]
    problems = [
        {"email": r.email, "state": r.state, "code": r.code, "enhanced": r.enhanced,
         "message": shown(r.reply), "hard_bounce": r.hard_bounce, "attempts": r.attempts}
        for r in records
    ]  # fmt: skip
    data = {"campaign": info.id, "subject": info.subject, "recipients": info.recipients,
            **_counts(info, journal), **said, "problems": problems}  # fmt: skip
    lines = [
        f"{info.id}: {shown(info.subject)}",
        "  " + ", ".join(f"{k} {v}" for k, v in _with_feedback(_counts(info, journal), said).items() if v),
    ]
    for r in records:
        bounce = " (hard bounce)" if r.hard_bounce else ""
        lines.append(f"  {r.state:<8} {r.email}: {r.code or ''} {shown(r.reply)}{bounce}".rstrip())
    senders, sender_lines = _senders(journal, info.id)
    if journal.shared:
        data["senders"] = senders
    return data, "\n".join(lines + sender_lines)
