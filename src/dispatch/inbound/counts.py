"""What became of each campaign's messages, where people look (``dispatch status``): delivered
(accepted by the relay), bounced (refused by the relay, or reported later by mail), complained,
and unsubscribed (by mail, and with the one-click link).

A bounce, complaint or mailto unsubscribe read by ``dispatch inbound`` names its campaign. The
one-click link names only the reader and the list, so an unsubscribe recorded by ``dispatch
serve`` counts for the newest campaign that had reached the reader when they unsubscribed.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping
from pathlib import Path

from dispatch.state.feedback import BOUNCED, COMPLAINED, SOFT, UNSUBSCRIBED, FeedbackStore, JournalReads
from dispatch.state.suppression import SERVE, SuppressionStore

FIELDS = ("delivered", "bounced", "complained", "unsubscribed")


def feedback_counts(state_dir: Path, campaigns: Mapping[str, Mapping[str, int]]) -> dict[str, dict[str, int]]:
    """Per campaign (``campaigns``: its journal counts by state): ``delivered``, ``bounced``,
    ``complained``, ``unsubscribed``, and how those split (``bounced_at_relay``,
    ``bounced_later``, ``soft_bounced``, ``unsubscribed_by_mail``, ``unsubscribed_one_click``)."""
    store = FeedbackStore.open_existing(state_dir)
    try:
        events = store.counts() if store is not None else {}
    finally:
        if store is not None:
            store.close()
    clicks = _one_click(state_dir) if campaigns else Counter[str]()
    found = {}
    for campaign, states in campaigns.items():
        said = events.get(campaign, {})
        at_relay, later = int(states.get("failed", 0)), said.get(BOUNCED, 0)
        by_mail, one_click = said.get(UNSUBSCRIBED, 0), clicks[campaign]
        found[campaign] = {
            "delivered": int(states.get("sent", 0)), "bounced": at_relay + later,
            "complained": said.get(COMPLAINED, 0), "unsubscribed": by_mail + one_click,
            "bounced_at_relay": at_relay, "bounced_later": later, "soft_bounced": said.get(SOFT, 0),
            "unsubscribed_by_mail": by_mail, "unsubscribed_one_click": one_click,
        }  # fmt: skip
    return found


def _one_click(state_dir: Path) -> Counter[str]:
    """Unsubscribes ``dispatch serve`` recorded, each counted for the newest campaign that had
    reached the reader by then."""
    store = SuppressionStore.open_existing(state_dir)
    if store is None:
        return Counter()
    journal = JournalReads(state_dir)
    try:
        started = journal.campaigns()
        clicks = ((e.key, e.when) for e in store.entries() if e.reason == UNSUBSCRIBED and e.source == SERVE)
        return Counter(_attribute(journal, started, clicks))
    finally:
        journal.close()
        store.close()


def _attribute(
    journal: JournalReads, started: list[tuple[str, float]], clicks: Iterable[tuple[str, float]]
) -> Iterable[str]:
    """The campaign each click counts for (none for a reader no campaign had reached)."""
    for key, when in clicks:
        for campaign, created in reversed(started):
            if created >= when + 1:  # (an unsubscribe is recorded to the second)
                continue
            row = journal.reader(campaign, key)
            if row is not None and (row.sent_at is None or row.sent_at < when + 1):
                yield campaign
                break
