"""Hostile values everywhere a user types or imports one (issue 14, D5 and D15), as bounded
property tests: every command's options, every subscriber-list field and every field of a
suppression import.

Expected: each run ends in exit 0, 1 or 2 with at most one ``dispatch: error:`` line (exactly
one for exit 2) and never "internal error" or a traceback; a list's rows are all accounted
for (mailed or skipped with a reason); an imported store reads back, and its export imports
again to the same store. Examples are generated deterministically (``derandomize``) so the
suite is repeatable; the named examples are the defects found while writing these tests.
"""

from __future__ import annotations

import csv
import io
import json
import os
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from tests.attack_helpers import (
    ERROR_PREFIX,
    QUIET_PREFIXES,
    clean_environ,
    settings_file,
    write_article,
)

Invoke = Callable[..., Any]
BOUNDED = settings(
    max_examples=25,
    deadline=None,
    derandomize=True,  # the same examples on every run: a failure here is a failure everywhere
    database=None,  # nothing written into the working tree
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)

# What a shell can pass: any text, control characters, and bytes that are not UTF-8 (which
# Python sees as lone surrogates \udc80-\udcff). NUL cannot be in an argument.
ARGUMENT_CHARACTERS = st.characters(
    codec=None, exclude_categories=("Cs",), exclude_characters="\x00"
) | st.sampled_from("\r\n\t\x1b\x7f\u2028\u202e\ufeff\udcff\udc80")
INTERESTING = [
    "", " ", "-1", "0", "1e309", "nan", "inf", "9" * 400, "2147483648", "0x10", "1.5", "%s%n", "{0}",
    "{token}", "{{ 7 * 7 }}", "../../etc/passwd", "/dev/zero", "/", ".", "..", "~", "*", "-", "=",
    "http://x", "https://example.org/a#1x1", "1/0", "0/s", "-5/min", "1e9/s", "ann@example.org",
    "<ann@example.org>", "=?utf-8?q?x?=@example.org", "news.example.org", "a\r\nBcc: x@example.com",
    "\udcff", "x" * 5000,
]  # fmt: skip
HOSTILE = st.sampled_from(INTERESTING) | st.text(ARGUMENT_CHARACTERS, max_size=30)
# Paths print back in summaries; the in-process runner's stdout refuses bytes that are not
# UTF-8, where the real one writes them back as they came (see the subprocess test below).
PATHS = HOSTILE.filter(lambda v: not any("\ud800" <= c <= "\udfff" for c in v))
PATH_OPTIONS = {
    "send --out",
    "send --attach",
    "send --template",
    "preview --out",
    "suppress export --out",
    "init DIR",
}


def judge(result: Any) -> None:
    """Exit 0, 1 or 2; no crash; at most one error line, and one for exit 2."""
    stderr: str = result.stderr
    assert "Traceback" not in stderr, stderr
    assert "internal error" not in stderr, stderr
    assert result.exit_code in (0, 1, 2), (result.exit_code, stderr)
    lines = [line for line in stderr.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith(ERROR_PREFIX)]
    assert len(errors) <= 1, stderr
    if result.exit_code == 2:
        assert len(errors) == 1, stderr
    stray = [line for line in lines if not line.startswith((ERROR_PREFIX, *QUIET_PREFIXES))]
    assert not stray or result.exit_code == 0, stderr  # a successful run may print its summary there


@pytest.fixture
def place(tmp_path: Path) -> dict[str, Path]:
    """Inputs shared by every example (each example writes only into a folder of its own)."""
    listed = tmp_path / "people.csv"
    listed.write_text("email,name\nann@example.org,Ann\nbob@example.com,Bob\n", encoding="utf-8")
    return {
        "tmp": tmp_path,
        "article": write_article(tmp_path / "issue.md"),
        "list": listed,
        "env": settings_file(tmp_path),  # no relay: nothing here sends
    }


def fresh(place: dict[str, Path]) -> Path:
    """A new folder for one example's outputs and state."""
    return Path(tempfile.mkdtemp(dir=place["tmp"], prefix="run"))


