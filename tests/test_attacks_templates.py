"""Attacks on templates (issue 6, classes 1 and 2), kept as regression tests.

Class 1: a hostile ``--template`` folder tries every route to files, the environment and code.
Expected: exit 2 naming the template file and line, nothing read or written outside the
folder, the planted secret in no output.

Class 2: subscriber values inside filters, tests, slices, methods, comparisons and macros.
Expected: every message equals what a per-recipient Jinja2 render (ImmutableSandboxedEnvironment,
autoescape for HTML) gives with that recipient's real values, or the run is refused before
anything is sent with an error naming the template line; never an internal token in any output.
"""

from __future__ import annotations

import csv
import os
import re
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jinja2
import pytest
from jinja2.sandbox import ImmutableSandboxedEnvironment

from dispatch.compose.issue import plan_issue, recipients
from dispatch.settings import Settings
from tests.attack_helpers import (
    Relays,
    between,
    clean_environ,
    eml_files,
    judge_error,
    no_crash,
    parse,
    part,
    run_dispatch,
    settings_file,
    settings_values,
    tokens_in,
    tree,
    unfolded_qp,
    write_article,
)
from tests.smtp_servers import Server
from tests.template_reference import assert_exact, recipient_context, render, wire_text

Invoke = Callable[..., Any]
SECRET = "TOPSECRET-d1sp4tch-canary-7f3a"

PEOPLE = [
    {"email": "ann+news@example.org", "name": "Ann Example", "city": "Paris"},
    {"email": "bob@example.com", "name": "Bo", "city": "Oslo"},
    {"email": "dan@example.org", "name": "", "city": "Rome"},
    {"email": "eve@example.org", "name": 'Ève <Ø> & "co"', "city": "Zürich"},
]


def write_people(path: Path, people: list[dict[str, str]] = PEOPLE) -> Path:
    with path.open("w", encoding="utf-8", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=["email", "name", "city"])
        writer.writeheader()
        writer.writerows(people)
    return path


@pytest.fixture
def scene(tmp_path: Path) -> dict[str, Path]:
    """An article, a list, settings holding the secret, a template folder, and the secret planted
    around it: beside the folder, in the working folder's .env, in a hidden file inside it."""
    tpl = tmp_path / "tpl"
    tpl.mkdir()
    (tmp_path / "secret.txt").write_text(SECRET, encoding="utf-8")
    (tmp_path / "secret.html").write_text(SECRET, encoding="utf-8")
    (tmp_path / "work").mkdir(exist_ok=True)
    (tmp_path / "work" / ".env").write_text(f"DISPATCH_SMTP_PASSWORD={SECRET}\n", encoding="utf-8")
    (tpl / ".env").write_text(SECRET, encoding="utf-8")
    (tpl / ".hidden.txt").write_text(SECRET, encoding="utf-8")
    return {
        "tmp": tmp_path,
        "tpl": tpl,
        "article": write_article(tmp_path / "issue.md"),
        "list": write_people(tmp_path / "people.csv"),
        "env": settings_file(tmp_path, SMTP_PASSWORD=SECRET, SMTP_USER="mailer"),
        "out": tmp_path / "out",
    }


def dry_run(invoke: Invoke, scene: dict[str, Path], *extra: str) -> Any:
    return invoke(
        "send", scene["article"], "-s", scene["list"], "--env-file", scene["env"],
        "--template", scene["tpl"], "--dry-run", "--out", scene["out"], *extra,
    )  # fmt: skip


def outputs(result: Any, folder: Path) -> str:
    """Everything a run showed or wrote, as one text (decoded bodies included)."""
    shown = [result.stdout, result.stderr]
    if folder.is_dir():
        for path in sorted(folder.rglob("*")):
            if path.is_file():
                data = path.read_bytes()
                shown.append(unfolded_qp(data).decode("utf-8", "replace"))
                if path.suffix == ".eml":
                    message = parse(data)
                    shown += [part(message, "plain"), part(message, "html")]
    return "\n".join(shown)


def files_outside(scene: dict[str, Path]) -> dict[str, bytes | str]:
    found = tree(scene["tmp"])
    return {k: v for k, v in found.items() if not k.startswith(("out", "state"))}


# ============================================================================ class 1: reach out

