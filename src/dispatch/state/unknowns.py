"""Unknown recipients, settled from the relay's own log (``dispatch reconcile``): the two journal
queries behind :meth:`dispatch.state.journal.Journal.unknowns` and
:meth:`~dispatch.state.journal.Journal.settle_unknowns`, for the SQLite journal.

A recipient is unknown when its message was in flight as a run died, or when the reply to its
final dot was lost: the relay may or may not have it. Its row keeps the Message-ID it went out
with (recorded with the in-flight mark, before the final dot), which the relay's log names.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from dispatch.state.group import Store

UNKNOWN, SENT, DEFERRED = "unknown", "sent", "deferred"  # (as in dispatch.state.journal)
# A reply lost after the final dot is recorded when it is lost; the message went out at most the
# 10 minutes dispatch awaits that reply (dispatch.send.transport) before, plus its data's time.
LOST_REPLY_SPAN = 900.0


@dataclass(frozen=True)
class Unknown:
    """An unknown recipient, and the span in which its message may have reached the relay
    (journal times): from ``earliest`` (its in-flight mark; for a reply lost later,
    :data:`LOST_REPLY_SPAN` before the loss) to ``latest`` (the mark, or the loss)."""

    key: str
    email: str
    message_id: str  # as in its Message-ID header, <…@…>; empty if an older version sent it
    earliest: float
    latest: float


def listed(db: Store, campaign: str) -> list[Unknown]:
    """The campaign's unknown recipients, oldest first."""
    rows = db.all(
        "SELECT key, email, COALESCE(message_id, ''), sent_at, updated FROM recipients "
        "WHERE campaign = ? AND state = ? ORDER BY updated",
        (campaign, UNKNOWN),
    )
    found = []
    for key, email, message_id, sent_at, updated in rows:
        # recover() moves the in-flight mark's time to sent_at (unless an earlier unknown's is
        # there: earlier still) and stamps updated later; a lost reply has sent_at == updated.
        lost_reply = sent_at is None or sent_at == updated
        mark = updated if sent_at is None else sent_at
        found.append(Unknown(key, email, message_id, mark - LOST_REPLY_SPAN * lost_reply, mark))
    return found


def settle(db: Store, campaign: str, sent: dict[str, str], again: dict[str, str]) -> tuple[int, int]:
    """Settle unknown recipients (``{key: why}``; the why becomes their reply): ``sent`` as sent,
    ``again`` as deferred (the next run sends them; they stop counting against the daily limit).
    Only rows still unknown change, in one transaction; how many of each changed."""
    now = time.time()
    counts = []
    with db.transaction() as cur:
        for state, sent_at, keys in ((SENT, "sent_at", sent), (DEFERRED, "NULL", again)):
            changed = 0
            for key, why in keys.items():
                changed += cur.execute(
                    "UPDATE recipients SET state = ?, code = NULL, enhanced = '', reply = ?, "  # noqa: S608
                    f"sent_at = {sent_at}, updated = ? WHERE campaign = ? AND key = ? AND state = ?",
                    (state, why, now, campaign, key, UNKNOWN),
                ).rowcount  # (only a column's name or NULL is formatted into the query)
            counts.append(changed)
    return counts[0], counts[1]
