"""Radiomics producer (pipeline.radiomics): library reference, store contract, SQL by name, resume, heads."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
REFERENCE = REPO / "tests" / "data" / "pyradiomics_breast1_reference.json"
CLASSES = ("shape", "firstorder", "glcm", "glrlm", "glszm", "gldm", "ngtdm")


def _reference() -> dict:
    return json.loads(REFERENCE.read_text())


def _breast1_settings(ref: dict):
    from pipeline.radiomics import RadiomicsSettings

    return RadiomicsSettings.from_dict({"imageType": ref["image_types"], "featureClass": {c: [] for c in CLASSES},
                                        "setting": ref["settings"], "phases": ["t1"]}, source="breast1 baseline")


@pytest.fixture(scope="module")
def breast1_store(tmp_path_factory) -> Path:
    """pyradiomics' breast1 test case as a one-patient cohort, ingested and registered (real ingest)."""
    from kit import shared_file

    from dltr.core.hashing import file_sha256
    from features import FeatureStore
    from pipeline.ingest import IngestConfig, ingest_cohort

    ref = _reference()
    src_img = shared_file("imaging/pyradiomics_breast1_image.nrrd")
    src_mask = shared_file("imaging/pyradiomics_breast1_label.nrrd")
    assert (file_sha256(src_img), file_sha256(src_mask)) == (ref["image_sha256"], ref["mask_sha256"])
    tmp = tmp_path_factory.mktemp("breast1")
    cohort = tmp / "cohort"
    (cohort / "images").mkdir(parents=True)
    shutil.copy(src_img, cohort / "images" / "image.nrrd")  # a temporary copy: symlinks out of a cohort are refused
    shutil.copy(src_mask, cohort / "images" / "label.nrrd")
    _write_csv(cohort / "manifest.csv", [{"patient_id": "BREAST1", "phase": "t1", "image": "images/image.nrrd",
                                          "mask": "images/label.nrrd", "study_date": "2020-01-01"}])
    _write_csv(cohort / "clinical.csv", [{"patient_id": "BREAST1", "center": "X", "tace_date": "2020-02-01"}])
    (cohort / "cohort.toml").write_text('name = "breast1"\nphases = ["t1"]\n')
    root = tmp / "store"
    ingest_cohort(cohort, root, IngestConfig(), executor="serial")
    FeatureStore(root).add_cohort(cohort)
    return root


def _write_csv(path: Path, rows: list[dict]) -> None:
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)


def test_breast1_through_the_store_equals_pyradiomics_baseline(breast1_store):
    """Ingest (canonical frame) -> producer -> published version -> SQL long view: every one of the 107
    baseline features of pyradiomics' breast1 case to 1e-6 relative (the library's own tests allow 3 %)."""
    from features import FeatureStore
    from pipeline.radiomics import RadiomicsConfig, extract_radiomics

    ref = _reference()
    rep = extract_radiomics(breast1_store, _breast1_settings(ref), RadiomicsConfig(backend="local"))
    assert rep.status == "published" and rep.n_computed == 1 and rep.dim == len(ref["values"])
    store = FeatureStore(breast1_store)
    rows = store.sql("SELECT phase, image_type, feature, value FROM radiomics_long WHERE patient_id = 'BREAST1'")
    got = {f"{t}_{f}": v for p, t, f, v in zip(*(rows.column(c).to_pylist() for c in rows.column_names[:4]),
                                                strict=True) if p == "t1"}
    assert sorted(got) == sorted(ref["values"])
    names = sorted(ref["values"])
    want = np.array([ref["values"][n] for n in names])
    have = np.array([got[n] for n in names])
    rel = np.abs(have - want) / np.maximum(np.abs(want), 1e-300)
    assert rel.max() < 1e-6, names[int(rel.argmax())]
    # the lineage records the recipe's hash and the library
    v = store.resolve("radiomics")
    assert v.lineage["preprocess_hash"] == _breast1_settings(ref).content_hash()
    assert v.lineage["library"] == "pyradiomics==3.0.1" and v.producer == "pipeline.radiomics"


# -- a three-center store (the ingest test cohort: NIfTI, permuted NIfTI, DICOM + NRRD mask) ----------------
GLCM_SETTINGS = {"phases": ["arterial", "portal"], "imageType": {"Original": {}},
                 "featureClass": {"firstorder": [], "glcm": []},
                 "setting": {"normalize": True, "normalizeScale": 100, "binWidth": 10, "voxelArrayShift": 300,
                             "label": 1}}


