"""``Prediction``: what scoring one patient returns, and the parts derived from the head's records
(95 % interval where the head supports one, response risk group, PFS group)."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from dltr.core.layout import StoreLayout

__all__ = ["Prediction", "interval_for", "pfs_group"]

Z975 = 1.959963984540054


@dataclass
class Prediction:
    """One patient's score. ``to_dict`` is what ``dltr predict --json`` and ``POST /predict`` return."""

    probability: float
    interval: list[float] | None
    interval_method: str
    risk_group: str
    predicted: int
    cutoff: float
    pfs_group: str | None
    pfs: dict[str, Any]
    center: str
    lineage: dict[str, Any]
    normalisation: dict[str, Any]
    input_checksum: str
    timings: dict[str, float] = field(default_factory=dict)
    record_id: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def interval_for(fh: Any, df, emb: np.ndarray) -> tuple[list[float] | None, str]:
    """95 % interval of the response probability where the head supports one.

    Only the clinical head is a logistic regression (Firth-penalised) with a recorded covariance (the
    inverse Fisher information at the estimate, logistf's Wald covariance): its Wald interval on the
    logit scale (delta method) is mapped through the logistic function. The other heads record no uncertainty (penalised
    logistic regression, MLP, boosted trees: no valid covariance and no training-time bootstrap), so
    none is invented.
    """
    from scipy.special import expit

    est = getattr(fh, "estimator", None)
    fit = getattr(est, "fit_", None)
    if getattr(fh, "name", "") == "clinical" and fit is not None:
        d = est.design_matrix(df)
        x = np.column_stack([np.ones(len(d)), d])[0]
        eta = float(x @ fit.coef)
        se = float(np.sqrt(max(x @ fit.cov @ x, 0.0)))
        return [float(expit(eta - Z975 * se)), float(expit(eta + Z975 * se))], \
            "Wald 95 % interval on the logit scale (delta method, inverse Fisher information)"
    return None, (f"none: head {getattr(fh, 'name', '?')!r} records no uncertainty (no covariance or "
                  "training-time bootstrap); no interval is reported rather than an invented one")


def survival_row(store_root: Path, head: str, head_version: str) -> dict[str, Any] | str:
    """The head's training row of ``survival_summary`` (read once per ``Scorer``), else why there is none."""
    path = StoreLayout.of(store_root).table("survival_summary")
    if not path.is_file():
        return "no survival_summary table in the store (run `dltr survival`)"
    import pyarrow.parquet as pq

    rows = [r for r in pq.read_table(path).to_pylist()
            if r.get("head") == head and r.get("head_version") == head_version and r.get("evaluation_group") == "training"]
    return rows[0] if rows else f"the survival analysis was not run on head {head}@{head_version}"


def pfs_group(store_root: Path | dict[str, Any] | str, head: str, head_version: str,
              score: float) -> tuple[str | None, dict[str, Any]]:
    """The survival risk group with the survival analysis's training cutoff, and that group's
    training-cohort median PFS (``survival_summary``, evaluation group ``training``). ``store_root`` may
    be the ``survival_row`` already read."""
    r = store_root if isinstance(store_root, (dict, str)) else survival_row(store_root, head, head_version)
    if isinstance(r, str):
        return None, {"note": r}
    group = "low" if score >= float(r["cutoff"]) else "high"

    def num(v):
        return None if v is None or (isinstance(v, float) and math.isnan(v)) else float(v)

    return group, {"cutoff": float(r["cutoff"]), "cutoff_method": r.get("cutoff_method"),
                   "group_meaning": "low = predicted responder (score >= cutoff), high = the others",
                   "training_median_pfs_days": num(r.get(f"median_pfs_{group}")),
                   "training_median_pfs_ci": [num(r.get(f"median_pfs_{group}_lower")),
                                              num(r.get(f"median_pfs_{group}_upper"))],
                   "training_n_in_group": int(r.get(f"n_{group}") or 0)}
