"""Uploads for the scoring service: bounded, checked before decoding, de-identified on arrival.

An upload is a set of named parts: ``<name>.nii`` / ``<name>.nii.gz`` files (NIfTI) or, inside a zip,
``<name>/`` folders of DICOM files, where ``name`` is a phase of the head's ``RoiConfig`` (more phases
are allowed) or ``mask``. Before any pixel is decoded: the request size (middleware), the zip's
entry names (no absolute path, no ``..``: zip-slip), entry count and declared uncompressed sizes,
the NIfTI header's ``dim`` / the DICOM ``Rows``, ``Columns``, ``NumberOfFrames`` against the bounds.
De-identification: files are renamed to their part name; NIfTI ``descrip``, ``aux_file``,
``intent_name``, ``db_name`` are blanked (pixel bytes untouched); DICOM person, institution and
device attributes and private tags are deleted and UIDs replaced by ones derived from a per-request salt.
"""

from __future__ import annotations

import csv
import datetime as dt
import gzip
import re
import secrets
import zipfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from dltr.core.exceptions import DltrError

from ._stage import SCORING_KEY, StagedPatient

__all__ = ["ServeLimits", "UploadError", "build_upload_cohort", "check_clinical"]

_NAME = re.compile(r"^[a-z][a-z0-9_]{0,31}$")
_COLUMN = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,63}$")
_DICOM_DROP = ("PatientName", "PatientID", "PatientBirthDate", "PatientSex", "PatientAge", "OtherPatientIDs",
               "OtherPatientNames", "PatientAddress", "PatientTelephoneNumbers", "AccessionNumber",
               "InstitutionName", "InstitutionAddress", "ReferringPhysicianName", "PerformingPhysicianName",
               "OperatorsName", "StationName", "DeviceSerialNumber", "StudyID", "RequestingPhysician")
_DICOM_UIDS = ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID", "FrameOfReferenceUID")


class UploadError(DltrError, ValueError):
    """A request the service refuses; ``status`` is the HTTP status (4xx) it answers with."""

    def __init__(self, message: str, status: int = 422):
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class ServeLimits:
    """Bounds checked before anything is decoded."""

    max_request_mb: float = 256.0
    max_dim: int = 1024            # per axis
    max_voxels: int = 512 * 512 * 512  # per volume
    max_zip_entries: int = 4096
    max_unzipped_mb: float = 1024.0

    def to_dict(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in self.__dataclass_fields__}


def _check_dims(what: str, dims: list[int], limits: ServeLimits) -> None:
    n = 1
    for d in dims:
        n *= max(int(d), 1)
    if any(int(d) > limits.max_dim for d in dims) or n > limits.max_voxels:
        raise UploadError(f"{what}: declared dimensions {list(map(int, dims))} exceed the bound "
                          f"({limits.max_dim} per axis, {limits.max_voxels} voxels); send a smaller volume", 413)


# -- NIfTI --------------------------------------------------------------------------------------------
def _nifti_header(raw: bytes, what: str):
    import nibabel as nib

    for cls in (nib.Nifti1Header, nib.Nifti2Header):
        try:
            return cls.from_fileobj(_Bytes(raw[:cls.sizeof_hdr]), check=True)
        except Exception:  # noqa: BLE001 - try the other version; neither -> the error below
            continue
    raise UploadError(f"{what}: not a readable NIfTI-1/2 header; send a .nii or .nii.gz file")


class _Bytes:
    def __init__(self, b: bytes):
        import io

        self._f = io.BytesIO(b)

    def read(self, n: int = -1) -> bytes:
        return self._f.read(n)


def _open_nifti(path: Path):
    return gzip.open(path, "rb") if path.name.endswith(".gz") else path.open("rb")


def nifti_part(src: Path, dst: Path, what: str, limits: ServeLimits) -> None:
    """Check the header's declared size, then write a de-identified copy (pixel bytes unchanged)."""
    try:
        with _open_nifti(src) as f:
            head = f.read(544)
    except (OSError, EOFError, gzip.BadGzipFile) as e:
        raise UploadError(f"{what}: cannot read the file ({type(e).__name__}); send a .nii or .nii.gz") from None
    hdr = _nifti_header(head, what)
    dims = [int(d) for d in hdr["dim"][1:1 + int(hdr["dim"][0])]] if 0 < int(hdr["dim"][0]) <= 7 else [0]
    if dims == [0] or min(dims) < 1:
        raise UploadError(f"{what}: NIfTI header dim {list(map(int, hdr['dim']))} is not a valid volume shape")
    _check_dims(what, dims, limits)
    need = int(hdr.get_data_offset()) + int(hdr["bitpix"]) // 8 * _prod(dims)
    try:
        with _open_nifti(src) as f:
            data = f.read(need + 1)
    except (OSError, EOFError, gzip.BadGzipFile, ValueError) as e:
        raise UploadError(f"{what}: the file body cannot be read ({type(e).__name__})") from None
    if len(data) < need:
        raise UploadError(f"{what}: the file holds {len(data)} bytes, fewer than its header declares ({need})")
    for key in ("descrip", "aux_file", "intent_name", "db_name"):
        if key in hdr:
            hdr[key] = b""
    block = hdr.binaryblock
    with gzip.open(dst, "wb", compresslevel=1) as out:
        out.write(block + data[len(block):need])


