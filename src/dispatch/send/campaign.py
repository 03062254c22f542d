"""Campaigns: plan an issue once (article, list, templates, one trial message), and decide
which recipients a run still has to reach.

A dry run (``dispatch.proof.dryrun``) and a real send (``dispatch.send.delivery``) share every step
but the last: one writes each message to a folder, the other hands it to SMTP.
"""

from __future__ import annotations

import hashlib
import itertools
import re
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field, replace
from functools import cached_property
from pathlib import Path
from typing import Any

from dispatch.addresses import validate_address
from dispatch.checks.rules import human_size
from dispatch.compose import assets, inlining
from dispatch.compose.assets import Embedder
from dispatch.compose.context import column_key
from dispatch.compose.dkim import load_signatures
from dispatch.compose.fields import FieldError
from dispatch.compose.message import EncodedBody, MessageFactory, header_text
from dispatch.compose.render import RenderedIssue, render_issue
from dispatch.content.article import MARKDOWN_SUFFIXES, Article, load_article
from dispatch.errors import ConfigError, ExitCode, InputError, TemplateError
from dispatch.lists.subscribers import ListStats, Subscriber, SubscriberList
from dispatch.send.skips import Skip, SkipRules
from dispatch.settings import Settings, StateLocation
from dispatch.state import journal as j
from dispatch.state.identity import ListIdentity, Use, identify, secret_digest

# Without DISPATCH_UNSUBSCRIBE_SECRET a dry run or a preview still shows a link of the right
# shape, sealed with this well-known key; a real send refuses to start (``require_sendable``).
SAMPLE_SECRET = "dispatch-sample-secret: previews only, never used to send"  # noqa: S105 - public on purpose
# The longest address RFC 5321 allows (64 + 1 + 189 = 254 octets): a trial message built for it
# proves that no recipient's headers can outgrow the line limit.
LONGEST_ADDRESS = "a" * 64 + "@" + ".".join(["b" * 63, "c" * 63, "d" * 57, "org"])


def campaign_id(article: Article) -> str:
    """Front matter ``campaign``, else a slug of the title plus a short hash of the title and
    the front-matter ``date`` (so a weekly "Update" with a new date is a new campaign, while an
    edit of the body stays the same campaign)."""
    if article.campaign:
        check_campaign_id(article.campaign, f"{article.source}: front matter 'campaign'")
        return article.campaign
    slug = re.sub(r"[^a-z0-9]+", "-", article.title.lower()).strip("-")[:48].strip("-")
    dated = article.date if article.source.suffix.lower() in MARKDOWN_SUFFIXES else ""
    digest = hashlib.sha256(f"{article.title}\0{dated}".encode()).hexdigest()[:6]
    return f"{slug or 'issue'}-{digest}"


MAX_CAMPAIGN_ID = 100


def check_campaign_id(value: str, where: str) -> None:
    """A campaign ID is one printable line of at most 100 characters (it names a lock file)."""
    if len(value) > MAX_CAMPAIGN_ID or any(not c.isprintable() for c in value):
        raise InputError(
            f"{where}: a campaign ID is one line of at most {MAX_CAMPAIGN_ID} printable characters "
            f"(this one has {len(value)}); use something like spring-2026"
        )


