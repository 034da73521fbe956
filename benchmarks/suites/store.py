"""Store suite: publish, point-in-time frame and typical queries, ours (Parquet + DuckDB) vs pandas.

Sizes: 25k / 50k / 100k patients x 512 dims x 3 versions, 20 lab rows per patient (2 M at 100k);
``--quick``: 1k / 2.5k / 5k x 128. Both sides start from the same Parquet files on disk; the pandas
side reads them with ``pd.read_parquet`` and computes the same result in memory. Peak memory is the
largest RSS increase over the call (sampled every 5 ms).

Feast (third column, largest size only): when ``DLTR_FEAST_PYTHON`` names an interpreter with
``feast[duckdb]`` installed, ``_feast_side.py`` runs there in a subprocess on the same generated data
(same entity rows = the clinical table, event time = midnight of tace_date, labs with event time
``measured_at`` and created time ``recorded_at`` via ``filter_by_created_timestamp=True``, the latest
version's embedding) and times only ``get_historical_features(...).to_arrow()``. Semantics differ in
one point: ties on (measured_at, recorded_at) are broken by value in ours, arbitrarily in Feast; the
agreement of the lab cells is reported. Without the variable the Feast figure is skipped (noted).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import threading
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute  # noqa: F401  (pa.compute)

from benchmarks.harness import Figure, Timing, growth_exponent, measure

FEAST_ENV = "DLTR_FEAST_PYTHON"
FEAST_SIDE = Path(__file__).with_name("_feast_side.py")
LABS = ["afp", "albumin", "bilirubin", "inr"]


def _rss() -> float:
    import psutil

    return psutil.Process().memory_info().rss / 2**20


def _peak_mb(fn) -> float:
    base, peak, stop = _rss(), [0.0], threading.Event()

    def watch():
        while not stop.is_set():
            peak[0] = max(peak[0], _rss())
            time.sleep(0.005)

    t = threading.Thread(target=watch, daemon=True)
    t.start()
    try:
        fn()
    finally:
        stop.set()
        t.join()
    return max(peak[0], _rss()) - base


def _data(n: int, dim: int, seed: int):
    rng = np.random.default_rng(seed)
    pids = np.array([f"P{i:07d}" for i in range(n)])
    centers = np.array(["A", "B", "C"])[rng.integers(0, 3, n)]
    tace = pd.Timestamp("2020-01-01") + pd.to_timedelta(rng.integers(0, 900, n), unit="D")
    clin = pd.DataFrame({"patient_id": pids, "center": centers, "tace_date": tace.date, "response": "PR",
                         "pfs_days": rng.integers(30, 900, n).astype(float), "pfs_event": rng.integers(0, 2, n),
                         "split": np.where(centers == "A", "train", "external"),
                         "label": pd.array(rng.integers(0, 2, n), dtype="Int8"), "age": rng.integers(35, 85, n)})
    k = 20
    lp = np.repeat(np.arange(n), k)
    meas = tace[lp] - pd.to_timedelta(rng.integers(-30, 400, n * k), unit="D")
    labs = pd.DataFrame({"patient_id": pids[lp], "name": np.array(["afp", "albumin", "bilirubin", "inr"])[
        rng.integers(0, 4, n * k)], "value": rng.normal(50, 10, n * k), "unit": "u", "measured_at": meas,
        "recorded_at": meas + pd.to_timedelta(rng.integers(0, 10, n * k), unit="D")})
    versions = []
    for _ in range(3):
        emb = rng.normal(size=(n, dim)).astype(np.float32)
        versions.append(pa.table({
            "patient_id": pids, "center": centers, "phases": pa.array([["arterial", "portal"]] * n),
            "roi_box": pa.array([[0, 0, 0, 8, 8, 8]] * n, pa.list_(pa.int32())), "input_checksum": pids,
            "embedding": pa.FixedSizeListArray.from_arrays(pa.array(emb.ravel()), dim)}))
    return clin, labs, versions


def _pandas_frame(feat_dir: Path, clin: pd.DataFrame, labs: pd.DataFrame) -> pd.DataFrame:
    f = pd.read_parquet(feat_dir)[["patient_id", "embedding"]]
    c = clin.copy()
    c["tace_ts"] = pd.to_datetime(c["tace_date"])
    m = labs.merge(c[["patient_id", "tace_ts"]], on="patient_id")
    m = m[(m.measured_at <= m.tace_ts) & (m.recorded_at <= m.tace_ts)]
    m = m.sort_values(["patient_id", "name", "measured_at", "recorded_at", "value"])
    last = m.groupby(["patient_id", "name"], sort=False).tail(1)
    wide = last.pivot(index="patient_id", columns="name", values="value").add_prefix("lab_").reset_index()
    return f.merge(c, on="patient_id").merge(wide, on="patient_id", how="left").sort_values("patient_id")


def _queries(store, name: str, dim: int, pid: str, feat_dir: Path, clin: pd.DataFrame):
    ours = {
        "per-center mean of every dimension": lambda: store.embedding_means(name, by="center"),
        "per-center mean of every dimension, SQL": lambda: store.sql(
            f"SELECT center, i, avg(embedding[i]) AS m FROM {name}, range(1, {dim + 1}) t(i) GROUP BY center, i"),
        "nearest neighbours (k=10)": lambda: store.nearest(name, pid, 10),
        "join with clinical": lambda: store.sql(
            f"SELECT f.patient_id, f.center, c.age, c.label FROM {name} f JOIN clinical c USING (patient_id) "
            "WHERE c.split = 'train'"),
    }

    def pd_means():
        f = pd.read_parquet(feat_dir, columns=["center", "embedding"])
        x = np.stack(f["embedding"].to_numpy())
        return pd.DataFrame(x).groupby(f["center"].to_numpy()).mean()

    def pd_nearest():
        f = pd.read_parquet(feat_dir, columns=["patient_id", "embedding"])
        x = np.stack(f["embedding"].to_numpy())
        q = x[np.flatnonzero(f["patient_id"].to_numpy() == pid)[0]]
        cos = x @ q / (np.linalg.norm(x, axis=1) * np.linalg.norm(q))
        return f["patient_id"].to_numpy()[np.argsort(-cos)[1:11]]

    def pd_join():
        f = pd.read_parquet(feat_dir, columns=["patient_id", "center"])
        return f.merge(clin.loc[clin.split == "train", ["patient_id", "age", "label"]], on="patient_id")

    return ours, {"per-center mean of every dimension": pd_means,
                  "per-center mean of every dimension, SQL": pd_means,
                  "nearest neighbours (k=10)": pd_nearest, "join with clinical": pd_join}


def _feast(work: Path, clin: pd.DataFrame, labs: pd.DataFrame, table: pa.Table, ours, reps: int) -> dict:
    """Run ``_feast_side.py`` under ``$DLTR_FEAST_PYTHON``; {'skipped': reason} when it cannot run."""
    python = os.environ.get(FEAST_ENV)
    if not python:
        return {"skipped": f"{FEAST_ENV} is not set (point it at a python with feast[duckdb] installed)"}
    import pyarrow.parquet as pq

    data = work / "feast_data"
    data.mkdir(parents=True, exist_ok=True)
    pd.DataFrame({"patient_id": clin.patient_id, "tace_ts": pd.to_datetime(clin.tace_date), "age": clin.age,
                  "label": clin.label}).to_parquet(data / "patients.parquet", index=False)
    labs.to_parquet(data / "labs.parquet", index=False)
    pq.write_table(table.select(["patient_id", "embedding"]), data / "features.parquet")
    out = work / "feast_out.json"
    proc = subprocess.run([python, str(FEAST_SIDE), str(data), str(work / "feast_repo"), str(out),
                           "--repeats", str(reps)], capture_output=True, text=True)
    if proc.returncode != 0:
        tail = (proc.stderr.strip().splitlines() or ["?"])[-1]
        return {"skipped": f"feast side failed (rc={proc.returncode}): {tail[:200]}"}
    res = json.loads(out.read_text())
    theirs = pd.read_parquet(out.with_suffix(".parquet")).set_index("patient_id")
    mine = ours.table.drop_columns(["embedding"]).to_pandas().set_index("patient_id")
    cols = [f"lab_{n}" for n in LABS]
    a, b = mine.loc[theirs.index, cols].to_numpy(float), theirs[cols].to_numpy(float)
    same = (np.isnan(a) & np.isnan(b)) | np.isclose(a, b, rtol=0, atol=1e-9)
    res["agreement"] = float(same.mean())
    return res


def _one_size(ctx, n: int, dim: int, out: dict, feast: bool) -> None:
    from features import FeatureStore

    work = ctx.work / f"n{n}"
    shutil.rmtree(work, ignore_errors=True)
    clin, labs, versions = _data(n, dim, ctx.seed)
    store = FeatureStore(work / "store")
    import types

    store.add_cohort(types.SimpleNamespace(clinical=clin, labs=labs, expression=None, root="bench",
                                           config=types.SimpleNamespace(expression_scale="log2tpm1")))
    rec = out.setdefault(n, {})
    reps = max(1, min(ctx.repeats, 3))
    t_pub, t_pd = [], []
    for i, table in enumerate(versions):
        t0 = time.perf_counter()
        store.publish("bench", table, "bench", {"inputs_hash": f"v{i}"})
        t_pub.append(time.perf_counter() - t0)
        pdir = work / f"pandas_v{i}"
        t0 = time.perf_counter()
        table.to_pandas().to_parquet(pdir, partition_cols=["center"])
        t_pd.append(time.perf_counter() - t0)
    rec["publish a version"] = (Timing(tuple(t_pub)), Timing(tuple(t_pd)), float("nan"), float("nan"))
    feat_dir = work / "pandas_v2"
    frame = lambda: store.training_frame("bench", clinical=["age"], labs=LABS)  # noqa: E731
    pdf = lambda: _pandas_frame(feat_dir, clin, labs)  # noqa: E731
    rec["point-in-time training frame"] = (measure(frame, reps), measure(pdf, reps), _peak_mb(frame), _peak_mb(pdf))
    ours, theirs = _queries(store, "bench", dim, str(clin.patient_id.iloc[n // 2]), feat_dir, clin)
    for k in ours:
        rec[k] = (measure(ours[k], reps), measure(theirs[k], reps), _peak_mb(ours[k]), _peak_mb(theirs[k]))
    if feast:
        rec["feast"] = _feast(work, clin, labs, versions[-1], frame(), reps)
    store.close()
    shutil.rmtree(work, ignore_errors=True)


def _feast_figure(workload: str, ours: Timing, m_ours: float, res: dict) -> Figure:
    return Figure(
        suite="store", workload=f"point-in-time training frame vs Feast ({workload})", unit="s", ours=ours,
        baseline=Timing(tuple(res["times"])), baseline_name=f"feast {res['feast_version']} get_historical_features "
        "(duckdb offline store, subprocess)", higher_is_better=False,
        notes={"peak_mb_ours": round(m_ours, 1), "peak_mb_feast_call": round(res["peak_mb_call"], 1),
               "maxrss_mb_feast_process": round(res["maxrss_mb"], 1),
               "feast_lab_cells_agreeing": round(res["agreement"], 4),
               "semantics": "event time <= tace midnight and created (recorded) time <= it, no TTL; "
                            "tie-break on equal timestamps differs (ours: larger value)"})


def _publish_growth(ctx) -> Figure:
    """Time to publish one more 200 x 64 version of a feature set that already has N versions: the
    median of the 3 publishes ending at each N (10 / 100 / 1000; ``--quick`` 10 / 30 / 100), one
    store, versions published through ``FeatureStore.publish`` (the same run and data)."""
    from features import FeatureStore

    counts = (10, 30, 100) if ctx.quick else (10, 100, 1000)
    work = ctx.work / "publish-growth"
    shutil.rmtree(work, ignore_errors=True)
    store = FeatureStore(work / "store")
    n, dim = 200, 64
    _, _, tables = _data(n, dim, ctx.seed)
    base = tables[0]
    at: dict[int, list[float]] = {c: [] for c in counts}
    for i in range(1, counts[-1] + 1):
        emb = base.column("embedding").combine_chunks()
        table = base.set_column(5, "embedding", pa.FixedSizeListArray.from_arrays(
            pa.compute.add(emb.flatten(), float(i)).cast(pa.float32()), dim))
        t0 = time.perf_counter()
        store.publish("growth", table, "bench", {"inputs_hash": f"v{i}"})
        dt = time.perf_counter() - t0
        for c in counts:
            if c - 3 < i <= c:
                at[c].append(dt)
    store.close()
    shutil.rmtree(work, ignore_errors=True)
    med = [Timing(tuple(at[c])).median for c in counts]
    return Figure(suite="store", workload=f"publish one more version ({n} x {dim}) at {counts[-1]} versions",
                  unit="s", ours=Timing(tuple(at[counts[-1]])), baseline=Timing(tuple(at[counts[0]])),
                  baseline_name=f"the same publish at {counts[0]} versions (same store, same run)",
                  higher_is_better=False,
                  notes={"growth_exponent": round(growth_exponent(list(counts), med), 3), "versions": list(counts),
                         "median_s": [round(m, 4) for m in med]})


def run(ctx) -> list[Figure]:
    figs = [_publish_growth(ctx)]
    sizes = ctx.sizes((25_000, 50_000, 100_000), (1_000, 2_500, 5_000))
    dim = 128 if ctx.quick else 512
    out: dict[int, dict] = {}
    for n in sizes:
        _one_size(ctx, n, dim, out, feast=n == sizes[-1])
    last = out[sizes[-1]]
    feast = last.pop("feast")
    size = f"{sizes[-1]} x {dim}, 3 versions, {20 * sizes[-1]} lab rows"
    for work in last:
        ours, base, m_ours, m_base = last[work]
        times = [out[n][work][0].median for n in sizes]
        notes = {"growth_exponent": round(growth_exponent(list(sizes), times), 2), "sizes": list(sizes),
                 "peak_mb_ours": round(m_ours, 1), "peak_mb_pandas": round(m_base, 1)}
        if work == "point-in-time training frame":
            notes["feast"] = (f"skipped: {feast['skipped']}" if "skipped" in feast
                              else f"{float(np.median(feast['times'])):.3g} s (see the 'vs Feast' row)")
        figs.append(Figure(suite="store", workload=f"{work} ({size})", unit="s", ours=ours, baseline=base,
                           baseline_name="pandas + pyarrow", higher_is_better=False, notes=notes))
        if work == "point-in-time training frame" and "skipped" not in feast:
            figs.append(_feast_figure(size, ours, m_ours, feast))
    return figs

