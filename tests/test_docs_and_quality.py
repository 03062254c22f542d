"""The README and .env.example keep up with the code; the code stays lint- and type-clean."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest
import typer.main

from dispatch.cli import app
from tests.conftest import ROOT

README = (ROOT / "README.md").read_text(encoding="utf-8")
SETTINGS_SOURCE = (ROOT / "src" / "dispatch" / "settings.py").read_text(encoding="utf-8")
SETTINGS = sorted(
    {f"DISPATCH_{m}" for m in re.findall(r'_(?:int|float|path)\(env, "([A-Z_]+)"', SETTINGS_SOURCE)}
    | {f"DISPATCH_{m}" for m in re.findall(r'PREFIX \+ "([A-Z_]+)"', SETTINGS_SOURCE)}
)
COMMANDS = sorted(c.name or "" for c in typer.main.get_command(app).commands.values())  # type: ignore[attr-defined]


def test_settings_are_found() -> None:
    assert "DISPATCH_SMTP_HOST" in SETTINGS
    assert "DISPATCH_DAILY_LIMIT" in SETTINGS


@pytest.mark.parametrize("name", SETTINGS)
def test_every_setting_is_documented(name: str) -> None:
    assert f"`{name}`" in README
    assert name in (ROOT / ".env.example").read_text(encoding="utf-8")


@pytest.mark.parametrize("command", COMMANDS)
def test_every_command_is_in_the_readme_and_has_help(command: str) -> None:
    assert f"dispatch {command}" in README
    help_text = subprocess.run(
        [sys.executable, "-m", "dispatch", command, "--help"], capture_output=True, text=True, check=True
    ).stdout
    assert "Usage:" in help_text


@pytest.mark.parametrize(
    "variable",
    ["article.title", "article.motto", "article.motto_attribution", "article.author", "article.date",
     "article.subtitle", "article.body_html", "article.body_text", "article.links", "article.meta", "subject",
     "preheader", "organization", "postal_address", "subscriber", "email", "name", "unsubscribe_url",
     "test_send", "otherwise"],
)  # fmt: skip
def test_template_variables_are_documented(variable: str) -> None:
    assert f"`{variable}" in README


def test_exit_codes_are_documented() -> None:
    from dispatch.errors import ExitCode

    for code in ExitCode:
        assert re.search(rf"\|\s*`?{int(code)}`?\s*\|", README), code


def test_quick_start_commands_match_ci() -> None:
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    test_command = ci.strip().splitlines()[-1]
    assert test_command in README


@pytest.mark.parametrize(
    "command",
    [["ruff", "check", "src", "tests", "benchmarks"], ["ruff", "format", "--check", "src"], ["mypy"]],
    ids=["ruff", "ruff-format", "mypy"],
)
def test_code_quality(command: list[str]) -> None:
    result = subprocess.run(
        [sys.executable, "-m", *command], cwd=ROOT, capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr
