"""A campaign across runs: who is still owed the issue, the list ids an unsubscribe may name, and
the same text sent under another campaign (which a new campaign would send again to everyone)."""

from __future__ import annotations

from dispatch.compose.issue import Issue, recipients
from dispatch.send.skips import SkipRules
from dispatch.settings import Settings
from dispatch.state import journal as j
from dispatch.state.identity import ListIdentity, Use, identify, secret_digest


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
    # the campaign that reached the most readers is the issue they have (a trial run is not)
    first, *more = sorted(earlier, key=lambda c: -(c.counts.get(j.SENT, 0) + c.counts.get(j.UNKNOWN, 0)))
    also = "".join(f"; also as {c.id!r} ({c.counts.get(j.SENT, 0)} sent)" for c in more[:3])
    return (
        f"this article's text was already sent as campaign {first.id!r} ({first.counts.get(j.SENT, 0)} "
        f"sent, subject «{first.subject}»){also}, but its title or date now makes a new campaign, which "
        f"would send it again to everyone. Same issue: run with --campaign {first.id}. A new issue on "
        "purpose: give it its own campaign with --campaign NEW-ID (or 'campaign:' in the front matter)"
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
