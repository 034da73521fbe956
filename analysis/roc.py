"""ROC statistics: AUC with DeLong variance, covariance, paired test; bootstrap; Youden cutoff.

DeLong et al. (Biometrics 1988) with the O(n log n) midrank algorithm of Sun & Xu
(IEEE SPL 2014). Conventions (those of pROC, so that results match it to 1e-9):

- ``y == 1`` is a case, ``y == 0`` a control; a higher score means "more likely a case"
  (the direction is fixed, never flipped to make the AUC exceed 0.5).
- AUC is the Mann-Whitney statistic; ties between a case and a control count 1/2.
- var(AUC) = S10/m + S01/n with the sample (ddof=1) covariances of the case and control
  placements; the CI is AUC +/- z * SE clipped to [0, 1], no logit transform.
- Paired test: Z = (A1 - A2) / sqrt(V1 + V2 - 2 Cov), two-sided p = 2 Phi(-|Z|).

Edge cases (stated behaviour):

- no case or no control: ``ValueError`` (the AUC is undefined).
- a single case or a single control: the AUC is returned; its DeLong variance needs a
  sample variance over that class and is ``nan`` (as in pROC), CI ``(nan, nan)``, with an
  ``ApproximationWarning``; use the bootstrap.
- all-equal scores: AUC 0.5, variance 0, CI (0.5, 0.5); perfectly separated classes:
  AUC 1 (or 0), variance 0, degenerate CI; both warn with ``ApproximationWarning``.
- paired test with var(A1 - A2) = 0: Z = 0 and p = 1 when A1 == A2, else Z = +/-inf and
  p = 0, with an ``ApproximationWarning``.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
from scipy.special import ndtr
from scipy.stats import norm, rankdata

from dltr.core.exceptions import ApproximationWarning

__all__ = [
    "DeLongResult",
    "DeLongTest",
    "auc_score",
    "bootstrap_auc_ci",
    "delong_auc",
    "delong_covariance",
    "delong_test",
    "roc_ci_band",
    "roc_curve",
    "youden_cutoff",
]


def _check(y, scores) -> tuple[np.ndarray, np.ndarray]:
    y = np.asarray(y)
    s = np.atleast_2d(np.asarray(scores, dtype=np.float64))
    if y.ndim != 1 or s.shape[1] != y.shape[0]:
        raise ValueError(f"labels have shape {y.shape} but scores {s.shape}; give one score per label")
    if not np.isin(y, (0, 1)).all():
        raise ValueError(f"labels must be 0/1, got values {np.unique(y)[:5].tolist()}; drop missing labels first")
    if not np.isfinite(s).all():
        raise ValueError("scores contain NaN or inf; drop or impute them first")
    y = y.astype(bool)
    m = int(y.sum())
    if m == 0 or m == y.size:
        raise ValueError(f"AUC undefined: {m} cases and {y.size - m} controls; need at least one of each")
    return y, s


def _placements(y: np.ndarray, s: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """AUCs (k,), case placements V10 (k, m), control placements V01 (k, n) by midranks."""
    x, z = s[:, y], s[:, ~y]
    m, n = x.shape[1], z.shape[1]
    tx = rankdata(x, axis=1)
    ty = rankdata(z, axis=1)
    tz = rankdata(np.concatenate([x, z], axis=1), axis=1)
    aucs = (tz[:, :m].sum(axis=1) - m * (m + 1) / 2.0) / (m * n)   # exact for midranks
    v10 = (tz[:, :m] - tx) / n
    v01 = 1.0 - (tz[:, m:] - ty) / m
    return aucs, v10, v01


def delong_covariance(y, scores) -> tuple[np.ndarray, np.ndarray]:
    """AUCs ``(k,)`` and their DeLong covariance matrix ``(k, k)`` for ``k`` score vectors
    (rows of ``scores``) on the same patients."""
    yb, s = _check(y, scores)
    aucs, v10, v01 = _placements(yb, s)
    m, n = v10.shape[1], v01.shape[1]
    if m < 2 or n < 2:
        warnings.warn(f"DeLong variance undefined with {m} case(s) and {n} control(s); returning NaN "
                      "(use bootstrap_auc_ci)", ApproximationWarning, stacklevel=2)
        k = s.shape[0]
        return aucs, np.full((k, k), np.nan)
    s10 = np.atleast_2d(np.cov(v10, ddof=1))
    s01 = np.atleast_2d(np.cov(v01, ddof=1))
    return aucs, s10 / m + s01 / n


@dataclass(frozen=True)
class DeLongResult:
    """AUC of one score with its DeLong variance and confidence interval."""

    auc: float
    variance: float
    ci_low: float
    ci_high: float
    level: float
    n_cases: int
    n_controls: int

    @property
    def se(self) -> float:
        return float(np.sqrt(self.variance))

    def to_dict(self) -> dict[str, float]:
        return {"auc": self.auc, "variance": self.variance, "se": self.se, "ci_low": self.ci_low,
                "ci_high": self.ci_high, "level": self.level, "n_cases": self.n_cases,
                "n_controls": self.n_controls}


def delong_auc(y, score, *, level: float = 0.95) -> DeLongResult:
    """AUC, DeLong variance and the ``level`` CI (AUC +/- z SE, clipped to [0, 1])."""
    aucs, cov = delong_covariance(y, score)
    auc, var = float(aucs[0]), float(cov[0, 0])
    if var == 0.0:
        warnings.warn(f"DeLong variance is 0 (AUC {auc:.3f}: all-equal scores or perfectly separated "
                      "classes); the CI is degenerate", ApproximationWarning, stacklevel=2)
    z = norm.ppf(0.5 + level / 2.0)
    half = z * np.sqrt(var)
    yb = np.asarray(y).astype(bool)
    lo, hi = (float(np.clip(auc - half, 0.0, 1.0)), float(np.clip(auc + half, 0.0, 1.0))) if np.isfinite(var) \
        else (float("nan"), float("nan"))
    return DeLongResult(auc, var, lo, hi, level,
                        int(yb.sum()), int((~yb).sum()))


@dataclass(frozen=True)
class DeLongTest:
    """Paired DeLong test of two correlated AUCs on the same patients."""

    auc1: float
    auc2: float
    covariance: float
    var_diff: float
    z: float
    p_value: float
    diff_ci_low: float
    diff_ci_high: float
    level: float

    @property
    def difference(self) -> float:
        return self.auc1 - self.auc2

    def to_dict(self) -> dict[str, float]:
        return {"auc1": self.auc1, "auc2": self.auc2, "difference": self.difference,
                "covariance": self.covariance, "var_diff": self.var_diff, "z": self.z,
                "p_value": self.p_value, "diff_ci_low": self.diff_ci_low,
                "diff_ci_high": self.diff_ci_high, "level": self.level}


def delong_test(y, score1, score2, *, level: float = 0.95) -> DeLongTest:
    """Two-sided paired DeLong test of AUC(score1) = AUC(score2), with the CI of the difference."""
    aucs, cov = delong_covariance(y, np.vstack([np.asarray(score1, float), np.asarray(score2, float)]))
    diff = float(aucs[0] - aucs[1])
    var_diff = float(cov[0, 0] + cov[1, 1] - 2.0 * cov[0, 1])
    zq = norm.ppf(0.5 + level / 2.0)
    if np.isfinite(var_diff) and var_diff <= 1e-15:
        warnings.warn("paired DeLong: var(A1 - A2) is 0; Z set to 0 (equal AUCs) or +/-inf",
                      ApproximationWarning, stacklevel=2)
        z = 0.0 if abs(diff) < 1e-15 else float(np.sign(diff) * np.inf)
        var_diff = 0.0
    else:
        z = diff / np.sqrt(var_diff)
    p = float(2.0 * ndtr(-abs(z)))
    half = zq * np.sqrt(var_diff)
    return DeLongTest(float(aucs[0]), float(aucs[1]), float(cov[0, 1]), var_diff, float(z), p,
                      float(diff - half), float(diff + half), level)


def auc_score(y, score) -> float:
    """Mann-Whitney AUC (ties 1/2), the same number as ``delong_auc(...).auc``."""
    yb, s = _check(y, score)
    return float(_placements(yb, s)[0][0])


def _stratified_indices(yb: np.ndarray, n_boot: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    cases, controls = np.flatnonzero(yb), np.flatnonzero(~yb)
    a = cases[rng.integers(0, cases.size, (n_boot, cases.size))]
    b = controls[rng.integers(0, controls.size, (n_boot, controls.size))]
    return np.concatenate([a, b], axis=1)


def bootstrap_auc_ci(y, score, *, n_boot: int = 2000, level: float = 0.95, seed: int = 0
                     ) -> tuple[float, float, float]:
    """Stratified (cases and controls resampled separately, as pROC) percentile bootstrap:
    ``(auc, ci_low, ci_high)``."""
    yb, s = _check(y, score)
    idx = _stratified_indices(yb, n_boot, seed)
    m = int(yb.sum())
    boot_s = s[0][idx]                     # (n_boot, N): the first m columns are cases
    yy = np.zeros(idx.shape[1], bool)
    yy[:m] = True
    aucs = _placements(yy, boot_s)[0]
    lo, hi = np.quantile(aucs, [(1 - level) / 2, (1 + level) / 2])
    return float(_placements(yb, s)[0][0]), float(lo), float(hi)


def roc_curve(y, score) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Empirical ROC: ``(fpr, tpr, thresholds)``, one point per distinct score (predict case
    when score >= threshold), starting at (0, 0) with threshold +inf."""
    yb, s = _check(y, score)
    s = s[0]
    order = np.argsort(-s, kind="mergesort")
    s_sorted, y_sorted = s[order], yb[order]
    last = np.r_[np.flatnonzero(np.diff(s_sorted) != 0), s.size - 1]
    tp = np.cumsum(y_sorted)[last]
    fp = (last + 1) - tp
    tpr = np.r_[0.0, tp / yb.sum()]
    fpr = np.r_[0.0, fp / (~yb).sum()]
    return fpr, tpr, np.r_[np.inf, s_sorted[last]]


