"""Into the inbox without an email service provider: ``dispatch check``, ``dispatch serve``
(the one-click unsubscribe endpoint), ``dispatch suppress …`` and ``dispatch dkim keygen``."""

from __future__ import annotations

import dataclasses
import io
import sys
from pathlib import Path
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
    state_to_write,
    sub_app,
    subscribers_path,
)
from dispatch.errors import ConfigError, ExitCode, InputError

if TYPE_CHECKING:
    from dispatch.checks import Problem


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
    from dispatch.campaign import plan_issue, recipients, trial_subscriber
    from dispatch.preflight import preflight

    with reporting(debug, as_json):
        settings = load_settings(env_file)
        issue = plan_issue(
            article, subscribers_path(subscribers, settings), settings,
            subject=subject, template_dir=template, encoding=encoding, attach=attach or (),
        )  # fmt: skip
        problems = preflight(issue)
        location = settings.state
        report: dict[str, Any] = {
            "subject": issue.subject,
            "campaign": issue.campaign,
            "list_id": settings.list_id,
            "state": {"backend": "sqlite", "path": str(location.path), "found_by": location.found_by},
        }
        lines = [
            f"Checked «{issue.subject}» (campaign {issue.campaign}, list {settings.list_id})",
            f"  State:         {location.describe()}",
        ]
        if settings.smtp_auth == "oauth2":
            more, oauth_lines, report["oauth"] = _oauth(settings)
            problems, lines = problems + more, lines + oauth_lines
        if spam:
            sample = next(recipients(issue, 1), None) or trial_subscriber(issue.subscribers.columns)
            more, spam_lines, report["spam"] = _spam(issue.message(sample)[0])
            problems, lines = problems + more, lines + spam_lines
        if dns:
            more, dns_lines, report["dns"] = _dns(settings)
            problems, lines = problems + more, lines + dns_lines
        _print_check(problems, lines, report, as_json)


def _oauth(settings: Any) -> tuple[list[Problem], list[str], dict[str, Any]]:
    """Whether a send could get an OAuth2 access token now, and for which mailbox (never the token)."""
    from dispatch.checks import Problem
    from dispatch.oauth import check_token

    found = check_token(settings, settings.state.path)
    data = {"mailbox": found.mailbox, "grant": found.grant, "token": found.ok, "problem": found.problem}
    if found.ok:
        return [], [f"  OAuth2:        a token can be had for {found.mailbox} ({found.grant})"], data
    line = f"  OAuth2:        no token for {found.mailbox} ({found.grant})"
    return [Problem("blocking", "oauth-token", found.problem)], [line], data


def _spam(message: bytes) -> tuple[list[Problem], list[str], dict[str, Any]]:
    from dispatch.checks import Problem
    from dispatch.spamcheck import spam_report, spamassassin_missing

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
    from dispatch.dkim import load_signer
    from dispatch.dnscheck import dns_problems

    if settings.sender is None:
        raise ConfigError("DISPATCH_FROM is not set, so there is no domain to look up")
    key = None
    if settings.dkim_key_file is not None:
        key = load_signer(settings.dkim_key_file, settings.dkim_selector, settings.dkim_domain).public_key_b64
    found, report = dns_problems(
        settings.sender.domain, dkim_selector=settings.dkim_selector or None,
        dkim_domain=settings.dkim_domain or None, dkim_public_key=key, server=settings.dns_server,
    )  # fmt: skip
    lines = [f"  DNS for {settings.sender.domain}:"] + [f"    {line}" for line in report.lines()]
    data = dataclasses.asdict(report)
    return found, lines, data


def _print_check(problems: list[Problem], lines: list[str], report: dict[str, Any], as_json: bool) -> None:
    unique = list(dict.fromkeys(problems))
    blocking = [p for p in unique if p.refuses_send]
    warnings = [p for p in unique if not p.refuses_send]
    lines += [f"  Blocking:      {p.message}" for p in blocking]
    lines += [f"  Warning:       {p.message}" for p in warnings]
    verdict = (
        f"{len(blocking)} blocking problem(s): a send would refuse to start."
        if blocking
        else f"Nothing blocks a send ({len(warnings)} warning(s))."
    )
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


