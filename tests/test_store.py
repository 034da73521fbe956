"""Feature store: point-in-time frames, round trips, validation, SQL read-only, lock, catalog."""

from __future__ import annotations

import datetime as dt
import math
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
from kit.tables import LABS, clinical_tables

from dltr.core.exceptions import ReadOnlyQueryError, StoreError, StoreLockedError
from features import FeatureStore, embedding_matrix, feature_schema, table_hash, version_id_of

REPO = Path(__file__).resolve().parents[1]


def feature_rows(pids, centers, dim: int = 16, seed: int = 0) -> pa.Table:
    rng = np.random.default_rng(seed)
    emb = rng.normal(size=(len(pids), dim)).astype(np.float32)
    return pa.table({
        "patient_id": list(pids), "center": list(centers), "phases": [["arterial", "portal"]] * len(pids),
        "roi_box": [[1, 2, 3, 10, 11, 12]] * len(pids), "input_checksum": [f"c{p}" for p in pids],
        "embedding": pa.FixedSizeListArray.from_arrays(pa.array(emb.ravel()), dim)})


@pytest.fixture
def store(tmp_path):
    s = FeatureStore(tmp_path / "store")
    cohort, late = clinical_tables()
    s.add_cohort(cohort)
    c = cohort.clinical
    s.publish("dltr", feature_rows(c.patient_id, c.center), "test", {"inputs_hash": "v1"})
    s.cohort, s.late = cohort, late
    return s


def expected_lab(labs: pd.DataFrame, pid: str, name: str, tace: pd.Timestamp, max_age: int | None):
    """Plain-Python reference: latest value known at midnight of the TACE day."""
    best = None
    for r in labs.itertuples():
        if r.patient_id != pid or r.name != name or r.measured_at > tace or r.recorded_at > tace:
            continue
        if max_age is not None and r.measured_at < tace - pd.Timedelta(days=max_age):
            continue
        key = (r.measured_at, r.recorded_at, r.value)
        if best is None or key > best:
            best = key
    return None if best is None else best[2]


@pytest.mark.parametrize("max_age", [None, 60])
def test_point_in_time_frame_matches_hand_computation(store, max_age):
    frame = store.training_frame("dltr", clinical=["age", "sex"], labs=list(LABS), max_age_days=max_age)
    df = frame.to_pandas().set_index("patient_id")
    labs, clin = store.cohort.labs, store.cohort.clinical.set_index("patient_id")
    late = set(store.late.value)
    n_values = 0
    for pid in clin.index:
        tace = pd.Timestamp(clin.loc[pid, "tace_date"])
        for name in LABS:
            got = df.loc[pid, f"lab_{name}"]
            want = expected_lab(labs, pid, name, tace, max_age)
            assert got not in late
            if want is None:
                assert math.isnan(got), (pid, name)
            else:
                assert got == want, (pid, name)
                n_values += 1
    assert n_values > 20  # the reference found real values, not only nulls
    assert df["label"].dtype.name in ("Int8", "float64", "int8")
    assert list(df["age"]) == list(clin.loc[df.index, "age"])
    assert (df["tace_date"] == clin.loc[df.index, "tace_date"].dt.date).all()


def test_frame_lineage_zero_copy_and_reproducible_sql(store):
    frame = store.training_frame("dltr", clinical=["age"], labs=["afp"])
    v = store.resolve("dltr")
    assert frame.lineage["feature_set_version"] == v.version_id
    assert frame.lineage["row_hash"] == table_hash(frame.table)
    x = frame.embedding_matrix()
    buf = frame.table.column("embedding").chunk(0).values.buffers()[1]
    assert x.dtype == np.float32 and x.ctypes.data == buf.address  # a view, not a copy
    ref = store.read("dltr").to_pandas().set_index("patient_id")
    for i, pid in enumerate(frame.table.column("patient_id").to_pylist()):
        np.testing.assert_array_equal(x[i], np.asarray(ref.loc[pid, "embedding"], dtype=np.float32))
    again = store.sql(frame.lineage["sql"])  # the recorded SQL reruns against the catalog
    assert table_hash(again.combine_chunks()) == frame.lineage["row_hash"]