HOSTILE = {
    "dunder-globals-cycler": "{{ cycler.__init__.__globals__.os.environ }}",
    "dunder-globals-joiner": "{{ joiner.__init__.__globals__['os'].popen('id').read() }}",
    "dunder-globals-namespace": "{{ namespace.__init__.__globals__.sys.modules }}",
    "dunder-globals-lipsum": "{{ lipsum.__globals__['os'].environ['DISPATCH_SMTP_PASSWORD'] }}",
    "self-context": "{{ self._TemplateReference__context.environment }}",
    "self-dict": "{{ self.__dict__ }}",
    "attr-filter-class": "{{ ''|attr('__class__')|attr('__mro__') }}",
    "attr-filter-subclasses": "{{ (()|attr('__class__')|attr('__base__')|attr('__subclasses__'))() }}",
    "mro-subclasses": "{{ ''.__class__.__mro__[1].__subclasses__() }}",
    "format-string-dunder": "{{ '{0.__class__.__init__.__globals__}'.format(article) }}",
    "format-map-dunder": "{{ '{a.__class__}'.format_map({'a': article}) }}",
    "format-filter-dunder": "{{ '%s'|format(article.__class__) }}",
    "article-path-read": "{{ (article.source.cwd() / 'secret.txt').read_text() }}",
    "article-source": "{{ article.source.read_text() }}",
    "settings-object": "{{ settings.smtp_password }}",
    "config-global": "{{ config }}",
    "environ-global": "{{ environ }}",
    "mutate-words": "{{ words.pop('issue') }}",
    "mutate-article": "{{ article.update({'title': 'pwned'}) }}",
    "mutate-meta-setdefault": "{{ meta.setdefault('x', 1) }}",
    "include-dotdot": '{% include "../secret.txt" %}',
    "include-dotdot-html": '{% include "../secret.html" %}',
    "include-nested-dotdot": '{% include "sub/../../secret.txt" %}',
    "include-builtin-dotdot": '{% include "builtin/../../../../../../etc/passwd.txt" %}',
    "include-absolute": '{% include "@SECRET@" %}',
    "include-proc-environ": '{% include "/proc/self/environ" %}',
    "include-hidden-env": '{% include ".env" %}',
    "include-hidden-txt": '{% include ".hidden.txt" %}',
    "include-list-fallback": '{% include ["missing.txt", "../secret.txt"] %}',
    "import-dotdot": '{% import "../secret.txt" as s %}{{ s }}',
    "from-import-dotdot": '{% from "../secret.html" import x %}{{ x }}',
    "extends-dotdot": '{% extends "../secret.txt" %}',
    "extends-absolute": '{% extends "@SECRET@" %}',
    "include-self": '{% include "email.txt" %}',
    "extends-self": '{% extends "email.txt" %}',
    "macro-recursion": "{% macro r(n) %}{{ r(n + 1) }}{% endmacro %}{{ r(0) }}",
    "macro-caller-recursion": (
        "{% macro r() %}{% call r() %}{% endcall %}{{ caller() }}{% endmacro %}{% call r() %}x{% endcall %}"
    ),
    "range-huge": "{{ range(10 ** 12)|list|length }}",
    "int-to-huge-string": "{{ (10 ** 100000)|string|length }}",
    "nested-for-blocks": "{% for a in [1] %}" * 25 + "x" + "{% endfor %}" * 25,
    "nested-if-blocks": "{% if true %}" * 120 + "x" + "{% endif %}" * 120,
    "nested-parentheses": "{{ " + "(" * 400 + "1" + ")" * 400 + " }}",
    "unary-minus-chain": "{{ " + "-" * 5000 + "1 }}",
}


@pytest.mark.parametrize("source", HOSTILE.values(), ids=HOSTILE.keys())
def test_hostile_template_is_refused_naming_file_and_line(
    invoke: Invoke, scene: dict[str, Path], source: str
) -> None:
    source = source.replace("@SECRET@", str(scene["tmp"] / "secret.txt"))
    (scene["tpl"] / "email.txt").write_text(source, encoding="utf-8")
    before = files_outside(scene)
    result = dry_run(invoke, scene)
    assert result.exit_code == 2, result.stdout + result.stderr
    judge_error(result.stderr, str(scene["tpl"] / "email.txt"), "line ")
    assert SECRET not in outputs(result, scene["out"])
    assert files_outside(scene) == before


def test_symlinked_template_file_pointing_outside_is_refused(invoke: Invoke, scene: dict[str, Path]) -> None:
    (scene["tpl"] / "email.txt").symlink_to(scene["tmp"] / "secret.txt")
    result = dry_run(invoke, scene)
    assert result.exit_code == 2
    judge_error(result.stderr, "email.txt")
    assert SECRET not in outputs(result, scene["out"])


@pytest.mark.parametrize(
    ("link", "target", "source"),
    [
        ("leak.txt", "../secret.txt", '{% include "leak.txt" %}'),
        ("sub", "..", '{% include "sub/secret.txt" %}'),
        ("deep/leak.html", "../../secret.html", '{% include "deep/leak.html" %}'),
        ("abs.txt", "@ABS@", '{% import "abs.txt" as x %}{{ x }}'),
    ],
    ids=["file-link", "folder-link", "nested-link", "absolute-link"],
)
def test_include_through_a_symlink_out_of_the_folder_is_refused(
    invoke: Invoke, scene: dict[str, Path], link: str, target: str, source: str
) -> None:
    path = scene["tpl"] / link
    path.parent.mkdir(parents=True, exist_ok=True)
    path.symlink_to(target.replace("@ABS@", str(scene["tmp"] / "secret.txt")))
    (scene["tpl"] / "email.txt").write_text(source, encoding="utf-8")
    result = dry_run(invoke, scene)
    assert result.exit_code == 2
    judge_error(result.stderr, str(scene["tpl"] / "email.txt"), "line ")
    assert SECRET not in outputs(result, scene["out"])


