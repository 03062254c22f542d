"""``dispatch state`` (where the state is, its schema, what it holds) and ``dispatch state
migrate --to URL`` (a state folder copied into PostgreSQL)."""

from __future__ import annotations

from typing import Annotated, Any

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
)
from dispatch.errors import ConfigError

state_app = typer.Typer(
    name="state", no_args_is_help=False, invoke_without_command=True, add_completion=False,
    pretty_exceptions_enable=False, context_settings={"help_option_names": ["-h", "--help"]},
    rich_markup_mode=None,
)  # fmt: skip
app.add_typer(state_app, name="state", short_help="Where the state is; move it to PostgreSQL.")


def _lines(data: dict[str, Any], where: str) -> list[str]:
    lines = [f"State: {where}", f"  Backend:       {data['backend']}"]
    if "schema" in data:
        schema = data["schema"]
        lines.append(
            f"  Schema:        {schema['version'] or 'none yet'} (this dispatch: {schema['this_dispatch']})"
        )
        lines += [f"  {name.capitalize() + ':':<14} {n:,}" for name, n in data.get("counts", {}).items()]
        return lines
    for name, info in data["files"].items():
        if info is None:
            lines.append(f"  {name}: none yet")
            continue
        held = ", ".join(f"{v:,} {k}" for k, v in info.items() if k not in ("schema", "this_dispatch"))
        lines.append(f"  {name}: schema {info['schema']} (this dispatch: {info['this_dispatch']}), {held}")
    lines.append(f"  Logins:        {data['logins']}")
    return lines


@state_app.callback()
def state(
    ctx: typer.Context, env_file: EnvFileOpt = None, as_json: JsonOpt = False, debug: DebugOpt = False
) -> None:
    """Show where the state is (a folder, or PostgreSQL), its schema, and what it holds."""
    if ctx.invoked_subcommand is not None:
        return
    from dispatch.state.migrate import overview

    with reporting(debug, as_json):
        location = load_settings(env_file).state
        data = overview(location)
        if as_json:
            emit_json(data)
            return
        typer.echo("\n".join(_lines(data, location.describe())))


@command(state_app, "migrate", "Copy the state folder into PostgreSQL.")
def migrate(
    to: Annotated[
        str, typer.Option("--to", metavar="URL", help="The PostgreSQL database: postgresql://user@host/db.")
    ],
    env_file: EnvFileOpt = None,
    as_json: JsonOpt = False,
    debug: DebugOpt = False,
) -> None:
    """Copy the state folder (journal, suppression store, list ids, OAuth2 logins) into the
    PostgreSQL database at URL. Nothing there is overwritten: running it again copies only what
    is new. Then set DISPATCH_STATE_URL to that URL on every host."""
    from dispatch.settings.values import shown_url, state_url
    from dispatch.state.migrate import migrate as copy

    with reporting(debug, as_json):
        url = state_url(to, "--to")
        settings = load_settings(env_file)
        if settings.state_url:
            raise ConfigError(
                "DISPATCH_STATE_URL is set already: migrate copies a state folder; unset it (or use another "
                "--env-file) so the folder is found, then run again"
            )
        folder = settings.state.path
        report = copy(folder, url)
        if as_json:
            emit_json({"from": str(folder), "to": shown_url(url), "copied": report.copied,
                       "already_there": report.existing})  # fmt: skip
            return
        typer.echo(f"Copied {folder} into {shown_url(url)}:")
        for table in report.copied:
            copied, there = report.copied[table], report.existing[table]
            typer.echo(f"  {table + ':':<14} {copied:,} copied, {there:,} already there")
        typer.echo(f"Now set DISPATCH_STATE_URL={shown_url(url)} on every host (a password: ~/.pgpass).")
