"""XGBoost fusion head: gradient-boosted trees on the same inputs as DLTR_MLP (deep features +
selected clinical factors), the strong tabular baseline. Histogram trees, seeded, deterministic
on CPU; the booster is kept as raw UBJSON bytes so that a trained head serialises stably."""

from __future__ import annotations

import numpy as np

from dltr.core.exceptions import ModelError

from ._linear import _check_xy
from ._registry import estimator_from_state, estimator_state, head_state_class

__all__ = ["XGBFusionHead"]


class XGBFusionHead:
    def __init__(self, *, n_estimators: int = 200, learning_rate: float = 0.05, max_depth: int = 2,
                 subsample: float = 0.7, colsample_bytree: float = 0.5, min_child_weight: float = 5.0,
                 reg_lambda: float = 1.0, n_jobs: int = 1, seed: int = 0):
        self.n_estimators = n_estimators
        self.learning_rate = learning_rate
        self.max_depth = max_depth
        self.subsample = subsample
        self.colsample_bytree = colsample_bytree
        self.min_child_weight = min_child_weight
        self.reg_lambda = reg_lambda
        self.n_jobs = n_jobs
        self.seed = seed

    def _params(self) -> dict:
        return {"objective": "binary:logistic", "tree_method": "hist", "eta": self.learning_rate,
                "max_depth": self.max_depth, "subsample": self.subsample,
                "colsample_bytree": self.colsample_bytree, "min_child_weight": self.min_child_weight,
                "lambda": self.reg_lambda, "nthread": self.n_jobs, "seed": self.seed, "verbosity": 0}

    def fit(self, X, y) -> XGBFusionHead:
        import xgboost as xgb

        X, y = _check_xy(X, y, "XGBFusionHead")
        booster = xgb.train(self._params(), xgb.DMatrix(X.astype(np.float32), label=y),
                            num_boost_round=self.n_estimators)
        self.booster_ = bytes(booster.save_raw("ubj"))
        self.n_features_in_ = X.shape[1]
        self._booster = None
        return self

    def __getstate__(self):
        d = dict(self.__dict__)
        d["_booster"] = None
        return d

    def predict_proba(self, X) -> np.ndarray:
        import xgboost as xgb

        if not hasattr(self, "booster_"):
            raise ModelError("XGBFusionHead is not fitted; call fit(X, y) first")
        X = np.asarray(X, np.float32)
        if X.ndim != 2 or X.shape[1] != self.n_features_in_:
            raise ModelError(f"XGBFusionHead: X has shape {X.shape}, expected (n, {self.n_features_in_})")
        if getattr(self, "_booster", None) is None:
            b = xgb.Booster()
            b.load_model(bytearray(self.booster_))
            b.set_param({"nthread": self.n_jobs})
            self._booster = b
        p1 = self._booster.predict(xgb.DMatrix(X)).astype(np.float64)
        return np.column_stack([1 - p1, p1])

    def get_state(self) -> dict:
        """Hyper-parameters as JSON, the booster in XGBoost's own UBJSON format (``model.ubj``)."""
        return estimator_state(self, n_features_in_=self.n_features_in_, **{"model.ubj": bytes(self.booster_)})

    @classmethod
    def from_state(cls, state: dict) -> XGBFusionHead:
        head = estimator_from_state(cls, state)
        head.booster_, head.n_features_in_, head._booster = bytes(state["model.ubj"]), int(state["n_features_in_"]), None
        return head


head_state_class(XGBFusionHead)