@pytest.mark.parametrize(
    "source",
    ["", "  \n", "<!-- nothing yet -->\n", "<!DOCTYPE html>\n", "{% if false %}<p>x</p>{% endif %}"],
    ids=["empty", "spaces", "comment", "doctype", "renders-nothing"],
)
def test_an_html_template_that_renders_nothing_is_named(
    invoke: Invoke, scene: dict[str, Path], source: str
) -> None:
    """premailer finds no document in it: the error named no file ('NoneType' object has no
    attribute 'getroottree')."""
    (scene["tpl"] / "email.html").write_text(source, encoding="utf-8")
    result = dry_run(invoke, scene)
    assert result.exit_code == 2, result.stdout + result.stderr
    judge_error(result.stderr, str(scene["tpl"] / "email.html"), "renders an empty document")


@pytest.mark.parametrize("command", ["dry-run", "check"])
def test_a_footer_shown_to_one_segment_only_blocks_the_dry_run_and_check_as_it_blocks_the_send(
    invoke: Invoke, scene: dict[str, Path], command: str
) -> None:
    """The first reader (the sample the checks look at) sees the unsubscribe link; the others
    do not. The send refused; the dry run and check passed."""
    for name, base in (("email.html", "builtin/email.html"), ("email.txt", "builtin/email.txt")):
        (scene["tpl"] / name).write_text(
            f'{{% extends "{base}" %}}{{% block footer %}}'
            '{% if subscriber.city == "Paris" %}{{ super() }}'
            "{% else %}{{ postal_address }}{% endif %}{% endblock %}",
            encoding="utf-8",
        )
    if command == "dry-run":
        result = dry_run(invoke, scene)
    else:
        args = (
            "check",
            scene["article"],
            "-s",
            scene["list"],
            "--env-file",
            scene["env"],
            "--template",
            scene["tpl"],
        )
        result = invoke(*args)
    assert result.exit_code == 2, result.stdout + result.stderr
    assert (
        "Blocking:      the template must show a visible unsubscribe link in the HTML part" in result.stdout
    )
    assert "Blocking:      the template must show the unsubscribe link in the text part" in result.stdout


def test_huge_template_is_refused(invoke: Invoke, scene: dict[str, Path]) -> None:
    (scene["tpl"] / "email.txt").write_text("{{ unsubscribe_url }}" + "x" * 3_000_000, encoding="utf-8")
    result = dry_run(invoke, scene)
    assert result.exit_code == 2
    judge_error(result.stderr, "email.txt")


@pytest.mark.slow
@pytest.mark.parametrize(
    "include",
    [False, True],
    ids=["fifo-as-email.txt", "fifo-included"],
)
def test_fifo_template_is_refused_at_once(scene: dict[str, Path], include: bool) -> None:
    fifo = scene["tpl"] / ("part.txt" if include else "email.txt")
    os.mkfifo(fifo)
    if include:
        (scene["tpl"] / "email.txt").write_text('{% include "part.txt" %}', encoding="utf-8")
    result = run_dispatch(
        "send", scene["article"], "-s", scene["list"], "--env-file", scene["env"], "--template",
        scene["tpl"], "--dry-run", "--out", scene["out"], cwd=scene["tmp"], timeout=60,
    )  # fmt: skip
    assert result.returncode == 2, result.stderr
    judge_error(result.stderr, str(scene["tpl"]))


RUNAWAY = {
    "nested-range-loops": (
        "{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}"
        "{{ unsubscribe_url }}"
    ),
    "power-tower": "{{ 9 ** (9 ** 9) }}{{ unsubscribe_url }}",
    "power-in-loop": "{% for i in range(3) %}{{ (7 ** (7 ** 8))|string|length }}{% endfor %}",
    "string-times-huge": "{{ 'x' * 10 ** 12 }}",
    "list-times-huge": "{{ [0] * 10 ** 12 }}",
    "center-huge": "{{ 'x'|center(10 ** 12) }}",
    "field-center-huge": "{{ name|center(10 ** 12) }}{{ unsubscribe_url }}",
    "format-huge-width": "{{ '{:>1000000000000}'.format(1) }}",
}


