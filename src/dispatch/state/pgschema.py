"""The state's tables in PostgreSQL (``DISPATCH_STATE_URL``), in a schema of their own named
``dispatch``: the journal's (campaigns, recipients, reservations, list ids), the suppression
store's, the OAuth2 logins, and what several senders on one campaign share: who is sending
(``senders``, each with a lease on the database's clock), which recipients each holds
(``claims``, each with a fencing number from ``fences``), the pace of each relay
(``pacing``), and what ``dispatch inbound`` read (``reports``, each counted once, and per
campaign and reader ``events``: bounced, bounced softly, complained, unsubscribed by mail; the
same tables as a state folder's ``feedback.sqlite3``). Versioned in ``meta``; migrations bring
an older schema forward."""

from __future__ import annotations

SCHEMA_NAME = "dispatch"
VERSION = 2
FEEDBACK_SINCE = 2  # the schema version that added the feedback tables
# One lock id for every dispatch process creating or migrating the schema ("dispatch" in ASCII).
MIGRATION_LOCK = 0x6469737061746368

_FIRST = """
CREATE TABLE meta (name TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE campaigns (
    id TEXT PRIMARY KEY, subject TEXT NOT NULL, fingerprint TEXT NOT NULL, article TEXT NOT NULL,
    recipients BIGINT NOT NULL DEFAULT 0, created DOUBLE PRECISION NOT NULL,
    updated DOUBLE PRECISION NOT NULL, body TEXT NOT NULL DEFAULT ''
);
CREATE TABLE recipients (
    campaign TEXT NOT NULL, key TEXT NOT NULL, email TEXT NOT NULL, state TEXT NOT NULL,
    attempts BIGINT NOT NULL DEFAULT 0, code INTEGER, enhanced TEXT, reply TEXT,
    hard_bounce INTEGER NOT NULL DEFAULT 0, message_id TEXT, created DOUBLE PRECISION NOT NULL,
    updated DOUBLE PRECISION NOT NULL, sent_at DOUBLE PRECISION, PRIMARY KEY (campaign, key)
);
CREATE INDEX recipients_sent_at ON recipients (sent_at);
CREATE INDEX recipients_bounced ON recipients (key) WHERE hard_bounce = 1;
CREATE TABLE reservations (
    id BIGSERIAL PRIMARY KEY, pid INTEGER NOT NULL, created DOUBLE PRECISION NOT NULL,
    holder TEXT NOT NULL DEFAULT ''
);
CREATE TABLE lists (
    list_id TEXT NOT NULL, settings_file TEXT NOT NULL, secret TEXT NOT NULL,
    first DOUBLE PRECISION NOT NULL, last DOUBLE PRECISION NOT NULL,
    PRIMARY KEY (list_id, settings_file, secret)
);
CREATE TABLE suppressions (
    key TEXT NOT NULL, scope TEXT NOT NULL, reason TEXT NOT NULL, source TEXT NOT NULL,
    created BIGINT NOT NULL, PRIMARY KEY (key, scope, reason)
);
CREATE TABLE logins (
    name TEXT PRIMARY KEY, about TEXT NOT NULL, refresh_token TEXT NOT NULL,
    updated DOUBLE PRECISION NOT NULL
);
CREATE TABLE senders (
    id TEXT PRIMARY KEY, campaign TEXT NOT NULL, host TEXT NOT NULL, pid INTEGER NOT NULL,
    started DOUBLE PRECISION NOT NULL, lease_until TIMESTAMPTZ NOT NULL
);
CREATE TABLE claims (
    campaign TEXT NOT NULL, key TEXT NOT NULL, seq BIGSERIAL, email TEXT NOT NULL,
    line BIGINT NOT NULL, fields TEXT NOT NULL, holder TEXT, fence BIGINT NOT NULL DEFAULT 0,
    PRIMARY KEY (campaign, key)
);
CREATE INDEX claims_order ON claims (campaign, seq);
CREATE SEQUENCE fences;
CREATE TABLE pacing (name TEXT PRIMARY KEY, next_slot TIMESTAMPTZ NOT NULL)
"""
# What comes back by mail (dispatch.state.feedback): the reports read, and per campaign, reader
# and kind one row (a report read twice, or by two hosts at once, counts once).
FEEDBACK = """
CREATE TABLE reports (id TEXT PRIMARY KEY, outcome TEXT NOT NULL, created BIGINT NOT NULL);
CREATE TABLE events (
    campaign TEXT NOT NULL, key TEXT NOT NULL, kind TEXT NOT NULL, detail TEXT NOT NULL,
    created BIGINT NOT NULL, PRIMARY KEY (campaign, key, kind)
)
"""
CREATE = _FIRST + ";" + FEEDBACK

# migrations[n] turns schema n into n + 1.
MIGRATIONS: dict[int, str] = {1: FEEDBACK}


def statements(script: str) -> list[str]:
    """A script split into statements."""
    return [s.strip() for s in script.split(";") if s.strip()]
