"""``dispatch send`` (and its dry run) and ``dispatch status``."""

from __future__ import annotations

import sys
import threading
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from dispatch.cli.common import (
    ArticleArg,
    AttachOpt,
    DebugOpt,
    EncodingOpt,
    EnvFileOpt,
    JsonOpt,
    SubjectOpt,
    SubscribersOpt,
    TemplateOpt,
    app,
    command,
    emit_json,
    inputs,
    load_settings,
    print_summary,
    refuse_negative,
    reporting,
    sender,
    state_dir,
    state_to_write,
    subscribers_path,
)
from dispatch.cli.console import work_starts
from dispatch.errors import ExitCode, InputError
from dispatch.state.group import StateError

if TYPE_CHECKING:
    from collections.abc import Callable

    from dispatch.compose.issue import Issue
    from dispatch.lists.subscribers import Subscriber
    from dispatch.send.oauth import TokenSource
    from dispatch.send.summary import RunSummary
    from dispatch.settings import Settings
    from dispatch.state.journal import CampaignInfo, Journal
    from dispatch.state.suppression import SuppressionStore


def _confirm(issue: Issue, count: int, yes: bool) -> None:
    if yes:
        return
    if not sys.stdin or not sys.stdin.isatty():
        raise InputError(
            "refusing to send without a terminal to confirm on: add --yes to send unattended (cron)"
        )
    question = (
        f"Send «{issue.subject}» from {sender(issue.settings)} to {count} subscribers "
        f"via {issue.settings.endpoint}?"
    )
    if not typer.confirm(question, default=False):
        typer.echo("Nothing sent.")
        raise typer.Exit(int(ExitCode.INCOMPLETE))


def _access_tokens(settings: Settings) -> TokenSource | None:
    """With OAuth2, the run's token source, holding a first token: no token, no send, and the
    run stops here, before the journal is touched."""
    if settings.smtp_auth != "oauth2":
        return None
    from dispatch.send.oauth import token_source

    tokens = token_source(settings, settings.state)
    tokens.current()
    return tokens