@pytest.mark.slow
@pytest.mark.parametrize("source", RUNAWAY.values(), ids=RUNAWAY.keys())
def test_runaway_template_stops_with_exit_2(scene: dict[str, Path], source: str) -> None:
    """Time and size limits hold even for work Python does in C (a power, a repeat): exit 2
    naming the template, within the run's render limit (the timeout only guards the suite)."""
    (scene["tpl"] / "email.txt").write_text(source, encoding="utf-8")
    result = run_dispatch(
        "send", scene["article"], "-s", scene["list"], "--env-file", scene["env"], "--template",
        scene["tpl"], "--dry-run", "--out", scene["out"], cwd=scene["tmp"], timeout=90,
    )  # fmt: skip
    assert result.returncode == 2, result.stdout + result.stderr
    judge_error(result.stderr, "email.txt")


def _doubling(join: str) -> str:
    lines = ['{% set v0 = "x" * 1000000 %}']
    lines += [f"{{% set v{i} = v{i - 1} {join} v{i - 1} %}}" for i in range(1, 36)]
    return "\n".join(lines) + "\n{{ v35|length }}{{ unsubscribe_url }}"


MILLION = '"x" * 1000000'
# Each step fits in memory, the next doubles it: 35 steps would want 32 TB, filled for real.
GROWING = {
    "tilde-chain": _doubling("~"),
    "plus-chain": _doubling("+"),
    "namespace-loop": (
        f"{{% set ns = namespace(s={MILLION}) %}}{{% for i in range(40) %}}{{% set ns.s = ns.s ~ ns.s %}}"
        "{% endfor %}{{ ns.s|length }}"
    ),
    "set-block-loop": (
        f"{{% set ns = namespace(s={MILLION}) %}}{{% for i in range(40) %}}{{% set block %}}{{{{ ns.s }}}}"
        "{{ ns.s }}{% endset %}{% set ns.s = block %}{% endfor %}{{ ns.s|length }}"
    ),
    "macro-nesting": (
        "{% macro d(x) %}{{ x }}{{ x }}{% endmacro %}"
        f"{{{{ d(d(d(d(d(d(d(d(d(d(d(d(d(d(d(d(d(d(d(d({MILLION}))))))))))))))))))))|length }}}}"
    ),
    "replace-filter-chain": "{{ ('x' * 1000)|replace('x', 'x' * 1000)|replace('x', 'x' * 1000) }}",
    "replace-method-chain": "{{ ('x' * 1000).replace('x', 'x' * 1000).replace('x', 'x' * 1000) }}",
    "join-filter": f"{{{{ ([{MILLION}] * 4000000)|join }}}}",
    "join-method": f"{{{{ ''.join([{MILLION}] * 4000000) }}}}",
}


WIDE = {  # a width or precision of millions given as a value, not in the format string
    "percent-star-width": "{{ '%*d' % (10 ** 9, 1) }}",
    "percent-star-precision": "{{ '%.*f' % (10 ** 8, 1.0) }}",
    "format-nested-width-as-text": "{{ '{:{}}'.format('x', '999999999') }}",
    "format-nested-width-keyword": "{{ '{:{w}}'.format('x', w=' 999999999') }}",
}


@pytest.mark.parametrize("source", WIDE.values(), ids=WIDE.keys())
def test_a_width_of_millions_given_as_a_value_is_refused_before_it_is_made(
    scene: dict[str, Path], source: str
) -> None:
    (scene["tpl"] / "email.txt").write_text(source + "{{ unsubscribe_url }}", encoding="utf-8")
    result = _capped_dry_run(scene)
    assert result.returncode == 2, result.stdout + result.stderr
    assert "too large" in result.stderr, result.stderr
    judge_error(result.stderr, "email.txt")


def _capped_dry_run(scene: dict[str, Path]) -> subprocess.CompletedProcess[str]:
    args = ["send", scene["article"], "-s", scene["list"], "--env-file", scene["env"], "--template",
            scene["tpl"], "--dry-run", "--out", scene["out"]]  # fmt: skip
    return subprocess.run(
        [sys.executable, "-m", "dispatch", *map(str, args)], cwd=scene["tmp"], env=clean_environ(),
        capture_output=True, text=True, timeout=120, check=False, preexec_fn=_memory_cap,
    )  # fmt: skip


def _memory_cap() -> None:  # (in the child: a regression fails the test, not the machine)
    import resource

    resource.setrlimit(resource.RLIMIT_AS, (3 << 30, 3 << 30))


