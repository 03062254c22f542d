"""Every message equals a per-recipient Jinja2 render plus premailer (tests/template_reference.py).

Templates that use recipient values every way the Jinja2 language allows — segments, ``or``
defaults, loops over a split column, filters, macros, ``{% set %}`` and ``{% filter %}`` blocks,
values in attributes, in ``<style>``-read places, in included, imported and extended templates —
are sent to a list whose values hold HTML specials, the slot tokens' own characters, empty
strings, long, non-Latin and right-to-left text. Each message the dry run writes, and each one
a real SMTP server receives, must equal the reference: nothing is refused that the reference
renders, and a render that fails for one row stops the run before anything is sent.
"""

from __future__ import annotations

import csv
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dispatch.compose.issue import Issue, plan_issue, recipients
from dispatch.lists.subscribers import Subscriber, clean_value
from dispatch.settings import Settings
from tests.attack_helpers import eml_files, judge_error, no_crash, parse, tokens_in, unfolded_qp
from tests.conftest import BASE_ENV
from tests.smtp_servers import Server
from tests.template_reference import assert_exact, recipient_context, render

Invoke = Callable[..., Any]
COLUMNS = ["email", "name", "plan", "tags", "city", "bio", "site", "Signup Date"]
LONG = "Un très long texte, répété pour dépasser une ligne de courriel. " * 12
PEOPLE = [
    ["ann@example.org", "Ann Example", "member", "news,events", "Paris", "Writes <b>bold</b> & more",
     "https://example.org/ann", "2024-01-02"],
    ["bob@example.com", "Bo", "guest", "news", "Oslo", "", "https://example.com/b?x=1&y=2", ""],
    ["dan@example.org", "", "member", "", "Rome", "a b", "", "2023-12-31"],
    ["eve@example.org", 'Ève <Ø> & "co" \'x\'', "guest", "a,b,c", "Zürich", 'Ève <Ø> & "co"',
     "https://example.org/ü path", "x"],
    ["tok@example.org", "zqx0f0xqz \ue000\ue001 zqx0123456789abf1xqz", "member", "x,\ue000", "\ue001",
     "zqxcachednonce0f3xqz", "https://example.org/zqx0f0xqz", "1"],
    ["yam@example.org", "山田 太郎", "guest", "日本,東京", "東京", "長い文章です。" * 40, "https://例え.jp/",
     "2"],
    ["rtl@example.org", "محمد العربي", "member", "أخبار,فعاليات", "القاهرة", "نص عربي " * 20,
     "https://example.org/ar", "3"],
    ["long@example.org", "Zoë Łukasiewicz-Ørsted", "guest", LONG[:80], "São Paulo", LONG,
     "https://example.org/" + "a" * 90, "4"],
]  # fmt: skip

CASES = Path(__file__).parent / "template_cases"  # one template folder per case, named for what it does
TEMPLATES = sorted(p.name for p in CASES.iterdir() if p.name != "property")
ACCEPTANCE = "acceptance-segments-defaults-loop-upper"
TEXT_FOOTER = "\n-- \n{{ email }}\nUnsubscribe: {{ unsubscribe_url }}\n{{ postal_address }}\n"
PAGE = (CASES / ACCEPTANCE / "email.html").read_text(encoding="utf-8")