@dataclass(frozen=True)
class Issue:
    """An issue planned once: the article rendered and inlined, the list checked."""

    article: Article
    subscribers: SubscriberList
    stats: ListStats
    rendered: RenderedIssue
    factory: MessageFactory
    campaign: str
    settings: Settings
    test_send: bool = False
    trial_size: int = 0  # bytes of the message built for the longest possible address
    notes: tuple[str, ...] = ()  # found while planning, for the person running it (a short DKIM key…)
    previews: dict[str, str] = field(default_factory=dict)  # cid: -> data: URI of embedded pictures

    def check_size(self, limit: int, whose: str) -> None:
        """Refuse, before the first message, messages larger than ``limit`` (0: none)."""
        if limit and self.trial_size > limit:
            raise InputError(
                f"each message is about {human_size(self.trial_size)}, but {whose} takes at most "
                f"{human_size(limit)} ({limit:,} bytes); shorten the article or its attachments "
                "(nothing was sent)"
            )

    @property
    def subject(self) -> str:
        """The Subject header's text."""
        return self.rendered.subject

    def require_unsubscribe_link(self) -> None:
        """Bulk mail must show a working unsubscribe link in both parts (BULK-08, CAN-SPAM), and
        its token must be sealed with the sender's own secret."""
        missing = self.rendered.parts_without_unsubscribe
        if missing:
            raise TemplateError(
                f"refusing to send: the {' and '.join(missing)} template shows no unsubscribe link; "
                "add {{ unsubscribe_url }} to it (a dry run still works)"
            )
        if not self.settings.unsubscribe_secret:
            raise ConfigError(
                "refusing to send: DISPATCH_UNSUBSCRIBE_SECRET is not set, so unsubscribe links cannot be "
                "sealed; set a long random value in .env (openssl rand -base64 36)"
            )

    @cached_property
    def _column_keys(self) -> dict[str, str]:
        """CSV column → template key, worked out once per issue, not per recipient."""
        return {c: column_key(c) for c in self.subscribers.columns}

    def values(self, sub: Subscriber) -> dict[str, str]:
        """Every per-recipient value the templates can use, by field name."""
        keys = self._column_keys
        values = {keys.get(k) or column_key(k): v for k, v in sub.fields.items()}
        values |= {
            "email": sub.email,
            "name": sub.name,
            "unsubscribe_url": self.factory.unsubscribe_target(sub.email),
        }
        return values

    def bodies(self, sub: Subscriber) -> tuple[str, str]:
        """This recipient's (HTML, text) bodies, decoded (checks)."""
        values = self.values(sub)
        return self.factory.html.text(values), self.factory.text.text(values)

    def preview_html(self, sub: Subscriber) -> str:
        """This recipient's HTML as a file a person opens: embedded pictures shown inline."""
        return assets.previewable(self.bodies(sub)[0], self.previews)

    def message(self, sub: Subscriber, *, message_id: str = "") -> tuple[bytes, str]:
        """(wire bytes, Message-ID) of this recipient's copy."""
        salt = str(time.time_ns()) if self.test_send else ""
        mid = message_id or self.factory.message_id(sub.key, salt=salt)
        data = self.factory.build(email=sub.email, name=sub.name, values=self.values(sub), message_id=mid)
        return data, mid


def trial_subscriber(columns: list[str], like: Subscriber | None = None) -> Subscriber:
    """A made-up recipient with the longest address RFC 5321 allows and every column filled
    (with ``like``'s values, when the templates work on them: made-up ones might not fit)."""
    if like is not None:
        return Subscriber(LONGEST_ADDRESS, like.name, 0, like.fields)
    return Subscriber(LONGEST_ADDRESS, "Trial Reader", 0, dict.fromkeys(columns, "x"))


def _check_every_row(issue: Issue) -> Subscriber | None:
    """When the templates work on subscriber values (a filter, a slice…), replay that work for
    every row before anything is sent: a step that fails for one subscriber stops the run here,
    naming the template line and the row. Returns the first subscriber."""
    first = None
    for item in issue.subscribers:
        if isinstance(item, Subscriber):
            first = first or item
            try:
                issue.rendered.check(issue.values(item))
            except FieldError as err:
                where = f"{issue.subscribers.path} line {item.line}"
                raise TemplateError(f"{err} (it fails for {where})") from err
    return first