def test_frame_embeddings_from_the_stored_array_equal_the_parquet_column(store):
    """Each partition's embedding.npy holds its Parquet rows' floats in file order; the frame built from
    the arrays equals the one built from Parquet alone (a version written before the arrays existed),
    and an array that does not match its Parquet file is refused, naming it."""
    import pyarrow.parquet as pq

    v = store.resolve("dltr")
    files = sorted((store.root / v.path).glob("center=*/*.parquet"))
    assert len(files) == len(v.centers) > 1
    for f in files:
        x = np.load(f.parent / "embedding.npy", allow_pickle=False)
        want = embedding_matrix(pq.read_table(f, columns=["embedding"]).combine_chunks())
        assert x.dtype == np.dtype("<f4") and np.array_equal(x.view(np.uint32), want.view(np.uint32))
    with_arrays = store.training_frame("dltr", clinical=["age"], labs=["afp"])
    for f in files:
        (f.parent / "embedding.npy").unlink()
    from_parquet = store.training_frame("dltr", clinical=["age"], labs=["afp"])
    assert from_parquet.table.equals(with_arrays.table)
    assert from_parquet.row_hash == with_arrays.row_hash
    bad = files[0].parent / "embedding.npy"
    n = pq.read_metadata(files[0]).num_rows
    np.save(bad, np.zeros((n, v.dim + 1), np.float32))
    with pytest.raises(StoreError, match=f"{bad}.*expected float32 \\({n}, {v.dim}\\)"):
        store.training_frame("dltr")
    bad.write_bytes(b"not an array")
    with pytest.raises(StoreError, match="is not a readable .npy array"):
        store.training_frame("dltr")


def test_planted_synthetic_cohort(tmp_path, tiny_cohort):
    tiny = tiny_cohort
    s = FeatureStore(tmp_path / "s")
    s.add_cohort(tiny.cohort)
    clin = s.table("clinical").to_pandas()
    s.publish("dltr", feature_rows(clin.patient_id, clin.center), "test", {"inputs_hash": "x"})
    late = pd.read_csv(Path(tiny.truth) / "late_labs.csv")
    names = sorted(set(late["name"]))
    df = s.training_frame("dltr", labs=names).to_pandas()
    for name in names:
        planted = set(zip(late.patient_id[late.name == name], late.value[late.name == name], strict=True))
        got = set(zip(df.patient_id, df[f"lab_{name}"], strict=True))
        assert not planted & got


def test_round_trip_bit_identical(tmp_path):
    s = FeatureStore(tmp_path / "s")
    rng = np.random.default_rng(3)
    emb = rng.normal(size=(5, 8)).astype(np.float32)
    emb[0, :3] = [-0.0, np.float32(1e-45), np.finfo(np.float32).max]
    t = pa.table({
        "patient_id": [f"Q{i}" for i in range(5)], "center": ["A", "B", "A", "C", "B"],
        "phases": [["t2"], None, ["a", "b"], [], ["x"]], "roi_box": [[0, 0, 0, 1, 1, 1]] * 4 + [None],
        "input_checksum": ["a", None, "c", "d", "e"],
        "embedding": pa.FixedSizeListArray.from_arrays(pa.array(emb.ravel()), 8)})
    s.publish("rt", t, "test", {"k": 1})
    back = s.read("rt").sort_by("patient_id")
    assert back.equals(t.sort_by("patient_id").cast(feature_schema(8)))
    via_sql = s.sql("SELECT * FROM rt ORDER BY patient_id")
    got = embedding_matrix(via_sql.combine_chunks())
    assert np.array_equal(got.view(np.uint32), emb.view(np.uint32))
    assert via_sql.schema.field("embedding").type == pa.list_(pa.float32(), 8)
    assert via_sql.column("phases").to_pylist() == t.column("phases").to_pylist()
    res = pa.table({"d": pa.array([dt.date(2021, 1, 2), None, dt.date(1970, 1, 1)], pa.date32()),
                    "ts": pa.array([dt.datetime(2021, 1, 2, 3, 4, 5, 6), None, dt.datetime(1999, 12, 31)],
                                   pa.timestamp("us")),
                    "cat": pa.array(["x", None, "y"]).dictionary_encode(),
                    "f": pa.array([1.5, None, float("inf")]), "i8": pa.array([1, None, -1], pa.int8())})
    s.write_table("result", res)
    assert s.table("result").equals(res)
    sq = s.sql("SELECT * FROM result")
    for name in ("d", "ts", "f", "i8"):
        assert sq.column(name).combine_chunks().equals(res.column(name).combine_chunks()), name
    assert sq.column("cat").to_pylist() == res.column("cat").to_pylist()


