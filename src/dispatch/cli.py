"""The ``dispatch`` command: a thin Typer layer over the library.

Only this module knows about the terminal, Typer and ``.env`` files. Every command builds
settings, calls the library, prints a summary, and maps a ``DispatchError`` to one line on
stderr and an exit code, in one place (:func:`_reporting`).
"""

from __future__ import annotations

import io
import json
import logging
import os
import sys
import threading
import traceback
import webbrowser
from collections.abc import Iterator, Mapping
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Annotated

import typer
from dotenv import dotenv_values

from dispatch import __version__
from dispatch.article import load_article
from dispatch.campaign import (
    Issue,
    RunSummary,
    campaign_id,
    check_campaign_id,
    count_to_send,
    named_recipients,
    plan_issue,
    recipients,
)
from dispatch.console import progress_bar, stop_on_signals
from dispatch.delivery import SendOptions, run_send
from dispatch.errors import ConfigError, DispatchError, ExitCode, InputError
from dispatch.files import read_regular
from dispatch.preview import run_dry, sample_list, write_message
from dispatch.report import dry_run_report, send_report, status_report
from dispatch.settings import Settings, parse_rate, unknown_settings
from dispatch.state import journal as j

EXIT_CODES = """Exit codes: 0 all done; 1 some recipients failed, were deferred or are unknown;
2 bad usage or bad input (nothing sent); 3 aborted (authentication, quota, server down, too
many failures); 4 another run of this campaign is in progress; 130 interrupted (resumable)."""

app = typer.Typer(
    name="dispatch",
    help="Render an article into an HTML newsletter and mail it to every subscriber, exactly once.\n\n"
    + EXIT_CODES,
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
    rich_markup_mode=None,
)

ArticleArg = Annotated[
    Path, typer.Argument(metavar="ARTICLE", help="The article: .txt or .md.", show_default=False)
]
SubscribersOpt = Annotated[
    Path | None,
    typer.Option("--subscribers", "-s", help="Subscriber CSV (default: DISPATCH_SUBSCRIBERS)."),
]
EnvFileOpt = Annotated[
    Path | None, typer.Option("--env-file", help="Read settings from this file instead of ./.env.")
]
TemplateOpt = Annotated[
    Path | None,
    typer.Option("--template", help="Your template folder (missing files fall back to the built-ins)."),
]
EncodingOpt = Annotated[str, typer.Option("--encoding", help="Encoding of the subscriber CSV.")]
DebugOpt = Annotated[bool, typer.Option("--debug", help="Show tracebacks for errors.")]
SubjectOpt = Annotated[
    str, typer.Option("--subject", help="Subject, unless the article's front matter sets one.")
]


def _version(value: bool) -> None:
    if value:
        typer.echo(f"dispatch {__version__}")
        raise typer.Exit


@app.callback()
def _main(
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version.")
    ] = False,
) -> None:
    """Render an article into an HTML newsletter and mail it to every subscriber, exactly once."""


@contextmanager
def _reporting(debug: bool, as_json: bool = False) -> Iterator[None]:
    """The one place where errors become a line on stderr and an exit code (and, with
    ``--json``, an object on stdout, so a cron script always has something to parse).
    ``--debug`` adds the traceback and changes nothing else."""
    try:
        yield
        return
    except (typer.Exit, typer.Abort):
        raise
    except DispatchError as err:
        code, kind, message = err.exit_code, "error", str(err)
    except KeyboardInterrupt:
        code, kind, message = ExitCode.INTERRUPTED, "interrupted", "stopped by the user"
    except OSError as err:  # the machine: a full disk, a vanished folder, no permission
        where = f"{err.filename}: " if err.filename else ""
        code, kind, message = ExitCode.BAD_INPUT, "error", f"{where}{err.strerror or err}"
    except Exception as err:  # a bug: reported as one, never dressed up as bad input
        code, kind = ExitCode.INCOMPLETE, "internal error"
        message = f"{type(err).__name__}: {err} (run with --debug)"
    if debug:
        traceback.print_exc()
    typer.echo(f"dispatch: {kind}: {message}", err=True)
    if as_json:
        typer.echo(json.dumps({"error": message, "kind": kind, "exit_code": int(code)}, ensure_ascii=False))
    raise typer.Exit(int(code))


