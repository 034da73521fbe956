"""Ingest end to end on a three-center cohort built in code (NIfTI LPS/RAS with masks in other
orientations, pydicom-written DICOM series with NRRD masks), through a real local Dask cluster."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pydicom
import pytest
import zarr
from kit.images import FAKE, image_cohort, region_values

from pipeline.ingest import IngestConfig, ingest_cohort

CFG = IngestConfig(workers=2, processes=False)


@pytest.fixture(scope="module")
def cohort(tmp_path_factory):
    return image_cohort(tmp_path_factory.mktemp("cohort") / "c", per_center=2, seed=3)


@pytest.fixture(scope="module")
def store(cohort, tmp_path_factory):
    root = tmp_path_factory.mktemp("store")
    report = ingest_cohort(cohort[0], root, CFG)
    return root, report


def _centroid(g) -> np.ndarray:
    m = g["mask"][...]
    return (np.asarray(g.attrs["affine"]) @ np.r_[np.argwhere(m > 0).mean(axis=0), 1])[:3]


def test_all_centers_land_in_one_canonical_frame(cohort, store):
    root, report = store
    assert report.ok == 6 and report.errors == []
    for pid, t in cohort[1].items():
        g = zarr.open_group(root / "volumes.zarr" / pid, mode="r")
        a = np.asarray(g.attrs["affine"])
        assert np.all(np.diag(a)[:3] > 0) and np.allclose(a[:3, :3], np.diag(np.diag(a)[:3]))  # RAS+ axes
        np.testing.assert_allclose(_centroid(g), t["centroid"], atol=1e-6)
        np.testing.assert_allclose(g.attrs["spacing"], t["spacing"], rtol=1e-6)


def test_resampled_centroid_within_half_voxel(cohort, tmp_path):
    cfg = IngestConfig(workers=2, processes=False, target_spacing=(1.0, 1.0, 2.0), stats=False)
    ingest_cohort(cohort[0], tmp_path, cfg)
    for pid, t in cohort[1].items():
        g = zarr.open_group(tmp_path / "volumes.zarr" / pid, mode="r")
        np.testing.assert_allclose(g.attrs["spacing"], [1.0, 1.0, 2.0], rtol=1e-9)
        assert np.all(np.abs(_centroid(g) - t["centroid"]) <= 0.5 * np.asarray([1.0, 1.0, 2.0]))
        assert g["arterial"].shape == g["mask"].shape


def _identifiers(cohort_root: Path) -> set[bytes]:
    out = set()
    for f in cohort_root.rglob("*.dcm"):
        ds = pydicom.dcmread(str(f))
        for kw in ("PatientName", "PatientID", "PatientBirthDate", "InstitutionName", "AccessionNumber",
                   "SOPInstanceUID", "SeriesInstanceUID", "StudyInstanceUID", "ReferringPhysicianName"):
            out.add(str(ds.get(kw)).encode())
    return out


def test_no_identifier_in_any_byte_of_the_store(cohort, store):
    ids = _identifiers(cohort[0])
    assert any(FAKE["name"].format(n=4).encode() == i for i in ids) and len(ids) > 20
    files = [p for p in Path(store[0]).rglob("*") if p.is_file()]
    assert len(files) > 20
    for p in files:
        blob = p.read_bytes()
        found = [i for i in ids if i in blob]
        assert not found, f"{p}: {found}"


def test_studies_table_matches_store(store):
    root, _ = store
    t = pq.read_table(root / "ingest" / "studies.parquet")
    assert t.num_rows == 12 and t.column_names[:3] == ["patient_id", "center", "phase"]
    for r in t.to_pylist():
        g = zarr.open_group(root / "volumes.zarr" / r["patient_id"], mode="r")
        m = g["mask"][...]
        assert list(g[r["phase"]].shape) == r["shape"] and r["n_tumour_voxels"] == int((m > 0).sum())
        nz = np.argwhere(m > 0)
        assert r["bbox_vox"] == list(nz.min(0)) + list(nz.max(0) + 1)
        assert r["reader"] == ("dicom-series" if r["center"] == "C" else "nifti")
    assert {str(d) for d in t.column("study_date").to_pylist() if d} == {"2020-01-02"}


@pytest.mark.parametrize("key", ["bbox_vox", "spacing"])
def test_a_group_missing_an_attribute_is_named_by_every_reader(store, tmp_path, key):
    """Every stage reads a patient group's attributes through ``VolumeAttrs``: one with ``key`` removed is
    refused with the group's path and the attribute, not a bare KeyError."""
    import json
    import shutil

    from dltr.core.exceptions import StoreError
    from dltr.core.layout import StoreLayout, VolumeAttrs
    from models import native_descriptors
    from pipeline.loaders import RoiConfig, RoiReader

    root = tmp_path / "store"
    shutil.copytree(store[0], root)
    pid = sorted(p.name for p in StoreLayout.of(root).volumes.iterdir() if p.is_dir())[0]
    meta_path = StoreLayout.of(root).volume_attrs(pid)
    meta = json.loads(meta_path.read_text())
    kept = VolumeAttrs.of(meta["attributes"], pid)
    assert list(kept.bbox_vox) == meta["attributes"]["bbox_vox"] and len(kept.spacing) == 3
    del meta["attributes"][key]
    meta_path.write_text(json.dumps(meta))
    where = str(StoreLayout.of(root).volume_group(pid))
    phases = tuple(kept.phases)
    readers = [lambda: RoiReader(root, RoiConfig(phases=phases, grid=(8, 8, 4))).read(pid),
               lambda: native_descriptors(root, [pid], phases, (5.0, 5.0, 5.0))]  # coarser than its voxels
    for read in readers:
        with pytest.raises(StoreError) as err:
            read()
        assert where in str(err.value) and repr(key) in str(err.value) and "re-run `dltr ingest`" in str(err.value)


