"""Settings files and the README's settings table, written from the one table of settings:
``.env.example`` in the repository and the ``.env`` that ``dispatch init`` writes are the same
text but for a few values (``init`` makes a fresh unsubscribe secret), so they can never
disagree with each other or with what the parser reads."""

from __future__ import annotations

from collections.abc import Mapping

from dispatch.settings.table import SETTINGS, Setting

EXAMPLE_HEADER = """\
# dispatch settings: the example the README's quick start uses. To start a newsletter of your
# own, run `dispatch init DIR` instead (it writes this file with a fresh secret), or copy this
# file to .env (chmod 600 .env) and replace every value marked EDIT.
"""
INIT_HEADER = """\
# dispatch settings for this newsletter, written by `dispatch init` on {today}.
# Readable by you only (0600): it holds the unsubscribe secret, and later the SMTP password.
"""
COMMON_HEADER = """\
# Real environment variables beat this file; command-line options beat both.
#
# As written, a dry run works at once, and shows what a real send would refuse: every value
# marked EDIT is an example that a real send refuses until you replace it.
# A line that starts with # is off: remove the # to set it. An empty value means the default.
"""
_QUOTE_IF = set(" #'\"\\<>$`")


def _quoted(value: str) -> str:
    if not (set(value) & _QUOTE_IF):
        return value
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _line(setting: Setting, values: Mapping[str, str]) -> str:
    if setting.key in values:
        return f"{setting.key}={_quoted(values[setting.key])}"
    if setting.example is not None:
        return f"{setting.key}={_quoted(setting.example)}"
    return f"# {setting.key}={_quoted(setting.sample) if setting.sample else ''}"


def env_text(header: str, values: Mapping[str, str] | None = None) -> str:
    """A settings file naming every setting, grouped by section with its comments; ``values``
    replace the table's examples (``init``'s own secret)."""
    chosen = dict(values or {})
    lines = [header.rstrip("\n"), COMMON_HEADER.rstrip("\n")]
    section = ""
    for setting in SETTINGS:
        if setting.section != section:
            section = setting.section
            lines += ["", f"# --- {section} " + "-" * max(3, 88 - len(section))]
        lines += [f"# {row}".rstrip() for row in setting.comment.splitlines()]
        lines.append(_line(setting, chosen))
    return "\n".join(lines) + "\n"


def readme_table() -> str:
    """The README's settings table (Markdown), one row per setting."""
    rows = ["| setting | meaning | default |", "| --- | --- | --- |"]
    rows += [f"| `{s.key}` | {s.help} | {s.shown_default} |" for s in SETTINGS]
    return "\n".join(rows) + "\n"


def example_text() -> str:
    """``.env.example``: the README's quick start uses it as it is."""
    return env_text(EXAMPLE_HEADER, {"DISPATCH_SUBSCRIBERS": "subscribers.example.csv"})


if __name__ == "__main__":  # python -m dispatch.settings.envfile [example|readme] > FILE
    import sys

    print(readme_table() if sys.argv[1:] == ["readme"] else example_text(), end="")
