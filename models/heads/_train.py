"""Train the four heads from a point-in-time training frame of the store, register them, score.

Only rows with ``split == "train"`` and a label reach any ``fit``: the clinical variable
selection, the standardisation, the CV early stopping and the Youden cutoff. Internal and
external rows are only scored. The embedding matrix is taken from the frame once
(``TrainingFrame.embedding_matrix()``, Arrow -> NumPy) and shared by every head.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from dltr.core.exceptions import ModelError
from dltr.core.vocabulary import HEADS

from ._clinical import ClinicalModel
from ._config import HeadsConfig
from ._linear import DLTRHead
from ._mlp import DLTRMLP
from ._registry import HeadRegistry
from ._xgb import XGBFusionHead

__all__ = ["DISPLAY_NAMES", "HEAD_NAMES", "FrameHead", "HeadsResult", "fit_heads", "frame_arrays", "score_heads",
           "train_heads"]

HEAD_NAMES = tuple(HEADS)
DISPLAY_NAMES = HEADS
RESERVED = {"patient_id", "center", "split", "tace_date", "label", "response", "pfs_days", "pfs_event",
            "embedding"}


def _params(est: Any) -> dict[str, Any]:
    return {k: v for k, v in vars(est).items() if not k.endswith("_") and not k.startswith("_")}


class FrameHead:
    """A fitted estimator plus how it reads a training frame (embedding and/or clinical block)."""

    def __init__(self, *, name: str, estimator: Any, clinical: ClinicalModel | None, uses_embedding: bool):
        self.name = name
        self.estimator = estimator
        self.clinical = clinical
        self.uses_embedding = uses_embedding

    def inputs(self, df: pd.DataFrame, emb: np.ndarray):
        if self.name == "clinical":
            return df
        blocks = [emb] if self.uses_embedding else []
        if self.clinical is not None:
            blocks.append(self.clinical.design_matrix(df))
        return np.hstack([np.asarray(b, np.float64) for b in blocks])

    def predict_proba_frame(self, df: pd.DataFrame, emb: np.ndarray) -> np.ndarray:
        return self.estimator.predict_proba(self.inputs(df, emb))[:, 1]


@dataclass
class HeadsResult:
    versions: dict[str, str]
    scores: pd.DataFrame
    clinical_summary: pd.DataFrame
    lineage: dict[str, Any]
    metrics: dict[str, dict[str, float]] = field(default_factory=dict)


def frame_arrays(frame) -> tuple[pd.DataFrame, np.ndarray]:
    """(all non-embedding columns as pandas, embedding matrix ``(N, D)``), one copy of the matrix."""
    table = frame.table
    if hasattr(frame, "embedding_matrix"):
        emb = np.asarray(frame.embedding_matrix())
    else:
        col = table.column("embedding").combine_chunks()
        emb = col.values.to_numpy(zero_copy_only=False).reshape(len(table), -1)
    df = table.drop_columns(["embedding"]).to_pandas()
    return df, emb


def _store_columns(store, name: str) -> list[str]:
    try:
        t = store.table(name)
    except Exception:  # noqa: BLE001 - a store without labs simply has none
        return []
    if name == "labs":
        col = t.column("name") if hasattr(t, "column") else t["name"]
        return sorted({str(v) for v in (col.to_pylist() if hasattr(col, "to_pylist") else col)})
    cols = t.column_names if hasattr(t, "column_names") else list(t.columns)
    return [c for c in cols if c not in RESERVED]


def declared_predictors(store) -> list[str]:
    """cohort.toml's ``predictors`` as registered with the clinical table (``dltr store add-cohort``)."""
    try:
        lineage = store.describe("clinical").get("lineage", {}) or {}
    except Exception:  # noqa: BLE001 - no clinical table: no predictors
        return []
    return [str(p) for p in lineage.get("predictors", []) or []]


def _frame_lineage(frame, feature_set: str) -> dict[str, Any]:
    lin = dict(getattr(frame, "lineage", {}) or {})
    return {
        "feature_set": feature_set.split("@")[0],
        "feature_set_version": lin.get("version") or lin.get("feature_set_version"),
        "frame_row_hash": lin.get("row_hash") or lin.get("rows_hash") or lin.get("frame_row_hash"),
        "frame": lin,
    }


def _train_rows(df: pd.DataFrame) -> np.ndarray:
    rows = (df["split"].astype("string") == "train").fillna(False).to_numpy() & df["label"].notna().to_numpy()
    if rows.sum() < 4:
        raise ModelError(f"training frame has {int(rows.sum())} labelled train rows; need at least 4")
    return rows


def fit_heads(df: pd.DataFrame, emb: np.ndarray, candidates: list[str], *, seed: int = 0,
              heads: tuple[str, ...] = HEAD_NAMES) -> dict[str, FrameHead]:
    """Fit the heads on the labelled training rows of a frame (pure: no store access)."""
    tr = _train_rows(df)
    y = df.loc[tr, "label"].astype(int).to_numpy()
    clin = ClinicalModel().fit(df.loc[tr, candidates].reset_index(drop=True), y)
    out = {"clinical": FrameHead(name="clinical", estimator=clin, clinical=None, uses_embedding=False)}
    makers = {"dltr": (DLTRHead(seed=seed), None), "dltr_mlp": (DLTRMLP(seed=seed), clin),
              "xgb_fusion": (XGBFusionHead(seed=seed), clin)}
    for name in heads:
        if name == "clinical":
            continue
        est, c = makers[name]
        fh = FrameHead(name=name, estimator=est, clinical=c, uses_embedding=True)
        est.fit(fh.inputs(df.loc[tr], emb[tr]), y)
        out[name] = fh
    return {k: out[k] for k in heads}