def plan_issue(
    article_path: Path,
    subscribers_path: Path,
    settings: Settings,
    *,
    subject: str = "",
    template_dir: Path | None = None,
    encoding: str = "utf-8-sig",
    campaign: str = "",
    test_send: bool = False,
    attach: Sequence[Path] = (),
    web_version: bool = False,
    loaded: Article | None = None,
) -> Issue:
    """Everything that can be checked before the first message: article, list, templates,
    pictures and attachments, the DKIM key, and one whole message for the longest address.
    ``loaded`` is the article when the caller has already read ``article_path``."""
    sender = settings.require_sending_identity()
    article = loaded or load_article(article_path)
    subscribers = SubscriberList(subscribers_path, encoding)
    title = header_text(article.subject or subject or article.title)
    if not title:
        raise InputError("the subject is empty after removing control characters; pass --subject")
    if test_send:
        title = f"[TEST] {title}"
    name = campaign or campaign_id(article)
    embedder = Embedder.for_article(article_path, sender.domain)
    article = replace(article, body_html=embedder.embed(article.body_html))
    logo = assets.logo(settings.logo, settings.organization, Path.cwd(), embedder)
    rendered = render_issue(
        article, subject=title, columns=subscribers.columns, organization=settings.organization,
        postal_address=settings.postal_address, template_dir=template_dir, test_send=test_send,
        language=settings.language, logo=logo, web_url=web_address(settings.web_url, name),
        web_version=web_version, cache=settings.state.path / inlining.FOLDER,
    )  # fmt: skip
    signer = load_signatures(settings)
    factory = MessageFactory(
        sender=sender,
        subject=title,
        campaign=name,
        text=EncodedBody(rendered.text_parts, subtype="plain", escape=False),
        html=EncodedBody(rendered.html_parts, subtype="html", escape=True),
        list_id=settings.list_id,
        list_name=settings.organization,
        reply_to=settings.reply_to,
        unsubscribe_url=settings.unsubscribe_url,
        unsubscribe_mailto=settings.unsubscribe_mailto,
        unsubscribe_secret=settings.unsubscribe_secret or SAMPLE_SECRET,
        fingerprint=article.fingerprint,
        related=tuple(embedder.related),
        attachments=tuple(assets.attachments(list(attach), settings.max_message_size)),
        sign=signer.signed if signer is not None else None,
    )
    notes = (*(signer.warnings if signer is not None else ()), *embedder.warnings)
    issue = Issue(
        article,
        subscribers,
        ListStats(),
        rendered,
        factory,
        name,
        settings,
        test_send,
        0,
        notes,
        embedder.previews,
    )
    first = _check_every_row(issue) if rendered.computed else None
    try:  # one whole message before the list is read: a setting that breaks every message stops here
        trial_size = len(issue.message(trial_subscriber(subscribers.columns, first))[0])
    except (ValueError, UnicodeError, ConfigError) as err:
        raise ConfigError(f"a trial message could not be built: {err}") from err
    issue = replace(issue, trial_size=trial_size)
    issue.check_size(settings.max_message_size, "DISPATCH_MAX_MESSAGE_SIZE")
    return replace(issue, stats=subscribers.scan())


def web_address(template: str, campaign: str) -> str:
    """``DISPATCH_WEB_URL`` for this issue: ``{campaign}`` filled in, or, without it, the
    campaign's page in that folder (``…/news/`` → ``…/news/<campaign>.html``)."""
    if not template:
        return ""
    if "{campaign}" in template:
        return template.replace("{campaign}", campaign)
    return f"{template.rstrip('/')}/{campaign}.html"


@dataclass(frozen=True)
class Failure:
    """A recipient the server refused, with its reply."""

    email: str
    code: int | None
    message: str
    state: str = j.FAILED


MAX_LISTED_SUPPRESSED = 10_000  # addresses a summary names (all are counted)


