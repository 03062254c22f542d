"""``dispatch check``: what would block a send, and warnings, with a spam score, DNS and the
OAuth2 login when asked."""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Annotated, Any

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
    load_settings,
    reporting,
    subscribers_path,
)
from dispatch.errors import ConfigError, ExitCode

if TYPE_CHECKING:
    from dispatch.checks.rules import Problem


@command(app, "check", "Check an issue and its settings before sending.")
def check(
    article: ArticleArg,
    subscribers: SubscribersOpt = None,
    spam: Annotated[
        bool, typer.Option("--spam", help="Score one message with SpamAssassin (local rules).")
    ] = False,
    dns: Annotated[bool, typer.Option("--dns", help="Look up SPF, DMARC and the DKIM key in DNS.")] = False,
    subject: SubjectOpt = "",
    template: TemplateOpt = None,
    attach: AttachOpt = None,
    env_file: EnvFileOpt = None,
    as_json: JsonOpt = False,
    encoding: EncodingOpt = "utf-8-sig",
    debug: DebugOpt = False,
) -> None:
    """Check ARTICLE, the list and the settings as a send would before its first message
    (exit 0: nothing blocks; 2: something blocks), optionally with a spam score and DNS."""
    from dispatch.compose.issue import plan_issue, recipients, trial_subscriber
    from dispatch.send.preflight import preflight

    with reporting(debug, as_json):
        settings = load_settings(env_file)
        issue = plan_issue(
            article, subscribers_path(subscribers, settings), settings,
            subject=subject, template_dir=template, encoding=encoding, attach=attach or (),
        )  # fmt: skip
        from dispatch.state.location import described

        problems = preflight(issue)
        location = settings.state
        report: dict[str, Any] = {
            "subject": issue.subject,
            "campaign": issue.campaign,
            "list_id": settings.list_id,
            "state": location.as_json(),
        }
        lines = [
            f"Checked «{issue.subject}» (campaign {issue.campaign}, list {settings.list_id})",
            f"  State:         {described(location)}",
        ]
        if settings.smtp_auth == "oauth2":
            more, oauth_lines, report["oauth"] = _oauth(settings)
            problems, lines = problems + more, lines + oauth_lines
        if spam:
            sample = next(recipients(issue, 1), None) or trial_subscriber(issue.subscribers.columns)
            more, spam_lines, report["spam"] = _spam(issue.message(sample)[0])
            problems, lines = problems + more, lines + spam_lines
        looked_up: list[Problem] = []
        if dns:
            looked_up, dns_lines, report["dns"] = _dns(settings)
            problems, lines = problems + looked_up, lines + dns_lines
        _print_check(problems, lines, report, as_json, looked_up)


def _oauth(settings: Any) -> tuple[list[Problem], list[str], dict[str, Any]]:
    """Whether a send could get an OAuth2 access token now, and for which mailbox (never the token)."""
    from dispatch.checks.rules import Problem
    from dispatch.send.oauth import check_token

    found = check_token(settings, settings.state)
    data = {"mailbox": found.mailbox, "grant": found.grant, "token": found.ok, "problem": found.problem}
    if found.ok:
        return [], [f"  OAuth2:        a token can be had for {found.mailbox} ({found.grant})"], data
    line = f"  OAuth2:        no token for {found.mailbox} ({found.grant})"
    return [Problem("blocking", "oauth-token", found.problem)], [line], data


def _spam(message: bytes) -> tuple[list[Problem], list[str], dict[str, Any]]:
    from dispatch.checks.rules import Problem
    from dispatch.checks.spam import spam_report, spamassassin_missing

    missing = spamassassin_missing()
    if missing is not None:
        return [], [f"  Spam score:    not scored: {missing}"], {"scored": False, "note": missing}
    result = spam_report(message)
    if result is None:
        return [], ["  Spam score:    not scored"], {"scored": False}
    fired = [f"{r.name} ({r.points:+g})" for r in result.rules if r.points]
    lines = [f"  Spam score:    {result.score + 0.0:g} (local rules; spam from {result.required:g})"]
    lines += [f"    {r.points:+5.1f} {r.name}: {r.description}" for r in result.rules if r.points]
    found = [
        Problem(
            "warning", "spam-score", f"SpamAssassin scores the message {result.score:g}: {', '.join(fired)}"
        )
    ]
    rules = [{"name": r.name, "points": r.points, "description": r.description} for r in result.rules]
    data = {"scored": True, "score": result.score, "required": result.required, "rules": rules}
    return (found if result.score >= 2.0 else []), lines, data


def _dns(settings: Any) -> tuple[list[Problem], list[str], dict[str, Any]]:
    from dispatch.checks.dns import dns_problems
    from dispatch.compose.dkim import load_signatures

    if settings.sender is None:
        raise ConfigError("DISPATCH_FROM is not set, so there is no domain to look up")
    signatures = load_signatures(settings)
    keys = [s.public_key_b64 for s in signatures.signers] if signatures is not None else []
    found, report = dns_problems(
        settings.sender.domain, dkim_selector=settings.dkim_selector or None,
        dkim_domain=settings.dkim_domain or None, dkim_public_key=keys[0] if keys else None,
        server=settings.dns_server, ed25519_selector=settings.dkim_ed25519_selector or None,
        ed25519_public_key=keys[1] if len(keys) > 1 else None,
    )  # fmt: skip
    lines = [f"  DNS for {settings.sender.domain}:"] + [f"    {line}" for line in report.lines()]
    data = dataclasses.asdict(report)
    return found, lines, data


def _print_check(
    problems: list[Problem], lines: list[str], report: dict[str, Any], as_json: bool, looked_up: list[Problem]
) -> None:
    unique = list(dict.fromkeys(problems))
    blocking = [p for p in unique if p.refuses_send]
    warnings = [p for p in unique if not p.refuses_send]
    lines += [f"  Blocking:      {p.message}" for p in blocking]
    lines += [f"  Warning:       {p.message}" for p in warnings]
    verdict = f"Nothing blocks a send ({len(warnings)} warning(s))."
    if blocking and all(p in looked_up for p in blocking):  # a send looks nothing up in DNS
        verdict = (
            f"{len(blocking)} blocking problem(s) in DNS: a send does not look these up and would start, "
            "but receivers do; fix them first."
        )
    elif blocking:
        verdict = f"{len(blocking)} blocking problem(s): a send would refuse to start."
    code = ExitCode.BAD_INPUT if blocking else ExitCode.OK
    if as_json:
        report |= {
            "blocking": [{"code": p.code, "message": p.message} for p in blocking],
            "warnings": [{"code": p.code, "message": p.message} for p in warnings],
            "counts": {"blocking": len(blocking), "warnings": len(warnings)},
            "exit_code": int(code),
        }
        emit_json(report)
    else:
        typer.echo("\n".join([*lines, verdict]))
    raise typer.Exit(int(code))