def _scores_frame(df, name, version, score, cutoff) -> pd.DataFrame:
    return pd.DataFrame({
        "patient_id": df["patient_id"].astype(str).to_numpy(), "center": df["center"].astype(str).to_numpy(),
        "split": df["split"].astype(str).to_numpy(), "head": name, "head_version": version,
        "score": score.astype(np.float64), "cutoff": float(cutoff),
        "predicted": (score >= cutoff).astype(np.int8), "label": df["label"].astype("Int8").to_numpy(),
    })


def train_heads(store, config: HeadsConfig | None = None) -> HeadsResult:
    """Train every head from the store's training frame, publish them, write the ``scores`` table."""
    from analysis.roc import auc_score, youden_cutoff

    cfg = config or HeadsConfig()
    feature_set, max_age_days, seed, heads = cfg.feature_set, cfg.max_age_days, cfg.seed, cfg.heads
    declared = declared_predictors(store)  # only cohort.toml's predictors: never an undeclared column
    clinical = (list(cfg.clinical) if cfg.clinical is not None
                else [c for c in _store_columns(store, "clinical") if c in declared])
    labs = list(cfg.labs) if cfg.labs is not None else [n for n in _store_columns(store, "labs") if n in declared]
    undeclared = sorted(set(clinical) - set(declared)) + sorted(f"lab {n}" for n in set(labs) - set(declared))
    if undeclared:
        raise ModelError(f"{undeclared} are not in cohort.toml predictors {declared}; declare them there "
                         "(only values known before treatment) and re-run `dltr store add-cohort`")
    frame = store.training_frame(feature_set, label="response", clinical=clinical, labs=labs,
                                 max_age_days=max_age_days)
    df, emb = frame_arrays(frame)
    candidates = [c for c in df.columns if c not in RESERVED]
    lineage = _frame_lineage(frame, feature_set)
    fitted = fit_heads(df, emb, candidates, seed=seed, heads=heads)
    tr = _train_rows(df)
    registry = HeadRegistry(store.root)
    versions, parts, metrics = {}, [], {}
    clin = fitted["clinical"].estimator if "clinical" in fitted else None
    for name, fh in fitted.items():
        score = fh.predict_proba_frame(df, emb)
        ytr = df.loc[tr, "label"].astype(int).to_numpy()
        cutoff = youden_cutoff(ytr, score[tr])
        m = {"train_auc": auc_score(ytr, score[tr]),
             "cv_auc": float(getattr(fh.estimator, "cv_auc_", float("nan"))), "n_train": int(tr.sum())}
        metrics[name] = m
        head_lineage = {**{k: v for k, v in lineage.items() if k != "frame"},
                        "clinical_candidates": candidates, "labs": labs, "predictors_declared": declared, "max_age_days": max_age_days,
                        "clinical_selected": list(clin.selected_) if clin is not None else []}
        versions[name] = registry.publish(
            name, fh, lineage=head_lineage, hyperparameters=_params(fh.estimator), seed=seed,
            metrics=m, cutoff=cutoff, extra={"display_name": DISPLAY_NAMES[name], "frame_lineage": lineage["frame"]})
        parts.append(_scores_frame(df, name, versions[name], score, cutoff))
    scores = pd.concat(parts, ignore_index=True)
    _write(store, "scores", scores, {"heads": versions, **{k: v for k, v in lineage.items() if k != "frame"}})
    summary = clin.summary_ if clin is not None else pd.DataFrame()
    return HeadsResult(versions, scores, summary, lineage, metrics)


def _write(store, name: str, df: pd.DataFrame, lineage: dict[str, Any]) -> None:
    import pyarrow as pa

    store.write_table(name, pa.Table.from_pandas(df, preserve_index=False), lineage=lineage)


def score_heads(store, *, heads: tuple[str, ...] | None = None, write: bool = True) -> pd.DataFrame:
    """Score every row of the frame each registered head was trained on (latest versions)."""
    registry = HeadRegistry(store.root)
    names = [h for h in (heads or HEAD_NAMES) if h in registry.names()]
    if not names:
        raise ModelError(f"no trained heads in {registry.root}; run `dltr train-heads --store ...` first")
    parts, cache = [], {}
    for name in names:
        fh, meta = registry.load(name)
        lin = meta["lineage"]
        key = (lin["feature_set"], lin["feature_set_version"], tuple(lin["clinical_candidates"]))
        if key not in cache:
            cache[key] = _frame_for(store, lin)
        df, emb = cache[key]
        parts.append(_scores_frame(df, name, meta["version"], fh.predict_proba_frame(df, emb), meta["cutoff"]))
    scores = pd.concat(parts, ignore_index=True)
    if write:
        _write(store, "scores", scores, {"heads": {n: registry.latest(n) for n in names}})
    return scores


def _frame_for(store, lin: dict[str, Any]) -> tuple[pd.DataFrame, np.ndarray]:
    clinical = [c for c in lin["clinical_candidates"] if not c.startswith("lab_")]
    kw = {"label": "response", "clinical": clinical, "labs": lin["labs"], "max_age_days": lin["max_age_days"]}
    frame = store.training_frame(lin["feature_set"], **kw)
    got = _frame_lineage(frame, lin["feature_set"])["feature_set_version"]
    if lin["feature_set_version"] and got != lin["feature_set_version"]:
        frame = store.training_frame(f"{lin['feature_set']}@{lin['feature_set_version']}", **kw)
    return frame_arrays(frame)

