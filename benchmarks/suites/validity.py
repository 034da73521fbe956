"""Validity suite: does the model hold on centers it never saw? (issue #16)

The whole pipeline as the demo runs it (``_validity_pipeline``), on several seeds of the default synthetic
cohort (or on one cohort folder given with its truth folder), and per seed x head x evaluation group:

- ``auc`` and ``oracle_auc`` (the AUC of the truth's own probability ``p_true`` on the same patients and
  draws), ``gap`` = oracle - AUC;
- ``calibration_slope`` (logistic recalibration slope; 1 is ideal, < 1 over-confident);
- ``logrank_p`` of the two risk groups made by the head's training-split Youden cutoff (PFS);
- beside the heads, the learnable ceiling ``trait_l2`` (``_validity_pipeline.learnable_ceiling``): an L2
  regression on the truth's latent traits, fitted on the training rows, where the truth holds traits.

Across seeds: mean, sd and min of each, the number of seeds at or above issue #16's floor (``FLOOR``), and for
DLTR_MLP on each external center the share of seeds in which it beats Clinical, DLTR and the plain baseline and the
mean paired difference to each with its 95 % t-interval. Per seed also the selected encoder's CV AUC beside the
image-only oracle on the same folds (``_validity_pipeline.encoder_cv_ceiling``, where the truth gives ``s_img``).
Results: ``validity.json`` / ``validity.md`` beside the harness's results, and one harness figure per head and
external center (ours = AUC per seed, baseline = the plain baseline, ceiling = the oracle). Options (``dltr bench
--only validity``): ``--seeds 0,1,2``, ``--cohort DIR --truth DIR``, ``--set normalisation=zscore`` (any
``ValidityConfig`` field).
"""

from __future__ import annotations

import dataclasses
import json
import math
import warnings
from typing import Any

import numpy as np
import pandas as pd

from benchmarks.harness import BenchContext, Figure, Timing
from benchmarks.suites._validity_pipeline import ValidityConfig, flag, run_seed, spacing
from benchmarks.suites._validity_radiomics import delong_summary, delong_vs_primary, render_delong

RIVALS = ("clinical", "dltr", "plain_baseline")
#: issue #16's floor: no seed's external AUC below this (counted per head and group as ``seeds_at_floor``)
FLOOR = 0.65


def _choice(name: str, value: Any) -> str:
    """A ``--set`` value among the pipeline's choices for ``name``, refused up front (not after the cached stages)."""
    from models.heads import FUSIONS
    from pipeline.loaders import NORMALISATIONS

    choices = {"normalisation": NORMALISATIONS, "fusion": FUSIONS}[name]
    if str(value) not in choices:
        from dltr.core.exceptions import DltrError

        raise DltrError(f"validity: --set {name}={value!r}: choose one of {', '.join(choices)}")
    return str(value)


def config_from(ctx: BenchContext) -> ValidityConfig:
    opts = dict(getattr(ctx, "options", {}) or {})
    profile = str(opts.pop("profile", "tiny" if ctx.quick else "default"))
    fields = {f.name: f for f in dataclasses.fields(ValidityConfig)}
    given: dict[str, Any] = {}
    for k, v in opts.items():
        if k not in fields:
            given.setdefault("extra", {})[k] = v
        elif k in ("seeds", "candidates"):
            items = v.split(",") if isinstance(v, str) else v
            given[k] = tuple(int(s) for s in items) if k == "seeds" else tuple(str(s) for s in items)
        elif k in ("folds", "epochs", "width", "extract_workers", "ingest_workers", "clinical_bootstrap"):
            given[k] = int(v)
        elif k == "aux_weight":
            given[k] = float(v)
        elif k in ("mask_channel", "ordinal", "mlp_linear"):
            given[k] = flag(k, v)
        elif k in ("normalisation", "fusion"):
            given[k] = _choice(k, v)
        elif k == "native_spacing_mm":
            given[k] = spacing(v)
        else:
            given[k] = v
    if given.get("cohort") and not given.get("truth"):
        from dltr.core.exceptions import DltrError

        raise DltrError(f"validity: --cohort {given['cohort']} needs --truth DIR (truth/patients.csv with p_true)")
    if given.get("cohort"):
        given.setdefault("seeds", (ctx.seed,))
    return ValidityConfig.for_profile(profile, **given)


def _groups(d: pd.DataFrame) -> dict[str, pd.DataFrame]:
    out = {"training": d[d["split"] == "train"], "internal": d[d["split"] == "internal"]}
    ext = d[d["split"] == "external"]
    for c in sorted(ext["center"].unique()):
        out[f"external {c}"] = ext[ext["center"] == c]
    return out


