"""Radiogenomics figures: feature x gene heatmap of the top hits, enrichment bars.

matplotlib is imported lazily with the Agg backend; each function takes ``ax=`` and returns it.
Both draw from the store tables (``genes_correlation``, ``genes_enrichment``).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

__all__ = ["plot_enrichment", "plot_heatmap", "save_genes_figures"]


def _axes(ax, size=(7, 6)):
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    if ax is None:
        _, ax = plt.subplots(figsize=size)
    return ax


def plot_heatmap(correlation: pd.DataFrame, *, max_features: int = 20, ax=None, title: str = ""):
    """Genes (rows, in table order) x the imaging variables with the largest |r| among them."""
    ax = _axes(ax)
    mat = correlation.pivot_table(index="gene", columns="feature", values="r", sort=False)
    mat = mat.reindex(pd.unique(correlation["gene"]))
    order = mat.abs().max(axis=0).sort_values(ascending=False, kind="mergesort").index[:max_features]
    mat = mat[order]
    im = ax.imshow(mat.to_numpy(), cmap="RdBu_r", vmin=-1, vmax=1, aspect="auto")
    ax.set_yticks(np.arange(len(mat)), mat.index, fontsize=6)
    ax.set_xticks(np.arange(mat.shape[1]), mat.columns, rotation=90, fontsize=6)
    ax.set_xlabel("imaging variable")
    ax.figure.colorbar(im, ax=ax, label="correlation", shrink=0.8)
    ax.set_title(title or "Top gene x deep-feature correlations")
    return ax


def plot_enrichment(enrichment: pd.DataFrame, *, top: int = 12, method: str = "hypergeometric", ax=None,
                    title: str = ""):
    """Horizontal bars of -log10(q) for the best ``top`` gene sets; the overlap is printed."""
    ax = _axes(ax, (7, 5))
    d = enrichment.loc[enrichment["method"] == method].head(top).iloc[::-1]
    val = -np.log10(np.maximum(d["q_value"].to_numpy(float), 1e-300))
    labels = [s.replace("HALLMARK_", "").replace("_", " ").lower() for s in d["gene_set"]]
    ax.barh(np.arange(len(d)), val, color=np.where(d["q_value"] < 0.05, "tab:red", "tab:gray"))
    ax.set_yticks(np.arange(len(d)), labels, fontsize=7)
    ax.axvline(-np.log10(0.05), color="k", ls="--", lw=0.8)
    ax.set_xlabel("-log10 BH-adjusted P")
    if "overlap" in d:
        for i, (v, k, s) in enumerate(zip(val, d["overlap"], d["set_size"], strict=True)):
            if pd.notna(k):
                ax.text(v, i, f" {int(k)}/{int(s)}", va="center", fontsize=6)
    ax.set_title(title or f"Gene-set enrichment ({method})")
    return ax


def save_genes_figures(result, out: Path, dpi: int = 110) -> list[Path]:
    """``genes_heatmap.png`` and ``genes_enrichment.png`` under ``out``."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    from dltr.core.io import atomic_file

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, draw in (("genes_heatmap.png", lambda ax: plot_heatmap(result.correlation, ax=ax)),
                       ("genes_enrichment.png", lambda ax: plot_enrichment(result.enrichment, ax=ax))):
        fig, ax = plt.subplots(figsize=(7, 6))
        draw(ax)
        fig.tight_layout()
        with atomic_file(out / name) as f:
            fig.savefig(f, format="png", dpi=dpi)
        plt.close(fig)
        paths.append(out / name)
    return paths