PATH_SETTINGS = {"DISPATCH_SUBSCRIBERS", "DISPATCH_STATE_DIR", "DISPATCH_SMTP_CA_FILE"}
PATH_SETTINGS |= {"DISPATCH_DKIM_KEY_FILE", "DISPATCH_LOGO"}


class _Unparsed(logging.Handler):
    """Collects python-dotenv's "could not parse statement" warnings."""

    def __init__(self) -> None:
        super().__init__()
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(str(record.args[0]) if isinstance(record.args, tuple) and record.args else "?")


def _read_env_file(path: Path) -> dict[str, str | None]:
    """The file's settings; a line python-dotenv cannot parse is an error naming it, and so is
    a setting dispatch does not read (a misspelling would silently fall back to a default)."""
    try:
        text = read_regular(path, "settings", limit=1_000_000).decode("utf-8-sig")
    except UnicodeDecodeError as err:
        raise InputError(f"{path}: is not UTF-8 text; re-save the settings file as UTF-8") from err
    handler, logger = _Unparsed(), logging.getLogger("dotenv.main")
    logger.addHandler(handler)
    propagate, logger.propagate = logger.propagate, False
    try:
        values = dotenv_values(stream=io.StringIO(text))
    finally:
        logger.removeHandler(handler)
        logger.propagate = propagate
    if handler.lines:
        raise InputError(f"{path}: line {handler.lines[0]} is not KEY=value; fix or remove it")
    for name, close in unknown_settings(values):
        hint = f"did you mean {close}?" if close else "see .env.example for the settings dispatch reads"
        raise ConfigError(f"{path}: unknown setting {name}; {hint}")
    return values


def load_settings(env_file: Path | None, overrides: Mapping[str, str | None]) -> Settings:
    """Flags beat the real environment, which beats the .env file.

    Relative paths in the file are taken relative to the file's folder.
    """
    values: dict[str, str] = {}
    path = env_file or Path(".env")
    if env_file is not None or os.path.lexists(path):
        for key, raw in _read_env_file(path).items():
            if raw and key in PATH_SETTINGS and not Path(raw).expanduser().is_absolute() and "://" not in raw:
                raw = str(path.resolve().parent / raw)  # noqa: PLW2901 - relative to the file, for cron
            if raw is not None:
                values[key] = raw
        if values.get("DISPATCH_SMTP_PASSWORD") and path.stat().st_mode & 0o077:
            typer.echo(
                f"dispatch: warning: {path} holds a password others can read; chmod 600 {path}",
                err=True,
            )
    environment = {k: v for k, v in os.environ.items() if k.startswith("DISPATCH_")}
    for name, close in unknown_settings(environment):
        hint = f" (did you mean {close}?)" if close else ""
        typer.echo(
            f"dispatch: warning: the environment sets {name}, which dispatch does not read{hint}", err=True
        )
    values.update(environment)
    values.update({k: v for k, v in overrides.items() if v is not None})
    return Settings.from_mapping(values)


def _subscribers(option: Path | None, settings: Settings) -> Path:
    path = option or settings.subscribers
    if path is None:
        raise ConfigError("no subscriber list: pass -s/--subscribers LIST.csv or set DISPATCH_SUBSCRIBERS")
    return path


def _sender(settings: Settings) -> str:
    return settings.sender.addr_spec if settings.sender is not None else "(no DISPATCH_FROM)"


def _inputs(*paths: Path | None) -> list[Path]:
    """Files a run reads, which no output may replace (a template folder: every file in it)."""
    found: list[Path] = []
    for path in paths:
        if path is None:
            continue
        found += [p for p in path.rglob("*") if p.is_file()][:1000] if path.is_dir() else [path]
    return found