def _logrank(g: pd.DataFrame) -> float:
    from lifelines.statistics import logrank_test

    g = g.dropna(subset=["pfs_days", "pfs_event"])
    low = g["score"] >= g["cutoff"]       # predicted responders: the low-risk group
    if low.all() or not low.any() or g["pfs_event"].sum() == 0:
        return math.nan
    r = logrank_test(g.loc[low, "pfs_days"], g.loc[~low, "pfs_days"], g.loc[low, "pfs_event"],
                     g.loc[~low, "pfs_event"])
    return float(r.p_value)


def seed_metrics(scores: pd.DataFrame) -> pd.DataFrame:
    """One row per seed x head x evaluation group."""
    from analysis.calibration import calibration
    from analysis.roc import auc_score

    rows = []
    for (seed, head), d in scores.dropna(subset=["label"]).groupby(["seed", "head"], sort=True):
        for group, g in _groups(d).items():
            y = g["label"].astype(int).to_numpy()
            if len(g) < 4 or y.min() == y.max():
                continue
            auc, oracle = auc_score(y, g["score"].to_numpy()), auc_score(y, g["p_true"].to_numpy())
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                slope = calibration(y, g["score"].to_numpy()).slope
            rows.append({"seed": int(seed), "head": head, "group": group, "n": len(g), "auc": auc,
                         "oracle_auc": oracle, "gap": oracle - auc, "calibration_slope": slope,
                         "logrank_p": _logrank(g), "encoder_cv_auc": float(g["encoder_cv_auc"].iloc[0]),
                         "encoder_cv_ceiling": (float(g["encoder_cv_ceiling"].iloc[0]) if "encoder_cv_ceiling" in g
                                                else math.nan)})
    return pd.DataFrame(rows)


def summarise(per_seed: pd.DataFrame) -> pd.DataFrame:
    """Across seeds per head x group: mean / sd / min AUC, mean gap and slope, median log-rank P, and for
    DLTR_MLP on external centers the share of seeds it beats each rival."""
    rows = []
    wide = per_seed.pivot_table(index=["seed", "group"], columns="head", values="auc")
    for (head, group), g in per_seed.groupby(["head", "group"], sort=True):
        row = {"head": head, "group": group, "seeds": int(g["seed"].nunique()),
               "auc_mean": g["auc"].mean(), "auc_sd": g["auc"].std(ddof=1), "auc_min": g["auc"].min(),
               "oracle_mean": g["oracle_auc"].mean(), "gap_mean": g["gap"].mean(),
               "slope_mean": g["calibration_slope"].mean(), "logrank_p_median": g["logrank_p"].median()}
        w = wide.xs(group, level="group")
        if head == "clinical" and "clinical_l2" in w.columns:
            both = w[["clinical", "clinical_l2"]].dropna()
            row["clinical_vs_l2_mean"] = float((both["clinical"] - both["clinical_l2"]).mean())
        if head == "dltr_mlp":
            for rival in RIVALS:
                if rival in w.columns:
                    both = w[["dltr_mlp", rival]].dropna()
                    row[f"beats_{rival}"] = float((both["dltr_mlp"] > both[rival]).mean()) if len(both) else math.nan
                    row[f"minus_{rival}"] = paired_interval((both["dltr_mlp"] - both[rival]).to_numpy())
        row["seeds_at_floor"] = int((g["auc"] >= FLOOR).sum())
        rows.append(row)
    return pd.DataFrame(rows)


def paired_interval(diff: np.ndarray) -> tuple[float, float, float]:
    """Mean of the per-seed paired differences and its 95 % t-interval (NaN bounds below 2 seeds): how far apart two
    heads are on average, which the share of seeds one wins does not say (a true mean difference of one sd of the
    per-seed differences wins 84 % of seeds; half an sd, 69 %)."""
    from scipy import stats

    diff = np.asarray(diff, np.float64)
    mean = float(diff.mean()) if diff.size else math.nan
    if diff.size < 2:
        return mean, math.nan, math.nan
    half = float(stats.t.ppf(0.975, diff.size - 1) * diff.std(ddof=1) / math.sqrt(diff.size))
    return mean, mean - half, mean + half


