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
from dltr.core.layout import StoreLayout, encoder_crossfit
from dltr.core.vocabulary import HEADS, MRECIST_GRADES, RESPONDER_GRADE, parse_ref

from ._clinical import CLINICAL_BOOTSTRAP, ClinicalModel
from ._config import FUSIONS, MEASURED_FUSIONS, HeadsConfig
from ._linear import DLTRHead
from ._mlp import DLTRMLP, LINEAR_GRID
from ._registry import HeadRegistry, from_kind, head_state_class, state_kind
from ._xgb import XGBFusionHead

__all__ = ["DESCRIPTOR_PREFIX", "DISPLAY_NAMES", "NATIVE_PREFIX", "HEAD_NAMES", "CrossFit", "FrameHead", "HeadsResult",
           "add_descriptors", "add_native_descriptors", "declared_predictors", "fit_heads", "grade_positions", "BINARY_OUTCOME", "ORDINAL_OUTCOME", "frame_arrays", "score_heads", "train_heads", "with_descriptors"]

HEAD_NAMES = tuple(HEADS)
DISPLAY_NAMES = HEADS
RESERVED = {"patient_id", "center", "split", "tace_date", "label", "response", "pfs_days", "pfs_event",
            "embedding"}


def _params(est: Any) -> dict[str, Any]:
    return {k: v for k, v in vars(est).items() if not k.endswith("_") and not k.startswith("_")}


class CrossFit:
    """The encoder's cross-fitting record (``STORE/encoders/<card>/crossfit.npz``): out-of-fold read-out scores
    (response logit + auxiliary descriptor predictions) of the k CV fold encoders for the training rows, and
    the refit encoder's read-out ``(weight, bias)``, a linear map of the stored embedding; optionally
    (``EncoderTrainConfig.fold_ensemble``) the fold encoders' mean read-out of every other row."""

    def __init__(self, patient_id: np.ndarray, oof: np.ndarray, weight: np.ndarray, bias: np.ndarray,
                 ensemble_patient_id: np.ndarray | None = None, ensemble: np.ndarray | None = None):
        self.patient_id, self.oof = np.asarray(patient_id).astype(str), np.asarray(oof, np.float64)
        self.weight, self.bias = np.asarray(weight, np.float64), np.asarray(bias, np.float64)
        self.ensemble_patient_id = None if ensemble_patient_id is None else np.asarray(ensemble_patient_id).astype(str)
        self.ensemble = None if ensemble is None else np.asarray(ensemble, np.float64)

    @classmethod
    def load(cls, path) -> CrossFit | None:
        from pathlib import Path

        if not Path(path).is_file():
            return None
        with np.load(path, allow_pickle=False) as z:
            ens = (z["ensemble_patient_id"], z["ensemble"]) if "ensemble" in z.files else (None, None)
            return cls(z["patient_id"], z["oof"], z["weight"], z["bias"], *ens)

    def deep(self, patient_ids, emb: np.ndarray, rows: str = "refit") -> tuple[np.ndarray, np.ndarray]:
        """(read-out scores per row: out-of-fold for the encoder's training rows; for the other rows the refit
        read-out (``rows="refit"``) or the fold encoders' mean read-out (``"fold_ensemble"``); boolean mask of
        the rows that got out-of-fold values)."""
        d = np.asarray(emb, np.float64) @ self.weight.T + self.bias
        if rows == "fold_ensemble":
            if self.ensemble is None:
                raise ModelError("deep_rows='fold_ensemble': the encoder's crossfit.npz holds no fold-ensemble "
                                 "read-outs; retrain it with EncoderTrainConfig(fold_ensemble=True)")
            _replace(d, patient_ids, self.ensemble_patient_id, self.ensemble)
        elif rows != "refit":
            raise ModelError(f"deep_rows {rows!r}: choose 'refit' or 'fold_ensemble'")
        return d, _replace(d, patient_ids, self.patient_id, self.oof)