@command(app, "serve", "Answer one-click unsubscribes over HTTP.")
def serve(
    host: Annotated[
        str | None,
        typer.Option("--host", metavar="HOST", help="Listen on HOST (default: DISPATCH_SERVE_HOST)."),
    ] = None,
    port: Annotated[
        int | None,
        typer.Option("--port", metavar="PORT", help="Listen on PORT (default: DISPATCH_SERVE_PORT)."),
    ] = None,
    env_file: EnvFileOpt = None,
    debug: DebugOpt = False,
) -> None:
    """Serve the unsubscribe endpoint of DISPATCH_UNSUBSCRIBE_URL (RFC 8058 one-click POST, a
    confirmation page for GET, /healthz) until stopped; run it behind an HTTPS reverse proxy."""
    from dispatch import serve as endpoint

    with reporting(debug):
        settings = load_settings(env_file)
        if not settings.unsubscribe_url:
            raise ConfigError(
                "DISPATCH_UNSUBSCRIBE_URL is not set: it is the address dispatch serve answers at"
            )
        if not settings.unsubscribe_secret:
            raise ConfigError(
                "DISPATCH_UNSUBSCRIBE_SECRET is not set: serve needs it to read unsubscribe links"
            )
        if port is not None and not 0 < port < 65536:
            raise InputError("--port must be a number from 1 to 65535")
        config = endpoint.ServeConfig(
            url_template=settings.unsubscribe_url, secret=settings.unsubscribe_secret,
            organization=settings.organization, state_dir=state_to_write(settings, ask=False),
            lists={settings.list_id: settings.list_id},
            previous_secrets=settings.unsubscribe_previous_secrets,
        )  # fmt: skip

        def announce(url: str) -> None:
            typer.echo(
                f"dispatch serve: listening on {url} (for {settings.unsubscribe_url}); state "
                f"{settings.state.describe()}; Ctrl-C stops",
                err=True,
            )

        endpoint.serve(config, host or settings.serve_host, port or settings.serve_port, announce=announce)


# --- the suppression store -----------------------------------------------------------------

suppress_app = sub_app("suppress", "Keep addresses from being mailed.")
ListOpt = Annotated[
    str, typer.Option("--list", metavar="ID", help="Only this list id (default: every list, *).")
]
ReasonOpt = Annotated[
    str | None,
    typer.Option("--reason", metavar="REASON", help="unsubscribed, bounced, complained or manual."),
]


def _store(env_file: Path | None, *, readonly: bool = False) -> tuple[Any, str]:
    """The suppression store (None, read-only, when there is none yet), and which state it is in."""
    from dispatch.state.suppression import SuppressionStore

    settings = load_settings(env_file)
    where = settings.state.describe()
    if readonly:
        return SuppressionStore.open_existing(settings.state.path), where
    return SuppressionStore(state_to_write(settings, ask=True)), where


@command(suppress_app, "add", "Suppress addresses.")
def suppress_add(
    addresses: Annotated[list[str], typer.Argument(metavar="ADDRESS...", help="The addresses to suppress.")],
    reason: ReasonOpt = None,
    list_id: ListOpt = "*",
    env_file: EnvFileOpt = None,
    debug: DebugOpt = False,
) -> None:
    """Never mail ADDRESS again (on every list, or on --list ID only)."""
    from dispatch.state.suppression import check_reason, check_scope

    with reporting(debug):
        why, scope = check_reason(reason or "manual"), check_scope(list_id)
        store, where = _store(env_file)
        added = sum(store.add(a, why, scope=scope, source="manual") for a in addresses)
        typer.echo(
            f"Suppressed {added} address(es) ({why}, list {scope}); {len(addresses) - added} already were. "
            f"State: {where}"
        )


@command(suppress_app, "remove", "Allow addresses again.")
def suppress_remove(
    addresses: Annotated[
        list[str], typer.Argument(metavar="ADDRESS...", help="The addresses to allow again.")
    ],
    list_id: Annotated[
        str | None, typer.Option("--list", metavar="ID", help="Only this list's entries.")
    ] = None,
    env_file: EnvFileOpt = None,
    debug: DebugOpt = False,
) -> None:
    """Remove ADDRESS from the suppression store (every entry, or only --list ID's)."""
    from dispatch.state.suppression import check_scope

    with reporting(debug):
        store, where = _store(env_file)
        scope = check_scope(list_id) if list_id is not None else None
        removed = sum(store.remove(a, scope=scope) for a in addresses)
        typer.echo(f"Removed {removed} entr{'y' if removed == 1 else 'ies'}. State: {where}")


@command(suppress_app, "list", "Show the suppressed addresses.")
def suppress_list(env_file: EnvFileOpt = None, as_json: JsonOpt = False, debug: DebugOpt = False) -> None:
    """Every suppressed address with its reason, list, time and source."""
    with reporting(debug, as_json):
        store, where = _store(env_file, readonly=True)
        if as_json:
            if store is None:
                typer.echo("[]")
            else:
                store.export_json(sys.stdout)
            return
        entries = list(store.entries()) if store is not None else []
        for e in entries:
            typer.echo(f"{e.key}  {e.reason}  list {e.scope}  {e.iso_time}  {e.source}")
        typer.echo(f"{len(entries)} suppressed. State: {where}", err=True)