@pytest.mark.parametrize("mutate, message", [
    (lambda t: t.set_column(5, "embedding", pa.array([[1.0] * 16] * (t.num_rows - 1) + [[1.0] * 15],
                                                      pa.list_(pa.float32()))), "dimensions"),
    (lambda t: pa.concat_tables([t, t.slice(3, 1)]), "duplicate"),
    (lambda t: _poke(t, 4, 7, float("nan")), r"embedding\[7\] = nan"),
    (lambda t: _poke(t, 2, 0, float("inf")), r"embedding\[0\] = inf"),
    (lambda t: t.set_column(0, "patient_id", pa.array(["NOPE"] + t.column(0).to_pylist()[1:])), "unknown patient"),
])
def test_bad_rows_publish_nothing(store, mutate, message):
    before = (store.root / "registry.json").read_bytes()
    c = store.cohort.clinical
    bad = mutate(feature_rows(c.patient_id, c.center, seed=5))
    with pytest.raises(StoreError, match=message):
        store.publish("dltr", bad, "test", {"inputs_hash": "bad"})
    assert (store.root / "registry.json").read_bytes() == before
    assert sorted(p.name for p in (store.root / "features" / "dltr").iterdir()) == [store.resolve("dltr").version_id]


def _poke(t: pa.Table, row: int, col: int, value: float) -> pa.Table:
    m = embedding_matrix(t.combine_chunks()).copy()
    m[row, col] = value
    return t.set_column(5, "embedding", pa.FixedSizeListArray.from_arrays(pa.array(m.ravel()), m.shape[1]))


def test_versions_immutable_and_republish_noop(store):
    c = store.cohort.clinical
    again = store.publish("dltr", feature_rows(c.patient_id, c.center), "test", {"inputs_hash": "v1"})
    assert again.new is False and len(store.versions("dltr")) == 1
    v2 = store.publish("dltr", feature_rows(c.patient_id[:10], c.center[:10], seed=1), "test", {"inputs_hash": "v2"})
    assert v2.version_id == version_id_of("dltr", "test", {"inputs_hash": "v2"})
    v1 = store.versions("dltr")[0]
    assert store.sql("SELECT count(*) AS n FROM dltr").column("n")[0].as_py() == 10
    assert store.sql(f'SELECT count(*) AS n FROM "dltr@{v1.version_id}"').column("n")[0].as_py() == len(c)
    assert store.sql(f"SELECT count(*) AS n FROM dltr__{v1.version_id}").column("n")[0].as_py() == len(c)
    d = store.diff(v1.ref, v2.ref)
    assert d["removed"] == sorted(c.patient_id[10:]) and d["added"] == []
    a, b = embedding_matrix(store.read(v1.ref).combine_chunks()), embedding_matrix(store.read(v2.ref).combine_chunks())
    np.testing.assert_allclose(d["drift"], b.mean(0, dtype=np.float64) - a.mean(0, dtype=np.float64))


def test_sql_array_indexing_and_nearest(store):
    t = store.read("dltr").combine_chunks()
    x = embedding_matrix(t).astype(np.float64)
    ids = t.column("patient_id").to_pylist()
    e17 = store.sql("SELECT patient_id, embedding[5] AS e FROM dltr").to_pandas().set_index("patient_id")
    assert np.allclose(e17.loc[ids, "e"].to_numpy(), x[:, 4])
    got = store.nearest("dltr", ids[0], k=4).column("patient_id").to_pylist()
    cos = x @ x[0] / np.linalg.norm(x, axis=1) / np.linalg.norm(x[0])
    cos[0] = -np.inf
    assert got == [ids[i] for i in np.argsort(-cos)[:4]]


