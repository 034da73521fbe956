"""The training frame's embedding column, read from the version's Parquet files with pyarrow.

DuckDB builds the frame's other columns (clinical, point-in-time labs); carrying a ``FLOAT[D]``
column through its join, sort and Arrow export costs several times a plain read of the Parquet
column, so the embedding is attached afterwards: each file's ``patient_id`` is looked up among the
frame's (``pyarrow.compute.index_in``, one hash table, no Python loop over rows) and the file's
float32 rows are scattered with NumPy into one (N, D) buffer from Arrow's memory pool, in frame
order, which becomes the ``fixed_size_list<float32>[D]`` column without a further copy.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from dltr.core.exceptions import StoreError
from features._rows import unpacked


def _matrix(col: pa.Array, dim: int, where: str) -> np.ndarray:
    """(rows, dim) float32 view of one chunk's embedding values (cast first if stored otherwise)."""
    want = pa.list_(pa.float32(), dim)
    col = unpacked(col)  # a packed version (features._rows.PACKED): the same floats
    if col.type != want:
        try:
            col = col.cast(want)  # list<float> / float64 children written by other tools
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as e:
            raise StoreError(f"{where}: embedding column of type {col.type} is not a list of {dim} floats "
                             f"({e}); republish the version with fixed_size_list<float32>[{dim}]") from e
    if col.null_count:
        raise StoreError(f"{where}: {col.null_count} null embedding(s); the store never publishes them")
    flat = col.flatten()
    if flat.null_count:
        raise StoreError(f"{where}: null values inside the embedding; the store never publishes them")
    return flat.to_numpy(zero_copy_only=False).reshape(len(col), dim)


def read_embeddings(files: list[Path], dim: int, what: str) -> list[tuple[pa.ChunkedArray, np.ndarray]]:
    """(patient_id, (rows, dim) float32 matrix) of each Parquet file of one version, file by file
    (``pyarrow.parquet.read_table`` of two columns; a dataset scan was twice as slow here)."""
    out = []
    for f in files:
        t = pq.read_table(f, columns=["patient_id", "embedding"]).combine_chunks()
        if t.num_rows:
            out.append((t.column(0), _matrix(t.column(1).chunk(0), dim, f"{what}: {f}")))
    return out


def align_embeddings(parts: list[tuple[pa.ChunkedArray, np.ndarray]], patient_ids: pa.ChunkedArray | pa.Array,
                     field: pa.Field, what: str) -> pa.Array:
    """The embedding of each of ``patient_ids`` (unique), in that order, as an array of ``field.type``
    (a fixed-size list of float32): each part's rows are scattered to their frame positions."""
    if not (pa.types.is_fixed_size_list(field.type) and field.type.value_type == pa.float32()):
        raise StoreError(f"{what}: the catalog exports the embedding as {field.type}, expected a fixed-size "
                         "list of float32; rebuild the catalog (any store command rebuilds it)")
    n, dim = len(patient_ids), field.type.list_size
    buf = pa.allocate_buffer(n * dim * 4)  # from Arrow's pool, which reuses pages (fewer page faults)
    out = np.frombuffer(buf, dtype=np.float32).reshape(n, dim)
    seen = np.zeros(n, dtype=np.int64)
    for pids, x in parts if n else ():
        if x.shape[1] != dim:
            raise StoreError(f"{what}: Parquet embeddings have {x.shape[1]} dimensions, the catalog's {dim}")
        pos = pc.index_in(pids, value_set=patient_ids)
        if pos.null_count == 0:
            dest = pos.to_numpy()
            out[dest] = x
        else:
            keep = pos.is_valid()
            dest = pos.filter(keep).to_numpy()
            out[dest] = x[keep.to_numpy(zero_copy_only=False)]
        seen += np.bincount(dest, minlength=n)
    if (seen != 1).any():
        i = int(np.flatnonzero(seen != 1)[0])
        raise StoreError(f"{what}: patient {patient_ids[i].as_py()!r} has {int(seen[i])} rows in the version's "
                         "Parquet files, expected 1; the files do not match the registry (re-publish the version)")
    values = pa.Array.from_buffers(field.type.value_type, n * dim, [None, buf])
    return pa.FixedSizeListArray.from_arrays(values, type=field.type)
