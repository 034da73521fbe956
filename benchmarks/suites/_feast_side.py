"""Feast side of the store benchmark: run by another interpreter (a venv with ``feast[duckdb]``).

Imports nothing from dltr. Usage::

    python _feast_side.py DATA_DIR REPO_DIR OUT_JSON [--repeats N]

DATA_DIR holds ``patients.parquet`` (patient_id, tace_ts, age, label), ``labs.parquet`` (long form:
patient_id, name, value, measured_at, recorded_at) and ``features.parquet`` (patient_id, embedding).
Untimed setup: one Parquet file and FeatureView per lab (event time ``measured_at``, created time
``recorded_at``, no TTL), one FeatureView for the embedding, ``FeatureStore.apply`` on a DuckDB offline
store. Timed: ``get_historical_features(entity_df, ..., filter_by_created_timestamp=True).to_arrow()``
(one warm-up, then ``--repeats`` runs). Writes times, the peak RSS increase during a call, this
process's peak RSS, and the last result (without the embedding) to ``OUT_JSON`` + ``.parquet``.
"""

from __future__ import annotations

import argparse
import json
import resource
import threading
import time
import warnings
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pandas as pd
import psutil
import pyarrow as pa
import pyarrow.parquet as pq


def _rss() -> float:
    return psutil.Process().memory_info().rss / 2**20


def _peak(fn):
    base, peak, stop = _rss(), [0.0], threading.Event()

    def watch():
        while not stop.is_set():
            peak[0] = max(peak[0], _rss())
            time.sleep(0.005)

    t = threading.Thread(target=watch, daemon=True)
    t.start()
    try:
        out = fn()
    finally:
        stop.set()
        t.join()
    return out, max(peak[0], _rss()) - base


def setup(data: Path, repo: Path):
    from feast import Entity, FeatureStore, FeatureView, Field, FileSource, ValueType
    from feast.types import Array, Float32, Float64

    repo.mkdir(parents=True, exist_ok=True)
    (repo / "feature_store.yaml").write_text(
        "project: dltr_bench\n"
        f"registry: {(repo / 'registry.db').as_posix()}\n"
        "provider: local\n"
        "offline_store:\n  type: duckdb\n"
        f"online_store:\n  type: sqlite\n  path: {(repo / 'online.db').as_posix()}\n"
        "entity_key_serialization_version: 3\n")
    patient = Entity(name="patient", join_keys=["patient_id"], value_type=ValueType.STRING)
    labs = pq.read_table(data / "labs.parquet").to_pandas()
    views = []
    refs = []
    for name in sorted(labs["name"].unique()):
        sub = labs.loc[labs["name"] == name, ["patient_id", "value", "measured_at", "recorded_at"]]
        sub = sub.rename(columns={"value": f"lab_{name}"})
        for c in ("measured_at", "recorded_at"):
            sub[c] = pd.to_datetime(sub[c]).dt.tz_localize("UTC")
        path = repo / f"lab_{name}.parquet"
        sub.to_parquet(path, index=False)
        src = FileSource(name=f"lab_{name}_src", path=path.as_posix(), timestamp_field="measured_at",
                         created_timestamp_column="recorded_at")
        views.append(FeatureView(name=f"lab_{name}", entities=[patient], ttl=timedelta(0),
                                 schema=[Field(name=f"lab_{name}", dtype=Float64)], source=src))
        refs.append(f"lab_{name}:lab_{name}")
    feats = pq.read_table(data / "features.parquet")
    n = feats.num_rows
    ts = pa.array([datetime(2000, 1, 1, tzinfo=UTC)] * n, pa.timestamp("us", tz="UTC"))
    emb = feats.column("embedding").combine_chunks()
    if pa.types.is_fixed_size_list(emb.type):  # Feast's Array(Float32) is a variable-size list
        flat = emb.flatten()
        emb = pa.ListArray.from_arrays(pa.array(range(0, len(flat) + 1, emb.type.list_size), pa.int32()), flat)
    pq.write_table(pa.table({"patient_id": feats.column("patient_id"), "event_ts": ts, "embedding": emb}),
                   repo / "embedding.parquet")
    esrc = FileSource(name="embedding_src", path=(repo / "embedding.parquet").as_posix(), timestamp_field="event_ts")
    views.append(FeatureView(name="features", entities=[patient], ttl=timedelta(0),
                             schema=[Field(name="embedding", dtype=Array(Float32))], source=esrc))
    refs.append("features:embedding")
    store = FeatureStore(repo_path=str(repo))
    store.apply([patient, *views])
    clin = pq.read_table(data / "patients.parquet").to_pandas()
    entity_df = pd.DataFrame({"patient_id": clin["patient_id"],
                              "event_timestamp": pd.to_datetime(clin["tace_ts"]).dt.tz_localize("UTC"),
                              "age": clin["age"], "label": clin["label"]})
    return store, entity_df, refs


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("data", type=Path)
    ap.add_argument("repo", type=Path)
    ap.add_argument("out", type=Path)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    warnings.filterwarnings("ignore", category=DeprecationWarning)
    args.data, args.repo, args.out = args.data.resolve(), args.repo.resolve(), args.out.resolve()
    import feast

    store, entity_df, refs = setup(args.data, args.repo)

    def call():
        job = store.get_historical_features(entity_df=entity_df, features=refs, filter_by_created_timestamp=True)
        return job.to_arrow()

    result, _ = _peak(call)  # warm-up
    times, peaks = [], []
    for _ in range(args.repeats):
        t0 = time.perf_counter()
        result, mb = _peak(call)
        times.append(time.perf_counter() - t0)
        peaks.append(mb)
    keep = [c for c in result.column_names if c != "embedding"]
    pq.write_table(result.select(keep), args.out.with_suffix(".parquet"))
    args.out.write_text(json.dumps({
        "feast_version": feast.__version__, "times": times, "peak_mb_call": max(peaks),
        "maxrss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0, "rows": result.num_rows,
        "embedding_rows": int(result.num_rows - result.column("embedding").null_count),
        "offline_store": "duckdb", "filter_by_created_timestamp": True}))


if __name__ == "__main__":
    main()
