"""Radiomics producer (pipeline.radiomics): library reference, store contract, SQL by name, resume, heads."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared" / "data" / "imaging"
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
    from dltr.core.hashing import file_sha256
    from features import FeatureStore
    from pipeline.ingest import IngestConfig, ingest_cohort

    ref = _reference()
    src_img, src_mask = SHARED / "pyradiomics_breast1_image.nrrd", SHARED / "pyradiomics_breast1_label.nrrd"
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
