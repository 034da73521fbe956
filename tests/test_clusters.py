"""Ray and Dask outside the command (issue 17, items 8-10): the embedded Ray ignores a stale cluster file
and keeps its output in STORE/logs; `dltr extract --address` on a real two-node Ray cluster with token
authentication and `dltr ingest --scheduler` on a real Dask scheduler with two worker processes give the
features and volumes of the embedded runs.

The clusters run in a network namespace of their own (``unshare -n``, loopback only: Ray binds 127.0.0.1,
no port meets another test's) with a Ray temp folder of their own (``RAY_TMPDIR``: nothing of theirs lands in
the machine's /tmp/ray). Without the right to make a namespace they run on this machine's loopback with
free ports. Every process is stopped by the pid this test started.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import zarr
from test_extract import _add_patients, _assert_rows_equal, _save_encoder

from features import FeatureStore
from pipeline.extract import extract_local

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
RAY_NOISE = ("Token authentication is enabled", "core_worker", "(raylet)", "INFO worker.py", "Started a local Ray")


def _unshare_ok() -> bool:
    try:
        return subprocess.run(["unshare", "-n", "true"], capture_output=True, timeout=30).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _cluster(script: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    """Run ``script`` in a network namespace of its own (loopback only) where the machine allows it, else
    on this machine's loopback with free ports (``$PORT``)."""
    netns = _unshare_ok()
    cmd = ["unshare", "-n", "bash", "-c", script] if netns else ["bash", "-c", script]
    env = {**env, "NETNS": "1" if netns else "0", "PORT": "6390" if netns else str(_free_port())}
    return subprocess.run(cmd, capture_output=True, text=True, timeout=900, env=env)


@pytest.fixture()
def ray_tmp():
    """A short Ray temp folder (Ray's socket paths must stay under 107 characters)."""
    d = tempfile.mkdtemp(prefix="rt", dir="/tmp")
    yield d
    shutil.rmtree(d, ignore_errors=True)