def train_internal_gap(per_seed: pd.DataFrame) -> pd.DataFrame:
    w = per_seed.pivot_table(index=["seed", "head"], columns="group", values="auc")
    if not {"training", "internal"} <= set(w.columns):
        return pd.DataFrame()
    gap = (w["training"] - w["internal"]).rename("train_minus_internal").reset_index()
    return gap.groupby("head")["train_minus_internal"].agg(["mean", "std"]).reset_index()


def render(cfg: ValidityConfig, summary: pd.DataFrame, gaps: pd.DataFrame, enc_cv: list[float],
           finite: list[bool], enc_ceiling: list[float] | None = None) -> str:
    lines = [f"# Validity benchmark ({cfg.profile if not cfg.cohort else cfg.cohort}, seeds {list(cfg.seeds)})",
             "", f"Method: `{json.dumps(cfg.method(), sort_keys=True)}`", "",
             f"Selected encoder's CV AUC in the training center per seed: {[round(v, 3) for v in enc_cv]}", "",
             *_ceiling_lines(enc_cv, enc_ceiling or []),
             f"Every clinical odds ratio has finite, non-zero 95 % CI bounds, per seed: {finite}", "",
             "| head | group | seeds | AUC mean | sd | min | oracle | gap | slope | log-rank P (median) "
             "| beats Clinical | beats DLTR | beats plain |", "|" + "---|" * 13]
    for r in summary.itertuples():
        b = [getattr(r, f"beats_{x}", math.nan) for x in RIVALS]
        lines.append(f"| {r.head} | {r.group} | {r.seeds} | {r.auc_mean:.3f} | {r.auc_sd:.3f} | {r.auc_min:.3f} "
                     f"| {r.oracle_mean:.3f} | {r.gap_mean:.3f} | {r.slope_mean:.2f} | {r.logrank_p_median:.3g} | "
                     + " | ".join("-" if not np.isfinite(v) else f"{v:.0%}" for v in b) + " |")
    mlp = summary[(summary["head"] == "dltr_mlp") & summary["group"].str.startswith("external")]
    if "minus_plain_baseline" in summary and len(mlp):
        lines += ["", "DLTR_MLP minus each rival, mean paired difference over seeds [95 % t-interval]: " + "; ".join(
            f"{r.group}: " + ", ".join(f"{x} {_interval(getattr(r, f'minus_{x}'))}" for x in RIVALS)
            for r in mlp.itertuples())]
    floors = summary[summary["head"].isin(["dltr_mlp", "trait_l2"]) & summary["group"].str.startswith("external")]
    if len(floors):
        lines += ["", f"Seeds at or above {FLOOR} (DLTR_MLP; `trait_l2`, the learnable ceiling): " + ", ".join(
            f"{r.head} {r.group} {r.seeds_at_floor} of {r.seeds}" for r in floors.itertuples())]
    if (summary["head"] == "trait_l2").any():
        lines += ["", "`trait_l2` is not a method: an L2 logistic regression on the truth's own latent traits, fitted on "
                  "the same training rows (the learnable ceiling: what perfectly measured traits give at this sample "
                  "size; the oracle minus it is the gap no representation can close with these rows)."]
    cl = summary[summary["head"] == "clinical"] if "clinical_vs_l2_mean" in summary else summary.iloc[:0]
    if len(cl):
        lines += ["", "Clinical head minus the L2 regression on the same declared predictors (AUC, mean over seeds): "
                  + ", ".join(f"{r.group} {r.clinical_vs_l2_mean:+.3f}" for r in cl.itertuples())]
    if len(gaps):
        lines += ["", "Training minus internal AUC (overfitting), mean (sd) over seeds: "
                  + ", ".join(f"{r.head} {r.mean:.3f} ({r.std:.3f})" for r in gaps.itertuples())]
    return "\n".join(lines) + "\n"


def _interval(v: Any) -> str:
    if not isinstance(v, tuple) or not np.isfinite(v[0]):
        return "-"
    return f"{v[0]:+.3f} [{v[1]:+.3f}, {v[2]:+.3f}]"


def _ceiling_lines(enc_cv: list[float], ceiling: list[float]) -> list[str]:
    """The encoder's CV AUC against the image-only oracle on the same folds (where the truth gives ``s_img``)."""
    known = [(e, c) for e, c in zip(enc_cv, ceiling, strict=False) if np.isfinite(c)]
    if not known:
        return []
    diff = np.array([e - c for e, c in known])
    return [f"Image-only oracle on the encoder's own CV folds (the truth's `s_img`: the most an image model's CV AUC "
            f"can expect) per seed: {[round(c, 3) for c in ceiling]}; the encoder minus it: mean {diff.mean():+.3f}, "
            f"sd {diff.std(ddof=1) if len(diff) > 1 else math.nan:.3f}; seeds whose ceiling is below {FLOOR}: "
            f"{sum(c < FLOOR for _, c in known)} of {len(known)}", ""]