@pytest.mark.parametrize("source", GROWING.values(), ids=GROWING.keys())
def test_text_growing_past_what_can_be_sent_is_refused_where_it_is_made(
    scene: dict[str, Path], source: str
) -> None:
    """A value doubled again and again (``~``, ``+``, a namespace in a loop, a ``{% set %}``
    block, nested macros, ``replace``, ``join``) is refused as soon as it outgrows what can be
    sent, naming the template: not when the machine's memory runs out. (The child runs under a
    3 GB cap so that a regression ends in a MemoryError, which this test does not accept.)"""
    (scene["tpl"] / "email.txt").write_text(source, encoding="utf-8")
    result = _capped_dry_run(scene)
    assert result.returncode == 2, result.stdout + result.stderr
    assert "too long to send" in result.stderr, result.stderr
    judge_error(result.stderr, "email.txt")


def test_real_send_with_hostile_template_sends_nothing(
    invoke: Invoke, scene: dict[str, Path], relay: Relays
) -> None:
    server = relay.start()
    env = settings_file(scene["tmp"], server, name="send.env")
    (scene["tpl"] / "email.txt").write_text(
        '{% extends "builtin/email.txt" %}{% block body %}{% include "../secret.txt" %}{% endblock %}',
        encoding="utf-8",
    )
    result = invoke(
        "send", scene["article"], "-s", scene["list"], "--env-file", env, "--template", scene["tpl"],
        "--yes", "--json",
    )  # fmt: skip
    assert result.exit_code == 2
    judge_error(result.stderr, "email.txt", "line ")
    assert server.received == []
    assert SECRET not in result.stdout + result.stderr


# ============================================================================ class 2: per recipient

TEXT_WRAP = '{% extends "builtin/email.txt" %}{% block body %}⟦@@⟧\n{{ super() }}{% endblock %}'
HTML_WRAP = '{% extends "builtin/email.html" %}{% block body %}<p>[[[@@]]]</p>{{ super() }}{% endblock %}'

SNIPPETS = {
    # filters, slices, defaults, macros, blocks, tests, conditions on a value
    "upper": "{{ name|upper }}",
    "urlencode-plus": "{{ email|urlencode }}",
    "replace": "{{ name|replace('Ex', 'Ix') }}",
    "slice": "{{ name[0:3] }}",
    "slice-reverse": "{{ name[::-1] }}",
    "index-0": "{{ email[0] }}",
    "truncate": "{{ name|truncate(5, true, '…', 0) }}",
    "wordwrap": "{{ name|wordwrap(4, true) }}",
    "default-boolean": "{{ name|default('reader', true) }}",
    "otherwise-like-default": "{{ name|default('friend', boolean=true)|upper }}",
    "length": "{{ name|length }}",
    "format-two-fields": "{{ '%s <%s>'|format(name, email) }}",
    "format-field-template": "{{ name|format }}",
    "join-list-of-fields": "{{ [name, email]|join(' / ') }}",
    "map-upper-join": "{{ [name, subscriber.city]|map('upper')|join(',') }}",
    "escape-in-text": "{{ name|e }}",
    "chained": "{{ name|trim|title|center(20) }}",
    "macro": "{% macro greet(n) %}Dear {{ n|title }}{% endmacro %}{{ greet(name) }}",
    "macro-default-arg": "{% macro g(n, e=email) %}{{ n|lower }}:{{ e|upper }}{% endmacro %}{{ g(name) }}",
    "filter-block": "{% filter upper %}Dear {{ name }}{% endfilter %}",
    "concat-then-filter": "{{ ('Dear ' ~ name)|upper }}",
    "set-then-filter": "{% set n = name|lower %}{{ n|capitalize }}",
    "set-block-then-filter": "{% set g %}Hi {{ name }}{% endset %}{{ g|upper }}",
    "test-string": "{{ name is string }}",
    "test-lower": "{{ email is lower }}",
    "test-eq": "{{ email is eq 'bob@example.com' }}",
    "test-in": "{{ subscriber.city is in ['Oslo', 'Rome'] }}",
    "if-length": "{% if name|length > 2 %}long{% else %}short{% endif %}",
    "if-compare": "{% if name == 'Bo' %}hi Bo{% else %}hi you{% endif %}",
    "inline-if": "{{ 'yes' if email is lower else 'no' }}",
    "city-lower": "{{ subscriber.city|lower }}",
    "subscript-city": "{{ subscriber['city']|upper }}",
    "list-join": "{{ name|list|join('-') }}",
    "reverse": "{{ name|reverse }}",
    "wordcount": "{{ name|wordcount }}",
    "striptags": "{{ name|striptags }}",
    "replace-at": "{{ email|replace('@', ' at ') }}",
    "int": "{{ name|int }}",
    "tojson": "{{ name|tojson }}",
    "indent": "{{ name|indent(2, true) }}",
    "batch": "{{ name|batch(2)|map('join')|join('/') }}",
    "namespace": "{% set ns = namespace(v=name) %}{{ ns.v|upper }}",
    "cycler": "{{ cycler(name, email).next()|upper }}",
    "with-block": "{% with n = name %}{{ n|lower }}{% endwith %}",
    "for-over-fields": "{% for v in [name, email] %}{{ v|length }};{% endfor %}",
    # text built from a value (~, %, format, set), then worked on
    "concat-slice": "{{ (name ~ '')[0:3] }}",
    "concat-upper-method": "{{ (name ~ '').upper() }}",
    "concat-title-method": "{{ (name ~ '').title() }}",
    "concat-startswith": "{{ (name ~ '').startswith('A') }}",
    "concat-compare": "{% if (name ~ '') == 'Bo' %}hi Bo{% else %}hi you{% endif %}",
    "concat-truthiness": "{% if name ~ '' %}Dear {{ name }}{% else %}Dear reader{% endif %}",
    "concat-in": "{{ 'Ann' in (name ~ '') }}",
    "concat-iterate": "{% for c in (name ~ '') %}{{ c }}.{% endfor %}",
    "concat-center-method": "{{ (name ~ '').center(20, '*') }}",
    "percent-precision": "{{ '%.3s' % name }}",
    "percent-repr": "{{ '%r' % name }}",
    "str-format-precision": "{{ '{!s:.4}'.format(name) }}",
    "str-format-plain": "{{ 'Hi {}!'.format(name) }}",
    "set-block-slice": "{% set g %}Dear {{ name }}{% endset %}{{ g[:8] }}",
    "macro-result-slice": "{% macro m(x) %}{{ x }}{% endmacro %}{{ m(name)[0:2] }}",
    "join-with-field-separator": "{{ [name, 'x']|join(email) }}",
    "print-list": "{{ [name] }}",
    "print-dict": "{{ {'n': email} }}",
    "string-of-list": "{{ [email]|string }}",
    "sum-of-lengths": "{{ [name|length, email|length]|sum }}",
    "sort-fields": "{{ [name, email]|sort|join(',') }}",
    "dictsort-values": "{{ {'a': email, 'b': name}|dictsort|map('last')|join('|') }}",
    # what fails for some recipients only (a per-recipient render errors for them)
    "index-past-short-names": "{{ name[5] }}",
    "first-of-empty": "{{ name|first }}",
    "format-d": "{{ '%d'|format(subscriber.city) }}",
    "round-of-string": "{{ name|round }}",
}


