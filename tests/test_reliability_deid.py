"""De-identification end to end: DICOM series carrying identifiers in the PS3.15 basic-profile attributes,
in private tags and as burned-in-style text in header fields go through ``dltr ingest`` (the CLI, on a
Dask cluster) and ``dltr store add-cohort``; none of those byte strings appears in any file of the store,
in any decoded table value or attribute, or in the captured stdout/stderr."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pydicom
import pytest
from kit.images import image_cohort

REPO = Path(__file__).resolve().parents[1]
UID_ROOT = "1.2.826.0.1.3680043.8.498.9"  # pydicom's example root + a marker digit

# PS3.15 Annex E basic application level confidentiality profile: attributes to remove or replace
# (a representative subset of Table E.1-1 that an MR export carries), each with a unique marker value.
PERSON_NAMES = ["PatientName", "OtherPatientNames", "PatientBirthName", "PatientMotherBirthName",
                "ReferringPhysicianName", "PerformingPhysicianName", "OperatorsName", "PhysiciansOfRecord",
                "NameOfPhysiciansReadingStudy", "RequestingPhysician"]
TEXTS = ["PatientID", "IssuerOfPatientID", "PatientAddress", "PatientTelephoneNumbers", "MilitaryRank",
         "Occupation", "AdditionalPatientHistory", "PatientComments", "InstitutionName", "InstitutionAddress",
         "InstitutionalDepartmentName", "ReferringPhysicianAddress", "StationName", "DeviceSerialNumber",
         "AccessionNumber", "StudyID", "StudyDescription", "SeriesDescription", "ProtocolName",
         "ImageComments", "RequestedProcedureDescription", "PerformedProcedureStepDescription",
         "PerformedProcedureStepID", "ScheduledProcedureStepID", "RequestedProcedureID", "AdmissionID",
         "MedicalRecordLocator", "ResponsiblePerson", "ResponsibleOrganization", "PatientInsurancePlanCodeSequence"]
DATES = ["PatientBirthDate", "AcquisitionDateTime"]
UIDS = ["StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID", "FrameOfReferenceUID",
        "MediaStorageSOPInstanceUID"]


def _plant(ds, pid: str, k: int, planted: dict[str, str]) -> None:
    """Put a unique identifier into every listed attribute, two private tags and burned-in-style text."""
    for i, kw in enumerate(PERSON_NAMES):
        v = f"Qzname{i}{pid}^Wendeline"
        setattr(ds, kw, v)
        planted[f"{kw}"] = v.split("^")[0]
    for i, kw in enumerate(TEXTS):
        if kw.endswith("Sequence"):
            continue
        v = f"QZT{i:02d}{pid}"
        if kw in ("SeriesDescription", "ImageComments"):  # burned-in-style annotation text
            v = f"Dr Qzannot{i}{pid} signed: patient Qzburnin{pid} Wendeline"
        setattr(ds, kw, v[:64] if kw not in ("PatientComments", "AdditionalPatientHistory", "ImageComments") else v)
        planted[kw] = v.split()[1] if " " in v else v
    ds.PatientBirthDate = "19411123"
    ds.AcquisitionDateTime = "19411124093000"
    planted["PatientBirthDate"], planted["AcquisitionDateTime"] = "19411123", "19411124093000"
    uid_tail = f"{int(pid[1:])}{k:03d}"
    for i, kw in enumerate(UIDS):
        v = f"{UID_ROOT}{i}.{uid_tail}.7{i}"
        if kw == "MediaStorageSOPInstanceUID":
            ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
            continue
        setattr(ds, kw, v)
        planted[kw] = v if kw != "SOPInstanceUID" else f"{UID_ROOT}{i}.{int(pid[1:])}"
    block = ds.private_block(0x0009, "QZ PRIVATE", create=True)
    block.add_new(0x10, "LO", f"QZPRIV{pid}")
    block.add_new(0x11, "LT", f"private note about Qzprivname{pid}")
    planted["private-LO"], planted["private-LT"] = f"QZPRIV{pid}", f"Qzprivname{pid}"


def _needles(planted: dict[str, str]) -> dict[str, bytes]:
    out = {}
    for kw, v in planted.items():
        out[kw] = v.encode()
        if kw.endswith("PatientBirthDate"):
            out[kw + "-iso"] = b"1941-11-23"
    return out


@pytest.fixture(scope="module")
def deid_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("deid")
    root, _ = image_cohort(tmp / "cohort", per_center=2, seed=12)  # P004, P005: DICOM series (center C)
    planted: dict[str, str] = {}
    per_patient: dict[str, dict[str, str]] = {}
    for pid in ("P004", "P005"):
        got: dict[str, str] = {}
        for phase in ("arterial", "portal"):
            for k, f in enumerate(sorted((root / "images" / pid / phase).glob("*.dcm"))):
                ds = pydicom.dcmread(str(f))
                _plant(ds, pid, k, got)
                ds.save_as(str(f))
        per_patient[pid] = got
        planted.update({f"{pid}:{k}": v for k, v in got.items()})
    # P005's portal series loses one slice: the failing path (error table, stderr) must not leak either
    files = sorted((root / "images" / "P005" / "portal").glob("*.dcm"),
                   key=lambda f: float(pydicom.dcmread(str(f)).ImagePositionPatient[2]))
    files[len(files) // 2].unlink()
    store = tmp / "store"
    env = {**os.environ, "PYTHONPATH": str(REPO), "DLTR_PROGRESS": "1"}
    logs = []
    for cmd in (["ingest", str(root), "--store", str(store), "--workers", "1", "--threads"],
                ["store", "add-cohort", str(root), "--store", str(store)],
                ["sql", "SELECT * FROM studies", "--store", str(store), "--format", "csv"],
                ["--debug", "sql", "SELECT * FROM clinical", "--store", str(store), "--format", "json"]):
        p = subprocess.run([sys.executable, "-m", "dltr", *cmd], cwd=REPO, env=env, capture_output=True, timeout=300)
        logs.append(p.stdout + p.stderr)
        assert p.returncode == 0, (cmd, p.stderr[-2000:])
    return root, store, planted, logs


def test_planted_identifiers_really_are_in_the_sources(deid_run):
    root, _, planted, _ = deid_run
    blob = b"".join(f.read_bytes() for f in (root / "images").rglob("*.dcm"))
    missing = [k for k, v in _needles(planted).items() if v not in blob and not k.endswith("-iso")]
    assert missing == [] and len(planted) >= 2 * 45  # the check below is not vacuous


def test_no_identifier_in_any_byte_of_store_tables_or_logs(deid_run):
    _, store, planted, logs = deid_run
    needles = _needles(planted)
    hay: dict[str, bytes] = {}
    for f in store.rglob("*"):
        if f.is_file():
            hay[str(f.relative_to(store))] = f.read_bytes()
            if f.suffix == ".parquet":  # compressed pages: scan the decoded values too
                hay[f"{f.relative_to(store)} (decoded)"] = json.dumps(pq.read_table(f).to_pylist(), default=str).encode()
                hay[f"{f.relative_to(store)} (metadata)"] = str(pq.read_metadata(f).metadata).encode()
    import zarr

    g = zarr.open_group(store / "volumes.zarr", mode="r")
    for pid in g.group_keys():
        hay[f"zarr attrs {pid}"] = json.dumps(dict(g[pid].attrs)).encode()
        for a in g[pid].array_keys():
            hay[f"zarr attrs {pid}/{a}"] = json.dumps(dict(g[pid][a].attrs)).encode()
    for i, log in enumerate(logs):
        hay[f"log {i}"] = log
    found = [(k, where) for k, v in needles.items() for where, blob in hay.items() if v in blob]
    assert len(hay) > 20 and found == []
    assert "P004" in g.group_keys() and "P005" not in g.group_keys()  # the sound DICOM patient was ingested
    errors = pq.read_table(store / "ingest" / "errors.parquet").to_pylist()
    assert [(e["patient_id"], e["code"]) for e in errors] == [("P005", "missing_slice")]


def test_voxels_survive_de_identification(deid_run):
    """Removing identifiers must not touch pixel data: the stored P004 arterial equals the DICOM pixels."""
    root, store, _, _ = deid_run
    import zarr

    arr = zarr.open_group(store / "volumes.zarr" / "P004", mode="r")["arterial"][...]
    slices = sorted((pydicom.dcmread(str(f)) for f in (root / "images" / "P004" / "arterial").glob("*.dcm")),
                    key=lambda d: float(d.ImagePositionPatient[2]))
    ref = np.stack([d.pixel_array.T for d in slices], axis=-1)[::-1, ::-1, :]  # LPS columns/rows -> RAS
    assert arr.shape == ref.shape and np.array_equal(arr, ref.astype(arr.dtype))


def test_uid_named_slice_file_does_not_leak_through_errors(tmp_path):
    root, _ = image_cohort(tmp_path / "cohort", per_center=1, seed=13)
    files = sorted((root / "images" / "P002" / "arterial").glob("*.dcm"))
    uids = []
    for k, f in enumerate(files):
        ds = pydicom.dcmread(str(f))
        ds.SOPInstanceUID = f"{UID_ROOT}8.{k}.424242"
        if k == 1:
            del ds.PixelData  # one slice without pixel data: a per-file error
        ds.save_as(str(f))
        f.rename(f.with_name(f"{ds.SOPInstanceUID}.dcm"))
        uids.append(ds.SOPInstanceUID)
    store = tmp_path / "store"
    p = subprocess.run([sys.executable, "-m", "dltr", "ingest", str(root), "--store", str(store), "--workers", "1",
                        "--threads"], cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)}, capture_output=True,
                       timeout=300)
    errors = json.dumps(pq.read_table(store / "ingest" / "errors.parquet").to_pylist())
    assert "no_pixel_data" in errors
    assert not [u for u in uids if u in errors or u.encode() in p.stderr]