def command(place: dict[str, Path], folder: Path, which: str, value: str) -> list[str | Path]:
    """The command line of ``which`` with the hostile ``value`` in one option or argument."""
    article, listed, env = place["article"], place["list"], place["env"]
    dry = ["send", article, "-s", listed, "--env-file", env, "--dry-run", "--out", folder / "out"]
    preview = ["preview", article, "-s", listed, "--env-file", env]
    lines: dict[str, list[str | Path]] = {
        "send --subject": [*dry, "--subject", value],
        "send --campaign": [*dry, "--campaign", value],
        "send --limit": [*dry, "--limit", value],
        "send --connections": [*dry, "--connections", value],
        "send --rate": [*dry, "--rate", value],
        "send --daily-limit": [*dry, "--daily-limit", value],
        "send --to": [*dry, "--to", value],
        "send --encoding": [*dry, "--encoding", value],
        "send --out": [*dry[:-1], folder / value],
        "send --attach": [*dry, "--attach", folder / value],
        "send --template": [*dry, "--template", folder / value],
        "preview --subscriber": [*preview, "--out", folder / "p.html", "--subscriber", value],
        "preview --out": [*preview, "--out", folder / value],
        "preview --subject": [*preview, "--out", folder / "p.html", "--subject", value],
        "check --subject": ["check", article, "-s", listed, "--env-file", env, "--subject", value],
        "status CAMPAIGN": ["status", value, "--env-file", env],
        "suppress add ADDRESS": ["suppress", "add", value, "--env-file", env],
        "suppress add --list": ["suppress", "add", "ann@example.org", "--list", value, "--env-file", env],
        "suppress add --reason": ["suppress", "add", "ann@example.org", "--reason", value, "--env-file", env],
        "suppress remove ADDRESS": ["suppress", "remove", value, "--env-file", env],
        "suppress import --list": ["suppress", "import", listed, "--list", value, "--env-file", env],
        "suppress import --reason": ["suppress", "import", listed, "--reason", value, "--env-file", env],
        "suppress export --out": ["suppress", "export", "--out", folder / value, "--env-file", env],
        "dkim keygen --selector": ["dkim", "keygen", "--algorithm", "ed25519", "--domain", "example.org",
                                   "--out", folder / "k.pem", "--selector", value],
        "dkim keygen --domain": ["dkim", "keygen", "--algorithm", "ed25519", "--selector", "s1",
                                 "--out", folder / "k.pem", "--domain", value],
        "dkim keygen --algorithm": ["dkim", "keygen", "--selector", "s1", "--domain", "example.org",
                                    "--out", folder / "k.pem", "--algorithm", value],
        "init DIR": ["init", folder / value],
    }  # fmt: skip
    return lines[which]


WHERE = [
    "send --subject", "send --campaign", "send --limit", "send --connections", "send --rate",
    "send --daily-limit", "send --to", "send --encoding", "send --out", "send --attach", "send --template",
    "preview --subscriber", "preview --out", "preview --subject", "check --subject", "status CAMPAIGN",
    "suppress add ADDRESS", "suppress add --list", "suppress add --reason", "suppress remove ADDRESS",
    "suppress import --list", "suppress import --reason", "suppress export --out", "dkim keygen --selector",
    "dkim keygen --domain", "dkim keygen --algorithm", "init DIR",
]  # fmt: skip


@pytest.mark.parametrize("which", WHERE)
def test_any_value_of_any_option_is_a_clean_outcome(
    invoke: Invoke, place: dict[str, Path], which: str
) -> None:
    @BOUNDED
    @given(value=PATHS if which in PATH_OPTIONS else HOSTILE)
    @example(value="\udcff" if which not in PATH_OPTIONS else "x")  # --subject $'\xff': internal error
    @example(value="/" if which in PATH_OPTIONS else "ab\udcffcd")  # preview --out /: internal error
    @example(value="rot13")  # --encoding rot13: internal error (LookupError)
    @example(value="a\rb")  # a CR in a path reached the error "line" and split it
    def run(value: str) -> None:
        judge(invoke(*command(place, fresh(place), which, value)))

    run()


@pytest.mark.slow
def test_bytes_that_are_not_utf8_in_arguments_are_no_crash(place: dict[str, Path]) -> None:
    """A shell passes any bytes: a file name that is not UTF-8 is printed back as it is, a
    subject with such bytes loses them (as it loses control characters)."""
    odd = place["tmp"] / os.fsdecode(b"pr\xffev")
    environ = clean_environ(PYTHONIOENCODING="utf-8:strict")  # stdout as in a UTF-8 desktop locale
    base = [sys.executable, "-m", "dispatch", "send", place["article"], "-s", place["list"], "--env-file",
            place["env"], "--dry-run"]  # fmt: skip
    outputs = []
    for args in ([*base, "--out", odd], [*base, "--out", place["tmp"] / "o2", "--subject", "ab\udcffcd"]):
        result = subprocess.run(
            args, cwd=place["tmp"], env=environ, capture_output=True, timeout=120, check=False
        )
        stderr = result.stderr.decode("utf-8", "replace")
        assert result.returncode == 0, stderr
        assert "internal error" not in stderr
        outputs.append(result.stdout)
    assert b"/pr\xffev/index.html" in outputs[0]  # the folder's name as the bytes it is
    assert (odd / "index.html").exists()
    assert b"Subject:       ab cd" in outputs[1]


# ------------------------------------------------------------------------- subscriber list fields

IN_FILES = [v for v in INTERESTING if not any("\ud800" <= c <= "\udfff" for c in v)]  # a file holds bytes
CELL = st.sampled_from(IN_FILES) | st.text(
    st.characters(codec="utf-8", exclude_categories=("Cs",)) | st.sampled_from("\r\n\"',;\t\x00"), max_size=20
)
ADDRESS_CELL = (
    CELL
    | st.builds(lambda local, dom: f"{local}@{dom}", CELL, CELL)
    | st.sampled_from(
        ["ann@example.org", "ANN@example.org", "bücher@example.org", "ann@bücher.example", "a@b.c"]
    )
)
HEADERS = st.lists(
    st.sampled_from(["name", "status", "city", "opted out", "Subscribed", "last name", "e-mail", "x"]) | CELL,
    max_size=4,
)


