"""One function per report section: store tables in, a :class:`Section` out."""

from __future__ import annotations

import json
import platform
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from dltr.core.layout import StoreLayout, encoder_card
from dltr.core.vocabulary import CLINICAL, DLTR, DLTR_MLP, MULTI_HEADS, PRIMARY_HEAD, display_name, head_order
from dltr.report._document import Section

#: columns of the report's ``_head_inputs`` table: what each evaluated head's lineage says it read and learnt
HEAD_INPUT_COLUMNS = ("head", "head_version", "fusion", "native", "ordinal", "hidden")


def _auc_cell(r) -> str:
    if not np.isfinite(r["auc"]):
        return "NA"
    return f"{r['auc']:.3f} [{r['ci_low']:.3f}-{r['ci_high']:.3f}]"


def cohort_section(t: dict[str, pd.DataFrame]) -> Section:
    c = t["clinical"]
    rows = []
    for center, g in c.groupby("center", sort=True):
        lab = g["label"].dropna()
        row = {"center": center, "split": "/".join(sorted(g["split"].dropna().unique())),
               "patients": len(g), "objective response rate": float(lab.mean()) if len(lab) else np.nan}
        for col, name in (("age", "age, median"), ("afp", "AFP ng/mL, median"),
                          ("largest_diameter_mm", "largest diameter mm, median"), ("pfs_days", "PFS days, median")):
            if col in g:
                row[name] = float(pd.to_numeric(g[col], errors="coerce").median())
        if "pfs_event" in g:
            row["PFS events"] = int(pd.to_numeric(g["pfs_event"], errors="coerce").fillna(0).sum())
        rows.append(row)
    text = ("Patients per center of the registered cohort; the split column says which rows trained the models "
            "(train), which checked them inside the training center (internal) and which tested them (external).")
    return Section("Cohort", text, tables=[("", pd.DataFrame(rows))])


def comparison_section(t: dict[str, pd.DataFrame]) -> Section:
    m = t["eval_metrics"]
    m = m.assign(model=m["head"].map(display_name), cell=m.apply(_auc_cell, axis=1))
    cohorts = list(dict.fromkeys(m["evaluation_group"]))
    models = [display_name(h) for h in head_order(m["head"])]
    table = m.pivot(index="model", columns="evaluation_group", values="cell").loc[models, cohorts].reset_index()
    d = t.get("eval_delong", pd.DataFrame())
    prow = []
    for _, r in d.iterrows():
        if PRIMARY_HEAD in (r["head1"], r["head2"]):
            other = r["head2"] if r["head1"] == PRIMARY_HEAD else r["head1"]
            prow.append({"model": display_name(other), "evaluation_group": r["evaluation_group"], "p": float(r["p_value"])})
    tables = [("AUC [95 % CI] (DeLong) per model and evaluation group", table)]
    if prow:
        p = pd.DataFrame(prow).pivot(index="model", columns="evaluation_group", values="p")
        p = p.loc[[x for x in models if x in p.index]]  # the models' order of the AUC table
        tables.append(("Paired DeLong P against DLTR_MLP", p[[c for c in cohorts if c in p]].reset_index()))
    cut = m[["model", "evaluation_group", "accuracy", "sensitivity", "specificity", "ppv", "npv", "brier",
             "calibration_slope", "calibration_intercept"]].copy()
    cut = cut[[c for c in cut.columns if c in m.columns or c in ("model",)]]
    tables.append(("Metrics at the cutoff fixed on the training split (Youden), and calibration", cut))
    hi = t.get("_head_inputs", pd.DataFrame(columns=list(HEAD_INPUT_COLUMNS)))
    mlp = hi[hi["head"] == DLTR_MLP]
    measured = bool(mlp["fusion"].str.startswith("descriptors").any())
    native = next((str(v) for v in mlp["native"] if isinstance(v, str) and v), "")   # their voxel size, as text
    ordinal = bool(mlp["ordinal"].astype(bool).any())
    hidden = mlp["hidden"].iloc[0] if len(mlp) else None
    depth = ("" if not isinstance(hidden, list) else
             "; its inner cross-validation chose a network without a hidden layer (a linear model)" if not hidden else
             f"; its inner cross-validation chose {len(hidden)} hidden layer{'s' * (len(hidden) > 1)} of "
             f"{' / '.join(map(str, hidden))} units")
    inputs = ("the encoder's response logit (out of fold for training patients), ROI descriptors measured on each "
              "patient's own encoder input (tumour, ring, core and rim intensities relative to the surrounding "
              "liver)" + (", tumour descriptors measured on the ingested volumes brought to one resolution, "
                          f"{native} (relative intensities, texture, shape; a patient imaged more coarsely is refused)"
                          if native else "")
              + " and every declared clinical predictor" if measured
              else "deep features plus the selected clinical factors")
    text = ("Clinical: logistic regression on variables selected on the training split. DLTR: a linear head on the "
            f"encoder's deep features. DLTR_MLP: a multilayer perceptron on {inputs}"
            + (", trained on the four mRECIST grades (cumulative logit: PD < SD < PR < CR) and scoring the "
               "probability of objective response (CR or PR)" if ordinal else "") + depth + ". XGBoost fusion: "
            "gradient-boosted trees on the same inputs as DLTR_MLP.")
    if set(m["head"]) & set(MULTI_HEADS):
        text += (" Radiomics, Radiomics+clinical, Deep+radiomics+clinical: LASSO logistic regression on IBSI radiomics "
                 "features (reduced and selected inside each cross-validation fold of the training split), alone, with "
                 "the selected clinical factors, and with the deep read-outs too (cross-fitted as for DLTR_MLP: "
                 "out-of-fold for the encoder's training rows). P values: paired DeLong test of each model against "
                 "DLTR_MLP on the same patients.")
    return Section("Model comparison", text, tables=tables)