def _out(summary: RunSummary, as_json: bool, text: str) -> None:
    if as_json:
        typer.echo(json.dumps(summary.as_json(), ensure_ascii=False, indent=2))
        if text:
            typer.echo(text, err=True)
    else:
        typer.echo(text)


def _confirm(issue: Issue, count: int, yes: bool) -> None:
    if yes:
        return
    if not sys.stdin or not sys.stdin.isatty():
        raise InputError(
            "refusing to send without a terminal to confirm on: add --yes to send unattended (cron)"
        )
    question = (
        f"Send «{issue.subject}» from {_sender(issue.settings)} to {count} subscribers "
        f"via {issue.settings.endpoint}?"
    )
    if not typer.confirm(question, default=False):
        typer.echo("Nothing sent.")
        raise typer.Exit(int(ExitCode.INCOMPLETE))


@app.command()
def send(
    article: ArticleArg,
    subscribers: SubscribersOpt = None,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Render and check every message; send nothing.")
    ] = False,
    out: Annotated[
        Path | None,
        typer.Option("--out", help="Dry run: write every message here (.eml + index.html)."),
    ] = None,
    yes: Annotated[
        bool, typer.Option("--yes", "-y", help="Send without asking (required without a terminal).")
    ] = False,
    subject: SubjectOpt = "",
    template: TemplateOpt = None,
    limit: Annotated[
        int,
        typer.Option("--limit", min=0, metavar="N", help="Send at most N messages this run (0: no limit)."),
    ] = 0,
    to: Annotated[
        list[str] | None,
        typer.Option("--to", metavar="ADDRESS", help="Test send: only to this address (repeatable)."),
    ] = None,
    env_file: EnvFileOpt = None,
    campaign: Annotated[
        str, typer.Option("--campaign", help="Campaign ID (default: from the article).")
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
        int | None, typer.Option("--connections", min=1, help="Parallel SMTP connections.")
    ] = None,
    rate: Annotated[str | None, typer.Option("--rate", help="Rate limit such as 20/s or 600/min.")] = None,
    daily_limit: Annotated[
        int | None,
        typer.Option("--daily-limit", min=0, help="At most N messages per 24 h (all runs)."),
    ] = None,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print a machine-readable summary on stdout.")
    ] = False,
    encoding: EncodingOpt = "utf-8-sig",
    debug: DebugOpt = False,
) -> None:
    """Send ARTICLE to every subscriber (or preview it with --dry-run)."""
    with _reporting(debug, as_json):
        if rate is not None:
            parse_rate(rate, "--rate")
        overrides = {
            "DISPATCH_CONNECTIONS": None if connections is None else str(connections),
            "DISPATCH_RATE": rate,
            "DISPATCH_DAILY_LIMIT": None if daily_limit is None else str(daily_limit),
        }
        settings = load_settings(env_file, overrides)
        check_campaign_id(campaign, "--campaign")
        state_dir = settings.state_dir or j.default_state_dir()
        journal = None if to or dry_run else j.Journal(state_dir, durable=settings.journal_sync == "full")
        with ExitStack() as held:
            if journal is not None:  # a second run of this campaign stops here, before any work
                held.enter_context(journal.lock(campaign or campaign_id(load_article(article))))
            issue = plan_issue(
                article, _subscribers(subscribers, settings), settings, subject=subject,
                template_dir=template, encoding=encoding, campaign=campaign, test_send=bool(to),
            )  # fmt: skip
            only = named_recipients(issue, to) if to else None
            if dry_run:
                state = None if to else j.Journal.open_existing(state_dir)
                folder = (out or Path("dispatch-preview")).resolve()
                summary = run_dry(
                    issue, folder, write_all=out is not None, limit=limit, state=state, only=only,
                    resend_unknown=resend_unknown, retry_failed=retry_failed,
                    inputs=_inputs(article, issue.subscribers.path, env_file, template),
                )  # fmt: skip
                _out(summary, as_json, dry_run_report(summary, all_written=out is not None))
                return
            count = (
                len(only)
                if only is not None
                else count_to_send(issue, journal, resend_unknown=resend_unknown, retry_failed=retry_failed)
            )
            count = min(count, limit) if limit else count
            _confirm(issue, count, yes)
            stop = threading.Event()
            show_bar = sys.stderr.isatty() and not as_json
            with stop_on_signals(stop), progress_bar(count, enabled=show_bar) as advance:
                options = SendOptions(
                    limit=limit, resend_unknown=resend_unknown, retry_failed=retry_failed, only=only,
                    progress=advance, stop=stop,
                )  # fmt: skip
                summary = run_send(issue, journal, options)
        _out(summary, as_json, send_report(summary, settings.endpoint, _sender(settings)))
        raise typer.Exit(int(summary.exit_code))


