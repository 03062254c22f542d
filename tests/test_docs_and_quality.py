"""The README and .env.example keep up with the code; the code stays lint- and type-clean."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import typer.main
from typer.testing import CliRunner

from dispatch.cli import app
from dispatch.settings import SETTINGS as TABLE
from tests.conftest import ROOT

README = (ROOT / "README.md").read_text(encoding="utf-8")
SETTINGS = sorted(s.key for s in TABLE)
COMMANDS = sorted(c.name or "" for c in typer.main.get_command(app).commands.values())  # type: ignore[attr-defined]


def test_every_setting_has_a_field_and_every_field_a_setting() -> None:
    """The table and the Settings dataclass name the same values (one row, one field)."""
    from dataclasses import fields

    from dispatch.settings import Settings

    not_settings = {
        "settings_file",
        "per_relay",
        "from_environment",
        "state_dir_relative",
    }  # where the values came from
    assert {s.field for s in TABLE} == {f.name for f in fields(Settings)} - not_settings


def test_the_readme_settings_table_is_the_one_the_table_writes() -> None:
    from dispatch.settings.envfile import readme_table

    assert readme_table() in README, "regenerate it: python -m dispatch.settings.envfile readme"


def test_env_example_is_the_one_the_table_writes() -> None:
    from dispatch.settings.envfile import example_text

    assert (ROOT / ".env.example").read_text(encoding="utf-8") == example_text(), (
        "regenerate it: python -m dispatch.settings.envfile > .env.example"
    )


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


def test_readme_dry_run_transcript_is_real(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The README's transcript is what the quick-start dry run prints today (bar the folder)."""
    block = README.split("```text\n$ dispatch send ", 1)[1].split("```", 1)[0]
    command, *expected = block.rstrip("\n").split("\n")
    args = command.split()
    paths = {"examples/thin-line-in-iraq.txt", "subscribers.example.csv", ".env.example"}
    args = [str(ROOT / a) if a in paths else a for a in args]
    for key in [k for k in os.environ if k.startswith("DISPATCH_")]:
        monkeypatch.delenv(key)
    monkeypatch.setenv("DISPATCH_STATE_DIR", str(tmp_path / "state"))
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(app, ["send", *args])
    assert result.exit_code == 0, result.output
    printed = result.stdout.rstrip("\n").split("\n")
    keep = [i for i, line in enumerate(expected) if not line.lstrip().startswith(("Preview:", "State:"))]
    assert [printed[i] for i in keep] == [expected[i] for i in keep]


def test_the_example_settings_secret_is_the_one_check_warns_about() -> None:
    from dispatch.settings import EXAMPLE_SECRET

    example = (ROOT / ".env.example").read_text(encoding="utf-8")
    assert f"DISPATCH_UNSUBSCRIBE_SECRET={EXAMPLE_SECRET}\n" in example