def _replace(d: np.ndarray, patient_ids, ids: np.ndarray, values: np.ndarray) -> np.ndarray:
    """Replace, in place, the rows of ``d`` whose patient id is in ``ids`` by their ``values``; returns the
    boolean mask of the replaced rows."""
    pos = {p: i for i, p in enumerate(ids)}
    idx = np.array([pos.get(str(p), -1) for p in patient_ids])
    hit = idx >= 0
    d[hit] = values[idx[hit]]
    return hit


class FrameHead:
    """A fitted estimator plus how it reads a training frame (deep block and/or clinical block).

    With ``readout_weight`` / ``readout_bias`` (plain arrays) the deep block is the encoder's read-out scores
    ``embedding @ W.T + b`` (cross-fitted heads; W may hold only the first rows of the encoder's read-out, e.g.
    the response logit alone); without, the raw embedding. ``descriptors``: frame columns (the measured ROI
    descriptors, ``roi.<name>``) that follow the deep block; ``native_spacing_mm``: the voxel size its native
    descriptors (``roi.native.<name>``) are measured at (``with_descriptors``), None when it reads none."""

    def __init__(self, *, name: str, estimator: Any, clinical: ClinicalModel | None, uses_embedding: bool,
                 readout_weight: np.ndarray | None = None, readout_bias: np.ndarray | None = None,
                 descriptors: tuple[str, ...] = (), native_spacing_mm: tuple[float, ...] | None = None):
        self.name = name
        self.estimator = estimator
        self.clinical = clinical
        self.uses_embedding = uses_embedding
        self.readout_weight = readout_weight
        self.readout_bias = readout_bias
        self.descriptors = tuple(descriptors)
        self.native_spacing_mm = None if native_spacing_mm is None else tuple(float(v) for v in native_spacing_mm)

    def deep_block(self, emb: np.ndarray) -> np.ndarray:
        emb = np.asarray(emb, np.float64)
        if self.readout_weight is None:
            return emb
        return emb @ np.asarray(self.readout_weight).T + np.asarray(self.readout_bias)

    def inputs(self, df: pd.DataFrame, emb: np.ndarray, deep: np.ndarray | None = None):
        """The estimator's input; ``deep`` (the encoder's whole read-out, out of fold for training rows)
        overrides the deep block, of which the head takes its own first columns."""
        if self.name == "clinical":
            return df
        blocks = []
        if self.uses_embedding:
            rows = None if self.readout_weight is None else np.asarray(self.readout_weight).shape[0]
            blocks.append(self.deep_block(emb) if deep is None else np.asarray(deep)[:, :rows])
        if self.descriptors:
            missing = [c for c in self.descriptors if c not in df.columns]
            if missing:
                raise ModelError(f"head {self.name}: the frame lacks the measured ROI descriptors {missing[:3]}...; "
                                 "add them with models.heads.with_descriptors (train_heads and the scorer do)")
            blocks.append(df[list(self.descriptors)].to_numpy(np.float64))
        if self.clinical is not None:
            blocks.append(self.clinical.design_matrix(df))
        return np.hstack([np.asarray(b, np.float64) for b in blocks])

    def predict_proba_frame(self, df: pd.DataFrame, emb: np.ndarray, deep: np.ndarray | None = None) -> np.ndarray:
        return self.estimator.predict_proba(self.inputs(df, emb, deep))[:, 1]

    def get_state(self) -> dict:
        """The estimator's and the clinical block's states, each tagged with its class, the read-out
        (arrays; no pickle) and the descriptor columns (left out when there are none, so that earlier heads'
        versions hold)."""
        state = {"name": self.name, "uses_embedding": self.uses_embedding, "estimator": state_kind(self.estimator),
                "clinical": None if self.clinical is None else state_kind(self.clinical),
                "readout_weight": None if self.readout_weight is None else np.asarray(self.readout_weight, np.float64),
                "readout_bias": None if self.readout_bias is None else np.asarray(self.readout_bias, np.float64)}
        return (state | ({"descriptors": list(self.descriptors)} if self.descriptors else {})
                | ({"native_spacing_mm": np.asarray(self.native_spacing_mm, np.float64)}
                   if self.native_spacing_mm is not None else {}))

    @classmethod
    def from_state(cls, state: dict) -> FrameHead:
        clin = None if state["clinical"] is None else from_kind(state["clinical"])
        return cls(name=state["name"], estimator=from_kind(state["estimator"]), clinical=clin,
                   uses_embedding=bool(state["uses_embedding"]), readout_weight=state.get("readout_weight"),
                   readout_bias=state.get("readout_bias"), descriptors=tuple(state.get("descriptors") or ()),
                   native_spacing_mm=(None if state.get("native_spacing_mm") is None
                                      else tuple(np.asarray(state["native_spacing_mm"], np.float64).tolist())))


