"""Survival stratification against lifelines called directly (independent code), a hand-computed
Kaplan-Meier example, and the rule that the cutoff comes from training rows only."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from lifelines import CoxPHFitter, KaplanMeierFitter
from lifelines.statistics import logrank_test
from lifelines.utils import concordance_index
from scipy.stats import norm

from analysis.survival import SurvivalConfig, at_risk_counts, fixed_cutoff, km_frame, survival_analysis
from dltr.core.exceptions import ApproximationWarning, StoreError


def _frame(seed: int = 0, n: int = 240) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    center = rng.choice(["A", "B", "C"], n, p=[0.5, 0.25, 0.25])
    split = np.where(center == "A", np.where(rng.random(n) < 0.7, "train", "internal"), "external")
    score = rng.beta(2, 2, n)
    label = (rng.random(n) < score).astype(float)
    t = rng.exponential(300 * np.exp(1.2 * (score - 0.5)))
    c = rng.uniform(100, 900, n)
    df = pd.DataFrame({"patient_id": [f"P{i:04d}" for i in range(n)], "center": center, "split": split,
                       "score": score, "label": label, "pfs_days": np.minimum(t, c).round(),
                       "pfs_event": (t <= c).astype(int)})
    return df.assign(cutoff=0.47)


def test_statistics_equal_lifelines_called_directly():
    df = _frame()
    res = survival_analysis(df, SurvivalConfig(cutoff="scores"))
    assert res.cutoff == 0.47
    groups = {"training": df.split == "train", "internal": df.split == "internal",
               "external B": (df.split == "external") & (df.center == "B"),
               "external C": (df.split == "external") & (df.center == "C"),
               "external (pooled)": df.split == "external"}
    assert list(res.summary["evaluation_group"]) == list(groups)
    for name, mask in groups.items():
        d = df[mask]
        hi = (d.score < 0.47).to_numpy()
        row = res.summary.set_index("evaluation_group").loc[name]
        assert row["n_high"] == hi.sum() and row["n_low"] == (~hi).sum()
        lr = logrank_test(d.pfs_days[hi], d.pfs_days[~hi], d.pfs_event[hi], d.pfs_event[~hi])
        assert row["logrank_stat"] == pytest.approx(lr.test_statistic, rel=1e-10)
        assert row["logrank_p"] == pytest.approx(lr.p_value, rel=1e-10)
        x = pd.DataFrame({"T": d.pfs_days.to_numpy(), "E": d.pfs_event.to_numpy(), "g": hi.astype(int)})
        cph = CoxPHFitter().fit(x, "T", "E")
        assert row["hr_group"] == pytest.approx(math.exp(cph.params_["g"]), rel=1e-6)
        lo, up = np.exp(cph.confidence_intervals_.loc["g"].to_numpy())
        assert row["hr_group_lower"] == pytest.approx(lo, rel=1e-6)
        assert row["hr_group_upper"] == pytest.approx(up, rel=1e-6)
        xs = pd.DataFrame({"T": x["T"], "E": x["E"], "s10": d.score.to_numpy() * 10})   # per 0.1 of score
        assert row["hr_score"] == pytest.approx(math.exp(CoxPHFitter().fit(xs, "T", "E").params_["s10"]), rel=1e-6)
        assert row["c_index"] == pytest.approx(concordance_index(d.pfs_days, d.score, d.pfs_event), rel=1e-12)
        km = KaplanMeierFitter().fit(d.pfs_days[~hi], d.pfs_event[~hi])
        med = km.median_survival_time_
        assert (math.isnan(row["median_pfs_low"]) and math.isinf(med)) or row["median_pfs_low"] == med
        assert 0 <= row["ph_p_group"] <= 1
    # the planted effect (higher score, longer PFS) shows where it should
    tr = res.summary.set_index("evaluation_group").loc["training"]
    assert tr["hr_score"] < 1 and tr["c_index"] > 0.5
    km = res.km
    assert set(km["evaluation_group"]) == set(groups) and set(km["group"]) == {"low", "high"}


def test_kaplan_meier_by_hand():
    t = np.array([1, 2, 2, 3, 4, 5], float)
    e = np.array([1, 1, 0, 1, 0, 1])
    km = km_frame(t, e).set_index("time")
    # S(1)=5/6, S(2)=5/6*4/5, S(3)=S(2)*2/3, S(4)=S(3) (censored), S(5)=0
    hand = {0: 1.0, 1: 5 / 6, 2: 4 / 6, 3: 4 / 6 * 2 / 3, 4: 4 / 6 * 2 / 3, 5: 0.0}
    for k, v in hand.items():
        assert km.loc[k, "survival"] == pytest.approx(v, abs=1e-12)
    assert list(km["at_risk"]) == [6, 6, 5, 3, 2, 1]
    # exponential Greenwood band: log(-log S) +/- z * sqrt(sum d/(n(n-d))) / |log S|
    z = norm.ppf(0.975)
    for time, cum in ((1, 1 / 30), (2, 1 / 30 + 1 / 20), (3, 1 / 30 + 1 / 20 + 1 / 6)):
        s = hand[time]
        se = math.sqrt(cum) / abs(math.log(s))
        lo, hi = s ** math.exp(z * se), s ** math.exp(-z * se)
        assert km.loc[time, "ci_lower"] == pytest.approx(lo, rel=1e-9)
        assert km.loc[time, "ci_upper"] == pytest.approx(hi, rel=1e-9)
    assert at_risk_counts(km.reset_index(), [0, 2, 2.5, 6]) == [6, 5, 3, 0]


def test_cutoff_comes_from_training_rows_only():
    df = _frame(1)
    test_rows = df.index[df.split != "train"]
    train_rows = df.index[df.split == "train"]
    for method in ("youden", "median", "scores"):
        base = fixed_cutoff(df, method)
        moved = df.copy()
        moved.loc[test_rows, "score"] = 1 - moved.loc[test_rows, "score"]
        moved.loc[test_rows, "label"] = 1 - moved.loc[test_rows, "label"]
        moved.loc[test_rows, "cutoff"] = 0.99
        assert fixed_cutoff(moved, method) == base
    # ... while a training row does move it (the check is not vacuous)
    moved = df.copy()
    moved.loc[train_rows[: len(train_rows) // 2], "score"] += 0.3
    assert fixed_cutoff(moved, "median") != fixed_cutoff(df, "median")
    assert fixed_cutoff(moved, "youden") != fixed_cutoff(df, "youden")
    # a Youden cutoff computed on the training rows by hand
    tr = df[df.split == "train"]
    cands = np.unique(tr.score)
    j = [((tr.score >= c) & (tr.label == 1)).sum() / (tr.label == 1).sum()
         - ((tr.score >= c) & (tr.label == 0)).sum() / (tr.label == 0).sum() for c in cands]
    assert fixed_cutoff(df, "youden") == pytest.approx(cands[int(np.argmax(j))])
    bad = df.copy()
    bad.loc[train_rows[0], "cutoff"] = 0.1
    with pytest.raises(StoreError, match="training rows carry cutoffs"):
        fixed_cutoff(bad, "scores")
    with pytest.raises(StoreError, match="split 'train'"):
        fixed_cutoff(df[df.split != "train"], "youden")


def test_single_group_cohort_warns_and_gives_nan():
    df = _frame(2)
    df.loc[df.center == "C", "score"] = 0.9         # every patient of C a predicted responder
    with pytest.warns(ApproximationWarning, match="external C"):
        res = survival_analysis(df)
    row = res.summary.set_index("evaluation_group").loc["external C"]
    assert row["n_high"] == 0 and math.isnan(row["logrank_p"]) and math.isnan(row["hr_group"])


def test_run_survival_on_a_real_store_and_cli(tmp_path):
    """Store round trip: scores + clinical tables in a real FeatureStore, tables back through SQL,
    figures written, the CLI's JSON equal to the library result."""
    import json

    import pyarrow as pa
    from typer.testing import CliRunner

    from analysis.survival import SurvivalConfig, run_survival
    from dltr.cli import app
    from features import FeatureStore

    df = _frame(3)
    store = FeatureStore(tmp_path / "store")
    store.write_table("clinical", pa.Table.from_pandas(df[["patient_id", "center", "split", "pfs_days",
                                                            "pfs_event"]], preserve_index=False))
    scores = df.drop(columns=["pfs_days", "pfs_event"]).assign(head="dltr_mlp", head_version="v1",
                                                              predicted=(df.score >= 0.47).astype("int8"))
    other = scores.assign(head="clinical", score=1 - scores.score, cutoff=0.5)
    store.write_table("scores", pa.Table.from_pandas(pd.concat([scores, other]), preserve_index=False))
    res = run_survival(store, SurvivalConfig(head="dltr_mlp"), out=tmp_path / "fig")
    direct = survival_analysis(df)
    pd.testing.assert_frame_equal(res.summary, direct.summary)
    q = store.sql("SELECT evaluation_group, logrank_p, head FROM survival_summary ORDER BY evaluation_group").to_pandas()
    exp = direct.summary.sort_values("evaluation_group")
    np.testing.assert_allclose(q["logrank_p"], exp["logrank_p"], rtol=1e-12)
    assert set(q["head"]) == {"dltr_mlp"}
    km = store.sql("SELECT count(*) AS n FROM survival_km WHERE evaluation_group = 'external B'").to_pandas()
    assert km["n"].iloc[0] == (direct.km["evaluation_group"] == "external B").sum()
    pngs = sorted(p.name for p in (tmp_path / "fig").glob("*.png"))
    assert "km_dltr_mlp_external_b.png" in pngs and len(pngs) == len(direct.summary)
    assert (tmp_path / "fig" / pngs[0]).read_bytes()[:4] == b"\x89PNG"
    out = CliRunner().invoke(app, ["survival", "--store", str(tmp_path / "store"), "--out",
                                   str(tmp_path / "fig2"), "--json"])
    assert out.exit_code == 0, out.output
    got = {c["evaluation_group"]: c for c in json.loads(out.stdout)["evaluation_groups"]}
    for r in direct.summary.to_dict("records"):
        assert got[r["evaluation_group"]]["logrank_stat"] == pytest.approx(r["logrank_stat"], rel=1e-12)
