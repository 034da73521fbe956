"""Heads: the logistic core against scikit-learn, clinical selection of planted variables,
determinism, the no-leakage guarantee (byte-identical heads), registry lineage, and the
planted fusion advantage. Data are generated here with known latent traits (an image trait
seen through noisy deep features and a clinical trait seen through clinical variables)."""

from __future__ import annotations

import functools
import json

import numpy as np
import pandas as pd
import pytest
from scipy.special import expit
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score

from dltr.core.exceptions import ModelError
from models.heads import (
    DLTRMLP,
    MEMBER_SEED_STEP,
    ClinicalModel,
    DLTRHead,
    HeadRegistry,
    HeadsConfig,
    XGBFusionHead,
    fit_heads,
    fit_logistic,
    grade_positions,
    serialize_head,
)


def planted(n=900, d=48, seed=0):
    """Cohort with response = f(image trait, clinical trait); returns frame, embedding, oracle logit."""
    rng = np.random.default_rng(seed)
    center = rng.choice(["A", "B", "C"], n, p=[0.6, 0.2, 0.2])
    split = np.where(center != "A", "external", np.where(rng.random(n) < 0.7, "train", "internal"))
    t_img, t_cl = rng.normal(size=n), rng.normal(size=n)
    lp = 1.3 * t_img + 1.1 * t_cl - 0.2
    y = (rng.random(n) < expit(lp)).astype(int)
    emb = (t_img[:, None] * rng.normal(size=(1, d)) + rng.normal(size=(n, d)) * 1.5).astype(np.float32)
    df = pd.DataFrame({
        "patient_id": [f"P{i:04d}" for i in range(n)], "center": center, "split": split, "label": y,
        "age": rng.normal(60, 10, n),
        "afp": np.exp(4 + 0.9 * t_cl + rng.normal(0, 0.5, n)),               # skewed: enters as log(afp)
        "bclc": np.where(t_cl + rng.normal(0, 0.7, n) > 0, "A", "B"),
        "sex": rng.choice(["F", "M"], n),
    })
    return df, emb, lp


def test_fit_logistic_ml_matches_sklearn_and_wald_se():
    rng = np.random.default_rng(0)
    x = np.column_stack([rng.normal(50, 10, 500), rng.exponential(100, 500), rng.integers(0, 2, 500)])
    y = (rng.random(500) < expit(-2 + 0.03 * x[:, 0] + 0.004 * x[:, 1] - 0.5 * x[:, 2])).astype(int)
    f = fit_logistic(x, y, firth=False)
    ref = LogisticRegression(C=np.inf, tol=1e-12, max_iter=10000).fit(x, y)
    assert np.allclose(f.coef, np.r_[ref.intercept_, ref.coef_[0]], rtol=1e-4, atol=1e-6)
    a = np.column_stack([np.ones(500), x])
    p = expit(a @ f.coef)
    se_direct = np.sqrt(np.diag(np.linalg.inv((a * (p * (1 - p))[:, None]).T @ a)))
    assert np.allclose(f.se, se_direct, rtol=1e-6)
    assert f.aic == pytest.approx(2 * 4 - 2 * np.sum(y * np.log(p) + (1 - y) * np.log(1 - p)), rel=1e-6)


def _firth_loglik(a, y, b):
    p = expit(a @ b)
    info = (a * (p * (1 - p))[:, None]).T @ a
    return np.sum(y * np.log(p) + (1 - y) * np.log1p(-p)) + 0.5 * np.linalg.slogdet(info)[1]


def test_firth_separated_2x2_against_the_half_count_rule_and_a_brute_force_profile():
    """Complete separation (every exposed patient responds): maximum likelihood diverges; Firth's estimate
    of a 2x2 table is the log odds ratio with one half added to each cell (Firth 1993; Heinze & Schemper,
    Stat Med 2002, section 2), and its 95 % CI is where the profile penalised log-likelihood drops by
    chi2(1, 0.95) / 2 - found here by a grid search over an independent implementation of that likelihood."""
    from scipy.optimize import brentq, minimize_scalar
    from scipy.stats import chi2

    # a exposed responders, b exposed non-responders, c unexposed responders, d unexposed non-responders
    a, b, c, d = 7, 0, 4, 9
    x = np.r_[np.ones(a + b), np.zeros(c + d)][:, None]
    y = np.r_[np.ones(a), np.zeros(b), np.ones(c), np.zeros(d)]
    f = fit_logistic(x, y, inference=True)
    assert f.coef[1] == pytest.approx(np.log((a + .5) * (d + .5) / ((b + .5) * (c + .5))), abs=1e-5)
    assert f.coef[0] == pytest.approx(np.log((c + .5) / (d + .5)), abs=1e-5)
    design = np.column_stack([np.ones_like(y), x[:, 0]])
    lmax = _firth_loglik(design, y, f.coef)
    assert f.loglik == pytest.approx(lmax, abs=1e-6)

    def drop(beta1):  # 2 * (lmax - profile penalised log-likelihood at slope beta1) - chi2 quantile
        prof = -minimize_scalar(lambda b0: -_firth_loglik(design, y, np.r_[b0, beta1]),
                                bounds=(-10, 10), method="bounded", options={"xatol": 1e-10}).fun
        return 2 * (lmax - prof) - chi2.ppf(0.95, 1)
    lo = brentq(drop, f.coef[1] - 20, f.coef[1])
    hi = brentq(drop, f.coef[1], f.coef[1] + 20)
    assert f.ci[1] == pytest.approx([lo, hi], abs=2e-3)
    assert np.isfinite(f.ci).all() and 0 < f.lrt_p[1] < 0.05


