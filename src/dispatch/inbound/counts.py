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
from contextlib import closing
from typing import TYPE_CHECKING

from dispatch.state import backend
from dispatch.state.feedback import BOUNCED, COMPLAINED, SOFT, UNSUBSCRIBED, JournalReads
from dispatch.state.suppression import SERVE

if TYPE_CHECKING:
    from dispatch.settings import StateLocation

FIELDS = ("delivered", "bounced", "complained", "unsubscribed")


def feedback_counts(
    location: StateLocation, campaigns: Mapping[str, Mapping[str, int]]
) -> dict[str, dict[str, int]]:
    """Per campaign (``campaigns``: its journal counts by state), read from wherever the state
    is: ``delivered``, ``bounced``, ``complained``, ``unsubscribed``, and how those split
    (``bounced_at_relay``, ``bounced_later``, ``soft_bounced``, ``unsubscribed_by_mail``,
    ``unsubscribed_one_click``)."""
    store = backend.existing_feedback(location)
    try:
        events = store.counts() if store is not None else {}
    finally:
        if store is not None:
            store.close()
    clicks = _one_click(location) if campaigns else Counter[str]()
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


def _one_click(location: StateLocation) -> Counter[str]:
    """Unsubscribes ``dispatch serve`` recorded, each counted for the newest campaign that had
    reached the reader by then."""
    store = backend.existing_suppressions(location)
    if store is None:
        return Counter()
    with store, closing(backend.journal_reads(location)) as journal:
        started = journal.campaigns()
        clicks = ((e.key, e.when) for e in store.entries() if e.reason == UNSUBSCRIBED and e.source == SERVE)
        return Counter(_attribute(journal, started, clicks))


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
