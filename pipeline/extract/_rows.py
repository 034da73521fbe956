"""Arrow rows: feature rows (docs/architecture.md, "Feature rows"), worker output, error rows."""

from __future__ import annotations

import datetime as dt
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

FEATURE_COLUMNS = ("patient_id", "center", "phases", "roi_box", "input_checksum", "embedding")
ERROR_SCHEMA = pa.schema([("feature_set", pa.string()), ("version_id", pa.string()),
                          ("patient_id", pa.string()), ("center", pa.string()), ("stage", pa.string()),
                          ("reason", pa.string()), ("recorded_at", pa.timestamp("us", tz="UTC"))])


def feature_schema(dim: int) -> pa.Schema:
    return pa.schema([("patient_id", pa.string()), ("center", pa.string()), ("phases", pa.list_(pa.string())),
                      ("roi_box", pa.list_(pa.int32())), ("input_checksum", pa.string()),
                      ("embedding", pa.list_(pa.float32(), dim))])


def work_schema(dim: int) -> pa.Schema:
    """What an actor returns per batch: the feature row, or an error, and its own timings."""
    return pa.schema(list(feature_schema(dim)) + [
        pa.field("itemsize", pa.int32()), pa.field("error", pa.string()), pa.field("stage", pa.string()),
        pa.field("load_s", pa.float64()), pa.field("encode_s", pa.float64()), pa.field("worker", pa.string())])


def work_rows(batch: pa.Table, boxes: np.ndarray, emb: np.ndarray, errors: dict[str, tuple[str, str]],
              load_s: float, encode_s: float, worker: str) -> pa.Table:
    """Scope batch + roi boxes + embeddings (rows of failed patients: zeros and the reason)."""
    n, dim = emb.shape
    ids = batch.column("patient_id").to_pylist()
    err = [errors.get(p, (None, None)) for p in ids]
    per = lambda s: pa.array(np.full(n, s / max(n, 1)), pa.float64())  # noqa: E731 - timing share per row
    cols = {
        "patient_id": batch.column("patient_id"), "center": batch.column("center"),
        "phases": batch.column("phases"),
        "roi_box": roi_boxes(boxes),
        "input_checksum": batch.column("input_checksum"),
        "embedding": pa.FixedSizeListArray.from_arrays(pa.array(emb.astype(np.float32).ravel()), dim),
        "itemsize": batch.column("itemsize"),
        "error": pa.array([e[0] for e in err], pa.string()), "stage": pa.array([e[1] for e in err], pa.string()),
        "load_s": per(load_s), "encode_s": per(encode_s), "worker": pa.array([worker] * n, pa.string()),
    }
    return pa.table({k: (v.combine_chunks() if isinstance(v, pa.ChunkedArray) else v) for k, v in cols.items()},
                    schema=work_schema(dim))


def roi_boxes(boxes: np.ndarray) -> pa.ListArray:
    """``n x 6`` voxel boxes as the ``roi_box`` column (``list<int32>``, six values a row), without a Python list per row."""
    flat = np.ascontiguousarray(boxes, dtype=np.int32).reshape(-1)
    return pa.ListArray.from_arrays(pa.array(np.arange(0, flat.size + 1, 6, dtype=np.int32)), pa.array(flat))


def split_work(work: pa.Table, dim: int) -> tuple[pa.Table, pa.Table]:
    """(feature rows of the patients that succeeded, their work rows that failed)."""
    failed = pc.is_valid(work.column("error"))
    ok = work.filter(pc.invert(failed)).select(list(FEATURE_COLUMNS)).cast(feature_schema(dim))
    return ok, work.filter(failed)


def error_rows(name: str, version_id: str, errs: list[dict[str, Any]]) -> pa.Table:
    now = dt.datetime.now(dt.UTC)
    return pa.Table.from_pylist([{"feature_set": name, "version_id": version_id, "patient_id": e["patient_id"],
                                  "center": e.get("center"), "stage": e.get("stage", "extract"),
                                  "reason": e["reason"], "recorded_at": now} for e in errs], schema=ERROR_SCHEMA)


def canonical(rows: pa.Table) -> pa.Table:
    """Rows sorted by patient_id (the order-free form that equality tests compare)."""
    return rows.sort_by("patient_id").combine_chunks()