def _env() -> dict[str, str]:
    import os

    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    return env


@pytest.fixture(scope="module")
def three_center(tmp_path_factory):
    """(cohort, store root, settings file): 6 patients in centers A, B, C, ingested and registered."""
    from kit.images import image_cohort

    from features import FeatureStore
    from pipeline.ingest import IngestConfig, ingest_cohort

    tmp = tmp_path_factory.mktemp("rstore")
    cohort, _ = image_cohort(tmp / "cohort", per_center=2, seed=11)
    root = tmp / "store"
    ingest_cohort(cohort, root, IngestConfig(), executor="serial")
    FeatureStore(root).add_cohort(cohort)
    settings = tmp / "glcm.yaml"
    import yaml

    settings.write_text(yaml.safe_dump(GLCM_SETTINGS))
    return cohort, root, settings


@pytest.fixture(scope="module")
def published(three_center, tmp_path_factory) -> Path:
    from pipeline.radiomics import RadiomicsConfig, extract_radiomics

    _, root, settings = three_center
    dest = tmp_path_factory.mktemp("published") / "store"
    shutil.copytree(root, dest)
    rep = extract_radiomics(dest, settings, RadiomicsConfig(backend="local", batch_size=2))
    assert rep.status == "published" and rep.n_computed == 6, rep.summary()
    return dest


def test_sql_by_feature_name_equals_pyradiomics_on_the_source_files(three_center, published):
    """``radiomics_long WHERE feature LIKE 'glcm%'`` gives, per patient and phase, pyradiomics' own values on
    the cohort's source files read by SimpleITK (its frame, not the store's canonical one)."""
    import SimpleITK as sitk

    from features import FeatureStore
    from pipeline.radiomics import extractor, load_settings

    cohort, _, settings = three_center
    rows = FeatureStore(published).sql(
        "SELECT patient_id, phase, feature, value FROM radiomics_long WHERE feature LIKE 'glcm%' "
        "ORDER BY patient_id, phase, feature").to_pylist()
    got = {(r["patient_id"], r["phase"], r["feature"]): r["value"] for r in rows}
    assert all(k[2].startswith("glcm_") for k in got) and len({k[0] for k in got}) == 6
    assert len({k[2] for k in got}) == 24 and len(got) == 6 * 2 * 24  # pyradiomics' 24 GLCM features
    ext = extractor(load_settings(settings))
    manifest = list(csv.DictReader(open(cohort / "manifest.csv")))
    checked = 0
    for m in manifest:
        if not m["image"].endswith((".nii", ".nii.gz")):
            continue  # the DICOM series: ingest applies per-slice rescale, SimpleITK's reader does the same
        img, mask = sitk.ReadImage(str(cohort / m["image"])), sitk.ReadImage(str(cohort / m["mask"]))
        # the mask file may lay the same grid out in another axis order: put it on the image's grid (exact)
        mask = sitk.Resample(sitk.Cast(mask > 0, sitk.sitkUInt8), img, sitk.Transform(), sitk.sitkNearestNeighbor)
        ref = {k.split("_", 1)[1]: float(v) for k, v in ext.execute(img, mask).items() if "_glcm_" in k}
        for feat, want in ref.items():
            have = got[(m["patient_id"], m["phase"], feat)]
            assert have == pytest.approx(want, rel=1e-6, abs=1e-9), (m["patient_id"], m["phase"], feat)
            checked += 1
    assert checked == 4 * 2 * 24  # centers A and B: 4 patients, 2 phases


def test_version_lineage_and_hash_follow_the_settings(three_center, published, tmp_path):
    from features import FeatureStore
    from pipeline.radiomics import load_settings

    _, _, settings = three_center
    v = FeatureStore(published).resolve("radiomics")
    s = load_settings(settings)
    assert v.lineage["preprocess_hash"] == s.content_hash() and v.lineage["phases"] == ["arterial", "portal"]
    assert v.dim == len(v.lineage["feature_names"]) == 2 * (18 + 24)  # firstorder + glcm per phase
    other = tmp_path / "bw.yaml"
    import yaml

    other.write_text(yaml.safe_dump({**GLCM_SETTINGS, "setting": {**GLCM_SETTINGS["setting"], "binWidth": 5}}))
    assert load_settings(other).content_hash() != s.content_hash()


