"""The validity benchmark's radiomics hook: per seed, the radiomics heads beside the paper's, and paired DeLong
tests of every head against DLTR_MLP.

``radiomics_scores`` is one cached stage of a seed's ledger (``SEED_DIR/stages.json``): radiomics features of the
seed's store with the demo's recipe (``dltr.demo.demo_radiomics_settings``: dltr's default without GLCM), on Ray,
then ``models.heads.train_multi_heads`` (Radiomics, Radiomics+clinical, Deep+radiomics+clinical; the deep block
cross-fitted from the encoder's crossfit.npz). ``delong_vs_primary`` / ``delong_summary`` / ``render_delong``: the
paired DeLong P of each head against DLTR_MLP per seed and evaluation group, and across seeds.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from pathlib import Path

import pandas as pd

from dltr.core.vocabulary import PRIMARY_HEAD

KEEP = ["patient_id", "center", "split", "head", "score", "cutoff", "label"]


def radiomics_scores(ledger, store_root: Path, feature_set: str, seed: int, root: Path, workers: int = 2
                     ) -> pd.DataFrame:
    """Scores of the multi-set heads for one seed (columns as the seed's other score files), cached by the deep
    feature set, the seed and the recipe's hash."""
    from dltr.demo import demo_radiomics_settings

    settings = demo_radiomics_settings()
    key = [feature_set, seed, settings.content_hash(), "v1"]
    path = root / f"scores-radiomics-{feature_set.replace('@', '-')}.parquet"

    def stage():
        from features import FeatureStore, predictor_columns
        from models.heads import MultiHeadsConfig, train_multi_heads
        from pipeline.radiomics import RadiomicsConfig, extract_radiomics

        rep = extract_radiomics(store_root, settings, RadiomicsConfig(workers=workers))
        store = FeatureStore(store_root)
        clinical, labs = predictor_columns(store) or (None, None)
        res = train_multi_heads(store, MultiHeadsConfig(deep=feature_set, clinical=clinical, labs=labs, seed=seed))
        res["scores"][KEEP].to_parquet(path, index=False)
        return {"radiomics": rep.version_id, "patients_per_s": rep.patients_per_s, "heads": res["versions"],
                "metrics": res["metrics"]}, {"patients": rep.n_computed}

    ledger.run(f"radiomics heads {feature_set}", key, stage, done=lambda o: path.exists())
    return pd.read_parquet(path)


def delong_vs_primary(scores: pd.DataFrame, groups: Callable[[pd.DataFrame], dict[str, pd.DataFrame]],
                      primary: str = PRIMARY_HEAD) -> pd.DataFrame:
    """Per seed x evaluation group (``groups``: the suite's split of a frame) x head: paired DeLong test of the head
    against ``primary`` on the patients both scored (seed, group, head, n, auc, auc_primary, difference, p_value)."""
    from analysis.roc import delong_test

    rows = []
    lab = scores.dropna(subset=["label"])
    for seed, d in lab.groupby("seed", sort=True):
        wide = d.pivot_table(index=["patient_id", "center", "split", "label"], columns="head", values="score")
        wide = wide.reset_index()
        if primary not in wide.columns:
            continue
        for group, g in groups(wide).items():
            for head in [h for h in wide.columns[4:] if h != primary]:
                gg = g.dropna(subset=[head, primary])
                y = gg["label"].astype(int).to_numpy()
                if len(gg) < 4 or y.min() == y.max():
                    continue
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    t = delong_test(y, gg[head].to_numpy(float), gg[primary].to_numpy(float))
                rows.append({"seed": int(seed), "group": group, "head": head, "n": len(gg), "auc": t.auc1,
                             "auc_primary": t.auc2, "difference": t.auc1 - t.auc2, "p_value": t.p_value})
    return pd.DataFrame(rows)


def delong_summary(per_seed: pd.DataFrame) -> pd.DataFrame:
    """Across seeds per head x group: mean and sd of AUC - AUC(DLTR_MLP), median P, and the share of seeds
    with P < 0.05 where the head is better / worse."""
    if per_seed.empty:
        return per_seed
    rows = []
    for (head, group), g in per_seed.groupby(["head", "group"], sort=True):
        sig = g["p_value"] < 0.05
        rows.append({"head": head, "group": group, "seeds": int(g["seed"].nunique()),
                     "difference_mean": g["difference"].mean(), "difference_sd": g["difference"].std(ddof=1),
                     "p_median": g["p_value"].median(), "better_p05": float((sig & (g["difference"] > 0)).mean()),
                     "worse_p05": float((sig & (g["difference"] < 0)).mean())})
    return pd.DataFrame(rows)


def render_delong(summary: pd.DataFrame, primary: str = PRIMARY_HEAD) -> str:
    """Markdown section: each head against DLTR_MLP across seeds."""
    if summary.empty:
        return ""
    lines = ["", f"## Paired DeLong against {primary} (per seed, then across seeds)", "",
             "| head | group | seeds | AUC - DLTR_MLP mean | sd | P median | seeds P<0.05 better | worse |",
             "|" + "---|" * 8]
    for r in summary.itertuples():
        sd = "-" if not math.isfinite(r.difference_sd) else f"{r.difference_sd:.3f}"
        lines.append(f"| {r.head} | {r.group} | {r.seeds} | {r.difference_mean:+.3f} | {sd} | {r.p_median:.3g} "
                     f"| {r.better_p05:.0%} | {r.worse_p05:.0%} |")
    return "\n".join(lines) + "\n"


__all__ = ["delong_summary", "delong_vs_primary", "radiomics_scores", "render_delong"]
