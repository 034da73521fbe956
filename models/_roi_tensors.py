"""Materialised encoder inputs: the ROI tensors of every patient, a versioned feature set in the store.

Decoding and resampling a study costs several times the encoder's forward pass on the CPU, and it
gives the same tensor for every encoder trained with the same ``RoiConfig``. ``materialise_rois``
runs the DALI ROI pipeline once and publishes its output as feature set ``roi_tensors``: one row per
patient, ``embedding`` = the flattened (C, X, Y, Z) float32 tensor (stored packed, one binary value a row:
``features.PACKED``; the store's readers unpack it), ``roi_box`` = the box read,
``input_checksum`` = the hash of the source checksums of the phases and the mask (the same as every
feature row's). Its lineage holds the ``preprocess_hash`` (``RoiConfig.content_hash()``), the recipe
and the ``inputs_hash``, so a version is the content hash of exactly what made it.

A reader (``find_roi_tensors``) takes only rows of a version with the same ``preprocess_hash`` whose
``input_checksum`` equals the patient's current one: a re-ingested volume or another ``RoiConfig``
never reuses a stale tensor (those patients are read from the volumes).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from dltr.core.exceptions import StoreError
from dltr.core.hashing import content_hash
from dltr.core.layout import StoreLayout
from pipeline.loaders import RoiConfig

ROI_TENSORS = "roi_tensors"
PRODUCER = "models.roi_tensors"
INPUT_SCHEMA = pa.schema([("patient_id", pa.string()), ("center", pa.string()),
                          ("phases", pa.list_(pa.string())), ("input_checksum", pa.string()),
                          ("itemsize", pa.int32())])
TENSOR_COLUMNS = ("patient_id", "center", "phases", "roi_box", "input_checksum", "embedding")


def input_checksum(phase_sha: dict[str, str], mask_sha: str) -> str:
    """Hash of the source checksums of the phases (in encoder order) and the mask."""
    return content_hash({"phases": [[p, s] for p, s in phase_sha.items()], "mask": mask_sha}, length=32)


def studies_table(store, store_root: str | Path) -> pa.Table:
    """The registered ``studies`` table, else the ingest's own studies table (before ``store add-cohort``)."""
    try:
        return store.table("studies")
    except (StoreError, KeyError, FileNotFoundError):
        path = StoreLayout.of(store_root).studies
        if not path.is_file():
            raise StoreError(f"{store_root}: no studies table (neither registered nor {path}); run "
                             "`dltr ingest` and `dltr store add-cohort`") from None
        return pq.read_table(path)


def roi_inputs(store, store_root: str | Path, roi: RoiConfig) -> tuple[pa.Table, list[dict[str, Any]]]:
    """(one row per patient with every phase of ``roi`` and a mask: ``INPUT_SCHEMA``, sorted by patient_id;
    the patients left out, with the reason)."""
    by_pid: dict[str, dict[str, Any]] = {}
    for r in studies_table(store, store_root).to_pylist():
        if r.get("status", "ok") != "ok":
            continue
        d = by_pid.setdefault(str(r["patient_id"]), {"center": str(r["center"]), "phase": {}, "mask": None,
                                                      "itemsize": 2})
        d["phase"][str(r["phase"])] = str(r["source_sha256"])
        d["mask"] = d["mask"] or r.get("mask_sha256")
        if r.get("dtype"):
            d["itemsize"] = int(np.dtype(str(r["dtype"])).itemsize)
    rows, excluded = [], []
    for pid in sorted(by_pid):
        d = by_pid[pid]
        missing = [p for p in roi.phases if p not in d["phase"]]
        if missing or not d["mask"]:
            excluded.append({"patient_id": pid, "center": d["center"], "stage": "scope",
                             "reason": f"studies table has no ok row for phase(s) {missing or ['mask']}"})
            continue
        rows.append({"patient_id": pid, "center": d["center"], "phases": list(roi.phases),
                     "input_checksum": input_checksum({p: d["phase"][p] for p in roi.phases}, d["mask"]),
                     "itemsize": d["itemsize"]})
    return pa.Table.from_pylist(rows, schema=INPUT_SCHEMA), excluded


