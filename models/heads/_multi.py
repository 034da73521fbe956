"""Heads on several feature sets: Radiomics, Radiomics+clinical, Deep+radiomics+clinical.

Each reads a multi-set training frame (``features.multi_frame``: the radiomics set's frame with the
deep set's embedding joined by patient_id, both at recorded versions). Only labelled ``train`` rows
reach any fit: the clinical model's selection (on cohort.toml's declared predictors, as for the paper's
heads), and ``SelectedLogistic``, whose reduction and LASSO selection are refitted inside each CV fold;
each head's Youden cutoff comes from its out-of-fold training scores.

The deep block is cross-fitted as for DLTR_MLP (``CrossFit``, the encoder's ``crossfit.npz``): the
encoder's read-out scores, out-of-fold for the rows the encoder was trained on, the refit encoder's
read-out of the stored embedding for every other row; no head sees a deep value computed by an encoder
that trained on that row. A deep set whose encoder left no cross-fitting record is refused; a set that
names no encoder (another producer, never trained on the store's labels) is read as its embedding. The heads are published in the
head registry with every feature set's version in their lineage, and their scores are added to the
``scores`` table beside the paper's heads (``evaluate`` and the report read that table); the per-fold
selection frequency of every input goes to the table ``radiomics_selection``.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from dltr.core.exceptions import ModelError
from dltr.core.hashing import from_dict_checked
from dltr.core.vocabulary import (
    DEEP_RADIOMICS_CLINICAL,
    DEFAULT_FEATURE_SET,
    MULTI_HEADS,
    RADIOMICS,
    RADIOMICS_CLINICAL,
    parse_ref,
)

from ._blocks import head_blocks
from ._clinical import ClinicalModel
from ._registry import HeadRegistry, from_kind, head_state_class, state_kind
from ._selected import SelectedLogistic
from ._train import (
    EXTRA_SCORERS,
    RESERVED,
    _params,
    _scores_frame,
    _store_columns,
    _train_rows,
    _write,
    declared_predictors,
    merge_scores,
)

__all__ = ["MULTI_HEAD_SPECS", "MultiFrameHead", "MultiHeadsConfig", "score_multi_heads", "train_multi_heads"]

#: head -> (feature-set roles it reads, in order; whether the clinical block is added)
MULTI_HEAD_SPECS: dict[str, tuple[tuple[str, ...], bool]] = {
    RADIOMICS: (("radiomics",), False),
    RADIOMICS_CLINICAL: (("radiomics",), True),
    DEEP_RADIOMICS_CLINICAL: (("deep", "radiomics"), True),
}


@dataclass(frozen=True)
class MultiHeadsConfig:
    """``radiomics`` / ``deep``: the feature sets (NAME or NAME@VERSION; ``deep=None``, or a store without it,
    trains only the heads without a deep block); ``clinical`` / ``labs``: candidate predictors (None = every
    clinical column / lab name that cohort.toml declares a predictor); ``heads``: which of ``MULTI_HEAD_SPECS``
    (None = all possible)."""

    radiomics: str = RADIOMICS
    deep: str | None = DEFAULT_FEATURE_SET
    clinical: tuple[str, ...] | None = None
    labs: tuple[str, ...] | None = None
    max_age_days: int | None = None
    seed: int = 0
    heads: tuple[str, ...] | None = None

    def __post_init__(self) -> None:
        for name in ("clinical", "labs", "heads"):
            v = getattr(self, name)
            if v is not None and not isinstance(v, tuple):
                object.__setattr__(self, name, tuple(v))
        unknown = [h for h in self.heads or () if h not in MULTI_HEAD_SPECS]
        if unknown:
            raise ModelError(f"MultiHeadsConfig.heads: unknown {unknown}; known {list(MULTI_HEAD_SPECS)}")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> MultiHeadsConfig:
        return from_dict_checked(cls, d, ModelError)


class MultiFrameHead:
    """A fitted estimator and how it reads a multi-set frame: the named blocks, then the clinical block.

    ``blocks`` given to ``inputs`` are the blocks as the head reads them (``head_blocks``): for a cross-fitted
    deep set the read-out scores; ``readouts`` (set -> (W, b)) keeps the refit read-out, so that
    ``deep_block(set, embedding)`` gives a new patient's block from its stored embedding."""

    def __init__(self, *, name: str, estimator: Any, clinical: ClinicalModel | None, feature_sets: tuple[str, ...],
                 readouts: dict[str, tuple[np.ndarray, np.ndarray]] | None = None):
        self.name = name
        self.estimator = estimator
        self.clinical = clinical
        self.feature_sets = feature_sets
        self.readouts = dict(readouts or {})

    def deep_block(self, feature_set: str, emb: np.ndarray) -> np.ndarray:
        emb = np.asarray(emb, np.float64)
        if feature_set not in self.readouts:
            return emb
        w, b = self.readouts[feature_set]
        return emb @ np.asarray(w, np.float64).T + np.asarray(b, np.float64)

    def inputs(self, df: pd.DataFrame, blocks: dict[str, np.ndarray]) -> np.ndarray:
        parts = [np.asarray(blocks[s], np.float64) for s in self.feature_sets]
        if self.clinical is not None:
            parts.append(self.clinical.design_matrix(df))
        return np.hstack(parts)

    def column_names(self, names: dict[str, list[str]]) -> list[str]:
        out = [n for s in self.feature_sets for n in names[s]]
        if self.clinical is not None:
            out += self.clinical.design_.terms(self.clinical.selected_)
        return out

    def predict_proba_frame(self, df: pd.DataFrame, blocks: dict[str, np.ndarray]) -> np.ndarray:
        return self.estimator.predict_proba(self.inputs(df, blocks))[:, 1]

    def get_state(self) -> dict:
        """The estimator's and the clinical block's states, each tagged with its class (no pickle)."""
        return {"name": self.name, "feature_sets": list(self.feature_sets), "estimator": state_kind(self.estimator),
                "clinical": None if self.clinical is None else state_kind(self.clinical),
                "readouts": {k: {"weight": np.asarray(w, np.float64), "bias": np.asarray(b, np.float64)}
                             for k, (w, b) in self.readouts.items()}}

    @classmethod
    def from_state(cls, state: dict) -> MultiFrameHead:
        clin = None if state["clinical"] is None else from_kind(state["clinical"])
        ro = {k: (np.asarray(v["weight"]), np.asarray(v["bias"])) for k, v in (state.get("readouts") or {}).items()}
        return cls(name=state["name"], estimator=from_kind(state["estimator"]), clinical=clin,
                   feature_sets=tuple(state["feature_sets"]), readouts=ro)