HTML_SNIPPETS = {
    key: SNIPPETS[key]
    for key in (
        "upper",
        "urlencode-plus",
        "replace",
        "slice",
        "truncate",
        "length",
        "format-two-fields",
        "join-list-of-fields",
        "map-upper-join",
        "chained",
        "macro",
        "filter-block",
        "set-block-then-filter",
        "striptags",
        "tojson",
        "concat-slice",
        "concat-upper-method",
        "concat-compare",
        "concat-truthiness",
        "percent-precision",
        "percent-repr",
        "join-with-field-separator",
        "print-list",
        "set-block-slice",
        "index-past-short-names",
        "format-d",
    )
} | {
    "replace-lt": "{{ name|replace('<', '[') }}",
    "escape-then-replace": "{{ name|e|replace('&amp;', 'and') }}",
    "urlize": "{{ name|urlize }}",
    "xmlattr-field": "<span{{ {'title': name}|xmlattr }}>x</span>",
    "attribute-value": '<a title="{{ name|upper }}">x</a>',
    "forceescape": "{{ name|forceescape }}",
}


def reference(snippet: str, person: dict[str, str], *, autoescape: bool) -> str:
    """What a per-recipient Jinja2 render gives for this person."""
    env = ImmutableSandboxedEnvironment(
        autoescape=autoescape, undefined=jinja2.StrictUndefined, keep_trailing_newline=True,
        trim_blocks=True, lstrip_blocks=True,
    )  # fmt: skip
    subscriber = dict(person)
    return env.from_string(snippet).render(name=person["name"], email=person["email"], subscriber=subscriber)


def fails_for_somebody(snippet: str, *, autoescape: bool) -> bool:
    for person in PEOPLE:
        try:
            reference(snippet, person, autoescape=autoescape)
        except Exception:  # any failure of the reference render counts
            return True
    return False


def scoped(key: str, snippet: str) -> str:
    """A snippet in a scope of its own ({% set %} stays inside), between markers naming it."""
    return f"⟦{key}⟧{{% with %}}{snippet}{{% endwith %}}⟦/{key}⟧"


