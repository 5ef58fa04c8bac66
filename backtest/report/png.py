"""Equity and drawdown in R per strategy as a PNG (matplotlib, Agg backend: no display needed).

Why a picture at all: the Markdown report and the documentation (docs/getting-started/first-backtest.md) embed it, and a glance at the curve tells
more than the headline numbers (a steady bleed and a single crash can share a net R).
"""

from __future__ import annotations

import textwrap
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # before pyplot: never pick an interactive backend

import matplotlib.dates as mdates
import matplotlib.pyplot as plt


def _plain(text: str) -> str:
    """Text shown as typed: matplotlib reads $...$ as mathtext."""
    return text.replace("$", r"\$")


def _times(ms: list[int]) -> list[datetime]:
    return [datetime.fromtimestamp(m / 1000, UTC) for m in ms]


def render(doc: dict[str, Any], path: Path) -> Path:
    run = doc["run"]
    fig, (ax_eq, ax_dd) = plt.subplots(2, 1, figsize=(11, 6.5), sharex=True, gridspec_kw={"height_ratios": [3, 1.4]})
    try:
        for s in doc["strategies"]:
            c = s["curve"]
            t = _times(c["time_ms"] + [run["end_ms"]])  # hold the last value to the end of the range
            label = f"{_plain(s['name'])} ({s['summary']['trades']} trades, {s['summary']['net_r']:+.2f} R)"
            (line,) = ax_eq.step(t, c["equity_r"] + c["equity_r"][-1:], where="post", label=label, linewidth=1.4)
            ax_dd.step(t, c["drawdown_r"] + c["drawdown_r"][-1:], where="post", color=line.get_color(), linewidth=1.1)
            ax_dd.fill_between(
                t, c["drawdown_r"] + c["drawdown_r"][-1:], step="post", alpha=0.15, color=line.get_color()
            )
        title = _plain(f"Backtest {run['run_id']}: {', '.join(run['symbols'])}, {run['from'][:10]} → {run['to'][:10]}")
        title = textwrap.fill(title, 110)
        if run["partial"]:
            title = f"PARTIAL RUN (interrupted at {run['end'][:16].replace('T', ' ')} UTC)\n" + title
        ax_eq.set_title(title, color="#b00020" if run["partial"] else "black", fontsize=11)
        ax_eq.set_ylabel("equity, net R")
        ax_eq.axhline(0, color="#888", linewidth=0.8)
        ax_eq.grid(alpha=0.3)
        ax_eq.legend(loc="best", fontsize=9)
        ax_dd.set_ylabel("drawdown, R")
        ax_dd.grid(alpha=0.3)
        ax_dd.xaxis.set_major_formatter(mdates.ConciseDateFormatter(ax_dd.xaxis.get_major_locator(), tz=UTC))
        ax_dd.set_xlabel("exit time (UTC)")
        fig.tight_layout()
        fig.savefig(path, dpi=100)
    finally:
        plt.close(fig)
    return path