def tensor_dim(roi: RoiConfig) -> int:
    return roi.n_channels * int(np.prod(roi.grid))


def tensor_rows(inputs: pa.Table, x: np.ndarray, boxes: np.ndarray) -> pa.Table:
    """Feature rows of the tensor set: ``inputs`` rows (``INPUT_SCHEMA``) + their tensors (N, C, X, Y, Z)."""
    n = inputs.num_rows
    flat = np.ascontiguousarray(x, dtype=np.float32).reshape(n, -1)
    return pa.table({
        "patient_id": inputs.column("patient_id"), "center": inputs.column("center"),
        "phases": inputs.column("phases"),
        "roi_box": pa.array([b.astype(np.int32).tolist() for b in np.asarray(boxes).reshape(n, 6)],
                            pa.list_(pa.int32())),
        "input_checksum": inputs.column("input_checksum"),
        "embedding": pa.FixedSizeListArray.from_arrays(pa.array(flat.ravel()), flat.shape[1]),
    })


def tensor_lineage(roi: RoiConfig, inputs: pa.Table) -> dict[str, Any]:
    """The version's lineage; its tensors are stored packed (one binary value a row: read as a memory copy)."""
    from features import PACKED, STORAGE_KEY

    return {"preprocess_hash": roi.content_hash(), "preprocess": roi.to_dict(),
            "layout": ["channel", "x", "y", "z"], "shape": [roi.n_channels, *roi.grid], "dtype": "float32",
            "inputs_hash": content_hash(sorted(inputs.column("input_checksum").to_pylist())),
            STORAGE_KEY: PACKED}


@dataclass
class RoiTensorHit:
    """Rows of one published ``roi_tensors`` version that are current for the patients asked."""

    ref: str
    files: list[Path]
    patient_ids: list[str]

    def read(self, patient_ids=None) -> pa.Table:
        """The tensor rows of ``patient_ids`` (default: every hit), in no particular order."""
        want = pa.array(sorted(self.patient_ids if patient_ids is None else patient_ids), pa.string())
        parts = [pq.read_table(f, filters=pc.field("patient_id").isin(want)) for f in self.files]
        return pa.concat_tables(parts) if parts else pa.table({})


def _versions(store) -> list[Any]:
    try:
        return list(store.versions(ROI_TENSORS)) if ROI_TENSORS in store.feature_sets() else []
    except (StoreError, KeyError):
        return []


def find_roi_tensors(store, roi: RoiConfig, want: dict[str, str]) -> RoiTensorHit | None:
    """The newest ``roi_tensors`` version made with ``roi`` and its rows whose ``input_checksum`` is the
    patient's current one (``want``: patient_id -> checksum); None when no version has any."""
    pre = roi.content_hash()
    for v in sorted(_versions(store), key=lambda v: v.created_at, reverse=True):
        if v.lineage.get("preprocess_hash") != pre or v.dim != tensor_dim(roi):
            continue
        files = sorted((store.root / v.path).glob("center=*/*.parquet"))
        keys = pa.concat_tables([pq.read_table(f, columns=["patient_id", "input_checksum"]) for f in files])
        ids = [p for p, c in zip(keys.column(0).to_pylist(), keys.column(1).to_pylist(), strict=True)
               if want.get(p) == c]
        if ids:
            return RoiTensorHit(v.ref, files, ids)
    return None


def tensor_writer(store, roi: RoiConfig, inputs: pa.Table):
    """(a staged writer of the ``roi_tensors`` version of exactly ``inputs`` (``INPUT_SCHEMA`` rows), or
    None when that version is already published; its reference ``roi_tensors@VERSION``)."""
    from features import version_id_of

    lineage = tensor_lineage(roi, inputs)
    vid = version_id_of(ROI_TENSORS, PRODUCER, lineage)
    if any(v.version_id == vid for v in _versions(store)):
        return None, f"{ROI_TENSORS}@{vid}"
    return store.feature_writer(ROI_TENSORS, vid, PRODUCER, lineage, tensor_dim(roi)), f"{ROI_TENSORS}@{vid}"


