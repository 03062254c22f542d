"""The ``dispatch`` command as a new user meets it: help, dry runs, previews, test sends,
refusals, one-line errors for every kind of bad input, and where settings come from.

Everything runs for real: files in tmp_path, the Typer app in-process (``invoke``) or as a
subprocess, and real aiosmtpd servers on 127.0.0.1 where mail could leave.
"""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from email import message_from_bytes, policy
from email.message import EmailMessage
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import pytest

from dispatch.cli.common import load_settings
from dispatch.settings import Rate
from tests.conftest import EXAMPLE_ARTICLE
from tests.smtp_servers import Server

Invoke = Callable[..., Any]
EnvFile = Callable[..., Path]
WriteFile = Callable[..., Path]

SUBJECT = "As elections approach, the US walk a thin line in Iraq"

# Line 1 is the header; the reasons below are what the summary must report for lines 4-6.
MESSY_LIST = (
    "email,name,status,city\n"
    "ann@example.org,Ann Example,,Paris\n"  # line 2
    "bob@example.com,Bob Example,subscribed,Oslo\n"  # line 3
    "ANN@example.org,Ann Again,,Paris\n"  # line 4: duplicate of line 2
    "not-an-address,Broken Row,,Nowhere\n"  # line 5: invalid
    "dee@example.org,Dee Example,unsubscribed,Rome\n"  # line 6: unsubscribed
    "cy@example.org,,,Lima\n"  # line 7: valid, no name
)
MESSY_VALID = ["ann@example.org", "bob@example.com", "cy@example.org"]


def parse(data: bytes) -> EmailMessage:
    return message_from_bytes(data, policy=policy.default)  # type: ignore[return-value]


def one_error_line(result: Any) -> str:
    """The single stderr line of a failed run (asserting there is exactly one)."""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, f"expected one line on stderr, got: {result.stderr!r}"
    assert "Traceback" not in result.output
    return lines[0]


def send_args(article: Path, subscribers: Path, settings: Path, *extra: str | Path) -> list[str | Path]:
    return ["send", article, "-s", subscribers, "--env-file", settings, *extra]


# --------------------------------------------------------------------------- version and help


def test_version_prints_the_package_version(invoke: Invoke) -> None:
    import dispatch

    result = invoke("--version")
    assert result.exit_code == 0
    assert result.stdout.strip() == f"dispatch {dispatch.__version__}"


def test_help_lists_the_commands_and_every_exit_code(invoke: Invoke) -> None:
    result = invoke("--help")
    assert result.exit_code == 0
    text = " ".join(result.stdout.split())
    for command in ("send", "preview", "status"):
        assert re.search(rf"^\s+{command}\s", result.stdout, re.MULTILINE), command
    for code, meaning in (
        ("0", "done"),
        ("1", "failed"),
        ("2", "bad"),
        ("3", "abort"),
        ("4", "progress"),
        ("130", "interrupt"),
    ):
        assert re.search(rf"\b{code}\b[^;]*{meaning}", text, re.IGNORECASE), (code, text)


def test_send_help_documents_the_options_a_new_user_needs(invoke: Invoke) -> None:
    result = invoke("send", "--help")
    assert result.exit_code == 0
    for option in (
        "--subscribers",
        "--dry-run",
        "--out",
        "--yes",
        "--subject",
        "--template",
        "--limit",
        "--to",
        "--env-file",
        "--json",
    ):
        assert option in result.stdout, option


