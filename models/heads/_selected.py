"""A radiomics-style head: feature reduction and selection refitted inside every CV fold, then LASSO.

``SelectedLogistic.fit(X, y)`` (training rows only):

1. reduction, fitted on the rows it is given: drop constant columns, standardise, rank the columns by
   univariable discrimination ``|AUC - 0.5|`` (Mann-Whitney), then drop every column correlated above
   ``corr_max`` (|Pearson r|) with a better-ranked kept one (Zwanenburg et al., IBSI guidance on
   redundancy; the usual radiomics pipeline, e.g. van Griethuysen et al. 2017);
2. an L1-penalised logistic regression (LASSO), the penalty ``C`` chosen by stratified k-fold CV AUC in
   which step 1 is refitted on each fold's training part (no selection ever sees a validation row);
3. the final reduction and LASSO refitted on all the rows given.

Reported: ``cv_auc_`` / ``cv_auc_sd_`` at the chosen C, ``selection_frequency_`` (per input column,
the fraction of CV folds whose LASSO kept it: selection stability) and ``oof_proba_`` (each fitted row's
out-of-fold probability at the chosen C, where its Youden cutoff comes from; not saved with the state).
"""

from __future__ import annotations

import numpy as np

from dltr.core.exceptions import ModelError
from models.heads._linear import _check_xy, limited_threads
from models.heads._registry import estimator_from_state, estimator_state, head_state_class

__all__ = ["SelectedLogistic"]


def _reduce(X: np.ndarray, y: np.ndarray, corr_max: float, max_features: int | None):
    """(kept column indices, their mean, their scale), fitted on (X, y)."""
    from scipy.stats import rankdata

    sd = X.std(0)
    cand = np.flatnonzero(sd > 1e-12 * np.maximum(1.0, np.abs(X).max(0)))
    if cand.size == 0:
        raise ModelError("SelectedLogistic: every feature is constant on the training rows")
    mean, scale = X[:, cand].mean(0), sd[cand]
    Z = (X[:, cand] - mean) / scale
    n1 = int(y.sum())
    n0 = y.size - n1
    r = rankdata(Z, axis=0)
    auc = (r[y == 1].sum(0) - n1 * (n1 + 1) / 2) / (n1 * n0)
    order = np.lexsort((np.arange(cand.size), -np.abs(auc - 0.5)))  # best first, ties by column order
    corr = np.corrcoef(Z, rowvar=False) if cand.size > 1 else np.ones((1, 1))
    kept: list[int] = []
    for j in order:
        if all(abs(corr[j, k]) <= corr_max for k in kept):
            kept.append(int(j))
            if max_features and len(kept) >= max_features:
                break
    kept_arr = np.array(sorted(kept))
    return cand[kept_arr], mean[kept_arr], scale[kept_arr]


