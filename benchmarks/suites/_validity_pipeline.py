"""One seed of the validity benchmark: the demo's pipeline (synthesise -> ingest -> register -> encoder ->
extract -> heads), each stage cached in ``SEED_DIR/stages.json`` (``dltr._stages.StageLog``) by the hash of
its inputs, so that a method change re-runs only the stages it touches; plus the plain baseline.

Only this benchmark reads the truth folder (``truth/patients.csv``: ``patient_id``, ``p_true``; optionally the
latent traits, for the learnable ceiling, and ``s_img``, the image-only part of the truth's logit, for the encoder's).
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from benchmarks.suites._validity_radiomics import radiomics_scores
from dltr.core.layout import StoreLayout
from dltr.demo import StageLog

# ``--set`` knobs that reach only the heads stage (the encoder and extraction stay cached); ``aug_FIELD`` knobs
# set ``AugmentConfig.FIELD`` of the encoder's training augmentation (e.g. ``aug_bias_field=0.3``)
HEADS_KNOBS = ("clinical_selection", "deep_rows", "fusion", "clinical_bootstrap", "native_set", "native_spacing_mm",
               "mlp_members", "ordinal", "mlp_linear")
# the plain baseline's L2 penalties (C by 5-fold CV), shared by its clinical reference and the learnable ceiling
BASELINE_CS = (0.003, 0.01, 0.03, 0.1, 0.3, 1.0)


def flag(name: str, value: Any) -> bool:
    """A yes/no ``--set`` value; anything else is refused rather than read as no."""
    text = str(value).strip().lower()
    if text not in ("1", "true", "yes", "0", "false", "no"):
        from dltr.core.exceptions import DltrError

        raise DltrError(f"validity: --set {name}={value!r}: give true or false")
    return text in ("1", "true", "yes")


def spacing(value: Any) -> tuple[float, ...]:
    """A voxel size given as ``X,Y,Z`` or as the text of a list or tuple of three numbers (mm)."""
    import re

    if isinstance(value, (tuple, list)):
        return tuple(float(v) for v in value)
    try:
        out = tuple(float(v) for v in re.split(r"[\s,()\[\]]+", str(value)) if v)
    except ValueError:
        out = ()
    if len(out) != 3:
        from dltr.core.exceptions import DltrError

        raise DltrError(f"validity: native_spacing_mm={value!r}: three voxel sizes in mm, X,Y,Z, e.g. 4.5,4.5,7")
    return out


@dataclass(frozen=True)
class ValidityConfig:
    """What one benchmark run measures. Method knobs (``normalisation``, ``crossfit``, ``tune_heads``) are
    part of the cached stages' inputs; the defaults are the pipeline's defaults."""

    seeds: tuple[int, ...] = (0, 1, 2, 3, 4)
    profile: str = "default"
    cohort: str | None = None      # a cohort folder instead of the synthetic one (needs ``truth``)
    truth: str | None = None       # its truth folder (patients.csv with patient_id, p_true)
    candidates: tuple[str, ...] = ("resnet10", "densenet", "plain")
    folds: int = 3
    epochs: int = 12
    width: int = 8
    aux_weight: float = 1.0
    # the encoder's default input (EncoderTrainConfig.roi): RoiConfig.normalisation, "ratio" or "image" (both per
    # image, prospective-safe) or "zscore" (transductive), and the mask as a channel
    normalisation: str = "ratio"
    mask_channel: bool = True
    fusion: str = "native"         # HeadsConfig.fusion: the fusion heads' inputs, "native", "descriptors" or "readout"
    native_spacing_mm: tuple[float, float, float] | None = None   # HeadsConfig.native_spacing_mm (None: its default)
    ordinal: bool = True           # HeadsConfig.ordinal: DLTR_MLP learns from the mRECIST grades, not the binary label
    mlp_linear: bool = True        # HeadsConfig.mlp_linear: DLTR_MLP's inner CV may choose a linear network too
    extract_workers: int = 2
    ingest_workers: int = 2
    clinical_bootstrap: int | None = None   # HeadsConfig.clinical_bootstrap, None: its default (no score depends on it)
    extra: dict[str, Any] = field(default_factory=dict)   # further method knobs, recorded with the results

    @classmethod
    def for_profile(cls, profile: str, **given: Any) -> ValidityConfig:
        base = {"tiny": {"epochs": 4, "folds": 2, "seeds": (0, 1), "clinical_bootstrap": 10}}.get(profile, {})
        return cls(profile=profile, **(base | {k: v for k, v in given.items() if v is not None}))

    def method(self) -> dict[str, Any]:
        """The knobs a method comparison changes (the name of a results file)."""
        # mask_channel "true", fusion "descriptors", ordinal and mlp_linear "true" as the runs that set them with
        # --set before they were the defaults wrote them, and left out when false / "readout", so that earlier runs' cached
        # stages and results files keep their names
        return {"normalisation": self.normalisation, "candidates": list(self.candidates), "folds": self.folds,
                "epochs": self.epochs, "width": self.width, "aux_weight": self.aux_weight,
                **({"mask_channel": "true"} if self.mask_channel else {}),
                **({"fusion": self.fusion} if self.fusion != "readout" else {}),
                **({"ordinal": "true"} if self.ordinal else {}),
                **({"mlp_linear": "true"} if self.mlp_linear else {}),
                **({"clinical_bootstrap": self.clinical_bootstrap} if self.clinical_bootstrap is not None else {}),
                **({"native_spacing_mm": list(self.native_spacing_mm)} if self.native_spacing_mm is not None else {}),
                **self.extra}

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["seeds"], d["candidates"] = list(self.seeds), list(self.candidates)
        if self.native_spacing_mm is not None:
            d["native_spacing_mm"] = list(self.native_spacing_mm)
        return d


def run_seed(work: Path, cfg: ValidityConfig, seed: int, log: Callable[[str], None]) -> pd.DataFrame:
    """Scores of every head and the plain baseline for one seed: patient_id, center, split, head, score,
    cutoff, label, pfs_days, pfs_event, p_true."""
    from features import FeatureStore

    root = work / (f"cohort-{Path(cfg.cohort).name}" if cfg.cohort else f"{cfg.profile}-seed{seed}")
    root.mkdir(parents=True, exist_ok=True)
    ledger = StageLog(root / "stages.json", log=lambda m: log(f"[seed {seed}] {m}"))
    store_root = root / "store"
    cohort, truth = _cohort(root, ledger, cfg, seed)
    ingest = ledger.run("ingest", [str(cohort), cfg.ingest_workers], lambda: _ingest(cohort, store_root, cfg),
                        done=lambda o: StoreLayout(store_root).studies.exists())
    # v2: registration records cohort.toml's predictors (a store registered before that has none declared)
    reg = ledger.run("register", [ingest.inputs_hash, "v2"], lambda: _register(store_root, cohort))
    method = cfg.method() | {"seed": seed, "cohort": ingest.inputs_hash}
    enc_method = {k: v for k, v in method.items() if k not in HEADS_KNOBS}
    heads_knobs = {k: str(v) for k, v in method.items() if k in HEADS_KNOBS}
    enc = ledger.run(f"encoder {_key(enc_method)}", enc_method, lambda: _encoder(store_root, cohort, cfg, seed, log),
                     done=lambda o: Path(o["path"]).exists())
    ext = ledger.run(f"extract {enc.outputs['card_hash']}", [enc.outputs["card_hash"]],
                     lambda: _extract(store_root, enc.outputs["card_hash"], cfg))
    scores_path = root / f"scores-{_key(method)}.parquet"
    fs = f"dltr@{ext.outputs['version_id']}"
    heads = ledger.run(f"heads {_key(method)}", [fs, seed, reg.inputs_hash] + ([heads_knobs] if heads_knobs else []),
                       lambda: _heads(store_root, fs, seed, scores_path, heads_knobs), done=lambda o: scores_path.exists())
    base_path = root / "scores-plain-baseline.parquet"
    ledger.run("plain baseline", [reg.inputs_hash, seed, "v2"],
               lambda: _plain(store_root, fs, _phases(cohort), seed, base_path), done=lambda o: base_path.exists())
    radiomics = radiomics_scores(ledger, store_root, fs, seed, root, cfg.extract_workers)  # _validity_radiomics
    scores = pd.concat([pd.read_parquet(scores_path), pd.read_parquet(base_path), radiomics], ignore_index=True)
    scores = pd.concat([scores, learnable_ceiling(truth / "patients.csv", scores, seed)], ignore_index=True)
    p_true = pd.read_csv(truth / "patients.csv", usecols=["patient_id", "p_true"], dtype={"patient_id": str})
    clin = FeatureStore(store_root).table("clinical").to_pandas()[["patient_id", "pfs_days", "pfs_event"]]
    out = scores.merge(clin, on="patient_id", how="left").merge(p_true, on="patient_id", how="left")
    out["encoder_cv_auc"] = float(enc.outputs["cv_auc"])
    out["encoder_cv_ceiling"] = encoder_cv_ceiling(truth / "patients.csv", store_root, cfg.folds, seed)
    out["or_bounds_finite"] = bool(heads.outputs["or_bounds_finite"])
    log(f"[seed {seed}] clinical model (term: OR, 95 % CI, bootstrap inclusion): {heads.outputs['clinical_terms']}")
    return out.assign(seed=seed)


#: truth/patients.csv columns that are not a patient's latent traits: identifiers, the outcome and its model
TRUTH_NOT_TRAITS = {"patient_id", "center", "split", "p_true", "logit", "responder", "response", "study_date"}


def learnable_ceiling(patients_csv: Path, scores: pd.DataFrame, seed: int) -> pd.DataFrame:
    """Scores of ``trait_l2``: an L2 logistic regression (C by 5-fold CV, the plain baseline's estimator) on the
    truth's own latent traits (every numeric column of truth/patients.csv but identifiers, outcome, ``p_true``,
    ``logit`` and its summed parts ``s_*``), fitted on the same labelled training rows as the heads. It is what a
    model with perfectly measured traits learns from this many training patients: the oracle minus this is the
    part of a head's gap that no representation can close at this sample size. Empty when the truth holds no
    trait column (a cohort folder whose truth gives only ``p_true``)."""
    from analysis.roc import youden_cutoff
    from models.heads import DLTRHead

    t = pd.read_csv(patients_csv, dtype={"patient_id": str})
    traits = [c for c in t.columns if c not in TRUTH_NOT_TRAITS and not c.startswith("s_")
              and pd.api.types.is_numeric_dtype(t[c])]
    rows = scores[scores["head"] == "plain_baseline"][["patient_id", "center", "split", "label"]]
    if not traits or rows.empty:
        return scores.iloc[:0]
    d = rows.merge(t[["patient_id", *traits]], on="patient_id", how="left")
    tr = ((d["split"] == "train") & d["label"].notna()).to_numpy()
    X = d[traits].to_numpy(np.float64)
    X = np.where(np.isnan(X), np.nanmean(X[tr], 0), X)  # DLTRHead standardises on the training rows
    y = d.loc[tr, "label"].astype(int).to_numpy()
    score = DLTRHead(Cs=BASELINE_CS, seed=seed).fit(X[tr], y).predict_proba(X)[:, 1]
    return d[["patient_id", "center", "split", "label"]].assign(head="trait_l2", score=score,
                                                                 cutoff=youden_cutoff(y, score[tr]))


def encoder_cv_ceiling(patients_csv: Path, store_root: Path, folds: int, seed: int) -> float:
    """The most the selected encoder's CV AUC can expect: the mean fold AUC, on the encoder's own CV folds
    (``models.training.cv_folds`` over the same training rows), of the truth's image-only score ``s_img`` (the part
    of the truth's logit that the images carry; the synthetic generator writes it). Whatever else of the outcome the
    images do not show (the clinical part, the draw) no image model can learn, so an encoder's CV AUC is read against
    this, per seed, not against a fixed number. NaN where the truth gives no ``s_img``."""
    from analysis.roc import auc_score
    from models.training import cv_folds, training_rows

    t = pd.read_csv(patients_csv, dtype={"patient_id": str})
    if "s_img" not in t.columns:
        return float("nan")
    ids, labels = training_rows(store_root)
    s = t.set_index("patient_id")["s_img"].reindex(ids).to_numpy(np.float64)
    if np.isnan(s).any():
        return float("nan")
    return float(np.mean([auc_score(labels[va], s[va]) for _, va in cv_folds(labels, folds, seed)]))


def _key(d: Any) -> str:
    from dltr.core.hashing import content_hash

    return content_hash(d)[:12]


def _cohort(root: Path, ledger: StageLog, cfg: ValidityConfig, seed: int) -> tuple[Path, Path]:
    if cfg.cohort:
        return Path(cfg.cohort).resolve(), Path(cfg.truth).resolve()
    from dltr.synth import SynthConfig, synthesize

    scfg = SynthConfig.profile(cfg.profile, seed=seed)
    synth = root / "synthetic"
    ledger.run("synthesise", scfg.to_dict(), lambda: ({"patients": synthesize(synth, scfg).n_patients}, {}),
               done=lambda o: (synth / "cohort").exists())
    return synth / "cohort", synth / "truth"


def _phases(cohort: Path) -> tuple[str, ...]:
    from dltr.cohort import CohortConfig
    from pipeline.loaders import RoiConfig

    return tuple(CohortConfig.read(cohort / "cohort.toml").phases or RoiConfig().phases)


def _register(store_root: Path, cohort: Path):
    from features import FeatureStore

    return {"tables": sorted(FeatureStore(store_root).add_cohort(cohort))}, {}


def _ingest(cohort: Path, store_root: Path, cfg: ValidityConfig):
    from pipeline.ingest import IngestConfig, ingest_cohort

    rep = ingest_cohort(cohort, store_root, IngestConfig(workers=cfg.ingest_workers))
    return {"patients": rep.summary["patients"]}, {}


def _encoder(store_root: Path, cohort: Path, cfg: ValidityConfig, seed: int, log):
    from models.training import EncoderTrainConfig, train_encoder
    from pipeline.loaders import AugmentConfig, RoiConfig

    phases = _phases(cohort)
    aug = AugmentConfig(**{k[4:]: float(v) for k, v in cfg.extra.items() if k.startswith("aug_")})
    tcfg = EncoderTrainConfig(candidates=cfg.candidates, folds=cfg.folds, epochs=cfg.epochs, width=cfg.width,
                              seed=seed, aux_weight=cfg.aux_weight, num_threads=os.cpu_count() or 2,
                              pretrain_epochs=int(cfg.extra.get("pretrain_epochs", 0)),
                              roi=RoiConfig(phases=tuple(phases), normalisation=cfg.normalisation,
                                            mask_channel=cfg.mask_channel),
                              augment=aug,
                              fold_ensemble=True)
    res = train_encoder(store_root, tcfg, log=log)
    chosen = res.card["architecture"]["name"]
    return {"card_hash": res.card_hash, "path": str(res.path), "architecture": chosen,
            "cv_auc": res.card["candidates"][chosen]["cv_auc_mean"]}, {}


def _extract(store_root: Path, card_hash: str, cfg: ValidityConfig):
    from pipeline.extract import ExtractConfig, extract_features

    rep = extract_features(store_root, card_hash, ExtractConfig(workers=cfg.extract_workers))
    return {"version_id": rep.version_id}, {}


def _heads(store_root: Path, feature_set: str, seed: int, path: Path, knobs: dict[str, str]):
    from features import FeatureStore
    from models.heads import HeadsConfig, train_heads

    # a run that leaves fusion out of its method ran the read-out, one that leaves ordinal out the binary label, one
    # that leaves mlp_linear out the hidden-layer grid alone
    knobs = {"fusion": "readout", "ordinal": "false", "mlp_linear": "false"} | knobs
    for k in ("clinical_bootstrap", "mlp_members"):
        if k in knobs:
            knobs[k] = int(knobs[k])
    for k in ("ordinal", "mlp_linear"):
        knobs[k] = flag(k, knobs[k])
    if "native_spacing_mm" in knobs:
        knobs["native_spacing_mm"] = spacing(knobs["native_spacing_mm"])
    res = train_heads(FeatureStore(store_root), HeadsConfig(feature_set=feature_set, seed=seed, **knobs))
    keep = ["patient_id", "center", "split", "head", "score", "cutoff", "label"]
    res.scores[keep].to_parquet(path, index=False)
    cs = res.clinical_summary
    bounds = cs[["or_ci_low", "or_ci_high"]].to_numpy(float) if len(cs) else np.ones((0, 2))
    finite = bool(np.isfinite(bounds).all() and (bounds > 0).all())
    terms = {str(r["term"]): [round(float(r["odds_ratio"]), 4), round(float(r["or_ci_low"]), 4),
                              round(float(r["or_ci_high"]), 4), round(float(r["inclusion_frequency"]), 2)]
             for _, r in cs.iterrows()}
    return {"metrics": res.metrics, "or_bounds_finite": finite, "clinical_terms": terms}, {}


def _plain(store_root: Path, feature_set: str, phases: tuple[str, ...], seed: int, path: Path):
    """The floor every image model must clear: per-phase tumour, ring, core and rim intensities and the tumour
    std of the ROI, each relative to the same image's surroundings (``RoiConfig.normalisation="image"``, kept
    whatever the method's input so that every run is measured against the same floor),
    the tumour's fill of its box, and every declared clinical predictor, in an L2-penalised logistic
    regression (C by 5-fold CV) fitted on the training split. Also ``clinical_l2``: the same regression on
    the declared clinical predictors alone, the reference the clinical head must not fall below."""
    from analysis.roc import youden_cutoff
    from features import FeatureStore
    from models import measure_descriptors
    from models.heads import ClinicalDesign, DLTRHead, declared_predictors, frame_arrays
    from pipeline.loaders import RoiConfig

    store = FeatureStore(store_root)
    declared = declared_predictors(store)
    labs = sorted(set(store.table("labs").column("name").to_pylist()) & set(declared))
    clin_cols = [c for c in store.table("clinical").column_names if c in declared]
    df, _ = frame_arrays(store.training_frame(feature_set, clinical=clin_cols, labs=labs))
    desc = measure_descriptors(store_root, df["patient_id"].astype(str).tolist(),
                               RoiConfig(phases=phases, normalisation="image"))
    tr = ((df["split"] == "train") & df["label"].notna()).to_numpy()
    cand = [c for c in df.columns if c in clin_cols or c.startswith("lab_")]
    design = ClinicalDesign().fit(df.loc[tr, cand])
    X = np.hstack([desc, design.transform(df)])
    y = df.loc[tr, "label"].astype(int).to_numpy()
    parts = []
    # the plain baseline, and the clinical head's reference: the same L2 regression on the clinical block alone
    for name, cols in (("plain_baseline", slice(None)), ("clinical_l2", slice(desc.shape[1], None))):
        head = DLTRHead(Cs=BASELINE_CS, seed=seed).fit(X[tr][:, cols], y)
        score = head.predict_proba(X[:, cols])[:, 1]
        parts.append(pd.DataFrame({"patient_id": df["patient_id"].astype(str), "center": df["center"].astype(str),
                                   "split": df["split"].astype(str), "head": name, "score": score,
                                   "cutoff": youden_cutoff(y, score[tr]), "label": df["label"].astype("Int8")}))
    pd.concat(parts, ignore_index=True).to_parquet(path, index=False)
    return {"n_features": int(X.shape[1])}, {}