def write_people(path: Path, people: list[list[str]] = PEOPLE) -> Path:
    with path.open("w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(COLUMNS)
        writer.writerows(people)
    return path


def write_templates(folder: Path, files: dict[str, str]) -> Path:
    folder.mkdir(exist_ok=True)
    for name, source in files.items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_text(source, encoding="utf-8")
    return folder


def case(name: str, folder: Path) -> Path:
    """A copy of tests/template_cases/<name> in ``folder``."""
    shutil.copytree(CASES / name, folder)
    return folder


UNSUBSCRIBE = "https://example.org/u?list=news&t={token}"


@pytest.fixture
def env(env: dict[str, str]) -> dict[str, str]:
    """The shared settings, with an unsubscribe link of two query parameters."""
    return {**env, "DISPATCH_UNSUBSCRIBE_URL": UNSUBSCRIBE}


@pytest.fixture
def scene(tmp_path: Path, write_file: Callable[..., Path]) -> dict[str, Path]:
    article = write_file(
        "issue.md",
        "---\ntitle: Spring update\ndate: 2026-03-01\n---\n\nThe garden opens on **Saturday**; bring "
        "[gloves](https://example.org/gloves).\n\n> Plant early.\n\n- seeds\n- water\n",
    )
    return {"article": article, "list": write_people(tmp_path / "people.csv"), "tpl": tmp_path / "tpl",
            "out": tmp_path / "out"}  # fmt: skip


def references(issue: Issue, template_dir: Path | None) -> dict[str, tuple[str, str]]:
    """Each recipient's reference (HTML, text), by address."""
    found = {}
    for sub in recipients(issue):
        link = issue.factory.unsubscribe_target(sub.email)
        found[sub.email] = render(template_dir, recipient_context(issue, sub, link))
    return found


def judge(messages: list[bytes], expected: dict[str, tuple[str, str]]) -> None:
    assert len(messages) == len(expected)
    for data in messages:
        message = parse(data)
        address = message["To"].addresses[0].addr_spec
        shown = "".join(expected[address])  # a value may look like a token: it is then shown as it is
        leaked = [t for t in tokens_in(unfolded_qp(data).decode("utf-8", "replace")) if t not in shown]
        assert not leaked, f"a slot token leaked: {leaked}"
        assert_exact(message, expected[address], address)


@pytest.mark.parametrize("name", TEMPLATES)
def test_every_message_of_a_dry_run_equals_a_per_recipient_render(
    invoke: Invoke, env_file: Callable[..., Path], env: dict[str, str], scene: dict[str, Path], name: str
) -> None:
    template = case(name, scene["tpl"])
    result = invoke(
        "send", scene["article"], "-s", scene["list"], "--env-file", env_file(), "--template", template,
        "--dry-run", "--out", scene["out"],
    )  # fmt: skip
    no_crash(result.stderr)
    assert result.exit_code == 0, result.stdout + result.stderr
    issue = plan_issue(scene["article"], scene["list"], Settings.from_mapping(env), template_dir=template)
    judge([p.read_bytes() for p in eml_files(scene["out"])], references(issue, template))


SENT = [
    "acceptance-segments-defaults-loop-upper",
    "value-in-a-style-attribute-and-class",
    "include-import-extends",
]


@pytest.mark.parametrize("name", SENT)
def test_every_message_a_real_server_receives_equals_a_per_recipient_render(
    invoke: Invoke, env_file: Callable[..., Path], env: dict[str, str], scene: dict[str, Path],
    plain_server: Server, name: str,
) -> None:  # fmt: skip
    template = case(name, scene["tpl"])
    settings = env_file(**plain_server.env())
    result = invoke(
        "send", scene["article"], "-s", scene["list"], "--env-file", settings, "--template", template, "--yes"
    )
    no_crash(result.stderr)
    assert result.exit_code == 0, result.stdout + result.stderr
    issue = plan_issue(scene["article"], scene["list"], Settings.from_mapping(env), template_dir=template)
    judge([r.data for r in plain_server.received], references(issue, template))


def test_segments_are_inlined_once_each_with_their_own_css(
    env: dict[str, str], scene: dict[str, Path]
) -> None:
    """The acceptance template: premailer works once per segment (members; guests, whose
    name is printed upper-case; guests without a name), and the CSS of a segment-only element is
    inlined into it. The shared renders stay shared: each was checked against a real one."""
    template = case(ACCEPTANCE, scene["tpl"])
    people = [[f"m{i}@example.org", f"Member {i}", "member", "news", "Oslo", "", "", ""] for i in range(20)]
    people += [[f"g{i}@example.org", f"Guest {i}", "guest", "a,b", "Rome", "", "", ""] for i in range(20)]
    people += [[f"n{i}@example.org", "", "guest", "a,b", "Rome", "", "", ""] for i in range(20)]
    issue = plan_issue(scene["article"], write_people(scene["list"], people), Settings.from_mapping(env),
                       template_dir=template)  # fmt: skip
    for sub in recipients(issue):
        issue.message(sub)
    personal = issue.rendered.personal
    assert personal.inlined == 3, "one document per segment"
    assert personal.shared
    expected = references(issue, template)
    for sub in recipients(issue):
        html, _ = issue.bodies(sub)
        assert html.count('style="') == expected[sub.email][0].count('style="')
        if sub.fields["plan"] == "member":
            assert "color:#060" in html.replace(" ", "")  # cssutils writes colours short
        else:
            assert "color:#600" in html.replace(" ", "")


def test_a_render_that_is_not_repeatable_is_not_shared(env: dict[str, str], scene: dict[str, Path]) -> None:
    """``random`` gives another text on each render: checking a shared render against a real
    one finds it, and every recipient gets a render of their own."""
    template = case(ACCEPTANCE, scene["tpl"])
    (template / "email.txt").write_text("{{ range(10 ** 5) | random }}\n" + TEXT_FOOTER, encoding="utf-8")
    issue = plan_issue(scene["article"], scene["list"], Settings.from_mapping(env), template_dir=template)
    texts = {issue.bodies(sub)[1].split("\n", 1)[0] for sub in recipients(issue)}
    assert not issue.rendered.personal.shared
    assert len(texts) > 1


def test_a_template_failing_for_one_row_names_the_line_and_the_row_before_any_message(
    invoke: Invoke, env_file: Callable[..., Path], scene: dict[str, Path], plain_server: Server
) -> None:
    """``name[3]`` works for every row but Bo's (line 3): the send stops before its first message."""
    source = "Dear {{ name }}\n\n{{ name[3] if name else '' }}\n" + TEXT_FOOTER
    template = write_templates(scene["tpl"], {"email.txt": source})
    settings = env_file(**plain_server.env())
    result = invoke("send", scene["article"], "-s", scene["list"], "--env-file", settings, "--template",
                    template, "--yes")  # fmt: skip
    assert result.exit_code == 2
    line = judge_error(result.stderr, f"{template / 'email.txt'} line 3", f"{scene['list']} line 3")
    assert "str object has no element 3" in line  # what Jinja2 says for the plain string
    assert plain_server.received == []


def test_a_dry_run_and_the_send_after_it_give_the_same_bytes(
    invoke: Invoke, env_file: Callable[..., Path], scene: dict[str, Path], plain_server: Server
) -> None:
    template = case(ACCEPTANCE, scene["tpl"])
    settings = env_file(**plain_server.env())
    common = ["send", scene["article"], "-s", scene["list"], "--env-file", settings, "--template", template]
    assert invoke(*common, "--dry-run", "--out", scene["out"]).exit_code == 0
    assert invoke(*common, "--yes").exit_code == 0

    def undated(data: bytes) -> bytes:
        return b"\r\n".join(line for line in data.split(b"\r\n") if not line.startswith(b"Date: "))

    previewed = sorted(undated(p.read_bytes()) for p in eml_files(scene["out"]))
    assert previewed == sorted(undated(r.data) for r in plain_server.received)


def test_many_documents_to_inline_are_announced_by_the_dry_run(
    invoke: Invoke, env_file: Callable[..., Path], scene: dict[str, Path]
) -> None:
    segments = '<p class="who-{{ name | length }}">{{ name }}</p>'  # a class of its own for each length
    html = PAGE.split("{% if", 1)[0] + segments + PAGE.split("</ul>", 1)[1]
    template = write_templates(scene["tpl"], {"email.html": html})
    people = [[f"r{i}@example.org", "x" * i, "", "", "", "", "", ""] for i in range(1, 21)]
    write_people(scene["list"], people)
    result = invoke("send", scene["article"], "-s", scene["list"], "--env-file", env_file(), "--template",
                    template, "--dry-run")  # fmt: skip
    assert result.exit_code == 0, result.stdout + result.stderr
    shown = " ".join(result.stdout.split())
    assert "premailer runs for each of 20 different HTML documents among 20 messages" in shown
    assert f"{template / 'email.html'} line" in shown


# characters that matter to HTML, URLs, comments and the slot tokens, and a few scripts
VALUE_ALPHABET = [
    *"aZ09 <>&\"'=/?#;%-!.:@,_~\t",
    "\ue000",
    "\ue001",
    "é",
    "王",
    "ا",
    "zqx",
    "&amp;",
    "\u00a0",
]


@pytest.fixture(scope="module")
def property_issue(tmp_path_factory: pytest.TempPathFactory) -> tuple[Issue, Path]:
    folder = tmp_path_factory.mktemp("property")
    template = case("property", folder / "tpl")
    article = folder / "issue.md"
    article.write_text("---\ntitle: Property\n---\n\nA body.\n", encoding="utf-8")
    people = write_people(folder / "people.csv", PEOPLE[:2])
    settings = {
        **BASE_ENV,
        "DISPATCH_STATE_DIR": str(folder / "state"),
        "DISPATCH_UNSUBSCRIBE_URL": UNSUBSCRIBE,
    }
    return plan_issue(article, people, Settings.from_mapping(settings), template_dir=template), template


@settings(
    max_examples=60,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(st.lists(st.lists(st.sampled_from(VALUE_ALPHABET), max_size=8).map("".join), min_size=5, max_size=5))
def test_any_values_give_the_reference_message(property_issue: tuple[Issue, Path], texts: list[str]) -> None:
    issue, template = property_issue
    name, city, bio, plan, site = (clean_value(t) for t in texts)
    fields = dict(zip(COLUMNS, ["p@example.org", name, plan, "", city, bio, site, ""], strict=True))
    sub = Subscriber("p@example.org", name, 2, fields)
    data, _ = issue.message(sub)
    expected = render(template, recipient_context(issue, sub, issue.factory.unsubscribe_target(sub.email)))
    assert_exact(parse(data), expected, repr(texts))
