"""DeLong statistics against pROC's own tested values on aSAH, a naive O(mn) implementation,
and scikit-learn; stated edge-case behaviour."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from kit import shared_file
from sklearn.metrics import roc_auc_score
from sklearn.metrics import roc_curve as sk_roc_curve

from analysis.roc import (
    auc_score,
    bootstrap_auc_ci,
    delong_auc,
    delong_covariance,
    delong_test,
    roc_curve,
    youden_cutoff,
)
from dltr.core.exceptions import ApproximationWarning

TOL = 1e-9


@pytest.fixture(scope="module")
def asah():
    d = pd.read_csv(shared_file("reference/aSAH.csv"))
    return (d["outcome"] == "Poor").astype(int).to_numpy(), d


def test_auc_and_variance_match_proc(asah):
    y, d = asah
    ref = {"s100b": (0.731368563685637, 0.00266868245717244), "wfns": (0.823678861788618, 0.00146991470882363),
           "ndka": (0.611957994579946, 0.0031908105493913)}
    for col, (auc, var) in ref.items():
        r = delong_auc(y, d[col])
        assert r.auc == pytest.approx(auc, abs=TOL)
        assert r.variance == pytest.approx(var, abs=TOL)
    r = delong_auc(y, d["ndka"])
    assert (r.ci_low, r.ci_high) == pytest.approx((0.501244999271703, 0.722670989888189), abs=TOL)
    assert (r.n_cases, r.n_controls) == (41, 72)


def test_covariance_and_paired_test_match_proc(asah):
    y, d = asah
    _, cov = delong_covariance(y, np.vstack([d["wfns"], d["ndka"], d["s100b"]]))
    assert cov[0, 1] == pytest.approx(-0.000532967856762438, abs=TOL)
    assert cov[1, 2] == pytest.approx(-0.000756164938056579, abs=TOL)
    assert np.allclose(cov, cov.T)
    t = delong_test(y, d["wfns"], d["s100b"])
    assert (t.z, t.p_value) == pytest.approx((2.20898359144091, 0.0271757822291882), abs=TOL)
    assert (t.diff_ci_low, t.diff_ci_high) == pytest.approx((0.0104061769564846, 0.174214419249478), abs=TOL)
    t = delong_test(y, d["wfns"], d["ndka"])
    assert (t.z, t.p_value) == pytest.approx((2.79777591868904, 0.00514557970691098), abs=TOL)


def _naive_delong(y, scores):
    """O(m n) DeLong straight from the definition (psi kernel), the independent reference."""
    y = np.asarray(y).astype(bool)
    out_auc, v10s, v01s = [], [], []
    for s in scores:
        x, z = s[y], s[~y]
        psi = (x[:, None] > z[None, :]) + 0.5 * (x[:, None] == z[None, :])
        out_auc.append(psi.mean())
        v10s.append(psi.mean(1))
        v01s.append(psi.mean(0))
    v10, v01 = np.array(v10s), np.array(v01s)
    return np.array(out_auc), np.cov(v10) / v10.shape[1] + np.cov(v01) / v01.shape[1]


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_fast_delong_equals_definition_with_ties(seed):
    rng = np.random.default_rng(seed)
    n = 150
    y = (rng.random(n) < 0.4).astype(int)
    s1 = np.round(y * 0.8 + rng.normal(size=n), 1)         # rounding makes many ties
    s2 = rng.integers(0, 4, n) + y                          # heavy ties
    s3 = s1 + rng.normal(scale=0.5, size=n)
    S = np.vstack([s1, s2, s3])
    a_ref, c_ref = _naive_delong(y, S)
    a, c = delong_covariance(y, S)
    assert np.allclose(a, a_ref, atol=1e-12) and np.allclose(c, c_ref, atol=1e-12)
    assert a[0] == pytest.approx(roc_auc_score(y, s1), abs=1e-12)
    assert auc_score(y, s2) == pytest.approx(roc_auc_score(y, s2), abs=1e-12)


def test_edge_cases_behave_as_stated():
    y = np.array([0, 0, 0, 1, 1, 1])
    with pytest.warns(ApproximationWarning, match="variance is 0"):
        r = delong_auc(y, np.ones(6))
    assert (r.auc, r.variance, r.ci_low, r.ci_high) == (0.5, 0.0, 0.5, 0.5)
    with pytest.warns(ApproximationWarning, match="variance is 0"):
        r = delong_auc(y, [0.1, 0.2, 0.3, 0.7, 0.8, 0.9])
    assert (r.auc, r.variance, r.ci_low, r.ci_high) == (1.0, 0.0, 1.0, 1.0)
    with pytest.warns(ApproximationWarning, match="undefined with 1 case"):
        r = delong_auc([0, 0, 0, 1], [0.1, 0.5, 0.3, 0.4])
    assert r.auc == pytest.approx(2 / 3) and np.isnan(r.variance) and np.isnan(r.ci_low)
    with pytest.raises(ValueError, match="0 cases and 4 controls"):
        delong_auc([0, 0, 0, 0], [0.1, 0.2, 0.3, 0.4])
    with pytest.raises(ValueError, match="NaN"):
        delong_auc(y, [0.1, np.nan, 0.3, 0.7, 0.8, 0.9])
    s = np.array([0.1, 0.4, 0.35, 0.8, 0.3, 0.9])
    with pytest.warns(ApproximationWarning, match="var\\(A1 - A2\\) is 0"):
        t = delong_test(y, s, s)
    assert (t.z, t.p_value) == (0.0, 1.0)


def test_roc_curve_and_youden_match_brute_force():
    rng = np.random.default_rng(5)
    y = (rng.random(200) < 0.3).astype(int)
    s = np.round(rng.normal(size=200) + y, 1)
    fpr, tpr, thr = roc_curve(y, s)
    sf, st, sthr = sk_roc_curve(y, s, drop_intermediate=False)
    assert np.allclose(fpr, sf) and np.allclose(tpr, st) and np.allclose(thr[1:], sthr[1:])
    best = max(np.unique(s), key=lambda c: (np.mean(s[y == 1] >= c) + np.mean(s[y == 0] < c), c))
    assert youden_cutoff(y, s) == best


def test_bootstrap_ci_close_to_delong_on_asah(asah):
    y, d = asah
    auc, lo, hi = bootstrap_auc_ci(y, d["wfns"], n_boot=4000, seed=1)
    r = delong_auc(y, d["wfns"])
    assert auc == pytest.approx(r.auc, abs=1e-12)
    assert lo == pytest.approx(r.ci_low, abs=0.02) and hi == pytest.approx(r.ci_high, abs=0.02)
    assert bootstrap_auc_ci(y, d["wfns"], n_boot=200, seed=3) == bootstrap_auc_ci(y, d["wfns"], n_boot=200, seed=3)
