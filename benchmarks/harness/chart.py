"""The PNG chart: msgs/s per variant (median, with min..max whiskers), one panel per kind of run."""

from __future__ import annotations

import statistics
from pathlib import Path

from harness.report import Report, Row

COLOURS = {"mailmerge": "#9e9e9e", "smtp-source": "#c7d7e8", "dispatch": "#1f6fb4"}


def _colour(label: str) -> str:
    for key, colour in COLOURS.items():
        if key in label:
            return colour
    return "#1f6fb4"


def draw(report: Report, path: Path, title: str) -> None:
    import matplotlib as mpl  # noqa: PLC0415 - optional: only when a chart is drawn

    mpl.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415

    panels: dict[str, list[Row]] = {}
    for row in report.rows:
        if isinstance(row, Row) and row.chart and row.samples and not row.missing:
            panels.setdefault(row.chart, []).append(row)
    if not panels:
        return
    heights = [max(1.4, 0.42 * len(rows) + 0.9) for rows in panels.values()]
    size = (10, sum(heights) + 0.8)
    fig, axes = plt.subplots(
        len(panels), 1, figsize=size, gridspec_kw={"height_ratios": heights}, squeeze=False
    )
    for ax, (panel, rows) in zip(axes[:, 0], panels.items(), strict=True):
        labels = [row.label.replace("`", "") for row in rows][::-1]
        medians = [row.median for row in rows][::-1]
        lows = [row.median - min(row.samples) for row in rows][::-1]
        highs = [max(row.samples) - row.median for row in rows][::-1]
        ax.barh(labels, medians, xerr=[lows, highs], color=[_colour(x) for x in labels], capsize=3)
        for y, (value, high) in enumerate(zip(medians, highs, strict=True)):
            ax.text(value + high, y, f"  {value:,.0f}", va="center", fontsize=8)
        right = max(m + h for m, h in zip(medians, highs, strict=True)) * 1.18
        peer = [row.median for row in rows if "mailmerge" in row.label]
        if peer and panel == "send: smtp-sink":
            goal = 5 * statistics.median(peer)
            ax.axvline(goal, color="#c0392b", linestyle="--", linewidth=1, label="target: 5× mailmerge")
            right = max(right, goal * 1.1)
        if panel == "dry run":
            ax.axvline(10_000, color="#c0392b", linestyle="--", linewidth=1, label="target: 10,000/s")
            right = max(right, 11_000)
        ax.set_xlim(0, right)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(loc="lower right", fontsize=7, framealpha=0.9)
        ax.set_title(panel, loc="left", fontsize=10)
        ax.set_xlabel("messages per second (median; whiskers: min..max)", fontsize=8)
        ax.tick_params(axis="y", labelsize=8)
        ax.tick_params(axis="x", labelsize=8)
    fig.suptitle(title, fontsize=10, x=0.01, ha="left")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