def _figs(fig_dir: Path, pattern: str) -> list[Path]:
    return sorted(fig_dir.glob(pattern))


def _caption(p: Path) -> str:
    return p.stem.replace("_", " ")


def curves_section(t: dict[str, pd.DataFrame], fig_dir: Path) -> Section:
    figs = [(_caption(p), p) for kind in ("roc", "calibration", "decision_curve")
            for p in _figs(fig_dir, f"{kind}_*.png")]
    text = ("ROC curves with DeLong confidence bands, calibration curves (predicted against observed response in "
            "bins) and decision curves (net benefit against threshold probability, with treat-all and treat-none).")
    return Section("ROC, calibration and decision curves", text, figures=figs)


def survival_section(t: dict[str, pd.DataFrame], fig_dir: Path) -> Section:
    s = t.get("survival_summary")
    tables = []
    if s is not None and not s.empty:
        cols = [c for c in ("evaluation_group", "n", "events", "n_low", "n_high", "median_pfs_low", "median_pfs_high",
                            "logrank_p", "hr_group", "hr_group_lower", "hr_group_upper", "c_index", "ph_p_group")
                if c in s.columns]
        tables.append(("PFS by DLTR_MLP risk group (cutoff fixed on the training split)", s[cols]))
    by_head = _survival_by_head(t.get("survival_by_head"))
    if by_head is not None:
        tables.append(("Each model's risk groups (its own training cutoff): log-rank P; Cox HR high vs low risk "
                       "[95 % CI]", by_head))
    figs = [(_caption(p), p) for p in _figs(fig_dir, "km_*.png")]
    text = ("Risk groups from DLTR_MLP's predicted probability of objective response: high risk = predicted "
            "non-responder (score below the training cutoff). Kaplan-Meier curves with 95 % bands and numbers at "
            "risk; log-rank test; Cox hazard ratio high vs low.")
    return Section("Progression-free survival", text, tables=tables, figures=figs)


def _survival_by_head(b: pd.DataFrame | None) -> pd.DataFrame | None:
    """model x evaluation group cells "P; HR [low-high]" from the table ``survival_by_head`` (None if absent)."""
    if b is None or b.empty or not {"head", "logrank_p", "hr_group"} <= set(b.columns):
        return None

    def cell(r) -> str:
        est = [float(r.get(k, np.nan)) for k in ("hr_group", "hr_group_lower", "hr_group_upper")]
        hr = f"{est[0]:.2f} [{est[1]:.2f}-{est[2]:.2f}]" if np.isfinite(est).all() and est[1] > 0 else \
            "HR not estimable"  # e.g. no event in one risk group
        return f"{r['logrank_p']:.3g}; {hr}"

    b = b.assign(model=b["head"].map(display_name), cell=b.apply(cell, axis=1))
    groups = list(dict.fromkeys(b["evaluation_group"]))
    models = [display_name(h) for h in head_order(b["head"])]
    return b.pivot(index="model", columns="evaluation_group", values="cell").loc[models, groups].reset_index()


