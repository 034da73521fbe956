"""Decision-curve analysis (Vickers & Elkin, Med Decis Making 2006).

Net benefit at threshold probability pt of treating patients with p >= pt:
``NB = TP/n - FP/n * pt / (1 - pt)``; treat-all: ``prevalence - (1 - prevalence) pt/(1 - pt)``;
treat-none: 0.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

__all__ = ["decision_curve", "net_benefit", "net_benefit_treat_all"]

DEFAULT_THRESHOLDS = np.round(np.arange(0.01, 0.991, 0.01), 2)


def _check_pt(pt: np.ndarray) -> np.ndarray:
    pt = np.atleast_1d(np.asarray(pt, float))
    if ((pt <= 0) | (pt >= 1)).any():
        raise ValueError(f"threshold probabilities must lie in (0, 1), got {pt.min()}..{pt.max()}")
    return pt


def net_benefit(y, p, thresholds) -> np.ndarray:
    """Net benefit of the model at each threshold (predict positive when p >= pt)."""
    y = np.asarray(y).astype(bool)
    p = np.asarray(p, float)
    pt = _check_pt(thresholds)
    n = y.size
    order = np.sort(p)
    pos_sorted = np.sort(p[y])
    # number with p >= pt, via sorted search: O((n + T) log n)
    n_pos = n - np.searchsorted(order, pt, side="left")
    tp = pos_sorted.size - np.searchsorted(pos_sorted, pt, side="left")
    fp = n_pos - tp
    return tp / n - fp / n * pt / (1 - pt)


def net_benefit_treat_all(y, thresholds) -> np.ndarray:
    y = np.asarray(y, float)
    pt = _check_pt(thresholds)
    prev = y.mean()
    return prev - (1 - prev) * pt / (1 - pt)


def decision_curve(y, p, thresholds=None) -> pd.DataFrame:
    """Table threshold, net_benefit, treat_all, treat_none."""
    pt = DEFAULT_THRESHOLDS if thresholds is None else _check_pt(thresholds)
    return pd.DataFrame({"threshold": pt, "net_benefit": net_benefit(y, p, pt),
                         "treat_all": net_benefit_treat_all(y, pt), "treat_none": np.zeros(pt.size)})
