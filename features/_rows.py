"""The feature-row schema (docs/architecture.md) and the checks every row passes before it is staged."""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from dltr.core.exceptions import StoreError

KEY = "patient_id"
REQUIRED = ("patient_id", "center", "phases", "roi_box", "input_checksum", "embedding")


def feature_schema(dim: int) -> pa.Schema:
    """patient_id, center, phases, roi_box, input_checksum, embedding ``fixed_size_list<float32>[dim]``."""
    return pa.schema([
        pa.field("patient_id", pa.string()),
        pa.field("center", pa.string()),
        pa.field("phases", pa.list_(pa.string())),
        pa.field("roi_box", pa.list_(pa.int32())),
        pa.field("input_checksum", pa.string()),
        pa.field("embedding", pa.list_(pa.float32(), dim)),
    ])


def _embedding_dim(col: pa.ChunkedArray, what: str) -> int:
    t = col.type
    if pa.types.is_fixed_size_list(t):
        return t.list_size
    if pa.types.is_list(t) or pa.types.is_large_list(t):
        lengths = pc.list_value_length(col).to_numpy(zero_copy_only=False)
        if len(lengths) == 0:
            raise StoreError(f"{what}: variable-length embedding column with no rows; give a fixed-size list")
        bad = np.flatnonzero(lengths != lengths[0])
        if bad.size:
            raise StoreError(f"{what}: row {int(bad[0])}: embedding has {lengths[bad[0]]} dimensions, row 0 has "
                             f"{lengths[0]}; every row of a feature set has the same dimension")
        return int(lengths[0])
    raise StoreError(f"{what}: column 'embedding' has type {t}; expected fixed_size_list<float32>[D]")


def conform(table: pa.Table, dim: int | None, what: str) -> pa.Table:
    """Check columns, the dimension and cast to the canonical schema (extra columns are refused)."""
    missing = [c for c in REQUIRED if c not in table.column_names]
    extra = [c for c in table.column_names if c not in REQUIRED]
    if missing or extra:
        raise StoreError(f"{what}: feature rows need exactly the columns {list(REQUIRED)}; "
                         f"missing {missing}, unexpected {extra}")
    got = _embedding_dim(table.column("embedding"), what)
    if dim is not None and got != dim:
        pid = table.column(KEY)[0].as_py() if table.num_rows else "?"
        raise StoreError(f"{what}: row 0 (patient {pid!r}): embedding has {got} dimensions, the version "
                         f"declares {dim}; every row of a feature set has the same dimension")
    table = table.select(list(REQUIRED))
    try:
        return table.cast(feature_schema(got))
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as e:
        raise StoreError(f"{what}: rows do not cast to the feature-row schema: {e}") from e


def check_rows(table: pa.Table, what: str, *, seen: Iterable[str] = (),
               known: set[str] | None = None) -> None:
    """Nulls in keys, duplicate keys (within ``table`` and against ``seen``), non-finite embeddings,
    roi_box length, unknown patients; raise StoreError naming the first offending row."""
    ids = table.column(KEY).to_pylist()
    for col in ("patient_id", "center", "embedding"):
        nulls = np.flatnonzero(table.column(col).is_null().to_numpy(zero_copy_only=False))
        if nulls.size:
            i = int(nulls[0])
            raise StoreError(f"{what}: row {i} (patient {ids[i]!r}): {col} is null")
    seen = set(seen)
    first: dict[str, int] = {}
    for i, p in enumerate(ids):
        if p in seen:
            raise StoreError(f"{what}: row {i}: patient {p!r} already has a row in this version (duplicate key)")
        if p in first:
            raise StoreError(f"{what}: row {i}: patient {p!r} duplicates row {first[p]} (duplicate key)")
        first[p] = i
    if table.num_rows:
        emb = table.column("embedding").combine_chunks().flatten().to_numpy(zero_copy_only=False)
        dim = table.schema.field("embedding").type.list_size
        finite = np.isfinite(emb.reshape(table.num_rows, dim)).all(axis=1)
        if not finite.all():
            i = int(np.flatnonzero(~finite)[0])
            bad = emb.reshape(table.num_rows, dim)[i]
            j = int(np.flatnonzero(~np.isfinite(bad))[0])
            raise StoreError(f"{what}: row {i} (patient {ids[i]!r}): embedding[{j}] = {bad[j]} is not finite")
    boxes = pc.list_value_length(table.column("roi_box")).to_numpy(zero_copy_only=False)
    valid = table.column("roi_box").is_valid().to_numpy(zero_copy_only=False)
    wrong = np.flatnonzero(valid & (boxes != 6))
    if wrong.size:
        i = int(wrong[0])
        raise StoreError(f"{what}: row {i} (patient {ids[i]!r}): roi_box has {boxes[i]} values, expected 6 "
                         "([x0, y0, z0, x1, y1, z1])")
    if known is not None:
        for i, p in enumerate(ids):
            if p not in known:
                raise StoreError(f"{what}: row {i}: patient {p!r} is not in the store's clinical table "
                                 "(unknown patient); register the cohort first or drop the row")
