"""Gene-set enrichment of a significant gene list.

Over-representation: for a set with K genes in the universe of N measured genes and a list of n
significant genes of which k are in the set, P = P(X >= k) for X ~ Hypergeometric(N, K, n)
(``scipy.stats.hypergeom.sf(k - 1, N, K, n)``); Benjamini-Hochberg across the tested sets.

Preranked (GSEA-style, Subramanian et al. 2005, weight p = 1): genes ranked by a non-negative
metric (here -log10 of the per-gene P value, so the sign of the correlation does not matter); the
enrichment score is the maximum of the running sum P_hit - P_miss; its P value comes from
``n_perm`` random gene sets of the same size (seeded), P = (1 + #{ES_perm >= ES}) / (1 + n_perm),
NES = ES / mean(ES_perm).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy import stats

from ._multitest import bh_adjust

__all__ = ["overrepresentation", "preranked_enrichment"]


def _in_universe(gene_sets, universe: pd.Index, min_size: int) -> dict[str, np.ndarray]:
    out = {}
    for name, gs in gene_sets.items():
        genes = getattr(gs, "genes", gs)
        idx = universe.get_indexer(list(genes))
        idx = np.unique(idx[idx >= 0])
        if idx.size >= min_size:
            out[name] = idx
    return out


def overrepresentation(significant, universe, gene_sets, *, min_size: int = 5) -> pd.DataFrame:
    """Hypergeometric over-representation of ``significant`` (genes) in each set, within
    ``universe``; sorted by P. Sets with fewer than ``min_size`` measured genes are left out."""
    uni = pd.Index(pd.unique(np.asarray(list(universe), dtype=object)))
    sig_mask = np.zeros(len(uni), bool)
    si = uni.get_indexer(list(significant))
    sig_mask[si[si >= 0]] = True
    n_univ, n_sig = len(uni), int(sig_mask.sum())
    rows = []
    for name, idx in _in_universe(gene_sets, uni, min_size).items():
        k = int(sig_mask[idx].sum())
        big_k = int(idx.size)
        rows.append({"gene_set": name, "set_size": big_k, "overlap": k, "n_significant": n_sig,
                     "universe": n_univ, "expected": big_k * n_sig / n_univ if n_univ else np.nan,
                     "p_value": float(stats.hypergeom.sf(k - 1, n_univ, big_k, n_sig)),
                     "genes": ",".join(sorted(uni[idx[sig_mask[idx]]]))})
    df = pd.DataFrame(rows, columns=["gene_set", "set_size", "overlap", "n_significant", "universe",
                                     "expected", "p_value", "genes"])
    df["fold_enrichment"] = df["overlap"] / df["expected"].where(df["expected"] > 0)
    df["q_value"] = bh_adjust(df["p_value"].to_numpy())
    return df.sort_values(["p_value", "gene_set"], kind="mergesort").reset_index(drop=True)


def _es_at_positions(pos: np.ndarray, w_sorted: np.ndarray, n: int) -> np.ndarray:
    """Max running-sum ES for hit positions ``pos`` (..., K) sorted ascending in a ranked list of
    n genes with weights ``w_sorted`` (descending order of the metric). The maximum of
    P_hit - P_miss is reached at a hit."""
    k = pos.shape[-1]
    w = w_sorted[pos]
    tot = w.sum(axis=-1, keepdims=True)
    tot = np.where(tot > 0, tot, 1.0)
    p_hit = np.cumsum(w, axis=-1) / tot
    p_miss = (pos - np.arange(k)) / max(n - k, 1)
    return (p_hit - p_miss).max(axis=-1)


def preranked_enrichment(metric: pd.Series, gene_sets, *, n_perm: int = 1000, seed: int = 0,
                         min_size: int = 5, chunk: int = 100) -> pd.DataFrame:
    """Preranked enrichment of ``metric`` (index: gene; larger = stronger association)."""
    m = metric.dropna().sort_values(ascending=False, kind="mergesort")
    uni = pd.Index(m.index)
    w = np.abs(m.to_numpy(dtype=float))
    n = len(uni)
    sets = _in_universe(gene_sets, uni, min_size)
    if not sets:
        return pd.DataFrame(columns=["gene_set", "set_size", "es", "nes", "p_value", "q_value"])
    kmax = max(v.size for v in sets.values())
    rng = np.random.default_rng(seed)
    # one random ordering per permutation; its first K entries are a uniform random K-subset
    perm = np.empty((n_perm, kmax), np.int64)
    for s in range(0, n_perm, chunk):
        keys = rng.random((min(chunk, n_perm - s), n))
        part = np.argpartition(keys, kmax - 1, axis=1)[:, :kmax] if kmax < n else np.tile(np.arange(n), (len(keys), 1))
        order = np.take_along_axis(keys, part, axis=1).argsort(axis=1)
        perm[s:s + len(keys)] = np.take_along_axis(part, order, axis=1)
    rows = []
    for name, idx in sets.items():
        es = float(_es_at_positions(np.sort(idx), w, n))
        null = _es_at_positions(np.sort(perm[:, : idx.size], axis=1), w, n)
        rows.append({"gene_set": name, "set_size": int(idx.size), "es": es,
                     "nes": es / null.mean() if null.mean() > 0 else np.nan,
                     "p_value": (1 + int((null >= es).sum())) / (1 + n_perm)})
    df = pd.DataFrame(rows)
    df["q_value"] = bh_adjust(df["p_value"].to_numpy())
    return df.sort_values(["p_value", "nes"], ascending=[True, False], kind="mergesort").reset_index(drop=True)