@command(app, "send", "Send an issue to every subscriber, or dry-run it.")
def send(
    article: ArticleArg,
    subscribers: SubscribersOpt = None,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Render and check every message; send nothing.")
    ] = False,
    out: Annotated[
        Path | None, typer.Option("--out", metavar="DIR", help="Dry run: write every message into DIR.")
    ] = None,
    yes: Annotated[
        bool, typer.Option("--yes", "-y", help="Send without asking (required without a terminal).")
    ] = False,
    subject: SubjectOpt = "",
    template: TemplateOpt = None,
    attach: AttachOpt = None,
    limit: Annotated[
        int, typer.Option("--limit", metavar="N", help="Send at most N messages this run (0: no limit).")
    ] = 0,
    to: Annotated[
        list[str] | None,
        typer.Option("--to", metavar="ADDRESS", help="Test send: only to ADDRESS (repeatable)."),
    ] = None,
    env_file: EnvFileOpt = None,
    campaign: Annotated[
        str, typer.Option("--campaign", metavar="ID", help="Campaign ID (default: from the article).")
    ] = "",
    resend_unknown: Annotated[
        bool, typer.Option("--resend-unknown", help="Resend recipients whose outcome is unknown.")
    ] = False,
    retry_failed: Annotated[
        bool,
        typer.Option(
            "--retry-failed", help="Send again to recipients recorded as failed (not hard bounces)."
        ),
    ] = False,
    connections: Annotated[
        int | None, typer.Option("--connections", metavar="N", help="Parallel SMTP connections.")
    ] = None,
    rate: Annotated[
        str | None, typer.Option("--rate", metavar="RATE", help="Rate limit such as 20/s or 600/min.")
    ] = None,
    daily_limit: Annotated[
        int | None, typer.Option("--daily-limit", metavar="N", help="At most N messages per 24 h (all runs).")
    ] = None,
    as_json: JsonOpt = False,
    encoding: EncodingOpt = "utf-8-sig",
    debug: DebugOpt = False,
) -> None:
    """Send ARTICLE to every subscriber (or check and preview it with --dry-run)."""
    from dispatch.cli.report import send_report
    from dispatch.compose.issue import campaign_id, check_campaign_id, named_recipients, plan_issue
    from dispatch.content.article import load_article
    from dispatch.state import backend

    with reporting(debug, as_json):
        refuse_negative(limit, "--limit")
        settings = load_settings(env_file, _throughput(connections, rate, daily_limit))
        check_campaign_id(campaign, "--campaign")
        real = not (to or dry_run)
        folder = state_to_write(settings, ask=not yes, sending=True) if real else state_dir(settings)
        tokens = None if dry_run else _access_tokens(settings)  # first: no token, nothing
        durable = settings.journal_sync == "full"
        journal = backend.open_journal(settings.state, durable=durable) if real else None
        summary: RunSummary | None = None
        try:
            with ExitStack() as held:
                loaded = load_article(article)
                if journal is not None:  # a second run of this campaign stops here, before any work
                    held.enter_context(journal.lock(campaign or campaign_id(loaded)))
                issue = plan_issue(
                    article, subscribers_path(subscribers, settings), settings, subject=subject,
                    template_dir=template, encoding=encoding, campaign=campaign, test_send=bool(to),
                    attach=attach or (), loaded=loaded,
                )  # fmt: skip
                only = named_recipients(issue, to) if to else None
                where = settings.state
                store = backend.open_suppressions(where) if real else backend.existing_suppressions(where)
                on_purpose = bool(campaign or loaded.campaign)  # a campaign the user named
                choices = _Choices(limit, resend_unknown, retry_failed, yes, as_json, on_purpose)
                work_starts()
                if dry_run:
                    read = inputs(article, issue.subscribers.path, env_file, template, *(attach or ()))
                    summary = _dry_run(issue, folder, store, only, choices, out, read, test_send=bool(to))
                    raise typer.Exit(int(summary.exit_code))
                summary = _send_now(issue, journal, store, only, choices, tokens)
        except StateError as err:  # leaving the campaign (its lock, its claims) failed after the send
            if summary is None:
                raise
            summary.stopped(str(err))
        if only is not None:
            summary.rows = len(only)
        print_summary(summary, as_json, send_report(summary, settings.endpoint, sender(settings)))
        raise typer.Exit(int(summary.exit_code))


@dataclass(frozen=True)
class _Choices:
    """What the person asked of this send, beyond the issue itself."""

    limit: int
    resend_unknown: bool
    retry_failed: bool
    yes: bool
    as_json: bool
    on_purpose: bool  # the campaign was named (--campaign, or front matter)


def _dry_run(
    issue: Issue, folder: Path, store: SuppressionStore | None, only: list[Subscriber] | None,
    choices: _Choices, out: Path | None, read: list[Path], *, test_send: bool,
) -> RunSummary:  # fmt: skip
    """Render and check every message, write the preview and the sign-off page, and report."""
    from dispatch.cli.report import dry_run_report
    from dispatch.proof.dryrun import run_dry
    from dispatch.send.campaign import same_text_campaigns, same_text_refusal
    from dispatch.state import backend

    state = None if test_send else backend.existing_journal(issue.settings.state)
    earlier = [] if choices.on_purpose else same_text_campaigns(issue, state)
    summary = run_dry(
        issue, (out or Path("dispatch-preview")).resolve(), write_all=out is not None, limit=choices.limit,
        state=state, suppressions=store, only=only, resend_unknown=choices.resend_unknown,
        retry_failed=choices.retry_failed, refused=[same_text_refusal(earlier)] if earlier else [],
        inputs=read,
    )  # fmt: skip
    print_summary(summary, choices.as_json, dry_run_report(summary, all_written=out is not None))
    return summary