class SelectedLogistic:
    """Reduction + LASSO with the penalty and the selection inside cross-validation (module doc)."""

    def __init__(self, *, Cs: tuple[float, ...] = (0.03, 0.1, 0.3, 1.0), n_folds: int = 5, corr_max: float = 0.9,
                 max_features: int | None = None, seed: int = 0, n_threads: int = 1):
        self.Cs = Cs
        self.n_folds = n_folds
        self.corr_max = corr_max
        self.max_features = max_features
        self.seed = seed
        self.n_threads = n_threads

    def _lasso(self, Z: np.ndarray, y: np.ndarray, c: float):
        from sklearn.linear_model import LogisticRegression

        return LogisticRegression(l1_ratio=1.0, C=c, solver="liblinear", max_iter=5000,
                                  random_state=self.seed).fit(Z, y)

    def fit(self, X, y) -> SelectedLogistic:
        with limited_threads(self.n_threads):
            return self._fit(X, y)

    def _fit(self, X, y) -> SelectedLogistic:
        from sklearn.metrics import roc_auc_score
        from sklearn.model_selection import StratifiedKFold

        X, y = _check_xy(X, y, "SelectedLogistic")
        self.n_features_in_ = X.shape[1]
        n_folds = int(min(self.n_folds, np.bincount(y).min()))
        aucs = {c: [] for c in self.Cs}
        chosen = {c: np.zeros(X.shape[1]) for c in self.Cs}
        oof = {c: np.full(y.size, np.nan) for c in self.Cs}
        if n_folds >= 2:
            for tr, va in StratifiedKFold(n_folds, shuffle=True, random_state=self.seed).split(X, y):
                cols, mean, scale = _reduce(X[tr], y[tr], self.corr_max, self.max_features)
                ztr, zva = (X[tr][:, cols] - mean) / scale, (X[va][:, cols] - mean) / scale
                for c in self.Cs:
                    m = self._lasso(ztr, y[tr], c)
                    oof[c][va] = m.decision_function(zva)
                    aucs[c].append(roc_auc_score(y[va], oof[c][va]))
                    chosen[c][cols[m.coef_[0] != 0]] += 1
            self.C_ = max(self.Cs, key=lambda c: (float(np.mean(aucs[c])), -c))
            self.cv_auc_ = float(np.mean(aucs[self.C_]))
            self.cv_auc_sd_ = float(np.std(aucs[self.C_], ddof=1)) if n_folds > 1 else float("nan")
            self.selection_frequency_ = chosen[self.C_] / n_folds
            self.oof_proba_ = 1.0 / (1.0 + np.exp(-oof[self.C_]))
        else:
            self.C_, self.cv_auc_, self.cv_auc_sd_ = self.Cs[0], float("nan"), float("nan")
            self.selection_frequency_ = np.full(X.shape[1], np.nan)
            self.oof_proba_ = np.full(y.size, np.nan)
        self.columns_, self.mean_, self.scale_ = _reduce(X, y, self.corr_max, self.max_features)
        m = self._lasso((X[:, self.columns_] - self.mean_) / self.scale_, y, self.C_)
        self.coef_ = m.coef_[0].copy()
        self.intercept_ = float(m.intercept_[0])
        return self

    @property
    def selected_(self) -> np.ndarray:
        """Input column indices with a non-zero coefficient in the final fit."""
        return self.columns_[self.coef_ != 0]

    def decision_function(self, X) -> np.ndarray:
        if not hasattr(self, "coef_"):
            raise ModelError("SelectedLogistic is not fitted; call fit(X, y) first")
        X = np.asarray(X, np.float64)
        if X.ndim != 2 or X.shape[1] != self.n_features_in_:
            raise ModelError(f"SelectedLogistic: X has shape {X.shape}, fitted on {self.n_features_in_} columns")
        return ((X[:, self.columns_] - self.mean_) / self.scale_) @ self.coef_ + self.intercept_

    def predict_proba(self, X) -> np.ndarray:
        p1 = 1.0 / (1.0 + np.exp(-self.decision_function(X)))
        return np.column_stack([1 - p1, p1])

    def get_state(self) -> dict:
        """Hyper-parameters, the reduction and the coefficients (``HeadRegistry``; no pickle)."""
        return estimator_state(self, n_features_in_=int(self.n_features_in_), C_=self.C_, cv_auc_=self.cv_auc_,
                               cv_auc_sd_=self.cv_auc_sd_, selection_frequency_=self.selection_frequency_.tolist(),
                               columns_=self.columns_.tolist(), mean_=self.mean_.tolist(),
                               scale_=self.scale_.tolist(), coef_=self.coef_.tolist(), intercept_=self.intercept_)

    @classmethod
    def from_state(cls, state: dict) -> SelectedLogistic:
        m = estimator_from_state(cls, state, tuples=("Cs",))
        m.n_features_in_, m.C_ = int(state["n_features_in_"]), state["C_"]
        m.cv_auc_, m.cv_auc_sd_ = float(state["cv_auc_"]), float(state["cv_auc_sd_"])
        m.columns_ = np.asarray(state["columns_"], np.int64)
        for k in ("selection_frequency_", "mean_", "scale_", "coef_"):
            setattr(m, k, np.asarray(state[k], np.float64))
        m.intercept_ = float(state["intercept_"])
        return m


head_state_class(SelectedLogistic)
