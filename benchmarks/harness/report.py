"""Rows, per-round ratios and targets, and the Markdown they print as."""

from __future__ import annotations

import contextlib
import platform
import statistics
import subprocess
from dataclasses import dataclass, field
from pathlib import Path


@dataclass(frozen=True)
class Target:
    """``≥ 5×``, ``≤ 128 MB``: what issue 8 asks for a figure."""

    op: str  # ">=" or "<="
    value: float
    text: str
    on: str = "median"  # or "rss": the row's peak RSS

    def verdict(self, value: float) -> str:
        met = value >= self.value if self.op == ">=" else value <= self.value
        if met:
            return f"{self.text}: met"
        if self.op == ">=":
            return f"{self.text}: **missed** ({value / self.value:.0%} of it)"
        return f"{self.text}: **missed** ({value / self.value:.1f}× over)"


@dataclass
class Row:
    """A measured variant: one sample per round (msgs/s, seconds…), with CPU per message and
    peak RSS per round when the variant is a whole process."""

    section: str
    label: str
    samples: list[float] = field(default_factory=list)
    unit: str = "msgs/s"
    digits: int = 0
    cpu_ms: list[float] = field(default_factory=list)  # CPU ms per message (or per run)
    rss_mb: list[float] = field(default_factory=list)
    targets: tuple[Target, ...] = ()
    note: str = ""
    missing: str = ""  # why there is no figure (not available yet, cannot run here)
    chart: str = ""  # which chart panel shows it, if any

    @property
    def median(self) -> float:
        return statistics.median(self.samples)

    def add(self, value: float, *, cpu_ms: float | None = None, rss_mb: float | None = None) -> None:
        self.samples.append(value)
        if cpu_ms is not None:
            self.cpu_ms.append(cpu_ms)
        if rss_mb is not None:
            self.rss_mb.append(rss_mb)


@dataclass
class Ratio:
    """A figure derived round by round from two rows that ran side by side (a ratio, a cost in
    %): the median of the per-round values, with their min..max."""

    section: str
    label: str
    values: list[float]
    unit: str = "×"
    digits: int = 2
    target: Target | None = None
    note: str = ""

    @property
    def median(self) -> float:
        return statistics.median(self.values)


@dataclass
class Report:
    rows: list[Row | Ratio] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def row(self, section: str, label: str, **kwargs: object) -> Row:
        made = Row(section, label, **kwargs)  # type: ignore[arg-type]
        self.rows.append(made)
        return made

    def missing(self, section: str, label: str, why: str) -> Row:
        return self.row(section, label, missing=why)

    def ratio(
        self, section: str, label: str, top: Row, bottom: Row, *, target: Target | None = None,
        note: str = "",
    ) -> Ratio:  # fmt: skip
        """top / bottom in each round (the two ran in the same round)."""
        values = [a / b for a, b in zip(top.samples, bottom.samples, strict=True) if b]
        made = Ratio(section, label, values, target=target, note=note)
        if values:
            self.rows.append(made)
        return made

    def cost(
        self, section: str, label: str, with_it: Row, without: Row, *, target: Target | None = None
    ) -> None:
        """Throughput lost to a feature, in %: 1 − with/without in each round."""
        values = [100 * (1 - a / b) for a, b in zip(with_it.samples, without.samples, strict=True) if b]
        if values:
            self.rows.append(Ratio(section, label, values, unit="%", digits=0, target=target))


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _num(value: float, digits: int) -> str:
    return f"{value:,.{digits}f}"


def _spread(values: list[float], digits: int) -> str:
    if len(values) < 2:
        return "(1 run)"
    return f"{_num(min(values), digits)}..{_num(max(values), digits)}"


def render_table(report: Report) -> str:
    lines = [
        "| # | measure | median | min..max | unit | CPU per msg | peak RSS | target | note |",
        "| --- | --- | ---: | ---: | --- | ---: | ---: | --- | --- |",
    ]
    for row in report.rows:
        if isinstance(row, Ratio):
            verdict = row.target.verdict(row.median) if row.target else ""
            lines.append(
                f"| {row.section} | **{row.label}** | **{_num(row.median, row.digits)}{row.unit}** "
                f"| {_spread(row.values, row.digits)} | per round | | | {verdict} | {row.note} |"
            )
        elif row.missing or not row.samples:
            lines.append(f"| {row.section} | {row.label} | — | | | | | | {_cell(row.missing or 'no data')} |")
        else:
            cpu = f"{statistics.median(row.cpu_ms):.2f} ms" if row.cpu_ms else ""
            rss = f"{statistics.median(row.rss_mb):,.0f} MB" if row.rss_mb else ""
            verdict = "; ".join(
                t.verdict(statistics.median(row.rss_mb) if t.on == "rss" else row.median) for t in row.targets
            )
            spread = _spread(row.samples, row.digits)
            lines.append(
                f"| {row.section} | {row.label} | {_num(row.median, row.digits)} | {spread} | {row.unit} "
                f"| {cpu} | {rss} | {verdict} | {row.note} |"
            )
    return "\n".join(lines)


def _read(path: str) -> str:
    with contextlib.suppress(OSError):
        return Path(path).read_text()
    return ""


def _output(cmd: list[str], cwd: Path | None = None) -> str:
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        done = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=10, check=False)
        if done.returncode == 0:
            return done.stdout.strip()
    return ""


def machine() -> str:
    """CPU model and count, memory, OS, kernel, Python."""
    cpuinfo = _read("/proc/cpuinfo").splitlines()
    model = next((line.split(":", 1)[1].strip() for line in cpuinfo if line.startswith("model name")), "?")
    meminfo = _read("/proc/meminfo").splitlines()
    kib = next((int(line.split()[1]) for line in meminfo if line.startswith("MemTotal")), 0)
    release = _read("/etc/os-release").splitlines()
    pretty = next(
        (line.split("=", 1)[1].strip('"') for line in release if line.startswith("PRETTY_NAME=")), ""
    )
    cores = len([line for line in cpuinfo if line.startswith("processor")])
    return (
        f"{cores or '?'} × {model}, {kib / 1024 / 1024:.0f} GiB RAM, {pretty}, "
        f"Linux {platform.release()}, CPython {platform.python_version()}"
    )


def revision(repo: Path) -> str:
    """``git rev-parse --short HEAD`` (read-only), and whether src/ or templates/ differ from it."""
    head = _output(["git", "rev-parse", "--short", "HEAD"], repo) or "unknown"
    diff = ["git", "diff", "--quiet", "HEAD", "--", "src", "templates"]
    dirty = subprocess.run(diff, cwd=repo, capture_output=True, check=False)
    return head + (" with uncommitted changes in src/ or templates/" if dirty.returncode == 1 else "")


def tool_versions(mailmerge: Path | None) -> str:
    postfix = _output(["postconf", "-d", "-h", "mail_version"]) or "?"
    peer = _output([str(mailmerge), "--version"]) if mailmerge else ""
    return f"postfix {postfix}" + (f", {peer}" if peer else "")
