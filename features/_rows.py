"""The feature-row schema (docs/architecture.md) and the checks every row passes before it is staged."""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from dltr.core.exceptions import StoreError

KEY = "patient_id"
REQUIRED = ("patient_id", "center", "phases", "roi_box", "input_checksum", "embedding")
# A version whose lineage sets STORAGE_KEY to PACKED stores each embedding in its Parquet files as one
# fixed-size binary value: the dim float32 values' little-endian bytes. Parquet keeps a list<float> column as
# one value per float with a repetition and a definition level each, which caps reading at ~250 MB/s; a
# binary value reads as a memory copy (issue #19: the 49,152-float encoder inputs of ``roi_tensors``). Readers
# of the store see the same fixed_size_list<float32>[dim] either way (``unpack``); SQL sees the bytes (BLOB).
STORAGE_KEY = "embedding_storage"
PACKED = "float32_le_bytes"


def is_packed(lineage: dict | None) -> bool:
    """Whether a version with this lineage stores its embeddings packed (see ``PACKED``)."""
    return bool(lineage) and lineage.get(STORAGE_KEY) == PACKED


def feature_schema(dim: int, packed: bool = False) -> pa.Schema:
    """patient_id, center, phases, roi_box, input_checksum, embedding ``fixed_size_list<float32>[dim]``
    (``packed``: ``fixed_size_binary[4 * dim]``, the storage form of a packed version)."""
    return pa.schema([
        pa.field("patient_id", pa.string()),
        pa.field("center", pa.string()),
        pa.field("phases", pa.list_(pa.string())),
        pa.field("roi_box", pa.list_(pa.int32())),
        pa.field("input_checksum", pa.string()),
        pa.field("embedding", pa.binary(4 * dim) if packed else pa.list_(pa.float32(), dim)),
    ])


def embedding_dim(t: pa.DataType) -> int:
    """The dimension of an embedding column of type ``t`` (a fixed-size list or its packed form)."""
    return t.byte_width // 4 if pa.types.is_fixed_size_binary(t) else t.list_size


def _chunks(col: pa.Array | pa.ChunkedArray) -> list[pa.Array]:
    return list(col.chunks) if isinstance(col, pa.ChunkedArray) else [col]


def pack(col: pa.Array | pa.ChunkedArray) -> pa.ChunkedArray:
    """fixed_size_list<float32>[dim] (no nulls) -> fixed_size_binary[4 * dim], sharing the float buffer."""
    out = []
    for a in _chunks(col):
        dim = a.type.list_size
        flat = a.flatten()  # respects the array's offset
        if a.null_count or flat.null_count:
            raise StoreError("pack: null embeddings or embedding values cannot be packed")
        if flat.type != pa.float32() or flat.offset % dim:
            flat = pa.array(flat.to_numpy(zero_copy_only=False).astype(np.float32, copy=False), pa.float32())
        buf = flat.buffers()[1]
        out.append(pa.Array.from_buffers(pa.binary(4 * dim), len(a), [None, buf], offset=flat.offset // dim))
    return pa.chunked_array(out, pa.binary(4 * col.type.list_size))


def unpack(col: pa.Array | pa.ChunkedArray) -> pa.ChunkedArray:
    """fixed_size_binary[4 * dim] (no nulls) -> fixed_size_list<float32>[dim], sharing the bytes."""
    dim = col.type.byte_width // 4
    out = []
    for a in _chunks(col):
        if a.null_count:
            raise StoreError("unpack: null packed embeddings")
        values = pa.Array.from_buffers(pa.float32(), (a.offset + len(a)) * dim, [None, a.buffers()[1]])
        out.append(pa.FixedSizeListArray.from_arrays(values.slice(a.offset * dim, len(a) * dim), dim))
    return pa.chunked_array(out, pa.list_(pa.float32(), dim))


def unpacked(col):
    """``col`` (an Array or a ChunkedArray) as fixed-size lists of float32: unpacked if it is packed, else as is."""
    if not pa.types.is_fixed_size_binary(col.type):
        return col
    out = unpack(col)
    return out if isinstance(col, pa.ChunkedArray) else out.chunk(0)


def _embedding_dim(col: pa.ChunkedArray, what: str) -> int:
    t = col.type
    if pa.types.is_fixed_size_list(t):
        return t.list_size
    if pa.types.is_fixed_size_binary(t):
        if t.byte_width % 4:
            raise StoreError(f"{what}: packed embedding column of {t.byte_width} bytes is not a whole number of "
                             "float32 values")
        return t.byte_width // 4
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


def conform(table: pa.Table, dim: int | None, what: str, packed: bool = False) -> pa.Table:
    """Check columns, the dimension and cast to the canonical schema (extra columns are refused); ``packed``:
    the storage form of a packed version (rows given either way)."""
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
    emb = table.column("embedding")
    if not packed:
        table = table.set_column(5, "embedding", unpacked(emb))
    elif packed and not pa.types.is_fixed_size_binary(emb.type):
        if not pa.types.is_fixed_size_list(emb.type):
            emb = emb.cast(pa.list_(pa.float32(), got))
        table = table.set_column(5, "embedding", pack(emb))
    try:
        return table.cast(feature_schema(got, packed))
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
        col = unpacked(table.column("embedding"))
        dim = col.type.list_size
        emb = col.combine_chunks().flatten().to_numpy(zero_copy_only=False).reshape(table.num_rows, dim)
        finite = np.isfinite(emb).all(axis=1)
        if not finite.all():
            i = int(np.flatnonzero(~finite)[0])
            bad = emb[i]
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
