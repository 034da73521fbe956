"""Atomic publish under SIGKILL, and readers that never see part of a version."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pyarrow as pa
import pytest

from dltr.core.exceptions import StoreError
from features import FeatureStore, feature_schema

REPO = Path(__file__).resolve().parents[1]
DIM = 32

ROWS = """
import numpy as np, pyarrow as pa
def rows(n, seed, dim=DIM):
    rng = np.random.default_rng(seed)
    emb = rng.normal(size=(n, dim)).astype(np.float32)
    pids = [f"P{i:05d}" for i in range(n)]
    return pa.table({"patient_id": pids, "center": [("A", "B", "C")[i % 3] for i in range(n)],
                     "phases": [["arterial"]] * n, "roi_box": pa.array([[0, 0, 0, 4, 4, 4]] * n, pa.list_(pa.int32())),
                     "input_checksum": [f"c{p}" for p in pids],
                     "embedding": pa.FixedSizeListArray.from_arrays(pa.array(emb.ravel()), dim)})
""".replace("DIM", str(DIM))

WRITER = ROWS + """
import sys
from features import FeatureStore, version_id_of
root, n = sys.argv[1], int(sys.argv[2])
lin = {"inputs_hash": "big"}
w = FeatureStore(root).feature_writer("dltr", version_id_of("dltr", "crash", lin), "crash", lin, DIM)
t = rows(n, 7)
for s in range(0, n, 500):
    if s >= len(w.done_keys()):
        w.write(t.slice(s, 500))
print(w.publish().row_count)
""".replace("DIM", str(DIM))

READER = """
import sys, time
from features import FeatureStore
root, out, until = sys.argv[1], sys.argv[2], float(sys.argv[3])
seen = []
while time.time() < until:
    s = FeatureStore(root)
    n_sql = s.sql("SELECT count(*) AS n FROM dltr").column("n")[0].as_py()
    t = s.read("dltr")
    seen.append([n_sql, t.num_rows, len(set(t.column("patient_id").to_pylist()))])
open(out, "w").write(__import__("json").dumps(seen))
"""


def _rows(n: int, seed: int) -> pa.Table:
    ns: dict = {}
    exec(ROWS, ns)  # the same generator the subprocesses use
    return ns["rows"](n, seed)


def _env(**extra: str) -> dict[str, str]:
    env = {**os.environ, **extra}
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    return env


@pytest.fixture
def base(tmp_path):
    s = FeatureStore(tmp_path / "store")
    v1 = s.publish("dltr", _rows(600, 1), "crash", {"inputs_hash": "small"})
    return s, v1


@pytest.mark.slow
@pytest.mark.parametrize("point", ["staged", "parts_written", "dir_renamed", "registry_committed"])
def test_sigkill_mid_publish_then_retry(base, tmp_path, point):
    s, v1 = base
    n = 3000
    mark = tmp_path / "mark"
    p = subprocess.Popen([sys.executable, "-c", WRITER, str(s.root), str(n)], cwd=REPO, stdout=subprocess.PIPE,
                         env=_env(DLTR_STORE_PAUSE_AT=point, DLTR_STORE_PAUSE_MARK=str(mark)))
    try:
        for _ in range(1200):
            if mark.exists() or p.poll() is not None:
                break
            time.sleep(0.05)
        assert mark.read_text() == point
        os.kill(p.pid, signal.SIGKILL)
    finally:
        p.kill()
        p.wait()
    assert p.returncode == -signal.SIGKILL
    reader = FeatureStore(s.root)
    count = reader.sql("SELECT count(*) AS n FROM dltr").column("n")[0].as_py()
    committed = point == "registry_committed"
    assert count == (n if committed else v1.row_count)  # all of one version, never a part
    assert reader.read(v1.ref).sort_by("patient_id").equals(
        _rows(600, 1).cast(feature_schema(DIM)).sort_by("patient_id"))  # the previous version is intact
    if not committed:
        assert [v.version_id for v in reader.versions("dltr")] == [v1.version_id]
        with pytest.raises(StoreError):
            reader.sql("SELECT count(*) FROM dltr__" + "0" * 16)
    out = subprocess.run([sys.executable, "-c", WRITER, str(s.root), str(n)], cwd=REPO, env=_env(),
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    got = reader.read("dltr").sort_by("patient_id")
    assert got.equals(_rows(n, 7).cast(feature_schema(DIM)).sort_by("patient_id"))
    assert reader.sql("SELECT count(DISTINCT patient_id) AS n FROM dltr").column("n")[0].as_py() == n
    assert len(reader.versions("dltr")) == 2
    assert not list((s.root / "features" / "dltr").glob(".tmp-*"))


@pytest.mark.slow
def test_reader_never_sees_part_of_a_version(base, tmp_path):
    s, v1 = base
    out = tmp_path / "seen.json"
    sizes = [1500, 2400, 900, 3000]
    p = subprocess.Popen([sys.executable, "-c", READER, str(s.root), str(out), str(time.time() + 12)],
                         cwd=REPO, env=_env())
    try:
        time.sleep(1.5)
        for i, n in enumerate(sizes):
            s.publish("dltr", _rows(n, 10 + i), "crash", {"inputs_hash": f"r{i}"})
            time.sleep(0.3)
        assert p.wait(timeout=120) == 0
    finally:
        p.kill()
    seen = json.loads(out.read_text())
    allowed = {v1.row_count, *sizes}
    assert len(seen) > 5
    for n_sql, n_read, n_unique in seen:
        assert n_sql in allowed and n_read in allowed and n_unique == n_read
    assert {r[0] for r in seen} & set(sizes)  # the reader did observe new versions
