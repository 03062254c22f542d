"""An issue planned once: the article, the list, the templates rendered for a trial reader,
pictures and attachments, the DKIM key and one whole message for the longest address, so that
what can be checked is checked before the first message. Its campaign id and its recipients."""

from __future__ import annotations

import hashlib
import itertools
import re
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field, replace
from functools import cached_property
from pathlib import Path

import jinja2

from dispatch.addresses import validate_address
from dispatch.compose import assets, inlining
from dispatch.compose.assets import Embedder
from dispatch.compose.dkim import load_signatures
from dispatch.compose.headers import header_text
from dispatch.compose.message import MessageFactory
from dispatch.compose.render import RenderedIssue, render_issue
from dispatch.content.article import MARKDOWN_SUFFIXES, Article, load_article
from dispatch.errors import ConfigError, InputError, TemplateError
from dispatch.lists.columns import column_key, template_fields
from dispatch.lists.subscribers import ListStats, Subscriber, SubscriberList
from dispatch.settings import Settings

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
        return template_fields(list(self.subscribers.columns))

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
        return self.rendered.personalise(self.values(sub))

    def preview_html(self, sub: Subscriber) -> str:
        """This recipient's HTML as a file a person opens: embedded pictures shown inline."""
        return assets.previewable(self.bodies(sub)[0], self.previews)

    def message(self, sub: Subscriber, *, message_id: str = "") -> tuple[bytes, str]:
        """(wire bytes, Message-ID) of this recipient's copy."""
        salt = str(time.time_ns()) if self.test_send else ""
        mid = message_id or self.factory.message_id(sub.key, salt=salt)
        values = self.values(sub)
        html, text = self.rendered.personal.bodies(values)
        link = values["unsubscribe_url"]
        data = self.factory.build(
            email=sub.email, name=sub.name, link=link, text=text, html=html, message_id=mid
        )
        return data, mid


def trial_subscriber(columns: list[str], like: Subscriber | None = None) -> Subscriber:
    """A made-up recipient with the longest address RFC 5321 allows and every column filled
    (with ``like``'s values, when the templates work on them: made-up ones might not fit)."""
    if like is not None:
        return Subscriber(LONGEST_ADDRESS, like.name, 0, like.fields)
    return Subscriber(LONGEST_ADDRESS, "Trial Reader", 0, dict.fromkeys(columns, "x"))


def _check_every_row(issue: Issue) -> tuple[Subscriber | None, int]:
    """Render every row before anything is sent, when recipients differ by more than the values
    printed in the messages (a segment, a filter on a value…): a template that fails for one
    subscriber (``name[5]`` for a short name) stops the run here, naming the template line and
    the row. Otherwise the first row stands for all. Returns the first subscriber and the
    number of rows checked."""
    personal = issue.rendered.personal
    first, count = None, 0
    for sub in recipients(issue, 0 if personal.renders_each else 1):
        first, count = first or sub, count + 1
        values = issue.values(sub)
        try:
            personal.survey(values, values["unsubscribe_url"])
        except TemplateError as err:
            if isinstance(err.__cause__, jinja2.TemplateSyntaxError):
                raise  # (a template that cannot be read fails for every row alike)
            raise TemplateError(f"{err} (it fails for {issue.subscribers.path} line {sub.line})") from err
    return first, count


def _surveyed(issue: Issue, sample: Subscriber, rows: int) -> RenderedIssue:
    """The rendered issue with what the check found: one recipient's sizes, the parts that show
    no unsubscribe link, and a warning when premailer has many documents to inline."""
    personal = issue.rendered.personal
    values = issue.values(sample)
    if not personal.surveyed:
        personal.survey(values, values["unsubscribe_url"])
    return replace(
        issue.rendered,
        html_size=personal.html_size(values),
        text_size=len(personal.texts(values)[1].encode()),
        parts_without_unsubscribe=personal.missing_link,
        warnings=(*issue.rendered.warnings, *personal.notes(rows)),
    )


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
        bounce_address=settings.bounce_address,
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
    first, checked = _check_every_row(issue)
    issue = replace(issue, rendered=_surveyed(issue, first or trial_subscriber(subscribers.columns), checked))
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


def human_size(n: int) -> str:
    """A byte count as a person reads it: 980 bytes, 14.2 KB, 3.1 MB."""
    if n < 1024:
        return f"{n} bytes"
    return f"{n / 1024:.1f} KB" if n < 1024 * 1024 else f"{n / 1024 / 1024:.1f} MB"