head_state_class(MultiFrameHead)


def _block_names(frame, blocks: dict[str, np.ndarray], readout_names: dict[str, list[str]]) -> dict[str, list[str]]:
    out = {}
    for fs in frame.lineage["feature_sets"]:
        name, dim = fs["name"], blocks[fs["name"]].shape[1]
        names = readout_names.get(name) or (fs.get("lineage") or {}).get("feature_names")
        out[name] = list(names) if isinstance(names, list) and len(names) == dim else \
            [f"{name}[{i}]" for i in range(dim)]
    return out


def _candidates(store, cfg: MultiHeadsConfig) -> tuple[list[str], list[str]]:
    """(clinical columns, lab names): as given, else those cohort.toml declares predictors; an undeclared one is
    refused (as ``train_heads``)."""
    declared = set(declared_predictors(store))
    clinical = list(cfg.clinical) if cfg.clinical is not None else \
        [c for c in _store_columns(store, "clinical") if c in declared]
    labs = list(cfg.labs) if cfg.labs is not None else [n for n in _store_columns(store, "labs") if n in declared]
    undeclared = sorted(set(clinical) - declared) + sorted(f"lab {n}" for n in set(labs) - declared)
    if undeclared:
        raise ModelError(f"multi-set heads: {undeclared} are not in cohort.toml predictors {sorted(declared)}; "
                         "declare them there (only values known before treatment) and re-run `dltr store add-cohort`")
    return clinical, labs