def run(ctx: BenchContext) -> list[Figure]:
    from dltr.core.io import atomic_write_text
    from pipeline.actors import kept_ray

    cfg = config_from(ctx)
    ctx.work.mkdir(parents=True, exist_ok=True)
    with kept_ray():  # one embedded Ray for every seed's extraction and radiomics
        scores = pd.concat([run_seed(ctx.work, cfg, s, print) for s in cfg.seeds], ignore_index=True)
    per_seed = seed_metrics(scores)
    summary, gaps = summarise(per_seed), train_internal_gap(per_seed)
    enc_cv = scores.groupby("seed")["encoder_cv_auc"].first().tolist()
    enc_ceiling = scores.groupby("seed")["encoder_cv_ceiling"].first().tolist()
    finite = scores.groupby("seed")["or_bounds_finite"].first().tolist()
    tag = results_name(ctx.work, cfg)
    delong = delong_vs_primary(scores, _groups)  # every head against DLTR_MLP, per seed and group
    per_seed.to_csv(ctx.work / f"{tag}-per-seed.csv", index=False)
    atomic_write_text(ctx.work / f"{tag}.md", render(cfg, summary, gaps, enc_cv, finite, enc_ceiling)
                      + render_delong(delong_summary(delong)))
    atomic_write_text(ctx.work / f"{tag}.json", json.dumps(
        {"config": cfg.to_dict(), "summary": summary.to_dict("records"), "per_seed": per_seed.to_dict("records"),
         "train_minus_internal": gaps.to_dict("records"), "encoder_cv_auc": enc_cv,
         "encoder_cv_ceiling": enc_ceiling,
         "clinical_or_bounds_finite": finite, "delong_vs_dltr_mlp": delong.to_dict("records"),
         "delong_vs_dltr_mlp_summary": delong_summary(delong).to_dict("records")}, indent=2, default=float))
    return _figures(per_seed, summary)


def results_name(work, cfg: ValidityConfig) -> str:
    """``validity-<method hash>``; where that method's results already hold seeds this run lacks, the run's seeds
    are added to the name (``-seeds-<hash>``) so that a run on fewer or other seeds never replaces them."""
    from dltr.core.hashing import content_hash

    tag = f"validity-{_tag(cfg)}"
    earlier = work / f"{tag}.json"
    if earlier.is_file():
        try:
            seeds = set(json.loads(earlier.read_text())["config"]["seeds"])
        except (ValueError, KeyError, TypeError):
            seeds = set()
        if not seeds <= set(cfg.seeds):
            tag += f"-seeds-{content_hash(sorted(cfg.seeds))[:6]}"
            print(f"validity: {earlier.name} holds seeds {sorted(seeds - set(cfg.seeds))} that this run lacks; "
                  f"writing {tag}.* beside it")
    return tag


def _tag(cfg: ValidityConfig) -> str:
    from dltr.core.hashing import content_hash

    return content_hash(cfg.method() | {"cohort": cfg.cohort, "profile": cfg.profile})[:10]


def _figures(per_seed: pd.DataFrame, summary: pd.DataFrame) -> list[Figure]:
    figs = []
    ext = sorted(g for g in per_seed["group"].unique() if g.startswith("external"))
    for group in ext:
        sel = per_seed[per_seed["group"] == group].sort_values("seed")
        base = sel[sel["head"] == "plain_baseline"]["auc"].tolist()
        oracle = sel[sel["head"] == "dltr_mlp"]["oracle_auc"].tolist()
        for head in ("dltr_mlp", "clinical", "dltr", "xgb_fusion"):
            vals = sel[sel["head"] == head]["auc"].tolist()
            if not vals:
                continue
            s = summary[(summary["head"] == head) & (summary["group"] == group)].iloc[0].to_dict()
            notes = {k: round(float(v), 3) for k, v in s.items() if isinstance(v, float) and np.isfinite(v)}
            figs.append(Figure(suite="validity", workload=f"{head} AUC, {group}", unit="AUC", ours=Timing(tuple(vals)),
                               baseline=Timing(tuple(base)) if base else None, baseline_name="plain baseline",
                               ceiling=Timing(tuple(oracle)) if oracle else None, ceiling_name="oracle p_true",
                               notes=notes))
    return figs
