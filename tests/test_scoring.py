"""Single-patient scoring against the batch pipeline of the same store (same versions)."""

from __future__ import annotations

import io
import json
from contextlib import redirect_stdout

import numpy as np
import pyarrow.parquet as pq
import pytest
from kit.scoring import one_patient_cohort, patients_of
from scipy.special import logit

from dltr.core.exceptions import DltrError
from dltr.scoring import RECORDS_TABLE, Scorer, predict_patient, resolve_lineage
from features import FeatureStore

pytestmark = pytest.mark.slow

# The batch path encodes patients in batches inside Ray actors, the single path one at a time; the
# float32 convolutions and MLP then differ in the last bits (observed < 1e-6 absolute).
TOL = 1e-5


def _batch(store, head: str):
    scores = pq.read_table(store / "tables" / "scores.parquet").to_pandas()
    return scores[scores["head"] == head].set_index("patient_id")


def test_batch_and_single_agree_for_every_external_patient(scoring_demo, tmp_path):
    scorer = Scorer(scoring_demo.store, "dltr_mlp", work_dir=tmp_path / "work")
    batch = _batch(scoring_demo.store, "dltr_mlp")
    fs = FeatureStore(scoring_demo.store)
    lin = scorer.lineage
    rows = fs.read(f"{lin.feature_set}@{lin.feature_set_version}").to_pandas().set_index("patient_id")
    external = patients_of(scoring_demo.cohort, "external")
    assert len(external) >= 20 and {p.split("-")[1] for p in external} == {"B", "C"}
    diffs = []
    for pid in external:
        pred = scorer.score_folder(one_patient_cohort(scoring_demo.cohort, pid, tmp_path / pid))
        ref = batch.loc[pid]
        assert ref["head_version"] == lin.head_version
        diffs.append(abs(pred.probability - float(ref["score"])))
        # the same sources went in (checksums of the phases + mask, computed independently by extraction)
        assert pred.input_checksum == rows.loc[pid, "input_checksum"]
        assert pred.cutoff == pytest.approx(float(ref["cutoff"]), abs=0)
        if abs(float(ref["score"]) - pred.cutoff) > TOL:
            assert pred.predicted == int(ref["predicted"])
    print(f"batch vs single, {len(external)} external patients: max |dp| = {max(diffs):.3g}")
    assert max(diffs) <= TOL
    assert list((tmp_path / "work").iterdir()) == []  # every temporary store was removed


def test_clinical_head_agrees_and_has_a_wald_interval(scoring_demo, tmp_path):
    scorer = Scorer(scoring_demo.store, "clinical", work_dir=tmp_path / "work")
    batch = _batch(scoring_demo.store, "clinical")
    for pid in patients_of(scoring_demo.cohort, "external")[:2]:
        pred = scorer.score_folder(one_patient_cohort(scoring_demo.cohort, pid, tmp_path / pid))
        assert pred.probability == pytest.approx(float(batch.loc[pid, "score"]), abs=1e-9)
        lo, hi = pred.interval
        assert lo <= pred.probability <= hi and lo < hi
        if 1e-12 < lo and hi < 1 - 1e-12:  # a symmetric Wald interval on the logit scale
            assert (logit(lo) + logit(hi)) / 2 == pytest.approx(logit(pred.probability), abs=1e-6)


def test_unseen_center_needs_nothing_of_that_center(scoring_demo, tmp_path):
    # An internal-validation patient relabelled to an unseen center: the default normalisation is per image
    # (prospective-safe), so the ROI and so the score must equal the batch score. (Training patients' batch
    # scores are cross-fitted - out-of-fold - and differ from a new patient's by design.)
    pid = patients_of(scoring_demo.cohort, "internal")[0]
    folder = one_patient_cohort(scoring_demo.cohort, pid, tmp_path / "p", center="Z")
    pred = predict_patient(scoring_demo.store, folder, head="dltr_mlp", work_dir=tmp_path / "work")
    assert pred.normalisation["statistics_of"] == "the image itself"
    assert pred.center == "Z"
    assert pred.probability == pytest.approx(float(_batch(scoring_demo.store, "dltr_mlp").loc[pid, "score"]),
                                             abs=TOL)


def test_predict_cli_json_records_the_features(scoring_demo, tmp_path):
    from dltr.cli import main

    pid = patients_of(scoring_demo.cohort, "external")[0]
    folder = one_patient_cohort(scoring_demo.cohort, pid, tmp_path / "p")
    lin, _ = resolve_lineage(scoring_demo.store, "dltr_mlp")
    buf = io.StringIO()
    with redirect_stdout(buf):
        rc = main(["predict", str(folder), "--store", str(scoring_demo.store),
                   "--head", f"dltr_mlp@{lin.head_version}", "--record", "--json"])
    assert rc == 0
    out = json.loads(buf.getvalue())
    assert out["lineage"]["head_version"] == lin.head_version
    assert out["lineage"]["encoder_card_hash"] == lin.encoder_card_hash
    assert out["probability"] == pytest.approx(float(_batch(scoring_demo.store, "dltr_mlp").loc[pid, "score"]),
                                               abs=TOL)
    store = FeatureStore(scoring_demo.store)
    rec = store.table(RECORDS_TABLE).to_pandas()
    mine = rec[rec["record_id"] == out["record_id"]]
    assert len(mine) == 1 and mine["patient_id"].iloc[0] == pid
    feats = store.read(f"{lin.feature_set}@{lin.feature_set_version}").to_pandas().set_index("patient_id")
    np.testing.assert_allclose(np.asarray(mine["embedding"].iloc[0]), np.asarray(feats.loc[pid, "embedding"]),
                               atol=1e-5)
    # the batch feature set itself is untouched (scoring never writes a feature-set version)
    assert [v.version_id for v in store.versions(lin.feature_set)] == [lin.feature_set_version]


