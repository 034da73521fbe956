"""Readers against the reference libraries on real files nobody here wrote, read in place (and copied
only to a temporary cohort folder): every stored voxel sits at the world position, and holds the
value, that nibabel / pydicom / pynrrd give for the source."""

from __future__ import annotations

import csv
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest
import zarr
from kit import SHARED_DATA
from pydicom.data import get_testdata_file

from pipeline.ingest import (
    DicomMultiframeReader,
    DicomSeriesReader,
    DuplicateSliceError,
    IngestConfig,
    MissingSliceError,
    NiftiReader,
    NrrdReader,
    ingest_cohort,
    read_image,
    to_canonical,
)

SHARED = SHARED_DATA / "imaging"
NIB_DATA = Path(nib.__file__).parent / "tests" / "data"
NICOM_DATA = Path(nib.__file__).parent / "nicom" / "tests" / "data"
LPS = np.diag([-1.0, -1.0, 1.0, 1.0])


def assert_same_world(data, affine, ref, ref_affine, atol=1e-3):
    """Every voxel of (data, affine) maps to an integer voxel of the reference with the same value."""
    assert int(np.prod(data.shape)) == int(np.prod(ref.shape))
    ijk = np.indices(data.shape).reshape(3, -1)
    world = affine[:3, :3] @ ijk + affine[:3, 3:4]
    rijk = np.linalg.solve(ref_affine[:3, :3], world - ref_affine[:3, 3:4])
    r = np.rint(rijk)
    np.testing.assert_allclose(rijk, r, atol=atol)
    r = r.astype(int)
    for a in range(3):
        assert r[a].min() == 0 and r[a].max() == ref.shape[a] - 1
    np.testing.assert_allclose(data.reshape(-1), ref[r[0], r[1], r[2]], rtol=0, atol=1e-4)


# --- references, computed by the reference libraries (and the DICOM standard's formula) ----------
def ref_nifti(path):
    img = nib.load(str(path))
    return np.asanyarray(img.dataobj).astype(np.float64), img.affine


def ref_nrrd(path):
    import nrrd

    data, h = nrrd.read(str(path))
    aff = np.eye(4)
    aff[:3, :3] = np.asarray(h["space directions"]).T
    aff[:3, 3] = h["space origin"]
    assert h["space"] == "left-posterior-superior"
    return data.astype(np.float64), LPS @ aff


def ref_dicom(path):
    import warnings

    with warnings.catch_warnings():  # nibabel: "DICOM readers are highly experimental"
        warnings.simplefilter("ignore", UserWarning)
        from nibabel.nicom import dicomwrappers
    w = dicomwrappers.wrapper_from_data(pydicom.dcmread(str(path)))
    data = np.asarray(w.get_data(), dtype=np.float64)
    return data[..., None] if data.ndim == 2 else data, LPS @ w.affine