@pytest.mark.parametrize("how", ["python -m dispatch", "console script"])
def test_the_command_runs_as_a_subprocess(how: str, tmp_path: Path) -> None:
    if how == "console script":
        command = [str(Path(sys.executable).with_name("dispatch"))]
    else:
        command = [sys.executable, "-m", "dispatch"]
    env = {k: v for k, v in os.environ.items() if not k.startswith("DISPATCH_")}
    done = subprocess.run(
        [*command, "--help"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert "send" in done.stdout
    assert "preview" in done.stdout
    assert "Exit codes" in done.stdout
    assert done.stderr == ""


# --------------------------------------------------------------------------- dry runs


@pytest.fixture
def no_network(monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    """Make every outgoing connection and name lookup fail, and record the attempts."""
    attempts: list[Any] = []

    def refuse(*args: Any, **kwargs: Any) -> Any:
        attempts.append(args[1:] if len(args) > 1 else args)
        raise OSError("network access during a dry run")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket.socket, "connect_ex", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    return attempts


def test_dry_run_with_out_writes_every_message_and_an_index(
    *,
    invoke: Invoke,
    article: Path,
    write_file: WriteFile,
    env_file: EnvFile,
    tmp_path: Path,
    no_network: list[Any],
) -> None:
    subscribers = write_file("messy.csv", MESSY_LIST)
    out = tmp_path / "out"
    result = invoke(*send_args(article, subscribers, env_file(), "--dry-run", "--out", out))
    assert result.exit_code == 0, result.output
    assert no_network == [], "a dry run must not open any network connection"

    emls = sorted(out.glob("*.eml"))
    messages = [parse(p.read_bytes()) for p in emls]
    assert sorted(str(m["To"].addresses[0].addr_spec) for m in messages) == MESSY_VALID
    for path, msg in zip(emls, messages, strict=True):
        assert msg.get_content_type() == "multipart/alternative"
        parts = [p.get_content_type() for p in msg.iter_parts()]
        assert parts == ["text/plain", "text/html"]
        assert msg["Subject"].strip() == SUBJECT
        html_page = path.with_suffix(".html")
        assert html_page.is_file()
        assert str(msg["To"].addresses[0].addr_spec) in html_page.read_text(encoding="utf-8")

    index = (out / "index.html").read_text(encoding="utf-8")
    links = {unquote(link) for link in re.findall(r'href="([^"]+\.html)"', index)}
    assert sorted(links) == sorted(p.with_suffix(".html").name for p in emls)
    assert all((out / link).is_file() for link in links)


def test_dry_run_summary_tells_a_new_user_what_would_happen(
    invoke: Invoke, article: Path, write_file: WriteFile, env_file: EnvFile, tmp_path: Path
) -> None:
    subscribers = write_file("messy.csv", MESSY_LIST)
    result = invoke(*send_args(article, subscribers, env_file(), "--dry-run", "--out", tmp_path / "out"))
    assert result.exit_code == 0, result.output
    out = result.stdout
    assert SUBJECT in out
    assert re.search(r"Recipients:\s+3\b", out), out
    reported = dict(re.findall(r"^\s+line (\d+): (.*)$", out, re.MULTILINE))
    assert sorted(reported) == ["4", "5", "6"], out
    assert "duplicate" in reported["4"]
    assert "line 2" in reported["4"]
    assert "not-an-address" in reported["5"]
    assert "unsubscribed" in reported["6"]
    assert re.search(r"HTML size:\s+[\d.]+\s*(KB|B)\b", out), out
    assert str(tmp_path / "out") in out
    last = out.strip().splitlines()[-1]
    assert "without --dry-run" in last
    assert result.stderr == ""


def test_dry_run_writes_no_journal(
    invoke: Invoke, article: Path, subscribers: Path, env_file: EnvFile, tmp_path: Path
) -> None:
    settings = env_file()
    assert invoke(*send_args(article, subscribers, settings, "--dry-run")).exit_code == 0
    status = invoke("status", "--env-file", settings, "--json")
    assert status.exit_code == 0, status.output
    assert json.loads(status.stdout)["campaigns"] == []


def test_dry_run_without_out_previews_the_first_few_in_the_working_folder(
    invoke: Invoke, article: Path, write_file: WriteFile, env_file: EnvFile, no_network: list[Any]
) -> None:
    rows = "".join(f"reader{n}@example.org,Reader {n}\n" for n in range(12))
    subscribers = write_file("many.csv", "email,name\n" + rows)
    result = invoke(*send_args(article, subscribers, env_file(), "--dry-run"))
    assert result.exit_code == 0, result.output
    assert no_network == []
    folder = Path.cwd() / "dispatch-preview"
    written = sorted(folder.glob("*.eml"))
    assert 1 <= len(written) <= 5
    assert len(sorted(folder.glob("*.html"))) == len(written) + 1  # plus index.html
    assert re.search(r"Recipients:\s+12\b", result.stdout), result.stdout
    assert str(folder) in result.stdout


# --------------------------------------------------------------------------- bad input

EXAMPLE_TEXT = EXAMPLE_ARTICLE.read_text(encoding="utf-8")
GOOD_LIST = "email,name,city\nann@example.org,Ann Example,Paris\nbob@example.com,Bob Example,Oslo\n"


@dataclass(frozen=True)
class Bad:
    """One kind of bad input and what its one-line error must name."""

    id: str
    expect: tuple[str, ...]
    article: str | bytes | None = EXAMPLE_TEXT  # None: the file does not exist
    article_name: str = "issue.txt"
    subscribers: str | bytes | None = GOOD_LIST  # None: the file does not exist
    settings: dict[str, str] = field(default_factory=dict)
    templates: dict[str, str] | None = None  # files of a --template folder
    missing_template_dir: bool = False
    missing_env_file: bool = False
    extra: tuple[str, ...] = ()
    preview_ok: bool = False  # a preview needs no sending settings: it uses marked samples


LONG_GOOD_ROWS = "".join(f"reader{n:05d}@example.org,Reader {n}\n" for n in range(3000))

BAD_INPUTS = [
    Bad("missing article", ("nowhere.txt",), article=None, article_name="nowhere.txt"),
    Bad("empty article", ("issue.txt", "empty"), article=""),
    Bad("whitespace-only article", ("issue.txt", "empty"), article=" \n\n\t\n"),
    Bad("binary article", ("issue.txt", "binary"), article=b"\x89PNG\r\n\x1a\n\x00\x00\x00IHDR"),
    Bad(
        "non-UTF-8 article",
        ("issue.txt", "UTF-8"),
        article="Title\n\nCaf\xe9 cr\xe8me, a paragraph.\n".encode("latin-1"),
    ),
    Bad("unknown extension", ("issue.docx",), article_name="issue.docx"),
    Bad("article is a folder", ("issue.txt",), article=None, article_name="issue.txt/"),
    Bad("missing list", ("list.csv",), subscribers=None),
    Bad("list without email column", ("list.csv", "email"), subscribers="name,city\nAnn,Paris\nBob,Oslo\n"),
    Bad("empty list", ("list.csv", "empty"), subscribers=""),
    Bad(
        "non-UTF-8 list",
        ("list.csv", "UTF-8", "--encoding"),
        subscribers="email,name\nann@example.org,Jos\xe9\n".encode("latin-1"),
    ),
    Bad(
        "non-UTF-8 byte deep in a long list",
        ("list.csv", "UTF-8"),
        subscribers=("email,name\n" + LONG_GOOD_ROWS).encode() + b"late@example.org,Ren\xe9\n",
    ),
    Bad("missing DISPATCH_FROM", ("DISPATCH_FROM",), settings={"DISPATCH_FROM": ""}, preview_ok=True),
    Bad("invalid DISPATCH_FROM", ("DISPATCH_FROM",), settings={"DISPATCH_FROM": "not an address"}),
    Bad(
        "two addresses in DISPATCH_FROM",
        ("DISPATCH_FROM",),
        settings={"DISPATCH_FROM": "a@example.org, b@example.org"},
    ),
    Bad(
        "no unsubscribe setting",
        ("DISPATCH_UNSUBSCRIBE",),
        settings={"DISPATCH_UNSUBSCRIBE_URL": "", "DISPATCH_UNSUBSCRIBE_MAILTO": ""},
        preview_ok=True,
    ),
    Bad(
        "http unsubscribe URL",
        ("DISPATCH_UNSUBSCRIBE_URL", "https"),
        settings={"DISPATCH_UNSUBSCRIBE_URL": "http://example.org/unsubscribe?email={email}"},
    ),
    Bad("port not a number", ("DISPATCH_SMTP_PORT",), settings={"DISPATCH_SMTP_PORT": "smtp"}),
    Bad("port zero", ("DISPATCH_SMTP_PORT",), settings={"DISPATCH_SMTP_PORT": "0"}),
    Bad("unknown security", ("DISPATCH_SMTP_SECURITY",), settings={"DISPATCH_SMTP_SECURITY": "tls-please"}),
    Bad("bad rate", ("DISPATCH_RATE",), settings={"DISPATCH_RATE": "fast"}),
    Bad("missing --env-file", ("missing.env",), missing_env_file=True),
    Bad(
        "template syntax error",
        ("email.html line 3",),
        templates={"email.html": "<html>\n<body>\n{% if %}\n</body></html>\n"},
    ),
    Bad(
        "text template syntax error",
        ("email.txt line 2",),
        templates={"email.txt": "{{ article.title }}\n{% for %}\n"},
    ),
    Bad(
        "undefined template variable",
        ("email.html", "no_such_thing"),
        templates={"email.html": "<html><body>\n{{ no_such_thing }}\n</body></html>\n"},
    ),
    Bad(
        "unknown subscriber column",
        ("email.html", "shoe_size"),
        templates={"email.html": "<html><body>{{ subscriber.shoe_size }}</body></html>\n"},
    ),
    Bad(
        "template failing for a subscriber",
        ("email.html line 2", "no element 40"),
        templates={
            "email.html": "<html><body>\n{% if subscriber.name %}{{ name[40] }}{% endif %}\n</body></html>\n"
        },
    ),
    Bad("missing template folder", ("no-such-templates",), missing_template_dir=True),
    Bad("--to not an address", ("not-an-address",), extra=("--to", "not-an-address")),
]


def _bad_command(
    *, case: Bad, mode: str, tmp_path: Path, write_file: WriteFile, env_file: EnvFile, server: Server
) -> list[str | Path]:
    article = tmp_path / case.article_name
    if case.article is not None:
        write_file(case.article_name, case.article)
    elif case.article_name.endswith("/"):
        article.mkdir()
    subscribers = tmp_path / "list.csv"
    if case.subscribers is not None:
        write_file("list.csv", case.subscribers)
    settings = (
        tmp_path / "missing.env" if case.missing_env_file else env_file(**{**server.env(), **case.settings})
    )
    args: list[str | Path] = [article, "-s", subscribers, "--env-file", settings]
    if case.templates is not None:
        for name, text in case.templates.items():
            write_file(f"mytemplates/{name}", text)
        args += ["--template", tmp_path / "mytemplates"]
    if case.missing_template_dir:
        args += ["--template", tmp_path / "no-such-templates"]
    if mode == "preview":
        return ["preview", *args, "--out", tmp_path / "p" / "preview.html"]
    return ["send", *args, *case.extra, mode]


BAD_RUNS = [
    pytest.param(case, mode, id=f"{case.id} [{mode.lstrip('-')}]")
    for case in BAD_INPUTS
    for mode in ("--dry-run", "--yes", "preview")
    if not (mode == "preview" and (case.extra or case.preview_ok))  # --to exists only on send
]


@pytest.mark.parametrize(("case", "mode"), BAD_RUNS)
def test_bad_input_is_one_line_exit_2_and_sends_nothing(
    *,
    case: Bad,
    mode: str,
    invoke: Invoke,
    tmp_path: Path,
    write_file: WriteFile,
    env_file: EnvFile,
    plain_server: Server,
) -> None:
    command = _bad_command(
        case=case, mode=mode, tmp_path=tmp_path, write_file=write_file, env_file=env_file, server=plain_server
    )
    result = invoke(*command)
    assert result.exit_code == 2, result.output
    line = one_error_line(result)
    assert line.startswith("dispatch: error:"), line
    for needle in case.expect:
        assert needle in line, (needle, line)
    assert plain_server.received == []
    assert not (tmp_path / "p").exists(), "no preview is written for bad input"
    assert not (Path.cwd() / "dispatch-preview").exists()


@pytest.mark.parametrize(
    "args",
    [
        pytest.param(["--limit", "-1"], id="negative limit"),
        pytest.param(["--connections", "0"], id="zero connections"),
        pytest.param(["--no-such-option"], id="unknown option"),
    ],
)
def test_bad_usage_exits_2_without_sending(
    *,
    args: list[str],
    invoke: Invoke,
    article: Path,
    subscribers: Path,
    env_file: EnvFile,
    plain_server: Server,
) -> None:
    result = invoke(*send_args(article, subscribers, env_file(**plain_server.env()), "--yes", *args))
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    assert result.stderr.strip()
    assert plain_server.received == []


# --------------------------------------------------------------------------- confirmation


def test_without_a_terminal_send_refuses_unless_yes(
    invoke: Invoke, article: Path, subscribers: Path, env_file: EnvFile, plain_server: Server
) -> None:
    settings = env_file(**plain_server.env())
    result = invoke(*send_args(article, subscribers, settings))
    assert result.exit_code == 2, result.output
    assert "--yes" in one_error_line(result)
    assert plain_server.received == []
    status = invoke("status", "--env-file", settings, "--json")
    assert json.loads(status.stdout)["campaigns"] == [], "a refused send records nothing"


def test_without_a_terminal_a_test_send_also_needs_yes(
    invoke: Invoke, article: Path, subscribers: Path, env_file: EnvFile, plain_server: Server
) -> None:
    settings = env_file(**plain_server.env())
    result = invoke(*send_args(article, subscribers, settings, "--to", "ann@example.org"))
    assert result.exit_code == 2
    assert "--yes" in one_error_line(result)
    assert plain_server.received == []


# --------------------------------------------------------------------------- user templates

USER_HTML = """<!DOCTYPE html>
<html><head><style>{% include "style.css" %}</style></head>
<body><p class="mine">Hello {{ subscriber.name | otherwise('friend') }} from {{ subscriber.city }}!</p>
<h1>{{ article.title }}</h1>
<p><a href="{{ unsubscribe_url }}">Unsubscribe</a> {{ postal_address }}</p></body></html>
"""


def test_user_template_overrides_html_and_falls_back_to_builtin_text(
    invoke: Invoke, article: Path, write_file: WriteFile, env_file: EnvFile, tmp_path: Path
) -> None:
    template = write_file("mine/email.html", USER_HTML).parent
    subscribers = write_file(
        "list.csv", "email,name,city\nann@example.org,Ann Example,Paris\nzed@example.com,,Oslo\n"
    )
    out = tmp_path / "out"
    result = invoke(
        *send_args(article, subscribers, env_file(), "--dry-run", "--out", out, "--template", template)
    )
    assert result.exit_code == 0, result.output
    by_rcpt = {
        str(m["To"].addresses[0].addr_spec): m for m in (parse(p.read_bytes()) for p in out.glob("*.eml"))
    }
    assert set(by_rcpt) == {"ann@example.org", "zed@example.com"}
    for email, greeting in (
        ("ann@example.org", "Hello Ann Example from Paris!"),
        ("zed@example.com", "Hello friend from Oslo!"),
    ):
        msg = by_rcpt[email]
        html = msg.get_body(("html",)).get_content()
        text = msg.get_body(("plain",)).get_content()
        assert greeting in html
        assert 'class="masthead"' not in html, "the built-in HTML must not be used"
        assert f"You receive this newsletter at {email}" in text, "built-in email.txt expected"
        assert "https://example.org/unsubscribe?email=" in html


# --------------------------------------------------------------------------- test sends


@pytest.mark.parametrize("address", ["ann@example.org", "zed@example.com"], ids=["listed", "unlisted"])
def test_to_sends_only_to_that_address_marked_as_a_test(
    *,
    address: str,
    invoke: Invoke,
    article: Path,
    subscribers: Path,
    env_file: EnvFile,
    plain_server: Server,
) -> None:
    settings = env_file(**plain_server.env())
    result = invoke(*send_args(article, subscribers, settings, "--to", address, "--yes"))
    assert result.exit_code == 0, result.output
    assert [r.rcpt_tos for r in plain_server.received] == [[address]]
    msg = plain_server.received[0].message
    assert msg["Subject"].strip().startswith("[TEST]")
    assert SUBJECT in msg["Subject"]
    # A test send leaves the campaign untouched: the real send still reaches everyone.
    real = invoke(*send_args(article, subscribers, settings, "--yes"))
    assert real.exit_code == 0, real.output
    assert sorted(r.rcpt_tos[0] for r in plain_server.received[1:]) == [
        "ann@example.org",
        "bob@example.com",
        "cy@example.org",
    ]
    assert not any(r.message["Subject"].startswith("[TEST]") for r in plain_server.received[1:])


# --------------------------------------------------------------------------- preview


@pytest.mark.parametrize(
    ("chosen", "city"),
    [("bob@example.com", "Oslo"), ("CY@example.org", "Rome"), ("", "Paris")],
    ids=["named", "other case", "default first row"],
)
def test_preview_writes_html_eml_and_text_for_one_subscriber(
    *,
    chosen: str,
    city: str,
    invoke: Invoke,
    article: Path,
    subscribers: Path,
    write_file: WriteFile,
    env_file: EnvFile,
    tmp_path: Path,
    no_network: list[Any],
) -> None:
    template = write_file("mine/email.html", USER_HTML).parent
    out = tmp_path / "pv" / "x.html"
    args = [
        "preview",
        article,
        "-s",
        subscribers,
        "--out",
        out,
        "--env-file",
        env_file(),
        "--template",
        template,
    ]
    if chosen:
        args += ["--subscriber", chosen]
    result = invoke(*args)
    assert result.exit_code == 0, result.output
    expected = (chosen or "ann@example.org").lower()
    html = out.read_text(encoding="utf-8")
    text = out.with_suffix(".txt").read_text(encoding="utf-8")
    msg = parse(out.with_suffix(".eml").read_bytes())
    assert f"from {city}!" in html
    assert expected in text
    assert str(msg["To"].addresses[0].addr_spec).lower() == expected
    assert msg.get_body(("html",)).get_content().replace("\r\n", "\n").strip() == html.strip()
    assert str(out) in result.stdout
    assert no_network == []


# --------------------------------------------------------------------------- limit and status


def test_limit_sends_that_many_and_status_shows_the_counts(
    invoke: Invoke, article: Path, subscribers: Path, env_file: EnvFile, plain_server: Server
) -> None:
    settings = env_file(**plain_server.env())
    result = invoke(*send_args(article, subscribers, settings, "--yes", "--limit", "2", "--json"))
    assert result.exit_code == 0, result.output
    assert len(plain_server.received) == 2
    summary = json.loads(result.stdout)
    assert summary["sent"] == 2
    campaign = summary["campaign"]

    listing = invoke("status", "--env-file", settings)
    assert listing.exit_code == 0, listing.output
    assert campaign in listing.stdout
    assert "sent 2" in listing.stdout

    one = invoke("status", campaign, "--env-file", settings, "--json")
    assert one.exit_code == 0, one.output
    data = json.loads(one.stdout)
    assert data["campaign"] == campaign
    assert data["sent"] == 2
    assert data["recipients"] == 3
    assert data["failed"] == 0
    assert data["problems"] == []

    rest = invoke(*send_args(article, subscribers, settings, "--yes"))
    assert rest.exit_code == 0, rest.output
    assert sorted(r.rcpt_tos[0] for r in plain_server.received) == [
        "ann@example.org",
        "bob@example.com",
        "cy@example.org",
    ]
    again = json.loads(invoke("status", campaign, "--env-file", settings, "--json").stdout)
    assert again["sent"] == 3


def test_status_of_an_unknown_campaign_is_one_line_exit_2(
    invoke: Invoke, article: Path, subscribers: Path, env_file: EnvFile, plain_server: Server
) -> None:
    settings = env_file(**plain_server.env())
    assert invoke(*send_args(article, subscribers, settings, "--yes")).exit_code == 0
    result = invoke("status", "no-such-campaign", "--env-file", settings)
    assert result.exit_code == 2
    assert "no-such-campaign" in one_error_line(result)


# --------------------------------------------------------------------------- settings precedence


@pytest.mark.parametrize(
    ("in_file", "in_env", "flag", "expected"),
    [
        ("1/s", None, None, Rate(1, 1)),
        ("1/s", "2/min", None, Rate(2, 60)),
        ("1/s", "2/min", "3/h", Rate(3, 3600)),
        (None, None, "4/s", Rate(4, 1)),
    ],
    ids=["file", "env beats file", "flag beats both", "flag alone"],
)
def test_rate_precedence_flag_env_file(
    *,
    in_file: str | None,
    in_env: str | None,
    flag: str | None,
    expected: Rate,
    env_file: EnvFile,
    runner: Any,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    path = env_file(**({"DISPATCH_RATE": in_file} if in_file else {}))
    if in_env:
        monkeypatch.setenv("DISPATCH_RATE", in_env)
    settings = load_settings(path, {"DISPATCH_RATE": flag, "DISPATCH_CONNECTIONS": None})
    assert settings.rate == expected


def test_dotenv_in_the_working_folder_is_read_and_env_file_replaces_it(
    env_file: EnvFile, runner: Any
) -> None:
    Path(".env").write_text("DISPATCH_CONNECTIONS=3\nDISPATCH_SMTP_HOST=from-dotenv\n")
    assert load_settings(None, {}).connections == 3
    chosen = env_file(DISPATCH_CONNECTIONS="5")
    settings = load_settings(chosen, {})
    assert settings.connections == 5
    assert settings.smtp_host == "localhost", "--env-file is used instead of ./.env"


def test_real_environment_beats_the_env_file_in_a_send(
    *,
    invoke: Invoke,
    article: Path,
    subscribers: Path,
    env_file: EnvFile,
    plain_server: Server,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The file points at a port nothing listens on (and is malformed); the environment fixes it.
    settings = env_file(**{**plain_server.env(), "DISPATCH_SMTP_PORT": "not-a-port"})
    monkeypatch.setenv("DISPATCH_SMTP_PORT", str(plain_server.port))
    result = invoke(*send_args(article, subscribers, settings, "--yes"))
    assert result.exit_code == 0, result.output
    assert len(plain_server.received) == 3


@pytest.mark.parametrize(
    ("setting", "flag"),
    [("DISPATCH_RATE", ["--rate", "1000/s"]), ("DISPATCH_CONNECTIONS", ["--connections", "2"])],
    ids=["rate", "connections"],
)
def test_command_line_option_beats_environment_and_env_file(
    *,
    setting: str,
    flag: list[str],
    invoke: Invoke,
    article: Path,
    subscribers: Path,
    env_file: EnvFile,
    plain_server: Server,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    settings = env_file(**{**plain_server.env(), setting: "nonsense-from-file"})
    monkeypatch.setenv(setting, "nonsense-from-env")
    refused = invoke(*send_args(article, subscribers, settings, "--yes"))
    assert refused.exit_code == 2
    line = one_error_line(refused)
    assert setting in line
    assert "nonsense-from-env" in line, "the environment value must win over the file"
    assert plain_server.received == []

    result = invoke(*send_args(article, subscribers, settings, "--yes", *flag))
    assert result.exit_code == 0, result.output
    assert len(plain_server.received) == 3


def test_a_slow_rate_from_the_environment_is_overridden_by_the_flag(
    *,
    invoke: Invoke,
    article: Path,
    subscribers: Path,
    env_file: EnvFile,
    plain_server: Server,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # 1/min for three messages would take two minutes; the flag makes it instant.
    settings = env_file(**{**plain_server.env(), "DISPATCH_RATE": "1/min"})
    monkeypatch.setenv("DISPATCH_RATE", "1/min")
    start = time.monotonic()
    result = invoke(*send_args(article, subscribers, settings, "--yes", "--rate", "500/s"))
    assert result.exit_code == 0, result.output
    assert len(plain_server.received) == 3
    assert time.monotonic() - start < 20


# --------------------------------------------------------------------------- secrets


def test_smtp_password_never_appears_in_any_output(
    *,
    invoke: Invoke,
    article: Path,
    subscribers: Path,
    env_file: EnvFile,
    starttls_server: Server,
    tmp_path: Path,
) -> None:
    password = starttls_server.password
    settings = env_file(**starttls_server.env())
    settings.chmod(0o644)  # also triggers the "others can read it" warning
    outputs = []
    runs: list[list[str | Path]] = [
        send_args(article, subscribers, settings, "--dry-run", "--out", tmp_path / "out"),
        send_args(article, subscribers, settings, "--dry-run", "--json"),
        send_args(article, subscribers, settings, "--to", "ann@example.org", "--yes"),
        send_args(article, subscribers, settings, "--yes", "--json"),
        ["status", "--env-file", settings],
        ["status", "--env-file", settings, "--json"],
        ["preview", article, "-s", subscribers, "--env-file", settings, "--out", tmp_path / "pv.html"],
    ]
    for args in runs:
        result = invoke(*args)
        assert result.exit_code == 0, result.output
        outputs.append(result.output)
    assert any("chmod 600" in o for o in outputs), "the readable .env warning is shown"
    assert len(starttls_server.received) == 4
    for text in outputs:
        assert password not in text
    written = [p for p in tmp_path.rglob("*") if p.is_file() and p.suffix != ".env"]
    for path in written:
        assert password.encode() not in path.read_bytes(), path


@pytest.mark.parametrize("fault", ["wrong password", "port closed"])
def test_smtp_password_not_shown_when_sending_fails(
    *,
    fault: str,
    invoke: Invoke,
    article: Path,
    subscribers: Path,
    env_file: EnvFile,
    starttls_server: Server,
) -> None:
    secret = "Wr0ng-s3cret-xyz"
    overrides = {**starttls_server.env(), "DISPATCH_SMTP_PASSWORD": secret}
    if fault == "port closed":
        from tests.smtp_servers import free_port

        overrides["DISPATCH_SMTP_PORT"] = str(free_port())
        overrides["DISPATCH_RETRIES"] = "0"
    result = invoke(*send_args(article, subscribers, env_file(**overrides), "--yes"))
    assert result.exit_code == 3, result.output
    line = one_error_line(result)
    assert secret not in result.output
    assert secret not in line
    assert starttls_server.received == []


# --------------------------------------------------------------------------- more of a new user's path


def test_subscriber_list_from_settings_when_s_is_omitted(
    invoke: Invoke, article: Path, subscribers: Path, env_file: EnvFile, tmp_path: Path
) -> None:
    settings = env_file(DISPATCH_SUBSCRIBERS=str(subscribers))
    result = invoke("send", article, "--env-file", settings, "--dry-run", "--out", tmp_path / "o")
    assert result.exit_code == 0, result.output
    assert len(list((tmp_path / "o").glob("*.eml"))) == 3


def test_no_subscriber_list_anywhere_is_one_line_exit_2(
    invoke: Invoke, article: Path, env_file: EnvFile, plain_server: Server
) -> None:
    result = invoke("send", article, "--env-file", env_file(**plain_server.env()), "--yes")
    assert result.exit_code == 2
    line = one_error_line(result)
    assert "--subscribers" in line
    assert "DISPATCH_SUBSCRIBERS" in line
    assert plain_server.received == []


def test_dry_run_out_that_is_a_file_is_one_line_exit_2(
    invoke: Invoke, article: Path, subscribers: Path, env_file: EnvFile, write_file: WriteFile
) -> None:
    target = write_file("taken", "not a folder")
    result = invoke(*send_args(article, subscribers, env_file(), "--dry-run", "--out", target))
    assert result.exit_code == 2
    assert str(target) in one_error_line(result)
    assert target.read_text() == "not a folder"


@pytest.mark.parametrize(
    ("name", "content", "flag", "expected"),
    [
        ("plain.txt", "The Title Line\n\nA first paragraph.\n", "", "The Title Line"),
        (
            "plain.txt",
            "The Title Line\n\nA first paragraph.\n",
            "Weekly № 7 — ünïcode",
            "Weekly № 7 — ünïcode",
        ),
        (
            "front.md",
            "---\ntitle: T\nsubject: From front matter\n---\nBody.\n",
            "From the flag",
            "From front matter",
        ),
    ],
    ids=["title", "--subject", "front matter beats --subject"],
)
def test_subject_comes_from_front_matter_then_flag_then_title(
    *,
    name: str,
    content: str,
    flag: str,
    expected: str,
    invoke: Invoke,
    subscribers: Path,
    write_file: WriteFile,
    env_file: EnvFile,
    tmp_path: Path,
) -> None:
    article = write_file(name, content)
    extra = ["--subject", flag] if flag else []
    out = tmp_path / "o"
    result = invoke(*send_args(article, subscribers, env_file(), "--dry-run", "--out", out, *extra))
    assert result.exit_code == 0, result.output
    assert re.search(rf"Subject:\s+{re.escape(expected)}$", result.stdout, re.MULTILINE)
    subjects = {parse(p.read_bytes())["Subject"].strip() for p in out.glob("*.eml")}
    assert subjects == {expected}


def test_dry_run_json_is_machine_readable_on_stdout(
    invoke: Invoke, article: Path, write_file: WriteFile, env_file: EnvFile, tmp_path: Path
) -> None:
    subscribers = write_file("messy.csv", MESSY_LIST)
    result = invoke(*send_args(article, subscribers, env_file(), "--dry-run", "--json"))
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["dry_run"] is True
    assert data["pending"] == 3
    assert data["sent"] == 0
    assert data["skipped"] == 3
    assert [row["line"] for row in data["skipped_rows"]] == [4, 5, 6]


@pytest.mark.parametrize(
    ("rows", "bad_line"),
    [("", 2), (LONG_GOOD_ROWS, 3002)],
    ids=["second line", "deep in a long list"],
)
def test_non_utf8_list_error_names_the_line_with_the_bad_byte(
    *,
    rows: str,
    bad_line: int,
    invoke: Invoke,
    article: Path,
    write_file: WriteFile,
    env_file: EnvFile,
) -> None:
    subscribers = write_file("list.csv", ("email,name\n" + rows).encode() + b"x@example.org,Ren\xe9\n")
    result = invoke(*send_args(article, subscribers, env_file(), "--dry-run"))
    assert result.exit_code == 2
    line = one_error_line(result)
    assert re.search(rf"\bline {bad_line}\b", line), line


def _run_on_a_terminal(args: list[str], answer: bytes, cwd: Path) -> tuple[int, str]:
    """Run ``python -m dispatch ARGS`` with a pseudo-terminal as stdin; type ``answer``."""
    import pty

    leader, follower = pty.openpty()
    env = {k: v for k, v in os.environ.items() if not k.startswith("DISPATCH_")}
    proc = subprocess.Popen(
        [sys.executable, "-m", "dispatch", *args],
        stdin=follower,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        cwd=cwd,
        env=env,
    )
    os.close(follower)
    try:
        os.write(leader, answer)
        out, _ = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        os.close(leader)
    return proc.returncode, out.decode()


@pytest.mark.slow
@pytest.mark.parametrize(("answer", "sent"), [(b"y\n", 3), (b"n\n", 0)], ids=["yes", "no"])
def test_on_a_terminal_send_asks_first(
    *,
    answer: bytes,
    sent: int,
    article: Path,
    subscribers: Path,
    env_file: EnvFile,
    plain_server: Server,
    tmp_path: Path,
) -> None:
    settings = env_file(**plain_server.env())
    args = ["send", str(article), "-s", str(subscribers), "--env-file", str(settings)]
    returncode, out = _run_on_a_terminal(args, answer, tmp_path)
    assert (
        f"Send «{SUBJECT}» from news@example.org to 3 subscribers via 127.0.0.1:{plain_server.port}?" in out
    )
    assert len(plain_server.received) == sent
    if sent:
        assert returncode == 0, out
    else:
        assert returncode != 0, "declining is not a successful send"
        assert "Nothing sent" in out


@pytest.mark.parametrize("written", ["pa${x}ss$HOME", '"pa${x}ss$HOME"', "'pa${x}ss$HOME'"])
def test_a_dollar_in_a_settings_file_value_is_kept_as_written(tmp_path: Path, written: str) -> None:
    """python-dotenv expands ${VAR} by default: a password or an unsubscribe secret holding "${"
    would silently become another one (and every earlier unsubscribe link would stop working)."""
    env = tmp_path / "s.env"
    env.write_text(f"DISPATCH_SMTP_PASSWORD={written}\nDISPATCH_ORGANIZATION=${{HOME}}/x\n", encoding="utf-8")
    settings = load_settings(env)
    assert settings.smtp_password == "pa${x}ss$HOME"
    assert settings.organization == "${HOME}/x"


@pytest.mark.parametrize("group", [[], ["suppress"]])
def test_a_group_without_a_command_shows_its_help_not_an_error(invoke: Invoke, group: list[str]) -> None:
    result = invoke(*group)
    assert result.exit_code == 2
    assert result.stderr.startswith("Usage: dispatch")
    assert "error" not in result.stderr.splitlines()[0]
    assert "Commands" in result.stderr


@pytest.mark.parametrize(
    ("value", "said"), [("abc", "--limit must be a whole number"), ("1.5", "--limit must be a whole number")]
)
def test_a_bad_number_on_the_command_line_reads_as_the_readme_shows(
    invoke: Invoke, value: str, said: str
) -> None:
    result = invoke("send", "article.md", "--limit", value)
    assert result.exit_code == 2
    assert result.stderr.strip() == f"dispatch: error: {said}; see 'dispatch send --help'"


@pytest.mark.parametrize(
    ("secret", "warned"), [("a-real-secret-0123456789abcdefghijklmn", True), (None, False)]
)
def test_a_readable_settings_file_holding_the_unsubscribe_secret_is_warned_about(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], secret: str | None, warned: bool
) -> None:
    """Whoever reads it can forge an unsubscribe link for any reader; the published example
    secret of .env.example is no secret."""
    from dispatch.settings import EXAMPLE_SECRET

    env = tmp_path / "s.env"
    env.write_text(f"DISPATCH_UNSUBSCRIBE_SECRET={secret or EXAMPLE_SECRET}\n", encoding="utf-8")
    env.chmod(0o644)
    load_settings(env)
    said = capsys.readouterr().err
    assert ("holds a password or secret others can read; chmod 600" in said) == warned, said


def test_the_collector_waits_while_the_process_starts_and_only_in_that_process() -> None:
    import gc

    from dispatch.cli import console

    before = gc.get_threshold()
    frozen = gc.get_freeze_count()
    console.work_starts()  # a command run inside another program (CliRunner, a library caller)
    assert (gc.get_threshold(), gc.get_freeze_count()) == (before, frozen)
    try:
        console.start_up()  # the ``dispatch`` process
        assert gc.get_threshold()[0] == console.STARTUP_GEN0
        console.work_starts()
        assert gc.get_threshold() == before
        assert gc.get_freeze_count() > frozen
        console.work_starts()  # once only
        assert gc.get_threshold() == before
    finally:
        gc.unfreeze()
        gc.set_threshold(*before)