def test_dask_statistics_equal_numpy(store):
    root, _ = store
    stats = pq.read_table(root / "ingest" / "intensity_stats.parquet").to_pylist()
    assert len(stats) == 2 * 3 * 2
    for s in stats:
        v = region_values(root, s["center"], s["phase"], s["region"])
        assert s["n"] == v.size
        np.testing.assert_allclose([s["mean"], s["std"]], [v.mean(), v.std()], rtol=1e-10)
        np.testing.assert_allclose([s["p01"], s["p50"], s["p99"]], np.percentile(v, [1, 50, 99]), rtol=1e-12)


def test_rerun_skips_unchanged_and_rewrites_changed(cohort, tmp_path):
    import shutil

    src = tmp_path / "c"
    shutil.copytree(cohort[0], src)
    cfg = IngestConfig(workers=1, processes=False, stats=False)
    ingest_cohort(src, tmp_path / "s", cfg)
    before = pq.read_table(tmp_path / "s" / "ingest" / "studies.parquet")
    rep = ingest_cohort(src, tmp_path / "s", cfg)
    assert (rep.ok, rep.skipped) == (0, 6)
    assert pq.read_table(tmp_path / "s" / "ingest" / "studies.parquet").equals(before)
    import nibabel as nib

    p = src / "images" / "P002" / "portal.nii"
    img = nib.load(str(p))
    data = np.asanyarray(img.dataobj).copy()
    data[5, 5, 5] += 77
    nib.save(nib.Nifti1Image(data, img.affine), str(p))
    rep = ingest_cohort(src, tmp_path / "s", cfg)
    assert (rep.ok, rep.skipped) == (1, 5)
    g = zarr.open_group(tmp_path / "s" / "volumes.zarr" / "P002", mode="r")
    assert g["portal"][5, 5, 5] == data[5, 5, 5]  # B is RAS: canonical indices equal the source's


