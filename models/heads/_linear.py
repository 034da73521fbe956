"""DLTR: the image-only head, an L2-penalised logistic regression on the deep features.

Why a linear head rather than the encoder's own response logit: every head then reads the
same published feature set through the same training frame (one lineage, one leakage
boundary), and the head can be retrained in seconds when the cohort changes without touching
the encoder; the encoder's logit stays available in its model card. Features are standardised
on training rows; the penalty C is chosen by stratified k-fold CV AUC on the training split.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import numpy as np

from dltr.core.exceptions import ModelError

from ._registry import estimator_from_state, estimator_state, head_state_class

__all__ = ["DLTRHead"]


@contextlib.contextmanager
def limited_threads(n: int) -> Iterator[None]:
    """Run with ``n`` BLAS/OpenMP threads and ``n`` torch intra-op threads, then restore.

    A fixed thread count makes CPU results bit-reproducible from machine to machine, and the small
    matrix products of a head gain nothing from more threads on a shared machine (they lose a lot
    to oversubscription)."""
    from threadpoolctl import threadpool_limits

    torch_prev = None
    try:
        import torch

        torch_prev = torch.get_num_threads()
        torch.set_num_threads(n)
    except ImportError:  # pragma: no cover - torch is a dependency
        pass
    try:
        with threadpool_limits(limits=n):
            yield
    finally:
        if torch_prev is not None:
            import torch

            torch.set_num_threads(torch_prev)


def _check_x(X, y, name: str, what: str = "labels") -> tuple[np.ndarray, np.ndarray]:
    """X as finite float64 rows, one per entry of ``y`` (its ``what``), and ``y`` as an array."""
    X = np.asarray(X, dtype=np.float64)
    y = np.asarray(y)
    if X.ndim != 2 or X.shape[0] != y.shape[0]:
        raise ModelError(f"{name}.fit: X has shape {X.shape} but y has {y.shape[0]} {what}")
    if not np.isfinite(X).all():
        raise ModelError(f"{name}.fit: X holds NaN/inf values; impute them first")
    return X, y


def _check_xy(X, y, name: str) -> tuple[np.ndarray, np.ndarray]:
    X, y = _check_x(X, y, name)
    if not np.isin(y, (0, 1)).all() or np.unique(y).size < 2:
        raise ModelError(f"{name}.fit: y must hold both classes 0 and 1, got {np.unique(y).tolist()}")
    return X, y.astype(np.int64)


class DLTRHead:
    """L2 logistic regression on standardised deep features; C by CV on the training rows."""

    def __init__(self, *, Cs: tuple[float, ...] = (0.001, 0.01, 0.1, 1.0), n_folds: int = 5, n_threads: int = 1,
                 seed: int = 0):
        self.Cs = Cs
        self.n_folds = n_folds
        self.n_threads = n_threads
        self.seed = seed

    def fit(self, X, y) -> DLTRHead:
        with limited_threads(self.n_threads):
            return self._fit(X, y)

    def _fit(self, X, y) -> DLTRHead:
        from sklearn.linear_model import LogisticRegression
        from sklearn.metrics import roc_auc_score
        from sklearn.model_selection import StratifiedKFold

        X, y = _check_xy(X, y, "DLTRHead")
        self.mean_ = X.mean(0)
        sd = X.std(0)
        self.scale_ = np.where(sd > 0, sd, 1.0)
        Z = (X - self.mean_) / self.scale_
        n_folds = int(min(self.n_folds, np.bincount(y).min()))
        cv = {}
        if len(self.Cs) > 1 and n_folds >= 2:
            folds = list(StratifiedKFold(n_folds, shuffle=True, random_state=self.seed).split(Z, y))
            for c in self.Cs:
                aucs = []
                for tr, va in folds:
                    m = LogisticRegression(C=c, max_iter=2000).fit(Z[tr], y[tr])
                    aucs.append(roc_auc_score(y[va], m.decision_function(Z[va])))
                cv[c] = float(np.mean(aucs))
            self.C_ = max(self.Cs, key=lambda c: (cv[c], -c))
        else:
            self.C_ = self.Cs[0]
        self.cv_auc_ = cv.get(self.C_, float("nan"))
        m = LogisticRegression(C=self.C_, max_iter=5000).fit(Z, y)
        self.coef_ = m.coef_[0].copy()
        self.intercept_ = float(m.intercept_[0])
        return self

    def decision_function(self, X) -> np.ndarray:
        if not hasattr(self, "coef_"):
            raise ModelError("DLTRHead is not fitted; call fit(X, y) first")
        return ((np.asarray(X, np.float64) - self.mean_) / self.scale_) @ self.coef_ + self.intercept_

    def predict_proba(self, X) -> np.ndarray:
        p1 = 1.0 / (1.0 + np.exp(-self.decision_function(X)))
        return np.column_stack([1 - p1, p1])

    def get_state(self) -> dict:
        """Hyper-parameters and coefficients as JSON numbers (``HeadRegistry``; no pickle)."""
        return estimator_state(self, mean_=self.mean_.tolist(), scale_=self.scale_.tolist(),
                               coef_=self.coef_.tolist(), intercept_=self.intercept_, C_=self.C_,
                               cv_auc_=self.cv_auc_)

    @classmethod
    def from_state(cls, state: dict) -> DLTRHead:
        head = estimator_from_state(cls, state, tuples=("Cs",))
        for k in ("mean_", "scale_", "coef_"):
            setattr(head, k, np.asarray(state[k], np.float64))
        head.intercept_, head.C_, head.cv_auc_ = float(state["intercept_"]), state["C_"], float(state["cv_auc_"])
        return head


head_state_class(DLTRHead)