head_state_class(FrameHead)


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
    from features import registered_cohort_config

    cfg = registered_cohort_config(store) or {}
    return [str(p) for p in cfg.get("predictors", []) or []]


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
              heads: tuple[str, ...] = HEAD_NAMES, crossfit: CrossFit | None = None,
              clinical_selection: str = "aic", fusion: str = "readout",
              native_spacing_mm: tuple[float, ...] | None = None, native_set: str = "all",
              clinical_bootstrap: int = CLINICAL_BOOTSTRAP, mlp_members: int = 1,
              ordinal: bool = False, mlp_linear: bool = False) -> dict[str, FrameHead]:
    """Fit the heads on the labelled training rows of a frame (pure: no store access).

    With ``crossfit`` the deep block of every training row is its out-of-fold read-out score: no head sees
    a deep feature computed by an encoder that was trained on that row. ``fusion`` (``HeadsConfig.fusion``):
    with "descriptors" the fusion heads read the response logit alone from the read-out, then the frame's
    measured ROI descriptors (``roi.*`` columns, ``with_descriptors``), then every declared predictor (a
    clinical block without selection, fitted on the training rows); "native" likewise, the frame's ``roi.*``
    columns then including the native descriptors measured at ``native_spacing_mm`` (``with_descriptors``).
    ``native_set``: which native descriptors the fusion heads read (``HeadsConfig.native_set``).
    ``clinical_bootstrap``: the clinical selection's stability resamples (``HeadsConfig.clinical_bootstrap``).
    ``mlp_members``: DLTR_MLP's seed ensemble (``HeadsConfig.mlp_members``). ``ordinal``: DLTR_MLP learns from
    the mRECIST grades of the frame's ``response`` column (``HeadsConfig.ordinal``, ``grade_positions``);
    ``mlp_linear``: its inner-CV grid holds ``LINEAR_GRID`` too (``HeadsConfig.mlp_linear``)."""
    if fusion not in FUSIONS:
        raise ModelError(f"fusion {fusion!r}: choose among {list(FUSIONS)}")
    tr = _train_rows(df)
    y = df.loc[tr, "label"].astype(int).to_numpy()
    Xc = df.loc[tr, candidates].reset_index(drop=True)
    clin = ClinicalModel(selection=clinical_selection, seed=seed, n_bootstrap=clinical_bootstrap).fit(Xc, y)
    out = {"clinical": FrameHead(name="clinical", estimator=clin, clinical=None, uses_embedding=False)}
    ro = {} if crossfit is None else {"readout_weight": crossfit.weight, "readout_bias": crossfit.bias}
    fused: dict[str, Any] = {"clinical": clin, **ro}
    if fusion in MEASURED_FUSIONS:
        if crossfit is None:
            raise ModelError(f"fusion={fusion!r} reads the response logit from the encoder's cross-fitting record "
                             "(crossfit.npz), which this feature set's encoder lacks; retrain it with `dltr "
                             "train-encoder` or use fusion='readout'")
        names = tuple(c for c in df.columns if c.startswith(DESCRIPTOR_PREFIX))
        native = any(c.startswith(NATIVE_PREFIX) for c in names)
        if not names or native != (fusion == "native") or (native and native_spacing_mm is None):
            raise ModelError(f"fusion={fusion!r}: the frame's measured ROI descriptors ({len(names)} roi.* columns, "
                             f"native ones: {native}) do not match; add them with models.heads.with_descriptors "
                             "(native_spacing_mm for fusion='native')")
        if native:
            from models import in_native_set

            names = tuple(n for n in names if not n.startswith(NATIVE_PREFIX) or in_native_set(n, native_set))
        every = ClinicalModel(selection="all", n_bootstrap=0, inference=False, seed=seed).fit(Xc, y)
        fused = {"clinical": every, "readout_weight": crossfit.weight[:1], "readout_bias": crossfit.bias[:1],
                 "descriptors": names, "native_spacing_mm": native_spacing_mm if native else None}
    mlp = DLTRMLP(seed=seed, n_members=mlp_members, ordinal=ordinal,
                  **({"grid": DLTRMLP().grid + LINEAR_GRID} if mlp_linear else {}))
    makers = {"dltr": (DLTRHead(seed=seed), {"clinical": None, **ro}), "dltr_mlp": (mlp, fused),
              "xgb_fusion": (XGBFusionHead(seed=seed), fused)}
    deep = None if crossfit is None else crossfit.deep(df.loc[tr, "patient_id"], emb[tr])[0]
    for name in heads:
        if name == "clinical":
            continue
        est, kw = makers[name]
        fh = FrameHead(name=name, estimator=est, uses_embedding=True, **kw)
        est.fit(fh.inputs(df.loc[tr], emb[tr], deep), learning_target(est, df.loc[tr], y))
        out[name] = fh
    return {k: out[k] for k in heads}


