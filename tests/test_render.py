"""Template rendering: compliance warnings, user templates reaching the built-ins, the
``otherwise`` filter, and premailer staying quiet and offline."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from dispatch.article import load_article
from dispatch.errors import TemplateError
from dispatch.render import RenderedIssue, builtin_template_dir, render_issue

VALUES = {
    "email": "ann@example.org",
    "name": "",
    "unsubscribe_url": "https://example.org/u/1",
    "city": "Oslo",
}


def render(
    article: Path, template_dir: Path | None = None, postal: str = "1 Example Street"
) -> RenderedIssue:
    return render_issue(
        load_article(article),
        subject="S",
        columns=["city"],
        organization="Example",
        postal_address=postal,
        template_dir=template_dir,
    )


def test_builtin_templates_raise_no_warnings(article: Path) -> None:
    issue = render(article)
    assert issue.warnings == ()


@pytest.mark.parametrize(
    ("html", "text", "expected"),
    [
        (
            "<p>{{ article.title }} {{ postal_address }}</p>",
            None,
            "the HTML template shows no unsubscribe link",
        ),
        ('<p><a href="{{ unsubscribe_url }}">u</a></p>', None, "the HTML template does not show"),
        (None, "{{ article.title }} {{ postal_address }}\n", "the text template shows no unsubscribe link"),
    ],
)
def test_user_templates_missing_compliance_parts_are_flagged(
    article: Path, tmp_path: Path, html: str | None, text: str | None, expected: str
) -> None:
    folder = tmp_path / "mine"
    folder.mkdir()
    if html is not None:
        (folder / "email.html").write_text(f"<html><body>{html}</body></html>", encoding="utf-8")
    if text is not None:
        (folder / "email.txt").write_text(text, encoding="utf-8")
    warnings = render(article, folder).warnings
    assert any(expected in w for w in warnings), warnings


def test_missing_postal_address_is_flagged(article: Path) -> None:
    warnings = render(article, postal="").warnings
    assert any("DISPATCH_POSTAL_ADDRESS" in w for w in warnings)


def test_user_template_extends_the_builtin_one(article: Path, tmp_path: Path) -> None:
    folder = tmp_path / "mine"
    folder.mkdir()
    (folder / "email.txt").write_text('{% extends "builtin/email.txt" %}', encoding="utf-8")
    issue = render(article, folder)
    _, text = issue.personalise(VALUES)
    assert "As elections approach, the US walk a thin line in Iraq" in text
    assert "https://example.org/u/1" in text


def test_otherwise_fills_empty_values_only(article: Path, tmp_path: Path) -> None:
    folder = tmp_path / "mine"
    folder.mkdir()
    (folder / "email.txt").write_text(
        "Dear {{ subscriber.name | otherwise('reader') }} in {{ subscriber.city | otherwise('?') }}\n"
        "{{ unsubscribe_url }} {{ postal_address }}\n",
        encoding="utf-8",
    )
    issue = render(article, folder)
    assert issue.personalise(VALUES)[1].startswith("Dear reader in Oslo")
    named = {**VALUES, "name": "Ann"}
    assert issue.personalise(named)[1].startswith("Dear Ann in Oslo")


def test_a_subscriber_field_in_a_condition_is_a_template_error(article: Path, tmp_path: Path) -> None:
    folder = tmp_path / "mine"
    folder.mkdir()
    (folder / "email.txt").write_text("\n\n{% if subscriber.name %}hi{% endif %}\n", encoding="utf-8")
    with pytest.raises(TemplateError, match=r"email\.txt line 3: .*otherwise"):
        render(article, folder)


def test_inlining_is_offline_and_quiet(
    article: Path, monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str]
) -> None:
    import socket

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("premailer tried to use the network")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    issue = render(article)
    html, _ = issue.personalise(VALUES)
    assert 'style="' in html
    assert "@media" in html  # the phone rules stay in <style>
    assert "!important" in html  # ...and keep their priority over the inlined widths
    captured = capfd.readouterr()
    assert captured.err == ""
    assert captured.out == ""


def test_builtin_template_folder_has_the_three_files() -> None:
    folder = builtin_template_dir()
    assert {p.name for p in folder.iterdir()} >= {"email.html", "email.txt", "style.css"}


def test_every_block_kind_renders_in_the_builtin_html(write_file: Callable[..., Path]) -> None:
    source = write_file(
        "all.md",
        "---\ntitle: Kinds\nauthor: Jane Doe\ndate: 2026-11-25\nsubtitle: A standfirst\n---\n"
        "Intro with a [link](https://example.org/a).\n\n## Sub\n\n- one\n- two\n\n> quoted\n\n"
        "![alt text](https://example.org/i.png)\n\n```\ncode\n```\n\n| a | b |\n|---|---|\n| 1 | 2 |\n",
    )
    issue = render(source)
    html, text = issue.personalise(VALUES)
    for fragment in (
        "By Jane Doe",
        "2026-11-25",
        "A standfirst",
        "<h2",
        "<ul",
        "<blockquote",
        "<img",
        "<pre",
        "<table",
    ):
        assert fragment in html, fragment
    assert "[1] https://example.org/a" in text


@pytest.mark.parametrize(
    ("name", "override"),
    [
        (
            "email.html",
            '{% block body %}<p>Dear {{ subscriber.name | otherwise("reader") }},</p>'
            "{{ super() }}{% endblock %}",
        ),
        (
            "email.txt",
            '{% block body %}Dear {{ subscriber.name | otherwise("reader") }},\n\n'
            "{{ super() }}{% endblock %}",
        ),
    ],
)
def test_a_user_template_overrides_one_block_of_the_builtin(
    article: Path, tmp_path: Path, name: str, override: str
) -> None:
    folder = tmp_path / "mine"
    folder.mkdir()
    (folder / name).write_text(f'{{% extends "builtin/{name}" %}}\n{override}', encoding="utf-8")
    issue = render(article, folder)
    html, text = issue.personalise({**VALUES, "name": "Ann"})
    shown = html if name.endswith(".html") else text
    assert "Dear Ann," in shown
    assert "Part of the ongoing efforts" in shown  # super() kept the article
    assert "https://example.org/u/1" in shown  # and the rest of the built-in layout
    assert issue.warnings == ()
