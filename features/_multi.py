"""Training frames over several feature sets: one row per patient present in every set.

``multi_frame(store, ["dltr", "radiomics@v2"], clinical=[...])`` builds the point-in-time frame of
the first set (clinical columns, labs, label, split: ``FeatureStore.training_frame``) and attaches
the embedding of every other set by ``patient_id``, each at the version named (or the latest when
none is named; the version used is recorded). Patients missing from a set are dropped and counted.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa

from dltr.core.exceptions import StoreError
from dltr.core.vocabulary import parse_ref
from features._frames import embedding_matrix, table_hash


@dataclass(frozen=True)
class MultiFrame:
    """``table``: the frame's columns without embeddings; ``blocks``: feature-set name -> (N, D_k) float32."""

    table: pa.Table
    blocks: dict[str, np.ndarray]
    lineage: dict[str, Any] = field(default_factory=dict)

    def to_pandas(self):
        return self.table.to_pandas()


def multi_frame(store, feature_sets: list[str], *, label: str = "response", clinical: list[str] | None = None,
                labs: list[str] | None = None, max_age_days: int | None = None) -> MultiFrame:
    """The frame of ``feature_sets[0]`` with the embeddings of every set (see the module doc); ``row_hash``
    covers the columns and every block."""
    if not feature_sets:
        raise StoreError("multi-set training frame: name at least one feature set (NAME or NAME@VERSION)")
    names = [parse_ref(r, what="feature set")[0] for r in feature_sets]
    if len(set(names)) != len(names):
        raise StoreError(f"multi-set training frame: feature sets {feature_sets} name one set twice")
    base = store.training_frame(feature_sets[0], label=label, clinical=clinical, labs=labs, max_age_days=max_age_days)
    ids = base.table.column("patient_id").to_pylist()
    rows: dict[str, dict[str, int]] = {names[0]: {p: i for i, p in enumerate(ids)}}
    mats: dict[str, np.ndarray] = {names[0]: base.embedding_matrix()}
    versions = [{"name": names[0], "version": base.lineage.get("feature_set_version"),
                 "lineage": base.lineage.get("feature_set_lineage")}]
    for ref, name in zip(feature_sets[1:], names[1:], strict=True):
        v = store.resolve(ref)
        t = store.read(v.ref, columns=["patient_id", "embedding"]).combine_chunks()
        rows[name] = {p: i for i, p in enumerate(t.column("patient_id").to_pylist())}
        mats[name] = embedding_matrix(t)
        versions.append({"name": v.name, "version": v.version_id, "lineage": v.lineage})
    keep = [i for i, p in enumerate(ids) if all(p in rows[n] for n in names)]
    table = base.table.drop_columns(["embedding"]).take(pa.array(keep, pa.int64())).combine_chunks()
    kept = [ids[i] for i in keep]
    blocks = {n: np.ascontiguousarray(mats[n][[rows[n][p] for p in kept]]) for n in names}
    import hashlib

    h = hashlib.sha256((table_hash(table) + "".join(
        hashlib.sha256(blocks[n].tobytes()).hexdigest() for n in names)).encode()).hexdigest()
    lineage = {"feature_sets": versions, "base_frame": base.lineage, "n_rows": table.num_rows,
               "n_dropped": len(ids) - len(keep), "row_hash": h, "sql": base.lineage.get("sql")}
    return MultiFrame(table, blocks, lineage)
