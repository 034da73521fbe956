"""The ingest tables (``STORE/ingest/*.parquet``, schemas in docs/architecture.md), written atomically."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

import pyarrow as pa

from dltr.core.io import atomic_file
from dltr.core.layout import StoreLayout, VolumeAttrs

STUDIES_SCHEMA = pa.schema([
    ("patient_id", pa.string()), ("center", pa.string()), ("phase", pa.string()),
    ("volume_key", pa.string()), ("mask_key", pa.string()),
    ("shape", pa.list_(pa.int32(), 3)), ("spacing", pa.list_(pa.float64(), 3)), ("dtype", pa.string()),
    ("bbox_vox", pa.list_(pa.int32(), 6)), ("bbox_world", pa.list_(pa.float64(), 6)),
    ("n_tumour_voxels", pa.int64()), ("source_path", pa.string()), ("source_sha256", pa.string()),
    ("mask_sha256", pa.string()), ("source_mb", pa.float64()), ("reader", pa.string()),
    ("study_date", pa.date32()), ("status", pa.string()),
])
ERRORS_SCHEMA = pa.schema([
    ("file", pa.string()), ("row", pa.int64()), ("patient_id", pa.string()), ("phase", pa.string()),
    ("stage", pa.string()), ("reason", pa.string()), ("code", pa.string()),
])
STATS_SCHEMA = pa.schema([
    ("phase", pa.string()), ("center", pa.string()), ("region", pa.string()), ("n", pa.int64()),
    ("mean", pa.float64()), ("std", pa.float64()), ("p01", pa.float64()), ("p50", pa.float64()),
    ("p99", pa.float64()),
])


def studies_rows(store_root: Path, key: str) -> list[dict[str, Any]]:
    """One studies row per phase of a stored patient, from the Zarr attributes alone."""
    import zarr

    where = StoreLayout.of(store_root).volume_group(key)
    g = zarr.open_group(where, mode="r")
    ga = VolumeAttrs.of(g.attrs, where)
    rows = []
    for phase in ga.phases:
        arr = g[phase]
        a = dict(arr.attrs)
        date = a.get("study_date")
        rows.append({
            "patient_id": ga.patient_id, "center": ga.center, "phase": phase,
            "volume_key": f"{key}/{phase}", "mask_key": f"{key}/mask", "shape": list(arr.shape),
            "spacing": a["spacing"], "dtype": str(arr.dtype), "bbox_vox": list(ga.bbox_vox),
            "bbox_world": ga.bbox_world, "n_tumour_voxels": ga.n_tumour_voxels,
            "source_path": a["source_path"], "source_sha256": a["source_sha256"],
            "mask_sha256": ga.source_sha256["mask"], "source_mb": a["source_mb"], "reader": a["reader"],
            "study_date": dt.date.fromisoformat(date) if date else None, "status": "ok",
        })
    return rows


def write_parquet(path: Path, rows: list[dict[str, Any]], schema: pa.Schema) -> None:
    import pyarrow.parquet as pq

    table = pa.Table.from_pylist(rows, schema=schema)
    with atomic_file(path, "wb") as f:
        pq.write_table(table, f)