def test_writer_staged_resume_and_partitions(store):
    c = store.cohort.clinical
    rows = feature_rows(c.patient_id, c.center, seed=9)
    lin = {"inputs_hash": "staged"}
    vid = version_id_of("dltr", "test", lin)
    with store.feature_writer("dltr", vid, "test", lin, 16) as w:
        w.write(rows.slice(0, 12))
    w2 = store.feature_writer("dltr", vid, "test", lin, 16)
    assert w2.done_keys() == set(c.patient_id[:12])
    with pytest.raises(StoreError, match="duplicate key"):
        w2.write(rows.slice(10, 5))
    w2.write(rows.slice(12))
    v = w2.publish()
    assert v.row_count == len(c) and v.status == "published"
    assert sorted(p.name for p in (store.root / v.path).iterdir()) == ["center=A", "center=B", "center=C", "version.json"]
    assert store.read(v.ref).sort_by("patient_id").equals(rows.sort_by("patient_id").cast(feature_schema(16)))
    assert not (store.root / "features" / "dltr" / "_staging" / vid).exists()
    with pytest.raises(StoreError, match="content hash"):
        store.feature_writer("dltr", "deadbeef", "test", lin, 16)


HOLDER = """
import sys, time
from features import FeatureStore, version_id_of
s = FeatureStore(sys.argv[1])
w = s.feature_writer("other", version_id_of("other", "p", {}), "p", {}, 4)
open(sys.argv[2], "w").write("locked")
time.sleep(60)
"""


def test_second_writer_gets_store_locked_error(store, tmp_path):
    mark = tmp_path / "mark"
    p = subprocess.Popen([sys.executable, "-c", HOLDER, str(store.root), str(mark)], cwd=REPO)
    try:
        for _ in range(300):
            if mark.exists():
                break
            time.sleep(0.05)
        assert mark.exists()
        c = store.cohort.clinical
        with pytest.raises(StoreLockedError, match="another writer"):
            store.publish("dltr", feature_rows(c.patient_id, c.center, seed=2), "test", {"inputs_hash": "x"})
        with pytest.raises(StoreLockedError):
            store.write_table("t", pa.table({"a": [1]}))
        assert store.sql("SELECT count(*) AS n FROM dltr").column("n")[0].as_py() == len(c)  # readers go on
    finally:
        p.kill()
        p.wait()
    store.write_table("t", pa.table({"a": [1]}))  # the lock died with its holder


@pytest.mark.parametrize("stmt", [
    "DROP VIEW dltr", "DELETE FROM clinical", "INSERT INTO clinical SELECT * FROM clinical",
    "COPY (SELECT 1) TO '{root}/tables/leak.csv'", "COPY (SELECT 1) TO '{tmp}/leak.csv'",
    "ATTACH '{tmp}/other.duckdb' AS o", "CREATE TABLE x AS SELECT 1", "SET threads = 1",
    "SELECT 1; DROP VIEW dltr", "INSTALL httpfs", "PRAGMA enable_profiling",
])
def test_sql_cli_refuses_writes_without_flag(store, tmp_path, capsys, stmt):
    from dltr.cli import main

    q = stmt.format(root=store.root, tmp=tmp_path)
    code = main(["sql", q, "--store", str(store.root)])
    err = capsys.readouterr().err
    assert code != 0 and "read-only" in err
    assert not (store.root / "tables" / "leak.csv").exists() and not (tmp_path / "leak.csv").exists()
    assert not (tmp_path / "other.duckdb").exists()
    assert store.sql("SELECT count(*) AS n FROM dltr").column("n")[0].as_py() == len(store.cohort.clinical)


def test_read_only_engine_refuses_reads_outside_store(store):
    with pytest.raises(ReadOnlyQueryError):
        store.sql("SELECT * FROM read_csv('/etc/passwd')")


def test_sql_cli_formats_and_write(store, tmp_path, capsys):
    from dltr.cli import main

    out = tmp_path / "o.parquet"
    assert main(["sql", "SELECT patient_id, age FROM clinical ORDER BY 1", "--store", str(store.root),
                 "--format", "parquet", "--out", str(out)]) == 0
    import pyarrow.parquet as pq

    assert pq.read_table(out).column("age").to_pylist() == list(store.cohort.clinical.sort_values("patient_id").age)
    assert main(["sql", "CREATE TABLE notes AS SELECT 42 AS x", "--store", str(store.root), "--write"]) == 0
    capsys.readouterr()
    assert main(["sql", "SELECT x FROM notes", "--store", str(store.root), "--format", "json"]) == 0
    assert '"x": 42' in capsys.readouterr().out
    assert main(["store", "ls", "--store", str(store.root)]) == 0
    assert "dltr" in capsys.readouterr().out