def grade_positions(response, patient_ids=None) -> np.ndarray:
    """mRECIST grades (``CR``/``PR``/``SD``/``PD``) as positions in ``MRECIST_GRADES`` (0 PD ... 3 CR); a value that
    is not a grade is refused, naming its patient (``patient_ids``, else its position)."""
    pos = {g: i for i, g in enumerate(MRECIST_GRADES)}
    values = pd.Series(list(response), dtype="object")
    bad = np.flatnonzero(~values.isin(list(pos)).to_numpy())
    if bad.size:
        who = f"patient {list(patient_ids)[bad[0]]}" if patient_ids is not None else f"row {bad[0]}"
        raise ModelError(f"response {values.iloc[bad[0]]!r} ({who}): an ordinal head needs an mRECIST grade "
                         f"({'/'.join(reversed(MRECIST_GRADES))}) on every labelled training row; fix the cohort's "
                         "clinical.csv or train with HeadsConfig.ordinal=False (`--binary`)")
    return values.map(pos).to_numpy(np.int64)


def learning_target(est: Any, rows: pd.DataFrame, y: np.ndarray) -> np.ndarray:
    """What ``est`` learns from on these labelled rows: their mRECIST grade positions for an ordinal estimator,
    else the binary label ``y``."""
    if not getattr(est, "ordinal", False):
        return y
    if "response" not in rows:
        raise ModelError("an ordinal head needs the frame's mRECIST grades (column 'response'); train it with "
                         "models.heads.train_heads, which adds them, or set HeadsConfig.ordinal=False")
    grades = grade_positions(rows["response"], rows["patient_id"].astype(str))
    if not np.array_equal(grades >= RESPONDER_GRADE, np.asarray(y, bool)):
        raise ModelError("the frame's mRECIST grades disagree with its binary label (CR/PR = 1); rebuild the frame")
    return grades


#: frame columns of the measured ROI descriptors (``roi.<phase>.<descriptor>``, ``models.descriptor_names``)
DESCRIPTOR_PREFIX = "roi."
#: those of them measured on the volumes at one resolution (``roi.native.<...>``, ``models.native_descriptor_names``)
NATIVE_PREFIX = DESCRIPTOR_PREFIX + "native."


