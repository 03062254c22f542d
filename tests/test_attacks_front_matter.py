"""Hostile Markdown front matter, kept as regression tests: a date that is no date, a value that
holds itself, a list as the title. Each stops the run with one line naming the article and the
key (exit 2), never a traceback or an "internal error", and never a subject like ``['a', 'b']``."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.attack_helpers import judge_error, settings_file, write_list

Invoke = Callable[..., Any]
LAUGHS = "a: &a [1, 2, 3, 4, 5, 6, 7, 8, 9, 10]\n" + "".join(
    f"{n}: &{n} [{', '.join([f'*{p}'] * 10)}]\n" for p, n in zip("abcd", "bcde", strict=True)
)

CASES = [
    ("date: 2026-02-30", "'date'", "not a real date"),
    ("date: 2026-13-01", "'date'", "not a real date"),
    ("date: 2026-01-01T25:00:00", "'date'", "not a real date"),
    ("extra:\n  when: 2026-02-30", "'extra'", "not a real date"),
    ("meta: &a [*a]", "'meta'", "holds itself"),
    ("x: &a {y: *a}", "'x'", "holds itself"),
    (LAUGHS, "'d'", "more than 10,000 values"),
    ("title: [a, b]", "'title'", "not text"),
    ("subject: {x: 1}", "'subject'", "not text"),
    ("author: [Ann, Bob]", "'author'", "not text"),
    ("preheader: yes", "'preheader'", "not text"),
]


@pytest.mark.parametrize(("front", "key", "problem"), CASES)
def test_front_matter_no_issue_can_use_is_refused_naming_the_key(
    invoke: Invoke, tmp_path: Path, front: str, key: str, problem: str
) -> None:
    article = tmp_path / "issue.md"
    article.write_text(f"---\n{front}\n---\n# A title\n\nSome text for the issue.\n", encoding="utf-8")
    people = write_list(tmp_path / "people.csv", [("ann@example.org", "Ann")])
    env = settings_file(tmp_path)
    result = invoke("send", article, "-s", people, "--dry-run", "--env-file", env)
    assert result.exit_code == 2, result.stdout + result.stderr
    judge_error(result.stderr, str(article), f"front matter {key}", problem)


@pytest.mark.parametrize(
    "front", ["date: 2026-02-28", "date: 2026-02-28T09:30:00", "title: 2026", "x: &a 1\ny: *a"]
)
def test_real_dates_numbers_and_plain_aliases_still_read(tmp_path: Path, front: str) -> None:
    from dispatch.content.article import load_article

    article = tmp_path / "issue.md"
    article.write_text(f"---\n{front}\n---\n# A title\n\nSome text.\n", encoding="utf-8")
    loaded = load_article(article)
    assert loaded.title in ("A title", "2026")
    assert loaded.date in ("", "2026-02-28", "2026-02-28 09:30:00")
