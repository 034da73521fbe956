"""The synthetic cohort (``dltr.synth``): the DICOM center and the NIfTI centers land in one canonical
frame (tumour centroids in world mm match the generator's truth within half a voxel, also after
resampling), and none of the generator's fake identifiers reaches any byte of the store."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pydicom
import pytest
import zarr

from pipeline.ingest import IngestConfig, ingest_cohort


@pytest.fixture(scope="module")
def synth(tmp_path_factory):
    from dltr.synth import SynthConfig, synthesize

    out = tmp_path_factory.mktemp("synth")
    synthesize(out, SynthConfig.profile("tiny", seed=0, patients=2))
    return out / "cohort", out / "truth"


def _tumours(truth: Path) -> list[dict]:
    with open(truth / "tumours.csv") as f:
        return list(csv.DictReader(f))


@pytest.mark.parametrize("spacing", [None, (1.5, 1.5, 4.0)])
def test_tumour_centroids_in_world_match_truth(synth, tmp_path, spacing):
    cohort, truth = synth
    rep = ingest_cohort(cohort, tmp_path, IngestConfig(target_spacing=spacing, stats=False), executor="serial")
    assert rep.errors == [] and rep.ok == 6
    centers = set()
    for t in _tumours(truth):
        g = zarr.open_group(tmp_path / "volumes.zarr" / t["patient_id"], mode="r")
        centers.add(g.attrs["center"])
        m = g["mask"][...]
        ijk = np.argwhere(m == int(t["label"]))
        assert len(ijk) > 0
        world = (np.asarray(g.attrs["affine"]) @ np.r_[ijk.mean(axis=0), 1])[:3]
        expect = np.array([float(t[f"centroid_{a}"]) for a in "xyz"])
        assert np.all(np.abs(world - expect) <= 0.5 * np.asarray(g.attrs["spacing"])), (t["patient_id"], world,
                                                                                        expect)
    assert centers == {"A", "B", "C"}


def test_no_fake_identifier_in_any_byte(synth, tmp_path):
    cohort, truth = synth
    ingest_cohort(cohort, tmp_path, IngestConfig(workers=2, processes=False))
    ids = set()
    for rec in json.loads((truth / "identifiers.json").read_text()):
        ids |= {str(v).encode() for k, v in rec.items() if k not in ("patient_id", "sex") and v}
    n_dicom = 0
    for f in cohort.rglob("*"):
        if f.is_file() and not f.name.endswith((".csv", ".tsv", ".toml", ".nii.gz", ".nrrd", ".json", ".gmt")):
            ds = pydicom.dcmread(str(f))
            n_dicom += 1
            ids |= {str(ds.get(k)).encode() for k in ("SOPInstanceUID", "SeriesInstanceUID", "StudyInstanceUID")}
    assert n_dicom > 0 and len(ids) > 10
    files = [p for p in tmp_path.rglob("*") if p.is_file()]
    for p in files:
        blob = p.read_bytes()
        assert not [i for i in ids if i in blob], p