def judge_all(scene: dict[str, Path], messages: list[bytes], snippets: dict[str, str], *, html: bool) -> None:
    """Every message equals its recipient's reference (a stock Jinja2 render, then premailer:
    tests/template_reference.py); each snippet is checked where it stands, for a readable
    failure, then the whole message."""
    settings = Settings.from_mapping(settings_values(scene["tmp"], SMTP_PASSWORD=SECRET, SMTP_USER="mailer"))
    issue = plan_issue(scene["article"], scene["list"], settings, template_dir=scene["tpl"])
    assert len(messages) == len(PEOPLE)
    for data in messages:
        assert not tokens_in(unfolded_qp(data).decode("utf-8", "replace")), "an internal token leaked"
        message = parse(data)
        address = message["To"].addresses[0].addr_spec
        sub = next(s for s in recipients(issue) if s.email == address)
        expected = render(
            scene["tpl"], recipient_context(issue, sub, issue.factory.unsubscribe_target(address))
        )
        if not html:
            person = next(p for p in PEOPLE if p["email"] == address)
            shown = wire_text(message)
            for key, snippet in snippets.items():
                got = f"⟦{key}⟧{between(shown, f'⟦{key}⟧', f'⟦/{key}⟧')}⟦/{key}⟧"
                assert got == reference(scoped(key, snippet), person, autoescape=False), f"{address}, {key}"
        assert_exact(message, expected, address)


def passing(snippets: dict[str, str], *, html: bool) -> dict[str, str]:
    return {k: v for k, v in snippets.items() if not fails_for_somebody(v, autoescape=html)}


def failing(snippets: dict[str, str], *, html: bool) -> dict[str, str]:
    return {k: v for k, v in snippets.items() if fails_for_somebody(v, autoescape=html)}


def combined(snippets: dict[str, str], *, html: bool) -> str:
    body = "".join(scoped(k, v) for k, v in snippets.items())
    return (HTML_WRAP if html else TEXT_WRAP).replace("[[[@@]]]" if html else "⟦@@⟧", body)


@pytest.mark.parametrize("html", [False, True], ids=["text", "html"])
def test_every_snippet_matches_a_per_recipient_render(
    invoke: Invoke, scene: dict[str, Path], html: bool
) -> None:
    """Values in filters, tests, slices, methods, comparisons, macros, blocks: each message
    shows exactly what the recipient's own render shows, and no internal token anywhere."""
    snippets = passing(HTML_SNIPPETS if html else SNIPPETS, html=html)
    (scene["tpl"] / ("email.html" if html else "email.txt")).write_text(
        combined(snippets, html=html), encoding="utf-8"
    )
    result = dry_run(invoke, scene)
    no_crash(result.stderr)
    assert result.exit_code == 0, result.stdout + result.stderr
    assert not tokens_in(outputs(result, scene["out"]))
    judge_all(scene, [p.read_bytes() for p in eml_files(scene["out"])], snippets, html=html)


FAILING = {f"text-{k}": (v, False) for k, v in failing(SNIPPETS, html=False).items()} | {
    f"html-{k}": (v, True) for k, v in failing(HTML_SNIPPETS, html=True).items()
}


@pytest.mark.parametrize(("snippet", "html"), FAILING.values(), ids=FAILING.keys())
def test_a_template_failing_for_one_row_stops_the_run_naming_line_and_row(
    invoke: Invoke, scene: dict[str, Path], snippet: str, html: bool
) -> None:
    name = "email.html" if html else "email.txt"
    (scene["tpl"] / name).write_text(combined({"x": snippet}, html=html), encoding="utf-8")
    result = dry_run(invoke, scene)
    assert result.exit_code == 2, result.stdout + result.stderr
    judge_error(result.stderr, str(scene["tpl"] / name), "line ", f"{scene['list']} line ")
    assert not eml_files(scene["out"]), "nothing is written for a run that stops"


def test_real_send_matches_a_per_recipient_render(
    invoke: Invoke, scene: dict[str, Path], relay: Relays
) -> None:
    server: Server = relay.start()
    env = settings_file(scene["tmp"], server, name="send.env")
    snippets = passing(SNIPPETS, html=False)
    (scene["tpl"] / "email.txt").write_text(combined(snippets, html=False), encoding="utf-8")
    result = invoke(
        "send", scene["article"], "-s", scene["list"], "--env-file", env, "--template", scene["tpl"], "--yes",
    )  # fmt: skip
    no_crash(result.stderr)
    assert result.exit_code == 0, result.stdout + result.stderr
    judge_all(scene, [r.data for r in server.received], snippets, html=False)


def test_real_send_failing_for_one_row_sends_nothing(
    invoke: Invoke, scene: dict[str, Path], relay: Relays
) -> None:
    server: Server = relay.start()
    env = settings_file(scene["tmp"], server, name="send.env")
    (scene["tpl"] / "email.txt").write_text(
        combined({"x": SNIPPETS["format-d"]}, html=False), encoding="utf-8"
    )
    result = invoke(
        "send", scene["article"], "-s", scene["list"], "--env-file", env, "--template", scene["tpl"], "--yes",
    )  # fmt: skip
    assert result.exit_code == 2
    judge_error(result.stderr, "email.txt", "line ", f"{scene['list']} line 2")
    assert server.received == []


