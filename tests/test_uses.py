"""Which recipient values decide a template's output (dispatch.compose.uses), and where a skeleton's slots
sit for premailer (dispatch.compose.slots): the two proofs that let recipients share a render and an
inlining. Each case is a real template folder or a real premailer run."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from dispatch.compose import inlining
from dispatch.compose.render import builtin_template_dir, render_issue
from dispatch.compose.slots import ATTRIBUTE, COMMENT, TEXT, UNSAFE, URI, analyse, css_sensitivity, fits
from dispatch.compose.uses import Uses
from dispatch.compose.values import Tokens
from dispatch.content.article import load_article

WriteFile = Callable[..., Path]

USES = {
    "printed": ("{{ name }} {{ email }} {{ subscriber['Signup Date'] }} {{ subscriber.city }}", {}, False),
    "printed-raw": ("{% autoescape false %}{{ name }}{% endautoescape %}", {}, False),
    "or-default": ("{{ name or 'reader' }}", {"name": "bool"}, False),
    "if-truthy": ("{% if name %}hi{% endif %}", {"name": "bool"}, False),
    "inline-if": ("{{ 'a' if email else 'b' }}", {"email": "bool"}, False),
    "not": ("{{ not name }}", {"name": "bool"}, False),
    "default-filter": ("{{ name | default('x') }} {{ name | string }}", {}, False),
    "default-boolean": ("{{ name | default('x', true) }}", {"name": "bool"}, False),
    "default-unknown-boolean": ("{{ name | d('x', boolean=article.title) }}", {"name": "value"}, False),
    "compare": ("{% if subscriber.city == 'Oslo' %}x{% endif %}", {"city": "value"}, False),
    "filter": ("{{ name | upper }}", {"name": "value"}, False),
    "or-then-filter": ("{{ (name or email) | upper }}", {"name": "value", "email": "value"}, False),
    "loop": ("{% for t in subscriber.city.split(',') %}{{ t }}{% endfor %}", {"city": "value"}, False),
    "with": ("{% with n = name %}{{ n }}{% endwith %}", {"name": "value"}, False),
    "macro-body": ("{% macro m() %}{{ name }}{% endmacro %}{{ m() }}", {"name": "value"}, False),
    "set-block": ("{% set x %}{{ name }}{% endset %}{{ x }}", {"name": "value"}, False),
    "filter-block": ("{% filter upper %}{{ name }}{% endfilter %}", {"name": "value"}, False),
    "call-block": (
        "{% macro m() %}{{ caller() }}{% endmacro %}{% call m() %}{{ name }}{% endcall %}",
        {"name": "value"},
        False,
    ),
    "self-block": ("{% block b %}{{ name }}{% endblock %}{{ self.b() }}", {"name": "value"}, False),
    "self-as-value": ("{% set s = self %}{{ name }}", {}, True),
    "super-in-child": (
        "{% extends 'builtin/email.html' %}{% block body %}{{ name }}{{ super() }}{% endblock %}",
        {},
        False,
    ),
    "super-of-footer": (
        "{% extends 'builtin/email.html' %}{% block footer %}{{ super() }}{% endblock %}",
        {"email": "value", "unsubscribe_url": "value"},
        False,
    ),
    "include": ("{% include 'part.html' %}", {"name": "bool"}, False),
    "include-in-macro": (
        "{% macro m() %}{% include 'plain.html' %}{% endmacro %}{{ m() }}",
        {"email": "value"},
        False,
    ),
    "import": ("{% import 'macros.html' as m %}{{ m.x() }}", {"name": "value"}, False),
    "unknown-column": ("{{ subscriber.nope }}", {}, False),
    "whole-subscriber-method": ("{{ subscriber.items() | list }}", {}, True),
    "whole-subscriber-loop": ("{% for k in subscriber %}{{ k }}{% endfor %}", {}, True),
    "dynamic-subscript": ("{{ subscriber[article.title] }}", {}, True),
    "dynamic-include": ("{% include article.file_name %}", {}, True),
}


@pytest.mark.parametrize(("source", "modes", "everything"), USES.values(), ids=USES.keys())
def test_the_analysis_finds_what_decides_the_output(
    write_file: WriteFile, article: Path, source: str, modes: dict[str, str], everything: bool
) -> None:
    write_file("tpl/email.html", source)
    write_file("tpl/part.html", "{% if name %}Hi {{ name }}{% endif %}")
    write_file("tpl/plain.html", "{{ email }}")
    write_file("tpl/macros.html", "{% macro x() %}{{ name }}{% endmacro %}")
    issue = render_issue(load_article(article), subject="S", columns=["city", "Signup Date"],
                         template_dir=article.parent / "tpl")  # fmt: skip
    uses: Uses = issue.personal.uses
    assert (uses.modes, uses.everything) == (modes, everything)
    if modes or everything:  # named where it is (a built-in block that super() reads, say)
        assert uses.where.startswith((str(article.parent / "tpl"), str(builtin_template_dir()))), uses.where


def test_the_builtin_templates_only_print_values(article: Path) -> None:
    """The built-in templates are rendered once for every recipient."""
    issue = render_issue(load_article(article), subject="S", columns=["city"])
    assert issue.personal.uses == Uses()
    for n in range(40):
        issue.personalise(
            {"email": f"r{n}@example.org", "name": f"R {n}", "unsubscribe_url": f"https://e.org/{n}"}
        )
    assert issue.personal.renders == 2, "one render, and one to confirm a second recipient shares it"
    assert issue.personal.inlined == 1


# --------------------------------------------------------------------------- where slots sit

TOKENS = Tokens("0123456789ab")
T = TOKENS.token("f1")
STYLE = "<style>p { color: #333333 } .x { margin: 0 }</style>"

LAYOUT = {
    "text": (f"<p>Hi {T}!</p>", [TEXT]),
    "title": (f"<title>{T}</title>", [TEXT]),
    "table-cell": (f"<table><tr><td>{T}</td></tr></table>", [TEXT]),
    "comment": (f"<!-- for {T} --><p>x</p>", [COMMENT]),
    "quoted-attribute": (f'<p title="{T}">x</p><img alt=\'{T}\' src="a.png">', [ATTRIBUTE]),
    "href": (f'<a href="https://example.org/?u={T}">x</a>', [URI]),
    "anchor-name": (f'<a name="{T}">x</a>', [URI]),
    "text-and-href": (f'<a href="{T}">{T}</a>', [TEXT, URI]),
    "unquoted-attribute": (f"<p title={T}>x</p>", [ATTRIBUTE, UNSAFE]),  # a space would split it
    "class": (f'<p class="x {T}">x</p>', [UNSAFE]),
    "id": (f'<p id="{T}">x</p>', [UNSAFE]),
    "style-attribute": (f'<p style="color: {T}">x</p>', [UNSAFE]),
    "style-element": (f"<style>p {{ color: {T} }}</style><p>x</p>", [UNSAFE]),
    "script": (f"<script>var a = '{T}';</script>", [UNSAFE]),
    "tag-name": (f"<p><{T}>x</{T}></p>", [UNSAFE]),
    "attribute-name": (f'<p {T}="1">x</p>', [UNSAFE]),
    "boolean-attribute": (f'<input type="checkbox" checked="{T}">', [ATTRIBUTE, UNSAFE]),  # libxml2 drops it
    "selected-attribute": (
        f'<p data-plan="{T}">x</p><style>[data-plan] p {{ color: red }}</style>',
        [UNSAFE],
    ),
    # premailer leaves rules with a pseudo-class in <style> (but :first-child and the like)
    "contains": (f'<p>{T}</p><style>p:contains("Ann") {{ color: red }}</style>', [TEXT]),
    "empty": (f"<p>{T}</p><style>p:empty {{ display: none }}</style>", [TEXT]),
    "pseudo-class-with-attribute": (
        f'<p title="{T}">x</p><style>p[title]:hover {{ color: red }}</style>',
        [ATTRIBUTE],
    ),
    "first-child-with-attribute": (
        f'<p title="{T}">x</p><style>b, [title] p:first-child {{ color: red }}</style>',
        [UNSAFE],
    ),
    "ignored-style-selectors": (
        f'<p title="{T}">x</p><style data-premailer="ignore">[title] {{ color: red }}</style>',
        [ATTRIBUTE],
    ),
}


@pytest.mark.parametrize(("body", "kinds"), LAYOUT.values(), ids=LAYOUT.keys())
def test_each_slot_is_classified_by_where_premailer_sees_it(body: str, kinds: list[str]) -> None:
    skeleton = f"<!DOCTYPE html><html><head>{STYLE}</head><body>{body}</body></html>"
    if "<title>" in body:
        skeleton = skeleton.replace("<head>", f"<head>{body}").replace(f"<body>{body}", "<body><p>x</p>")
    assert analyse(skeleton, inlining.inline(skeleton), TOKENS) == {"f1": kinds}


def test_a_slot_at_an_end_of_the_document_is_never_filled_after_inlining() -> None:
    skeleton = f"{T}<p>x</p>"
    assert analyse(skeleton, inlining.inline(skeleton), TOKENS) == {"f1": [TEXT, UNSAFE]}


FITS = [
    ("Ann Example", [TEXT], True),
    ("", [TEXT], False),  # no text node: libxml2 lays out and indents the tree differently
    (" ", [TEXT], False),
    ("Tom &amp; Jerry &lt;3 &#34;x&#34; &#39;y&#39;", [TEXT, ATTRIBUTE], True),
    ("a & b", [TEXT], False),  # not as markupsafe escapes: written in before inlining
    ("<b>bold</b>", [TEXT], False),
    ("", [ATTRIBUTE], True),
    ("two\nlines", [ATTRIBUTE], False),
    ("two\nlines", [TEXT], True),
    ("https://example.org/u?list=news&amp;t=AbC-_9", [URI], True),
    ("https://example.org/a b", [URI], False),  # percent-encoded by libxml2 on the way out
    ("https://例え.jp/", [URI], False),
    ("https://example.org/?a&amp;copy;", [URI], False),  # would read as an entity once written raw
    ("mailto:x@example.org?subject=stop", [URI], True),
    ("a comment", [COMMENT], True),
    ("a -- b", [COMMENT], False),
    ("anything", [UNSAFE], False),
    ("bell\x07", [TEXT], False),
]


@pytest.mark.parametrize(("fill", "kinds", "expected"), FITS)
def test_which_texts_may_fill_a_slot_after_inlining(fill: str, kinds: list[str], expected: bool) -> None:
    assert fits(fill, kinds) is expected


def test_css_sensitivity_reads_the_selectors_premailer_inlines() -> None:
    sheet = (
        "@media (prefers-color-scheme:dark) { .a[lang]:hover { color: red } }\n"
        '/* [commented] */ a[href^="https:"], * [alt] { content: "a:b[c]" }\n'
        "td[width]:first-child { width: 1px }"
    )
    assert css_sensitivity([sheet]) == frozenset({"href", "width"})


def test_a_slot_premailer_drops_is_written_in_before_inlining(write_file: WriteFile, article: Path) -> None:
    """libxml2 writes ``checked`` without its value: a slot there cannot be filled after inlining,
    so each value makes a document of its own (exact, whatever premailer does with it)."""
    write_file(
        "tpl/email.html", '<html><body><input type="checkbox" checked="{{ subscriber.city }}"></body></html>'
    )
    issue = render_issue(
        load_article(article), subject="S", columns=["city"], template_dir=article.parent / "tpl"
    )
    for city in ("Oslo", "Rome", "Oslo"):
        html, _ = issue.personalise(
            {"email": "a@example.org", "city": city, "unsubscribe_url": "https://e.org/u"}
        )
        assert "<input type" in html
    assert issue.personal.inlined == 3, "the skeleton (to find where its slots sit), then each value"
