"""How much a center (scanner, protocol) moves each feature: Kruskal-Wallis across centers.

For every feature column: the tie-corrected Kruskal-Wallis H over the centers, its chi-square
P value (k - 1 degrees of freedom), the Benjamini-Hochberg q value over the features, and the rank
effect size epsilon^2 = H / (n - 1) (Tomczak & Tomczak, Trends Sport Sci 2014; 0 = no center
effect, 1 = the centers' ranks do not overlap at all as far as H can tell). A feature with a large
epsilon^2 is one a harmonisation step (ComBat, per-center normalisation) should look at first.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pyarrow as pa

from analysis._multitest import bh_adjust

__all__ = ["center_effect", "epsilon_squared"]


def epsilon_squared(h: float, n: int) -> float:
    """Kruskal-Wallis epsilon^2 = H / ((n^2 - 1) / (n + 1)) = H / (n - 1)."""
    return float(h) / (n - 1) if n > 1 else float("nan")


def center_effect(x: np.ndarray, centers: Sequence[str], names: Sequence[str],
                  parts: Sequence[str] = ()) -> pa.Table:
    """One row per column of ``x`` (n x p): its name (split on ``/`` into the columns ``parts`` when
    given), n, centers, H, p, q (BH), epsilon^2 and the per-center medians (``median_by_center``).
    A constant feature gets H = 0, p = 1."""
    from scipy.stats import kruskal

    x = np.asarray(x, np.float64)
    centers = np.asarray([str(c) for c in centers])
    levels = sorted(set(centers.tolist()))
    if x.ndim != 2 or x.shape[0] != centers.size or x.shape[1] != len(names):
        raise ValueError(f"center_effect: x {x.shape}, {centers.size} centers, {len(names)} names do not agree")
    n = x.shape[0]
    h = np.zeros(x.shape[1])
    p = np.ones(x.shape[1])
    groups = [centers == c for c in levels]
    if len(levels) >= 2:
        for j in range(x.shape[1]):
            col = x[:, j]
            if np.ptp(col) > 0:
                h[j], p[j] = kruskal(*(col[g] for g in groups))
    med = [[(c, float(np.median(x[g, j]))) for c, g in zip(levels, groups, strict=True)] for j in range(x.shape[1])]
    split = [str(nm).split("/", max(len(parts) - 1, 0)) for nm in names]
    cols = {k: [q[i] if len(q) == len(parts) else None for q in split] for i, k in enumerate(parts)}
    return pa.table({
        "name": [str(nm) for nm in names], **cols,
        "n": pa.array([n] * len(names), pa.int32()), "n_centers": pa.array([len(levels)] * len(names), pa.int32()),
        "h": h, "p": p, "q": bh_adjust(p) if len(names) else p, "epsilon_squared": [epsilon_squared(v, n) for v in h],
        "median_by_center": pa.array(med, pa.map_(pa.string(), pa.float64())),
    })