def youden_cutoff(y, score) -> float:
    """The threshold maximising sensitivity + specificity - 1 (ties: the highest threshold);
    a patient is predicted positive when score >= cutoff."""
    fpr, tpr, thr = roc_curve(y, score)
    j = tpr - fpr
    j[0] = -np.inf                         # never the +inf threshold
    return float(thr[int(np.argmax(j))])


def roc_ci_band(y, score, *, n_boot: int = 500, level: float = 0.95, seed: int = 0,
                grid: int = 101) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Pointwise bootstrap band of sensitivity (ROC interpolated linearly) at fixed 1 - specificity:
    ``(fpr_grid, tpr_low, tpr_high)`` (stratified resampling)."""
    yb, s = _check(y, score)
    fgrid = np.linspace(0.0, 1.0, grid)
    idx = _stratified_indices(yb, n_boot, seed)
    curves = np.empty((n_boot, grid))
    m = int(yb.sum())
    yy = np.zeros(idx.shape[1], int)
    yy[:m] = 1
    for b in range(n_boot):
        fpr, tpr, _ = roc_curve(yy, s[0][idx[b]])
        # ROC points joined by straight lines (ties move diagonally); vertical runs take their top
        curves[b] = np.interp(fgrid, fpr, tpr)
    lo, hi = np.quantile(curves, [(1 - level) / 2, (1 + level) / 2], axis=0)
    return fgrid, lo, hi