def test_screening_lr_statistics_equal_firthmodels_penalised_lrt_also_under_separation():
    """The penalised likelihood-ratio statistics that screening and backward elimination compare (dltr's own
    constrained Newton fit: Cholesky leverages, warm start from the unrestricted fit) against firthmodels'
    independent ``lrt()`` of the same one-variable models, on ordinary data and on a variable that
    separates the classes completely."""
    from firthmodels import FirthLogisticRegression
    from scipy.stats import chi2

    rng = np.random.default_rng(5)
    n = 70
    X = pd.DataFrame({"a": rng.normal(size=n), "b": rng.normal(2, 3, size=n), "c": rng.exponential(size=n)})
    for y in ((rng.random(n) < expit(X["a"] - 0.3 * X["c"])).astype(int), (X["b"] > 2.5).astype(int)):
        m = ClinicalModel(selection="none", n_bootstrap=0).fit(X, y)
        ours = m.univariable_.set_index("variable")["p"]
        for v in X:
            ref = FirthLogisticRegression(backend="numpy").fit(X[[v]].to_numpy(), y).lrt()
            assert ours[v] == pytest.approx(ref.lrt_pvalues_[0], rel=1e-6, abs=1e-12), v
    assert chi2.isf(ours["b"], 1) > 20   # the separating variable: a large but finite statistic


def test_firth_newton_reaches_the_maximum_on_tiny_resamples():
    """On bootstrap resamples of 13 patients (the tiny cohort's training split; an ill-conditioned information),
    the penalised fit behind every clinical LR statistic reaches the maximum that scipy's BFGS finds on the same
    penalised log-likelihood. (Clipping each coordinate of the Newton step bent it off the ascent direction:
    2 of these 100 fits stopped 3-5 log-likelihood units short.)"""
    from scipy.optimize import minimize

    from models.heads._clinical import _firth_state, constrained_firth

    gaps = []
    for seed in range(100):
        rng = np.random.default_rng(seed)
        idx = rng.integers(0, 13, 13)
        x, y = rng.normal(size=(13, 5))[idx], np.r_[np.ones(4), np.zeros(9)][idx]
        if y.min() == y.max() or (x.std(0) == 0).any():
            continue
        a = np.column_stack([np.ones(13), (x - x.mean(0)) / x.std(0)])
        ll, beta = constrained_firth(a, y, np.ones(6, bool))
        assert ll == _firth_state(a, y, beta)[3]
        ref = max(-minimize(lambda b, a=a, y=y: -_firth_state(a, y, b)[3], b0, method="BFGS",
                            options={"gtol": 1e-10}).fun for b0 in (np.zeros(6), beta))
        gaps.append(ref - ll)
    assert len(gaps) > 75 and max(gaps) < 1e-3, max(gaps)


def test_clinical_model_separation_gives_finite_odds_ratios():
    rng = np.random.default_rng(3)
    n = 120
    pvtt = (rng.random(n) < 0.12).astype(int)
    afp = np.exp(rng.normal(4, 1, n))
    y = np.where(pvtt == 1, 0, (rng.random(n) < expit(1.5 - 0.5 * np.log(afp) + 2)).astype(int))
    df = pd.DataFrame({"pvtt": pvtt, "afp": afp})
    m = ClinicalModel(selection="none", n_bootstrap=10).fit(df, y)
    s = m.summary_.set_index("term")
    assert "pvtt" in s.index
    assert np.isfinite(s[["or_ci_low", "or_ci_high"]].to_numpy()).all()
    assert (s["or_ci_low"] > 0).all() and s.loc["pvtt", "odds_ratio"] < 0.2
    assert s["inclusion_frequency"].drop("(intercept)").between(0, 1).all()
    # an aliased candidate (here a copy of pvtt under another name) is left out, not a singular fit
    m2 = ClinicalModel(selection="none", n_bootstrap=0).fit(df.assign(pvi_copy=pvtt), y)
    assert m2.aliased_ == ["pvi_copy"] and "pvi_copy" not in m2.selected_


def test_clinical_model_selects_planted_variables():
    df, _, _ = planted(n=1500)
    tr = df["split"] == "train"
    m = ClinicalModel().fit(df.loc[tr, ["age", "afp", "bclc", "sex"]], df.loc[tr, "label"])
    assert "afp" in m.selected_ and "age" not in m.univariable_.query("p < 0.01")["variable"].tolist()
    assert set(m.selected_) <= set(m.screened_)
    s = m.summary_.set_index("term")
    assert "log(afp)" in s.index and s.loc["log(afp)", "odds_ratio"] > 1
    lo, hi = s.loc["log(afp)", ["or_ci_low", "or_ci_high"]]
    assert lo < s.loc["log(afp)", "odds_ratio"] < hi
    p = m.predict_proba(df.loc[~tr, ["age", "afp", "bclc", "sex"]])[:, 1]
    assert roc_auc_score(df.loc[~tr, "label"], p) > 0.6
    with pytest.raises(ModelError, match="not fitted"):
        ClinicalModel().design_matrix(df)


