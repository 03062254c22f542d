"""The one seam between the state and where it is kept: a state folder of SQLite files (the
embedded default, needing nothing) or a PostgreSQL database (``DISPATCH_STATE_URL``, for
several hosts and several senders). Every command opens the journal, the suppression store,
the OAuth2 login and what came back by mail (``dispatch inbound``'s feedback store and its reads
of the journal) through these functions, so both backends behave the same above here.

The PostgreSQL modules (and psycopg) are imported only when a URL is set.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from dispatch.settings import StateLocation
from dispatch.state import journal as j
from dispatch.state.feedback import FeedbackStore, JournalReads, SharedFeedbackStore
from dispatch.state.logins import LoginStore
from dispatch.state.suppression import SuppressionStore

if TYPE_CHECKING:
    from dispatch.state.pg import PgDatabase


def _database(location: StateLocation, *, readonly: bool = False, durable: bool = False) -> PgDatabase:
    from dispatch.state.pg import PgDatabase  # noqa: PLC0415 - psycopg only when asked for

    return PgDatabase(location.url, readonly=readonly, durable=durable)


def _existing(location: StateLocation, since: int = 1) -> PgDatabase | None:
    """The database read-only, or None when its schema is older than ``since`` (0: none yet)."""
    db = _database(location, readonly=True)
    try:
        with db.guard():
            if db.version() >= since:
                return db
    except BaseException:
        db.close()
        raise
    db.close()
    return None


def open_journal(location: StateLocation, *, durable: bool = False) -> j.Journal:
    """The journal, for a command that writes (created, or migrated, when needed)."""
    if not location.url:
        return j.Journal(location.path, durable=durable)
    from dispatch.state.shared import SharedJournal  # noqa: PLC0415

    return SharedJournal(location.path, _database(location, durable=durable), lease=location.lease)


def existing_journal(location: StateLocation) -> j.Journal | None:
    """The journal read-only, or None when nothing was ever recorded there."""
    if not location.url:
        return j.Journal.open_existing(location.path)
    db = _existing(location)
    if db is None:
        return None
    from dispatch.state.shared import SharedJournal  # noqa: PLC0415

    return SharedJournal(location.path, db, lease=location.lease)


def open_suppressions(location: StateLocation, *, durable: bool = False) -> SuppressionStore:
    """The suppression store, for a command that writes (``durable``: each write is on disk
    when it returns, as a state folder's always is)."""
    if not location.url:
        return SuppressionStore(location.path)
    return SuppressionStore(location.path, db=_database(location, durable=durable))


def existing_suppressions(location: StateLocation) -> SuppressionStore | None:
    """The suppression store read-only, or None when there is none yet."""
    if not location.url:
        return SuppressionStore.open_existing(location.path)
    db = _existing(location)
    return None if db is None else SuppressionStore(location.path, db=db)


def open_feedback(location: StateLocation, *, durable: bool = False) -> FeedbackStore:
    """What came back by mail (``dispatch inbound``), for writing."""
    if not location.url:
        return FeedbackStore(location.path)
    return SharedFeedbackStore(location.path, _database(location, durable=durable))


def existing_feedback(location: StateLocation) -> FeedbackStore | None:
    """What came back by mail, read-only, or None when ``dispatch inbound`` never wrote any."""
    if not location.url:
        return FeedbackStore.open_existing(location.path)
    from dispatch.state.pgschema import FEEDBACK_SINCE  # noqa: PLC0415

    db = _existing(location, FEEDBACK_SINCE)  # (a schema from before the feedback tables has none)
    return None if db is None else SharedFeedbackStore(location.path, db)


def journal_reads(location: StateLocation) -> JournalReads:
    """The journal, read-only, as ``dispatch inbound`` and the counts of ``status`` read it."""
    if not location.url:
        return JournalReads.in_folder(location.path)
    return JournalReads(_existing(location))


def login_store(location: StateLocation, **about: str) -> Any:
    """Where the OAuth2 login of one mailbox at one server with one client is kept: ``oauth/``
    in the state folder, or the ``logins`` table (``about``: mailbox, token_url, client_id, scope)."""
    if not location.url:
        return LoginStore(location.path, **about)
    from dispatch.state.pglogins import PgLoginStore  # noqa: PLC0415

    return PgLoginStore(_database(location), **about)