def with_descriptors(store, df: pd.DataFrame, card_hash: str,
                     native_spacing_mm: tuple[float, ...] | None = None) -> pd.DataFrame:
    """``df`` plus the ROI descriptors measured on each row's encoder input under the preprocessing of encoder
    ``card_hash`` (``models.measure_descriptors``: label-free, per patient), as columns ``roi.<name>``; with
    ``native_spacing_mm``, also those measured on the ingested volumes at that voxel size
    (``models.native_descriptors``, the encoder's phases), as columns ``roi.native.<name>``."""
    import json

    from dltr.core.layout import encoder_card
    from models import measure_descriptors
    from pipeline.loaders import RoiConfig

    card = json.loads(encoder_card(StoreLayout.of(store).encoder(str(card_hash))).read_text())
    roi = RoiConfig.from_dict(card["preprocess"])
    ids = df["patient_id"].astype(str).tolist()
    out = add_descriptors(df, measure_descriptors(store.root, ids, roi), roi.phases)
    if native_spacing_mm is None:
        return out
    from models import native_descriptors

    return add_native_descriptors(out, native_descriptors(store.root, ids, roi.phases, native_spacing_mm), roi.phases)


def add_native_descriptors(df: pd.DataFrame, values: np.ndarray, phases) -> pd.DataFrame:
    """``df`` (its grid descriptors added) plus native descriptors ``values`` (N, 8 P + 2;
    ``models.native_descriptors`` of these ``phases``) as columns ``roi.native.<name>``."""
    from models import native_descriptor_names

    if any(str(c).startswith(NATIVE_PREFIX) for c in df.columns):
        raise ModelError(f"the frame already holds native descriptors ({NATIVE_PREFIX}* columns)")
    cols = [DESCRIPTOR_PREFIX + n for n in native_descriptor_names(phases)]
    return pd.concat([df.reset_index(drop=True), pd.DataFrame(np.asarray(values, np.float64), columns=cols)], axis=1)


def add_descriptors(df: pd.DataFrame, values: np.ndarray, phases) -> pd.DataFrame:
    """``df`` plus measured descriptors ``values`` (N, 5 P + 1; ``models.roi_descriptors`` of these ``phases``)
    as columns ``roi.<name>``."""
    from models import descriptor_names

    taken = [c for c in df.columns if str(c).startswith(DESCRIPTOR_PREFIX)]
    if taken:  # a declared predictor named like a descriptor would be read as one
        raise ModelError(f"column {taken[0]!r}: names starting {DESCRIPTOR_PREFIX!r} are the measured ROI descriptors'; "
                         "rename that predictor in clinical.csv / labs.csv and cohort.toml")
    cols = [DESCRIPTOR_PREFIX + n for n in descriptor_names(phases)]
    return pd.concat([df.reset_index(drop=True), pd.DataFrame(np.asarray(values, np.float64), columns=cols)], axis=1)