@pytest.mark.parametrize("cls", [DLTRHead, DLTRMLP, XGBFusionHead])
def test_estimator_contract_and_determinism(cls):
    df, emb, _ = planted(n=400, d=16)
    y = df["label"].to_numpy()
    if cls is DLTRMLP:
        cls = functools.partial(DLTRMLP, max_epochs=15, batch_size=128)
    est = cls(seed=3)
    assert est.seed == 3 and not [k for k in vars(est) if k.endswith("_")]
    with pytest.raises(ModelError, match="not fitted"):
        est.predict_proba(emb)
    a = cls(seed=3).fit(emb, y)
    b = cls(seed=3).fit(emb, y)
    assert serialize_head(a) == serialize_head(b)
    assert np.array_equal(a.predict_proba(emb), b.predict_proba(emb))
    with pytest.raises(ModelError, match="both classes"):
        cls().fit(emb[:10], np.zeros(10, int))


@pytest.mark.parametrize("weight_decay", [0.0, 1e-2, 1e-1])
def test_mlp_optimizer_equals_torch_adamw_bit_for_bit(weight_decay):
    """DLTR_MLP's own AdamW (no torch.optim: no dynamo import, less per-step overhead) leaves the network's
    parameters and its moment estimates exactly where torch.optim.AdamW(foreach=True) leaves them, step by step."""
    import torch
    import torch.nn.functional as F

    from models.heads._mlp import AdamW, _build

    def train(make):
        torch.manual_seed(0)
        net = _build(12, (16,), 0.3)
        X, y = torch.randn(64, 12), (torch.rand(64) < 0.5).float()
        opt, g, trace = make(net.parameters()), torch.Generator().manual_seed(1), []
        for _ in range(120):
            idx = torch.randperm(64, generator=g)[:16]
            loss = F.binary_cross_entropy_with_logits(net(X[idx]).squeeze(1), y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            trace.append(torch.cat([p.detach().flatten() for p in net.parameters()]).clone())
        return torch.stack(trace), opt

    ref, ropt = train(lambda ps: torch.optim.AdamW(ps, lr=1e-3, weight_decay=weight_decay, foreach=True))
    got, gopt = train(lambda ps: AdamW(ps, lr=1e-3, weight_decay=weight_decay))
    assert torch.equal(ref, got)
    assert ref[0].ne(ref[-1]).all()             # every parameter moved
    for q, m, v in zip(ropt.param_groups[0]["params"], gopt.exp_avg, gopt.exp_avg_sq, strict=True):  # same order
        assert torch.equal(ropt.state[q]["exp_avg"], m) and torch.equal(ropt.state[q]["exp_avg_sq"], v)


def test_mlp_seed_ensemble_is_the_mean_logit_of_its_members(tmp_path):
    """``n_members`` networks averaged on the logit scale: each member is the single network its own seed trains
    (same chosen width, decay and epochs), the ensemble's logit is their mean, and the registry round trip keeps
    every member."""
    df, emb, _ = planted(n=300, d=12)
    y = df["label"].to_numpy()
    kw = {"tune": False, "epochs": 6, "hidden": (16,), "batch_size": 64}
    ens = DLTRMLP(seed=5, n_members=3, **kw).fit(emb, y)
    singles = [DLTRMLP(seed=5 + MEMBER_SEED_STEP * m, **kw).fit(emb, y).decision_function(emb) for m in range(3)]
    assert not np.array_equal(singles[0], singles[1])          # the members differ
    np.testing.assert_allclose(ens.decision_function(emb), np.mean(singles, axis=0), rtol=0, atol=1e-12)
    assert np.array_equal(DLTRMLP(seed=5, n_members=1, **kw).fit(emb, y).decision_function(emb), singles[0])
    reg = HeadRegistry(tmp_path)
    v = reg.publish("dltr_mlp", ens, lineage={"feature_set": "dltr"}, hyperparameters={}, seed=5, metrics={},
                    cutoff=0.5)
    back, _ = reg.load("dltr_mlp", v)
    assert np.array_equal(back.decision_function(emb), ens.decision_function(emb))
    with pytest.raises(ModelError, match="n_members"):
        DLTRMLP(n_members=0, **kw).fit(emb, y)


def graded(n=600, seed=0, cuts=(-1.5, 0.0, 2.0)):
    """Features and mRECIST grade positions (0 PD ... 3 CR) from a proportional-odds model with known cuts."""
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, 4))
    eta = X @ np.array([1.5, -1.0, 0.5, 0.0])
    return X, np.digitize(eta + rng.logistic(size=n), cuts), eta


def test_ordinal_likelihood_is_the_proportional_odds_formula():
    """The cumulative-logit loss against the formula written out in NumPy, its cuts ordered with the event cut at
    0, and with two grades the binary cross-entropy."""
    import torch
    import torch.nn.functional as F

    from models.heads._mlp import _cuts, _ordinal_nll

    rng = np.random.default_rng(3)
    z, rank = rng.normal(size=50), rng.integers(0, 4, 50)
    gaps = torch.tensor([0.3, -0.7, 1.1])
    for event_index in (1, 2, 3):
        cuts = _cuts(gaps, event_index).numpy().astype(np.float64)
        assert cuts[event_index - 1] == 0 and np.all(np.diff(cuts) > 0)
        cum = np.column_stack([np.ones(50), expit(z[:, None] - cuts[None, :]), np.zeros(50)])
        ref = -np.mean(np.log(cum[np.arange(50), rank] - cum[np.arange(50), rank + 1]))
        got = float(_ordinal_nll(torch.tensor(z, dtype=torch.float32), torch.from_numpy(rank),
                                 torch.tensor(cuts, dtype=torch.float32)))
        assert got == pytest.approx(ref, rel=1e-5)
    y = rng.integers(0, 2, 50)
    two = _ordinal_nll(torch.tensor(z, dtype=torch.float32), torch.from_numpy(y), torch.zeros(1))
    bce = F.binary_cross_entropy_with_logits(torch.tensor(z, dtype=torch.float32), torch.tensor(y, dtype=torch.float32))
    assert float(two) == pytest.approx(float(bce), rel=1e-6)


