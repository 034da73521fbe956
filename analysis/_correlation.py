"""Feature x gene correlation, chunk-wise with ``dask.array``.

Spearman's rho is Pearson's r of the ranks (average ranks for ties, as ``scipy.stats.spearmanr``).
Each column (feature or gene) is ranked over patients (Spearman), centred and scaled to unit
norm; then r = Zf^T Zg, one block of genes at a time. Genes are chunked along their axis (all
patients in one chunk), so a worker holds n x chunk ranks and F x chunk correlations at most,
and the per-gene reductions (strongest |r|, its feature, the number of features with P < alpha)
run inside the same task: the F x G matrix is never assembled unless asked for
(``correlation_matrix(...).compute()``). P values: two-sided, from t = r sqrt((n-2)/(1-r^2)) on
n-2 degrees of freedom (what ``spearmanr`` and ``pearsonr`` report).
"""

from __future__ import annotations

import numpy as np
from scipy import stats

__all__ = ["correlation_matrix", "gene_summaries", "r_critical", "r_to_p", "standardize_columns"]

METHODS = ("spearman", "pearson")


def standardize_columns(x: np.ndarray, method: str = "spearman") -> np.ndarray:
    """Columns ranked (Spearman) or not (Pearson), centred, scaled to unit Euclidean norm;
    a constant column becomes NaN."""
    if method not in METHODS:
        raise ValueError(f"correlation method {method!r} is not one of {METHODS}")
    x = np.asarray(x, dtype=np.float64)
    if method == "spearman":
        x = stats.rankdata(x, axis=0)
    z = x - x.mean(axis=0)
    norm = np.sqrt((z * z).sum(axis=0))
    with np.errstate(invalid="ignore", divide="ignore"):
        return z / np.where(norm > 0, norm, np.nan)


def r_to_p(r, n: int) -> np.ndarray:
    """Two-sided t-distribution P value of a correlation on n patients."""
    r = np.clip(np.abs(np.asarray(r, dtype=np.float64)), 0.0, 1.0)
    df = n - 2
    with np.errstate(divide="ignore", invalid="ignore"):
        t = r * np.sqrt(df / np.maximum((1.0 - r) * (1.0 + r), 0.0))
    return 2.0 * stats.t.sf(t, df)


def r_critical(alpha: float, n: int) -> float:
    """|r| at which the two-sided P value equals alpha."""
    df = n - 2
    t = stats.t.isf(alpha / 2.0, df)
    return float(t / np.sqrt(df + t * t))


def _as_dask(expression, chunk: int):
    import dask.array as da

    e = expression if isinstance(expression, da.Array) else da.from_array(np.asarray(expression), chunks=(-1, chunk))
    return e.rechunk({0: -1, 1: chunk})


def correlation_matrix(features, expression, *, method: str = "spearman", chunk: int = 2048):
    """Lazy (F, G) dask array of correlations between the columns of ``features`` (n, F) and of
    ``expression`` (n, G; NumPy or dask)."""
    zf = standardize_columns(features, method)
    zg = _as_dask(expression, chunk).map_blocks(standardize_columns, method, dtype=np.float64)
    return zg.map_blocks(lambda b: zf.T @ b, chunks=((zf.shape[1],), zg.chunks[1]), dtype=np.float64)


def _summarise(zg_block: np.ndarray, zf: np.ndarray, r_crit: float) -> np.ndarray:
    r = zf.T @ zg_block                                   # (F, chunk)
    a = np.abs(r)
    a[np.isnan(a)] = -1.0
    best = a.argmax(axis=0)
    cols = np.arange(r.shape[1])
    out = np.empty((3, r.shape[1]))
    out[0] = r[best, cols]
    out[1] = best
    out[2] = (a >= r_crit).sum(axis=0)
    return out


def gene_summaries(features, expression, *, method: str = "spearman", alpha: float = 0.05,
                   chunk: int = 2048, scheduler: str = "threads", num_workers: int | None = None) -> dict:
    """Per gene, without assembling the F x G matrix: ``r_best`` (signed r of the feature with
    the largest |r|), ``feature_best`` (its index), ``n_sig`` (features with P < alpha)."""
    n = np.asarray(features).shape[0]
    zf = standardize_columns(features, method)
    zg = _as_dask(expression, chunk).map_blocks(standardize_columns, method, dtype=np.float64)
    rc = r_critical(alpha, n)
    s = zg.map_blocks(_summarise, zf, rc, chunks=((3,), zg.chunks[1]), dtype=np.float64)
    kw = {"num_workers": num_workers} if num_workers else {}
    out = s.compute(scheduler=scheduler, **kw)
    best = out[1].astype(np.int64)
    r = out[0]
    return {"r_best": r, "feature_best": best, "n_sig": out[2].astype(np.int64), "n": n}
