"""The training frame's embedding column, read from the version's files without DuckDB.

DuckDB builds the frame's other columns (clinical, point-in-time labs); carrying a ``FLOAT[D]``
column through its join, sort and Arrow export costs several times a plain read of the Parquet
column, so the embedding is attached afterwards: each file's ``patient_id`` is looked up among the
frame's (``pyarrow.compute.index_in``, one hash table, no Python loop over rows) and the file's
float32 rows are scattered with NumPy into one (N, D) buffer from Arrow's memory pool, in frame
order, which becomes the ``fixed_size_list<float32>[D]`` column without a further copy.

Each partition of a float feature set keeps, beside its Parquet file, the same rows' embeddings as
one float32 ``(N, D)`` ``.npy`` array (``EMBEDDING_MATRIX``, written in the same publish, in the same
row order). Decoding a Parquet list column costs its repetition and definition levels, one of each
per float: 0.62 CPU-s for 100k x 512, where the array is memory-mapped and scattered in 0.08 s.
Versions written before the array existed, or whose array is missing, read the Parquet column. The
array doubles a version's embedding bytes on disk (205 MB for 100k x 512); SQL keeps reading Parquet.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from dltr.core.exceptions import StoreError
from dltr.core.layout import EMBEDDING_MATRIX
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


def write_matrix(embedding: pa.ChunkedArray | pa.Array, folder: Path) -> None:
    """Write ``folder/EMBEDDING_MATRIX``: a float column's rows as one C-order float32 array (``numpy.save``,
    no pickle). A packed column (encoder inputs, one binary value a row) gets none: it decodes fast."""
    col = embedding.combine_chunks() if isinstance(embedding, pa.ChunkedArray) else embedding
    if not pa.types.is_fixed_size_list(col.type):
        return
    x = col.flatten().to_numpy(zero_copy_only=False).astype("<f4", copy=False).reshape(len(col), col.type.list_size)
    with open(folder / EMBEDDING_MATRIX, "wb") as f:
        np.save(f, np.ascontiguousarray(x), allow_pickle=False)


def _stored_matrix(path: Path, n: int, dim: int, what: str) -> np.ndarray:
    """The memory-mapped array beside a Parquet file, checked against the file's row count and ``dim``."""
    try:
        x = np.load(path, mmap_mode="r", allow_pickle=False)
    except (ValueError, OSError) as e:
        raise StoreError(f"{what}: {path} is not a readable .npy array ({e}); delete it to read the "
                         "embeddings from the Parquet file beside it") from e
    if x.dtype != np.dtype("<f4") or x.shape != (n, dim):
        raise StoreError(f"{what}: {path} holds {x.dtype} {x.shape}, expected float32 ({n}, {dim}) like the Parquet "
                         "file beside it; delete it to read the embeddings from the Parquet file")
    return x


def read_embeddings(files: list[Path], dim: int, what: str) -> list[tuple[pa.ChunkedArray, np.ndarray]]:
    """(patient_id, (rows, dim) float32 matrix) of each Parquet file of one version, file by file: the
    matrix memory-mapped from the ``EMBEDDING_MATRIX`` beside the file, or else decoded from the file
    (``pyarrow.parquet.read_table`` of two columns; a dataset scan was twice as slow here)."""
    out = []
    for f in files:
        stored = f.parent / EMBEDDING_MATRIX
        if stored.is_file():
            pids = pq.read_table(f, columns=["patient_id"]).column(0)
            if len(pids):
                out.append((pids, _stored_matrix(stored, len(pids), dim, f"{what}: {f}")))
            continue
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
