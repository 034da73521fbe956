"""Issue #16: cross-fitted heads, the validity benchmark's statistics, and a bitwise-reproducible pipeline."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy import stats
from scipy.special import expit
from sklearn.metrics import roc_auc_score

from models.heads import CrossFit, fit_heads


def _frame(n=240, d=12, seed=0):
    rng = np.random.default_rng(seed)
    t = rng.normal(size=n)
    y = (rng.random(n) < expit(1.5 * t)).astype(int)
    split = np.where(np.arange(n) < n // 2, "train", np.where(np.arange(n) < 3 * n // 4, "internal", "external"))
    df = pd.DataFrame({"patient_id": [f"P{i:03d}" for i in range(n)], "center": np.where(split == "external", "B", "A"),
                       "split": split, "label": y, "age": rng.normal(60, 10, n),
                       "afp": np.exp(4 - 0.8 * t + rng.normal(0, 1, n))})
    emb = (t[:, None] * rng.normal(size=(1, d)) + rng.normal(size=(n, d))).astype(np.float32)
    return df, emb, t


def test_cross_fitted_heads_never_read_the_training_rows_embedding():
    """With a cross-fitting record, what a head learns depends on the training rows' out-of-fold scores only:
    scrambling those rows' (in-sample) embedding leaves every fitted head identical, and the training rows'
    deep block is exactly the out-of-fold matrix while other rows get the refit read-out."""
    df, emb, t = _frame()
    rng = np.random.default_rng(1)
    tr = (df["split"] == "train").to_numpy()
    w, b = rng.normal(size=(3, emb.shape[1])), rng.normal(size=3)
    oof = np.column_stack([t[tr] + rng.normal(0, 0.5, tr.sum()), rng.normal(size=(tr.sum(), 2))])
    cf = CrossFit(df.loc[tr, "patient_id"].to_numpy(), oof, w, b)
    deep, hit = cf.deep(df["patient_id"], emb)
    np.testing.assert_array_equal(hit, tr)
    np.testing.assert_allclose(deep[tr], oof)
    np.testing.assert_allclose(deep[~tr], emb[~tr].astype(np.float64) @ w.T + b)
    a = fit_heads(df, emb, ["age", "afp"], seed=0, crossfit=cf, heads=("clinical", "dltr", "dltr_mlp"))
    scrambled = emb.copy()
    scrambled[tr] = rng.normal(size=(tr.sum(), emb.shape[1]))
    c = fit_heads(df, scrambled, ["age", "afp"], seed=0, crossfit=cf, heads=("clinical", "dltr", "dltr_mlp"))
    np.testing.assert_array_equal(a["dltr"].estimator.coef_, c["dltr"].estimator.coef_)
    for k, v in a["dltr_mlp"].estimator.state_.items():
        np.testing.assert_array_equal(v, c["dltr_mlp"].estimator.state_[k])
    # and the heads score new rows through the refit read-out of the embedding
    p = a["dltr"].predict_proba_frame(df[~tr], emb[~tr])
    assert roc_auc_score(df.loc[~tr, "label"], p) > 0.65


def test_fold_ensemble_rows_replace_only_the_recorded_non_training_rows():
    df, emb, t = _frame(n=40)
    rng = np.random.default_rng(3)
    tr = (df["split"] == "train").to_numpy()
    w, b = rng.normal(size=(2, emb.shape[1])), rng.normal(size=2)
    oof = rng.normal(size=(tr.sum(), 2))
    ens_ids = df.loc[~tr, "patient_id"].to_numpy()[:-3]    # the last three rows came after the encoder
    ens = rng.normal(size=(len(ens_ids), 2))
    cf = CrossFit(df.loc[tr, "patient_id"].to_numpy(), oof, w, b, ens_ids, ens)
    refit = emb.astype(np.float64) @ w.T + b
    deep, hit = cf.deep(df["patient_id"], emb, rows="fold_ensemble")
    np.testing.assert_array_equal(hit, tr)
    np.testing.assert_allclose(deep[tr], oof)
    np.testing.assert_allclose(deep[~tr][:-3], ens)
    np.testing.assert_allclose(deep[~tr][-3:], refit[~tr][-3:])
    np.testing.assert_allclose(cf.deep(df["patient_id"], emb)[0][~tr], refit[~tr])
    from dltr.core.exceptions import ModelError

    with pytest.raises(ModelError, match="fold_ensemble"):
        CrossFit(cf.patient_id, oof, w, b).deep(df["patient_id"], emb, rows="fold_ensemble")


def test_clinical_selection_all_keeps_every_declared_predictor_and_reports_stability():
    from models.heads import ClinicalModel

    df, _, t = _frame(n=160)
    rng = np.random.default_rng(4)
    X = df[["age", "afp"]].assign(noise=rng.normal(size=len(df)), noise2=rng.normal(size=len(df)))
    y = df["label"].to_numpy()
    aic = ClinicalModel(n_bootstrap=20, seed=0).fit(X, y)
    every = ClinicalModel(selection="all", n_bootstrap=20, seed=0).fit(X, y)
    assert every.selected_ == ["age", "afp", "noise", "noise2"] and len(aic.selected_) < 4
    assert every.inclusion_ == aic.inclusion_   # stability of the AIC selection, reported either way
    assert every.inclusion_["afp"] > max(every.inclusion_["noise"], every.inclusion_["noise2"])
    assert np.isfinite(every.summary_[["or_ci_low", "or_ci_high"]].to_numpy()).all()


def test_benchmark_statistics_against_direct_computation():
    from benchmarks.suites.validity import seed_metrics, summarise

    rng = np.random.default_rng(2)
    rows = []
    for seed in range(3):
        n = 90
        p = rng.uniform(0.05, 0.95, n)
        y = (rng.random(n) < p).astype(int)
        base = pd.DataFrame({"patient_id": [f"S{seed}-{i}" for i in range(n)], "center": np.repeat(["A", "B", "C"], 30),
                             "split": np.repeat(["train", "external", "external"], 30), "label": y, "p_true": p,
                             "pfs_days": rng.exponential(300, n), "pfs_event": rng.integers(0, 2, n), "seed": seed,
                             "encoder_cv_auc": 0.7, "cutoff": 0.5})
        for head, noise in (("dltr_mlp", 0.2 + 0.3 * (seed == 2)), ("clinical", 0.35), ("dltr", 0.5),
                            ("plain_baseline", 0.3)):
            rows.append(base.assign(head=head, score=np.clip(p + rng.normal(0, noise, n), 0.001, 0.999)))
    scores = pd.concat(rows, ignore_index=True)
    per_seed = seed_metrics(scores)
    ext = per_seed[per_seed["group"].str.startswith("external")]
    for r in ext.sample(5, random_state=0).itertuples():
        g = scores[(scores["seed"] == r.seed) & (scores["head"] == r.head) &
                   (scores["center"] == r.group.split()[-1])]
        assert r.auc == pytest.approx(roc_auc_score(g["label"], g["score"]), abs=1e-12)
        assert r.gap == pytest.approx(roc_auc_score(g["label"], g["p_true"]) - r.auc, abs=1e-12)
    summary = summarise(per_seed).set_index(["head", "group"])
    for group in ("external B", "external C"):
        ps = per_seed[per_seed["group"] == group].pivot(index="seed", columns="head", values="auc")
        row = summary.loc[("dltr_mlp", group)]
        assert row["beats_clinical"] == pytest.approx((ps["dltr_mlp"] > ps["clinical"]).mean())
        assert row["beats_plain_baseline"] == pytest.approx((ps["dltr_mlp"] > ps["plain_baseline"]).mean())
        assert row["auc_sd"] == pytest.approx(ps["dltr_mlp"].std(ddof=1))
        assert row["auc_min"] == ps["dltr_mlp"].min()
        assert row["seeds_at_floor"] == (ps["dltr_mlp"] >= 0.65).sum()
        for rival in ("clinical", "plain_baseline"):
            diff = ps["dltr_mlp"] - ps[rival]
            ci = stats.ttest_1samp(diff, 0.0).confidence_interval(0.95)
            assert row[f"minus_{rival}"] == pytest.approx((diff.mean(), ci.low, ci.high), abs=1e-12)


def test_learnable_ceiling_reads_the_traits_and_never_the_outcome_model(tmp_path):
    """trait_l2 learns from the truth's latent traits only: a trait that sets the outcome gives a held-out AUC
    near 1; ``p_true``, ``logit`` and an ``s_*`` part that set it (and nothing else does) give chance; a truth
    without trait columns gives no rows."""
    from benchmarks.suites._validity_pipeline import learnable_ceiling

    rng = np.random.default_rng(5)
    n = 300
    split = np.repeat(["train", "external"], n // 2)
    key, noise = rng.normal(size=n), rng.normal(size=(n, 3))
    rows = pd.DataFrame({"patient_id": [f"P{i}" for i in range(n)], "center": np.where(split == "train", "A", "B"),
                         "split": split, "label": (key > 0).astype(int)})
    scores = rows.assign(head="plain_baseline", score=0.5, cutoff=0.5)
    truth = rows.rename(columns={"label": "responder"}).drop(columns=["center", "split"])
    outcome = {"p_true": expit(3 * key), "logit": 3 * key, "s_img": key, "response": np.where(key > 0, "PR", "PD")}
    ext = split == "external"
    for informative, expect in ((True, (0.95, 1.0)), (False, (0.35, 0.65))):
        t = truth.assign(**outcome, z_a=key if informative else noise[:, 0], z_b=noise[:, 1], hyper=noise[:, 2])
        t.to_csv(tmp_path / "patients.csv", index=False)
        out = learnable_ceiling(tmp_path / "patients.csv", scores, 0)
        assert (out["head"] == "trait_l2").all() and len(out) == n
        auc = roc_auc_score(out.loc[ext, "label"], out.loc[ext, "score"])
        assert expect[0] <= auc <= expect[1], (informative, auc)
    truth.assign(**outcome).to_csv(tmp_path / "patients.csv", index=False)
    assert learnable_ceiling(tmp_path / "patients.csv", scores, 0).empty


def test_the_benchmark_default_is_the_encoders_and_earlier_runs_keep_their_names():
    """The suite measures the pipeline's default input (EncoderTrainConfig.roi's mask channel), the CLI trains it,
    and the method names of runs made before the default changed still name the same methods."""
    import dataclasses
    from pathlib import Path

    from benchmarks.suites._validity_pipeline import ValidityConfig
    from dltr.cli._encoder import encoder_config
    from models.training import EncoderTrainConfig

    assert EncoderTrainConfig().roi.mask_channel is True
    assert ValidityConfig().mask_channel is EncoderTrainConfig().roi.mask_channel
    store = Path("/nonexistent-store")
    assert encoder_config(store).roi.mask_channel is True
    assert encoder_config(store, mask_channel=False).roi.mask_channel is False
    on, off = ValidityConfig().method(), dataclasses.replace(ValidityConfig(), mask_channel=False).method()
    assert on == off | {"mask_channel": "true"} and "mask_channel" not in off  # as `--set mask_channel=true` wrote it
    from types import SimpleNamespace

    from benchmarks.suites.validity import config_from
    from dltr.core.exceptions import DltrError

    def given(value):
        return config_from(SimpleNamespace(options={"mask_channel": value}, quick=False, seed=0)).mask_channel

    assert given("true") is True and given("False") is False and given("0") is False
    with pytest.raises(DltrError, match="mask_channel"):
        given("ture")   # a typo is refused, not read as false


def test_the_benchmark_measures_the_default_normalisation_and_fusion():
    """The suite's default method is the pipeline's ("ratio" input, fusion on measured grid and native descriptors);
    the runs made before those defaults keep their names, and a knob value the pipeline lacks is refused before any
    stage."""
    import dataclasses
    from pathlib import Path
    from types import SimpleNamespace

    from benchmarks.suites._validity_pipeline import ValidityConfig
    from benchmarks.suites.validity import config_from
    from dltr.cli._encoder import encoder_config
    from dltr.core.exceptions import DltrError
    from models.heads import HeadsConfig
    from models.training import EncoderTrainConfig

    assert ValidityConfig().normalisation == EncoderTrainConfig().roi.normalisation == "ratio"
    assert ValidityConfig().fusion == HeadsConfig().fusion == "native"
    assert ValidityConfig().native_spacing_mm is None      # the heads' own default resolution, left out of the name
    assert "native_spacing_mm" not in ValidityConfig().method()
    assert encoder_config(Path("/nonexistent-store")).roi.normalisation == "ratio"
    assert encoder_config(Path("/nonexistent-store"), normalisation="image").roi.normalisation == "image"
    new = ValidityConfig().method()
    old = dataclasses.replace(ValidityConfig(), normalisation="image", fusion="readout").method()
    # as `--set normalisation=ratio --set fusion=descriptors` wrote them before they were the defaults
    assert new == old | {"normalisation": "ratio", "fusion": "native"} and "fusion" not in old
    earlier = dataclasses.replace(ValidityConfig(), fusion="descriptors").method()   # session 16's default
    assert earlier == new | {"fusion": "descriptors"}

    def given(**opts):
        return config_from(SimpleNamespace(options=opts, quick=False, seed=0))

    assert given(fusion="readout").fusion == "readout" and given(normalisation="zscore").normalisation == "zscore"
    with pytest.raises(DltrError, match="fusion"):
        given(fusion="descriptor")
    with pytest.raises(DltrError, match="normalisation"):
        given(normalisation="ratios")
    assert given(native_spacing_mm="5,5,8").native_spacing_mm == (5.0, 5.0, 8.0)
    with pytest.raises(DltrError, match="native_spacing_mm"):
        given(native_spacing_mm="5,5")


@pytest.mark.slow
@pytest.mark.timeout(3600)  # two whole tiny pipelines (about 3 minutes on 2 idle cores)
def test_tiny_pipeline_recomputed_from_scratch_is_bitwise_identical(tmp_path):
    """Twice from nothing (synthesise, ingest, encoder with its cross-fitting record, Ray extraction, heads,
    plain baseline, radiomics on Ray and its heads): the same encoder weights, cross-fitting record, features, head
    states and scores."""
    from benchmarks.suites._validity_pipeline import ValidityConfig, run_seed
    from dltr.core.layout import StoreLayout, encoder_crossfit, encoder_weights
    from features import FeatureStore
    from models.heads import HeadRegistry
    from pipeline.actors import kept_ray

    cfg = ValidityConfig.for_profile("tiny", candidates=("plain",), epochs=2, folds=2, extract_workers=1,
                                     ingest_workers=1)
    with kept_ray():   # one embedded Ray for both runs (as the benchmark runs its seeds)
        runs = [run_seed(tmp_path / k, cfg, 0, log=lambda _m: None) for k in ("a", "b")]
    pd.testing.assert_frame_equal(runs[0], runs[1], check_exact=True)
    stores = [next((tmp_path / k).glob("*/store")) for k in ("a", "b")]
    layouts = [StoreLayout(s) for s in stores]
    enc = [sorted(lay.encoders.iterdir()) for lay in layouts]
    assert [p.name for p in enc[0]] == [p.name for p in enc[1]] and len(enc[0]) == 1
    for f in (encoder_weights, encoder_crossfit):
        assert f(enc[0][0]).read_bytes() == f(enc[1][0]).read_bytes()
    feats = [FeatureStore(s).read("dltr").sort_by("patient_id") for s in stores]
    assert feats[0].column("embedding").equals(feats[1].column("embedding"))
    regs = [HeadRegistry(s) for s in stores]
    assert regs[0].names() == regs[1].names() and len(regs[0].names()) == 7   # the paper's 4 + 3 radiomics heads
    for name in regs[0].names():
        m0, m1 = regs[0].meta(name), regs[1].meta(name)
        assert (m0["version"], m0["head_sha256"]) == (m1["version"], m1["head_sha256"])
    assert runs[0]["score"].notna().all() and set(runs[0]["head"]) >= {"dltr_mlp", "plain_baseline"}
    _encoder_ceiling_is_the_image_oracle_on_the_encoders_folds(runs[0], stores[0], enc[0][0], cfg.folds)


def _encoder_ceiling_is_the_image_oracle_on_the_encoders_folds(run, store, encoder_dir, folds):
    """The encoder's CV ceiling is the truth's image-only score ``s_img`` scored on the folds the encoder was
    validated on: recomputed here with scikit-learn's own splitter over the store's labelled training rows, and the
    folds shown to be the encoder's (the out-of-fold response logit's AUC on each fold is the fold AUC its card
    recorded)."""
    import json

    from sklearn.model_selection import StratifiedKFold

    from dltr.core.layout import encoder_card, encoder_crossfit
    from features import FeatureStore

    clin = FeatureStore(store).table("clinical").to_pandas()
    train = clin[(clin["split"] == "train") & clin["label"].notna()].sort_values("patient_id")
    ids, y = train["patient_id"].astype(str).to_numpy(), train["label"].astype(int).to_numpy()
    truth = pd.read_csv(store.parent / "synthetic" / "truth" / "patients.csv", dtype={"patient_id": str})
    s_img = truth.set_index("patient_id").loc[ids, "s_img"].to_numpy()
    splits = list(StratifiedKFold(folds, shuffle=True, random_state=0).split(ids, y))
    expect = np.mean([roc_auc_score(y[va], s_img[va]) for _, va in splits])
    assert run["encoder_cv_ceiling"].unique().tolist() == [pytest.approx(expect, abs=1e-12)]
    card = json.loads(encoder_card(encoder_dir).read_text())
    with np.load(encoder_crossfit(encoder_dir)) as cf:
        assert cf["patient_id"].tolist() == ids.tolist()
        oof = cf["oof"][:, 0]
    recorded = card["candidates"][card["architecture"]["name"]]["folds"]
    assert [roc_auc_score(y[va], oof[va]) for _, va in splits] == pytest.approx(recorded, abs=1e-6)


def test_a_run_on_fewer_seeds_never_replaces_a_methods_results(tmp_path):
    """The results of a method keep their name; a later run of the same method whose seeds do not cover the
    stored ones writes beside them instead of over them."""
    import json

    from benchmarks.suites._validity_pipeline import ValidityConfig
    from benchmarks.suites.validity import results_name

    ten, two = ValidityConfig(seeds=tuple(range(10))), ValidityConfig(seeds=(0, 1))
    name = results_name(tmp_path, ten)
    assert name.startswith("validity-") and results_name(tmp_path, two) == name      # nothing stored yet
    (tmp_path / f"{name}.json").write_text(json.dumps({"config": ten.to_dict()}))
    assert results_name(tmp_path, ten) == name                                       # the same seeds: replaced
    assert results_name(tmp_path, ValidityConfig(seeds=tuple(range(12)))) == name    # more seeds: replaced
    beside = results_name(tmp_path, two)
    assert beside.startswith(name + "-seeds-") and beside != results_name(tmp_path, ValidityConfig(seeds=(2, 3)))
