"""What every command shares: the app, its options, settings loading, and the one place where
errors become a line on stderr and an exit code."""

from __future__ import annotations

import gc
import io
import json
import logging
import os
import sys
import traceback
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from typer.core import TyperCommand, TyperGroup

from dispatch import __version__
from dispatch.cli.console import start_up
from dispatch.errors import ConfigError, DispatchError, ExitCode, InputError
from dispatch.untrusted import shown

if TYPE_CHECKING:
    from dispatch.send.summary import RunSummary
    from dispatch.settings import Settings

EXIT_CODES = """Exit codes: 0 all done; 1 some recipients failed, were deferred or are unknown in
this run; 2 bad usage, bad input or a blocking problem (nothing sent); 3 aborted (authentication,
quota, server down, too many failures); 4 another run of this campaign is in progress (with the
state in PostgreSQL a second run joins it instead); 130 interrupted (resumable)."""


# A command-line mistake's class, reached through Typer's public BadParameter (Typer 0.28 keeps
# its click in a private module, which dispatch does not import).
UsageError: type[Exception] = next(c for c in typer.BadParameter.__mro__ if c.__name__ == "UsageError")


def usage_message(err: Any) -> str:
    """A command-line mistake in dispatch's own words, with where to read more."""
    ctx = err.ctx
    where = f"see '{ctx.command_path} --help'" if ctx is not None else "see 'dispatch --help'"
    param: Any = getattr(err, "param", None)
    name = (
        param.opts[0] if param is not None and param.opts else getattr(param, "human_readable_name", "")
    ) or ""
    if hasattr(err, "possibilities") and hasattr(err, "option_name"):  # an option it does not know
        close = f" (did you mean {' or '.join(err.possibilities)}?)" if err.possibilities else ""
        return f"{err.option_name} is not an option of this command{close}; {where}"
    if hasattr(err, "param_type"):  # a missing argument or option
        return f"{name.upper() if not name.startswith('-') else name} is missing; {where}"
    if isinstance(err, typer.BadParameter) and param is not None:
        said = err.message.lower()
        for words, wanted in (("valid integer", "a whole number"), ("valid int", "a whole number"),
                              ("valid number", "a number"), ("valid float", "a number"),
                              ("valid bool", "yes or no")):  # fmt: skip
            if words in said:
                return f"{name} must be {wanted}; {where}"
        return f"{name}: {err.message[:1].lower()}{err.message[1:]}; {where}"
    return f"{err.message[:1].lower()}{err.message[1:]}; {where}"


class _Group(TyperGroup):
    """The top-level group: usage errors are printed in one line, in dispatch's words."""

    def main(  # type: ignore[override]
        self,
        args: Any = None,
        prog_name: str | None = None,
        complete_var: str | None = None,
        standalone_mode: bool = True,
        **extra: Any,
    ) -> Any:
        try:
            rv = super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        except UsageError as err:
            if not standalone_mode:
                raise
            if type(err).__name__ == "NoArgsIsHelpError":  # a group with no command: its help, as help
                ctx = getattr(err, "ctx", None)
                typer.echo(ctx.get_help() if ctx is not None else str(err), err=True)
            else:
                typer.echo(f"dispatch: error: {usage_message(err)}", err=True)
            sys.exit(int(ExitCode.BAD_INPUT))
        except typer.Abort:  # Ctrl-C (or end of input) at a prompt: stopped by the user
            if not standalone_mode:
                raise
            typer.echo("dispatch: stopped", err=True)
            sys.exit(int(ExitCode.INTERRUPTED))
        if not standalone_mode:
            return rv
        sys.exit(rv if isinstance(rv, int) else 0)


class Command(TyperCommand):
    """A command whose usage line reads ``dispatch send [OPTIONS] ARTICLE`` (no braces)."""

    def collect_usage_pieces(self, ctx: Any) -> list[str]:
        pieces: list[str] = super().collect_usage_pieces(ctx)
        return [p[1:-1] if p.startswith("{") and p.endswith("}") else p for p in pieces]


app = typer.Typer(
    name="dispatch",
    cls=_Group,
    help="Render an article into an HTML newsletter and mail it to every subscriber, exactly once.\n\n"
    + EXIT_CODES,
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
    rich_markup_mode=None,
)