def genes_section(t: dict[str, pd.DataFrame], fig_dir: Path) -> Section:
    sig = t.get("genes_significant", pd.DataFrame())
    enr = t.get("genes_enrichment", pd.DataFrame())
    tables = []
    if not enr.empty:
        e = enr[enr["method"] == "hypergeometric"] if "method" in enr else enr
        cols = [c for c in ("gene_set", "set_size", "overlap", "p_value", "q_value") if c in e.columns]
        tables.append(("Top gene sets (over-representation, hypergeometric, BH-adjusted)",
                       e.sort_values("p_value").head(10)[cols]))
    figs = [(_caption(p), p) for p in _figs(fig_dir, "genes_*.png")]
    text = (f"{len(sig)} genes correlate significantly with the deep features (Spearman; per-gene minimum P "
            "Bonferroni-adjusted across features, then Benjamini-Hochberg across genes, q < 0.05).")
    return Section("Radiogenomics", text, tables=tables, figures=figs)


def _ext_auc(m: pd.DataFrame, head: str) -> list[float]:
    r = m[(m["head"] == head) & m["evaluation_group"].str.startswith("external")]
    return [float(x) for x in r.sort_values("evaluation_group")["auc"]]


def paper_section(t: dict[str, pd.DataFrame], paper: dict[str, Any], truth: dict[str, Any] | None) -> Section:
    m = t["eval_metrics"]
    rows = []
    for head, name in ((h, display_name(h)) for h in (DLTR_MLP, DLTR, CLINICAL)):
        ours = _ext_auc(m, head)
        rows.append({"figure": f"external AUC, {name}", "paper": " / ".join(f"{v:.3f}" for v in paper["external_auc"][name]),
                     "this run": " / ".join(f"{v:.3f}" for v in ours)})
    s = t.get("survival_summary")
    if s is not None and "logrank_p" in s:
        ext = s[s["evaluation_group"].astype(str).str.startswith("external")]
        rows.append({"figure": "PFS log-rank P (external)", "paper": f"{paper['pfs_logrank_p']}",
                     "this run": " / ".join(f"{c}: {p:.3g}" for c, p in zip(ext["evaluation_group"], ext["logrank_p"],
                                                                          strict=True))})
    sig = t.get("genes_significant", pd.DataFrame())
    rows.append({"figure": "genes correlated with deep features", "paper": str(paper["n_genes"]),
                 "this run": str(len(sig))})
    enr = t.get("genes_enrichment", pd.DataFrame())
    if not enr.empty:
        e = enr[enr["method"] == "hypergeometric"] if "method" in enr else enr
        top = ", ".join(e.sort_values("p_value").head(4)["gene_set"].str.replace("HALLMARK_", ""))
        rows.append({"figure": "top enriched pathways", "paper": ", ".join(paper["pathways"]), "this run": top})
    tables = [("This run beside Chen et al. (BMC Cancer 25:1810, 2025)", pd.DataFrame(rows))]
    if truth:
        o = []
        mlp = m[m["head"] == PRIMARY_HEAD].set_index("evaluation_group")["auc"]
        for center, c in sorted(truth["centers"].items()):
            key = f"external {center}" if f"external {center}" in mlp else "internal"
            ours = float(mlp[key]) if key in mlp else None
            o.append({"center": center, "oracle AUC (true probability)": c["oracle_auc"],
                      "oracle image-only": c["image_only_auc"], "oracle clinical-only": c["clinical_only_auc"],
                      "DLTR_MLP (this run)": ours,
                      "gap to oracle": None if ours is None else float(c["oracle_auc"]) - float(ours)})
        tables.append(("The generator's oracle: AUC of the true response probability per center (DLTR_MLP on the "
                       "center's test rows: internal for the training center)", pd.DataFrame(o)))
        if truth.get("genes"):
            g = truth["genes"]
            planted = {r["gene"] for r in g["planted_genes"]}
            found = set(sig["gene"].astype(str)) if "gene" in sig else set()
            hit = len(found & planted)
            tables.append(("Planted radiogenomic signal and how much of it this run recovered", pd.DataFrame(
                [{"planted genes": len(planted), "significant here": len(found), "of them planted": hit,
                  "precision": hit / len(found) if found else None,
                  "recall": hit / len(planted) if planted else None,
                  "planted pathways": ", ".join(
                      p if isinstance(p, str) else str(p.get("pathway", p)) for p in g["planted_pathways"])}])))
    text = ("The cohort is synthetic, so its numbers are not the paper's patients; the comparison shows whether "
            "the pipeline recovers the structure the generator planted (the oracle) the way the paper reports "
            "it for real patients.")
    return Section("This run beside the paper and the oracle", text, tables=tables)


