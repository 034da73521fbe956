"""DICOM readers: a series folder (one file per slice) and one enhanced multi-frame file.

Both reduce to a list of 2-D slices with position, orientation, spacing and rescale, stacked by
``stack_slices``: sorted by position along the slice normal (never by file name or
InstanceNumber), duplicate, missing and irregular slices detected, RescaleSlope/Intercept applied
per slice, LPS converted to RAS. Only geometry, pixel values and StudyDate are read from the
header; no identifying attribute is copied anywhere.
"""

from __future__ import annotations

import datetime
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ._errors import (
    CorruptFileError,
    DuplicateSliceError,
    InconsistentGeometryError,
    IrregularSpacingError,
    MissingSliceError,
    NoPixelDataError,
    UnsupportedImageError,
)
from ._readers import LPS_TO_RAS, ImageReader
from ._volume import Volume

GAP_TOL = 0.1  # relative deviation of a slice step from the median step that counts as irregular


@dataclass
class Slice:
    position: np.ndarray  # ImagePositionPatient (LPS mm) of the first pixel's centre
    orientation: np.ndarray  # ImageOrientationPatient: row cosine, column cosine
    pixel_spacing: np.ndarray  # [between rows, between columns]
    pixels: np.ndarray  # (rows, columns)
    slope: float = 1.0
    inter: float = 0.0


def _floats(v, n: int, what: str, where: str) -> np.ndarray:
    try:
        a = np.asarray([float(x) for x in v], dtype=np.float64)
    except (TypeError, ValueError):
        a = np.zeros(0)
    if a.shape != (n,) or not np.isfinite(a).all():
        raise InconsistentGeometryError(f"{where}: {what} {v!r} is missing or not {n} numbers")
    return a


