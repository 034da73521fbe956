"""CLI of the analysis stage: ``dltr survival`` and ``dltr genes``."""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import typer

from dltr.cli._common import config_from, echo_json
from dltr.core.exceptions import StoreError


def _store(path: Path):
    from features import FeatureStore

    return FeatureStore(path, create=False)


def _clean(records: list[dict]) -> list[dict]:
    """NaN / inf -> None, so that --json prints valid JSON."""
    return [{k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in r.items()}
            for r in records]


def survival_cmd(
    store: Path = typer.Option(..., "--store", help="Store folder with a scores table (dltr train-heads)."),
    head: str = typer.Option(None, "--head", help="Head whose score defines the risk groups (default dltr_mlp): "
                             "NAME (its version in the scores table) or NAME@VERSION (scored now, replacing the "
                             "head's rows in the scores table)."),
    cutoff: str = typer.Option(None, "--cutoff", help="Cutoff source, fixed on the training split: 'scores' "
                               "(default: the head's Youden cutoff in the scores table), 'youden' or 'median'."),
    out: Path = typer.Option(None, "--out", help="Folder for the KM figures (default STORE/figures)."),
    as_json: bool = typer.Option(False, "--json", help="Print the per-evaluation-group summary as JSON."),
) -> None:
    """PFS by predicted response: KM curves, log-rank, Cox HR, PH check, C-index per evaluation group."""
    from analysis.survival import SurvivalConfig, run_survival
    from dltr.core.vocabulary import parse_ref

    fs = _store(store)
    name, version = parse_ref(head, what="--head") if head else (None, None)
    if version is not None:
        _rescore(fs, head)
    res = run_survival(fs, config_from(SurvivalConfig(), head=name, cutoff=cutoff), out=out)
    if as_json:
        echo_json({"head": res.head, "head_version": res.head_version, "cutoff": res.cutoff,
                   "evaluation_groups": _clean(res.summary.to_dict(orient="records"))})
        return
    typer.echo(f"{res.head} {res.head_version}: cutoff {res.cutoff:.4g} ({res.cutoff_method}, training split)")
    for r in res.summary.to_dict(orient="records"):
        typer.echo(f"  {r['evaluation_group']:<20} n={r['n']:<4} events={r['events']:<4} high/low={r['n_high']}/{r['n_low']}"
                   f"  log-rank P={r['logrank_p']:.3g}  HR={r['hr_group']:.2f} [{r['hr_group_lower']:.2f}-"
                   f"{r['hr_group_upper']:.2f}]  C={r['c_index']:.3f}")


def _rescore(fs, ref: str) -> None:
    """Put the scores of head version ``ref`` (NAME@VERSION) into the scores table in place of that head's rows."""
    import pandas as pd
    import pyarrow as pa

    from models.heads import score_heads

    new = score_heads(fs, heads=(ref,), write=False)
    try:
        old = fs.table("scores").to_pandas()
        lineage = dict(fs.describe("scores").get("lineage") or {})
    except StoreError:
        old, lineage = new.iloc[:0], {}
    name, version = str(new["head"].iloc[0]), str(new["head_version"].iloc[0])
    merged = pd.concat([old[old["head"] != name], new], ignore_index=True)
    lineage["heads"] = {**(lineage.get("heads") or {}), name: version}
    fs.write_table("scores", pa.Table.from_pandas(merged, preserve_index=False), lineage=lineage)


def genes_cmd(
    store: Path = typer.Option(..., "--store", help="Store folder with deep features and an expression table."),
    gene_sets: Path = typer.Option(..., "--gene-sets", help="Gene sets in MSigDB GMT format."),
    feature_set: str = typer.Option(None, "--feature-set", help="Feature set: NAME or NAME@VERSION (default dltr)."),
    method: str = typer.Option(None, "--method", help="Correlation: spearman (default) or pearson."),
    pcs: int = typer.Option(None, "--pcs", help="Correlate genes with the top K principal components of the "
                            "features instead of every feature."),
    fdr: float = typer.Option(None, "--fdr", help="BH FDR level on the per-gene P (Bonferroni over features; "
                              "default 0.05); 0 turns FDR off (then P < --alpha)."),
    alpha: float = typer.Option(None, "--alpha", help="P threshold when FDR is off (default 0.05)."),
    paper_rule: bool = typer.Option(False, "--paper-rule", help="The paper's rule: any feature at P < --alpha, "
                                    "no adjustment (most genes pass by chance with many features)."),
    min_expression: float = typer.Option(None, "--min-expression", help="Test genes whose mean log2(TPM+1) "
                                         "is at least this (default 1)."),
    preranked: bool = typer.Option(False, "--preranked", help="Also run preranked (GSEA-style) enrichment."),
    seed: int = typer.Option(None, "--seed", help="Seed of the preranked permutations (default 0)."),
    out: Path = typer.Option(None, "--out", help="Folder for the figures (default STORE/figures)."),
    as_json: bool = typer.Option(False, "--json", help="Print the result as JSON."),
) -> None:
    """Deep feature x gene correlation (dask), significant genes and gene-set enrichment."""
    from analysis.genes import GenesConfig, run_genes

    kw = {"feature_set": feature_set, "method": method, "pcs": pcs, "alpha": alpha, "min_expression": min_expression,
          "preranked": preranked or None, "seed": seed}
    if paper_rule:
        cfg = config_from(GenesConfig.paper(), **kw)
    else:
        cfg = config_from(GenesConfig(), **kw)
        if fdr is not None:
            cfg = dataclasses.replace(cfg, fdr=fdr or None)
    res = run_genes(_store(store), gene_sets, cfg, out=out)
    ora = res.enrichment[res.enrichment["method"] == "hypergeometric"]
    if as_json:
        echo_json({"info": res.info, "significant": res.significant,
                   "enrichment": _clean(ora.drop(columns=["genes"]).head(20).to_dict(orient="records"))})
        return
    i = res.info
    typer.echo(f"{i['n_patients']} patients x {i['n_variables']} {i['variables']} x {i['n_genes_tested']} genes "
               f"({i['method']}); rule {i['rule']}: {i['n_significant']} significant genes")
    for r in ora.head(8).to_dict(orient="records"):
        typer.echo(f"  {r['gene_set']:<45} {r['overlap']:>3}/{r['set_size']:<4} P={r['p_value']:.3g} "
                   f"q={r['q_value']:.3g}")


def register(app: typer.Typer) -> None:
    """Add this stage's commands to ``app``."""
    app.command("survival")(survival_cmd)
    app.command("genes")(genes_cmd)