def test_bad_settings_file_is_one_line_error(tmp_path):
    from dltr.core.exceptions import DltrError
    from pipeline.radiomics import load_settings

    bad = tmp_path / "bad.yaml"
    bad.write_text("setting:\n  binWidth: -3\n  notASetting: 1\n")
    with pytest.raises(DltrError) as e:
        load_settings(bad)
    assert str(bad) in str(e.value) and "\n" not in str(e.value)
    bad.write_text("phases: arterial\n")
    with pytest.raises(DltrError, match="phases"):
        load_settings(bad)


def test_center_effect_table_matches_the_rank_formula(published):
    """The stored Kruskal-Wallis H equals the textbook rank formula (no ties among continuous features),
    and epsilon^2 = H / (n - 1)."""
    from scipy.stats import rankdata

    from features import FeatureStore, embedding_matrix

    store = FeatureStore(published)
    ce = store.table("radiomics_center_effect").to_pandas().set_index("name")
    rows = store.read("radiomics").sort_by("patient_id")
    x = np.asarray(embedding_matrix(rows.combine_chunks()), np.float64)
    centers = np.asarray(rows.column("center").to_pylist())
    names = store.resolve("radiomics").lineage["feature_names"]
    n, checked = len(centers), 0
    for j, name in enumerate(names):
        if np.unique(x[:, j]).size < n:
            continue
        r = rankdata(x[:, j])
        h = 12 / (n * (n + 1)) * sum(r[centers == c].sum() ** 2 / (centers == c).sum() for c in set(centers)) \
            - 3 * (n + 1)
        assert ce.loc[name, "h"] == pytest.approx(h, rel=1e-9)
        assert ce.loc[name, "epsilon_squared"] == pytest.approx(h / (n - 1), rel=1e-9)
        checked += 1
    assert checked > 20 and set(ce["n_centers"]) == {3}


@pytest.mark.slow
def test_killed_after_two_staged_parts_then_resumed_on_ray(three_center, published, tmp_path):
    """SIGKILL ``dltr radiomics`` just after its 2nd staged part; nothing is published; the re-run (on Ray)
    computes only the rest and publishes the same version with the same values as an uninterrupted run."""
    import signal
    import subprocess
    import sys

    from kit.crash import catalog_check, kill_session

    from features import FeatureStore

    _, root, settings = three_center
    work = tmp_path / "store"
    shutil.copytree(root, work)
    base = [sys.executable, "-m", "dltr", "radiomics", "--store", str(work), "--settings", str(settings),
            "--batch-size", "2", "--json"]
    harness = [sys.executable, str(REPO / "tests" / "kit" / "crash.py"), "exec", "--root", str(work),
               "--kill-after", r"features/radiomics/_staging/[0-9a-f]+/part-[^/]*\.parquet$", "--nth", "2", "--"]

    def run(cmd):
        p = subprocess.Popen(cmd, cwd=REPO, env=_env(), start_new_session=True, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True)
        try:
            out, err = p.communicate(timeout=400)
        finally:
            kill_session(p.pid)
        return p.returncode, out, err

    rc, _, err = run(harness + base[1:] + ["--local"])
    assert rc == -signal.SIGKILL, err[-2000:]
    assert len(list((work / "features" / "radiomics" / "_staging").glob("*/part-*.parquet"))) == 2
    assert "radiomics" not in FeatureStore(work).feature_sets() and catalog_check(work) == []
    rc, out, err = run(base + ["--workers", "1"])
    assert rc == 0, err[-2000:]
    rep = json.loads(out)
    assert (rep["status"], rep["n_resumed"], rep["n_computed"], rep["backend"]) == ("published", 4, 2, "ray")
    a, b = FeatureStore(work), FeatureStore(published)
    assert a.resolve("radiomics").version_id == b.resolve("radiomics").version_id
    ra, rb = a.read("radiomics").sort_by("patient_id"), b.read("radiomics").sort_by("patient_id")
    assert ra.equals(rb)  # bit for bit: pyradiomics is deterministic on CPU
    assert not (work / "features" / "radiomics" / "_staging").exists() and catalog_check(work) == []


