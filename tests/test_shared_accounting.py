"""Several senders (PostgreSQL state): a sender's summary says where each of its list's rows
went, once, whatever another sender left behind. Each case sets up, step by step and without
timing, what a sender killed mid-run leaves (claims in the queue, messages in flight, rows
sent), lets its lease run out, and runs one more sender in this process against a real SMTP
server: the summary's counts add up to the list's rows, and each row is in the right one."""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import pytest

from dispatch.compose.issue import plan_issue
from dispatch.send.delivery import SendOptions, run_send
from dispatch.send.summary import RunSummary
from dispatch.settings import Settings, StateLocation
from dispatch.state import backend
from dispatch.state import journal as j
from dispatch.state.shared import SharedJournal
from dispatch.state.suppression import SuppressionStore
from tests.conftest import EXAMPLE_ARTICLE, PG_LEASE
from tests.inbox_helpers import NEWS, SETTINGS, write_subscribers
from tests.smtp_servers import Handler, Server

pytestmark = pytest.mark.slow  # a real PostgreSQL
CAMPAIGN = "shared-accounting"


def readers(count: int) -> list[str]:
    return [f"reader{i:04d}@example.{'org' if i % 2 else 'com'}" for i in range(count)]


class DeadSender:
    """A sender that read the list, took some of it, and was killed: its lease has run out."""

    def __init__(self, url: str, emails: list[str]) -> None:
        where = StateLocation(Path("/nonexistent"), "test", True, url=url, lease=PG_LEASE)
        journal = backend.open_journal(where)
        assert isinstance(journal, SharedJournal)
        self.journal = journal
        self._held = ExitStack()  # never left: a killed sender gives nothing back
        self._held.enter_context(journal.lock(CAMPAIGN))
        journal.begin(CAMPAIGN, "An issue", "fingerprint", "/issues/a.txt")
        journal.offer(CAMPAIGN, [(e, e, n + 2, "", {}) for n, e in enumerate(emails)])

    def sent(self, count: int) -> None:
        for claimed in self.journal.claim(CAMPAIGN, count):
            key, email = claimed.key, claimed.email
            self.journal.in_flight(CAMPAIGN, key, email, f"<{claimed.line}@example.org>")
            self.journal.outcome(CAMPAIGN, key, email, j.SENT, code=250, enhanced="", reply="ok")

    def in_flight(self, count: int) -> list[str]:
        taken = self.journal.claim(CAMPAIGN, count)
        for claimed in taken:
            self.journal.in_flight(CAMPAIGN, claimed.key, claimed.email, f"<{claimed.line}@example.org>")
        return [c.email for c in taken]

    def die(self) -> None:
        """Killed: the heartbeat stops, and the lease runs out (at once, instead of after it)."""
        self.journal.flush()
        self.journal._stop_beat.set()
        expire = "UPDATE senders SET lease_until = clock_timestamp() WHERE id = ?"
        self.journal._db.execute(expire, (self.journal.sender,))

    def close(self) -> None:
        self._held.close()  # (the test is over: what it still holds goes back)
        self.journal.close()


Dead = Callable[[list[str]], DeadSender]
Send = Callable[..., tuple[RunSummary, Server]]


@pytest.fixture
def dead(pg_url: str) -> Iterator[Dead]:
    made: list[DeadSender] = []

    def make(emails: list[str]) -> DeadSender:
        made.append(DeadSender(pg_url, emails))
        return made[-1]

    yield make
    for sender in made:
        sender.close()


@pytest.fixture
def send(tmp_path: Path, pg_url: str, smtp_server: Callable[..., Server]) -> Send:
    """One more sender of the campaign, to the end, in this process."""

    def run(emails: list[str], handler: Handler | None = None, stop: threading.Event | None = None
            ) -> tuple[RunSummary, Server]:  # fmt: skip
        server = smtp_server(handler=handler) if handler is not None else smtp_server()
        state = {"DISPATCH_STATE_URL": pg_url, "DISPATCH_STATE_LEASE": str(PG_LEASE),
                 "DISPATCH_STATE_DIR": str(tmp_path / "state")}  # fmt: skip
        values = {**SETTINGS, **server.env(), **state}
        settings = Settings.from_mapping(values)
        article = tmp_path / "issue.txt"
        article.write_bytes(EXAMPLE_ARTICLE.read_bytes())
        subscribers = write_subscribers(tmp_path / "list.csv", emails)
        issue = plan_issue(article, subscribers, settings, campaign=CAMPAIGN)
        journal, store = backend.open_journal(settings.state), backend.open_suppressions(settings.state)
        try:
            options = SendOptions(sleep=lambda _s: None, suppressions=store, stop=stop or threading.Event())
            return run_send(issue, journal, options), server
        finally:
            journal.close()
            store.close()

    return run


def received(server: Server) -> Counter[str]:
    return Counter(r for msg in list(server.received) for r in msg.rcpt_tos)