def _prod(dims: list[int]) -> int:
    n = 1
    for d in dims:
        n *= d
    return n


# -- DICOM --------------------------------------------------------------------------------------------
def _dicom_check(path: Path, what: str, limits: ServeLimits) -> tuple[int, int, int]:
    import pydicom

    try:
        ds = pydicom.dcmread(str(path), stop_before_pixels=True)
    except Exception:  # noqa: BLE001 - any parse failure is the client's file
        raise UploadError(f"{what}: not a readable DICOM file") from None
    rows, cols = int(ds.get("Rows", 0) or 0), int(ds.get("Columns", 0) or 0)
    frames = int(ds.get("NumberOfFrames", 1) or 1)
    _check_dims(what, [rows, cols, frames], limits)
    return rows, cols, frames


def _dicom_deidentify(path: Path, salt: str) -> None:
    import pydicom
    from pydicom.uid import generate_uid

    ds = pydicom.dcmread(str(path))
    for kw in _DICOM_DROP:
        if kw in ds:
            delattr(ds, kw)
    ds.remove_private_tags()
    for kw in _DICOM_UIDS:
        if kw in ds:
            setattr(ds, kw, generate_uid(entropy_srcs=[salt, str(ds.get(kw))]))
    meta = getattr(ds, "file_meta", None)
    if meta is not None and "MediaStorageSOPInstanceUID" in meta and "SOPInstanceUID" in ds:
        meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.save_as(str(path), enforce_file_format=False)


# -- zip ----------------------------------------------------------------------------------------------
def _zip_parts(zpath: Path, dst: Path, limits: ServeLimits) -> dict[str, Path]:
    """Extract a zip's ``<name>.nii[.gz]`` files and ``<name>/`` DICOM folders after checking every entry."""
    try:
        zf = zipfile.ZipFile(zpath)
    except (zipfile.BadZipFile, OSError):
        raise UploadError("dicom_zip: not a readable zip archive") from None
    with zf:
        infos = [i for i in zf.infolist() if not i.is_dir()]
        if len(infos) > limits.max_zip_entries:
            raise UploadError(f"dicom_zip: {len(infos)} entries exceed the bound {limits.max_zip_entries}", 413)
        if sum(i.file_size for i in infos) > limits.max_unzipped_mb * 1e6:
            raise UploadError(f"dicom_zip: declared uncompressed size exceeds {limits.max_unzipped_mb} MB", 413)
        plan = []
        for k, info in enumerate(infos):
            p = PurePosixPath(info.filename.replace("\\", "/"))
            if info.filename.startswith(("/", "\\")) or ".." in p.parts or (p.parts and ":" in p.parts[0]):
                raise UploadError(f"dicom_zip: entry #{k + 1} has a path that escapes its folder "
                                  "(absolute or '..'); zip the series folders with relative paths", 400)
            plan.append((info, p))
        parts: dict[str, Path] = {}
        for k, (info, p) in enumerate(plan):
            top = p.parts[0] if p.parts else ""
            name = top[:-7] if top.endswith(".nii.gz") else top[:-4] if top.endswith(".nii") else top
            if not _NAME.match(name) or (len(p.parts) == 1) == (name == top):
                continue  # not a part (README, .DS_Store, ...): ignored, never extracted
            target = dst / "zip" / (name if len(p.parts) > 1 else top)
            if len(p.parts) > 1:
                target = target / f"{k:05d}.dcm"
            target.parent.mkdir(parents=True, exist_ok=True)
            with zf.open(info) as src, target.open("wb") as out:
                out.write(src.read(info.file_size + 1)[:info.file_size])
            parts[name] = target if len(p.parts) == 1 else target.parent
        return parts