# -- heads on several feature sets ------------------------------------------------------------------------
SMALL = {"phases": ["arterial", "portal"], "imageType": {"Original": {}},
         "featureClass": {"shape": [], "firstorder": [], "glcm": []},
         "setting": {"normalize": True, "normalizeScale": 100, "binWidth": 10, "voxelArrayShift": 300, "label": 1}}


@pytest.fixture(scope="module")
def tiny_store(tiny_cohort, tmp_path_factory) -> Path:
    """The tiny synthetic cohort (50 patients, 3 centers) ingested, radiomics (shape, firstorder, GLCM of two
    phases) published, and a second, deep-like feature set ``dltr`` (an 8-d seeded projection of the label-free
    tumour size plus noise, made here as test data) published beside it; the paper's heads trained on it."""
    from features import FeatureStore
    from models.heads import HeadsConfig, train_heads
    from pipeline.ingest import IngestConfig, ingest_cohort
    from pipeline.radiomics import RadiomicsConfig, RadiomicsSettings, extract_radiomics

    root = tmp_path_factory.mktemp("tiny_radiomics") / "store"
    ingest_cohort(tiny_cohort.cohort, root, IngestConfig(), executor="serial")
    store = FeatureStore(root)
    store.add_cohort(tiny_cohort.cohort)
    rep = extract_radiomics(root, RadiomicsSettings.from_dict(SMALL), RadiomicsConfig(backend="local", batch_size=8))
    assert rep.status == "published", rep.summary()
    rows = store.read("radiomics").sort_by("patient_id")
    rng = np.random.default_rng(0)
    n = rows.num_rows
    size = np.log(np.asarray(store.table("studies").to_pandas().groupby("patient_id")["n_tumour_voxels"].first()
                             .reindex(rows.column("patient_id").to_pylist()), np.float64))
    emb = (size[:, None] * rng.normal(size=(1, 8)) + rng.normal(size=(n, 8))).astype(np.float32)
    import pyarrow as pa

    deep = rows.drop_columns(["embedding"]).append_column(
        "embedding", pa.FixedSizeListArray.from_arrays(pa.array(emb.ravel()), 8))
    store.publish("dltr", deep, producer="tests.test_radiomics", lineage={"made_by": "tiny_store fixture"})
    train_heads(store, HeadsConfig(feature_set="dltr", seed=0, fusion="readout", clinical_bootstrap=10))  # no encoder made these
    return root


