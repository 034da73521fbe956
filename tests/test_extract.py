"""Distributed extraction (pipeline.extract): Ray run == single-process reference, resumable after
SIGKILL, failures isolated, incremental.

Tolerance: on the CPU the Ray actors and the reference run the same DALI pipeline and encoder;
embeddings agree to ``ATOL`` (float32 conv kernels may pick other algorithms for another batch size),
and exactly for the same batch size. Boxes, checksums and keys agree exactly.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import ray

from dltr.core.hashing import content_hash
from features import FeatureStore
from pipeline.extract import ERRORS_TABLE, ExtractConfig, extract_features, extract_local

ATOL = 1e-5
PHASES = ("arterial", "portal", "delayed")
SHAPE, CHUNKS = (24, 24, 12), (8, 8, 4)
REPO = Path(__file__).resolve().parents[1]


def _add_patients(root: Path, ids: list[str], seed: int) -> None:
    """Write patients into STORE/volumes.zarr and (re)write ingest/studies.parquet (contract layout)."""
    import zarr

    grp = zarr.open_group(root / "volumes.zarr", mode="a")
    path = root / "ingest" / "studies.parquet"
    rows = pq.read_table(path).to_pylist() if path.exists() else []
    for pid in ids:
        rng = np.random.default_rng([seed, int(pid[1:])])
        c = rng.uniform([6, 6, 3], [18, 18, 9])
        r = rng.uniform([3, 3, 2], [6, 6, 3])
        ii = np.indices(SHAPE, dtype=np.float64)
        mask = (sum(((ii[a] - c[a]) / r[a]) ** 2 for a in range(3)) <= 1).astype(np.uint8)
        g = grp.create_group(pid)
        center = "AB"[int(pid[1:]) % 2]
        sha = {}
        for k, ph in enumerate(PHASES):
            vol = (200 + 30 * k + rng.normal(0, 25, SHAPE) + mask * rng.uniform(40, 160)).astype(np.int16)
            g.create_array(ph, shape=SHAPE, chunks=CHUNKS, dtype="int16")[...] = vol
            sha[ph] = hashlib.sha256(vol.tobytes()).hexdigest()
        g.create_array("mask", shape=SHAPE, chunks=CHUNKS, dtype="uint8")[...] = mask
        nz = np.nonzero(mask)
        bbox = [int(a.min()) for a in nz] + [int(a.max()) + 1 for a in nz]
        g.attrs.update({"patient_id": pid, "center": center, "phases": list(PHASES), "bbox_vox": bbox,
                        "spacing": [0.8, 0.8, 3.0]})
        msha = hashlib.sha256(mask.tobytes()).hexdigest()
        rows += [{"patient_id": pid, "center": center, "phase": ph, "volume_key": f"{pid}/{ph}",
                  "mask_key": f"{pid}/mask", "dtype": "int16", "bbox_vox": bbox, "source_sha256": sha[ph],
                  "mask_sha256": msha, "status": "ok"} for ph in PHASES]
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pylist(rows), path)
    stats = [{"phase": ph, "center": c, "region": "body", "n": 1, "mean": 230.0, "std": 50.0, "p01": 0.0,
              "p50": 0.0, "p99": 0.0} for ph in PHASES for c in "AB"]
    pq.write_table(pa.Table.from_pylist(stats), root / "ingest" / "intensity_stats.parquet")


def _save_encoder(root: Path) -> Path:
    """An untrained, seeded checkpoint in the contract format (no training: the test stays fast)."""
    import torch

    from models import build_encoder, save_encoder
    from pipeline.loaders import RoiConfig

    torch.manual_seed(0)
    m = build_encoder("plain", 3, embed_dim=16, width=4).eval()
    card = {"architecture": m.arch, "in_channels": 3, "embed_dim": 16,
            "preprocess": RoiConfig(phases=PHASES, grid=(16, 16, 8)).to_dict(), "augmentations": None,
            "training_rows_hash": "none", "candidates": {}, "seed": 0, "software": {}}
    return save_encoder(root, m, card)


@pytest.fixture(scope="module")
def base_store(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("extract") / "store"
    _add_patients(root, [f"P{i:03d}" for i in range(10)], seed=1)
    _save_encoder(root)
    return root


@pytest.fixture(scope="module")
def local_rows(base_store) -> pa.Table:
    return extract_local(base_store, batch_size=4)


@pytest.fixture(scope="module")
def ray_cluster(tmp_path_factory):
    marker = tmp_path_factory.mktemp("crash") / "crashed"
    marker.touch()  # present: no crash until a test removes it
    os.environ["DLTR_EXTRACT_CRASH_ONCE"] = str(marker)
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    yield marker
    ray.shutdown()
    os.environ.pop("DLTR_EXTRACT_CRASH_ONCE", None)


def _copy(base: Path, tmp: Path) -> Path:
    dst = tmp / "store"
    shutil.copytree(base, dst)
    return dst


def _assert_rows_equal(a: pa.Table, b: pa.Table, atol: float = ATOL) -> None:
    a, b = a.sort_by("patient_id"), b.sort_by("patient_id")
    for col in ("patient_id", "center", "phases", "roi_box", "input_checksum"):
        assert a.column(col).to_pylist() == b.column(col).to_pylist(), col
    ea = np.asarray(a.column("embedding").to_pylist(), np.float32)
    eb = np.asarray(b.column("embedding").to_pylist(), np.float32)
    assert ea.shape == eb.shape and np.abs(ea).max() > 0
    np.testing.assert_allclose(ea, eb, rtol=0, atol=atol)


def _expected_version(root: Path, name: str = "dltr") -> tuple[str, dict]:
    """Version id computed by hand from the studies table and the card (docs/architecture.md)."""
    card = json.loads(next((root / "encoders").glob("*/model_card.json")).read_text())
    rows = pq.read_table(root / "ingest" / "studies.parquet").to_pylist()
    per: dict[str, dict] = {}
    for r in rows:
        per.setdefault(r["patient_id"], {})[r["phase"]] = r["source_sha256"]
        per[r["patient_id"]]["mask"] = r["mask_sha256"]
    checks = sorted(content_hash({"phases": [[p, d[p]] for p in PHASES], "mask": d["mask"]}, length=32)
                    for d in per.values())
    from pipeline.loaders import RoiConfig

    lineage = {"encoder_card_hash": card["card_hash"],
               "preprocess_hash": RoiConfig.from_dict(card["preprocess"]).content_hash(),
               "inputs_hash": content_hash(checks), "device": "cpu", "dtype": "float32", "autocast": "none"}
    return content_hash({"name": name, "producer": "pipeline.extract", "lineage": lineage}), lineage


def test_ray_run_equals_local_reference_and_reruns_are_noops(ray_cluster, base_store, local_rows, tmp_path):
    root = _copy(base_store, tmp_path)
    rep = extract_features(root, config=ExtractConfig(workers=2, batch_size=3))
    vid, lineage = _expected_version(root)
    assert (rep.status, rep.version_id, rep.lineage, rep.n_computed) == ("published", vid, lineage, 10)
    store = FeatureStore(root)
    rows = store.read("dltr", vid)
    assert rows.num_rows == 10 and len(set(rows.column("patient_id").to_pylist())) == 10
    _assert_rows_equal(rows, local_rows)
    # unchanged store: no work, nothing new
    n_versions = len(store.versions("dltr"))
    again = extract_features(root, config=ExtractConfig(workers=2, batch_size=3))
    assert (again.status, again.n_computed, again.version_id) == ("exists", 0, vid)
    assert len(FeatureStore(root).versions("dltr")) == n_versions
    # two new patients: a new version, only those two computed, the rest copied unchanged
    _add_patients(root, ["P010", "P011"], seed=1)
    grown = extract_features(root, config=ExtractConfig(workers=1, batch_size=3))
    assert (grown.status, grown.n_computed, grown.n_reused) == ("published", 2, 10)
    assert grown.version_id == _expected_version(root)[0] != vid
    new_rows = FeatureStore(root).read("dltr", grown.version_id)
    _assert_rows_equal(new_rows, extract_local(root, batch_size=4))
    old_part = new_rows.filter(pa.compute.is_in(new_rows.column("patient_id"), rows.column("patient_id")))
    _assert_rows_equal(old_part, rows, atol=0.0)


def test_a_part_holds_the_batches_of_one_staging_interval(ray_cluster, base_store, tmp_path, monkeypatch):
    """``stage_every_s=0``: one staged part per delivered result; a long interval: the first result at once, the
    rest in one part when the stream ends. The published version is the same either way, bit for bit. (A worker
    hands every result that is ready at once to Ray, so one delivery may hold two 2-row batches: the parts are
    compared with the deliveries the driver received, not with a fixed list.)"""
    from features import FeatureWriter
    from pipeline.extract._driver import _Sink

    parts: list[int] = []
    delivered: list[int] = []
    write, receive = FeatureWriter.write, _Sink.__call__

    def counted(self, table):
        parts.append(table.num_rows)
        return write(self, table)

    def received(self, work):
        delivered.append(work.num_rows)
        return receive(self, work)

    monkeypatch.setattr(FeatureWriter, "write", counted)
    monkeypatch.setattr(_Sink, "__call__", received)
    runs = {}  # key -> (store, version id, rows of each staged part, rows of each delivery)
    for key, every in (("each", 0.0), ("once", 3600.0)):
        (tmp_path / key).mkdir()
        root = _copy(base_store, tmp_path / key)
        parts.clear()
        delivered.clear()
        rep = extract_features(root, config=ExtractConfig(workers=1, batch_size=2, stage_every_s=every))
        assert (rep.status, rep.n_computed) == ("published", 10)
        runs[key] = (root, rep.version_id, list(parts), list(delivered))
    (each_root, each_id, each_parts, each_in), (once_root, once_id, once_parts, once_in) = runs["each"], runs["once"]
    assert all(n % 2 == 0 for n in each_in + once_in) and sum(each_in) == sum(once_in) == 10   # whole batches
    assert each_parts == each_in                              # a part per delivery
    assert once_parts == [once_in[0]] + ([10 - once_in[0]] if len(once_in) > 1 else [])   # first at once, rest at end
    assert each_id == once_id
    _assert_rows_equal(FeatureStore(once_root).read("dltr", once_id), FeatureStore(each_root).read("dltr", each_id),
                       atol=0.0)


@pytest.mark.slow
def test_unreadable_study_goes_to_errors_and_rest_is_complete(ray_cluster, base_store, local_rows, tmp_path):
    root = _copy(base_store, tmp_path)
    chunk = root / "volumes.zarr" / "P004" / "portal" / "c" / "1" / "1" / "1"
    assert chunk.is_file()
    chunk.write_bytes(b"\x00garbage, not a zarr chunk")
    rep = extract_features(root, config=ExtractConfig(workers=2, batch_size=4))
    assert rep.status == "incomplete" and [e["patient_id"] for e in rep.errors] == ["P004"]
    store = FeatureStore(root)
    assert "dltr" not in store.feature_sets()  # nothing published without --allow-partial
    errs = store.table(ERRORS_TABLE).to_pylist()
    assert [(e["patient_id"], e["stage"], e["version_id"]) for e in errs] == [("P004", "load", rep.version_id)]
    assert errs[0]["reason"]
    # resume with allow_partial: only the failed study is retried, the rest was staged
    rep2 = extract_features(root, config=ExtractConfig(workers=1, batch_size=4, allow_partial=True))
    assert (rep2.status, rep2.n_resumed, rep2.n_computed, rep2.n_errors) == ("partial", 9, 0, 1)
    assert [(v.version_id, v.status) for v in FeatureStore(root).versions("dltr")] == [(rep2.version_id, "partial")]
    rows = FeatureStore(root).read("dltr", rep2.version_id)
    expect = local_rows.filter(pa.compute.not_equal(local_rows.column("patient_id"), "P004"))
    _assert_rows_equal(rows, expect)
    assert len(FeatureStore(root).table(ERRORS_TABLE)) == 1  # replaced for this version, not appended


def test_crashed_actor_is_restarted_and_its_batch_retried(ray_cluster, base_store, local_rows, tmp_path):
    root = _copy(base_store, tmp_path)
    ray_cluster.unlink()  # the first batch's actor dies hard (os._exit), once
    rep = extract_features(root, config=ExtractConfig(workers=1, batch_size=5))
    assert ray_cluster.exists(), "no actor crashed: the test did not exercise a restart"
    assert (rep.status, rep.n_computed, rep.n_errors) == ("published", 10, 0)
    _assert_rows_equal(FeatureStore(root).read("dltr", rep.version_id), local_rows)


@pytest.mark.slow
def test_sigkill_driver_mid_run_then_resume(ray_cluster, base_store, tmp_path):
    root = _copy(base_store, tmp_path)
    # the reference: the in-process extraction at the same batch size (equal to a Ray run at the same batch
    # size, bit for bit: test_ray_run_equals_local_reference_and_reruns_are_noops) and the hand-made version id
    ref_rows, ref_version = extract_local(base_store, batch_size=1), _expected_version(base_store)[0]
    staging = root / "features" / "dltr" / "_staging" / ref_version
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_") and k != "DLTR_EXTRACT_CRASH_ONCE"}
    cmd = [sys.executable, "-m", "dltr", "extract", "--store", str(root), "--workers", "1", "--batch-size", "1",
           "--stage-every", "0"]  # a part per batch: the run is killed after its second
    proc = subprocess.Popen(cmd, cwd=REPO, env=env, start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and proc.poll() is None:
            if len(list(staging.glob("**/*.parquet"))) >= 2:
                break
            time.sleep(0.01)
        assert proc.poll() is None, "the run ended before it could be killed"
        proc.send_signal(signal.SIGKILL)
        proc.wait(30)
    finally:
        _kill_group(proc)
    assert proc.returncode == -signal.SIGKILL
    assert "dltr" not in FeatureStore(root).feature_sets()
    done = subprocess.run(cmd + ["--json"], cwd=REPO, env=env, capture_output=True, text=True, timeout=300,
                          start_new_session=True)
    assert done.returncode == 0, done.stderr[-2000:]
    out = json.loads(done.stdout)
    assert out["status"] == "published" and out["version_id"] == ref_version
    assert out["n_resumed"] >= 2 and out["n_resumed"] + out["n_computed"] == 10
    rows = FeatureStore(root).read("dltr", ref_version)
    ids = rows.column("patient_id").to_pylist()
    assert len(ids) == len(set(ids)) == 10
    _assert_rows_equal(rows, ref_rows, atol=0.0)


def _kill_group(proc: subprocess.Popen) -> None:
    """SIGKILL what is left of the process group this test started (Ray children of the killed driver)."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def test_device_and_precision_are_lineage_and_never_reused_across(ray_cluster, base_store, local_rows, tmp_path):
    """A GPU bf16 version and a CPU fp32 version of the same inputs are two versions: the numerics are in
    the lineage and the id, and a CPU run does not copy rows from a GPU version of the same encoder."""
    from pipeline.extract._scope import build_scope

    root = _copy(base_store, tmp_path)
    store = FeatureStore(root)
    cpu = build_scope(store, root, None, "dltr", ExtractConfig().numerics())
    gpu = build_scope(store, root, None, "dltr", ExtractConfig(gpus_per_worker=1).numerics())
    assert (cpu.lineage["device"], cpu.lineage["autocast"]) == ("cpu", "none")
    assert (gpu.lineage["device"], gpu.lineage["dtype"], gpu.lineage["autocast"]) == ("cuda", "float32", "bfloat16")
    assert cpu.version_id != gpu.version_id
    # a "GPU" version of every row, its embeddings visibly off, published as the newest
    rows = local_rows.sort_by("patient_id")
    emb = np.asarray(rows.column("embedding").to_pylist(), np.float32) + 1.0
    shifted = rows.set_column(rows.column_names.index("embedding"), "embedding",
                              pa.FixedSizeListArray.from_arrays(pa.array(emb.ravel()), emb.shape[1]))
    store.publish("dltr", shifted, producer="pipeline.extract", lineage=gpu.lineage)
    rep = extract_features(root, config=ExtractConfig(workers=1, batch_size=4))
    assert rep.version_id == cpu.version_id and rep.n_reused == 0 and rep.n_computed == rows.num_rows
    assert FeatureStore(root).registry().resolve("dltr", rep.version_id).lineage["device"] == "cpu"
    _assert_rows_equal(FeatureStore(root).read("dltr", rep.version_id), local_rows)
