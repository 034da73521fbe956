"""A store with many versions: the catalog file holds the table and latest views only, every pinned
version still reads as ``"name@version"`` and ``name__version`` (temporary views created per session
from the registry), and a catalog written before this layout is migrated on the next commit."""

from __future__ import annotations

import duckdb
import numpy as np
import pyarrow as pa
import pytest

from dltr.core.exceptions import StoreError
from features import FeatureStore, embedding_matrix
from features._sql import run_read_only

N_VERSIONS = 24


def rows(seed: int, n: int = 6, dim: int = 4) -> pa.Table:
    rng = np.random.default_rng(seed)
    pids = [f"P{i:02d}" for i in range(n)]
    emb = rng.normal(size=(n, dim)).astype(np.float32)
    return pa.table({"patient_id": pids, "center": ["A", "B"] * (n // 2), "phases": [["arterial"]] * n,
                     "roi_box": [[0, 0, 0, 4, 4, 4]] * n, "input_checksum": pids,
                     "embedding": pa.FixedSizeListArray.from_arrays(pa.array(emb.ravel()), dim)})


def catalog_views(store: FeatureStore) -> set[str]:
    con = duckdb.connect(str(store.root / "catalog.duckdb"), read_only=True)
    try:
        return {r[0] for r in con.execute("SELECT view_name FROM duckdb_views() WHERE NOT internal").fetchall()}
    finally:
        con.close()


def by_patient(table: pa.Table) -> dict[str, np.ndarray]:
    t = table.combine_chunks()
    return dict(zip(t.column("patient_id").to_pylist(), embedding_matrix(t), strict=True))


def same(a: dict[str, np.ndarray], b: dict[str, np.ndarray]) -> bool:
    return a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)


@pytest.fixture(scope="module")
def many(tmp_path_factory):
    s = FeatureStore(tmp_path_factory.mktemp("many") / "store")
    published = [(s.publish("dltr", rows(i), "test", {"inputs_hash": f"v{i}"}), rows(i)) for i in range(N_VERSIONS)]
    s.publish("other", rows(100), "test", {"inputs_hash": "o"})
    return s, published


def test_catalog_file_holds_latest_views_only(many):
    s, _ = many
    assert catalog_views(s) == {"dltr", "other"}


@pytest.mark.parametrize("i", [0, 1, N_VERSIONS // 2, N_VERSIONS - 1])
def test_every_pinned_version_reads_its_own_rows(many, i):
    s, published = many
    v, table = published[i]
    want = by_patient(table)
    for view in (f'"dltr@{v.version_id}"', f"dltr__{v.version_id}"):
        q = f"SELECT patient_id, embedding FROM {view} ORDER BY patient_id"
        assert same(by_patient(s.sql(q)), want)
        assert same(by_patient(run_read_only(s.root, q)), want)  # one-shot connection, no session
    other = published[(i + 1) % N_VERSIONS][1]
    assert not same(by_patient(s.sql(f"SELECT patient_id, embedding FROM dltr__{v.version_id}")), by_patient(other))


def test_latest_view_and_pinned_versions_in_one_query(many):
    s, published = many
    first, last = published[0][0], published[-1][0]
    latest = by_patient(s.sql("SELECT patient_id, embedding FROM dltr"))
    assert same(latest, by_patient(published[-1][1]))
    n = s.sql(f'SELECT count(*) AS n FROM "dltr@{first.version_id}" a JOIN dltr__{last.version_id} b '
              "USING (patient_id) WHERE a.embedding <> b.embedding").column("n")[0].as_py()
    assert n == 6


def test_nearest_on_an_old_version(many):
    s, published = many
    v, table = published[1]
    x = by_patient(table)
    q = x["P00"]
    cos = {p: float(e @ q / (np.linalg.norm(e) * np.linalg.norm(q))) for p, e in x.items() if p != "P00"}
    want = sorted(cos, key=lambda p: (-cos[p], p))[:3]
    assert s.nearest(v.ref, "P00", k=3).column("patient_id").to_pylist() == want


def test_unknown_or_partial_version_name_is_not_a_view(many):
    s, published = many
    vid = published[0][0].version_id
    for view in ('"dltr@0000000000000000"', f"dltr__{vid[:6]}"):
        with pytest.raises(StoreError, match="does not exist"):
            s.sql(f"SELECT * FROM {view}")


def test_catalog_of_the_old_layout_is_migrated(tmp_path):
    """A catalog that still lists pinned views in its own file (the layout before) loses them at the
    next commit, and the pinned names keep reading the right rows."""
    s = FeatureStore(tmp_path / "store")
    v1 = s.publish("dltr", rows(1), "test", {"inputs_hash": "v1"})
    old = [f"dltr@{v1.version_id}", f"dltr__{v1.version_id}", "dltr"]
    con = duckdb.connect(str(s.root / "catalog.duckdb"))
    sel = f"SELECT * FROM read_parquet('{(s.root / v1.path).resolve().as_posix()}/*/*.parquet')"
    con.execute("DROP TABLE _dltr_views")
    con.execute("CREATE TABLE _dltr_views (name VARCHAR)")
    for name in old:
        con.execute(f'CREATE OR REPLACE VIEW "{name}" AS {sel}')
        con.execute("INSERT INTO _dltr_views VALUES (?)", [name])
    con.close()
    s.close()
    s = FeatureStore(tmp_path / "store")
    v2 = s.publish("dltr", rows(2), "test", {"inputs_hash": "v2"})
    assert catalog_views(s) == {"dltr"}
    assert same(by_patient(s.sql(f'SELECT * FROM "dltr@{v1.version_id}"')), by_patient(rows(1)))
    assert same(by_patient(s.sql(f"SELECT * FROM dltr__{v2.version_id}")), by_patient(rows(2)))
    assert same(by_patient(s.sql("SELECT * FROM dltr")), by_patient(rows(2)))


def test_registry_holds_a_stub_per_version_and_reads_format_1(tmp_path):
    """A commit rewrites a constant-size stub per version (the full entry lies in the version's
    folder); a registry of format 1 (entries inline) still reads, and publishing onto it works."""
    import json

    s = FeatureStore(tmp_path / "store")
    v1 = s.publish("dltr", rows(1), "test", {"inputs_hash": "v1", "note": "x" * 500})
    path = s.root / "registry.json"
    data = json.loads(path.read_text())
    assert data["format"] == 2 and data["feature_sets"]["dltr"]["versions"][v1.version_id] == {
        "created_at": v1.created_at}
    assert s.resolve(v1.ref).to_dict() == v1.to_dict()  # lineage, schema, centers from version.json
    data["format"] = 1  # the old layout: the whole entry inline
    data["feature_sets"]["dltr"]["versions"][v1.version_id] = v1.to_dict()
    path.write_text(json.dumps(data))
    (s.root / v1.path / "version.json").unlink()
    assert s.resolve(v1.ref).to_dict() == v1.to_dict()
    v2 = s.publish("dltr", rows(2), "test", {"inputs_hash": "v2"})
    assert [v.version_id for v in s.versions("dltr")] == [v1.version_id, v2.version_id]
    assert json.loads(path.read_text())["format"] == 2
    assert same(by_patient(s.sql(f'SELECT * FROM "dltr@{v1.version_id}"')), by_patient(rows(1)))