def test_multi_set_heads_fit_score_and_join_the_evaluation(tiny_store, tmp_path):
    from analysis.evaluation import EvaluateConfig, evaluate
    from dltr.report import build_report
    from features import FeatureStore, multi_frame
    from models.heads import HeadRegistry, score_heads, train_multi_heads

    store = FeatureStore(tiny_store)
    res = train_multi_heads(store)
    assert list(res["versions"]) == ["radiomics", "radiomics_clinical", "deep_radiomics_clinical"]
    reg = HeadRegistry(tiny_store)
    meta = reg.meta("deep_radiomics_clinical")
    sets = {f["name"]: f["version"] for f in meta["lineage"]["feature_sets"]}
    assert sets == {"radiomics": store.resolve("radiomics").version_id, "dltr": store.resolve("dltr").version_id}
    assert meta["selection_frequency"] and all(0 < s["frequency"] <= 1 for s in meta["selection_frequency"])
    # the frame joins both sets by patient_id: each block row is that patient's row of its own set
    frame = multi_frame(store, ["radiomics", "dltr"], clinical=["age"])
    for name in ("radiomics", "dltr"):
        t = store.read(name).to_pandas().set_index("patient_id")
        for i, pid in enumerate(frame.table.column("patient_id").to_pylist()[:5]):
            assert np.array_equal(frame.blocks[name][i], np.asarray(t.loc[pid, "embedding"], np.float32))
    # rescoring (what `dltr evaluate` runs) gives the scores written at training, beside the paper's heads
    scores = store.table("scores").to_pandas()
    assert {"dltr_mlp", "radiomics", "radiomics_clinical", "deep_radiomics_clinical"} <= set(scores["head"])
    again = score_heads(store, write=False)
    key = ["head", "patient_id"]
    a = scores.sort_values(key).reset_index(drop=True)
    b = again.sort_values(key).reset_index(drop=True)
    assert a[key].equals(b[key]) and np.array_equal(a["score"].to_numpy(), b["score"].to_numpy())
    ev = evaluate(store, EvaluateConfig(figures=False), out=tiny_store / "eval")
    pairs = ev.delong[(ev.delong["head1"] == "dltr_mlp") | (ev.delong["head2"] == "dltr_mlp")]
    others = set(pairs["head1"]) | set(pairs["head2"])
    assert {"radiomics", "radiomics_clinical", "deep_radiomics_clinical"} <= others
    assert pairs["p_value"].between(0, 1).all()
    assert "Deep+radiomics+clinical" in set(ev.metrics["model"])
    # survival stratification by any of them (risk groups from its training cutoff), as the demo tabulates it
    from analysis.survival import SurvivalConfig, run_survival
    from dltr.demo._stages import survival_by_head

    surv = run_survival(store, SurvivalConfig(head="deep_radiomics_clinical"), write=False)
    assert surv.head == "deep_radiomics_clinical" and surv.head_version == res["versions"]["deep_radiomics_clinical"]
    assert len(surv.summary) >= 1 and surv.summary["n"].sum() > 0
    survival_by_head(store, ["dltr_mlp", *res["versions"]])
    by_head = store.table("survival_by_head").to_pandas()
    mine = by_head[by_head["head"] == "deep_radiomics_clinical"].reset_index(drop=True)
    assert np.allclose(mine["logrank_p"], surv.summary["logrank_p"], equal_nan=True)
    # the report shows them beside DLTR_MLP with paired DeLong P (the store's eval_delong), the radiomics
    # section, and each model's survival stratification
    _, md = build_report(tiny_store, tmp_path / "report")
    text = md.read_text()
    assert "## Radiomics" in text and "Paired DeLong P against DLTR_MLP" in text
    p_table = text.split("Paired DeLong P against DLTR_MLP")[1].split("\n\n")[1]
    assert all(name in p_table for name in ("Radiomics", "Radiomics+clinical", "Deep+radiomics+clinical"))
    row = next(ln for ln in p_table.splitlines() if ln.startswith("| Radiomics+clinical "))
    ref = ev.delong[((ev.delong["head1"] == "radiomics_clinical") | (ev.delong["head2"] == "radiomics_clinical"))
                    & ((ev.delong["head1"] == "dltr_mlp") | (ev.delong["head2"] == "dltr_mlp"))]
    assert all(f"{p:.3g}"[:4] in row for p in ref["p_value"]), (row, ref["p_value"].tolist())
    s_table = text.split("Each model's risk groups")[1].split("\n\n")[1]
    assert all(f"| {name} " in s_table for name in ("DLTR_MLP", "Radiomics", "Deep+radiomics+clinical"))
    sel = store.table("radiomics_selection").to_pandas()
    assert set(sel["head"]) == set(res["versions"]) and sel["frequency"].between(0, 1).all()
    assert sel.groupby("head")["selected"].sum().gt(0).all()


def test_multi_set_heads_never_see_a_non_training_label(tiny_store, tmp_path):
    """Flip every internal/external label and retrain: every score of every multi-set head is unchanged."""
    import pyarrow as pa

    from features import FeatureStore
    from models.heads import train_multi_heads

    copy = tmp_path / "store"
    shutil.copytree(tiny_store, copy)
    store = FeatureStore(copy)
    clin = store.table("clinical").to_pandas()
    other = clin["split"] != "train"
    assert other.sum() > 10 and clin.loc[other, "label"].notna().sum() > 10
    clin.loc[other, "label"] = 1 - clin.loc[other, "label"]
    store.write_table("clinical", pa.Table.from_pandas(clin, preserve_index=False, schema=store.table("clinical").schema),
                      lineage=store.describe("clinical")["lineage"])  # keeps cohort.toml's declared predictors
    a = train_multi_heads(FeatureStore(tiny_store))["scores"]
    b = train_multi_heads(store)["scores"]
    assert np.array_equal(a["score"].to_numpy(), b["score"].to_numpy())
    assert not np.array_equal(a["label"].to_numpy(), b["label"].to_numpy())  # the flip did reach the frame