def _send_now(
    issue: Issue, journal: Journal | None, store: SuppressionStore | None, only: list[Subscriber] | None,
    choices: _Choices, tokens: TokenSource | None,
) -> RunSummary:  # fmt: skip
    """Confirm (on a terminal), then send with a progress bar (on a terminal) until done or stopped."""
    from dispatch.cli.console import progress_bar, stop_on_signals
    from dispatch.send.campaign import count_to_send, list_identity, same_text_campaigns, same_text_refusal
    from dispatch.send.delivery import SendOptions, run_send
    from dispatch.send.skips import SkipRules

    if not choices.on_purpose:
        _new_campaign_on_purpose(same_text_campaigns(issue, journal), choices.yes, same_text_refusal)
    list_ids = list_identity(issue, journal).list_ids
    rules = SkipRules(journal, store, issue.campaign, list_ids, choices.resend_unknown, choices.retry_failed)
    show_bar = sys.stderr.isatty() and not choices.as_json
    count = 0  # a pass over the list, only when someone will see the number
    if not choices.yes or show_bar:
        count = len(only) if only is not None else count_to_send(issue, rules)
    _confirm(issue, min(count, choices.limit) if choices.limit else count, choices.yes)
    stop = threading.Event()

    def last_words(said: str) -> None:  # a second signal: no summary, but still one JSON line
        code = int(ExitCode.INTERRUPTED)
        emit_json({"error": said, "kind": "interrupted", "campaign": issue.campaign, "exit_code": code})

    words = last_words if choices.as_json else None
    with stop_on_signals(stop, words), progress_bar(count, enabled=show_bar) as advance:
        options = SendOptions(
            limit=choices.limit, resend_unknown=choices.resend_unknown, retry_failed=choices.retry_failed,
            only=only, progress=advance, stop=stop, suppressions=store, tokens=tokens,
        )  # fmt: skip
        return run_send(issue, journal, options)


def _throughput(connections: int | None, rate: str | None, daily_limit: int | None) -> dict[str, str | None]:
    """The throughput options as settings (they beat .env and the environment)."""
    from dispatch.settings import parse_rate

    refuse_negative(daily_limit, "--daily-limit")
    if connections is not None and connections < 1:
        raise InputError("--connections must be 1 or more")
    if rate is not None:
        parse_rate(rate, "--rate")
    return {
        "DISPATCH_CONNECTIONS": None if connections is None else str(connections),
        "DISPATCH_RATE": rate,
        "DISPATCH_DAILY_LIMIT": None if daily_limit is None else str(daily_limit),
    }


def _new_campaign_on_purpose(earlier: list[CampaignInfo], yes: bool, refusal: Callable[..., str]) -> None:
    """A new campaign for a text already sent: the person at the terminal decides; without one
    (or with --yes) the send refuses, exit 2, naming the earlier campaign."""
    if not earlier:
        return
    message = refusal(earlier)
    if yes or sys.stdin is None or not sys.stdin.isatty():
        raise InputError(message)
    typer.echo(f"dispatch: {message}", err=True)
    if not typer.confirm("Send it as a new campaign anyway (everyone gets it again)?", default=False):
        typer.echo("Nothing sent.")
        raise typer.Exit(int(ExitCode.INCOMPLETE))


@command(app, "status", "Show campaigns and their counts.")
def status(
    campaign: Annotated[
        str,
        typer.Argument(metavar="CAMPAIGN", help="One campaign's failed, deferred and unknown recipients."),
    ] = "",
    env_file: EnvFileOpt = None,
    as_json: JsonOpt = False,
    prune: Annotated[
        bool, typer.Option("--prune", help="Forget campaigns that never recorded a recipient.")
    ] = False,
    debug: DebugOpt = False,
) -> None:
    """Show campaigns and their counts, or one CAMPAIGN's problem recipients."""
    from dispatch.cli.report import status_report
    from dispatch.state import backend

    with reporting(debug, as_json):
        location = load_settings(env_file).state
        if prune:
            found = backend.existing_journal(location)
            pruned = backend.open_journal(location).prune_empty() if found is not None else []
            shown = ": " + ", ".join(pruned) if pruned else "."
            typer.echo(
                f"Forgot {len(pruned)} campaign(s) that never recorded a recipient{shown}", err=as_json
            )
        data, text = status_report(
            backend.existing_journal(location), campaign, location, backend.existing_suppressions(location)
        )
        if as_json:
            emit_json(data)
        else:
            typer.echo(text)
