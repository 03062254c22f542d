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
# An older version recorded a lost reply's time alone; the message went out at most the 10
# minutes dispatch awaits that reply (dispatch.send.transport) before, plus its data's time.
LOST_REPLY_SPAN = 900.0
# The replies of rows found in flight (a dead run's, a stopped sender's): recover() and the
# takeover of a dead sender's claims keep their in-flight mark's time as ``updated``.
ENDED = "the run ended while this message was in flight"
STOPPED = "the sender holding it stopped while this message was in flight"


@dataclass(frozen=True)
class Unknown:
    """An unknown recipient, and the span in which its message may have reached the relay
    (journal times): from ``earliest``, the in-flight mark of the first try not settled since
    (every try goes out with the same Message-ID), to ``latest``, its last try's mark (the run
    died) or the moment that try's reply was lost."""

    key: str
    email: str
    message_id: str  # as in its Message-ID header, <…@…>; empty if an older version sent it
    earliest: float
    latest: float


def listed(db: Store, campaign: str) -> list[Unknown]:
    """The campaign's unknown recipients, oldest first."""
    rows = db.all(
        "SELECT key, email, COALESCE(message_id, ''), sent_at, updated, COALESCE(reply, '') "
        "FROM recipients WHERE campaign = ? AND state = ? ORDER BY updated",
        (campaign, UNKNOWN),
    )
    found = []
    for key, email, message_id, sent_at, updated, reply in rows:
        # sent_at: the first unsettled try's in-flight mark (kept by every later try, by a lost
        # reply and by recover()); updated: the last try's mark (recover() leaves it) or the
        # moment its reply was lost. An older version's lost reply left only the loss's time
        # (sent_at == updated, not found in flight): the message went out before it.
        if sent_at is None or (sent_at == updated and reply not in (ENDED, STOPPED)):
            found.append(Unknown(key, email, message_id, updated - LOST_REPLY_SPAN, updated))
        else:
            found.append(Unknown(key, email, message_id, min(sent_at, updated), max(sent_at, updated)))
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