def test_selection_inside_cv_keeps_cv_auc_honest_on_noise():
    """Pure-noise features (n = 80, p = 600): with the top-10 filter refitted inside each fold the CV AUC stays
    near 0.5; the same filter fitted once on all rows before CV (the leak) inflates it (Ambroise & McLachlan,
    PNAS 2002) - the check has the power to see the leak."""
    from scipy.stats import rankdata
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import roc_auc_score
    from sklearn.model_selection import StratifiedKFold

    from models.heads import SelectedLogistic

    honest, leaky = [], []
    for seed in range(3):
        rng = np.random.default_rng(seed)
        x, y = rng.normal(size=(80, 600)), rng.permutation(np.r_[np.zeros(40, int), np.ones(40, int)])
        honest.append(SelectedLogistic(max_features=10, Cs=(1.0,), seed=seed).fit(x, y).cv_auc_)
        ranks = rankdata(x, axis=0)
        r = np.abs((ranks[y == 1].sum(0) - 40 * 41 / 2) / (40 * 40) - 0.5)  # univariable AUC - 0.5
        top = np.argsort(-r)[:10]
        aucs = [roc_auc_score(y[va], LogisticRegression(l1_ratio=1.0, C=1.0, solver="liblinear")
                              .fit(x[tr][:, top], y[tr]).decision_function(x[va][:, top]))
                for tr, va in StratifiedKFold(5, shuffle=True, random_state=seed).split(x, y)]
        leaky.append(np.mean(aucs))
    assert abs(np.mean(honest) - 0.5) < 0.12 and np.mean(leaky) > 0.75, (honest, leaky)


def _publish_deep(store, emb: np.ndarray, lineage: dict) -> str:
    """Publish ``emb`` (rows in the radiomics set's patient order) as a new version of ``dltr``."""
    import pyarrow as pa

    rows = store.read("radiomics").sort_by("patient_id")
    t = rows.drop_columns(["embedding"]).append_column(
        "embedding", pa.FixedSizeListArray.from_arrays(pa.array(emb.astype(np.float32).ravel()), emb.shape[1]))
    return store.publish("dltr", t, producer="tests.test_radiomics", lineage=lineage).version_id


def test_fused_head_deep_block_is_cross_fitted(tiny_store, tmp_path):
    """Deep+radiomics+clinical reads the encoder's cross-fitting record as DLTR_MLP does: the training rows'
    deep block is crossfit.npz's out-of-fold read-out, every other row the refit read-out of its embedding;
    scrambling the training rows' stored embeddings (what an in-sample read would see) changes nothing;
    an encoder without a record is refused."""
    from dltr.core.exceptions import ModelError
    from dltr.core.layout import StoreLayout, encoder_card, encoder_crossfit
    from features import FeatureStore, multi_frame
    from models.heads import HeadRegistry, MultiHeadsConfig, head_blocks, score_multi_heads, train_multi_heads

    copy = tmp_path / "store"
    shutil.copytree(tiny_store, copy)
    store = FeatureStore(copy)
    ids = store.read("radiomics").sort_by("patient_id").column("patient_id").to_pylist()
    emb = np.asarray(store.read("dltr").to_pandas().set_index("patient_id").loc[ids, "embedding"].tolist())
    clin = store.table("clinical").to_pandas().set_index("patient_id").loc[ids]
    train = (clin["split"] == "train").to_numpy()
    rng = np.random.default_rng(5)
    oof, w, b = rng.normal(size=(int(train.sum()), 3)), rng.normal(size=(3, emb.shape[1])), rng.normal(size=3)
    folder = StoreLayout.of(store).encoder("cf0")
    folder.mkdir(parents=True)
    np.savez(encoder_crossfit(folder), patient_id=np.asarray(ids)[train].astype(np.str_), oof=oof, weight=w, bias=b)
    encoder_card(folder).write_text(json.dumps({"crossfit": {"readout": ["logit", "d1", "d2"]}}))
    v1 = _publish_deep(store, emb, {"encoder_card_hash": "cf0", "variant": 1})
    frame = multi_frame(store, ["radiomics", f"dltr@{v1}"], clinical=["age"])
    got = head_blocks(store, frame, "dltr").blocks["dltr"]
    pos = {p: i for i, p in enumerate(ids)}
    fr_ids = frame.table.column("patient_id").to_pylist()
    oof_by_id = dict(zip(np.asarray(ids)[train], oof, strict=True))
    for i, p in enumerate(fr_ids):
        want = oof_by_id[p] if p in oof_by_id else emb[pos[p]].astype(np.float32).astype(np.float64) @ w.T + b
        assert np.allclose(got[i], want, rtol=1e-12, atol=1e-9), p
    cfg = MultiHeadsConfig(deep=f"dltr@{v1}", heads=("deep_radiomics_clinical",))
    a = train_multi_heads(store, cfg)
    again = score_multi_heads(store, ["deep_radiomics_clinical"])[0]  # `dltr evaluate` rescoring: the same blocks
    assert np.array_equal(again["score"].to_numpy(), a["scores"]["score"].to_numpy())
    meta = HeadRegistry(copy).meta("deep_radiomics_clinical")
    assert meta["lineage"]["oof_training_rows"] == {"dltr": int(train.sum())}
    sel = store.table("radiomics_selection").to_pandas()
    assert {"dltr/logit", "dltr/d1", "dltr/d2"} <= set(sel["feature"])
    scrambled = emb.copy()
    scrambled[train] = rng.normal(size=(int(train.sum()), emb.shape[1])) * 100
    v2 = _publish_deep(store, scrambled, {"encoder_card_hash": "cf0", "variant": 2})
    bb = train_multi_heads(store, MultiHeadsConfig(deep=f"dltr@{v2}", heads=("deep_radiomics_clinical",)))
    assert np.array_equal(a["scores"]["score"].to_numpy(), bb["scores"]["score"].to_numpy())
    # without the record (an encoder trained on the rows, no out-of-fold values): a one-line refusal
    v3 = _publish_deep(store, emb, {"encoder_card_hash": "nocf", "variant": 3})
    with pytest.raises(ModelError, match="crossfit.npz.*in-sample"):
        train_multi_heads(store, MultiHeadsConfig(deep=f"dltr@{v3}", heads=("deep_radiomics_clinical",)))