def performance_section(stages: list[dict[str, Any]]) -> Section:
    rows = []
    for s in stages:
        work = s.get("work") or {}
        row = {"stage": s["name"], "seconds": round(float(s["seconds"]), 2)}
        rates = [f"{n / s['seconds']:.2f} {unit}/s" for unit, n in sorted(work.items()) if n and s["seconds"] > 0]
        row["rate"] = ", ".join(rates) if rates else "-"
        rows.append(row)
    total = sum(float(s["seconds"]) for s in stages)
    text = (f"Time per stage of the run that produced the results ({total:.0f} s in all); a reused stage shows the "
            "time of the run that computed it.")
    return Section("Performance", text, tables=[("", pd.DataFrame(rows))])


def _normalisation(store_root: Path, card_hash: str | None) -> str:
    """The encoder's ROI normalisation, said plainly: a transductive mode must be named in the report."""
    path = encoder_card(StoreLayout(store_root).encoder(str(card_hash)))
    if not card_hash or not path.is_file():
        return "unknown (encoder card not in the store)"
    mode = json.loads(path.read_text()).get("preprocess", {}).get("normalisation", "?")
    return {"image": "image: per image, on its own ROI surroundings (prospective-safe)",
            "ratio": "ratio: per image, signal relative to its own ROI surroundings (prospective-safe)",
            "zscore": "zscore: per center, with that center's own ingest statistics (TRANSDUCTIVE: a new "
                      "center's images are needed before its patients can be scored)",
            "none": "none: raw intensities"}.get(mode, mode)


def lineage_section(store_root: Path, t: dict[str, pd.DataFrame], stages: list[dict[str, Any]],
                    run_info: dict[str, Any]) -> Section:
    import importlib.metadata as md

    rows = [{"item": "stage " + s["name"], "hash or version": s.get("inputs_hash", "")} for s in stages]
    reg = t.get("_registry", pd.DataFrame())
    for _, r in reg.iterrows():
        lin = r.get("lineage") or {}
        made_by = f"library {lin['library']}" if "library" in lin and "encoder_card_hash" not in lin else \
            f"encoder {lin.get('encoder_card_hash', '?')}"
        rows.append({"item": f"feature set {r['name']}@{r['version_id']}",
                     "hash or version": f"{made_by}, preprocess "
                                        f"{lin.get('preprocess_hash', '?')}, inputs {lin.get('inputs_hash', '?')}"})
        if "encoder_card_hash" in lin or "library" not in lin:
            rows.append({"item": f"normalisation of {r['name']}@{r['version_id']}",
                         "hash or version": _normalisation(store_root, lin.get("encoder_card_hash"))})
        else:  # a library producer (radiomics): its recipe's normalisation, per image (prospective-safe)
            norm = (lin.get("settings") or {}).get("setting", {}).get("normalize")
            rows.append({"item": f"normalisation of {r['name']}@{r['version_id']}",
                         "hash or version": "per image (z-score of each image, the library's normalize)" if norm
                         else "none: raw intensities"})
    for name in ("demo_hash",):
        if name in run_info:
            rows.append({"item": name, "hash or version": run_info[name]})
    cfg = run_info.get("demo_config", {})
    if cfg:
        rows.append({"item": "seed", "hash or version": str(cfg.get("seed"))})
    soft = []
    for pkg in ("dltr", "torch", "nvidia-dali-cuda120", "ray", "zarr", "dask", "duckdb", "pyarrow", "xgboost",
                "scikit-learn", "lifelines"):
        try:
            soft.append(f"{pkg} {md.version(pkg)}")
        except md.PackageNotFoundError:
            continue
    rows.append({"item": "software", "hash or version": f"Python {platform.python_version()}; " + ", ".join(soft)})
    text = (f"Everything above was read from the store at {store_root.name}/ (its registry, tables and figures); "
            "`dltr report --store` rebuilds this page without recomputing.")
    return Section("Lineage", text, tables=[("", pd.DataFrame(rows))])
