"""Before the first message: what every send, dry run and ``dispatch check`` verifies about a
planned issue — its settings, one rendered message (footer, links, size, subject) and the
DKIM key — as :class:`dispatch.checks.rules.Problem` lines. A blocking problem stops a send (and
a test send) before anything leaves; a dry run shows it."""

from __future__ import annotations

from dataclasses import replace

from dispatch.checks.rules import Problem, content_problems, footer_presence, settings_problems
from dispatch.compose.issue import Issue, recipients, trial_subscriber
from dispatch.errors import ConfigError


def preflight(issue: Issue) -> list[Problem]:
    """Every problem found, blocking ones first."""
    settings = issue.settings
    sample = next(recipients(issue, 1), None) or trial_subscriber(issue.subscribers.columns)
    html, text = issue.bodies(sample)
    link = issue.values(sample)["unsubscribe_url"]
    footer = footer_presence(html, text, unsubscribe_link=link, postal_address=settings.postal_address)
    missing = issue.rendered.parts_without_unsubscribe  # any recipient's render, not the sample's alone
    footer = replace(
        footer,
        unsubscribe_in_html=footer.unsubscribe_in_html and "HTML" not in missing,
        unsubscribe_in_text=footer.unsubscribe_in_text and "text" not in missing,
    )
    size = issue.rendered.html_size  # the figure the summary shows
    found = settings_problems(settings) + content_problems(
        html, text, issue.subject, footer=footer, size=size
    )
    found += [Problem("warning", "plan", note) for note in issue.notes]
    unique = list(dict.fromkeys(found))
    return sorted(unique, key=lambda p: ("blocking", "refused", "warning").index(p.level))


def require_no_blocking(problems: list[Problem]) -> None:
    """ConfigError (exit 2, nothing sent) naming the first problem that refuses a send."""
    blocking = [p for p in problems if p.refuses_send]
    if blocking:
        more = f" (and {len(blocking) - 1} more: run 'dispatch check')" if len(blocking) > 1 else ""
        raise ConfigError(f"refusing to send: {blocking[0].message}{more}")
