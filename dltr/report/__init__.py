"""The report a clinician-researcher puts beside the paper: ``report.html`` (self-contained) and
``report.md``, built from the store's tables and figures alone (``dltr report`` recomputes nothing).

Sections: cohort per center; model comparison in the paper's layout with DeLong P against DLTR_MLP;
ROC, calibration and decision curves; Kaplan-Meier per external center; radiogenomics; this run
beside the paper's numbers and the generator's oracle; performance per stage; lineage.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pandas as pd

from dltr.core.io import atomic_write_text
from dltr.core.layout import StoreLayout
from dltr.report._document import Section, render_html, render_markdown
from dltr.report._radiomics import RADIOMICS_TABLES, radiomics_section
from dltr.report._sections import (
    HEAD_INPUT_COLUMNS,
    cohort_section,
    comparison_section,
    curves_section,
    genes_section,
    lineage_section,
    paper_section,
    performance_section,
    survival_section,
)

__all__ = ["PAPER", "build_report"]

# Chen et al., BMC Cancer 25:1810 (2025): the numbers the report sets this run beside.
PAPER: dict[str, Any] = {
    "external_auc": {"DLTR_MLP": (0.800, 0.818), "DLTR": (0.649, 0.629), "Clinical": (0.648, 0.659)},
    "pfs_logrank_p": 0.035,
    "n_genes": 149,
    "pathways": ("angiogenesis", "epithelial-mesenchymal transition", "hypoxia", "TGF-beta signalling"),
}

TITLE = "dltr: response to TACE from pretreatment MRI - run report"


def _tables(store_root: Path) -> dict[str, pd.DataFrame]:
    from features import FeatureStore

    store = FeatureStore(store_root, create=False)
    names = set(store.tables())
    out = {}
    for name in ("clinical", "eval_metrics", "eval_delong", "survival_summary", "genes_significant",
                 "genes_enrichment", "genes_correlation", "scores", *RADIOMICS_TABLES):
        if name in names:
            out[name] = store.table(name).to_pandas()
    out["_registry"] = pd.DataFrame([v.to_dict() for fs in store.feature_sets() for v in store.versions(fs)])
    out["_head_inputs"] = _head_inputs(store_root, out.get("eval_metrics"))
    return out


def _native_resolution(lineage: dict[str, Any]) -> str:
    """The voxel size of a head's native descriptors as text, with how it was set when the default floor was raised
    to the stored images' coarsest voxel (which reads every center's acquisition metadata); "" when it reads none."""
    if lineage.get("native_spacing_mm") is None:
        return ""
    text = " x ".join(f"{float(v):g}" for v in lineage["native_spacing_mm"]) + " mm"
    source = str(lineage.get("native_spacing_source", ""))
    return f"{text} ({source})" if "raised" in source else text


def _head_inputs(store_root: Path, metrics: pd.DataFrame | None) -> pd.DataFrame:
    """head, head_version, fusion (the fusion inputs its lineage records, "" for the read-out), native (the voxel size
    of its native descriptors as text, e.g. "4.5 x 4.5 x 7 mm", from its lineage; "" when it reads none), ordinal
    (whether it learnt from the mRECIST grades: its lineage's outcome), hidden (the hidden-layer widths its inner CV
    chose, [] for a linear network, None when not recorded) of each evaluated head version, so that the report
    describes the heads it shows."""
    from dltr.core.exceptions import ModelError
    from models.heads import ORDINAL_OUTCOME, HeadRegistry

    rows = []
    if metrics is not None and "head_version" in metrics:
        reg = HeadRegistry(store_root)
        for head, version in metrics[["head", "head_version"]].drop_duplicates().itertuples(index=False):
            try:
                lineage = reg.meta(head, version).get("lineage") or {}
            except ModelError:  # a head trained outside the registry: described generically
                lineage = {}
            rows.append({"head": head, "head_version": version, "fusion": str(lineage.get("fusion", "")),
                         "native": _native_resolution(lineage),
                         "ordinal": lineage.get("outcome") == ORDINAL_OUTCOME,
                         "hidden": (lineage.get("inner_cv_choice") or {}).get("hidden")})
    return pd.DataFrame(rows, columns=list(HEAD_INPUT_COLUMNS))


def build_report(store_root: str | Path, out: str | Path, *, truth_dir: str | Path | None = None,
                 stages: list[dict[str, Any]] | None = None,
                 run_info: dict[str, Any] | None = None) -> tuple[Path, Path]:
    """Write ``out/report.html`` and ``out/report.md`` (figures copied beside the Markdown)."""
    store_root, out = Path(store_root), Path(out)
    out.mkdir(parents=True, exist_ok=True)
    stages = stages if stages is not None else _stages_beside(store_root)
    truth = _truth(Path(truth_dir)) if truth_dir else None
    t = _tables(store_root)
    fig_dir = StoreLayout.of(store_root).figures
    sections: list[Section] = [
        cohort_section(t),
        comparison_section(t),
        *filter(None, [radiomics_section(t)]),
        curves_section(t, fig_dir),
        survival_section(t, fig_dir),
        genes_section(t, fig_dir),
        paper_section(t, PAPER, truth),
        performance_section(stages),
        lineage_section(store_root, t, stages, run_info or {}),
    ]
    figs = out / "figures"
    if figs.exists():
        shutil.rmtree(figs)
    figs.mkdir()
    for s in sections:
        copied = []
        for caption, path in s.figures:
            dst = figs / Path(path).name
            shutil.copyfile(path, dst)
            copied.append((caption, dst))
        s.figures = copied
    html_path, md_path = out / "report.html", out / "report.md"
    atomic_write_text(html_path, render_html(TITLE, sections))
    atomic_write_text(md_path, render_markdown(TITLE, sections, figure_dir=out))
    return html_path, md_path


def _truth(truth_dir: Path) -> dict[str, Any] | None:
    f = truth_dir / "centers.json"
    if not f.exists():
        return None
    return {"centers": json.loads(f.read_text()),
            "genes": json.loads((truth_dir / "genes.json").read_text()) if (truth_dir / "genes.json").exists()
            else None}


def _stages_beside(store_root: Path) -> list[dict[str, Any]]:
    f = store_root.parent / "stages.json"
    if not f.exists():
        return []
    recs = json.loads(f.read_text())
    ordered = sorted(recs.items(), key=lambda kv: kv[1].get("order", 0))
    return [{"name": k, **v, "reused": True} for k, v in ordered]
