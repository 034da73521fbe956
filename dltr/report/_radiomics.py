"""The report's radiomics section: the multi-set heads, selection stability and the center effect."""

from __future__ import annotations

import pandas as pd

from dltr.core.vocabulary import MULTI_HEADS, display_name
from dltr.report._document import Section

RADIOMICS_TABLES = ("radiomics_center_effect", "radiomics_selection", "survival_by_head")


def radiomics_section(t: dict[str, pd.DataFrame]) -> Section | None:
    """None when the store has no radiomics table (no `dltr radiomics` run)."""
    ce, sel = t.get("radiomics_center_effect"), t.get("radiomics_selection")
    if ce is None and sel is None:
        return None
    tables = []
    if sel is not None and not sel.empty:
        top = (sel.assign(model=sel["head"].map(display_name)).sort_values(["head", "frequency", "feature"],
                                                                         ascending=[True, False, True])
               .groupby("head", sort=False).head(8))
        tables.append(("Selection stability: features most often kept by the LASSO across CV folds "
                       "(frequency) and whether the final fit kept them", top[["model", "feature", "frequency",
                                                                              "selected"]]))
    if ce is not None and not ce.empty:
        cols = [c for c in ("name", "epsilon_squared", "h", "p", "q") if c in ce.columns]
        tables.append(("Center effect: the features the center moves most (Kruskal-Wallis epsilon^2 across centers)",
                       ce.sort_values("epsilon_squared", ascending=False).head(12)[cols]))
        share = float((ce["q"] < 0.05).mean()) if "q" in ce.columns else float("nan")
    text = (f"{', '.join(MULTI_HEADS.values())}: IBSI features (pyradiomics) of the tumour in every phase, reduced "
            "(correlation pruning) and selected (LASSO) inside each cross-validation fold of the training split, "
            "alone, with the selected clinical factors, and with the deep features too; they stand beside DLTR_MLP "
            "in the model comparison above, with paired DeLong P values.")
    if ce is not None and not ce.empty:
        text += (f" {share:.0%} of the radiomics features differ across centers at FDR 5 %: candidates for "
                 "harmonisation (epsilon^2 near 0: no center effect; near 1: the centers barely overlap).")
    return Section("Radiomics", text, tables=tables)