def command(app_: typer.Typer, name: str, summary: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Register a command with a summary short enough never to be cut in ``--help``."""
    return app_.command(name, cls=Command, short_help=summary)


def sub_app(name: str, summary: str) -> typer.Typer:
    """A group of commands (``dispatch suppress …``), registered under ``app``."""
    group = typer.Typer(
        name=name, help=summary, no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False,
        context_settings={"help_option_names": ["-h", "--help"]}, rich_markup_mode=None,
    )  # fmt: skip
    app.add_typer(group, name=name, short_help=summary)
    return group


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


# Options several commands share, each with one placeholder style: FILE, DIR, N, ADDRESS, TEXT.
ArticleArg = Annotated[
    Path, typer.Argument(metavar="ARTICLE", help="The article: .txt or .md.", show_default=False)
]
SubscribersOpt = Annotated[
    Path | None,
    typer.Option(
        "--subscribers", "-s", metavar="FILE", help="Subscriber CSV (default: DISPATCH_SUBSCRIBERS)."
    ),
]
EnvFileOpt = Annotated[
    Path | None, typer.Option("--env-file", metavar="FILE", help="Read settings from FILE instead of ./.env.")
]
TemplateOpt = Annotated[
    Path | None,
    typer.Option(
        "--template", metavar="DIR", help="Your template folder (missing files fall back to the built-ins)."
    ),
]
EncodingOpt = Annotated[
    str, typer.Option("--encoding", metavar="NAME", help="Encoding of the subscriber CSV.")
]
DebugOpt = Annotated[bool, typer.Option("--debug", help="Also show the traceback of an error.")]
SubjectOpt = Annotated[
    str,
    typer.Option("--subject", metavar="TEXT", help="Subject, unless the article's front matter sets one."),
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print a machine-readable summary on stdout.")]
AttachOpt = Annotated[
    list[Path] | None,
    typer.Option("--attach", metavar="FILE", help="Attach FILE to every message (repeatable)."),
]


@contextmanager
def reporting(debug: bool, as_json: bool = False) -> Iterator[None]:
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
    message = shown(message, limit=4000)  # a file name or a relay's words: never a terminal command
    typer.echo(f"dispatch: {kind}: {message}", err=True)
    if as_json:
        emit_json({"error": message, "kind": kind, "exit_code": int(code)})
    raise typer.Exit(int(code))


def refuse_negative(value: int | None, option: str) -> None:
    """``--limit -1``: an InputError in dispatch's words."""
    if value is not None and value < 0:
        raise InputError(f"{option} must be 0 or more")


# --- settings -------------------------------------------------------------------------------


class _Unparsed(logging.Handler):
    """Collects python-dotenv's "could not parse statement" warnings."""

    def __init__(self) -> None:
        super().__init__()
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(str(record.args[0]) if isinstance(record.args, tuple) and record.args else "?")


def read_env_file(path: Path) -> dict[str, str | None]:
    """The file's settings, as written (no ``${VAR}`` expansion: a password or secret holding
    ``${`` must not change); a line python-dotenv cannot parse is an error naming it, and so is
    a setting dispatch does not read (a misspelling would silently fall back to a default)."""
    from dotenv import dotenv_values

    from dispatch.files import read_regular
    from dispatch.settings import PREFIX, unknown_settings
    from dispatch.settings.table import BY_KEY as SETTING_KEYS

    try:
        text = read_regular(path, "settings", limit=1_000_000).decode("utf-8-sig")
    except UnicodeDecodeError as err:
        raise InputError(f"{path}: is not UTF-8 text; re-save the settings file as UTF-8") from err
    handler, logger = _Unparsed(), logging.getLogger("dotenv.main")
    logger.addHandler(handler)
    propagate, logger.propagate = logger.propagate, False
    try:
        values = dotenv_values(stream=io.StringIO(text), interpolate=False)  # a "$" in a password stays
    finally:
        logger.removeHandler(handler)
        logger.propagate = propagate
    if handler.lines:
        raise InputError(f"{path}: line {handler.lines[0]} is not KEY=value; fix or remove it")
    for name, close in unknown_settings(values):
        hint = f"did you mean {close}?" if close else "see .env.example for the settings dispatch reads"
        raise ConfigError(f"{path}: unknown setting {name}; {hint}")
    for name in values:  # a dispatch setting without its prefix (another program's, or a slip)
        if not name.upper().startswith(PREFIX) and PREFIX + name.upper() in SETTING_KEYS:
            typer.echo(
                f"dispatch: warning: {path} sets {name}, which dispatch does not read "
                f"(did you mean {PREFIX}{name.upper()}?)",
                err=True,
            )
    return values


def load_settings(env_file: Path | None, overrides: Mapping[str, str | None] | None = None) -> Settings:
    """Flags beat the real environment, which beats the settings file (``--env-file``, else
    ``.env`` in the working folder).

    Relative paths in the file are taken relative to the file's folder, and so is a relative
    ``DISPATCH_STATE_DIR`` from anywhere: the state is found from the newsletter, never from the
    working folder or the login.
    """
    from dispatch.settings import EXAMPLE_SECRET, PATHS, Settings, unknown_settings
    from dispatch.settings.relays import anchored

    values: dict[str, str] = {}
    path = env_file or Path(".env")
    used = env_file is not None or os.path.lexists(path)
    relative_state = False  # the file names the state folder by a relative path
    if used:
        for key, raw in read_env_file(path).items():
            if raw and key == "DISPATCH_STATE_DIR":
                relative_state = not Path(raw.strip()).expanduser().is_absolute()
            if raw and key in PATHS:  # relative to the file (each relay's, when several), for cron
                raw = anchored(key, raw, path.resolve().parent)  # noqa: PLW2901
            if raw is not None:
                values[key] = raw
        url = values.get("DISPATCH_STATE_URL") or ""
        in_url = url.partition("@")[0].count(":") > 1 or "password=" in url  # postgresql://user:PASSWORD@
        unsubscribe = (values.get("DISPATCH_UNSUBSCRIBE_SECRET") or "").strip()  # forges unsubscribes
        secret = (
            values.get("DISPATCH_SMTP_PASSWORD")
            or values.get("DISPATCH_OAUTH_CLIENT_SECRET")
            or values.get("DISPATCH_IMAP_PASSWORD")
            or in_url
            or unsubscribe not in ("", EXAMPLE_SECRET)  # (the published example is no secret)
        )
        if secret and path.stat().st_mode & 0o077:
            typer.echo(
                f"dispatch: warning: {path} holds a password or secret others can read; chmod 600 {path}",
                err=True,
            )
    environment = {k: v for k, v in os.environ.items() if k.startswith("DISPATCH_")}
    for name, close in unknown_settings(os.environ):
        hint = f" (did you mean {close}?)" if close else ""
        typer.echo(
            f"dispatch: warning: the environment sets {name}, which dispatch does not read{hint}", err=True
        )
    values.update(environment)
    values.update({k: v for k, v in (overrides or {}).items() if v is not None})
    given = frozenset(k for k, v in environment.items() if v)
    file = path.absolute() if used else None
    relative_state = relative_state and not (environment.get("DISPATCH_STATE_DIR") or "").strip()
    return Settings.from_mapping(
        values, settings_file=file, from_environment=given, relative_state=relative_state
    )


def state_dir(settings: Settings) -> Path:
    """The state folder (see :attr:`dispatch.settings.Settings.state`)."""
    return settings.state.path


def state_to_write(settings: Settings, *, ask: bool, sending: bool = False) -> Path:
    """The state folder for a command that writes into it. A brand-new state nobody named
    (no DISPATCH_STATE_DIR, nothing there yet), or for a send one named by a relative path, is
    refused, exit 2, naming the path and the setting, unless the person at the terminal confirms
    (``ask``): a state that appears out of nowhere knows neither who already has the issue nor
    who unsubscribed."""
    from dispatch.state.location import new_state_problem

    problem = new_state_problem(settings.state, sending=sending)
    if problem is None:
        return settings.state.path
    if ask and sys.stdin is not None and sys.stdin.isatty():
        typer.echo(f"dispatch: {problem}", err=True)
        if typer.confirm(f"Start a new, empty state at {settings.state.path}?", default=False):
            return settings.state.path
        typer.echo("Stopped: nothing was changed.", err=True)
        raise typer.Exit(int(ExitCode.BAD_INPUT))
    raise ConfigError(problem)


def subscribers_path(option: Path | None, settings: Settings) -> Path:
    """``-s FILE``, else DISPATCH_SUBSCRIBERS."""
    path = option or settings.subscribers
    if path is None:
        raise ConfigError("no subscriber list: pass -s/--subscribers FILE or set DISPATCH_SUBSCRIBERS")
    return path


def sender(settings: Settings) -> str:
    """The From address, for confirmations and summaries."""
    return settings.sender.addr_spec if settings.sender is not None else "(no DISPATCH_FROM)"


def inputs(*paths: Path | None) -> list[Path]:
    """Files a run reads, which no output may replace (a template folder: every file in it)."""
    found: list[Path] = []
    for path in paths:
        if path is None:
            continue
        found += [p for p in path.rglob("*") if p.is_file()][:1000] if path.is_dir() else [path]
    return found


def emit_json(data: Any) -> None:
    """One JSON document on one line of stdout: a cron log of many runs reads line by line."""
    typer.echo(json.dumps(data, ensure_ascii=False, separators=(",", ":")))


def print_summary(summary: RunSummary, as_json: bool, text: str) -> None:
    """The report on stdout, or JSON on stdout and the report on stderr."""
    if as_json:
        emit_json(summary.as_json())
        if text:
            typer.echo(text, err=True)
    else:
        typer.echo(text)


def main() -> None:
    """Console-script entry point."""
    start_up()
    if isinstance(sys.stdout, io.TextIOWrapper):  # a path that is not UTF-8 prints as its own bytes
        sys.stdout.reconfigure(errors="surrogateescape")  # (strict, in a UTF-8 locale, crashed)
    try:
        app()
    finally:
        # The process is about to end and the OS takes back its memory: spare the interpreter's
        # last garbage collections a walk over every object (lxml, cssutils, Jinja…), which
        # cost ~0.1 s after each run. Files, sockets and the journal are closed by then.
        gc.freeze()
