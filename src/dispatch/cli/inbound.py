"""``dispatch inbound``: read what comes back by mail (bounces, complaints, mailto unsubscribes)
and act on it."""

from __future__ import annotations

import sys
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
    from collections.abc import Callable

    from dispatch.inbound.actions import Decision, Processor, Tally
    from dispatch.settings import Settings

TEMPFAIL = 75  # EX_TEMPFAIL: standard input could not be recorded; the mail system keeps it and retries
MAX_LISTED = 10_000


@command(app, "inbound", "Read bounces, complaints and mailto unsubscribes; act on them.")
def inbound(
    maildir: Annotated[
        Path | None,
        typer.Option(
            "--maildir", metavar="DIR", help="Read every message in the Maildir DIR (then DIR/.processed)."
        ),
    ] = None,
    imap: Annotated[
        bool, typer.Option("--imap", help="Read the IMAP folder DISPATCH_IMAP_FOLDER (then 'processed').")
    ] = False,
    env_file: EnvFileOpt = None,
    as_json: JsonOpt = False,
    debug: DebugOpt = False,
) -> None:
    """Read what comes back by mail and act on it: one message on standard input (a Postfix pipe
    or an alias), every message of a Maildir (--maildir DIR), or of an IMAP folder (--imap).
    Hard bounces and complaints suppress the reader, soft bounces count, mailto unsubscribes
    unsubscribe; auto-replies and anything else change nothing. Each report counts once."""
    from dispatch.cli.common import state_to_write
    from dispatch.inbound.actions import Processor
    from dispatch.state.db import StateError

    with reporting(debug, as_json):
        if maildir is not None and imap:
            raise InputError("--maildir and --imap read different places; give one of them")
        settings = load_settings(env_file)
        folder = state_to_write(settings, ask=False)  # (with PostgreSQL: where unreadable mail is kept)
        if maildir is None and not imap and (sys.stdin is None or sys.stdin.isatty()):
            raise InputError(
                "dispatch inbound reads one message on standard input (a Postfix pipe or an alias); "
                "pipe one in, or give --maildir DIR or --imap"
            )
        decisions: list[dict[str, str]] = []

        def say(source: str, decision: Decision) -> None:
            typer.echo(f"dispatch inbound: {decision.line(source)}", err=True)
            if len(decisions) < MAX_LISTED:
                decisions.append(decision.as_json(source))

        try:
            processor = Processor(settings, settings.state)
            try:
                tally, where = _read(processor, settings, folder, maildir, imap=imap, say=say)
            finally:
                processor.close()
        except StateError as err:
            if maildir is not None or imap:
                raise
            _tempfail(str(err), as_json)
        _summary(tally, where, settings, decisions, as_json)
        raise typer.Exit(int(ExitCode.INCOMPLETE if tally.problems else ExitCode.OK))


def _read(
    processor: Processor, settings: Settings, folder: Path, maildir: Path | None, *, imap: bool,
    say: Callable[[str, Decision], None],
) -> tuple[Tally, str]:  # fmt: skip
    from dispatch.inbound.sources import MaildirSource, StdinSource, run

    if maildir is not None:
        return run(processor, MaildirSource(maildir), say), str(maildir)
    if imap:
        from dispatch.inbound.imap import ImapSource

        with ImapSource(settings) as source:
            return run(processor, source, say), f"IMAP {source.where} {settings.imap_folder}"
    return run(processor, StdinSource(sys.stdin.buffer, folder), say), "standard input"


def _tempfail(message: str, as_json: bool) -> None:
    """Standard input could not be recorded (the state folder failed, or the database is down):
    exit 75, so that the mail system keeps the message and delivers it again later."""
    from dispatch.untrusted import shown

    text = f"{shown(message)}; the message was not recorded: exit {TEMPFAIL}, the mail system keeps it and "
    text += "delivers it again later"
    typer.echo(f"dispatch: error: {text}", err=True)
    if as_json:
        emit_json({"error": text, "kind": "error", "exit_code": TEMPFAIL})
    raise typer.Exit(TEMPFAIL)


def _summary(
    tally: Tally, where: str, settings: Settings, decisions: list[dict[str, str]], as_json: bool
) -> None:
    state = settings.state
    if as_json:
        emit_json({
            "source": where, "state": state.as_json(),
            "read": tally.read, "kinds": dict(tally.kinds), "outcomes": dict(tally.outcomes),
            "suppressed": dict(tally.suppressed), "decisions": decisions, "problems": tally.problems,
            "exit_code": int(ExitCode.INCOMPLETE if tally.problems else ExitCode.OK),
        })  # fmt: skip
        return
    outcomes = ", ".join(f"{n} {what}" for what, n in sorted(tally.outcomes.items())) or "nothing"
    lines = [f"Read {tally.read} message(s) from {where}: {outcomes}", f"  State:         {state.describe()}"]
    if tally.suppressed:
        lines.append(
            "  Suppressed:    " + ", ".join(f"{n} {why}" for why, n in sorted(tally.suppressed.items()))
        )
    lines += [f"  Problem:       {p}" for p in tally.problems]
    typer.echo("\n".join(lines))