def test_ordinal_mlp_learns_the_grade_ladder(tmp_path):
    """DLTR_MLP with ``ordinal``: its cuts put the training rows' predicted grade shares where the observed ones are,
    its score ranks the event P(grade >= PR) like the binary network's, it drops a grade no row has, and the
    registry round trip keeps scores and cuts; grades on one side of the event only are refused."""
    X, g, eta = graded()
    m = DLTRMLP(ordinal=True, seed=0).fit(X, g)
    assert m.grades_.tolist() == [0, 1, 2, 3] and m.event_index_ == 2 and m.cuts_[1] == 0
    assert np.all(np.diff(m.cuts_) > 0.5)
    z = m.decision_function(X)
    cum = expit(z[:, None] - m.cuts_[None, :]).mean(0)               # predicted P(grade >= j), j = 1, 2, 3
    np.testing.assert_allclose(cum, [(g >= j).mean() for j in (1, 2, 3)], atol=0.04)
    assert roc_auc_score(g >= 2, z) > 0.85
    assert abs(roc_auc_score(g >= 2, z) - roc_auc_score(g >= 2, DLTRMLP(seed=0).fit(X, (g >= 2).astype(int))
                                                        .decision_function(X))) < 0.03
    two = DLTRMLP(ordinal=True, seed=0).fit(X, np.where(g >= 2, 2, 1))    # SD and PR only: the binary network
    binary = DLTRMLP(seed=0).fit(X, (g >= 2).astype(int))
    assert two.cuts_.tolist() == [0.0] and two.best_params_ == binary.best_params_
    np.testing.assert_allclose(two.decision_function(X), binary.decision_function(X), atol=1e-5)
    three = DLTRMLP(ordinal=True, seed=0).fit(X, np.where(g == 1, 0, g))   # no SD row: PD < PR < CR
    assert three.grades_.tolist() == [0, 2, 3] and three.event_index_ == 1 and three.cuts_.shape == (2,)
    reg = HeadRegistry(tmp_path)
    v = reg.publish("dltr_mlp", m, lineage={"feature_set": "dltr"}, hyperparameters={}, seed=0, metrics={},
                    cutoff=0.5)
    back, _ = reg.load("dltr_mlp", v)
    assert np.array_equal(back.decision_function(X), z) and np.array_equal(back.cuts_, m.cuts_)
    with pytest.raises(ModelError, match="below and from event_from"):
        DLTRMLP(ordinal=True).fit(X, np.where(g >= 2, g, 2))
    with pytest.raises(ModelError, match="grade positions"):
        DLTRMLP(ordinal=True).fit(X, g + 0.5)


def test_ordinal_heads_read_the_grades_and_check_them_against_the_label():
    """``fit_heads(ordinal=True)``: DLTR_MLP learns from the frame's mRECIST grades (a CR/PR swap inside the
    responders changes it, the binary heads not); a frame without grades, a grade outside mRECIST or grades that
    disagree with the binary label are refused with the reason."""
    df, emb, _ = planted(n=400, d=12)
    rng = np.random.default_rng(4)
    y = df["label"].to_numpy()
    df["response"] = np.where(y == 1, rng.choice(["CR", "PR"], len(y)), rng.choice(["SD", "PD"], len(y)))
    assert grade_positions(["PD", "SD", "PR", "CR"]).tolist() == [0, 1, 2, 3]
    a = fit_heads(df, emb, ["age", "afp"], seed=0, heads=("clinical", "dltr", "dltr_mlp"), ordinal=True)
    swapped = df.assign(response=df["response"].map({"CR": "PR", "PR": "CR", "SD": "SD", "PD": "PD"}))
    b = fit_heads(swapped, emb, ["age", "afp"], seed=0, heads=("clinical", "dltr", "dltr_mlp"), ordinal=True)
    assert a["dltr_mlp"].estimator.ordinal and a["dltr_mlp"].estimator.grades_.tolist() == [0, 1, 2, 3]
    assert serialize_head(a["dltr"]) == serialize_head(b["dltr"])
    assert serialize_head(a["dltr_mlp"]) != serialize_head(b["dltr_mlp"])
    with pytest.raises(ModelError, match="column 'response'"):
        fit_heads(df.drop(columns="response"), emb, ["age", "afp"], seed=0, heads=("dltr_mlp",), ordinal=True)
    bad = df.copy()
    bad.loc[bad.index[bad["split"] == "train"][0], "response"] = "NE"
    first = bad.loc[bad["split"] == "train", "patient_id"].iloc[0]
    with pytest.raises(ModelError, match=rf"'NE' \(patient {first}\)"):
        fit_heads(bad, emb, ["age", "afp"], seed=0, heads=("dltr_mlp",), ordinal=True)
    flipped = df.assign(response=df["response"].map({"CR": "SD", "PR": "PR", "SD": "SD", "PD": "PD"}))
    with pytest.raises(ModelError, match="disagree with its binary label"):
        fit_heads(flipped, emb, ["age", "afp"], seed=0, heads=("dltr_mlp",), ordinal=True)