def counted(summary: RunSummary) -> dict[str, int]:
    """The summary's accounting, without its zeros; it adds up to the list's rows."""
    rows = {name: n for name, n in summary.accounting() if n}
    assert sum(rows.values()) == summary.rows, rows
    return rows


@pytest.mark.parametrize(
    ("rows", "sent", "out"),
    [(60, 20, 6), (1_300, 700, 3)],
    ids=["in-flight-claims-stay", "claims-ahead-of-the-reading"],
)
def test_what_a_dead_sender_left_in_flight_is_unknown_earlier_once_and_the_rest_is_sent(
    dead: Dead, send: Send, rows: int, sent: int, out: int
) -> None:
    """The dead sender's claims stay in the queue after the new run made its in-flight rows
    unknown: claiming them again must not count them a second time. With a list longer than
    one offer whose first rows are all sent, the new sender's first claims are rows its reading
    of the list has not come to yet: they too are counted once."""
    emails = readers(rows)
    killed = dead(emails)
    killed.sent(sent)
    assert killed.in_flight(out) == emails[sent : sent + out]
    killed.die()
    summary, server = send(emails)
    assert counted(summary) == {"sent now": rows - sent - out, "already sent": sent, "unknown earlier": out}
    assert summary.recovered_unknown == out
    assert received(server) == Counter(emails[sent + out :]), "the rest, once each"


def test_a_reader_suppressed_after_another_sender_offered_them_is_counted_once(
    tmp_path: Path, dead: Dead, send: Send, pg_url: str
) -> None:
    emails = readers(40)
    killed = dead(emails)
    killed.sent(10)
    killed.die()
    store = backend.open_suppressions(StateLocation(tmp_path / "state", "test", True, url=pg_url))
    assert isinstance(store, SuppressionStore)
    for email in emails[15:18]:
        store.add(email, "unsubscribed", scope=NEWS, source="test")
    store.close()
    summary, server = send(emails)
    assert counted(summary) == {"sent now": 27, "already sent": 10, "suppressed": 3}
    assert received(server) == Counter(emails[10:15] + emails[18:])


def test_a_sender_that_starts_before_the_dead_one_s_lease_ran_out_takes_its_share_after(
    dead: Dead, send: Send
) -> None:
    """Its reading of the list finds the dead sender's rows in flight (a live sender's, for all
    it knows): it offers them, waits for the lease, and finds them unknown when it claims them."""
    emails = readers(50)
    killed = dead(emails)
    killed.sent(5)
    out = killed.in_flight(4)
    killed.journal.flush()
    killed.journal._stop_beat.set()  # killed: its lease runs out in PG_LEASE seconds
    started = time.monotonic()
    summary, server = send(emails)
    assert time.monotonic() - started >= PG_LEASE / 2, "the run waited for the dead sender's claims"
    assert counted(summary) == {"sent now": 41, "already sent": 5, "unknown earlier": 4}
    assert summary.recovered_unknown == 4
    assert received(server) == Counter(emails[9:]), "the rest, once each"
    assert out == emails[5:9]


class StopAfter(Handler):
    """Sets ``stop`` (as SIGINT would) when the ``count``-th message has arrived."""

    def __init__(self, count: int) -> None:
        super().__init__()
        self.count, self.stop = count, threading.Event()

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        reply = await super().handle_DATA(server, session, envelope)
        if len(self.received) >= self.count:
            self.stop.set()
        return reply


@pytest.mark.parametrize("after", [1, 40])
def test_an_interrupted_sender_counts_what_it_never_reached_as_not_tried(
    dead: Dead, send: Send, after: int
) -> None:
    """Stopped while it reads the list or takes claims: the rows it never came to, and those it
    offered but did not take, are not tried (or another sender's); what it sent is sent now."""
    emails = readers(3_000)
    killed = dead(emails[:1_000])  # (its claims: rows the new sender takes before reading them)
    killed.sent(10)
    killed.die()
    handler = StopAfter(after)
    summary, server = send(emails, handler, handler.stop)
    rows = counted(summary)
    assert summary.interrupted
    assert rows["sent now"] == len(server.received) >= after
    assert rows["already sent"] == 10
    assert rows["not tried this run"] == len(emails) - 10 - rows["sent now"], "no other sender is alive"


def test_a_message_that_cannot_be_built_is_one_skipped_row(
    send: Send, monkeypatch: pytest.MonkeyPatch
) -> None:
    """As with one sender (tests/test_trust_counts.py): a build that fails for one reader (a bug,
    made here on purpose) leaves that row out as a skipped row, counted once."""
    from dispatch.compose.issue import Issue

    emails, build = readers(30), Issue.message

    def failing(self: Issue, sub: Any, **kw: Any) -> tuple[bytes, str]:
        if sub.email == emails[7]:
            raise ValueError("a header could not be folded")
        return build(self, sub, **kw)

    monkeypatch.setattr(Issue, "message", failing)
    summary, server = send(emails)
    assert counted(summary) == {"sent now": 29, "skipped rows": 1}
    assert received(server) == Counter(emails[:7] + emails[8:])
