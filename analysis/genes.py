"""Radiogenomics: deep features x gene expression, significant genes, gene-set enrichment.

Statistic (``GenesConfig``). Each gene g is correlated (Spearman by default, Pearson as an
option) with each of m imaging variables: the D deep features, or their top ``pcs`` principal
components (PCA of the z-scored features). Its per-gene P value is the smallest of its m
correlation P values, ``p_min``, adjusted for the m looks:

- ``feature_adjust="bonferroni"`` (default): ``p_gene = min(1, m * p_min)``;
- ``feature_adjust="none"``: ``p_gene = p_min``.

Then ``q_gene`` = Benjamini-Hochberg across the tested genes. A gene is **significant** when
``q_gene < fdr`` (default fdr = 0.05), or, with ``fdr=None``, when ``p_gene < alpha``.
The paper's rule ("a gene correlated with any deep feature at P < 0.05") is
``GenesConfig.paper()`` = (``feature_adjust="none"``, ``fdr=None``, ``alpha=0.05``); with 512
features almost every gene passes it by chance, so it is offered for comparison only.
Genes are tested when their mean log2(TPM+1) over the patients is >= ``min_expression`` and they
vary; the tested genes are the universe of the hypergeometric over-representation test.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from dltr.core.exceptions import StoreError
from dltr.core.layout import StoreLayout
from dltr.core.vocabulary import DEFAULT_FEATURE_SET

from ._correlation import correlation_matrix, gene_summaries, r_to_p, standardize_columns
from ._enrichment import overrepresentation, preranked_enrichment
from ._multitest import bh_adjust, bonferroni
from .expression import expression_matrix, read_tcga_tpm
from .gmt import GeneSet, GeneSetError, read_gmt

__all__ = ["GeneSet", "GeneSetError", "GenesConfig", "GenesResult", "bh_adjust", "correlation_matrix",
           "gene_summaries", "overrepresentation", "preranked_enrichment", "principal_components",
           "r_to_p", "radiogenomics", "read_gmt", "read_tcga_tpm", "run_genes", "standardize_columns"]


@dataclass(frozen=True)
class GenesConfig:
    feature_set: str = DEFAULT_FEATURE_SET  # NAME or NAME@VERSION
    method: str = "spearman"
    pcs: int | None = None
    feature_adjust: str = "bonferroni"
    alpha: float = 0.05
    fdr: float | None = 0.05
    min_expression: float = 1.0
    min_set_size: int = 5
    preranked: bool = False
    n_perm: int = 1000
    top_genes: int = 30
    chunk: int = 2048
    seed: int = 0

    def __post_init__(self):
        if self.method not in ("spearman", "pearson"):
            raise ValueError(f"GenesConfig.method {self.method!r}: choose 'spearman' or 'pearson'")
        if self.feature_adjust not in ("bonferroni", "none"):
            raise ValueError(f"GenesConfig.feature_adjust {self.feature_adjust!r}: 'bonferroni' or 'none'")
        if self.pcs is not None and self.pcs < 1:
            raise ValueError(f"GenesConfig.pcs {self.pcs}: must be >= 1 or None")
        if not 0 < self.alpha < 1 or (self.fdr is not None and not 0 < self.fdr < 1):
            raise ValueError(f"GenesConfig: alpha {self.alpha} and fdr {self.fdr} must lie in (0, 1)")

    @classmethod
    def paper(cls, **kw) -> GenesConfig:
        """The paper's rule: any feature with P < 0.05, no adjustment."""
        return cls(**{"feature_adjust": "none", "fdr": None, "alpha": 0.05, **kw})

    @property
    def rule(self) -> str:
        p = "m * p_min" if self.feature_adjust == "bonferroni" else "p_min"
        return f"BH({p}) < {self.fdr}" if self.fdr is not None else f"{p} < {self.alpha}"

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> GenesConfig:
        return cls(**d)