@dataclass
class RunSummary:
    """What a run did; the CLI prints it, ``--json`` serialises it.

    Every row of the list is accounted for once (:meth:`accounting`): sent now (or, in a dry
    run, would be sent), failed, deferred or unknown now, already sent, suppressed, left as an
    earlier run's failure or unknown outcome, not tried this run, or a skipped row.
    """

    campaign: str
    subject: str
    recipients: int
    skipped: ListStats  # the rows left out, with their lines (the first 10,000 of them)
    html_size: int
    dry_run: bool = False
    test_send: bool = False
    state: StateLocation | None = None  # where the journal and the suppression store are
    rows: int = 0  # the list's rows (a test send: its addresses)
    sent: int = 0  # campaign total
    sent_now: int = 0
    failed: int = 0  # campaign totals, as the journal has them
    deferred: int = 0
    unknown: int = 0
    failed_now: int = 0  # this run's outcomes
    deferred_now: int = 0
    unknown_now: int = 0
    pending: int = 0  # a dry run: would be sent; a send: not tried this run (limit, stop, budget)
    beyond_limit: int = 0  # a dry run: recipients after --limit
    already_sent: int = 0
    left_failed: int = 0  # failed in an earlier run, not sent again (--retry-failed)
    left_unknown: int = 0  # unknown from an earlier run, not sent again (--resend-unknown)
    suppressed: int = 0  # unsubscribed from this list, or bounced, complained, removed by hand
    suppressed_by: dict[str, int] = field(default_factory=dict)  # reason -> how many
    suppressed_who: list[tuple[str, str]] = field(default_factory=list)  # (address, reason), the first 10,000
    recovered_unknown: int = 0
    given_up: int = 0  # deferred for longer than DISPATCH_GIVE_UP_DAYS: now failed
    content_changed: bool = False
    daily_limit_reached: bool = False
    failures: list[Failure] = field(default_factory=list)
    aborted: str = ""
    interrupted: bool = False
    preview: Path | None = None
    written: int = 0
    warnings: list[str] = field(default_factory=list)
    blocking: list[str] = field(default_factory=list)  # a real send would refuse (a dry run shows them)
    refused: list[str] = field(default_factory=list)  # example values: a real send refuses, a dry run shows

    @property
    def exit_code(self) -> ExitCode:
        """0 all done; 130 interrupted; 3 aborted; 1 failed, deferred, unknown or over the
        daily limit in this run (recipients left by ``--limit`` are a choice, not a failure;
        an earlier run's failures are listed, but this run did what it could)."""
        if self.blocking:
            return ExitCode.BAD_INPUT
        if self.interrupted:
            return ExitCode.INTERRUPTED
        if self.aborted:
            return ExitCode.ABORTED
        unknown = self.unknown_now + self.recovered_unknown  # found in flight: this run made them unknown
        if self.failed_now or self.deferred_now or unknown or self.daily_limit_reached:
            return ExitCode.INCOMPLETE
        return ExitCode.OK

    def count_skip(self, skip: Skip, detail: str = "", email: str = "") -> None:
        """Count a recipient this run leaves out on purpose."""
        self.already_sent += skip is Skip.SENT
        self.left_failed += skip is Skip.FAILED
        self.left_unknown += skip is Skip.UNKNOWN
        if skip is Skip.SUPPRESSED:
            self.suppressed += 1
            self.suppressed_by[detail] = self.suppressed_by.get(detail, 0) + 1
            if email and len(self.suppressed_who) < MAX_LISTED_SUPPRESSED:
                self.suppressed_who.append((email, detail))

    def accounting(self) -> list[tuple[str, int]]:
        """Where every row went, in order; the counts add up to :attr:`rows`."""
        if self.dry_run:
            first = [("would be sent", self.pending), ("after --limit", self.beyond_limit)]
        else:
            first = [("sent now", self.sent_now), ("failed now", self.failed_now),
                     ("deferred now", self.deferred_now), ("unknown now", self.unknown_now),
                     ("not tried this run", self.pending)]  # fmt: skip
        return [
            *first,
            ("already sent", self.already_sent),
            ("suppressed", self.suppressed),
            ("failed earlier", self.left_failed),
            ("unknown earlier", self.left_unknown),
            ("skipped rows", self.skipped.skipped_total),
        ]

    def state_json(self) -> dict[str, Any] | None:
        """Where the state is, for ``--json``."""
        if self.state is None:
            return None
        return {"backend": "sqlite", "path": str(self.state.path), "found_by": self.state.found_by}

    def as_json(self) -> dict[str, Any]:
        """A machine-readable summary (stable keys)."""
        return {
            "campaign": self.campaign,
            "subject": self.subject,
            "dry_run": self.dry_run,
            "test_send": self.test_send,
            "state": self.state_json(),
            "rows": self.rows,
            "accounting": dict(self.accounting()),
            "recipients": self.recipients,
            "sent": self.sent,
            "sent_now": self.sent_now,
            "already_sent": self.already_sent,
            "suppressed": self.suppressed,
            "suppressed_by_reason": dict(sorted(self.suppressed_by.items())),
            "suppressed_recipients": [{"email": e, "reason": r} for e, r in self.suppressed_who],
            "failed": self.failed,
            "deferred": self.deferred,
            "unknown": self.unknown,
            "failed_now": self.failed_now,
            "deferred_now": self.deferred_now,
            "unknown_now": self.unknown_now,
            "recovered_unknown": self.recovered_unknown,
            "failed_earlier": self.left_failed,
            "unknown_earlier": self.left_unknown,
            "skipped": self.skipped.skipped_total,
            "pending": self.pending,
            "failures": [
                {"email": f.email, "code": f.code, "message": f.message, "state": f.state}
                for f in self.failures
            ],
            "skipped_rows": [{"line": s.line, "reason": s.reason} for s in self.skipped.skipped],
            "skipped_rows_complete": self.skipped.skipped_total == len(self.skipped.skipped),
            "aborted": self.aborted or None,
            "interrupted": self.interrupted,
            "content_changed": self.content_changed,
            "daily_limit_reached": self.daily_limit_reached,
            "html_size": self.html_size,
            "preview": str(self.preview) if self.preview else None,
            "warnings": self.warnings,
            "blocking": self.blocking,
            "refused_by_send": self.refused,
            "exit_code": int(self.exit_code),
        }


