"""Multiple-testing adjustment (own implementation, checked against a hand computation)."""

from __future__ import annotations

import numpy as np

__all__ = ["bh_adjust", "bonferroni"]


def bh_adjust(p) -> np.ndarray:
    """Benjamini-Hochberg adjusted P values (q values): q_(i) = min_{j >= i} min(1, m p_(j) / j)
    over the ascending order; NaN entries stay NaN and do not count in m."""
    p = np.asarray(p, dtype=float)
    out = np.full(p.shape, np.nan)
    ok = ~np.isnan(p)
    m = int(ok.sum())
    if m == 0:
        return out
    pv = p[ok]
    order = np.argsort(pv, kind="mergesort")
    ranked = pv[order] * m / np.arange(1, m + 1)
    q = np.minimum.accumulate(ranked[::-1])[::-1]
    res = np.empty(m)
    res[order] = np.minimum(q, 1.0)
    out[ok] = res
    return out


def bonferroni(p, m: int) -> np.ndarray:
    """min(1, m p)."""
    return np.minimum(np.asarray(p, dtype=float) * m, 1.0)