# -- assembling the cohort ------------------------------------------------------------------------
def check_clinical(clinical: Any, required: tuple[str, ...]) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """(clinical row without labs, lab rows) after checking keys, types and required fields."""
    if not isinstance(clinical, dict):
        raise UploadError("clinical: give a JSON object of clinical fields")
    row, labs = dict(clinical), clinical.get("labs") or []
    row.pop("labs", None)
    row.pop("patient_id", None)  # never used: the upload is scored under a neutral key
    bad = [k for k in row if not isinstance(k, str) or not _COLUMN.match(k)]
    if bad:
        raise UploadError(f"clinical: {len(bad)} field name(s) are not plain identifiers ([A-Za-z_][A-Za-z0-9_]*)")
    for k, v in row.items():
        if v is not None and not isinstance(v, (str, int, float, bool)):
            raise UploadError(f"clinical: field {k!r} must be a string, number, boolean or null")
        if isinstance(v, str) and (len(v) > 200 or any(c in v for c in "\r\n\x00")):
            raise UploadError(f"clinical: field {k!r} is longer than 200 characters or holds a line break")
    missing = [k for k in ("center", "tace_date", *required) if k not in row]
    if missing:
        raise UploadError(f"clinical: required field(s) {missing} missing; give them (null where unknown, "
                          "except center and tace_date)")
    for k in ("center", "tace_date"):
        if not isinstance(row[k], str) or not row[k]:
            raise UploadError(f"clinical: {k} must be a non-empty string")
    _iso(row["tace_date"], "clinical: tace_date", date_only=True)
    if not isinstance(labs, list) or not all(isinstance(x, dict) for x in labs) or len(labs) > 1000:
        raise UploadError("clinical.labs: give a list (at most 1000) of {name, value, measured_at[, recorded_at, unit]}")
    out = []
    for i, x in enumerate(labs):
        name, value = x.get("name"), x.get("value")
        if not isinstance(name, str) or not _COLUMN.match(name):
            raise UploadError(f"clinical.labs[{i}]: name must be a plain identifier")
        if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float))):
            raise UploadError(f"clinical.labs[{i}]: value must be a number or null")
        measured = _iso(x.get("measured_at"), f"clinical.labs[{i}].measured_at")
        recorded = _iso(x["recorded_at"], f"clinical.labs[{i}].recorded_at") if x.get("recorded_at") else measured
        unit = x.get("unit")
        out.append({"patient_id": SCORING_KEY, "name": name, "value": "" if value is None else repr(float(value)),
                    "unit": unit if isinstance(unit, str) and _COLUMN.match(unit.replace("/", "_")) else "",
                    "measured_at": measured, "recorded_at": recorded})
    return row, out


def _iso(v: Any, what: str, date_only: bool = False) -> str:
    try:
        if not isinstance(v, str) or len(v) > 40:
            raise ValueError
        parsed = dt.date.fromisoformat(v) if date_only else dt.datetime.fromisoformat(v)
    except ValueError:
        raise UploadError(f"{what}: {'an ISO date YYYY-MM-DD' if date_only else 'an ISO date-time'} is required") \
            from None
    return parsed.isoformat()


def _write_csv(path: Path, rows: list[dict[str, Any]], header: list[str]) -> None:
    with path.open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=header)
        w.writeheader()
        w.writerows(rows)


def build_upload_cohort(work: Path, files: dict[str, Path], zip_path: Path | None, clinical: Any,
                        phases: tuple[str, ...], required: tuple[str, ...], limits: ServeLimits) -> StagedPatient:
    """Check and de-identify the parts into ``work/cohort`` (the layout ``stage_cohort`` produces)."""
    row, labs = check_clinical(clinical, required)
    parts = dict(files)
    if zip_path is not None:
        parts.update(_zip_parts(zip_path, work, limits))
    missing = [p for p in (*phases, "mask") if p not in parts]
    if missing:
        raise UploadError(f"upload: part(s) {missing} missing; send <phase>.nii.gz files or <phase>/ DICOM "
                          f"folders in a zip for phases {list(phases)} and the mask")
    cohort, salt = work / "cohort", secrets.token_hex(16)
    (cohort / "images").mkdir(parents=True)
    rel: dict[str, str] = {}
    for name, src in sorted(parts.items()):
        if src.is_dir():
            dst = cohort / "images" / name
            dst.mkdir()
            dims = None
            files_ = sorted(f for f in src.iterdir() if f.is_file())
            for f in files_:
                dims = _dicom_check(f, f"{name}/", limits)
            if dims is None:
                raise UploadError(f"{name}/: the folder holds no DICOM file")
            _check_dims(f"{name}/", [dims[0], dims[1], dims[2] * len(files_)], limits)
            for i, f in enumerate(files_):
                target = dst / f"{i:05d}.dcm"
                f.replace(target)
                _dicom_deidentify(target, salt)
            rel[name] = f"images/{name}"
        else:
            nifti_part(src, cohort / "images" / f"{name}.nii.gz", f"{name}.nii.gz", limits)
            src.unlink()
            rel[name] = f"images/{name}.nii.gz"
    man = [{"patient_id": SCORING_KEY, "phase": p, "image": rel[p], "mask": rel["mask"], "study_date": ""}
           for p in sorted(rel) if p != "mask"]
    _write_csv(cohort / "manifest.csv", man, ["patient_id", "phase", "image", "mask", "study_date"])
    clin = {"patient_id": SCORING_KEY, **{k: "" if v is None else str(v) for k, v in row.items()}}
    _write_csv(cohort / "clinical.csv", [clin], list(clin))
    _write_csv(cohort / "labs.csv", labs, ["patient_id", "name", "value", "unit", "measured_at", "recorded_at"])
    return StagedPatient(cohort, str(row["center"]), None)