def oof_head_scores(fh: FrameHead, df: pd.DataFrame, emb: np.ndarray, deep: np.ndarray | None, y: np.ndarray,
                    *, folds: int = 5, seed: int = 0) -> np.ndarray:
    """Out-of-fold probabilities of the head's estimator (same hyper-parameters, refitted per fold; the
    clinical selection is taken as fitted) on the training rows ``df``: the scores its Youden cutoff and its
    honest training AUC come from."""
    from sklearn.model_selection import StratifiedKFold

    X = fh.inputs(df, emb, deep)
    out = np.full(len(y), np.nan)
    k = int(min(folds, np.bincount(y).min()))
    for trn, val in StratifiedKFold(k, shuffle=True, random_state=seed).split(np.zeros(len(y)), y):
        params = _params(fh.estimator)
        if hasattr(fh.estimator, "best_params_"):  # the tuned values, not a second inner search per fold
            params |= dict(fh.estimator.best_params_) | {"tune": False}
        if hasattr(fh.estimator, "n_epochs_"):  # and the chosen epoch count (no early-stopping CV per fold)
            params["epochs"] = int(fh.estimator.n_epochs_)
        if hasattr(fh.estimator, "C_"):  # DLTR: the chosen penalty
            params["Cs"] = (fh.estimator.C_,)
        est = type(fh.estimator)(**params)
        if fh.name == "clinical":  # refitted on the candidates it was fitted on: never the label or identifiers
            est.n_bootstrap = 0
            est.fit(X[fh.estimator.design_.variables()].iloc[trn].reset_index(drop=True), y[trn])
            out[val] = est.predict_proba(X.iloc[val])[:, 1]
        else:
            out[val] = est.fit(X[trn], learning_target(est, df.iloc[trn], y[trn])).predict_proba(X[val])[:, 1]
    return out


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
    crossfit = _crossfit_for(store, lineage)
    fusing = cfg.fusion in MEASURED_FUSIONS and bool({"dltr_mlp", "xgb_fusion"} & set(heads))
    if fusing and crossfit is None:
        raise ModelError(f"feature set {feature_set!r}: fusion={cfg.fusion!r} reads the "
                         "response logit from the cross-fitting record of the encoder that made the features, and "
                         "this feature set has none (not made by a `dltr train-encoder` encoder); retrain the "
                         "encoder, or train the heads with fusion='readout' (`dltr train-heads --fusion readout`)")
    native_mm, native_source = None, None
    if fusing and cfg.fusion == "native":  # the resolution the stored images allow, or the declared one
        from models import native_resolution

        native_mm, native_source = native_resolution(store.root, df["patient_id"].astype(str).tolist(),
                                                     cfg.native_spacing_mm)
    if fusing:
        df = with_descriptors(store, df, _card_of(lineage), native_mm)
    if cfg.ordinal:  # the outcome's grades (never a predictor: "response" is reserved), for the labelled rows
        t = store.table("clinical").select(["patient_id", "response"]).to_pydict()
        df = df.assign(response=df["patient_id"].astype(str).map(dict(zip(t["patient_id"], t["response"],
                                                                             strict=True))))
    fitted = fit_heads(df, emb, candidates, seed=seed, heads=heads, crossfit=crossfit,
                       clinical_selection=cfg.clinical_selection, fusion=cfg.fusion if fusing else "readout",
                       native_spacing_mm=native_mm, native_set=cfg.native_set,
                       clinical_bootstrap=cfg.clinical_bootstrap, mlp_members=cfg.mlp_members,
                       ordinal=cfg.ordinal, mlp_linear=cfg.mlp_linear)
    tr = _train_rows(df)
    ytr = df.loc[tr, "label"].astype(int).to_numpy()
    deep_all, oof_rows = ((None, np.zeros(len(df), bool)) if crossfit is None
                          else crossfit.deep(df["patient_id"], emb, cfg.deep_rows))
    other = ("the refit encoder's read-out" if cfg.deep_rows == "refit" else
             "the mean read-out of the k CV fold encoders (fold ensemble)")
    scheme = ("none: heads fitted on the refit encoder's in-sample embedding" if crossfit is None else
              "cross-fitted: training rows' deep block = out-of-fold read-out scores of the CV fold encoders; "
              f"other rows = {other}; cutoffs from out-of-fold head scores")
    registry = HeadRegistry(store.root)
    versions, parts, metrics = {}, [], {}
    # the clinical model: the clinical head's, or (that head not retrained) the one the fusion heads use
    clin = next((fh.estimator if fh.name == "clinical" else fh.clinical for fh in fitted.values()
                 if fh.name == "clinical" or fh.clinical is not None), None)
    for name, fh in fitted.items():
        score = fh.predict_proba_frame(df, emb, deep_all)
        deep_tr = None if deep_all is None else deep_all[tr]
        oof = oof_head_scores(fh, df.loc[tr].reset_index(drop=True), emb[tr], deep_tr, ytr, seed=seed)
        cutoff = youden_cutoff(ytr, oof)
        m = {"train_auc": auc_score(ytr, score[tr]), "oof_auc": auc_score(ytr, oof),
             "cv_auc": float(getattr(fh.estimator, "cv_auc_", float("nan"))), "n_train": int(tr.sum())}
        metrics[name] = m
        head_lineage = {**{k: v for k, v in lineage.items() if k != "frame"},
                        "clinical_candidates": candidates, "labs": labs, "max_age_days": max_age_days,
                        "predictors_declared": declared, "crossfit": scheme, "deep_rows": cfg.deep_rows,
                        "clinical_selection": cfg.clinical_selection,
                        **_fusion_lineage(fh),
                        **({"native_spacing_source": native_source} if fh.native_spacing_mm is not None else {}),
                        "outcome": ORDINAL_OUTCOME if getattr(fh.estimator, "ordinal", False) else BINARY_OUTCOME,
                        "oof_training_rows": int((oof_rows & tr).sum()),
                        **({"inner_cv_choice": {k: list(v) if isinstance(v, tuple) else v
                                                for k, v in fh.estimator.best_params_.items()}}
                           if hasattr(fh.estimator, "best_params_") else {}),
                        "clinical_selected": list(clin.selected_) if clin is not None else [],
                        "clinical_aliased": list(getattr(clin, "aliased_", [])) if clin is not None else []}
        versions[name] = registry.publish(
            name, fh, lineage=head_lineage, hyperparameters=_params(fh.estimator), seed=seed,
            metrics=m, cutoff=cutoff, extra={"display_name": DISPLAY_NAMES[name], "frame_lineage": lineage["frame"]})
        parts.append(_scores_frame(df, name, versions[name], score, cutoff))
    scores = pd.concat(parts, ignore_index=True)
    merge_scores(store, scores, {"heads": versions, **{k: v for k, v in lineage.items() if k != "frame"}})
    summary = clin.summary_ if clin is not None else pd.DataFrame()
    return HeadsResult(versions, scores, summary, lineage, metrics)