@pytest.fixture(scope="module")
def extract_store(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("clusters") / "store"
    _add_patients(root, [f"P{i:03d}" for i in range(6)], seed=2)
    _save_encoder(root)
    return root


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH", "")) if p)
    return {**env, **extra}


def test_embedded_extract_starts_its_own_ray_despite_a_stale_cluster_file(extract_store, ray_tmp, tmp_path):
    store = tmp_path / "store"
    shutil.copytree(extract_store, store)
    Path(ray_tmp, "ray_current_cluster").write_text("127.0.0.1:1")     # a cluster that died long ago
    p = subprocess.run([sys.executable, "-m", "dltr", "extract", "--store", str(store), "--workers", "1", "--json"],
                       capture_output=True, text=True, timeout=600, env=_env(RAY_TMPDIR=ray_tmp))
    assert p.returncode == 0, p.stderr[-3000:]
    assert json.loads(p.stdout)["status"] == "published"
    assert not [n for n in RAY_NOISE if n in p.stderr], p.stderr[-3000:]                  # Ray is quiet ...
    assert (store / "logs" / "ray.log").is_file()                                         # ... into the store
    _assert_rows_equal(FeatureStore(store).read("dltr"), extract_local(store, batch_size=4))


def test_kept_ray_is_started_by_the_first_session_and_shared_by_the_next(extract_store, tmp_path):
    """The demo's and the validity benchmark's stages share one embedded Ray: nothing starts until a stage
    needs Ray, the next stage finds the same instance, and it is shut down when the run ends."""
    import ray

    from pipeline.actors import kept_ray, ray_session
    from pipeline.extract import ExtractConfig, extract_features

    store = tmp_path / "store"
    shutil.copytree(extract_store, store)
    assert not ray.is_initialized()
    with kept_ray():
        assert not ray.is_initialized()                       # a run whose stages are all reused pays nothing
        rep = extract_features(store, None, ExtractConfig(workers=1, batch_size=4))
        assert rep.status == "published" and ray.is_initialized()
        gcs = ray.get_runtime_context().gcs_address
        with ray_session(None) as startup:                    # the next stage: the same instance, no start-up
            assert ray.get_runtime_context().gcs_address == gcs and startup < 1.0
        assert ray.is_initialized()
    assert not ray.is_initialized()
    _assert_rows_equal(FeatureStore(store).read("dltr"), extract_local(store, batch_size=4))


_RAY_CLUSTER = r"""
set -u
[ "$NETNS" = 1 ] && ip link set lo up
export RAY_AUTH_MODE=token RAY_AUTH_TOKEN="$TOKEN"
"$BIN/ray" start --head --node-ip-address=127.0.0.1 --port=$PORT --num-cpus=1 --num-gpus=0 \
    --resources='{"head_node": 1}' --include-dashboard=false --disable-usage-stats --block > "$OUT/head.log" 2>&1 &
HEAD=$!
"$BIN/python" - <<'EOF' || { kill -TERM $HEAD; wait $HEAD; exit 90; }
import os, time, ray
for _ in range(120):
    try:
        ray.init(address="127.0.0.1:" + os.environ["PORT"], log_to_driver=False); ray.shutdown(); break
    except Exception:
        time.sleep(1)
else:
    raise SystemExit("head did not come up")
EOF
"$BIN/ray" start --address=127.0.0.1:$PORT --node-ip-address=127.0.0.1 --num-cpus=1 --num-gpus=0 \
    --resources='{"second_node": 1}' --disable-usage-stats --block > "$OUT/node.log" 2>&1 &
NODE=$!
"$BIN/python" - <<'EOF' > "$OUT/nodes.json"
import json, os, time, ray
ray.init(address="127.0.0.1:" + os.environ["PORT"], log_to_driver=False)
for _ in range(120):
    alive = [n for n in ray.nodes() if n["Alive"]]
    if len(alive) == 2:
        break
    time.sleep(1)
print(json.dumps([n["Resources"] for n in alive]))
ray.shutdown()
EOF
unset RAY_AUTH_MODE RAY_AUTH_TOKEN
DLTR_RAY_TOKEN="$TOKEN" "$BIN/python" -m dltr extract --store "$STORE" --address 127.0.0.1:$PORT \
    --auth-token-env DLTR_RAY_TOKEN --workers 2 --json > "$OUT/extract.json" 2> "$OUT/extract.err"
RC=$?
"$BIN/python" -m dltr extract --store "$STORE2" --address 127.0.0.1:$PORT > /dev/null 2> "$OUT/notoken.err"
NOTOKEN=$?
echo "$NOTOKEN" > "$OUT/notoken.rc"
kill -TERM $NODE; wait $NODE
kill -TERM $HEAD; wait $HEAD
exit $RC
"""


def test_extract_on_an_external_two_node_ray_cluster_with_token_auth(extract_store, ray_tmp, tmp_path):
    store, store2 = tmp_path / "store", tmp_path / "store2"
    shutil.copytree(extract_store, store)
    shutil.copytree(extract_store, store2)
    out = tmp_path / "out"
    out.mkdir()
    env = _env(RAY_TMPDIR=ray_tmp, TOKEN=secrets.token_hex(16), BIN=str(BIN), OUT=str(out), STORE=str(store),
               STORE2=str(store2))
    p = _cluster(_RAY_CLUSTER, env)
    logs = {f.name: f.read_text()[-2000:] for f in out.iterdir()}
    assert p.returncode == 0, (p.stdout[-2000:], p.stderr[-2000:], logs)
    nodes = json.loads((out / "nodes.json").read_text())
    assert sorted(k for n in nodes for k in n if k.endswith("_node")) == ["head_node", "second_node"]
    rep = json.loads((out / "extract.json").read_text())
    assert rep["status"] == "published" and rep["n_computed"] == 6
    embedded = extract_local(store, batch_size=4)
    _assert_rows_equal(FeatureStore(store).read("dltr", rep["version_id"]), embedded)
    # the version id is that of an embedded CPU run: where it ran is not lineage, the device is
    assert rep["lineage"]["device"] == "cpu"
    # without the token the driver is refused, with a one-line hint
    assert (out / "notoken.rc").read_text().strip() != "0"
    assert "RAY_AUTH_TOKEN" in (out / "notoken.err").read_text()


_DASK_CLUSTER = r"""
set -u
[ "$NETNS" = 1 ] && ip link set lo up
"$BIN/dask" scheduler --host 127.0.0.1 --port $PORT --no-dashboard > "$OUT/scheduler.log" 2>&1 &
SCHED=$!
sleep 1
for i in 1 2; do
  "$BIN/dask" worker tcp://127.0.0.1:$PORT --host 127.0.0.1 --nworkers 1 --nthreads 1 --no-dashboard \
      --name "w$i" > "$OUT/worker$i.log" 2>&1 &
  eval "W$i=\$!"
done
"$BIN/python" - <<'EOF'
import os
from distributed import Client
c = Client("tcp://127.0.0.1:" + os.environ["PORT"], timeout=120)
c.wait_for_workers(2, timeout=120)
c.close()
EOF
"$BIN/python" -m dltr ingest "$COHORT" --store "$STORE" --scheduler tcp://127.0.0.1:$PORT --json > "$OUT/ingest.json"
RC=$?
kill -TERM $W1 $W2; wait $W1 $W2
kill -TERM $SCHED; wait $SCHED
exit $RC
"""


def test_ingest_on_an_external_dask_scheduler_with_two_workers(tmp_path):
    from dltr.synth import SynthConfig, synthesize
    from pipeline.ingest import IngestConfig, ingest_cohort

    res = synthesize(tmp_path / "synth", SynthConfig.profile("tiny", seed=4, patients=2))
    embedded = tmp_path / "embedded"
    ingest_cohort(res.cohort, embedded, IngestConfig(workers=1, processes=False))
    out, store = tmp_path / "out", tmp_path / "store"
    out.mkdir()
    env = _env(BIN=str(BIN), OUT=str(out), STORE=str(store), COHORT=str(res.cohort))
    p = _cluster(_DASK_CLUSTER, env)
    logs = {f.name: f.read_text()[-2000:] for f in out.iterdir()}
    assert p.returncode == 0, (p.stdout[-2000:], p.stderr[-2000:], logs)
    summary = json.loads((out / "ingest.json").read_text())
    assert summary["ok"] == 6 and summary["failed"] == 0
    a, b = zarr.open_group(embedded / "volumes.zarr", mode="r"), zarr.open_group(store / "volumes.zarr", mode="r")
    assert sorted(a.group_keys()) == sorted(b.group_keys()) and len(list(a.group_keys())) == 6
    for pid in a.group_keys():
        assert dict(a[pid].attrs) == dict(b[pid].attrs)
        for arr in a[pid].array_keys():
            assert np.array_equal(a[pid][arr][...], b[pid][arr][...]), (pid, arr)
    cols = ["patient_id", "phase", "volume_key", "shape", "bbox_vox", "source_sha256", "mask_sha256", "status"]
    ta = pq.read_table(embedded / "ingest" / "studies.parquet", columns=cols).sort_by([("patient_id", "ascending"),
                                                                                       ("phase", "ascending")])
    tb = pq.read_table(store / "ingest" / "studies.parquet", columns=cols).sort_by([("patient_id", "ascending"),
                                                                                    ("phase", "ascending")])
    assert ta.equals(tb)