def test_a_bad_patient_fails_cleanly_and_leaves_nothing(scoring_demo, tmp_path):
    pid = patients_of(scoring_demo.cohort, "external")[0]
    folder = one_patient_cohort(scoring_demo.cohort, pid, tmp_path / "p")
    mask = next(folder.rglob("mask.nii.gz"))
    mask.write_bytes(b"not a nifti file")
    with pytest.raises(DltrError, match="mask"):
        predict_patient(scoring_demo.store, folder, work_dir=tmp_path / "work")
    assert list((tmp_path / "work").iterdir()) == []
    assert not (scoring_demo.store / "volumes.zarr" / "scoring-patient").exists()


def test_a_record_carries_the_stores_form_of_the_patient_id(scoring_demo, tmp_path):
    from dltr.scoring import recorded_patient_id

    pid = patients_of(scoring_demo.cohort, "external")[0]
    assert recorded_patient_id(scoring_demo.store, pid, None) == pid
    with pytest.raises(DltrError, match="not pseudonymised"):  # a keyed id would not join this store's tables
        recorded_patient_id(scoring_demo.store, pid, "a-key")
    keyed = FeatureStore(tmp_path / "keyed")
    keyed.add_cohort(scoring_demo.cohort, pseudonym_key="a-key")
    ids = set(keyed.table("clinical").column("patient_id").to_pylist())
    assert pid not in ids
    assert recorded_patient_id(keyed.root, pid, "a-key") in ids  # the same pseudonym as the patient's rows
    with pytest.raises(DltrError, match="in the clear"):
        recorded_patient_id(keyed.root, pid, None)


def test_fusion_on_measured_descriptors_agrees_between_batch_and_single(scoring_demo, tmp_path):
    """``HeadsConfig(fusion="descriptors")``: DLTR_MLP reads the ROI descriptors measured on each patient's
    own encoder input. Training measures them through the batch DALI pipeline, equal to the NumPy reference
    ROI's (images and mask resampled alike); the scorer measures them on the single patient's input, and
    its score equals the batch score; the head does read them."""
    import shutil

    import torch

    from models import roi_descriptors
    from models.heads import HeadRegistry, HeadsConfig, frame_arrays, train_heads, with_descriptors
    from pipeline.loaders import RoiConfig, reference_roi

    root = tmp_path / "store"
    shutil.copytree(scoring_demo.store, root)
    store = FeatureStore(root)
    train_heads(store, HeadsConfig(heads=("dltr_mlp",), fusion="descriptors", seed=0, clinical_bootstrap=10))
    fh, meta = HeadRegistry(root).load("dltr_mlp")
    scorer = Scorer(root, "dltr_mlp", work_dir=tmp_path / "work")
    lin = scorer.lineage
    assert len(fh.descriptors) == 5 * len(lin.preprocess["phases"]) + 1  # per phase 5, and the tumour's fill
    assert meta["lineage"]["fusion"].startswith("descriptors")
    assert fh.readout_weight.shape[0] == 1  # the response logit alone from the encoder's read-out
    df, emb = frame_arrays(store.training_frame(f"{lin.feature_set}@{lin.feature_set_version}", label="response",
                                                clinical=list(lin.clinical), labs=list(lin.labs),
                                                max_age_days=lin.max_age_days))
    df = with_descriptors(store, df, lin.encoder_card_hash)
    ref_cfg = RoiConfig.from_dict({**lin.preprocess, "mask_channel": True})
    n = len(ref_cfg.phases)
    external = patients_of(scoring_demo.cohort, "external")[:3]
    for pid in external:
        x = torch.from_numpy(reference_roi(root, pid, ref_cfg).x[None])
        ref = roi_descriptors(x[:, :n], x[:, n:]).numpy()[0]
        got = df.loc[df["patient_id"] == pid, list(fh.descriptors)].to_numpy(float)[0]
        np.testing.assert_allclose(got, ref, rtol=1e-4, atol=1e-4)

    batch = _batch(root, "dltr_mlp")
    for pid in external:
        pred = scorer.score_folder(one_patient_cohort(scoring_demo.cohort, pid, tmp_path / pid))
        assert abs(pred.probability - float(batch.loc[pid, "score"])) <= TOL
    # the descriptors reach the score: shifting the first phase's descriptors moves every probability
    ext = (df["split"] == "external").to_numpy()
    p0 = fh.predict_proba_frame(df[ext], emb[ext])
    assert np.abs(p0 - batch.loc[df.loc[ext, "patient_id"], "score"].to_numpy()).max() <= TOL
    moved = df[ext].copy()
    moved[list(fh.descriptors[:5])] += 1.0
    assert np.abs(fh.predict_proba_frame(moved, emb[ext]) - p0).min() > 1e-6