def merge_scores(store, scores: pd.DataFrame, lineage: dict[str, Any]) -> None:
    """Write ``scores`` into the store's scores table, replacing these heads' rows; the rows of other heads
    (not retrained now, or trained by another module) stay, and ``kept_heads`` in the lineage names them
    with their versions."""
    if "scores" in store.tables():
        old = store.table("scores").to_pandas()
        old = old[~old["head"].isin(scores["head"].unique())]
        if len(old):
            lineage = {**lineage, "kept_heads": {str(h): sorted(set(g["head_version"].astype(str)))
                                                 for h, g in old.groupby("head")}}
            scores = pd.concat([old, scores], ignore_index=True)
    _write(store, "scores", scores, lineage)


def _card_of(lineage: dict[str, Any]) -> str | None:
    """The card hash of the encoder that made the frame's feature set."""
    return (lineage.get("frame", {}).get("feature_set_lineage") or {}).get("encoder_card_hash")


def _crossfit_for(store, lineage: dict[str, Any]) -> CrossFit | None:
    """The cross-fitting record of the encoder that made the frame's feature set, if it wrote one."""
    card = _card_of(lineage)
    return CrossFit.load(encoder_crossfit(StoreLayout.of(store).encoder(str(card)))) if card else None


#: what a head learnt from (its lineage): the binary label, or the mRECIST grades of an ordinal DLTR_MLP
BINARY_OUTCOME = "objective response (CR or PR = 1, SD or PD = 0)"
ORDINAL_OUTCOME = ("mRECIST grades PD < SD < PR < CR (cumulative logit); scores P(CR or PR), the event cut fixed at 0")

#: how a fusion head with measured descriptors reads a frame (its lineage)
FUSION_LINEAGE = ("descriptors: the encoder's response logit (out of fold for training rows), the ROI descriptors "
                  "measured on each patient's own encoder input (label-free, nothing fitted on any row), every "
                  "declared predictor")
NATIVE_LINEAGE = ("; native: tumour descriptors measured on the ingested volumes blurred and resampled to "
                  "{} x {} x {} mm (label-free, per image)")