def test_catalog_follows_a_moved_store(store, tmp_path, monkeypatch):
    n = len(store.cohort.clinical)
    dest = tmp_path / "moved"
    shutil.copytree(store.root, dest)
    shutil.rmtree(store.root)
    monkeypatch.chdir(tmp_path)
    moved = FeatureStore(dest)
    assert moved.sql("SELECT count(*) AS n FROM dltr").column("n")[0].as_py() == n
    import duckdb

    con = duckdb.connect(str(dest / "catalog.duckdb"), read_only=True)  # refreshed for plain DuckDB too
    try:
        assert con.execute("SELECT count(*) FROM dltr").fetchone()[0] == n
    finally:
        con.close()


def test_embedding_means_match_numpy(store):
    t = store.read("dltr").combine_chunks()
    x = embedding_matrix(t).astype(np.float64)
    centers = np.array(t.column("center").to_pylist())
    got = store.embedding_means("dltr")
    assert got.column("center").to_pylist() == sorted(set(centers))
    for row in got.to_pylist():
        sel = centers == row["center"]
        assert row["n"] == int(sel.sum())
        np.testing.assert_allclose(row["mean"], x[sel].mean(axis=0), rtol=1e-12, atol=1e-12)
    everything = store.embedding_means("dltr", by=None).to_pylist()
    assert len(everything) == 1 and everything[0]["center"] is None and everything[0]["n"] == len(x)
    np.testing.assert_allclose(everything[0]["mean"], x.mean(axis=0), rtol=1e-12, atol=1e-12)
    with pytest.raises(StoreError, match="by='split'"):
        store.embedding_means("dltr", by="split")


