"""One patient, start to end (the unit of work a Dask worker runs): check the sources, skip if
unchanged, read + canonicalise + validate every phase and mask, resample, write the group.

Any error in any row of a patient leaves no output for that patient; each bad row gets its own
error record (file, manifest row, code, reason).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from dltr.cohort import mask_issue
from dltr.core.exceptions import StoreError
from dltr.core.hashing import content_hash, tree_sha256
from dltr.core.layout import StoreLayout, VolumeAttrs

from ._config import IngestConfig
from ._dicom import series_files
from ._errors import (
    EmptyMaskError,
    IngestReadError,
    MaskMismatchError,
    MissingFileError,
    PathOutsideCohortError,
)
from ._readers import reader_for
from ._volume import Volume, bbox, bbox_world, compact_image, compact_mask, resample, to_canonical
from ._writer import write_patient


@dataclass(frozen=True)
class Row:
    row: int  # 1-based data row of manifest.csv (the header is not counted)
    phase: str
    image: str  # relative to the cohort
    mask: str | None
    study_date: str | None


@dataclass(frozen=True)
class PatientTask:
    key: str  # patient_id as stored (the pseudonym when a key is configured)
    patient_id: str  # the manifest's patient_id (never written when pseudonymised)
    center: str
    rows: tuple[Row, ...]
    cohort_root: str
    store_root: str
    config: IngestConfig


@dataclass
class PatientResult:
    key: str
    status: str  # ok | skipped | failed
    errors: list[dict[str, Any]] = field(default_factory=list)
    source_bytes: int = 0
    written_bytes: int = 0
    volumes: int = 0


def _safe_path(task: PatientTask, rel: str) -> Path:
    """The resolved path of a manifest entry, refused when it (or, for a series folder, any file the
    reader would open in it, symlinks resolved) lies outside the cohort folder."""
    root = Path(task.cohort_root).resolve()
    p = (root / rel).resolve()
    if not p.is_relative_to(root):
        raise PathOutsideCohortError(f"{rel}: path leaves the cohort folder; give a path inside it")
    if not p.exists():
        raise MissingFileError(f"{rel}: file not found; fix the manifest path or restore the file")
    if p.is_dir():
        files = series_files(p)
        for k, f in enumerate(files, start=1):
            if not f.resolve().is_relative_to(root):  # named by ordinal: slice file names can be UIDs
                raise PathOutsideCohortError(f"{rel} slice {k} of {len(files)}: a link that leads outside the "
                                             "cohort folder; copy the file into the series folder")
    return p


def _rel(task: PatientTask, rel: str) -> str:
    return rel if task.key == task.patient_id else rel.replace(task.patient_id, task.key)


def _error(task: PatientTask, row: Row, file: str, e: Exception, stage: str) -> dict[str, Any]:
    reason = str(e).replace(str(Path(task.cohort_root).resolve()) + "/", "").replace(task.cohort_root + "/", "")
    if task.key != task.patient_id:
        reason = reason.replace(task.patient_id, task.key)
    return {"file": _rel(task, file), "row": row.row, "patient_id": task.key, "phase": row.phase, "stage": stage,
            "code": getattr(e, "code", type(e).__name__), "reason": reason}


def _checksums(task: PatientTask) -> tuple[dict[str, str], int, list[dict[str, Any]]]:
    sums, nbytes, errors = {}, 0, []
    for r in task.rows:
        for rel in (r.image, r.mask):
            if rel is None or rel in sums:
                continue
            try:
                p = _safe_path(task, rel)
            except IngestReadError as e:
                errors.append(_error(task, r, rel, e, "read"))
                continue
            sums[rel] = tree_sha256(p)
            nbytes += sum(f.stat().st_size for f in ([p] if p.is_file() else p.rglob("*")) if f.is_file())
    return sums, nbytes, errors


def _read(task: PatientTask, rel: str, *, mask: bool) -> Volume:
    p = _safe_path(task, rel)
    vol = to_canonical(reader_for(p).__class__(max_voxels=task.config.max_voxels,
                                                      max_bytes=task.config.max_bytes).read(p))
    conv = compact_mask if mask else compact_image
    return Volume(conv(vol.voxels, rel), vol.affine, vol.meta)


def _same_grid(a: Volume, b: Volume) -> bool:
    tol = 1e-3 * max(1.0, min(a.spacing))
    return a.voxels.shape == b.voxels.shape and np.allclose(a.affine, b.affine, atol=tol)


def _load(task: PatientTask, sums: dict[str, str]):
    images, masks, errors = {}, {}, []
    for r in task.rows:
        try:
            images[r.phase] = _read(task, r.image, mask=False)
        except IngestReadError as e:
            errors.append(_error(task, r, r.image, e, "read"))
            continue
        if r.mask is None:
            continue
        try:
            if r.mask not in masks:
                masks[r.mask] = _read(task, r.mask, mask=True)
            m = masks[r.mask]
            if not _same_grid(m, images[r.phase]):
                raise MaskMismatchError(
                    f"{r.mask}: mask grid {m.voxels.shape} {m.orientation} does not match image {r.image} grid "
                    f"{images[r.phase].voxels.shape} {images[r.phase].orientation} (in RAS); re-export the mask "
                    "on the image grid")
            if not m.voxels.any():
                raise EmptyMaskError(f"{r.mask}: mask has no non-zero voxel; segment the tumour or drop the row")
        except IngestReadError as e:
            errors.append(_error(task, r, r.mask, e, "validate"))
    return images, masks, errors


def run_patient(task: PatientTask) -> PatientResult:
    """Ingest one patient (idempotent: skipped when sources and output config are unchanged)."""
    store_root, cfg = Path(task.store_root), task.config
    res = PatientResult(task.key, "failed")
    sums, res.source_bytes, res.errors = _checksums(task)
    if res.errors:
        return res
    mask_row = next((r for r in task.rows if r.mask is not None), None)
    inputs = content_hash({"rows": [[r.phase, sums[r.image], sums.get(r.mask), r.study_date] for r in task.rows],
                           "center": task.center, "config": cfg.output_hash()})
    existing = StoreLayout.of(store_root).volume_attrs(task.key)
    if existing.exists() and _stored_inputs(existing) == inputs:
        res.status = "skipped"
        return res
    images, masks, res.errors = _load(task, sums)
    no_mask = mask_issue(task.patient_id, [r.mask for r in task.rows])  # the rule `dltr validate` applies
    if no_mask:
        res.errors.append(_error(task, task.rows[0], task.rows[0].image, EmptyMaskError(no_mask), "validate"))
    if res.errors:
        return res
    first = images[task.rows[0].phase]
    for r in task.rows[1:]:
        if not _same_grid(images[r.phase], first):
            res.errors.append(_error(task, r, r.image, MaskMismatchError(
                f"{r.image}: grid differs from phase {task.rows[0].phase!r}; register the phases to one grid"),
                "validate"))
    if res.errors:
        return res
    res.written_bytes = _write(task, images, masks[mask_row.mask], mask_row, sums, inputs)
    res.status, res.volumes = "ok", len(images)
    return res


def _stored_inputs(zarr_json: Path) -> str | None:
    try:
        return VolumeAttrs.read(zarr_json).get("input_sha256")
    except StoreError:  # no group yet, or one left unreadable: ingest (re)writes it
        return None


def _arr_attrs(task: PatientTask, vol: Volume, rel: str, sha: str, src_mb: float) -> dict[str, Any]:
    return {"affine": vol.affine.tolist(), "original_affine": vol.meta["original_affine"],
            "spacing": list(vol.spacing), "reader": vol.meta.get("reader"), "source_path": _rel(task, rel),
            "source_sha256": sha, "scl": vol.meta.get("scl", [1.0, 0.0]), "orientation": vol.meta["orientation"],
            "source_mb": src_mb}


def _size_mb(task: PatientTask, rel: str) -> float:
    p = Path(task.cohort_root) / rel
    files = [p] if p.is_file() else [f for f in p.rglob("*") if f.is_file()]
    return sum(os.path.getsize(f) for f in files) / 1e6


def _write(task, images, mask, mask_row, sums, inputs) -> int:
    cfg = task.config
    if cfg.target_spacing is not None:
        images = {k: resample(v, cfg.target_spacing, order=1) for k, v in images.items()}
        mask = resample(mask, cfg.target_spacing, order=0)
    box = bbox(mask.voxels)
    n_tumour = int(np.count_nonzero(mask.voxels))
    arrays = {}
    for r in task.rows:
        v = images[r.phase]
        attrs = _arr_attrs(task, v, r.image, sums[r.image], _size_mb(task, r.image))
        attrs["study_date"] = r.study_date or v.meta.get("study_date")
        arrays[r.phase] = (v.voxels, attrs)
    mattrs = _arr_attrs(task, mask, mask_row.mask, sums[mask_row.mask], _size_mb(task, mask_row.mask))
    arrays["mask"] = (mask.voxels, mattrs | {"n_tumour_voxels": n_tumour})
    gattrs = VolumeAttrs.build(
        patient_id=task.key, center=task.center, phases=[r.phase for r in task.rows], bbox_vox=box,
        bbox_world=bbox_world(box, mask.affine), spacing=mask.spacing, affine=mask.affine.tolist(),
        ingest_config_hash=cfg.output_hash(),
        source_sha256={r.phase: sums[r.image] for r in task.rows} | {"mask": sums[mask_row.mask]},
        input_sha256=inputs, n_tumour_voxels=n_tumour)
    return write_patient(Path(task.store_root), task.key, arrays, gattrs, cfg)