def test_no_token_in_subject_or_headers_from_a_hostile_front_matter(
    invoke: Invoke, scene: dict[str, Path]
) -> None:
    """Front matter can't smuggle a field into headers: the token pattern must not be guessable."""
    article = scene["tmp"] / "tricky.md"
    article.write_text(
        "---\ntitle: 'zqx000000000000f0xqz and {{ name }}'\nsubject: '{{ email }} zqx'\n---\n\nBody.\n",
        encoding="utf-8",
    )
    (scene["tpl"] / "email.txt").write_text(TEXT_WRAP.replace("@@", "{{ article.title }}"), encoding="utf-8")
    result = invoke(
        "send", article, "-s", scene["list"], "--env-file", scene["env"], "--template", scene["tpl"],
        "--dry-run", "--out", scene["out"],
    )  # fmt: skip
    no_crash(result.stderr)
    assert len(eml_files(scene["out"])) == len(PEOPLE), result.stdout + result.stderr
    for path in eml_files(scene["out"]):
        message = parse(path.read_bytes())
        assert "{{ email }}" in str(message["Subject"])
        assert between(part(message, "plain"), "⟦", "⟧") == "zqx000000000000f0xqz and {{ name }}"


def test_a_subscriber_value_shaped_like_a_token_stays_literal(invoke: Invoke, scene: dict[str, Path]) -> None:
    people = [dict(PEOPLE[0], name="zqx0f0xqz zqxABCDEFf1xqz {{ email }}"), PEOPLE[1]]
    write_people(scene["list"], people)
    (scene["tpl"] / "email.txt").write_text(
        TEXT_WRAP.replace("@@", "{{ name|upper }}|{{ name }}"), encoding="utf-8"
    )
    result = dry_run(invoke, scene)
    no_crash(result.stderr)
    texts = {parse(p.read_bytes())["To"].addresses[0].addr_spec: part(parse(p.read_bytes()), "plain")
             for p in eml_files(scene["out"])}  # fmt: skip
    name = people[0]["name"]
    assert between(texts[people[0]["email"]], "⟦", "⟧") == f"{name.upper()}|{name}"
    assert re.search(r"zqx[0-9a-f]{12}f\d+xqz", texts[people[1]["email"]], re.I) is None


def test_columns_a_template_names_alike_each_keep_their_own_value(
    invoke: Invoke, scene: dict[str, Path]
) -> None:
    """``Plan`` and ``plan`` are both ``subscriber.plan``: each header still reaches its own
    column (``subscriber.plan`` is the column named exactly so), and the run says so."""
    people = scene["tmp"] / "plans.csv"
    people.write_text(
        "email,name,Plan,plan,First Name,first name\n"
        "ann@example.org,Ann,member,gold,Ann-first,ann-lower\n"
        "bob@example.com,Bob,guest,silver,Bob-first,bob-lower\n",
        encoding="utf-8",
    )
    (scene["tpl"] / "email.txt").write_text(
        '{% if subscriber.plan == "gold" %}GOLD{% else %}OTHER{% endif %} '
        '[{{ subscriber["Plan"] }}/{{ subscriber["plan"] }}/{{ subscriber.first_name }}/'
        '{{ subscriber["first name"] }}] {{ unsubscribe_url }} {{ postal_address }}\n',
        encoding="utf-8",
    )
    result = invoke(
        "send", scene["article"], "-s", people, "--env-file", scene["env"], "--template", scene["tpl"],
        "--dry-run", "--out", scene["out"],
    )  # fmt: skip
    assert result.exit_code == 0, result.stderr
    texts = {
        str(parse(path.read_bytes())["To"]): part(parse(path.read_bytes()), "plain")
        for path in eml_files(scene["out"])
    }
    ann = next(t for to, t in texts.items() if "ann@" in to)
    bob = next(t for to, t in texts.items() if "bob@" in to)
    assert "GOLD [member/gold/Ann-first/ann-lower]" in ann
    assert "OTHER [guest/silver/Bob-first/bob-lower]" in bob
    assert "are all subscriber.plan in a template, which gives 'plan'" in result.stdout + result.stderr
    assert "subscriber['Plan']" in result.stdout + result.stderr


def test_a_syntax_error_in_an_included_file_names_the_file_not_a_row(scene: dict[str, Path]) -> None:
    (scene["tpl"] / "part.txt").write_text("Hello\n{% if %}\n", encoding="utf-8")
    (scene["tpl"] / "email.txt").write_text(
        '{% include "part.txt" %}{{ unsubscribe_url }} {{ postal_address }}\n', encoding="utf-8"
    )
    result = _capped_dry_run(scene)
    assert result.returncode == 2, result.stdout + result.stderr
    judge_error(result.stderr, "part.txt")
    assert "line 2" in result.stderr
    assert "it fails for" not in result.stderr  # (it fails for every row alike)