def test_linear_grid_point_starts_at_zero_and_ends_at_the_logistic_fit():
    """``hidden=()``: a logistic regression trained by the MLP's loop. It starts at zero, so early stopping is
    shrinkage towards zero (coefficient norm small after one epoch and growing with the epochs), and without weight
    decay it converges to scikit-learn's unpenalised fit; ``HeadsConfig.mlp_linear`` puts it in the inner-CV grid."""
    df, emb, _ = planted(n=400, d=6)
    y = df["label"].to_numpy()
    Z = (emb - emb.mean(0)) / emb.std(0)
    norms = []
    for epochs in (1, 5, 40):
        m = DLTRMLP(hidden=(), weight_decay=0.0, tune=False, epochs=epochs, seed=2).fit(Z, y)
        norms.append(np.linalg.norm(m.state_["0.weight"]))
    assert norms[0] < 0.02 and norms[0] < norms[1] < norms[2]
    m = DLTRMLP(hidden=(), weight_decay=0.0, tune=False, epochs=3000, lr=1e-3, seed=2).fit(Z, y)  # 8 steps an epoch
    ref = LogisticRegression(C=np.inf, tol=1e-10, max_iter=10000).fit(Z, y)
    np.testing.assert_allclose(m.decision_function(Z), ref.decision_function(Z), atol=1e-2)
    heads = fit_heads(df, emb, ["age", "afp"], seed=0, heads=("clinical", "dltr_mlp"), mlp_linear=True)
    grid = [tuple(r["hidden"]) for r in heads["dltr_mlp"].estimator.cv_table_]
    assert grid == [(16,), (16,), (64,), (64,), (), ()]


def test_no_test_cohort_row_influences_training():
    df, emb, _ = planted(n=500, d=24)
    rng = np.random.default_rng(9)
    a = fit_heads(df, emb, ["age", "afp", "bclc", "sex"], seed=1)
    df2, emb2 = df.copy(), emb.copy()
    test = (df2["split"] != "train").to_numpy()
    df2.loc[test, "label"] = rng.permutation(df2.loc[test, "label"].to_numpy())
    df2.loc[test, "afp"] = rng.permutation(df2.loc[test, "afp"].to_numpy())
    emb2[test] = rng.normal(size=emb2[test].shape)
    b = fit_heads(df2, emb2, ["age", "afp", "bclc", "sex"], seed=1)
    for name in a:
        assert serialize_head(a[name]) == serialize_head(b[name]), name


def test_fusion_beats_single_sources_and_nears_oracle():
    df, emb, lp = planted(n=2500, d=48, seed=2)
    heads = fit_heads(df, emb, ["age", "afp", "bclc", "sex"], seed=0)
    ext = (df["split"] == "external").to_numpy()
    y = df.loc[ext, "label"].to_numpy()
    auc = {n: roc_auc_score(y, h.predict_proba_frame(df.loc[ext], emb[ext])) for n, h in heads.items()}
    oracle = roc_auc_score(y, lp[ext])
    assert auc["dltr_mlp"] > auc["dltr"] + 0.03 and auc["dltr_mlp"] > auc["clinical"] + 0.03, auc
    assert auc["xgb_fusion"] > max(auc["dltr"], auc["clinical"]), auc
    assert oracle - auc["dltr_mlp"] < 0.05, (oracle, auc)


def test_registry_round_trip_lineage_and_corruption(tmp_path):
    df, emb, _ = planted(n=300, d=8)
    head = DLTRHead(Cs=(0.1,)).fit(emb[:200], df["label"][:200])
    reg = HeadRegistry(tmp_path)
    lin = {"feature_set": "dltr", "feature_set_version": "abc", "frame_row_hash": "rows1"}
    v = reg.publish("dltr", head, lineage=lin, hyperparameters={"Cs": [0.1]}, seed=0,
                    metrics={"train_auc": 0.7}, cutoff=0.4)
    assert reg.publish("dltr", head, lineage=lin, hyperparameters={"Cs": [0.1]}, seed=0,
                       metrics={"train_auc": 0.7}, cutoff=0.4) == v          # content-addressed
    v2 = reg.publish("dltr", head, lineage={**lin, "frame_row_hash": "rows2"}, hyperparameters={"Cs": [0.1]},
                     seed=0, metrics={}, cutoff=0.4)
    assert v2 != v and reg.latest("dltr") == v2 and reg.versions("dltr") == sorted([v, v2])
    loaded, meta = reg.load("dltr", v)
    assert np.array_equal(loaded.predict_proba(emb), head.predict_proba(emb))
    assert meta["lineage"] == lin and meta["cutoff"] == 0.4 and meta["seed"] == 0
    assert json.loads((tmp_path / "heads" / "dltr" / v / "head.json").read_text())["version"] == v
    state = json.loads((tmp_path / "heads" / "dltr" / v / "state.json").read_text())
    assert state["coef_"] == head.coef_.tolist()                                   # coefficients as JSON
    (tmp_path / "heads" / "dltr" / v / "state.json").write_text(json.dumps({**state, "intercept_": 9.0}))
    with pytest.raises(ModelError, match="do not match its recorded SHA-256"):
        reg.load("dltr", v)
    assert not [p for p in (tmp_path / "heads" / "dltr").iterdir() if p.name.startswith(".")]


def _state_files(folder):
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if p.name != "head.json"}