@app.command()
def preview(
    article: ArticleArg,
    subscriber: Annotated[str, typer.Option("--subscriber", help="Render for this subscriber's row.")] = "",
    subscribers: SubscribersOpt = None,
    out: Annotated[
        Path, typer.Option("--out", help="HTML file to write (.eml and .txt go beside it).")
    ] = Path("preview.html"),
    open_browser: Annotated[bool, typer.Option("--open", help="Open the preview in a browser.")] = False,
    subject: SubjectOpt = "",
    template: TemplateOpt = None,
    env_file: EnvFileOpt = None,
    encoding: EncodingOpt = "utf-8-sig",
    debug: DebugOpt = False,
) -> None:
    """Render one message to an HTML file (plus .eml and .txt) and optionally open it."""
    with _reporting(debug):
        settings = load_settings(env_file, {})
        listed = subscribers or settings.subscribers
        with ExitStack() as stack:
            path = listed or stack.enter_context(sample_list())
            issue = plan_issue(
                article, path, settings, subject=subject, template_dir=template, encoding=encoding
            )
            chosen = named_recipients(issue, [subscriber]) if subscriber else list(recipients(issue, 1))
            if not chosen:
                raise InputError(f"{path}: has no valid subscriber to preview with")
            if chosen[0].line == 0 and listed:
                typer.echo(
                    f"dispatch: note: {chosen[0].email} is not on {path}; its columns are empty", err=True
                )
            inputs = _inputs(article, listed, env_file, template)
            page, eml, text = write_message(issue, chosen[0], out.resolve(), inputs=inputs)
        typer.echo(f"Preview for {chosen[0].email}: {page}\n  also {eml} and {text}")
        if open_browser and not webbrowser.open(page.as_uri()):
            typer.echo(f"dispatch: no browser could be opened here; open {page} yourself", err=True)


@app.command()
def status(
    campaign: Annotated[
        str, typer.Argument(help="One campaign's failures, deferred and unknown recipients.")
    ] = "",
    env_file: EnvFileOpt = None,
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
    prune: Annotated[
        bool, typer.Option("--prune", help="Forget campaigns that never recorded a recipient.")
    ] = False,
    debug: DebugOpt = False,
) -> None:
    """Show campaigns and their counts, or one campaign's problem recipients."""
    with _reporting(debug, as_json):
        settings = load_settings(env_file, {})
        state_dir = settings.state_dir or j.default_state_dir()
        if prune:
            pruned = j.Journal(state_dir).prune_empty()
            typer.echo(f"Forgot {len(pruned)} campaign(s) that never recorded a recipient" + (
                ": " + ", ".join(pruned) if pruned else "."), err=as_json)  # fmt: skip
        journal = j.Journal.open_existing(state_dir)
        data, text = status_report(journal, campaign, state_dir)
        typer.echo(json.dumps(data, indent=2, ensure_ascii=False) if as_json else text)


def main() -> None:
    """Console-script entry point."""
    app()
