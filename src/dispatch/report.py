"""Plain-text reports of runs and of the journal (no terminal codes: cron mails them)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from dispatch.campaign import RunSummary, human_size
from dispatch.errors import InputError
from dispatch.state import journal as j
from dispatch.untrusted import shown

MAX_LISTED = 50


def _skipped(summary: RunSummary) -> list[str]:
    total = summary.skipped.skipped_total
    if not total:
        return ["  Skipped rows:  none"]
    lines = [f"  Skipped rows:  {total}"]
    lines += [f"    line {s.line}: {s.reason}" for s in summary.skipped.skipped[:MAX_LISTED]]
    if total > MAX_LISTED:
        lines.append(f"    … and {total - MAX_LISTED} more (see --json)")
    return lines


def _warnings(summary: RunSummary) -> list[str]:
    return [f"  Blocking:      {b}" for b in summary.blocking] + [
        f"  Warning:       {w}" for w in summary.warnings
    ]


def _reasons(summary: RunSummary) -> str:
    return ", ".join(f"{n} {reason}" for reason, n in sorted(summary.suppressed_by.items()))


def dry_run_report(summary: RunSummary, *, all_written: bool) -> str:
    """What a dry run found and where its preview is."""
    lines = [
        f"Dry run: nothing was sent.{'  (test send)' if summary.test_send else ''}",
        f"  Subject:       {summary.subject}",
        f"  Campaign:      {summary.campaign}",
        f"  Recipients:    {summary.pending} would be sent"
        + (f" ({summary.already_sent} already sent earlier)" if summary.already_sent else ""),
        *([f"  Suppressed:    {summary.suppressed} ({_reasons(summary)})"] if summary.suppressed else []),
        *_skipped(summary),
        f"  HTML size:     {human_size(summary.html_size)} per message, CSS inlined",
        *_warnings(summary),
    ]
    what = "every message" if all_written else f"the first {summary.written} message(s)"
    lines.append(f"  Preview:       {summary.preview}  ({what}: .eml and .html)")
    if summary.blocking:
        lines.append(
            "A real send would refuse to start: fix what is marked Blocking above, then dry-run again."
        )
    else:
        lines.append("To send for real, run the same command without --dry-run.")
    return "\n".join(lines)


def send_report(summary: RunSummary, endpoint: str, sender: str = "") -> str:
    """The outcome of a send: counts, failures, and what to do next."""
    sender = f" from {sender}" if sender else ""
    lines = [
        f"{'Test send' if summary.test_send else 'Send'} «{summary.subject}»{sender} via {endpoint}",
        f"  Campaign:      {summary.campaign}",
        f"  Sent now:      {summary.sent_now}"
        + (f"  (campaign total {summary.sent})" if summary.sent != summary.sent_now else ""),
    ]
    if summary.already_sent:
        lines.append(f"  Already sent:  {summary.already_sent} (skipped: never sent twice)")
    if summary.suppressed:
        lines.append(f"  Suppressed:    {summary.suppressed} ({_reasons(summary)})")
    for label, value in (("Failed", summary.failed), ("Deferred", summary.deferred),
                         ("Unknown", summary.unknown), ("Pending", summary.pending)):  # fmt: skip
        if value:
            lines.append(f"  {label + ':':<14} {value}")
    lines += _skipped(summary)
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


def _ago(when: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M", time.localtime(when))


def status_report(journal: j.Journal | None, campaign: str, state_dir: Path) -> tuple[Any, str]:
    """(JSON-able data, text) for ``dispatch status [CAMPAIGN]``."""
    if campaign:
        info = journal.campaign(campaign) if journal is not None else None
        if journal is None or info is None:
            raise InputError(f"no campaign {campaign!r} in {state_dir}; run 'dispatch status' to list them")
        return _campaign_report(journal, info)
    infos = journal.campaigns() if journal is not None else []
    data = {
        "state_dir": str(state_dir),
        "campaigns": [
            {"campaign": c.id, "subject": c.subject, "recipients": c.recipients, "updated": _ago(c.updated),
             **_counts(c)}
            for c in infos
        ],
    }  # fmt: skip
    lines = [f"Campaigns in {state_dir}:"] if infos else [f"No campaigns yet in {state_dir}."]
    for c in infos:
        counts = ", ".join(f"{k} {v}" for k, v in _counts(c).items() if v)
        lines.append(f"  {c.id}  ({_ago(c.updated)})  {c.subject}\n    {counts or 'nothing recorded'}")
    return data, "\n".join(lines)


def _counts(info: j.CampaignInfo) -> dict[str, int]:
    """Counts by state, with pending = the latest list's recipients not yet reached."""
    counts = dict(info.counts)
    reached = sum(v for k, v in counts.items() if k != j.PENDING)
    counts[j.PENDING] = max(0, info.recipients - reached)
    return counts


def _campaign_report(journal: j.Journal, info: j.CampaignInfo) -> tuple[Any, str]:
    records = journal.records(info.id, (j.FAILED, j.DEFERRED, j.UNKNOWN))
    problems = [
        {"email": r.email, "state": r.state, "code": r.code, "enhanced": r.enhanced,
         "message": shown(r.reply), "hard_bounce": r.hard_bounce, "attempts": r.attempts}
        for r in records
    ]  # fmt: skip
    data = {"campaign": info.id, "subject": info.subject, "recipients": info.recipients, **_counts(info),
            "problems": problems}  # fmt: skip
    lines = [
        f"{info.id}: {info.subject}",
        "  " + ", ".join(f"{k} {v}" for k, v in _counts(info).items() if v),
    ]
    for r in records:
        bounce = " (hard bounce)" if r.hard_bounce else ""
        lines.append(f"  {r.state:<8} {r.email}: {r.code or ''} {shown(r.reply)}{bounce}".rstrip())
    return data, "\n".join(lines)
