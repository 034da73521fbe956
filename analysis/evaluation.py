"""Multicenter evaluation of the heads, as the paper reports it.

Cohorts: ``training`` (split train), ``internal`` (split internal) and one ``external <center>``
per external center. Per head and evaluation group: AUC with the DeLong 95 % CI (and a stratified
bootstrap CI when asked), accuracy, sensitivity, specificity, PPV and NPV at the cutoff fixed
on the training split (Youden; read from the ``scores`` table, never refitted on a test group),
Brier score, calibration slope and intercept, the binned calibration curve and the decision
curve; paired DeLong tests between every two heads on the same patients. Rows without a label
are left out. An evaluation group with one outcome class gets NaN discrimination statistics.
"""

from __future__ import annotations

import dataclasses
import warnings
from dataclasses import dataclass
from itertools import combinations
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from dltr.core.exceptions import ApproximationWarning
from dltr.core.io import atomic_write_text
from dltr.core.vocabulary import PRIMARY_HEAD, display_name, head_order

from .calibration import calibration
from .decision_curve import decision_curve
from .groups import labelled_groups
from .roc import bootstrap_auc_ci, delong_auc, delong_test

__all__ = ["EvaluateConfig", "EvaluationResult", "evaluate", "evaluate_scores", "paper_table",
           "threshold_metrics"]



def _nan_div(a: float, b: float) -> float:
    return float(a / b) if b else float("nan")


def threshold_metrics(y, score, cutoff: float) -> dict[str, float]:
    """Confusion-matrix metrics of ``score >= cutoff`` (NaN where a denominator is 0)."""
    y = np.asarray(y).astype(bool)
    pred = np.asarray(score) >= cutoff
    tp, fp = int((pred & y).sum()), int((pred & ~y).sum())
    fn, tn = int((~pred & y).sum()), int((~pred & ~y).sum())
    return {"tp": tp, "fp": fp, "tn": tn, "fn": fn, "accuracy": _nan_div(tp + tn, y.size),
            "sensitivity": _nan_div(tp, tp + fn), "specificity": _nan_div(tn, tn + fp),
            "ppv": _nan_div(tp, tp + fp), "npv": _nan_div(tn, tn + fn)}


@dataclass(frozen=True)
class EvaluateConfig:
    """``bootstrap``: stratified bootstrap resamples for a second AUC CI (0 = DeLong only); ``seed``: of the
    bootstrap and the ROC bands; ``figures``: write the ROC, calibration and decision-curve figures."""

    bootstrap: int = 0
    seed: int = 0
    figures: bool = True

    def __post_init__(self) -> None:
        if self.bootstrap < 0:
            raise ValueError(f"EvaluateConfig.bootstrap {self.bootstrap}: must be >= 0")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass
class EvaluationResult:
    metrics: pd.DataFrame
    delong: pd.DataFrame
    calibration: pd.DataFrame
    decision_curve: pd.DataFrame

    @property
    def summary(self) -> pd.DataFrame:
        return paper_table(self.metrics)


def _one(y, s, cutoff, bootstrap: int, seed: int) -> tuple[dict[str, Any], pd.DataFrame]:
    row: dict[str, Any] = {"n": int(y.size), "n_cases": int(y.sum()), "cutoff": cutoff}
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ApproximationWarning)
            d = delong_auc(y, s)
        row.update(auc=d.auc, auc_variance=d.variance, ci_low=d.ci_low, ci_high=d.ci_high)
        if bootstrap:
            _, lo, hi = bootstrap_auc_ci(y, s, n_boot=bootstrap, seed=seed)
            row.update(boot_ci_low=lo, boot_ci_high=hi)
    except ValueError:
        row.update(auc=np.nan, auc_variance=np.nan, ci_low=np.nan, ci_high=np.nan)
    row.update({k: v for k, v in threshold_metrics(y, s, cutoff).items()})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ApproximationWarning)
        cal = calibration(y, s)
    row.update(cal.to_dict() | {"n": int(y.size)})
    return row, cal.curve


_DELONG_COLUMNS = {"evaluation_group": "string", "head1": "string", "head2": "string", "n": "int64",
                   **{c: "float64" for c in ("auc1", "auc2", "difference", "covariance", "var_diff", "z", "p_value",
                                             "diff_ci_low", "diff_ci_high", "level")}}


