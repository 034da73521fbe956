"""Evaluation figures: ROC curves with a bootstrap CI band, calibration curves, decision curves.

matplotlib is imported lazily with the Agg backend; every function takes ``ax=`` (a new figure
when omitted) and returns the axes.
"""

from __future__ import annotations

import io
import warnings
from functools import partial
from pathlib import Path

import numpy as np
import pandas as pd

from dltr.core.exceptions import ApproximationWarning
from dltr.core.vocabulary import display_name

from .groups import labelled_groups

__all__ = ["plot_calibration", "plot_decision_curve", "plot_roc", "save_evaluation_figures"]



def _axes(ax):
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    if ax is None:
        _, ax = plt.subplots(figsize=(5, 5))
    return ax


def plot_roc(y, scores: dict[str, np.ndarray], *, ax=None, band: bool = True, n_boot: int = 200,
             seed: int = 0, title: str = ""):
    """One ROC curve per model (legend: AUC [95 % CI]) with a pointwise bootstrap band."""
    from .roc import delong_auc, roc_ci_band, roc_curve

    ax = _axes(ax)
    for name, s in scores.items():
        fpr, tpr, _ = roc_curve(y, s)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ApproximationWarning)
            d = delong_auc(y, s)
        (line,) = ax.plot(fpr, tpr,
                          label=f"{name}: {d.auc:.3f} [{d.ci_low:.3f}-{d.ci_high:.3f}]")
        if band:
            g, lo, hi = roc_ci_band(y, s, n_boot=n_boot, seed=seed)
            ax.fill_between(g, lo, hi, alpha=0.15, color=line.get_color())
    ax.plot([0, 1], [0, 1], ls="--", color="grey", lw=0.8)
    ax.set(xlabel="1 - specificity", ylabel="Sensitivity", xlim=(0, 1), ylim=(0, 1.01), title=title)
    ax.legend(loc="lower right", fontsize=7)
    return ax


def plot_calibration(curves: dict[str, pd.DataFrame], *, ax=None, title: str = ""):
    """Binned observed rate (Wilson 95 % bars) against mean prediction, per model."""
    ax = _axes(ax)
    for name, c in curves.items():
        err = np.maximum(0.0, np.vstack([c["observed"] - c["observed_low"], c["observed_high"] - c["observed"]]))
        ax.errorbar(c["mean_predicted"], c["observed"], yerr=err, marker="o", ms=3, capsize=2, label=name)
    ax.plot([0, 1], [0, 1], ls="--", color="grey", lw=0.8, label="ideal")
    ax.set(xlabel="Predicted probability", ylabel="Observed response rate", xlim=(0, 1), ylim=(0, 1),
           title=title)
    ax.legend(loc="upper left", fontsize=7)
    return ax


def plot_decision_curve(curves: dict[str, pd.DataFrame], *, ax=None, title: str = ""):
    """Net benefit over threshold probability, per model, with treat-all and treat-none."""
    ax = _axes(ax)
    first = None
    for name, c in curves.items():
        ax.plot(c["threshold"], c["net_benefit"], label=name)
        first = c if first is None else first
    if first is not None:
        ax.plot(first["threshold"], first["treat_all"], color="grey", lw=0.8, label="treat all")
        ax.plot(first["threshold"], first["treat_none"], color="black", lw=0.8, label="treat none")
        top = max(float(np.nanmax([c["net_benefit"].max() for c in curves.values()])), float(first["treat_all"].max()))
        ax.set_ylim(-0.05, max(0.05, top * 1.1))
    ax.set(xlabel="Threshold probability", ylabel="Net benefit", xlim=(0, 1), title=title)
    ax.legend(loc="upper right", fontsize=7)
    return ax


def _save(fig, path: Path) -> Path:
    from dltr.core.io import atomic_file

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)  # laid out by the figure's constrained layout: one draw, not two
    with atomic_file(path) as f:
        f.write(buf.getvalue())
    return path


def _slug(s: str) -> str:
    return "".join(ch if ch.isalnum() else "_" for ch in s).strip("_").lower()


def save_evaluation_figures(scores: pd.DataFrame, result, out: str | Path, *, seed: int = 0) -> list[Path]:
    """``roc_<group>.png``, ``calibration_<group>.png``, ``decision_curve_<group>.png``."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt


    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for group in labelled_groups(scores):
        svec, y = {}, None
        for h, d in scores.groupby("head", sort=False):
            d = d.sort_values("patient_id", kind="mergesort").reset_index(drop=True)
            m = labelled_groups(d).get(group)
            if m is None:
                continue
            yy = d.loc[m, "label"].astype(int).to_numpy()
            if yy.min() == yy.max():
                continue
            y, svec[display_name(h)] = yy, d.loc[m, "score"].to_numpy(float)
        if not svec:
            continue
        cal = {display_name(h): g for h, g in result.calibration[result.calibration["evaluation_group"] == group]
               .groupby("head", sort=False)}
        dca = {display_name(h): g for h, g in result.decision_curve[result.decision_curve["evaluation_group"] == group]
               .groupby("head", sort=False)}
        draws = (("roc", partial(plot_roc, y, svec, seed=seed, title=f"ROC - {group}")),
                 ("calibration", partial(plot_calibration, cal, title=f"Calibration - {group}")),
                 ("decision_curve", partial(plot_decision_curve, dca, title=f"Decision curve - {group}")))
        for kind, draw in draws:
            fig, ax = plt.subplots(figsize=(5, 5), layout="constrained")
            try:
                draw(ax=ax)
                paths.append(_save(fig, out / f"{kind}_{_slug(group)}.png"))
            finally:
                plt.close(fig)
    return paths
