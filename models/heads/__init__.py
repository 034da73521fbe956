"""Prediction heads on top of the feature store: clinical model, DLTR, DLTR_MLP, XGBoost fusion.

Every head follows the estimator contract (keyword-only hyper-parameters, ``fit(X, y)`` returns
self, learned state ends in ``_``, ``predict_proba``). ``train_heads(store, HeadsConfig(...))`` trains them
from a point-in-time training frame and registers them under ``STORE/heads`` with lineage.
"""

from ._blocks import HeadBlocks, head_blocks
from ._clinical import ClinicalDesign, ClinicalModel, LogisticFit, fit_logistic
from ._config import FUSIONS, HeadsConfig
from ._linear import DLTRHead
from ._mlp import DLTRMLP, LINEAR_GRID, MEMBER_SEED_STEP
from ._multi import MULTI_HEAD_SPECS, MultiFrameHead, MultiHeadsConfig, score_multi_heads, train_multi_heads
from ._registry import HeadRegistry, from_kind, serialize_head
from ._selected import SelectedLogistic
from ._train import (
    BINARY_OUTCOME,
    DESCRIPTOR_PREFIX,
    DISPLAY_NAMES,
    HEAD_NAMES,
    NATIVE_PREFIX,
    ORDINAL_OUTCOME,
    CrossFit,
    FrameHead,
    HeadsResult,
    add_descriptors,
    add_native_descriptors,
    declared_predictors,
    fit_heads,
    frame_arrays,
    grade_positions,
    score_heads,
    train_heads,
    with_descriptors,
)
from ._xgb import XGBFusionHead

__all__ = [
    "FUSIONS",
    "CrossFit",
    "DESCRIPTOR_PREFIX",
    "NATIVE_PREFIX",
    "BINARY_OUTCOME",
    "ORDINAL_OUTCOME",
    "DISPLAY_NAMES",
    "DLTRMLP",
    "LINEAR_GRID",
    "MEMBER_SEED_STEP",
    "HEAD_NAMES",
    "MULTI_HEAD_SPECS",
    "ClinicalDesign",
    "ClinicalModel",
    "DLTRHead",
    "FrameHead",
    "HeadBlocks",
    "HeadRegistry",
    "HeadsConfig",
    "HeadsResult",
    "LogisticFit",
    "MultiFrameHead",
    "MultiHeadsConfig",
    "SelectedLogistic",
    "XGBFusionHead",
    "add_descriptors",
    "add_native_descriptors",
    "declared_predictors",
    "fit_heads",
    "fit_logistic",
    "head_blocks",
    "from_kind",
    "frame_arrays",
    "grade_positions",
    "score_heads",
    "score_multi_heads",
    "serialize_head",
    "train_heads",
    "train_multi_heads",
    "with_descriptors",
]