def test_every_head_saved_without_pickle_and_loaded_exactly(tmp_path):
    """Each of the four heads goes through the registry as JSON / safetensors / UBJSON files and comes
    back predicting bit-identically; no file is a pickle (protocol 2+ starts with 0x80)."""
    df, emb, _ = planted(n=400, d=8, seed=2)
    cand = ["age", "afp", "bclc", "sex"]
    fitted = fit_heads(df, emb, cand, seed=0)
    reg = HeadRegistry(tmp_path)
    expected = {"clinical": {"state.json"}, "dltr": {"state.json"}, "dltr_mlp": {"state.json", "state.safetensors"},
                "xgb_fusion": {"state.json", "estimator.model.ubj"}}
    for name, fh in fitted.items():
        v = reg.publish(name, fh, lineage={}, hyperparameters={}, seed=0, metrics={}, cutoff=0.5)
        files = _state_files(tmp_path / "heads" / name / v)
        assert set(files) == expected[name], (name, set(files))
        assert not any(b.startswith(b"\x80") for b in files.values()), name
        loaded, _ = reg.load(name, v)
        assert type(loaded.estimator) is type(fh.estimator)
        assert np.array_equal(loaded.predict_proba_frame(df, emb), fh.predict_proba_frame(df, emb)), name
    import xgboost as xgb

    ubj = (tmp_path / "heads" / "xgb_fusion" / reg.latest("xgb_fusion") / "estimator.model.ubj").read_bytes()
    booster = xgb.Booster()
    booster.load_model(bytearray(ubj))                                      # XGBoost reads its own file
    clin = reg.load("clinical")[0].estimator
    pd.testing.assert_frame_equal(clin.summary_, fitted["clinical"].estimator.summary_)


def test_registry_refuses_a_pickled_head_and_unknown_kinds(tmp_path):
    """A head folder holding a pickle (an old store, or one written by an attacker) is refused before
    anything is unpickled; a state naming a class outside the heads is refused too."""
    import pickle

    df, emb, _ = planted(n=300, d=8)
    reg = HeadRegistry(tmp_path)
    v = reg.publish("dltr", DLTRHead(Cs=(0.1,)).fit(emb[:200], df["label"][:200]), lineage={},
                    hyperparameters={}, seed=0, metrics={}, cutoff=0.5)
    folder = tmp_path / "heads" / "dltr" / v
    (folder / "head.pkl").write_bytes(pickle.dumps(ZeroDivisionError()))
    with pytest.raises(ModelError, match="is a pickle; pickled heads are refused"):
        reg.load("dltr", v)
    (folder / "head.pkl").unlink()
    meta = json.loads((folder / "head.json").read_text())
    (folder / "head.json").write_text(json.dumps({**meta, "format": None, "files": ["head.pkl"]}))
    with pytest.raises(ModelError, match="is a pickle"):
        reg.load("dltr", v)
    (folder / "head.json").write_text(json.dumps(meta))
    state = json.loads((folder / "state.json").read_text())
    from models.heads import from_kind

    with pytest.raises(ModelError, match="not one of the known heads"):
        from_kind({**state, "__kind__": "Popen"})


# --- through the real feature store ------------------------------------------------------------
# The clinical table is registered with store.write_table and the features are the planted
# cohort's noisy image-trait projection published with store.publish (no encoder involved).

def _store(root, df, emb):
    import pyarrow as pa

    from features import FeatureStore

    store = FeatureStore(root)
    clin = df.assign(tace_date=pd.Timestamp("2020-01-01").date(), label=df["label"].astype("int8"),
                     response=np.where(df["label"] == 1, "PR", "SD"), pfs_days=300.0, pfs_event=1)
    # cohort.toml's predictors as add-cohort registers them; "sex" is in the sheet but not declared
    store.write_table("clinical", pa.Table.from_pandas(clin, preserve_index=False),
                      lineage={"cohort_config": {"predictors": ["age", "afp", "bclc"]}})
    n, d = emb.shape
    rows = pa.table({
        "patient_id": df["patient_id"], "center": df["center"],
        "phases": pa.array([["arterial"]] * n, pa.list_(pa.string())),
        "roi_box": pa.array([[0, 0, 0, 1, 1, 1]] * n, pa.list_(pa.int32())),
        "input_checksum": [f"c{i}" for i in range(n)],
        "embedding": pa.FixedSizeListArray.from_arrays(pa.array(emb.ravel(), pa.float32()), d)})
    store.publish("dltr", rows, producer="test-planted-projection", lineage={"seed": 0})
    return store


