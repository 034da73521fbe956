"""Calibration of predicted probabilities: Brier score, logistic recalibration, binned curve.

- Brier score: mean (p - y)^2.
- Calibration slope b: logistic regression of y on logit(p), ``logit P(y=1) = a + b logit(p)``.
- Calibration intercept (calibration-in-the-large): ``logit P(y=1) = a + logit(p)`` with the
  slope fixed at 1 (logit(p) as offset); 0 and 1 for a perfectly calibrated model
  (Van Calster et al., J Clin Epidemiol 2016).
- Binned curve: equal-count bins of p (``strategy="quantile"``) or equal-width bins;
  per bin the mean prediction, the observed rate and its Wilson 95 % interval.
Probabilities are clipped to [1e-12, 1 - 1e-12] before the logit.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy.special import expit, logit

from dltr.core.exceptions import ApproximationWarning

__all__ = ["CalibrationResult", "brier_score", "calibration", "calibration_curve"]

_EPS = 1e-12


def brier_score(y, p) -> float:
    y, p = np.asarray(y, float), np.asarray(p, float)
    return float(np.mean((p - y) ** 2))


def _newton_logistic(x: np.ndarray, y: np.ndarray, offset: np.ndarray, iters: int = 100) -> np.ndarray:
    """Maximum-likelihood logistic coefficients for design ``x`` (with offset), by Newton-Raphson
    with step halving."""
    beta = np.zeros(x.shape[1])

    def loglik(b):
        eta = offset + x @ b
        return float(np.sum(y * eta - np.logaddexp(0.0, eta)))

    ll = loglik(beta)
    for _ in range(iters):
        p = expit(offset + x @ beta)
        grad = x.T @ (y - p)
        hess = (x * (p * (1 - p))[:, None]).T @ x
        try:
            step = np.linalg.solve(hess + 1e-12 * np.eye(len(beta)), grad)
        except np.linalg.LinAlgError:
            break
        t = 1.0
        while t > 1e-8:
            new = beta + t * step
            ll_new = loglik(new)
            if ll_new >= ll - 1e-12:
                break
            t /= 2
        beta, ll_old, ll = new, ll, ll_new
        if abs(ll - ll_old) < 1e-12 and np.max(np.abs(t * step)) < 1e-10:
            break
    return beta


@dataclass(frozen=True)
class CalibrationResult:
    brier: float
    slope: float
    intercept: float
    n: int
    curve: pd.DataFrame

    def to_dict(self) -> dict[str, float]:
        return {"brier": self.brier, "calibration_slope": self.slope,
                "calibration_intercept": self.intercept, "n": self.n}


def calibration_curve(y, p, *, n_bins: int = 10, strategy: str = "quantile") -> pd.DataFrame:
    """Binned reliability curve: bin, n, mean_predicted, observed, observed_low, observed_high."""
    y, p = np.asarray(y, float), np.asarray(p, float)
    if strategy == "quantile":
        edges = np.unique(np.quantile(p, np.linspace(0, 1, n_bins + 1)))
    elif strategy == "uniform":
        edges = np.linspace(0, 1, n_bins + 1)
    else:
        raise ValueError(f"calibration_curve: strategy {strategy!r} is not 'quantile' or 'uniform'")
    b = np.clip(np.searchsorted(edges, p, side="right") - 1, 0, max(len(edges) - 2, 0))
    rows = []
    z = 1.959963984540054
    for k in np.unique(b):
        sel = b == k
        n = int(sel.sum())
        obs = float(y[sel].mean())
        centre = (obs + z * z / (2 * n)) / (1 + z * z / n)
        half = z * np.sqrt(obs * (1 - obs) / n + z * z / (4 * n * n)) / (1 + z * z / n)
        rows.append({"bin": int(k), "n": n, "mean_predicted": float(p[sel].mean()), "observed": obs,
                     "observed_low": float(centre - half), "observed_high": float(centre + half)})
    return pd.DataFrame(rows)


def calibration(y, p, *, n_bins: int = 10, strategy: str = "quantile") -> CalibrationResult:
    """Brier score, calibration slope and intercept, and the binned curve."""
    y, p = np.asarray(y, float), np.asarray(p, float)
    if y.shape != p.shape or y.ndim != 1:
        raise ValueError(f"calibration: labels {y.shape} and predictions {p.shape} must be equal 1-D")
    lp = logit(np.clip(p, _EPS, 1 - _EPS))
    ones = np.ones((y.size, 1))
    if y.min() == y.max():
        warnings.warn("calibration: only one outcome class; slope and intercept are not estimable (NaN)",
                      ApproximationWarning, stacklevel=2)
        slope = intercept = float("nan")
    else:
        slope = float(_newton_logistic(np.column_stack([ones, lp]), y, np.zeros(y.size))[1])
        intercept = float(_newton_logistic(ones, y, lp)[0])
    return CalibrationResult(brier_score(y, p), slope, intercept, int(y.size),
                             calibration_curve(y, p, n_bins=n_bins, strategy=strategy))