@st.composite
def subscriber_lists(draw: st.DrawFn) -> tuple[list[str], list[list[str]], str]:
    header = ["email", *draw(HEADERS)]
    rows = draw(st.lists(st.lists(CELL, min_size=len(header) - 1, max_size=len(header) - 1), max_size=6))
    emails = draw(st.lists(ADDRESS_CELL, min_size=len(rows), max_size=len(rows)))
    delimiter = draw(st.sampled_from([",", ";", "\t"]))
    return header, [[e, *r] for e, r in zip(emails, rows, strict=True)], delimiter


@BOUNDED
@given(data=subscriber_lists(), encoding=st.sampled_from(["utf-8", "utf-8-sig", "utf-16", "utf-16-le"]))
def test_any_subscriber_row_is_mailed_or_skipped_never_a_crash(
    invoke: Invoke, place: dict[str, Path], data: tuple[list[str], list[list[str]], str], encoding: str
) -> None:
    header, rows, delimiter = data
    text = io.StringIO()
    writer = csv.writer(text, delimiter=delimiter, lineterminator="\r\n")
    writer.writerow(header)
    writer.writerows(rows)
    listed = place["tmp"] / "fuzz.csv"
    listed.write_bytes(text.getvalue().encode(encoding))
    result = invoke("send", place["article"], "-s", listed, "--env-file", place["env"], "--dry-run", "--out",
                    place["tmp"] / "out", "--json")  # fmt: skip
    judge(result)
    if result.exit_code == 0:
        summary = json.loads(result.stdout)
        assert summary["recipients"] + summary["skipped"] >= len(
            [r for r in rows if any(c.strip() for c in r)]
        )


# ------------------------------------------------------------------------- suppression import fields

SUPPRESSION_HEADER = ["email", "reason", "list", "time", "source"]
REASON_CELL = CELL | st.sampled_from(
    ["unsubscribed", "cleaned", "bounced", "spam", "manual", "subscribed", ""]
)
LIST_CELL = CELL | st.sampled_from(["news.example.org", "*", "<news.example.org>", "NEWS.example.org"])
TIME_CELL = CELL | st.sampled_from(
    ["0000-01-01", "99999-01-01", "-1", "1e300", "nan", "2024-01-01T00:00:00+23:59", "1704067200",
     "2024-01-15 10:23:45", "9999-12-31T23:59:59-14:00", "2024-02-30"]
) | st.floats(allow_nan=True, allow_infinity=True).map(repr) | st.integers().map(str)  # fmt: skip


@st.composite
def suppression_rows(draw: st.DrawFn) -> list[list[str]]:
    count = draw(st.integers(0, 5))
    return [
        [draw(ADDRESS_CELL), draw(REASON_CELL), draw(LIST_CELL), draw(TIME_CELL), draw(CELL)]
        for _ in range(count)
    ]


@BOUNDED
@given(rows=suppression_rows())
@example(rows=[["ann@example.org", "bounced", "", "1e300", ""]])  # an internal error at the insert
@example(rows=[["bob@example.com", "cleaned", "*", "-99999999999999", "=cmd"]])  # a store list could not read
def test_any_suppression_row_imports_into_a_store_that_reads_back(
    invoke: Invoke, place: dict[str, Path], rows: list[list[str]]
) -> None:
    folder = fresh(place)
    env = settings_file(folder, name="fuzz.env", LIST_ID="news.example.org")
    text = io.StringIO()
    writer = csv.writer(text, lineterminator="\n")
    writer.writerow(SUPPRESSION_HEADER)
    writer.writerows(rows)
    source = folder / "import.csv"
    source.write_text(text.getvalue(), encoding="utf-8")
    imported = invoke("suppress", "import", source, "--env-file", env, "--json")
    judge(imported)
    for args in (("suppress", "list"), ("suppress", "export", "--json"), ("status",)):
        judge(reader := invoke(*args, "--env-file", env))
        assert reader.exit_code == 0, reader.output
    exported = invoke("suppress", "export", "--out", folder / "export.csv", "--env-file", env)
    assert exported.exit_code == 0, exported.output
    again = folder / "again"
    again_env = settings_file(again, name="again.env", LIST_ID="news.example.org")
    reimported = invoke("suppress", "import", folder / "export.csv", "--env-file", again_env, "--json")
    assert reimported.exit_code == 0, reimported.output
    assert json.loads(reimported.stdout)["skipped"] == []
    second = invoke("suppress", "export", "--out", folder / "export-again.csv", "--env-file", again_env)
    assert second.exit_code == 0, second.output
    assert (folder / "export-again.csv").read_bytes() == (folder / "export.csv").read_bytes()