def test_validity_delong_pairs_patients_by_id_per_seed_and_group():
    """The validity hook's paired DeLong against DLTR_MLP matches patients by id (row order does not matter) and
    equals the test on the aligned vectors; a head identical to DLTR_MLP gives difference 0, P 1."""
    import pandas as pd

    from analysis.roc import delong_test
    from benchmarks.suites._validity_radiomics import delong_summary, delong_vs_primary
    from benchmarks.suites.validity import _groups

    rng = np.random.default_rng(3)
    n = 90
    ids = np.array([f"p{i:03d}" for i in range(n)])
    y = rng.integers(0, 2, n)
    split = np.array(["train", "internal", "external"])[np.arange(n) % 3]
    center = np.where(split == "external", np.array(["B", "C"])[np.arange(n) % 2], "A")
    mlp, rad = y + rng.normal(0, 1, n), y + rng.normal(0, 2, n)
    frames = [pd.DataFrame({"patient_id": ids, "center": center, "split": split, "head": h, "score": s,
                            "cutoff": 0.5, "label": y, "seed": 0}).sample(frac=1, random_state=k)
              for k, (h, s) in enumerate((("dltr_mlp", mlp), ("radiomics", rad), ("same", mlp)))]
    d = delong_vs_primary(pd.concat(frames, ignore_index=True), _groups)
    ext_b = (split == "external") & (center == "B")
    want = delong_test(y[ext_b], rad[ext_b], mlp[ext_b])
    got = d[(d["head"] == "radiomics") & (d["group"] == "external B")].iloc[0]
    assert got["n"] == ext_b.sum() and np.isclose(got["p_value"], want.p_value, rtol=1e-12)
    same = d[d["head"] == "same"]
    assert len(same) == 4 and (same["difference"] == 0).all() and (same["p_value"] == 1).all()
    summ = delong_summary(d)
    assert set(summ["group"]) == {"training", "internal", "external B", "external C"}


def test_multi_set_heads_refuse_an_undeclared_predictor(tiny_store):
    """An outcome column (pfs_days) named as a clinical predictor is refused before any fit, as by train_heads."""
    from dltr.core.exceptions import ModelError
    from features import FeatureStore
    from models.heads import MultiHeadsConfig, train_multi_heads

    with pytest.raises(ModelError, match=r"\['pfs_days'\] are not in cohort.toml predictors"):
        train_multi_heads(FeatureStore(tiny_store), MultiHeadsConfig(clinical=("age", "pfs_days")))
