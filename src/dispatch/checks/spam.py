"""``dispatch check --spam``: one rendered message scored by SpamAssassin with its local
rules only (no network, nothing learned or written)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
from dataclasses import dataclass

from dispatch.checks.rules import CheckError


@dataclass(frozen=True)
class SpamRule:
    """One SpamAssassin rule that fired."""

    name: str
    points: float
    description: str


@dataclass(frozen=True)
class SpamReport:
    """SpamAssassin's verdict on one message (local rules only)."""

    score: float
    required: float
    rules: tuple[SpamRule, ...]

    @property
    def is_spam(self) -> bool:
        return self.score >= self.required


def spamassassin_missing() -> str | None:
    """A one-line note when ``spamassassin`` is not installed; None when it is."""
    if shutil.which("spamassassin"):
        return None
    return "spamassassin is not installed, so no spam score: install it (apt-get install spamassassin)"


_STATUS = re.compile(
    r"^X-Spam-Status:\s*\w+,\s*score=(-?[\d.]+)\s+required=(-?[\d.]+)(?:\s+tests=(\S*))?", re.M
)
_RULE = re.compile(r"^\s*(-?\d+(?:\.\d+)?)\s+([A-Z0-9_]+)\s+(.*)$")


def parse_spam_report(output: str) -> SpamReport:
    """Parse ``spamassassin -t`` output: its X-Spam-Status header and the table of rules."""
    head = re.sub(r"\n[ \t]+", " ", output.replace("\r\n", "\n").split("\n\n", 1)[0])
    status = _STATUS.search(head)
    if status is None:
        raise CheckError(
            "spamassassin wrote no X-Spam-Status header; run spamassassin -L -t by hand to see why"
        )
    rules: list[SpamRule] = []
    for line in output.rpartition("---- ----")[2].splitlines()[1:] if "---- ----" in output else []:
        if match := _RULE.match(line):
            rules.append(SpamRule(match[2], float(match[1]), match[3].strip()))
        elif line.strip() and line[0].isspace() and rules:  # a description's next line
            rules[-1] = SpamRule(rules[-1].name, rules[-1].points, f"{rules[-1].description} {line.strip()}")
        elif not line.strip():
            break
    named = {r.name for r in rules}
    rules += [SpamRule(n, 0.0, "") for n in (status[3] or "").split(",") if n and n not in named]
    return SpamReport(float(status[1]), float(status[2]), tuple(rules))


def spam_report(message: bytes, *, timeout: float = 120.0) -> SpamReport | None:
    """Score one message with ``spamassassin -L -t`` (local rules: no network; nothing learned
    or written); None when spamassassin is not installed (see :func:`spamassassin_missing`)."""
    program = shutil.which("spamassassin")
    if program is None:
        return None
    command = [program, "-L", "-t", "-x", "--cf=bayes_auto_learn 0"]
    try:  # a HOME of its own: spamassassin makes ~/.spamassassin even with -x
        with tempfile.TemporaryDirectory(prefix="dispatch-spam-") as home:
            env = {**os.environ, "HOME": home}
            done = subprocess.run(
                command, input=message, capture_output=True, timeout=timeout, check=False, env=env
            )
    except subprocess.TimeoutExpired as err:
        raise CheckError(f"spamassassin took over {timeout:g}s to score one message; try again") from err
    except OSError as err:
        raise CheckError(f"spamassassin could not run ({err.strerror})") from err
    if done.returncode != 0:
        last = (done.stderr.decode("utf-8", "replace").strip().splitlines() or ["no message"])[-1]
        raise CheckError(f"spamassassin failed (exit {done.returncode}): {last}")
    return parse_spam_report(done.stdout.decode("utf-8", "replace"))
