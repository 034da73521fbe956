"""Kaplan-Meier figures: step curves with CI bands, log-rank P and a numbers-at-risk table.

matplotlib is imported lazily with the Agg backend; ``plot_km`` takes ``ax=`` and returns it.
Everything is drawn from the ``survival_km`` / ``survival_summary`` tables, so ``dltr report``
can redraw a figure from the store without recomputing.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas as pd

from ._km import at_risk_counts

__all__ = ["plot_km", "save_survival_figures"]

STYLE = {"low": ("tab:blue", "Predicted responder (low risk)"),
         "high": ("tab:red", "Predicted non-responder (high risk)")}


def _axes(ax):
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    if ax is None:
        _, ax = plt.subplots(figsize=(6, 5.6))
        ax.figure.subplots_adjust(bottom=0.3)
    return ax


def _at_risk_table(ax, km: pd.DataFrame, ticks: np.ndarray) -> None:
    tr = ax.get_xaxis_transform()
    ax.text(0, -0.2, "Numbers at risk", transform=ax.transAxes, fontsize=8, va="top")
    row = 0
    for g in ("low", "high"):
        d = km.loc[km["group"] == g]
        if d.empty:
            continue
        y = -0.27 - 0.07 * row
        ax.text(-0.02, y, g, transform=ax.transAxes, ha="right", va="top", fontsize=8, color=STYLE[g][0])
        for t, c in zip(ticks, at_risk_counts(d, ticks), strict=True):
            ax.text(t, y, str(c), transform=tr, ha="center", va="top", fontsize=8)
        row += 1


def plot_km(km: pd.DataFrame, *, summary_row: dict | None = None, ax=None, at_risk: bool = True,
            n_ticks: int = 7, title: str = ""):
    """KM curves of one evaluation group (``km``: rows of ``survival_km`` for that evaluation group) with CI bands,
    censoring ticks, log-rank P / HR from ``summary_row`` and a numbers-at-risk table."""
    ax = _axes(ax)
    tmax = float(km["time"].max()) if len(km) else 1.0
    for g in ("low", "high"):
        d = km.loc[km["group"] == g]
        if d.empty:
            continue
        color, label = STYLE[g]
        ax.step(d["time"], d["survival"], where="post", color=color,
                label=f"{label}, n={int(d['at_risk'].iloc[0])}")
        ax.fill_between(d["time"], d["ci_lower"], d["ci_upper"], step="post", color=color, alpha=0.18, lw=0)
        cens = d.loc[d["censored"] > 0]
        ax.plot(cens["time"], cens["survival"], "|", color=color, ms=7)
    ax.set_ylim(0, 1.02)
    ax.set_xlim(0, tmax * 1.02)
    ax.set_xlabel("Days since first TACE")
    ax.set_ylabel("Progression-free survival")
    if summary_row:
        p, hr = summary_row.get("logrank_p"), summary_row.get("hr_group")
        lo, hi = summary_row.get("hr_group_lower"), summary_row.get("hr_group_upper")
        if p is not None and np.isfinite(p):
            ax.text(0.98, 0.96, f"log-rank P = {p:.3g}\nHR (high vs low) = {hr:.2f} [{lo:.2f}, {hi:.2f}]",
                    transform=ax.transAxes, ha="right", va="top", fontsize=8)
    ax.legend(loc="lower left", fontsize=8)
    if title:
        ax.set_title(title)
    if at_risk:
        step = next((s for s in (30, 60, 90, 180, 365, 730) if tmax / s <= n_ticks), 1460)
        ticks = np.arange(0, tmax + 1e-9, step, dtype=float)
        ax.set_xticks(ticks)
        _at_risk_table(ax, km, ticks)
    return ax


def _slug(s: str) -> str:
    return re.sub(r"[^a-z0-9]+", "_", s.lower()).strip("_")


def save_survival_figures(result, out: Path, dpi: int = 110) -> list[Path]:
    """One PNG per evaluation group, ``km_<head>_<group>.png``, under ``out``; returns the paths."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    from dltr.core.io import atomic_file

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for row in result.summary.to_dict("records"):
        group = row["evaluation_group"]
        fig, ax = plt.subplots(figsize=(6, 5.6))
        fig.subplots_adjust(bottom=0.3)
        plot_km(result.km.loc[result.km["evaluation_group"] == group], summary_row=row, ax=ax,
                title=f"{result.head} - {group}")
        path = out / f"km_{_slug(result.head)}_{_slug(group)}.png"
        with atomic_file(path) as f:
            fig.savefig(f, format="png", dpi=dpi)
        plt.close(fig)
        paths.append(path)
    return paths