@command(suppress_app, "import", "Add the addresses of a CSV file.")
def suppress_import(
    file: Annotated[Path, typer.Argument(metavar="FILE", help="A CSV with an address column.")],
    reason: ReasonOpt = None,
    list_id: Annotated[
        str | None,
        typer.Option("--list", metavar="ID", help="Apply every row to list ID (default: as each row says)."),
    ] = None,
    env_file: EnvFileOpt = None,
    encoding: EncodingOpt = "utf-8-sig",
    as_json: JsonOpt = False,
    debug: DebugOpt = False,
) -> None:
    """Add every address of FILE (a Mailchimp, listmonk or spreadsheet export; reason and list
    columns are read when present) in one transaction."""
    from dispatch.state.suppression import check_reason, check_scope

    with reporting(debug, as_json):
        why = check_reason(reason) if reason else None
        scope = check_scope(list_id) if list_id else None
        settings = load_settings(env_file)
        store, where = _store(env_file)
        report = store.import_csv(
            file, reason=why, scope=scope, unsubscribe_list=settings.list_id, encoding=encoding
        )
        if as_json:
            skipped = [{"line": s.line, "reason": s.reason} for s in report.skipped]
            state = {
                "backend": "sqlite",
                "path": str(settings.state.path),
                "found_by": settings.state.found_by,
            }
            emit_json(
                {"added": report.added, "existing": report.existing, "skipped": skipped, "state": state}
            )
            return
        typer.echo(f"Imported {file}: {report.added} added, {report.existing} already there, "
                   f"{len(report.skipped)} skipped. State: {where}")  # fmt: skip
        for row in report.skipped[:50]:
            typer.echo(f"  line {row.line}: {row.reason}")


@command(suppress_app, "export", "Write the store as CSV or JSON.")
def suppress_export(
    out: Annotated[
        Path | None, typer.Option("--out", metavar="FILE", help="Write to FILE (default: stdout).")
    ] = None,
    env_file: EnvFileOpt = None,
    as_json: Annotated[bool, typer.Option("--json", help="JSON instead of CSV.")] = False,
    debug: DebugOpt = False,
) -> None:
    """Every entry as CSV (or --json), to move to another machine with 'dispatch suppress import'."""
    from dispatch.files import OutputFolder

    with reporting(debug):
        store, where = _store(env_file)
        write = store.export_json if as_json else store.export_csv
        if out is None:
            write(sys.stdout)
            return
        buffer = io.StringIO()
        count = write(buffer)
        folder = OutputFolder(out.parent.resolve(), what="--out")
        folder.write(out.name, buffer.getvalue().encode())
        folder.close()
        typer.echo(f"Wrote {count} entries to {out}. State: {where}", err=True)


# --- DKIM -----------------------------------------------------------------------------------

dkim_app = sub_app("dkim", "DKIM signing keys.")


@command(dkim_app, "keygen", "Make a DKIM key and print its DNS record.")
def dkim_keygen(
    selector: Annotated[str, typer.Option("--selector", metavar="NAME", help="The selector, like s2026.")],
    domain: Annotated[
        str, typer.Option("--domain", metavar="DOMAIN", help="The signing domain (the From domain).")
    ],
    out: Annotated[
        Path | None,
        typer.Option("--out", metavar="FILE", help="Key file to write (default: dkim-SELECTOR.pem)."),
    ] = None,
    algorithm: Annotated[
        str, typer.Option("--algorithm", metavar="NAME", help="rsa (2048 bits) or ed25519.")
    ] = "rsa",
    debug: DebugOpt = False,
) -> None:
    """Write a new private key (0600, never over an existing file) and print the TXT record to
    publish, then the settings that use it."""
    from dispatch.dkim import generate_key

    with reporting(debug):
        if algorithm not in ("rsa", "ed25519"):
            raise InputError("--algorithm must be rsa or ed25519")
        path = out or Path(f"dkim-{selector}.pem")
        record = generate_key(
            path, selector=selector, domain=domain, algorithm="rsa" if algorithm == "rsa" else "ed25519"
        )
        typer.echo(f"Wrote the private key to {path} (readable by you only; keep it secret).")
        typer.echo(f"\nPublish this TXT record in DNS:\n\n{record.zone}\n")
        settings = (f"DISPATCH_DKIM_KEY_FILE={path.resolve()}", f"DISPATCH_DKIM_SELECTOR={selector}",
                    f"DISPATCH_DKIM_DOMAIN={domain.lower()}")  # fmt: skip
        typer.echo("Then set:\n" + "\n".join(f"  {line}" for line in settings))
