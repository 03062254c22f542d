"""``dispatch reconcile``: settle a campaign's unknown recipients from the relay's log."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

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
from dispatch.errors import ExitCode, InputError

if TYPE_CHECKING:
    from dispatch.send.reconcile import Reconciliation

MAX_LISTED = 50


@command(app, "reconcile", "Settle unknown recipients from the relay's log.")
def reconcile(
    campaign: Annotated[str, typer.Argument(metavar="CAMPAIGN", help="The campaign to reconcile.")],
    more: Annotated[
        list[Path] | None,
        typer.Argument(metavar="[FILE]...", help="More log files (so --maillog /var/log/mail.log* works).",
                       show_default=False),
    ] = None,
    maillog: Annotated[
        list[Path] | None,
        typer.Option(
            "--maillog", metavar="FILE",
            help="The relay's Postfix log (repeatable; rotated and gzip'd files too: maillog, maillog.1, "
            "maillog.2.gz).",
        ),
    ] = None,
    env_file: EnvFileOpt = None,
    as_json: JsonOpt = False,
    debug: DebugOpt = False,
) -> None:  # fmt: skip
    """Mark CAMPAIGN's unknown recipients as sent when the relay's log shows it queued their
    message, and as safe to send again (the next run sends them, once) when the log proves it
    never took it; anything the log cannot prove stays unknown, with the reason."""
    from dispatch.send.reconcile import reconcile as settle
    from dispatch.state import backend

    with reporting(debug, as_json):
        files = [*(maillog or []), *(more or [])]
        if not files:
            raise InputError("give the relay's log: --maillog FILE (Postfix's mail log, rotated files too)")
        location = load_settings(env_file).state
        found = backend.existing_journal(location)
        if found is None:
            raise InputError(f"no journal in {location.describe()}: nothing was sent from this state yet")
        found.close()
        journal = backend.open_journal(location)
        try:
            result = settle(journal, campaign, files)
        finally:
            journal.close()
        code = ExitCode.INCOMPLETE if result.outcome("unknown") else ExitCode.OK
        if as_json:
            emit_json({**result.as_json(), "state": location.as_json(), "exit_code": int(code)})
        typer.echo(report(result, location.describe()), err=as_json)
        raise typer.Exit(int(code))


def report(result: Reconciliation, where: str) -> str:
    """What reconcile found and changed, for a person."""
    from dispatch.send.reconcile import AGAIN, SENT, UNKNOWN, moment

    lines = [f"Reconcile {result.campaign}"]
    if result.log is None:
        lines.append("  No unknown recipients: nothing to settle.")
    else:
        files = result.log.files
        lines.append(
            f"  Log:           {len(files)} file(s), {sum(f.lines for f in files):,} lines"
            + (f", {moment(result.log.first)} to {moment(result.log.last)}" if result.log.first else "")
        )
        skipped = sum(f.skipped for f in files)
        if skipped:
            lines.append(f"  Skipped lines: {skipped:,} (not log lines)")
        lines += [f"  Note:          {f.path} holds no Postfix line" for f in files if not f.postfix_lines]
        lines.append(f"  Unknown:       {len(result.decisions)} before" + _recovered(result))
        for outcome, label, meaning in (
            (SENT, "Sent:", "the relay kept their message"),
            (AGAIN, "To send again:", "the relay never took their message: the next run sends them"),
            (UNKNOWN, "Still unknown:", "the log cannot tell"),
        ):
            settled = result.outcome(outcome)
            lines.append(f"  {label:<14} {len(settled)}" + (f" ({meaning})" if settled else ""))
            lines += [f"    {d.email}: {d.why}" for d in settled[:MAX_LISTED]]
            if len(settled) > MAX_LISTED:
                lines.append(f"    … and {len(settled) - MAX_LISTED} more (see --json)")
    lines.append(f"  State:         {where}")
    if result.outcome(AGAIN):
        lines.append("Run the same send again: it sends the recipients the relay never took, once.")
    return "\n".join(lines)


def _recovered(result: Reconciliation) -> str:
    if not result.recovered:
        return ""
    return f" ({result.recovered} left in flight by a run that died, counted as unknown first)"