def evaluate_scores(scores: pd.DataFrame, *, bootstrap: int = 0, seed: int = 0,
                    thresholds=None) -> EvaluationResult:
    """All statistics from a ``scores`` table (columns of the store's ``scores`` contract)."""
    heads = head_order(scores["head"])
    met, dl, cal, dca = [], [], [], []
    per_head = {h: scores[scores["head"] == h].sort_values("patient_id", kind="mergesort").reset_index(drop=True)
                for h in heads}
    for group, _ in labelled_groups(scores).items():
        vecs = {}
        for h in heads:
            d = per_head[h]
            mask = labelled_groups(d).get(group)
            if mask is None:
                continue
            y = d.loc[mask, "label"].astype(int).to_numpy()
            s = d.loc[mask, "score"].to_numpy(np.float64)
            vecs[h] = (d.loc[mask, "patient_id"].to_numpy(), y, s)
            row, curve = _one(y, s, float(d["cutoff"].iloc[0]), bootstrap, seed)
            met.append({"head": h, "model": display_name(h), "evaluation_group": group,
                        "head_version": str(d["head_version"].iloc[0]), **row})
            cal.append(curve.assign(head=h, evaluation_group=group))
            dca.append(decision_curve(y, s, thresholds).assign(head=h, evaluation_group=group))
        for h1, h2 in combinations(list(vecs), 2):
            (id1, y, s1), (id2, _, s2) = vecs[h1], vecs[h2]
            if not np.array_equal(id1, id2) or y.min() == y.max():
                continue
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", ApproximationWarning)
                t = delong_test(y, s1, s2)
            dl.append({"evaluation_group": group, "head1": h1, "head2": h2, "n": int(y.size), **t.to_dict()})
    cols = lambda frames: pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()  # noqa: E731
    # one head (``dltr evaluate --head X``) has no pair: an empty table that keeps its columns (a Parquet file
    # without columns breaks the store's SQL catalog)
    delong = pd.DataFrame(dl) if dl else pd.DataFrame({c: pd.Series(dtype=t) for c, t in _DELONG_COLUMNS.items()})
    return EvaluationResult(pd.DataFrame(met), delong, cols(cal), cols(dca))


def _fmt_auc(r) -> str:
    if not np.isfinite(r["auc"]):
        return "NA"
    return f"{r['auc']:.3f} [{r['ci_low']:.3f}-{r['ci_high']:.3f}]"


def paper_table(metrics: pd.DataFrame) -> pd.DataFrame:
    """Model x evaluation-group table of "AUC [95 % CI]" strings, in the paper's layout."""
    if metrics.empty:
        return pd.DataFrame()
    t = metrics.assign(cell=metrics.apply(_fmt_auc, axis=1))
    order_m = list(dict.fromkeys(t["model"]))
    order_c = list(dict.fromkeys(t["evaluation_group"]))
    return t.pivot(index="model", columns="evaluation_group", values="cell").loc[order_m, order_c].rename_axis(
        index="model", columns=None)


def _p_vs(delong: pd.DataFrame, ref: str = PRIMARY_HEAD) -> pd.DataFrame:
    if delong.empty:
        return pd.DataFrame()
    rows = []
    for _, r in delong.iterrows():
        if ref in (r["head1"], r["head2"]):
            other = r["head2"] if r["head1"] == ref else r["head1"]
            rows.append({"model": display_name(other), "evaluation_group": r["evaluation_group"], "p": r["p_value"]})
    if not rows:
        return pd.DataFrame()
    d = pd.DataFrame(rows)
    order = list(dict.fromkeys(d["evaluation_group"]))
    return d.pivot(index="model", columns="evaluation_group", values="p")[order].rename_axis(columns=None)


def _markdown(df: pd.DataFrame, floatfmt: str = "{:.3g}") -> str:
    if df.empty:
        return "(no rows)\n"
    cols = [df.index.name or ""] + [str(c) for c in df.columns]
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for idx, r in df.iterrows():
        cells = [floatfmt.format(v) if isinstance(v, float) else str(v) for v in r.to_numpy()]
        lines.append("| " + " | ".join([str(idx)] + cells) + " |")
    return "\n".join(lines) + "\n"


def write_tables(result: EvaluationResult, out: Path) -> list[Path]:
    """``model_comparison.csv`` / ``.md`` (paper layout, plus DeLong P against DLTR_MLP)."""
    out.mkdir(parents=True, exist_ok=True)
    table = result.summary
    atomic_write_text(out / "model_comparison.csv", table.to_csv())
    md = ("## Discrimination: AUC [95 % CI] (DeLong)\n\n" + _markdown(table)
          + "\n## Paired DeLong P against DLTR_MLP\n\n" + _markdown(_p_vs(result.delong)))
    atomic_write_text(out / "model_comparison.md", md)
    return [out / "model_comparison.csv", out / "model_comparison.md"]


def evaluate(store, config: EvaluateConfig | None = None, *, out: str | Path | None = None,
             scores: pd.DataFrame | None = None) -> EvaluationResult:
    """Compute every statistic from the store's ``scores`` table (written by ``models.heads.train_heads``
    or ``score_heads``; or the ``scores`` frame given), write the ``eval_*`` tables into the store, the
    paper-style table (CSV + Markdown) and the figures under ``out`` (default ``STORE/figures``)."""
    import pyarrow as pa

    from dltr.core.layout import StoreLayout

    cfg = config or EvaluateConfig()
    if scores is None:
        scores = store.table("scores").to_pandas()
    result = evaluate_scores(scores, bootstrap=cfg.bootstrap, seed=cfg.seed)
    lineage = {"heads": dict(zip(scores["head"], scores["head_version"], strict=False)), **cfg.to_dict()}
    for name, df in (("eval_metrics", result.metrics), ("eval_delong", result.delong),
                     ("eval_calibration", result.calibration), ("eval_decision_curve", result.decision_curve)):
        store.write_table(name, pa.Table.from_pandas(df, preserve_index=False), lineage=lineage)
    out = Path(out) if out is not None else StoreLayout.of(store).figures
    write_tables(result, out)
    if cfg.figures:
        from .plots import save_evaluation_figures

        save_evaluation_figures(scores, result, out, seed=cfg.seed)
    return result