@pytest.mark.slow
def test_store_training_is_blind_to_test_labels_and_evaluates(tmp_path):
    from analysis.evaluation import EvaluateConfig, evaluate
    from models.heads import HeadsConfig, train_heads

    df, emb, _ = planted(n=500, d=24, seed=4)
    s1 = _store(tmp_path / "s1", df, emb)
    # planted features, made by no encoder: the default fusion (the encoder's out-of-fold logit) is refused
    with pytest.raises(ModelError, match="fusion='readout'"):
        train_heads(s1, HeadsConfig(seed=0))
    r1 = train_heads(s1, HeadsConfig(seed=0, fusion="readout", clinical_bootstrap=10))
    df2 = df.copy()
    test = (df2["split"] != "train").to_numpy()
    df2.loc[test, "label"] = np.random.default_rng(1).permutation(df2.loc[test, "label"].to_numpy())
    s2 = _store(tmp_path / "s2", df2, emb)
    r2 = train_heads(s2, HeadsConfig(seed=0, fusion="readout", clinical_bootstrap=10))
    reg1, reg2 = HeadRegistry(s1.root), HeadRegistry(s2.root)
    for name in r1.versions:
        b1 = _state_files(s1.root / "heads" / name / r1.versions[name])
        b2 = _state_files(s2.root / "heads" / name / r2.versions[name])
        assert b1 == b2, name
        m1, m2 = reg1.meta(name), reg2.meta(name)
        assert m1["lineage"]["frame_row_hash"] != m2["lineage"]["frame_row_hash"]   # the frames differ
        assert m1["lineage"]["feature_set_version"] == s1.resolve("dltr").version_id
        assert m1["cutoff"] == m2["cutoff"]
        assert m1["lineage"]["clinical_candidates"] == ["age", "afp", "bclc"]  # the undeclared "sex" never enters
    ev = evaluate(s1, EvaluateConfig(figures=False), out=tmp_path / "out")
    got = s1.sql("SELECT head, evaluation_group, auc FROM eval_metrics WHERE evaluation_group = 'external B' ORDER BY head")
    sub = ev.metrics[ev.metrics["evaluation_group"] == "external B"].sort_values("head")
    assert got.column("auc").to_pylist() == pytest.approx(sub["auc"].tolist(), abs=1e-12)
    n_scores = s1.sql("SELECT count(*) AS n FROM scores").column("n")[0].as_py()
    assert n_scores == 4 * len(df)
    assert (tmp_path / "out" / "model_comparison.csv").exists()
    # one fusion head retrained alone: its lineage names the clinical model it fused (not an empty selection),
    # and the other heads keep their versions and their rows of the scores table
    selected = reg1.meta("xgb_fusion", r1.versions["xgb_fusion"])["lineage"]["clinical_selected"]
    r3 = train_heads(s1, HeadsConfig(seed=0, heads=("xgb_fusion",), fusion="readout", clinical_bootstrap=10))
    assert selected and reg1.meta("xgb_fusion", r3.versions["xgb_fusion"])["lineage"]["clinical_selected"] == selected
    assert list(r3.clinical_summary["variable"].drop_duplicates())[1:] == selected
    assert reg1.latest("clinical") == r1.versions["clinical"]
    assert s1.sql("SELECT count(*) AS n FROM scores").column("n")[0].as_py() == 4 * len(df)


def test_fusion_on_measured_descriptors_reads_the_out_of_fold_logit_descriptors_and_every_predictor(tmp_path):
    """``fusion="descriptors"``: the fusion heads' input is [the read-out's first column (the response logit;
    out of fold for training rows), the frame's ``roi.*`` columns, every declared predictor]; DLTR keeps the
    whole read-out; the registry keeps the descriptor columns, and a head without them saves no such key."""
    from models.heads import CrossFit

    df, emb, _ = planted(n=300, d=6, seed=3)
    rng = np.random.default_rng(0)
    df["roi.a.tumour_mean"], df["roi.tumour_fill"] = rng.normal(size=len(df)), rng.random(len(df))
    cand = ["age", "afp", "bclc", "sex"]
    with pytest.raises(ModelError, match="crossfit.npz"):
        fit_heads(df, emb, cand, seed=0, fusion="descriptors")
    tr = (df["split"] == "train").to_numpy()
    weight, bias = rng.normal(size=(3, emb.shape[1])), rng.normal(size=3)
    oof = rng.normal(size=(int(tr.sum()), 3))
    cf = CrossFit(df.loc[tr, "patient_id"].to_numpy(), oof, weight, bias)
    fitted = fit_heads(df, emb, cand, seed=0, crossfit=cf, fusion="descriptors")
    mlp, dltr = fitted["dltr_mlp"], fitted["dltr"]
    assert mlp.descriptors == ("roi.a.tumour_mean", "roi.tumour_fill") == fitted["xgb_fusion"].descriptors
    assert dltr.descriptors == () and dltr.readout_weight.shape == (3, emb.shape[1])
    deep_tr = cf.deep(df.loc[tr, "patient_id"], emb[tr])[0]
    x = mlp.inputs(df[tr], emb[tr], deep_tr)
    every = ClinicalModel(selection="all", n_bootstrap=0, seed=0).fit(df.loc[tr, cand].reset_index(drop=True),
                                                                     df.loc[tr, "label"].to_numpy())
    expected = np.hstack([oof[:, :1], df.loc[tr, ["roi.a.tumour_mean", "roi.tumour_fill"]].to_numpy(),
                          every.design_matrix(df[tr])])
    np.testing.assert_array_equal(x, expected)
    assert set(every.selected_) == {"age", "afp", "bclc", "sex"}
    # the fusion's block skips the tests and intervals only other heads would not read: same design, same fit
    light = mlp.clinical
    assert light.inference is False and light.fit_.ci is None and light.univariable_.empty
    np.testing.assert_array_equal(light.design_matrix(df), every.design_matrix(df))
    np.testing.assert_allclose(light.fit_.coef, every.fit_.coef, rtol=1e-10, atol=1e-12)
    assert every.fit_.ci is not None and light.summary_["or_ci_low"].isna().all()
    # other rows: the refit read-out's logit
    np.testing.assert_allclose(mlp.inputs(df[~tr], emb[~tr])[:, 0], emb[~tr] @ weight[0] + bias[0], rtol=1e-12)
    reg = HeadRegistry(tmp_path)
    for name in ("dltr_mlp", "dltr"):
        v = reg.publish(name, fitted[name], lineage={}, hyperparameters={}, seed=0, metrics={}, cutoff=0.5)
        state = json.loads((tmp_path / "heads" / name / v / "state.json").read_text())
        assert ("descriptors" in state) == (name == "dltr_mlp")
        loaded, _ = reg.load(name, v)
        assert loaded.descriptors == fitted[name].descriptors
        assert np.array_equal(loaded.predict_proba_frame(df, emb), fitted[name].predict_proba_frame(df, emb))
    with pytest.raises(ModelError, match="roi"):
        mlp.inputs(df.drop(columns=["roi.tumour_fill"]), emb)
    # a predictor named like a descriptor would be read as one: refused, naming the column
    from models.heads import add_descriptors

    with pytest.raises(ModelError, match="'roi.a.tumour_mean'.*rename"):
        add_descriptors(df[["patient_id", "roi.a.tumour_mean"]], np.zeros((len(df), 6)), ("a",))
    assert list(add_descriptors(df[["patient_id"]], np.zeros((len(df), 6)), ("a",)).columns)[1:] == [
        "roi.a.tumour_mean", "roi.a.tumour_std", "roi.a.ring_mean", "roi.a.core_mean", "roi.a.rim_mean",
        "roi.tumour_fill"]