def test_pseudonym_replaces_patient_id(cohort, tmp_path):
    rep = ingest_cohort(cohort[0], tmp_path, IngestConfig(workers=1, processes=False, stats=False,
                                                          pseudonym_key="s3cret"))
    assert rep.ok == 6
    keys = sorted(p.name for p in (tmp_path / "volumes.zarr").iterdir() if p.is_dir())
    assert all(k.startswith("PS") and len(k) == 18 for k in keys)
    for p in (q for q in tmp_path.rglob("*") if q.is_file()):
        blob = p.read_bytes()
        assert not any(pid.encode() in blob for pid in cohort[1]), p


def test_scratch_store_skips_the_syncs_and_writes_the_same_volumes(cohort, store, tmp_path, monkeypatch):
    """``durable=False`` (the scoring service's per-request store): no syncfs / fsync of a patient group,
    the same arrays and attributes as the durable ingest, nothing left in the temporary folder."""
    import pipeline.ingest._writer as writer

    def no_sync(*_a, **_k):
        raise AssertionError("a scratch ingest synced a patient group")

    monkeypatch.setattr(writer, "sync_tree", no_sync)
    monkeypatch.setattr(writer, "fsync_dir", no_sync)
    cfg = IngestConfig(workers=1, stats=False, durable=False)
    report = ingest_cohort(cohort[0], tmp_path, cfg, executor="serial")
    assert report.ok == 6 and report.errors == []
    root = store[0]
    for pid in cohort[1]:
        a = zarr.open_group(root / "volumes.zarr" / pid, mode="r")
        b = zarr.open_group(tmp_path / "volumes.zarr" / pid, mode="r")
        assert dict(a.attrs) == dict(b.attrs)
        for name in a.attrs["phases"] + ["mask"]:
            assert np.array_equal(a[name][...], b[name][...]), (pid, name)
    assert not list((tmp_path / "ingest" / ".tmp").glob("*"))


@pytest.mark.parametrize("codec", ["blosc-zstd-3", "blosc-lz4-5", "none", "zstd-3"])
def test_direct_chunk_writes_are_zarrs_files_byte_for_byte(tmp_path, codec, monkeypatch):
    """``write_array`` (ingest's chunk writer, zarr's event loop bypassed) leaves the same files as zarr's own
    ``arr[...] = data``: edge chunks padded, chunks of fill value left out; codecs it does not handle
    (zstd) go through zarr."""
    from pipeline.ingest import compressor_codec
    from pipeline.ingest._writer import write_array

    rng = np.random.default_rng(3)
    img = np.asfortranarray(rng.normal(300, 40, (100, 70, 20)).astype(np.int16))  # the readers' F order
    mask = np.zeros((100, 70, 20), np.uint8)
    mask[10:30, 5:25, 2:9] = 1  # most chunks empty
    flt = rng.normal(0, 1, (30, 20, 10)).astype(np.float32)
    trees = {}
    for how in ("zarr", "direct"):
        g = zarr.open_group(tmp_path / how, mode="w")
        c = compressor_codec(codec)
        for name, data in (("img", img), ("mask", mask), ("flt", flt)):
            arr = g.create_array(name, shape=data.shape, chunks=(64, 64, 16), dtype=data.dtype, fill_value=0,
                                 compressors=[c] if c is not None else None)
            if how == "zarr":
                arr[...] = data
            else:
                with monkeypatch.context() as m:
                    if codec != "zstd-3":  # the direct path must not fall back to zarr's write
                        m.setattr(type(arr), "__setitem__", lambda *a: pytest.fail("zarr wrote the array"))
                    write_array(arr, data)
        trees[how] = {p.relative_to(tmp_path / how).as_posix(): p.read_bytes()
                      for p in sorted((tmp_path / how).rglob("*")) if p.is_file()}
    assert trees["direct"].keys() == trees["zarr"].keys()
    assert len([k for k in trees["zarr"] if k.startswith("mask/c/")]) < len([k for k in trees["zarr"]
                                                                            if k.startswith("img/c/")])
    assert all(trees["direct"][k] == trees["zarr"][k] for k in trees["zarr"])
    back = zarr.open_group(tmp_path / "direct", mode="r")
    for name, data in (("img", img), ("mask", mask), ("flt", flt)):
        assert np.array_equal(back[name][...], data)