def stack_slices(slices: list[Slice], where: str, thickness: float | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Sort slices along the normal, check the steps and return ``(voxels (X, Y, Z), RAS affine)``."""
    iop, ps = slices[0].orientation, slices[0].pixel_spacing
    shape2 = slices[0].pixels.shape
    for s in slices[1:]:
        if not (np.allclose(s.orientation, iop, atol=1e-4) and np.allclose(s.pixel_spacing, ps, atol=1e-4)
                and s.pixels.shape == shape2):
            raise InconsistentGeometryError(f"{where}: slices differ in orientation, pixel spacing or size; "
                                            "give one series per image")
    row, col = iop[:3], iop[3:]
    normal = np.cross(row, col)
    dist = np.array([float(s.position @ normal) for s in slices])
    order = np.argsort(dist, kind="stable")
    slices, dist = [slices[i] for i in order], dist[order]
    if len(slices) > 1:
        steps = np.diff(dist)
        if np.any(steps < 1e-3):
            k = int(np.argmin(steps))
            raise DuplicateSliceError(f"{where}: two slices at position {dist[k]:.3f} mm along the normal; "
                                      "remove the duplicate file")
        step = float(np.median(steps))
        bad = np.flatnonzero(np.abs(steps - step) > GAP_TOL * step)
        if bad.size:
            k = int(bad[0])
            ratio = steps[k] / step
            if abs(ratio - round(ratio)) <= GAP_TOL and round(ratio) >= 2:
                raise MissingSliceError(f"{where}: {round(ratio) - 1} slice(s) missing between {dist[k]:.3f} and "
                                        f"{dist[k + 1]:.3f} mm (step {step:.3f} mm); restore the series")
            raise IrregularSpacingError(f"{where}: slice step {steps[k]:.3f} mm at {dist[k]:.3f} mm differs from "
                                        f"the median {step:.3f} mm; resample the series to even spacing")
        inplane = slices[1].position - slices[0].position - steps[0] * normal
        if np.linalg.norm(inplane) > GAP_TOL * step:
            raise UnsupportedImageError(f"{where}: slices shift in-plane along the stack (tilted gantry); "
                                        "reconstruct to an orthogonal stack")
    else:
        step = float(thickness) if thickness and thickness > 0 else 1.0
    vox = np.stack([s.pixels.T.astype(np.float64) * s.slope + s.inter
                    if (s.slope, s.inter) != (1.0, 0.0) else s.pixels.T for s in slices], axis=-1)
    lps = np.eye(4)
    lps[:3, 0] = row * ps[1]  # i runs along a row (increasing column index)
    lps[:3, 1] = col * ps[0]  # j runs down a column (increasing row index)
    lps[:3, 2] = normal * step
    lps[:3, 3] = slices[0].position
    return vox, LPS_TO_RAS @ lps


def _integral_rescale(slices: list[Slice]) -> bool:
    return all(s.slope == int(s.slope) and s.inter == int(s.inter) for s in slices)


def _finish(vox: np.ndarray, slices: list[Slice]) -> np.ndarray:
    if vox.dtype.kind == "f" and _integral_rescale(slices) and all(s.pixels.dtype.kind in "iu" for s in slices):
        return np.rint(vox).astype(np.int64)
    return vox


def _study_date(ds) -> str | None:
    """StudyDate (DA, ``YYYYMMDD``) as ISO ``YYYY-MM-DD``; None unless it is a real calendar date."""
    v = str(ds.get("StudyDate", "") or "").strip()
    if len(v) != 8 or not v.isascii() or not v.isdigit():
        return None
    try:
        return datetime.date(int(v[:4]), int(v[4:6]), int(v[6:8])).isoformat()
    except ValueError:
        return None


def series_files(path: Path) -> list[Path]:
    """The files of a series folder (or the one file), in name order: the listing every reader step uses."""
    return sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]


def slice_where(path: Path, k: int, n: int) -> str:
    """How an error names one slice: the series folder and the slice's ordinal, never the file name
    (exports often name slice files by SOPInstanceUID)."""
    return f"{path} slice {k} of {n}" if path.is_dir() else str(path)


def _pixels(ds, where: str) -> np.ndarray:
    if "PixelData" not in ds and "FloatPixelData" not in ds and "DoubleFloatPixelData" not in ds:
        raise NoPixelDataError(f"{where}: DICOM file has no pixel data; drop it from the series")
    if int(ds.get("SamplesPerPixel", 1)) != 1:
        raise UnsupportedImageError(f"{where}: {ds.SamplesPerPixel} samples per pixel; give a greyscale series")
    return np.asarray(ds.pixel_array)


def is_multiframe(path: Path) -> bool:
    import pydicom

    try:
        ds = pydicom.dcmread(str(path), stop_before_pixels=True, force=True)
    except Exception:  # noqa: BLE001 - the reader proper names the failure
        return False
    return "PerFrameFunctionalGroupsSequence" in ds or int(ds.get("NumberOfFrames", 1) or 1) > 1


class DicomSeriesReader(ImageReader):
    """A folder of single-frame DICOM files holding one series (or one single-frame file)."""

    name = "dicom-series"

    def _read(self, path: Path) -> Volume:
        import pydicom

        files = series_files(path)
        if not files:
            raise CorruptFileError(f"{path}: folder holds no DICOM files")
        self._check_size(path, (1, 1, len(files)))
        slices, thick, date = [], None, None
        for k, f in enumerate(files, start=1):
            where = slice_where(path, k, len(files))
            try:
                ds = pydicom.dcmread(str(f))
            except Exception as e:  # noqa: BLE001 - pydicom raises many types on bad bytes
                raise CorruptFileError(f"{where}: not a readable DICOM file ({type(e).__name__}); "
                                       "remove or re-export it") from None
            if "PerFrameFunctionalGroupsSequence" in ds or int(ds.get("NumberOfFrames", 1) or 1) > 1:
                raise UnsupportedImageError(f"{where}: multi-frame file inside a series folder; "
                                            "give it as its own manifest image")
            if "MOSAIC" in [str(t).upper() for t in ds.get("ImageType", [])]:
                raise UnsupportedImageError(f"{where}: Siemens mosaic images are not supported; "
                                            "convert with dcm2niix first")
            self._check_size(path, (int(ds.get("Rows", 0)), int(ds.get("Columns", 0)), len(files)))
            px = _pixels(ds, where)
            slices.append(Slice(
                _floats(ds.get("ImagePositionPatient"), 3, "ImagePositionPatient", where),
                _floats(ds.get("ImageOrientationPatient"), 6, "ImageOrientationPatient", where),
                _floats(ds.get("PixelSpacing"), 2, "PixelSpacing", where), px,
                float(ds.get("RescaleSlope", 1) or 1), float(ds.get("RescaleIntercept", 0) or 0)))
            thick = thick or _positive(ds.get("SpacingBetweenSlices")) or _positive(ds.get("SliceThickness"))
            date = date or _study_date(ds)
        vox, affine = stack_slices(slices, str(path), thick)
        return Volume(_finish(vox, slices), affine, {"study_date": date, "n_files": len(files),
                                                     "scl": [slices[0].slope, slices[0].inter]})


def _positive(v) -> float | None:
    try:
        x = float(v)
    except (TypeError, ValueError):
        return None
    return x if np.isfinite(x) and x > 0 else None


def _group(frame, shared, seq: str):
    """First item of functional group ``seq``: the per-frame one, else the shared one."""
    for g in (frame, shared):
        if g is not None and g.get(seq):
            return g.get(seq)[0]
    return None


class DicomMultiframeReader(ImageReader):
    """One enhanced (multi-frame) DICOM file: geometry from the shared and per-frame functional groups."""

    name = "dicom-multiframe"

    def _read(self, path: Path) -> Volume:
        import pydicom

        ds = pydicom.dcmread(str(path))
        where = str(path)
        nf = int(ds.get("NumberOfFrames", 1) or 1)
        self._check_size(path, (int(ds.get("Rows", 0)), int(ds.get("Columns", 0)), nf))
        px = _pixels(ds, where)
        px = px.reshape((nf,) + px.shape[-2:])
        shared = ds.get("SharedFunctionalGroupsSequence", [None])[0]
        per = ds.get("PerFrameFunctionalGroupsSequence", [])
        if len(per) != nf:
            raise InconsistentGeometryError(f"{where}: {len(per)} per-frame groups for {nf} frames")

        slices = []
        for k, f in enumerate(per):
            w = f"{where} frame {k + 1}"
            pos, ori = _group(f, shared, "PlanePositionSequence"), _group(f, shared, "PlaneOrientationSequence")
            meas, pvt = _group(f, shared, "PixelMeasuresSequence"), _group(f, shared, "PixelValueTransformationSequence")
            src = pvt if pvt is not None else ds
            slices.append(Slice(
                _floats(pos.get("ImagePositionPatient") if pos else None, 3, "ImagePositionPatient", w),
                _floats(ori.get("ImageOrientationPatient") if ori else None, 6, "ImageOrientationPatient", w),
                _floats(meas.get("PixelSpacing") if meas else None, 2, "PixelSpacing", w), px[k],
                float(src.get("RescaleSlope", 1) or 1), float(src.get("RescaleIntercept", 0) or 0)))
        meas = _group(None, shared, "PixelMeasuresSequence")
        thick = (_positive(meas.get("SpacingBetweenSlices")) or _positive(meas.get("SliceThickness"))) if meas else None
        vox, affine = stack_slices(slices, where, thick)
        return Volume(_finish(vox, slices), affine, {"study_date": _study_date(ds), "n_frames": nf,
                                                     "scl": [slices[0].slope, slices[0].inter]})
