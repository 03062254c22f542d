"""The journal's tables: campaigns, one row per recipient, reservations of the daily budget and
the list ids sends used; the schema's version and how older files are brought forward."""

from __future__ import annotations

from dataclasses import dataclass

from dispatch.state.db import Schema

_CAMPAIGNS = """CREATE TABLE campaigns (
    id TEXT PRIMARY KEY,
    subject TEXT NOT NULL,
    fingerprint TEXT NOT NULL,
    article TEXT NOT NULL,
    recipients INTEGER NOT NULL DEFAULT 0,
    created REAL NOT NULL,
    updated REAL NOT NULL,
    body TEXT NOT NULL DEFAULT ''
)"""
_RECIPIENTS = """CREATE TABLE recipients (
    campaign TEXT NOT NULL,
    key TEXT NOT NULL,
    email TEXT NOT NULL,
    state TEXT NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    code INTEGER,
    enhanced TEXT,
    reply TEXT,
    hard_bounce INTEGER NOT NULL DEFAULT 0,
    message_id TEXT,
    created REAL NOT NULL,
    updated REAL NOT NULL,
    sent_at REAL,
    PRIMARY KEY (campaign, key)
)"""
# AUTOINCREMENT: an id is never handed out twice, so a late release by one run can never free
# another run's slot of the shared daily budget.
_RESERVATIONS = """CREATE TABLE reservations (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    pid INTEGER NOT NULL,
    created REAL NOT NULL
)"""
# Every list id a send of this state folder used, with its settings file and a one-way digest
# of its unsubscribe secret (see dispatch.state.identity): an unsubscribe recorded under an earlier list
# id of the same newsletter still counts after the list id changes.
_LISTS = """CREATE TABLE lists (
    list_id TEXT NOT NULL,
    settings_file TEXT NOT NULL,
    secret TEXT NOT NULL,
    first REAL NOT NULL,
    last REAL NOT NULL,
    PRIMARY KEY (list_id, settings_file, secret)
)"""
# Hard bounces are looked up by address across campaigns; a partial index covers only them, so
# the write of every other recipient updates one index fewer.
_BOUNCES = "CREATE INDEX recipients_bounced ON recipients (key) WHERE hard_bounce = 1"
_INDEXES = "CREATE INDEX recipients_sent_at ON recipients (sent_at);" + _BOUNCES

SCHEMA = Schema(
    what="journal",
    version=4,
    create=";".join((_CAMPAIGNS, _RECIPIENTS, _RESERVATIONS, _INDEXES, _LISTS)),
    migrations={
        1: "DROP TABLE reservations;" + _RESERVATIONS,
        2: "DROP INDEX recipients_key;" + _BOUNCES,
        3: "ALTER TABLE campaigns ADD COLUMN body TEXT NOT NULL DEFAULT '';" + _LISTS,
    },
)


@dataclass(frozen=True)
class Record:
    """One recipient's row."""

    email: str
    state: str
    attempts: int
    code: int | None
    enhanced: str
    reply: str
    hard_bounce: bool
    message_id: str
    updated: float


@dataclass(frozen=True)
class CampaignInfo:
    """A campaign and its counts by state."""

    id: str
    subject: str
    recipients: int
    updated: float
    counts: dict[str, int]


_EMPTY_CAMPAIGNS = (
    "SELECT id FROM campaigns "
    "WHERE NOT EXISTS (SELECT 1 FROM recipients WHERE recipients.campaign = campaigns.id)"
)
_DELETE_IF_EMPTY = (
    "DELETE FROM campaigns WHERE id = ? "
    "AND NOT EXISTS (SELECT 1 FROM recipients WHERE recipients.campaign = campaigns.id)"
)
