"""Which reader of which campaign a report is about, proven, or :class:`NotOurs`.

The clues, strongest first:

1. a short token (:mod:`dispatch.unsubscribe.address_tokens`) in the address the report came to
   (``bounces+TOKEN@…`` in Delivered-To, X-Original-To, To), or in the original's envelope
   sender (a complaint's ``Original-Mail-From``, a quoted ``Return-Path``): it is sealed and
   names a campaign and a reader the journal knows;
2. the quoted original's ``List-Unsubscribe``: the link's token (sealed: list and address) or
   the mailto's (campaign and reader);
3. the quoted original's Message-ID, which the journal recorded for one reader of one campaign;
4. only without ``DISPATCH_BOUNCE_ADDRESS`` (reports then carry no token of ours): an address
   the report names (``Final-Recipient``…) that a campaign of this state folder reached.

A token that is not one of ours (forged, made with another secret or for another list) makes the
whole report suspect: nothing else in it is believed. A report about someone no campaign
reached changes nothing.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from dispatch.addresses import address_key
from dispatch.errors import ConfigError, InputError
from dispatch.inbound.classify import LINK_TOKEN
from dispatch.inbound.reports import Kind, Original, Report
from dispatch.state.identity import Use, identify, secret_digest
from dispatch.unsubscribe.address_tokens import (
    BOUNCE,
    UNSUBSCRIBE,
    Opened,
    campaign_ref,
    found_in,
    read,
    reader_ref,
)
from dispatch.unsubscribe.tokens import BadToken, read_token

if TYPE_CHECKING:
    from dispatch.settings import Settings
    from dispatch.state.feedback import JournalReads


class NotOurs(Exception):
    """The report names no reader this state folder sent to, or cannot be believed."""


class WrongState(NotOurs):
    """A token of ours names a campaign this state does not hold: the message is most likely
    read against the wrong state, and is kept to be read again against the right one."""


@dataclass(frozen=True)
class Reader:
    """The reader a report is about, and how that was proven."""

    key: str
    email: str
    campaign: str  # "" when nothing names one
    list_id: str  # the list a token named ("" when none did)
    via: str  # "envelope token", "unsubscribe token", "Message-ID", "the address it names"


def list_ids(settings: Settings, journal: JournalReads) -> tuple[str, ...]:
    """This newsletter's list id and its earlier ones (the same rule a send uses:
    :func:`dispatch.send.campaign.list_identity`)."""
    where = str(settings.settings_file.resolve()) if settings.settings_file is not None else ""
    secret = secret_digest(settings.unsubscribe_secret) if settings.unsubscribe_secret else ""
    accepted = [
        secret_digest(s) for s in (settings.unsubscribe_secret, *settings.unsubscribe_previous_secrets) if s
    ]
    return identify(Use(settings.list_id.lower(), where, secret), accepted, journal.list_uses()).list_ids


def _local(address: str) -> str:
    return address.rsplit("@", 1)[0]


class Readers:
    """Turns a report's clues into a reader (one per ``dispatch inbound`` run: what it learns
    about campaigns and their readers is kept for the next report)."""

    def __init__(self, settings: Settings, journal: JournalReads) -> None:
        self.journal = journal
        secrets = (settings.unsubscribe_secret, *settings.unsubscribe_previous_secrets)
        self.secrets = tuple(dict.fromkeys(s for s in secrets if s))
        if not self.secrets:
            raise ConfigError(
                "DISPATCH_UNSUBSCRIBE_SECRET is not set: the tokens in bounces, complaints and unsubscribes "
                "are sealed with it; use the settings file the sends use (--env-file)"
            )
        self.list_ids = list_ids(settings, journal)
        self.trust_named = not settings.bounce_address
        self._campaigns: list[str] | None = None
        self._reached: dict[tuple[str, str], dict[bytes, tuple[str, str]]] = {}

    def of(self, report: Report) -> Reader:
        """The reader ``report`` is about; NotOurs when nothing in it proves one."""
        if report.kind is Kind.UNSUBSCRIBE:
            places = [_local(a) for a in report.delivered_to] + [report.subject]
            return self._from_tokens(places, UNSUBSCRIBE, "unsubscribe token")
        places = [_local(a) for a in (*report.delivered_to, *report.envelope_senders)]
        if any(kind == BOUNCE for place in places for kind, _ in found_in(place)):
            return self._from_tokens(places, BOUNCE, "envelope token")
        found = self._from_original(report.original)
        if found is not None:
            return found
        if self.trust_named:
            for address in report.named:
                reached = self._latest(address)
                if reached is not None:
                    return Reader(reached[1], reached[2], reached[0], "", "the address it names")
        raise NotOurs("nothing in it names a reader this state (folder or database) sent to")

    def _from_tokens(self, places: list[str], kind: str, via: str) -> Reader:
        """The reader the tokens of ``kind`` in ``places`` name: every one must be ours and
        name the same reader (an unsubscribe request may hold an unsubscribe link's token)."""
        candidates = list(
            dict.fromkeys(token for place in places for k, token in found_in(place) if k == kind)
        )
        links = (
            [m.group(0) for place in places for m in LINK_TOKEN.finditer(place)]
            if kind == UNSUBSCRIBE
            else []
        )
        found: list[Reader] = []
        for token in candidates:
            try:
                opened = read(token, kind, self.secrets, self.list_ids)
            except BadToken:
                raise NotOurs(
                    "its token is not one of ours (forged, or made with another secret or for another list)"
                ) from None
            found.append(self._opened(opened, via))
        if not found:
            found = [r for r in (self._link_token(t) for t in links[:10]) if r is not None]
        if not found:
            raise NotOurs("it holds no token of ours" if candidates or links else "it holds no token")
        if len({(r.key, r.campaign) for r in found}) > 1:
            raise NotOurs("its tokens name different readers")
        return found[0]

    def _opened(self, opened: Opened, via: str) -> Reader:
        campaigns = [
            c for c in self._all_campaigns() if campaign_ref(opened.secret, c) == opened.campaign_ref
        ]
        for campaign in campaigns:
            who = self._readers(opened.secret, campaign).get(opened.reader_ref)
            if who is not None:
                return Reader(who[0], who[1], campaign, opened.list_id, via)
        if not campaigns:
            raise WrongState(
                "its token is ours but names a campaign this state (folder or database) does not have: "
                "is DISPATCH_STATE_DIR or DISPATCH_STATE_URL the sending host's state?"
            )
        raise NotOurs("its token names nobody the campaign reached")

    def _link_token(self, token: str, message_id: str = "") -> Reader | None:
        """An unsubscribe link's token (list and address, sealed) of one of our lists."""
        try:
            list_id, key = read_token(self.secrets[0], token, self.secrets[1:])
        except BadToken:
            return None
        if list_id not in self.list_ids:
            return None
        found = self.journal.by_message_id(message_id)
        if found is not None and found[1] == key:
            campaign = found[0]
        else:
            latest = self._latest(key)
            campaign = latest[0] if latest is not None else ""
        row = self.journal.reader(campaign, key) if campaign else None
        return Reader(key, row.email if row is not None else key, campaign, list_id, "unsubscribe link token")

    def _from_original(self, original: Original) -> Reader | None:
        """The reader the quoted original was sent to (its List-Unsubscribe, its Message-ID)."""
        tokens = [t for kind, t in found_in(original.list_unsubscribe) if kind == UNSUBSCRIBE]
        links = [m.group(0) for m in LINK_TOKEN.finditer(original.list_unsubscribe)]
        for token in tokens:
            try:
                return self._opened(
                    read(token, UNSUBSCRIBE, self.secrets, self.list_ids), "the original's mailto token"
                )
            except BadToken:
                continue
        for token in links[:10]:
            reader = self._link_token(token, original.message_id)
            if reader is not None:
                return reader
        if tokens or links:
            raise NotOurs("the original it quotes carries tokens that are not ours (another newsletter's?)")
        found = self.journal.by_message_id(original.message_id)
        if found is None:
            return None
        row = self.journal.reader(*found)
        return Reader(found[1], row.email if row else found[1], found[0], "", "Message-ID") if row else None

    def _all_campaigns(self) -> list[str]:
        if self._campaigns is None:
            self._campaigns = [c for c, _ in self.journal.campaigns()]
        return self._campaigns

    def _readers(self, secret: str, campaign: str) -> dict[bytes, tuple[str, str]]:
        """reader ref → (key, email) of everyone the campaign reached, worked out once per run."""
        found = self._reached.get((secret, campaign))
        if found is None:
            found = {reader_ref(secret, key): (key, email) for key, email in self.journal.reached(campaign)}
            self._reached[(secret, campaign)] = found
        return found

    def _latest(self, address: str) -> tuple[str, str, str] | None:
        """``(campaign, key, email)``: the newest campaign that reached this address."""
        try:
            key = address_key(address)
        except InputError:
            return None
        for campaign in reversed(self._all_campaigns()):
            row = self.journal.reader(campaign, key)
            if row is not None:
                return campaign, key, row.email
        return None