def _fusion_lineage(fh: FrameHead) -> dict[str, Any]:
    """What a fusion head with measured descriptors records of its inputs: their description, and the voxel size
    of its native descriptors (the report and the scorer read ``native_spacing_mm``); nothing for other heads."""
    if not fh.descriptors:
        return {}
    if fh.native_spacing_mm is None:
        return {"fusion": FUSION_LINEAGE}
    return {"fusion": FUSION_LINEAGE + NATIVE_LINEAGE.format(*fh.native_spacing_mm),
            "native_spacing_mm": list(fh.native_spacing_mm),
            "native_descriptors": [n for n in fh.descriptors if n.startswith(NATIVE_PREFIX)]}


def _write(store, name: str, df: pd.DataFrame, lineage: dict[str, Any]) -> None:
    import pyarrow as pa

    store.write_table(name, pa.Table.from_pandas(df, preserve_index=False), lineage=lineage)


#: Scorers of heads trained outside this module (``_multi``'s multi-set heads register theirs): each takes
#: the store and returns score frames; ``score_heads`` adds them when no head list is given.
EXTRA_SCORERS: list = []


def score_heads(store, *, heads: tuple[str, ...] | None = None, write: bool = True) -> pd.DataFrame:
    """Score every row of the frame each head was trained on; ``heads`` are NAME (latest version) or
    NAME@VERSION (that version), default every registered head at its latest."""
    registry = HeadRegistry(store.root)
    refs = [parse_ref(h, what="head") for h in heads] if heads else [(h, None) for h in HEAD_NAMES]
    if heads:
        missing = [n for n, _ in refs if n not in registry.names()]
        if missing:
            raise ModelError(f"no trained head {missing} in {registry.root}; known: {registry.names()}")
    names = [(n, v) for n, v in refs if n in registry.names()]
    if not names:
        raise ModelError(f"no trained heads in {registry.root}; run `dltr train-heads --store ...` first")
    parts, cache = [], {}
    for name, version in names:
        fh, meta = registry.load(name, version)
        lin = meta["lineage"]
        key = (lin["feature_set"], lin["feature_set_version"], tuple(lin["clinical_candidates"]))
        if key not in cache:
            cache[key] = _frame_for(store, lin)
        df, emb = cache[key]
        if fh.descriptors:  # measured once per frame and resolution, on the frame as read
            dkey = (key, fh.native_spacing_mm)
            if dkey not in cache:
                cache[dkey] = with_descriptors(store, df, _card_of({"frame": meta.get("frame_lineage") or {}}),
                                               fh.native_spacing_mm), emb
            df, emb = cache[dkey]
        cf = (_crossfit_for(store, {"frame": meta.get("frame_lineage") or {}})
              if getattr(fh, "readout_weight", None) is not None else None)
        rows = lin.get("deep_rows", "refit")  # training rows: out-of-fold, the others as trained
        deep = None if cf is None else cf.deep(df["patient_id"], emb, rows)[0]
        parts.append(_scores_frame(df, name, meta["version"], fh.predict_proba_frame(df, emb, deep), meta["cutoff"]))
    for scorer in EXTRA_SCORERS if heads is None else ():
        parts += scorer(store)
    scores = pd.concat(parts, ignore_index=True)
    if write:
        _write(store, "scores", scores, {"heads": dict(zip(scores["head"], scores["head_version"], strict=False))})
    return scores


def _frame_for(store, lin: dict[str, Any]) -> tuple[pd.DataFrame, np.ndarray]:
    clinical = [c for c in lin["clinical_candidates"] if not c.startswith("lab_")]
    kw = {"label": "response", "clinical": clinical, "labs": lin["labs"], "max_age_days": lin["max_age_days"]}
    frame = store.training_frame(lin["feature_set"], **kw)
    got = _frame_lineage(frame, lin["feature_set"])["feature_set_version"]
    if lin["feature_set_version"] and got != lin["feature_set_version"]:
        frame = store.training_frame(f"{lin['feature_set']}@{lin['feature_set_version']}", **kw)
    return frame_arrays(frame)