def test_clinical_out_of_fold_scores_refit_on_its_candidates_only():
    """The clinical head's out-of-fold scores (its Youden cutoff and honest training AUC come from them) are
    refits on the candidate columns it was fitted on, equal to a refit by hand on those columns per fold:
    never on the frame's label or identifiers (that read the label as a predictor: out-of-fold AUC 1.0)."""
    from sklearn.model_selection import StratifiedKFold

    from models.heads._train import oof_head_scores

    df, emb, _ = planted(n=400, d=6, seed=5)
    tr = df[df["split"] == "train"].reset_index(drop=True)
    y = tr["label"].to_numpy()
    cand = ["age", "afp", "bclc", "sex"]
    fitted = fit_heads(tr, emb[: len(tr)], cand, seed=0, heads=("clinical",), fusion="readout")
    oof = oof_head_scores(fitted["clinical"], tr, emb[: len(tr)], None, y, seed=0)
    by_hand = np.full(len(y), np.nan)
    for trn, val in StratifiedKFold(5, shuffle=True, random_state=0).split(np.zeros(len(y)), y):
        m = ClinicalModel(selection="aic", n_bootstrap=0, seed=0).fit(tr.loc[trn, cand].reset_index(drop=True), y[trn])
        by_hand[val] = m.predict_proba(tr.iloc[val])[:, 1]
    np.testing.assert_allclose(oof, by_hand, rtol=1e-12)
    assert 0.55 < roc_auc_score(y, oof) < 0.95


def test_clinical_bootstrap_changes_only_the_reported_stability():
    """The number of stability resamples (``HeadsConfig.clinical_bootstrap``) changes no coefficient, selection
    or score of the clinical model: only how many resamples its inclusion frequencies count (0: none), and each
    frequency is a share of the resamples that hold both classes."""
    df, _, _ = planted(n=300, d=4, seed=5)
    tr = (df["split"] == "train").to_numpy()
    X, y = df.loc[tr, ["age", "afp", "bclc", "sex"]].reset_index(drop=True), df.loc[tr, "label"].to_numpy()
    fits = {b: ClinicalModel(seed=0, n_bootstrap=b).fit(X, y) for b in (0, 7)}
    assert fits[0].selected_ == fits[7].selected_ and np.array_equal(fits[0].fit_.coef, fits[7].fit_.coef)
    assert np.array_equal(fits[0].predict_proba(X), fits[7].predict_proba(X))
    assert all(np.isnan(v) for v in fits[0].inclusion_.values())
    freq = np.array(list(fits[7].inclusion_.values()))
    assert np.allclose(freq * 7, np.round(freq * 7)) and freq.max() == 1.0   # afp, planted, kept in all 7
    assert HeadsConfig().clinical_bootstrap == 50 and HeadsConfig(clinical_bootstrap=0).clinical_bootstrap == 0
    for bad in (-1, 2.5, True):
        with pytest.raises(ModelError, match="clinical_bootstrap"):
            HeadsConfig(clinical_bootstrap=bad)


def test_native_set_texture_reads_each_phases_heterogeneity_and_the_grid_descriptors():
    """``native_set="texture"``: the fusion heads read the grid descriptors and, of the native ones, each phase's
    sd, entropy and fine texture only (in the frame's order); "all" reads every one."""
    from models import native_descriptor_names
    from models.heads import CrossFit, add_native_descriptors

    df, emb, _ = planted(n=300, d=6, seed=3)
    rng = np.random.default_rng(1)
    df["roi.a.tumour_mean"] = rng.normal(size=len(df))
    phases = ("arterial", "portal")
    df = add_native_descriptors(df, rng.normal(size=(len(df), 18)), phases)
    tr = (df["split"] == "train").to_numpy()
    cf = CrossFit(df.loc[tr, "patient_id"].to_numpy(), rng.normal(size=(int(tr.sum()), 3)),
                  rng.normal(size=(3, emb.shape[1])), rng.normal(size=3))
    cand = ["age", "afp", "bclc", "sex"]
    got = {s: fit_heads(df, emb, cand, seed=0, crossfit=cf, fusion="native", native_spacing_mm=(5.0, 5.0, 8.0),
                        native_set=s, heads=("clinical", "dltr_mlp"), clinical_bootstrap=0)["dltr_mlp"]
           for s in ("all", "texture")}
    texture = [f"roi.native.{p}.{d}" for p in phases for d in ("sd", "entropy", "fine")]
    assert got["texture"].descriptors == ("roi.a.tumour_mean", *texture)
    assert got["all"].descriptors == ("roi.a.tumour_mean", *["roi." + n for n in native_descriptor_names(phases)])
    assert ["roi." + n for n in native_descriptor_names(phases, "texture")] == texture
    with pytest.raises(ModelError, match="native_set"):
        HeadsConfig(fusion="native", native_set="textures")