CASES = {
    "totalseg_mr": (SHARED / "totalseg_example_mr_sm.nii.gz", ref_nifti),
    "breast1_nrrd": (SHARED / "pyradiomics_breast1_image.nrrd", ref_nrrd),
    "nib_anatomical": (NIB_DATA / "anatomical.nii", ref_nifti),
    "nib_standard": (NIB_DATA / "standard.nii.gz", ref_nifti),
    "pydicom_mr_small": (Path(get_testdata_file("MR_small.dcm")), ref_dicom),
    "pydicom_ct_small": (Path(get_testdata_file("CT_small.dcm")), ref_dicom),
    "siemens_decimal_rescale": (NICOM_DATA / "decimal_rescale.dcm", ref_dicom),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_reader_matches_reference_library(name):
    path, ref = CASES[name]
    vol = to_canonical(read_image(path))
    data, aff = ref(path)
    assert_same_world(vol.voxels, vol.affine, data, aff)
    assert "".join(nib.aff2axcodes(vol.affine)) == "RAS"
    np.testing.assert_allclose(vol.meta["original_affine"], read_image(path).affine)


def test_reader_choice():
    assert isinstance_reader(SHARED / "totalseg_example_mr_sm.nii.gz", NiftiReader)
    assert isinstance_reader(SHARED / "pyradiomics_breast1_image.nrrd", NrrdReader)
    assert isinstance_reader(Path(get_testdata_file("CT_small.dcm")), DicomSeriesReader)


def isinstance_reader(path, cls):
    from pipeline.ingest import reader_for

    return isinstance(reader_for(path), cls)


# --- the store holds what the reference reads ------------------------------------------------------
@pytest.fixture(scope="module")
def real_store(tmp_path_factory):
    """A cohort of the real files (copied into a temporary folder) ingested once, serially."""
    root = tmp_path_factory.mktemp("real")
    cohort, rows, clinical = root / "cohort", [], []
    cohort.mkdir()
    masks = {"totalseg_mr": SHARED / "totalseg_example_seg_mr.nii.gz",
             "breast1_nrrd": SHARED / "pyradiomics_breast1_label.nrrd"}
    for name, (path, ref) in CASES.items():
        dst = cohort / name / path.name
        dst.parent.mkdir()
        shutil.copy(path, dst)
        if name in masks:
            mdst = cohort / name / masks[name].name
            shutil.copy(masks[name], mdst)
        else:  # a box mask written by nibabel on the reference grid, in the reference's orientation
            data, aff = ref(path)
            m = np.zeros(data.shape, np.uint8)
            m[tuple(slice(s // 3, max(s // 3 + 1, 2 * s // 3)) for s in data.shape)] = 1
            mdst = cohort / name / "mask.nii.gz"
            nib.save(nib.Nifti1Image(m, aff), str(mdst))
        rows.append({"patient_id": name, "phase": "t1", "image": str(dst.relative_to(cohort)),
                     "mask": str(mdst.relative_to(cohort)), "study_date": ""})
        clinical.append({"patient_id": name, "center": "R", "tace_date": "2020-01-01"})
    for fname, data in (("manifest.csv", rows), ("clinical.csv", clinical)):
        with open(cohort / fname, "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=list(data[0]))
            w.writeheader()
            w.writerows(data)
    report = ingest_cohort(cohort, root / "store", IngestConfig(stats=False), executor="serial")
    return root / "store", report


@pytest.mark.parametrize("name", sorted(CASES))
def test_store_matches_reference_library(real_store, name):
    store, report = real_store
    assert report.errors == [] and report.ok == len(CASES)
    path, ref = CASES[name]
    g = zarr.open_group(store / "volumes.zarr" / name, mode="r")
    arr = g["t1"]
    data, aff = ref(path)
    assert_same_world(arr[...], np.asarray(arr.attrs["affine"]), data, aff)
    assert arr.dtype == (np.int16 if np.all(data == np.rint(data)) and np.abs(data).max() < 32768 else np.float32)
    np.testing.assert_allclose(arr.attrs["spacing"], np.linalg.norm(aff[:3, :3], axis=0)[
        np.argmax(np.abs(np.linalg.solve(aff[:3, :3], np.asarray(arr.attrs["affine"])[:3, :3])), axis=0)],
        rtol=1e-5)


def test_store_liver_label_world_position(real_store):
    """Label 5 (liver) of the TotalSegmentator segmentation: same voxels in world space as nibabel's."""
    store, _ = real_store
    g = zarr.open_group(store / "volumes.zarr" / "totalseg_mr", mode="r")
    seg = nib.load(str(SHARED / "totalseg_example_seg_mr.nii.gz"))
    ref = np.asanyarray(seg.dataobj)
    m = g["mask"][...]
    assert_same_world(m.astype(float), np.asarray(g.attrs["affine"]), ref.astype(float), seg.affine)
    ours = np.asarray(g.attrs["affine"]) @ np.r_[np.argwhere(m == 5).mean(axis=0), 1]
    theirs = seg.affine @ np.r_[np.argwhere(ref == 5).mean(axis=0), 1]
    np.testing.assert_allclose(ours, theirs, atol=1e-6)
    assert (m == 5).sum() == (ref == 5).sum() > 0


# --- DICOM series order and multi-frame -----------------------------------------------------------
def _series_from(src: Path, folder: Path, n: int, step: float, drop=(), dup=()):
    """n slices built from a real single-frame file: pixel values shifted per slice, positions along
    the normal, file names and InstanceNumbers in an order unrelated to position."""
    ds0 = pydicom.dcmread(str(src))
    iop = np.asarray(ds0.ImageOrientationPatient, float)
    normal = np.cross(iop[:3], iop[3:])
    folder.mkdir(parents=True)
    order = np.random.default_rng(0).permutation(n)
    truth = []
    for k in range(n):
        if k in drop:
            continue
        for copy in range(2 if k in dup else 1):
            ds = pydicom.dcmread(str(src))
            px = ds.pixel_array.astype(np.int16) + 3 * k
            ds.PixelData = px.tobytes()
            ds.ImagePositionPatient = [float(x) for x in np.asarray(ds0.ImagePositionPatient, float) + k * step * normal]
            ds.InstanceNumber = int(order[k]) + 1
            ds.save_as(str(folder / f"f{order[k]:02d}_{copy}.dcm"))
            truth.append(px)
    return truth


def test_series_sorted_by_position_not_name(tmp_path):
    src = Path(get_testdata_file("CT_small.dcm"))
    _series_from(src, tmp_path / "s", 5, 5.0)
    vol = DicomSeriesReader().read(tmp_path / "s")
    ds = pydicom.dcmread(str(src))
    slope, inter = float(ds.RescaleSlope), float(ds.RescaleIntercept)
    for k in range(5):
        expect = (ds.pixel_array.astype(np.float64) + 3 * k) * slope + inter
        np.testing.assert_array_equal(vol.voxels[:, :, k], expect.T)
    assert vol.spacing[2] == pytest.approx(5.0)


@pytest.mark.parametrize("kind", ["missing", "duplicate"])
def test_series_missing_or_duplicate_slice(tmp_path, kind):
    src = Path(get_testdata_file("MR_small.dcm"))
    _series_from(src, tmp_path / "s", 6, 2.0, drop=(3,) if kind == "missing" else (),
                 dup=(2,) if kind == "duplicate" else ())
    err = MissingSliceError if kind == "missing" else DuplicateSliceError
    with pytest.raises(err, match="missing|two slices"):
        DicomSeriesReader().read(tmp_path / "s")


def _multiframe_from(src: Path, path: Path, n: int, step: float) -> list[tuple[np.ndarray, np.ndarray]]:
    """An enhanced multi-frame file from a real single-frame one: per-frame positions (shuffled frame
    order) and rescale in the functional groups. Returns [(pixels, IPP)] per frame in file order."""
    from pydicom.dataset import Dataset
    from pydicom.sequence import Sequence
    from pydicom.uid import EnhancedMRImageStorage

    ds = pydicom.dcmread(str(src))
    iop = [float(x) for x in ds.ImageOrientationPatient]
    normal = np.cross(iop[:3], iop[3:])
    order = np.random.default_rng(1).permutation(n)
    frames, per = [], []
    for k in order:
        px = ds.pixel_array.astype(np.int16) + 7 * int(k)
        ipp = np.asarray(ds.ImagePositionPatient, float) + k * step * normal
        frames.append((px, ipp))
        f = Dataset()
        pos = Dataset()
        pos.ImagePositionPatient = [float(x) for x in ipp]
        f.PlanePositionSequence = Sequence([pos])
        pvt = Dataset()
        pvt.RescaleSlope, pvt.RescaleIntercept = 2, -100
        f.PixelValueTransformationSequence = Sequence([pvt])
        per.append(f)
    shared, meas, ori = Dataset(), Dataset(), Dataset()
    meas.PixelSpacing, meas.SliceThickness = ds.PixelSpacing, step
    ori.ImageOrientationPatient = iop
    shared.PixelMeasuresSequence, shared.PlaneOrientationSequence = Sequence([meas]), Sequence([ori])
    ds.SharedFunctionalGroupsSequence, ds.PerFrameFunctionalGroupsSequence = Sequence([shared]), Sequence(per)
    for tag in ("ImagePositionPatient", "ImageOrientationPatient", "PixelSpacing", "RescaleSlope",
                "RescaleIntercept"):
        if tag in ds:
            delattr(ds, tag)
    ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID = EnhancedMRImageStorage
    ds.NumberOfFrames = n
    ds.PixelData = np.stack([p for p, _ in frames]).tobytes()
    ds.save_as(str(path))
    return frames


def test_multiframe_matches_frame_geometry(tmp_path):
    src = Path(get_testdata_file("MR_small.dcm"))
    bundled = [pydicom.dcmread(str(f), stop_before_pixels=True).SOPClassUID.name
               for f in src.parent.glob("*.dcm") if "MR" in f.name]
    assert "Enhanced MR Image Storage" not in bundled  # none bundled: build one from this real file
    frames = _multiframe_from(src, tmp_path / "mf.dcm", 4, 1.5)
    vol = to_canonical(read_image(tmp_path / "mf.dcm"))
    assert vol.meta["reader"] == DicomMultiframeReader.name
    ds = pydicom.dcmread(str(src))
    row, col = np.asarray(ds.ImageOrientationPatient[:3], float), np.asarray(ds.ImageOrientationPatient[3:], float)
    dr, dc = (float(x) for x in ds.PixelSpacing)
    inv = np.linalg.inv(vol.affine)
    for px, ipp in frames:  # DICOM PS3.3 C.7.6.2.1.1: P = IPP + c * dc * row + r * dr * col
        r, c = np.indices(px.shape).reshape(2, -1)
        lps = ipp[:, None] + np.outer(row, c * dc) + np.outer(col, r * dr)
        ijk = inv[:3, :3] @ (LPS[:3, :3] @ lps) + inv[:3, 3:4]
        np.testing.assert_allclose(ijk, np.rint(ijk), atol=1e-3)
        i, j, k = np.rint(ijk).astype(int)
        np.testing.assert_array_equal(vol.voxels[i, j, k], px.reshape(-1).astype(np.float64) * 2 - 100)
