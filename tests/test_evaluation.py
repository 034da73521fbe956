"""Calibration, decision curves and the per-cohort evaluation against hand computations and
independent implementations (scikit-learn's unpenalised logistic regression)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy.special import expit, logit
from sklearn.linear_model import LogisticRegression

from analysis.calibration import brier_score, calibration
from analysis.decision_curve import decision_curve, net_benefit, net_benefit_treat_all
from analysis.evaluation import evaluate_scores, paper_table, threshold_metrics
from analysis.roc import delong_auc, delong_test


def test_net_benefit_equals_hand_formula():
    rng = np.random.default_rng(0)
    y = (rng.random(300) < 0.35).astype(int)
    p = np.clip(rng.random(300) * 0.6 + 0.3 * y, 0, 1)
    for pt in (0.1, 0.25, 0.5, 0.8):
        tp = sum(1 for yi, pi in zip(y, p, strict=True) if pi >= pt and yi == 1)
        fp = sum(1 for yi, pi in zip(y, p, strict=True) if pi >= pt and yi == 0)
        hand = tp / 300 - fp / 300 * pt / (1 - pt)
        assert net_benefit(y, p, [pt])[0] == pytest.approx(hand, abs=1e-12)
        assert net_benefit_treat_all(y, [pt])[0] == pytest.approx(y.mean() - (1 - y.mean()) * pt / (1 - pt))
    dc = decision_curve(y, p)
    assert (dc["treat_none"] == 0).all()
    # treating everyone is what the model does below its smallest prediction
    low = dc["threshold"] <= p.min()
    assert np.allclose(dc.loc[low, "net_benefit"], dc.loc[low, "treat_all"])
    with pytest.raises(ValueError, match="must lie in"):
        net_benefit(y, p, [0.0])


def test_calibration_of_a_calibrated_model():
    rng = np.random.default_rng(1)
    p = expit(rng.normal(-0.3, 1.2, 40000))
    y = (rng.random(p.size) < p).astype(int)
    cal = calibration(y, p)
    assert cal.slope == pytest.approx(1.0, abs=0.05)
    assert cal.intercept == pytest.approx(0.0, abs=0.04)
    assert cal.brier == pytest.approx(np.mean((p - y) ** 2), abs=1e-12) == brier_score(y, p)
    assert np.allclose(cal.curve["observed"], cal.curve["mean_predicted"], atol=0.03)
    # over-confident predictions: slope < 1, matching an unpenalised logistic fit
    q = expit(2.0 * logit(p))
    ref = LogisticRegression(C=np.inf, tol=1e-10, max_iter=1000).fit(logit(q)[:, None], y)
    c2 = calibration(y, q)
    assert c2.slope == pytest.approx(ref.coef_[0, 0], abs=1e-5) and c2.slope == pytest.approx(0.5, abs=0.03)


def test_threshold_metrics_hand_counts():
    y = np.array([1, 1, 1, 0, 0, 0, 0, 1])
    s = np.array([0.9, 0.6, 0.2, 0.7, 0.1, 0.3, 0.5, 0.5])
    m = threshold_metrics(y, s, 0.5)                   # predicted: 1 1 0 1 0 0 1 1
    assert (m["tp"], m["fp"], m["tn"], m["fn"]) == (3, 2, 2, 1)
    assert m["sensitivity"] == 0.75 and m["specificity"] == 0.5 and m["ppv"] == 0.6
    assert m["npv"] == pytest.approx(2 / 3) and m["accuracy"] == 5 / 8


def _scores(seed=0):
    rng = np.random.default_rng(seed)
    n = 400
    center = rng.choice(["A", "B", "C"], n)
    split = np.where(center != "A", "external", np.where(rng.random(n) < 0.7, "train", "internal"))
    y = (rng.random(n) < 0.4).astype(int)
    rows = []
    for h, k in (("clinical", 0.5), ("dltr", 1.0), ("dltr_mlp", 1.5)):
        s = expit(k * (y - 0.4) * 2 + rng.normal(size=n))
        cut = 0.5 + 0.01 * k
        rows.append(pd.DataFrame({"patient_id": [f"P{i:03d}" for i in range(n)], "center": center, "split": split,
                                  "head": h, "head_version": "v", "score": s, "cutoff": cut,
                                  "predicted": (s >= cut).astype(np.int8), "label": y}))
    d = pd.concat(rows, ignore_index=True)
    d.loc[d["patient_id"] == "P000", "label"] = pd.NA        # unlabelled rows are left out
    return d


def test_evaluate_scores_uses_training_cutoff_and_delong():
    sc = _scores()
    res = evaluate_scores(sc)
    assert set(res.metrics["evaluation_group"]) == {"training", "internal", "external B", "external C"}
    sub = sc[(sc["head"] == "dltr") & (sc["center"] == "B") & sc["label"].notna()]
    y, s = sub["label"].astype(int).to_numpy(), sub["score"].to_numpy()
    row = res.metrics[(res.metrics["head"] == "dltr") & (res.metrics["evaluation_group"] == "external B")].iloc[0]
    d = delong_auc(y, s)
    assert (row["auc"], row["ci_low"], row["ci_high"]) == pytest.approx((d.auc, d.ci_low, d.ci_high), abs=1e-12)
    assert row["sensitivity"] == pytest.approx(np.mean(s[y == 1] >= 0.51))      # the fixed cutoff, not refitted
    assert row["n"] == len(sub)
    mlp = sc[(sc["head"] == "dltr_mlp") & (sc["center"] == "B") & sc["label"].notna()]
    t = delong_test(y, mlp["score"].to_numpy(), s)
    drow = res.delong[(res.delong["evaluation_group"] == "external B") & (res.delong["head1"] == "dltr")
                      & (res.delong["head2"] == "dltr_mlp")].iloc[0]
    assert drow["p_value"] == pytest.approx(t.p_value, abs=1e-12)
    assert drow["z"] == pytest.approx(-t.z, abs=1e-12)
    table = paper_table(res.metrics)
    assert table.loc["DLTR", "external B"] == f"{d.auc:.3f} [{d.ci_low:.3f}-{d.ci_high:.3f}]"
    assert list(table.index) == ["Clinical", "DLTR", "DLTR_MLP"]


def test_figures_are_written_and_decode(tmp_path):
    import matplotlib.image as mpimg

    from analysis.plots import save_evaluation_figures

    sc = _scores(1)
    paths = save_evaluation_figures(sc, evaluate_scores(sc), tmp_path)
    names = sorted(p.name for p in paths)
    assert "roc_external_b.png" in names and "decision_curve_training.png" in names and len(names) == 12
    img = mpimg.imread(tmp_path / "roc_internal.png")
    assert img.shape[0] > 100 and img.shape[1] > 100 and img.std() > 0


# --- end to end through the feature store -------------------------------------------------------
# Features here are NOT the encoder's: they are a noisy random projection of the generator's latent
# traits (truth/patients.csv), published with store.publish, so that the heads can be tested without
# training an encoder. The demo test wires the real pipeline features.

def _tiny_store(cohort, tmp_path):
    from features import FeatureStore

    store = FeatureStore(tmp_path / "store")
    store.add_cohort(cohort.cohort)
    return store, cohort


def _truth_features(cohort, d: int = 32, seed: int = 0):
    import pyarrow as pa

    truth = pd.read_csv(cohort.truth / "patients.csv")
    clin = pd.read_csv(cohort.cohort / "clinical.csv")[["patient_id", "center"]]
    truth = clin.merge(truth, on="patient_id", how="inner", suffixes=("", "_truth"))
    num = truth.select_dtypes("number")
    traits = [c for c in num.columns if any(k in c.lower() for k in ("image", "img", "imaging"))] or list(num.columns)
    rng = np.random.default_rng(seed)
    z = (num[traits] - num[traits].mean()) / num[traits].std().replace(0, 1)
    emb = (z.to_numpy() @ rng.normal(size=(len(traits), d)) + rng.normal(size=(len(truth), d))).astype(np.float32)
    n = len(truth)
    table = pa.table({
        "patient_id": truth["patient_id"].astype(str), "center": truth["center"].astype(str),
        "phases": pa.array([["arterial"]] * n, pa.list_(pa.string())),
        "roi_box": pa.array([[0, 0, 0, 1, 1, 1]] * n, pa.list_(pa.int32(), 6)),
        "input_checksum": [f"truth-{p}" for p in truth["patient_id"]],
        "embedding": pa.FixedSizeListArray.from_arrays(pa.array(emb.ravel(), pa.float32()), d),
    })
    return table, traits


@pytest.mark.slow
def test_train_heads_and_evaluate_through_the_store(tiny_cohort, tmp_path):
    from analysis.evaluation import EvaluateConfig, evaluate
    from models.heads import HeadRegistry, HeadsConfig, train_heads

    store, cohort = _tiny_store(tiny_cohort, tmp_path)
    table, traits = _truth_features(cohort)
    store.publish("dltr", table, producer="test-truth-projection", lineage={"traits": traits})
    res = train_heads(store, HeadsConfig(feature_set="dltr", seed=0, fusion="readout", clinical_bootstrap=10))  # no encoder made these
    reg = HeadRegistry(store.root)
    meta = reg.meta("dltr_mlp")
    assert meta["lineage"]["frame_row_hash"] and meta["lineage"]["feature_set_version"]
    ev = evaluate(store, EvaluateConfig(bootstrap=50), out=tmp_path / "out")
    scores = pd.DataFrame(store.table("scores").to_pandas())
    assert set(scores["head"]) == {"clinical", "dltr", "dltr_mlp", "xgb_fusion"}
    # each head's rows carry the one cutoff registered with it (Youden on the out-of-fold scores of the
    # training rows, models.heads.train_heads; so it need not split the in-sample training scores)
    for h, d in scores.groupby("head"):
        cutoff = d["cutoff"].unique()
        assert cutoff.size == 1 and cutoff[0] == reg.meta(h)["cutoff"], h
        assert np.array_equal(d["predicted"].to_numpy(), (d["score"] >= cutoff[0]).astype(np.int8).to_numpy()), h
    m = store.table("eval_metrics").to_pandas()
    assert np.allclose(np.sort(m["auc"].to_numpy()), np.sort(ev.metrics["auc"].to_numpy()), equal_nan=True)
    assert (tmp_path / "out" / "model_comparison.md").read_text().count("|") > 10
    assert res.versions["dltr_mlp"] == reg.latest("dltr_mlp")
    _check_oracle(cohort, ev.metrics)


def _oracle_aucs(obj, center=None, out=None):
    """{center: oracle AUC} from truth/centers.json, whatever its nesting (a dict per center or a list)."""
    import json as _json

    out = {} if out is None else out
    if isinstance(obj, str):
        obj = _json.loads(obj)
    if isinstance(obj, dict):
        c = obj.get("center", center)
        for k, v in obj.items():
            if isinstance(v, (int, float)) and k.lower() == "oracle_auc" and c is not None:
                out[str(c)] = float(v)
            elif isinstance(v, (dict, list)):
                _oracle_aucs(v, k if isinstance(v, dict) and c is None else c, out)
    elif isinstance(obj, list):
        for v in obj:
            _oracle_aucs(v, center, out)
    return out


def _check_oracle(cohort, metrics):
    """Stated margin: DLTR_MLP's external AUC >= oracle AUC - (2 DeLong SE + 0.05) per external center
    (the tiny cohort is small; the margin scales with its sampling error)."""
    path = cohort.truth / "centers.json"
    if not path.exists():
        return
    oracle = _oracle_aucs(path.read_text())
    for center, o in oracle.items():
        row = metrics[(metrics["head"] == "dltr_mlp") & (metrics["evaluation_group"] == f"external {center}")]
        if row.empty or not np.isfinite(row["auc"].iloc[0]):
            continue
        se = float(np.sqrt(row["auc_variance"].iloc[0]))
        assert row["auc"].iloc[0] >= o - (2 * se + 0.05), (center, o, row["auc"].iloc[0])