def test_native_fusion_agrees_between_batch_and_single_and_records_its_resolution(scoring_demo, tmp_path):
    """``HeadsConfig(fusion="native")``: the fusion heads also read tumour descriptors measured on the ingested
    volumes at one declared resolution. The head keeps that resolution (state and lineage, through the registry);
    the scorer measures the single patient's freshly ingested volumes and its score equals the batch score; the
    native descriptors reach the score."""
    import shutil

    from models import native_descriptor_names
    from models.heads import (
        NATIVE_PREFIX,
        HeadRegistry,
        HeadsConfig,
        frame_arrays,
        train_heads,
        with_descriptors,
    )

    root = tmp_path / "store"
    shutil.copytree(scoring_demo.store, root)
    store = FeatureStore(root)
    train_heads(store, HeadsConfig(heads=("dltr_mlp",), fusion="native", native_spacing_mm=(9.0, 9.0, 13.0), seed=0,
                                         clinical_bootstrap=10))
    fh, meta = HeadRegistry(root).load("dltr_mlp")
    scorer = Scorer(root, "dltr_mlp", work_dir=tmp_path / "work")
    lin = scorer.lineage
    phases = list(lin.preprocess["phases"])
    native = [c for c in fh.descriptors if c.startswith(NATIVE_PREFIX)]
    assert native == ["roi." + n for n in native_descriptor_names(phases)]
    assert fh.native_spacing_mm == (9.0, 9.0, 13.0) and meta["lineage"]["native_spacing_mm"] == [9.0, 9.0, 13.0]
    assert meta["lineage"]["native_descriptors"] == native   # what it reads, recorded
    assert "9.0 x 9.0 x 13.0 mm" in meta["lineage"]["fusion"]
    batch = _batch(root, "dltr_mlp")
    external = patients_of(scoring_demo.cohort, "external")[:3]
    for pid in external:
        pred = scorer.score_folder(one_patient_cohort(scoring_demo.cohort, pid, tmp_path / pid))
        assert abs(pred.probability - float(batch.loc[pid, "score"])) <= TOL
    df, emb = frame_arrays(store.training_frame(f"{lin.feature_set}@{lin.feature_set_version}", label="response",
                                                clinical=list(lin.clinical), labs=list(lin.labs),
                                                max_age_days=lin.max_age_days))
    df = with_descriptors(store, df, lin.encoder_card_hash, fh.native_spacing_mm)
    ext = (df["split"] == "external").to_numpy()
    p0 = fh.predict_proba_frame(df[ext], emb[ext])
    assert np.abs(p0 - batch.loc[df.loc[ext, "patient_id"], "score"].to_numpy()).max() <= TOL
    moved = df[ext].copy()
    moved[native[:8]] += 1.0
    assert np.abs(fh.predict_proba_frame(moved, emb[ext]) - p0).min() > 1e-6


def test_a_patient_imaged_more_coarsely_than_the_heads_resolution_is_refused_by_name(scoring_demo, tmp_path):
    """The demo's DLTR_MLP measures native descriptors at the resolution recorded with it; a new patient whose voxels
    are coarser than that cannot be measured alike, so scoring refuses the patient (naming the voxel size and the
    fix) instead of returning a score from descriptors measured unlike the training patients'."""
    import csv

    import nibabel as nib

    from models.heads import HeadRegistry

    resolution = HeadRegistry(scoring_demo.store).meta("dltr_mlp")["lineage"]["native_spacing_mm"]
    pid = next(p for p in patients_of(scoring_demo.cohort, "external") if "-B-" in p)   # a NIfTI center
    folder = one_patient_cohort(scoring_demo.cohort, pid, tmp_path / pid)
    with (folder / "manifest.csv").open() as f:
        files = {r[k] for r in csv.DictReader(f) for k in ("image", "mask")}
    scorer = Scorer(scoring_demo.store, "dltr_mlp", work_dir=tmp_path / "work")
    assert 0.0 < scorer.score_folder(folder).probability < 1.0       # as acquired: scored
    for rel in files:                                                 # every voxel twice as large, same field of view
        img = nib.load(folder / rel)
        aff = img.affine.copy()
        aff[:3, :3] *= 2.0
        data = np.asarray(img.dataobj)[::2, ::2, ::2]
        nib.save(nib.Nifti1Image(data, aff, img.header), folder / rel)
    with pytest.raises(DltrError) as err:
        scorer.score_folder(folder)
    msg = str(err.value)
    assert "coarser than the native descriptors' resolution" in msg and "--native-spacing" in msg
    assert " x ".join(f"{v:g}" for v in resolution) + " mm" in msg