def principal_components(features: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Scores (n, k) of the top k PCs of the z-scored features and their explained-variance
    ratios; each component's sign makes its largest loading positive (deterministic)."""
    x = np.asarray(features, dtype=np.float64)
    sd = x.std(axis=0)
    z = (x - x.mean(axis=0)) / np.where(sd > 0, sd, 1.0)
    u, s, vt = np.linalg.svd(z, full_matrices=False)
    k = min(k, s.size)
    sign = np.sign(vt[np.arange(k), np.abs(vt[:k]).argmax(axis=1)])
    return u[:, :k] * s[:k] * sign, (s[:k] ** 2) / (s ** 2).sum()


@dataclass
class GenesResult:
    """``genes``: one row per tested gene; ``correlation``: long (gene, feature, r, p) for the top
    genes; ``enrichment``: one row per gene set and method; ``info``: counts and choices."""

    config: GenesConfig
    genes: pd.DataFrame
    correlation: pd.DataFrame
    enrichment: pd.DataFrame
    info: dict[str, Any]

    @property
    def significant(self) -> list[str]:
        return self.genes.loc[self.genes["significant"], "gene"].tolist()

    @property
    def summary(self) -> pd.DataFrame:
        ora = self.enrichment[self.enrichment["method"] == "hypergeometric"]
        top = ora["gene_set"].head(5).tolist()
        return pd.DataFrame([{**{k: self.info[k] for k in ("n_patients", "n_variables", "n_genes_tested")},
                              "n_significant": len(self.significant), "rule": self.config.rule,
                              "top_gene_sets": ", ".join(top)}])

    def tables(self) -> dict[str, pd.DataFrame]:
        return {"genes_correlation": self.correlation,
                "genes_significant": self.genes.loc[self.genes["significant"]].reset_index(drop=True),
                "genes_enrichment": self.enrichment}


def _variables(features: np.ndarray, cfg: GenesConfig, names) -> tuple[np.ndarray, list[str], dict]:
    if cfg.pcs is None:
        names = list(names) if names is not None else [f"f{i:03d}" for i in range(features.shape[1])]
        return np.asarray(features, np.float64), names, {}
    scores, evr = principal_components(features, cfg.pcs)
    return scores, [f"PC{i + 1}" for i in range(scores.shape[1])], {"explained_variance": evr.round(4).tolist()}


def radiogenomics(features, expression: pd.DataFrame, gene_sets=None, config: GenesConfig | None = None, *,
                  feature_names=None) -> GenesResult:
    """Core job: ``features`` (n, D) and ``expression`` (n patients x genes, log2(TPM+1), same row
    order), ``gene_sets`` a name -> GeneSet (or gene list) mapping."""
    cfg = config or GenesConfig()
    x = np.asarray(features, np.float64)
    if x.ndim != 2 or x.shape[0] != expression.shape[0]:
        raise StoreError(f"genes: features {x.shape} and expression {expression.shape} do not align by patient")
    if x.shape[0] < 5:
        raise StoreError(f"genes: {x.shape[0]} patients with both features and expression; need at least 5")
    variables, names, extra = _variables(x, cfg, feature_names)
    mean = expression.mean(axis=0)
    keep = (mean >= cfg.min_expression) & (expression.std(axis=0) > 0)
    expr = expression.loc[:, keep]
    n, m = variables.shape
    s = gene_summaries(variables, expr.to_numpy(np.float64), method=cfg.method, alpha=cfg.alpha, chunk=cfg.chunk)
    p_min = r_to_p(s["r_best"], n)
    p_gene = bonferroni(p_min, m) if cfg.feature_adjust == "bonferroni" else p_min
    q_gene = bh_adjust(p_gene)
    sig = (q_gene < cfg.fdr) if cfg.fdr is not None else (p_gene < cfg.alpha)
    genes = pd.DataFrame({"gene": expr.columns.astype(str), "mean_expression": mean[keep].to_numpy(),
                          "r_best": s["r_best"], "feature_best": np.asarray(names, dtype=object)[s["feature_best"]],
                          "p_min": p_min, "p_gene": p_gene, "q_gene": q_gene, "n_sig_features": s["n_sig"],
                          "significant": sig})
    genes = genes.sort_values(["p_gene", "gene"], kind="mergesort").reset_index(drop=True)
    top = genes["gene"].head(cfg.top_genes).tolist()
    r_top = correlation_matrix(variables, expr[top].to_numpy(np.float64), method=cfg.method).compute()
    corr = pd.DataFrame({"gene": np.repeat(top, m), "feature": np.tile(names, len(top)),
                         "r": r_top.T.ravel()})
    corr["p"] = r_to_p(corr["r"].to_numpy(), n)
    enrich = _enrichment(genes, gene_sets or {}, cfg)
    info = {"n_patients": int(n), "n_variables": int(m), "variables": "pcs" if cfg.pcs else "features",
            "n_genes_input": int(expression.shape[1]), "n_genes_tested": int(keep.sum()),
            "n_genes_filtered": int((~keep).sum()), "expression_filter": f"mean log2(TPM+1) >= {cfg.min_expression}",
            "rule": cfg.rule, "n_significant": int(sig.sum()), "method": cfg.method, **extra}
    return GenesResult(cfg, genes, corr, enrich, info)


def _enrichment(genes: pd.DataFrame, gene_sets, cfg: GenesConfig) -> pd.DataFrame:
    ora = overrepresentation(genes.loc[genes["significant"], "gene"], genes["gene"], gene_sets,
                             min_size=cfg.min_set_size).assign(method="hypergeometric")
    parts = [ora]
    if cfg.preranked and gene_sets:
        metric = pd.Series(-np.log10(np.maximum(genes["p_min"].to_numpy(), 1e-300)), index=genes["gene"])
        parts.append(preranked_enrichment(metric, gene_sets, n_perm=cfg.n_perm, seed=cfg.seed,
                                          min_size=cfg.min_set_size).assign(method="preranked"))
    out = pd.concat(parts, ignore_index=True) if len(parts) > 1 else ora
    out["rank"] = out.groupby("method").cumcount() + 1
    return out


def _embeddings(table) -> tuple[list[str], np.ndarray]:
    import pyarrow as pa

    emb = table.column("embedding").combine_chunks()
    if not pa.types.is_fixed_size_list(emb.type):
        raise StoreError(f"genes: 'embedding' has type {emb.type}; expected fixed_size_list<float32>[D]")
    x = emb.flatten().to_numpy(zero_copy_only=False).reshape(len(emb), emb.type.list_size)
    return table.column("patient_id").to_pylist(), x


def run_genes(store, gene_sets: str | Path, config: GenesConfig | None = None, *,
              out: str | Path | None = None, write: bool = True) -> GenesResult:
    """Store-facing job: deep features ``feature_set`` x ``tables/expression``; writes the tables
    ``genes_correlation``, ``genes_significant``, ``genes_enrichment`` and the figures."""
    import pyarrow as pa

    cfg = config or GenesConfig()
    feature_set = cfg.feature_set
    sets = read_gmt(gene_sets)
    pids, x = _embeddings(store.read(feature_set))
    long = store.table("expression").to_pandas()
    both = sorted(set(pids) & set(long["patient_id"].astype(str)))
    if not both:
        raise StoreError(f"genes: no patient has both {feature_set!r} features and expression")
    row = {p: i for i, p in enumerate(pids)}
    expr = expression_matrix(long, both)
    res = radiogenomics(x[[row[p] for p in both]], expr, sets, cfg)
    res.info.update(feature_set=feature_set, gene_sets=str(gene_sets), n_gene_sets=len(sets))
    if write:
        lineage = {"config": cfg.to_dict(), "feature_set": feature_set, "gene_sets": str(gene_sets),
                   "patients": len(both)}
        for name, df in res.tables().items():
            store.write_table(name, pa.Table.from_pandas(df, preserve_index=False), lineage=lineage)
        from .genes_plots import save_genes_figures

        save_genes_figures(res, Path(out) if out else StoreLayout.of(store).figures)
    return res