def test_cached_session_follows_commits_from_any_writer(store):
    """The reused read-only session sees a version published through another FeatureStore object,
    a table written with --write SQL, and keeps refusing writes and outside reads."""
    c = store.cohort.clinical
    assert store.sql("SELECT count(*) AS n FROM dltr").column("n")[0].as_py() == len(c)
    other = FeatureStore(store.root)
    half = c.iloc[: len(c) // 2]
    v2 = other.publish("dltr", feature_rows(half.patient_id, half.center, seed=5), "test", {"inputs_hash": "v2"})
    assert store.sql("SELECT count(*) AS n FROM dltr").column("n")[0].as_py() == len(half)
    t2 = other.read(v2.ref).combine_chunks()
    x, ids = embedding_matrix(t2).astype(np.float64), t2.column("patient_id").to_pylist()
    q = ids.index(half.patient_id.iloc[-1])
    sim = store.nearest("dltr", ids[q], k=3).column("similarity").to_numpy()
    rest = np.delete(x, q, axis=0)
    cos = rest @ x[q] / np.linalg.norm(rest, axis=1) / np.linalg.norm(x[q])
    np.testing.assert_allclose(sim, np.sort(cos)[::-1][:3], rtol=1e-5)
    other.sql("CREATE TABLE notes AS SELECT 7 AS x", write=True)
    assert store.sql("SELECT x FROM notes").column("x").to_pylist() == [7]
    with pytest.raises(ReadOnlyQueryError):
        store.sql("SELECT * FROM read_csv('/etc/passwd')")
    with pytest.raises(StoreError, match="no row for patient 'nobody'"):
        store.nearest("dltr", "nobody")
    store.close()
    other.close()
    assert store.sql("SELECT count(*) AS n FROM notes").column("n")[0].as_py() == 1


def single_query_frame_sql(view: str, clinical: list[str], labs: list[str], max_age: int | None, label: str) -> str:
    """Reference: the frame as one DuckDB query (embedding joined in SQL, labs by a QUALIFY window),
    written out here independently of features/_frames.py."""
    tace = "CAST(c.tace_date AS TIMESTAMP)"
    age = "" if max_age is None else f" AND l.measured_at >= {tace} - INTERVAL ({max_age}) DAY"
    lab_cte = lab_cols = lab_join = ""
    if labs:
        pivot = ", ".join(f"max(value) FILTER (WHERE name = '{n}') AS lab_{n}" for n in labs)
        names = ", ".join(f"'{n}'" for n in labs)
        lab_cte = (f", pit AS (SELECT l.patient_id, l.name, l.value FROM labs l JOIN clinical c USING (patient_id) "
                   f"WHERE l.name IN ({names}) AND l.value IS NOT NULL AND l.measured_at <= {tace} "
                   f"AND l.recorded_at <= {tace}{age} QUALIFY row_number() OVER (PARTITION BY l.patient_id, l.name "
                   "ORDER BY l.measured_at DESC, l.recorded_at DESC, l.value DESC) = 1), "
                   f"wide AS (SELECT patient_id, {pivot} FROM pit GROUP BY patient_id)")
        lab_cols = "".join(f", w.lab_{n}" for n in labs)
        lab_join = " LEFT JOIN wide w ON w.patient_id = f.patient_id"
    lab_expr = "c.label" if label == "response" else f"c.{label}"
    return (f'WITH f AS (SELECT patient_id, center, embedding FROM "{view}"){lab_cte} '
            f"SELECT f.patient_id, f.center, c.split, c.tace_date, CAST({lab_expr} AS TINYINT) AS label, "
            f"c.pfs_days, c.pfs_event, f.embedding{''.join(f', c.{x}' for x in clinical)}{lab_cols} "
            f"FROM f JOIN clinical c ON c.patient_id = f.patient_id{lab_join} ORDER BY f.patient_id")


@pytest.mark.parametrize("clinical, labs, max_age, label", [
    ([], [], None, "response"),
    (["age", "sex"], list(LABS), None, "response"),
    (["age"], ["albumin"], 60, "pfs_event"),
])
def test_frame_equals_single_query_frame(tmp_path, clinical, labs, max_age, label):
    """The frame (labs by arg_max in DuckDB, embedding attached from Parquet) is the table the old
    single query gives, schema and row hash included, for an older version with a subset of patients
    spread over centers, and with exact (measured_at, recorded_at) ties broken by the larger value."""
    cohort, _ = clinical_tables(n=40, seed=4)
    t0 = pd.Timestamp(cohort.clinical.tace_date.iloc[0]) - pd.Timedelta(minutes=30)  # P000's latest albumin
    ties = pd.DataFrame({"patient_id": "P000", "name": ["albumin"] * 3, "value": [41.0, 43.0, 42.0],
                         "measured_at": t0, "recorded_at": t0, "unit": "u"})
    cohort.labs = pd.concat([cohort.labs, ties], ignore_index=True)
    s = FeatureStore(tmp_path / "s")
    s.add_cohort(cohort)
    c = cohort.clinical.iloc[::-1][cohort.clinical.index[::-1] % 4 != 1]  # out of patient order, some absent
    rows = feature_rows(c.patient_id, c.center, dim=24, seed=2)
    v1 = s.publish("dltr", rows, "test", {"inputs_hash": "v1"})
    s.publish("dltr", feature_rows(c.patient_id[:5], c.center[:5], dim=24, seed=3), "test", {"inputs_hash": "v2"})
    frame = s.training_frame(v1.ref, label=label, clinical=clinical, labs=labs, max_age_days=max_age)
    ref = s.sql(single_query_frame_sql(f"dltr__{v1.version_id}", clinical, labs, max_age, label)).combine_chunks()
    assert frame.table.schema.equals(ref.schema, check_metadata=True)
    assert frame.table.equals(ref)
    assert frame.lineage["row_hash"] == table_hash(ref)
    assert frame.table.num_rows == len(c)
    want = dict(zip(c.patient_id, embedding_matrix(rows.combine_chunks()), strict=True))
    got = frame.embedding_matrix()
    for i, pid in enumerate(frame.table.column("patient_id").to_pylist()):
        assert np.array_equal(got[i].view(np.uint32), want[pid].view(np.uint32)), pid
    if "albumin" in labs:
        assert frame.to_pandas().set_index("patient_id").loc["P000", "lab_albumin"] == 43.0


def test_align_embeddings_places_rows_by_patient_and_refuses_duplicates_or_gaps():
    """The frame's embedding alignment against a hand placement; a duplicated or missing patient is a StoreError."""
    from features._frame_embed import align_embeddings

    field = pa.field("embedding", pa.list_(pa.float32(), 3))
    x1 = np.arange(6, dtype=np.float32).reshape(2, 3)
    x2 = np.arange(6, 9, dtype=np.float32).reshape(1, 3)
    parts = [(pa.chunked_array([["P2", "P0"]]), x1), (pa.chunked_array([["P1", "P9"]]), np.vstack([x2, x2 + 100]))]
    got = align_embeddings(parts, pa.array(["P0", "P1", "P2"]), field, "t")
    want = np.stack([x1[1], x2[0], x1[0]])  # P9 is not in the frame and is dropped
    assert np.array_equal(np.asarray(got.values).reshape(3, 3), want) and got.type == field.type
    with pytest.raises(StoreError, match="'P0' has 2 rows"):
        align_embeddings(parts + [(pa.chunked_array([["P0"]]), x2)], pa.array(["P0", "P1", "P2"]), field, "t")
    with pytest.raises(StoreError, match="'P3' has 0 rows"):
        align_embeddings(parts, pa.array(["P0", "P1", "P2", "P3"]), field, "t")


def test_lab_names_follow_a_replaced_table(tmp_path):
    """The per-process cache of a table's distinct lab names is keyed by the file's identity: a table
    replaced by a rename (how the store writes every table) is read again."""
    import pyarrow.parquet as pq

    from dltr.core.io import atomic_file
    from features._frames import distinct_names

    path = tmp_path / "labs.parquet"
    for names in (["afp", "inr", "afp"], ["albumin", None, "afp"]):
        with atomic_file(path) as f:
            pq.write_table(pa.table({"name": pa.array(names, pa.string())}), f)
        assert distinct_names(path) == {n for n in names if n is not None}
        assert distinct_names(path) == {n for n in names if n is not None}  # the cached answer


def test_packed_version_stores_one_binary_value_a_row_and_reads_back_the_same_floats(store):
    """A version whose lineage declares packed storage keeps each embedding as one fixed-size binary value in
    Parquet (its float32 bytes), and every reader of the store sees bit for bit the floats it was given."""
    import pyarrow.parquet as pq

    from features import PACKED, STORAGE_KEY, pack, unpack

    c = store.cohort.clinical
    rows = feature_rows(c.patient_id, c.center, dim=24, seed=11)
    x = embedding_matrix(rows.combine_chunks())
    # pack / unpack share the bytes, also for slices that start mid-array
    sliced = rows.column("embedding").combine_chunks().slice(3, 5)
    packed = pack(sliced)
    assert packed.type == pa.binary(96)
    assert [np.frombuffer(b, "<f4").tolist() for b in packed.to_pylist()] == x[3:8].tolist()
    assert unpack(packed).combine_chunks().equals(sliced) and unpack(packed.chunk(0).slice(1, 2)).to_pylist() == \
        sliced.slice(1, 2).to_pylist()
    v = store.publish("tensors", rows, "test", {"inputs_hash": "p1", STORAGE_KEY: PACKED})
    plain = store.publish("tensors", rows, "test", {"inputs_hash": "p1"})
    assert v.version_id != plain.version_id and v.dim == plain.dim == 24
    files = sorted((store.root / v.path).glob("center=*/*.parquet"))
    assert files and all(pq.read_schema(f).field("embedding").type == pa.binary(96) for f in files)
    assert all(pq.read_schema(f).field("embedding").type == pa.list_(pa.float32(), 24)
               for f in (store.root / plain.path).glob("center=*/*.parquet"))
    back = store.read(v.ref).sort_by("patient_id")
    assert back.equals(store.read(plain.ref).sort_by("patient_id"))
    order = np.argsort(np.asarray(rows.column("patient_id").to_pylist()))
    assert np.array_equal(embedding_matrix(back.combine_chunks()).view(np.uint32), x[order].view(np.uint32))
    # the training frame and SQL: the same floats as the plain version's; SQL shows the bytes
    fa = store.training_frame(v.ref).table.sort_by("patient_id")
    fb = store.training_frame(plain.ref).table.sort_by("patient_id")
    assert np.array_equal(embedding_matrix(fa), embedding_matrix(fb))
    blobs = store.sql(f'SELECT patient_id, embedding FROM "tensors@{v.version_id}" ORDER BY patient_id')
    assert np.array_equal(np.stack([np.frombuffer(b, "<f4") for b in blobs.column("embedding").to_pylist()]),
                          x[order])
    with pytest.raises(StoreError, match="packed"):
        store.nearest(v.ref, c.patient_id[0])
    # a non-finite value inside a packed row is refused like any other, naming the row and the index
    bad = _poke(rows, 2, 5, float("nan"))
    with pytest.raises(StoreError, match=r"row 2 .*embedding\[5\] = nan"):
        store.publish("tensors", bad, "test", {"inputs_hash": "p2", STORAGE_KEY: PACKED})