def summary_for(issue: Issue, **kw: Any) -> RunSummary:
    return RunSummary(
        campaign=issue.campaign,
        subject=issue.subject,
        recipients=issue.stats.valid,
        skipped=ListStats(skipped=list(issue.stats.skipped), skipped_total=issue.stats.skipped_total),
        html_size=issue.rendered.html_size,
        test_send=issue.test_send,
        state=issue.settings.state,
        rows=issue.stats.valid + issue.stats.skipped_total,
        warnings=[
            *issue.rendered.warnings,
            *issue.subscribers.notes,
            *(
                ["the list has no valid subscriber: there is nobody to send to"]
                if not issue.stats.valid
                else []
            ),
        ],
        **kw,
    )


def recipients(issue: Issue, limit: int = 0) -> Iterator[Subscriber]:
    """The valid, unique subscribers in list order (the first ``limit`` of them, if set)."""
    found = (item for item in issue.subscribers if isinstance(item, Subscriber))
    return itertools.islice(found, limit or None)


def named_recipients(issue: Issue, addresses: list[str]) -> list[Subscriber]:
    """``--to`` addresses as recipients, with their list row's fields when they have one."""
    wanted: dict[str, Subscriber] = {}
    for raw in addresses:
        try:
            email = validate_address(raw)
        except ValueError as err:
            raise InputError(f"--to {raw!r}: {err}") from err
        wanted[email.lower()] = Subscriber(email, "", 0, dict.fromkeys(issue.subscribers.columns, ""))
    for sub in recipients(issue):
        if sub.key in wanted:
            wanted[sub.key] = sub
    return list(wanted.values())


def count_to_send(issue: Issue, rules: SkipRules) -> int:
    """How many recipients a send would reach now (one pass over the list)."""
    if rules.skips_nobody:
        return issue.stats.valid
    return sum(rules.check(sub.key)[1] is None for sub in recipients(issue))


def secret_digests(settings: Settings) -> tuple[str, ...]:
    """Digests of the unsubscribe secret and of the earlier ones still accepted (current first)."""
    secrets = (settings.unsubscribe_secret, *settings.unsubscribe_previous_secrets)
    return tuple(secret_digest(s) for s in dict.fromkeys(secrets) if s)


def list_use(settings: Settings) -> Use:
    """The list id, settings file and secret a send with these settings uses."""
    secret = secret_digest(settings.unsubscribe_secret) if settings.unsubscribe_secret else ""
    where = str(settings.settings_file.resolve()) if settings.settings_file is not None else ""
    return Use(settings.list_id.lower(), where, secret)


def list_identity(issue: Issue, journal: j.Journal | None) -> ListIdentity:
    """This issue's list id, the earlier list ids of the same newsletter, and what changed."""
    known = journal.list_uses() if journal is not None else []
    return identify(list_use(issue.settings), secret_digests(issue.settings), known)


def same_text_campaigns(issue: Issue, journal: j.Journal | None) -> list[j.CampaignInfo]:
    """Other campaigns that sent this article's text (under another title, date or subject)
    and reached someone: a new campaign for it would send the issue again to everyone."""
    if journal is None or journal.campaign(issue.campaign) is not None:
        return []
    return [c for c in journal.campaigns_with_body(issue.article.body_fingerprint) if c.id != issue.campaign]


def same_text_refusal(earlier: list[j.CampaignInfo]) -> str:
    """Why a send (without a person to ask) refuses to start a new campaign for a text already sent."""
    first = earlier[0]
    return (
        f"this article's text was already sent as campaign {first.id!r} ({first.counts.get(j.SENT, 0)} "
        f"sent, subject «{first.subject}»), but its title or date now makes a new campaign, which would "
        f"send it again to everyone. Same issue: run with --campaign {first.id}. A new issue on purpose: "
        "give it its own campaign with --campaign NEW-ID (or 'campaign:' in the front matter)"
    )


def campaign_warnings(issue: Issue, journal: j.Journal | None) -> list[str]:
    """A new campaign from a file that already fed another one is usually an edited title; an
    old campaign whose article changed will not resend to those already reached."""
    if journal is None:
        return []
    known = journal.fingerprint(issue.campaign)
    if known is not None:
        if known == issue.article.fingerprint:
            return []
        return [
            f"the article changed since campaign {issue.campaign!r} started: recipients already "
            "sent are not sent again; if this is a new issue, give it its own campaign "
            "(--campaign ID, or 'campaign:' in the front matter)"
        ]
    return [
        f"this starts a new campaign {issue.campaign!r}, but campaign {other.id!r} "
        f"({other.counts.get(j.SENT, 0)} sent) came from the same file; if this is the same issue, "
        f"run with --campaign {other.id}"
        for other in journal.campaigns_from(str(issue.article.source.resolve()))
    ]
