"""Per-dimension aggregates of a feature set's embeddings, computed from the Parquet parts directly.

A per-center mean over ``FLOAT[D]`` in SQL needs D aggregate expressions (``avg(embedding[i])``) or an
unnest of N x D values; both are slow next to reading the embedding column's flat float32 buffer into
NumPy (zero copy) and summing it in float64, one partition file at a time, so peak memory is one file.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from dltr.core.exceptions import StoreError
from features._frames import embedding_matrix
from features._registry import FeatureSetVersion

_BY = ("center", None)


def embedding_means(root: Path, v: FeatureSetVersion, by: str | None = "center") -> pa.Table:
    """Rows ``center`` (sorted; null when ``by`` is None), ``n``, ``mean`` (fixed_size_list<float64>[D])."""
    if by not in _BY:
        raise StoreError(f"embedding_means: by={by!r} is not supported; use 'center' or None")
    files = sorted((Path(root) / v.path).glob("center=*/*.parquet"))
    if not files:
        raise StoreError(f"{v.ref}: registered but its files are missing under {Path(root) / v.path}")
    sums: dict[str | None, np.ndarray] = {}
    counts: dict[str | None, int] = {}
    for f in files:
        t = pq.read_table(f, columns=["center", "embedding"])
        if t.num_rows == 0:
            continue
        x = embedding_matrix(t.combine_chunks())
        centers = t.column("center")
        keys = [None] if by is None else pc.unique(centers).to_pylist()
        for key in keys:
            if key is None or len(keys) == 1:
                part = x
            else:
                part = x[pc.equal(centers, key).to_numpy(zero_copy_only=False)]
            acc = sums.setdefault(key, np.zeros(v.dim, dtype=np.float64))
            acc += part.sum(axis=0, dtype=np.float64)
            counts[key] = counts.get(key, 0) + len(part)
    order = sorted(sums, key=lambda c: (c is None, c))
    means = np.stack([sums[c] / counts[c] for c in order]) if order else np.zeros((0, v.dim))
    return pa.table({
        "center": pa.array(order, pa.string()),
        "n": pa.array([counts[c] for c in order], pa.int64()),
        "mean": pa.FixedSizeListArray.from_arrays(pa.array(means.ravel(), pa.float64()), v.dim),
    })