def train_multi_heads(store, config: MultiHeadsConfig | None = None) -> dict[str, Any]:
    """Fit, publish and score the multi-set heads; returns ``{"versions", "metrics", "lineage", "scores"}``."""
    from analysis.roc import auc_score, youden_cutoff
    from features import multi_frame

    cfg = config or MultiHeadsConfig()
    radiomics, deep, seed, max_age_days = cfg.radiomics, cfg.deep, cfg.seed, cfg.max_age_days

    have_deep = deep is not None and parse_ref(deep)[0] in store.feature_sets()
    heads = cfg.heads or tuple(h for h, (roles, _) in MULTI_HEAD_SPECS.items() if have_deep or "deep" not in roles)
    if not have_deep and any("deep" in MULTI_HEAD_SPECS[h][0] for h in heads):
        raise ModelError(f"multi-set heads {list(heads)}: the deep feature set {deep!r} is not in the store; "
                         "run `dltr extract` first or leave out the heads with a deep block")
    refs = [radiomics] + ([deep] if have_deep else [])
    role = {"radiomics": parse_ref(radiomics)[0], "deep": parse_ref(deep)[0] if have_deep else None}
    clinical, labs = _candidates(store, cfg)
    frame = multi_frame(store, refs, clinical=clinical, labs=labs, max_age_days=max_age_days)
    df = frame.to_pandas()
    hb = head_blocks(store, frame, role["deep"])
    blocks = hb.blocks
    candidates = [c for c in df.columns if c not in RESERVED]
    tr = _train_rows(df)
    y = df.loc[tr, "label"].astype(int).to_numpy()
    # the selection only (the clinical head reports its bootstrap stability; here it would add ~1 min)
    clin = ClinicalModel(seed=seed, n_bootstrap=0).fit(df.loc[tr, candidates].reset_index(drop=True), y)
    names = _block_names(frame, blocks, hb.names)
    lineage = {"feature_sets": [{"name": f["name"], "version": f["version"]} for f in frame.lineage["feature_sets"]],
               "frame_row_hash": frame.lineage["row_hash"], "clinical_candidates": candidates, "labs": labs,
               "max_age_days": max_age_days, "clinical_selected": list(clin.selected_),
               "deep_block": hb.scheme, "oof_training_rows": {k: int((v & tr).sum()) for k, v in hb.oof_rows.items()},
               "cutoff": "Youden on the out-of-fold training scores of the CV that chose the penalty"}
    registry, versions, metrics, parts, selection = HeadRegistry(store.root), {}, {}, [], []
    for name in heads:
        roles, with_clin = MULTI_HEAD_SPECS[name]
        sets = tuple(role[r] for r in roles)
        fh = MultiFrameHead(name=name, estimator=SelectedLogistic(seed=seed), clinical=clin if with_clin else None,
                            feature_sets=sets,
                            readouts={s: (hb.crossfit[s].weight, hb.crossfit[s].bias) for s in sets if s in hb.crossfit})
        sub = {k: v[tr] for k, v in blocks.items()}
        est = fh.estimator.fit(fh.inputs(df.loc[tr], sub), y)
        score = fh.predict_proba_frame(df, blocks)
        oof = est.oof_proba_ if np.isfinite(est.oof_proba_).all() else score[tr]
        cutoff = youden_cutoff(y, oof)
        cols = fh.column_names(names)
        stable = sorted(((float(est.selection_frequency_[j]), cols[j]) for j in range(len(cols))
                         if est.selection_frequency_[j] > 0), reverse=True)[:30]
        metrics[name] = {"train_auc": auc_score(y, score[tr]), "oof_auc": auc_score(y, oof), "cv_auc": est.cv_auc_,
                         "cv_auc_sd": est.cv_auc_sd_, "n_train": int(tr.sum()), "n_selected": int(est.selected_.size),
                         "n_inputs": len(cols)}
        versions[name] = registry.publish(
            name, fh, lineage=lineage, hyperparameters=_params(est), seed=seed, metrics=metrics[name], cutoff=cutoff,
            extra={"display_name": MULTI_HEADS[name], "frame_lineage": frame.lineage,
                   "selected": [cols[j] for j in est.selected_],
                   "selection_frequency": [{"feature": c, "frequency": f} for f, c in stable]})
        parts.append(_scores_frame(df, name, versions[name], score, cutoff))
        kept = set(est.selected_.tolist())
        selection.append(pd.DataFrame({"head": name, "head_version": versions[name], "feature": cols,
                                       "frequency": est.selection_frequency_.astype(np.float64),
                                       "selected": [j in kept for j in range(len(cols))]}))
    scores = pd.concat(parts, ignore_index=True)
    merge_scores(store, scores, {"multi_heads": versions, **lineage})
    _write(store, "radiomics_selection", pd.concat(selection, ignore_index=True), {"multi_heads": versions})
    return {"versions": versions, "metrics": metrics, "lineage": lineage, "scores": scores}


def score_multi_heads(store, names: list[str] | None = None) -> list[pd.DataFrame]:
    """Scores of the registered multi-set heads (latest versions), each on the frame it was trained on, its
    deep block cross-fitted as at training."""
    from features import multi_frame

    registry = HeadRegistry(store.root)
    parts = []
    for name in [h for h in (names or MULTI_HEAD_SPECS) if h in registry.names()]:
        fh, meta = registry.load(name)
        lin = meta["lineage"]
        refs = [f"{f['name']}@{f['version']}" for f in lin["feature_sets"]]
        clinical = [c for c in lin["clinical_candidates"] if not c.startswith("lab_")]
        frame = multi_frame(store, refs, clinical=clinical, labs=lin["labs"], max_age_days=lin["max_age_days"])
        deep = next((s for s in fh.feature_sets if s in (lin.get("deep_block") or {})), None)
        df = frame.to_pandas()
        parts.append(_scores_frame(df, name, meta["version"],
                                   fh.predict_proba_frame(df, head_blocks(store, frame, deep).blocks), meta["cutoff"]))
    return parts


EXTRA_SCORERS.append(score_multi_heads)  # `dltr evaluate` (score_heads) rescoring includes these heads
