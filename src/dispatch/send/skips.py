"""Who a run leaves out, and why: the one rule a dry run, a send and a test send all follow.

Never twice to a recipient the journal records as sent; never again after a permanent
failure (unless asked: a failure the sender caused, such as a message too big, can be retried
once fixed); an unknown outcome only when asked; and never to an address the suppression
store holds for this list (an unsubscribe) or for every list (a bounce, a complaint, a manual
entry), nor to one that hard-bounced in an earlier campaign of this state folder.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from enum import StrEnum

from dispatch.state import journal as j
from dispatch.state.suppression import Entry, SuppressionStore


class Skip(StrEnum):
    """Why a run does not send to a recipient."""

    SENT = "already sent"
    FAILED = "failed permanently (--retry-failed sends again)"
    UNKNOWN = "outcome unknown (--resend-unknown resends)"
    SUPPRESSED = "suppressed"


@dataclass(frozen=True)
class SkipRules:
    """The rule for one run: its journal and suppression store (either may be absent)."""

    journal: j.Journal | None = None
    store: SuppressionStore | None = None
    campaign: str = ""
    list_id: str | tuple[str, ...] = ""  # the list, or the list and its earlier ids
    resend_unknown: bool = False
    retry_failed: bool = False

    def check(self, key: str, *, store: bool = True) -> tuple[str | None, Skip | None, str]:
        """(prior journal state, why the run must not send to ``key`` or None, the reason a
        suppression gives: unsubscribed, bounced, complained or manual). ``store=False``
        leaves the suppression store to the check made just before the message is sent."""
        state, bounced = (None, False)
        if self.journal is not None and self._asked:
            state, bounced = self.journal.skip_state(self.campaign, key)
        return self.judge(key, state, bounced, store=store)

    def judge(
        self, key: str, state: str | None, bounced: bool = False, *, store: bool = True
    ) -> tuple[str | None, Skip | None, str]:
        """:meth:`check` for a recipient whose journal state is known already (several senders:
        the state read when the recipient was claimed)."""
        if state == j.SENT:
            return state, Skip.SENT, ""
        if state == j.FAILED and not self.retry_failed:
            return state, Skip.FAILED, ""
        if state in (j.UNKNOWN, j.IN_FLIGHT) and not self.resend_unknown:
            # in flight when a run died: unknown, as the next send will record it
            return j.UNKNOWN, Skip.UNKNOWN, ""
        if bounced:
            return state, Skip.SUPPRESSED, "bounced"
        entry = self.suppressed(key) if store else None
        if entry is not None:
            return state, Skip.SUPPRESSED, entry.reason
        return state, None, ""

    @functools.cached_property
    def _asked(self) -> bool:
        """Whether the journal can say anything about a recipient: not for a campaign it has never
        recorded anyone of, in a folder without a hard bounce (a first run asks nothing)."""
        return self.journal is not None and self.journal.knows_anyone(self.campaign)

    @property
    def skips_nobody(self) -> bool:
        """Nothing in the journal or the store can skip anyone (a first run, no suppressions)."""
        return not self._asked and (self.store is None or not self.store.count())

    def suppressed(self, key: str) -> Entry | None:
        """The store's entry for ``key`` on this list, checked again just before each message
        (an unsubscribe that arrives during a long run is honoured at once)."""
        return self.store.lookup(key, self.list_id) if self.store is not None else None

    def record_bounce(self, email: str) -> None:
        """A hard bounce (x.1.1-x.1.3) suppresses the address on every list, for good."""
        if self.store is not None:
            self.store.add(email, "bounced", scope="*", source=f"bounce:{self.campaign}")


class Suppressed(Exception):
    """The recipient was suppressed while a retry waited (see :meth:`SkipRules.suppressed`): no
    more tries."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason
