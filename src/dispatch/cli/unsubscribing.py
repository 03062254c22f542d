"""``dispatch serve`` (the one-click unsubscribe endpoint) and ``dispatch suppress …`` (the
suppression store)."""

from __future__ import annotations

import io
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from dispatch.cli.common import (
    DebugOpt,
    EnvFileOpt,
    JsonOpt,
    app,
    command,
    emit_json,
    load_settings,
    reporting,
    state_to_write,
    sub_app,
)
from dispatch.cli.console import work_starts
from dispatch.errors import ConfigError, InputError

if TYPE_CHECKING:
    pass


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
    from dispatch.unsubscribe import serve as endpoint

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
            organization=settings.organization, state_dir=state_to_write(settings, ask=False, sending=True),
            state_url=settings.state_url,
            lists={settings.list_id: settings.list_id},
            previous_secrets=settings.unsubscribe_previous_secrets,
        )  # fmt: skip

        def announce(url: str) -> None:
            typer.echo(
                f"dispatch serve: listening on {url} (for {settings.unsubscribe_url}); state "
                f"{settings.state.describe()}; Ctrl-C stops",
                err=True,
            )

        work_starts()  # a long-lived process: usual collection from here on
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
    from dispatch.state import backend

    settings = load_settings(env_file)
    where = settings.state.describe()
    if readonly:
        return backend.existing_suppressions(settings.state), where
    state_to_write(settings, ask=True)
    return backend.open_suppressions(settings.state), where


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
    encoding: Annotated[
        str, typer.Option("--encoding", metavar="NAME", help="Encoding of FILE (the export).")
    ] = "utf-8-sig",
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
            state = settings.state.as_json()
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