def copy_current(writer, hit: RoiTensorHit | None) -> int:
    """Stage the rows of ``hit`` not yet staged in ``writer``; returns how many."""
    if hit is None:
        return 0
    todo = sorted(set(hit.patient_ids) - writer.done_keys())
    return writer.write(hit.read(todo).select(list(TENSOR_COLUMNS))) if todo else 0


@dataclass
class MaterialiseReport:
    """What one ``materialise_rois`` call did (``status``: published, exists, partial)."""

    ref: str
    status: str
    n_scope: int
    n_reused: int = 0
    n_computed: int = 0
    errors: dict[str, str] = field(default_factory=dict)
    seconds: float = 0.0


def _load(pipe, ids: list[str]) -> tuple[list[str], np.ndarray | None, np.ndarray | None, dict[str, str]]:
    """(ids loaded, their tensors, boxes, errors): a batch that fails is retried patient by patient."""
    try:
        x, boxes = pipe.run(ids)
        return ids, x.numpy(), np.asarray(boxes), {}
    except Exception:  # noqa: BLE001 - one unreadable patient must not sink its batch
        pass
    ok, xs, bs, errors = [], [], [], {}
    for p in ids:
        try:
            x, b = pipe.run([p])
        except Exception as e:  # noqa: BLE001 - left out of the set; extraction reads it from the volumes
            errors[p] = f"{type(e).__name__}: {e}".splitlines()[0][:500]
            continue
        ok.append(p)
        xs.append(x.numpy())
        bs.append(np.asarray(b))
    if not ok:
        return [], None, None, errors
    return ok, np.concatenate(xs), np.concatenate(bs), errors


def materialise_rois(store_root: str | Path, roi: RoiConfig, *, patient_ids=None, batch_size: int = 8,
                     num_threads: int = 2) -> MaterialiseReport:
    """Publish the encoder-input tensors of every patient in scope (or ``patient_ids``) as a version of
    ``roi_tensors``: current rows of earlier versions with the same ``RoiConfig`` are copied, the rest
    loaded with ``DaliRoiPipeline`` (the loader every extraction and training run uses), batch by batch
    into staged parts (resumable). Patients that fail to load are left out (``status="partial"``)."""
    from features import FeatureStore
    from pipeline.loaders import DaliRoiPipeline

    t0 = time.perf_counter()
    store = FeatureStore(store_root)
    inputs, _ = roi_inputs(store, store_root, roi)
    if patient_ids is not None:
        inputs = inputs.filter(pc.is_in(inputs.column("patient_id"), pa.array([str(p) for p in patient_ids])))
    if inputs.num_rows == 0:
        raise StoreError(f"{store_root}: no patient with every phase {list(roi.phases)} and a mask to materialise")
    writer, ref = tensor_writer(store, roi, inputs)
    report = MaterialiseReport(ref, "exists", inputs.num_rows)
    if writer is None:
        return report
    try:
        done = writer.done_keys()
        want = {p: c for p, c in zip(inputs.column("patient_id").to_pylist(),
                                     inputs.column("input_checksum").to_pylist(), strict=True) if p not in done}
        report.n_reused = copy_current(writer, find_roi_tensors(store, roi, want))
        done = writer.done_keys()
        todo = inputs.filter(pc.invert(pc.is_in(inputs.column("patient_id"), pa.array(sorted(done), pa.string()))))
        ids = todo.column("patient_id").to_pylist()
        step = batch_size * 4
        with DaliRoiPipeline(store_root, roi, batch_size, num_threads=num_threads) as pipe:
            for s in range(0, len(ids), step):
                ok, x, boxes, errors = _load(pipe, ids[s:s + step])
                report.errors.update(errors)
                if ok:
                    rows = todo.filter(pc.is_in(todo.column("patient_id"), pa.array(ok)))
                    order = {p: i for i, p in enumerate(ok)}
                    idx = [order[p] for p in rows.column("patient_id").to_pylist()]
                    report.n_computed += writer.write(tensor_rows(rows, x[idx], boxes[idx]))
        writer.publish(allow_partial=bool(report.errors))
        report.status = "partial" if report.errors else "published"
    finally:
        writer.close()
    report.seconds = time.perf_counter() - t0
    return report
