"""Concurrency and a full disk: two writers started at once (one gets StoreLockedError, nothing is
corrupted), two ingests on one store, and runs that hit ENOSPC on a small tmpfs fail cleanly and leave
the store usable. (Readers during a Ray extraction: tests/test_reliability_crash.py.)"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from kit.crash import catalog_check, diff, process_state, volume_store_snapshot
from kit.images import image_cohort

from dltr.core.exceptions import StoreError
from features import FeatureStore

REPO = Path(__file__).resolve().parents[1]
HARNESS = str(REPO / "tests" / "kit" / "crash.py")
sys.path.insert(0, str(REPO / "scripts"))
from crash_sweep import feature_rows  # noqa: E402  (the sweep's row generator)


def _env(**extra: str) -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(REPO), **extra}


WRITER = """
import sys
from pathlib import Path
from dltr.core.exceptions import StoreLockedError
sys.path.insert(0, sys.argv[4])
from crash_sweep import feature_rows
from features import FeatureStore
root, tag, barrier = sys.argv[1], sys.argv[2], Path(sys.argv[3])
s = FeatureStore(root)
rows = feature_rows(300, int(tag))
(barrier / tag).touch()                      # ready; then both go at the same instant, however long start-up took
while len(list(barrier.iterdir())) < 2:
    pass
try:
    v = s.publish("dltr", rows, "race", {"inputs_hash": tag})
except StoreLockedError as e:
    print("LOCKED", e)
    sys.exit(3)
print("PUBLISHED", v.version_id)
"""


@pytest.mark.parametrize("round_", range(3))
def test_two_writers_started_at_once(tmp_path, round_):
    root = tmp_path / "store"
    s = FeatureStore(root)
    s.publish("dltr", feature_rows(40, 1), "race", {"inputs_hash": "base"})
    barrier = tmp_path / "ready"  # both spin until both are ready, then publish
    barrier.mkdir()
    env = _env(DLTR_STORE_PAUSE_AT="parts_written", DLTR_STORE_PAUSE_S="1.0")  # widen the critical section
    procs = [subprocess.Popen([sys.executable, "-c", WRITER, str(root), str(10 + k), str(barrier),
                               str(REPO / "scripts")], cwd=REPO, env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for k in range(2)]
    outs = [p.communicate(timeout=120) for p in procs]
    codes = sorted(p.returncode for p in procs)
    assert codes == [0, 3], outs
    locked = next(o for o, p in zip(outs, procs, strict=True) if p.returncode == 3)[0]
    assert "another writer holds the store's write lock" in locked
    assert catalog_check(root) == []
    versions = s.versions("dltr")
    assert len(versions) == 2 and s.sql("SELECT count(*) AS n FROM dltr").column("n")[0].as_py() == 300
    assert not list((root / "features" / "dltr").glob(".tmp-*"))


def test_second_ingest_on_the_same_store_is_refused_or_harmless(tmp_path):
    cohort, _ = image_cohort(tmp_path / "c", per_center=1, seed=21)
    root = tmp_path / "store"
    ref = tmp_path / "ref"
    from pipeline.ingest import IngestConfig, ingest_cohort

    ingest_cohort(cohort, ref, IngestConfig(), executor="serial")
    cmd = ["-m", "dltr", "ingest", str(cohort), "--store", str(root), "--workers", "1", "--threads"]
    # run A freezes (SIGSTOP) inside its first patient's write: just after a file lands in its temporary group
    a = subprocess.Popen([sys.executable, HARNESS, "exec", "--root", str(root), "--stop-after",
                          r"ingest/\.tmp/P000\.[0-9a-f]+/arterial/zarr\.json$", "--", *cmd],
                         cwd=REPO, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        for _ in range(3000):
            if process_state(a.pid) in ("T", ""):
                break
            time.sleep(0.02)
        assert process_state(a.pid) == "T", "run A did not reach its stop point"
        assert list((root / "ingest" / ".tmp").glob("*")), "run A is not inside a patient write"
        b = subprocess.run([sys.executable, *cmd], cwd=REPO, env=_env(), capture_output=True, text=True, timeout=300)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(a.pid, signal.SIGCONT)
    out_a, err_a = a.communicate(timeout=300)
    vz = root / "volumes.zarr"
    broken = [g.name for g in vz.iterdir() if g.is_dir() and not g.name.startswith(".") and (
        "phases" not in json.loads((g / "zarr.json").read_text()).get("attributes", {})
        or not (g / "arterial" / "zarr.json").exists())]
    assert broken == [], f"visible groups without attributes or arrays: {broken}; run A: {err_a[-300:]}"
    refused = [r for r in (a.returncode, b.returncode) if r != 0]
    if refused:  # one refused: with a clear lock error, the other completed
        assert len(refused) == 1 and "lock" in (err_a + b.stderr)
    assert diff(volume_store_snapshot(root), volume_store_snapshot(ref)) == []
    assert a.returncode == 0 or "lock" in err_a, err_a[-1500:]


@pytest.fixture
def small_disk(tmp_path):
    """A tmpfs of 6 MiB (root may mount; skip where the sandbox forbids it)."""
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    p = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=6m", "tmpfs", str(mnt)], capture_output=True, text=True)
    if p.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({p.stderr.strip() or p.returncode}); full-disk test needs root")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


FULL_DISK_STDERR: list[str] = []


def _fill(mnt: Path, leave: int) -> Path:
    """Fill the filesystem until only ``leave`` bytes are free; returns the filler file."""
    st = os.statvfs(mnt)
    free = st.f_bavail * st.f_frsize
    filler = mnt / "filler"
    with open(filler, "wb") as f:
        f.write(b"\0" * max(0, free - leave))
    return filler


def test_ingest_on_a_full_disk_fails_cleanly_and_store_stays_usable(small_disk, tmp_path):
    cohort, _ = image_cohort(tmp_path / "c", per_center=2, seed=22)
    from pipeline.ingest import IngestConfig, ingest_cohort

    ref = tmp_path / "ref"
    ingest_cohort(cohort, ref, IngestConfig(), executor="serial")
    store = small_disk / "store"
    filler = _fill(small_disk, 60_000)  # room for about two patients (about 22 KB each on disk)
    p = subprocess.run([sys.executable, "-m", "dltr", "ingest", str(cohort), "--store", str(store),
                        "--workers", "1", "--threads"], cwd=REPO, env=_env(), capture_output=True, text=True,
                       timeout=300)
    assert p.returncode != 0
    last = p.stderr.strip().splitlines()[-1]
    assert "No space left on device" in last, p.stderr[-3000:]
    FULL_DISK_STDERR.append(p.stderr)
    ref_snap = volume_store_snapshot(ref)
    for pid in (q.name for q in (store / "volumes.zarr").iterdir() if q.is_dir() and not q.name.startswith(".")):
        from kit.crash import group_snapshot

        assert group_snapshot(store / "volumes.zarr" / pid) == ref_snap["groups"][pid]  # complete or absent
    assert not list((store / "ingest" / ".tmp").glob("*")) if (store / "ingest" / ".tmp").exists() else True
    filler.unlink()  # space comes back: the same command completes and equals an uninterrupted run
    p = subprocess.run([sys.executable, "-m", "dltr", "ingest", str(cohort), "--store", str(store),
                        "--workers", "1", "--threads", "--json"], cwd=REPO, env=_env(), capture_output=True,
                       text=True, timeout=300)
    assert p.returncode == 0, p.stderr[-2000:]
    assert diff(volume_store_snapshot(store), ref_snap) == []


def test_full_disk_error_is_one_typed_line():
    if not FULL_DISK_STDERR:
        pytest.skip("runs after test_ingest_on_a_full_disk_fails_cleanly_and_store_stays_usable")
    err = FULL_DISK_STDERR[-1]
    assert "Traceback" not in err and len(err.strip().splitlines()) <= 3


def test_publish_on_a_full_disk_fails_cleanly_and_store_stays_usable(small_disk):
    root = small_disk / "store"
    s = FeatureStore(root)
    v1 = s.publish("dltr", feature_rows(50, 1), "disk", {"inputs_hash": "v1"})
    filler = _fill(small_disk, 40_000)
    big = feature_rows(4000, 2, dim=64)  # about 1 MB of float32: cannot fit
    with pytest.raises((OSError, StoreError), match="No space left|space"):
        s.publish("dltr", big, "disk", {"inputs_hash": "v2"})
    assert [v.version_id for v in s.versions("dltr")] == [v1.version_id]  # nothing half-published
    assert catalog_check(root) == []
    assert s.sql("SELECT count(*) AS n FROM dltr").column("n")[0].as_py() == 50
    filler.unlink()
    v2 = s.publish("dltr", big, "disk", {"inputs_hash": "v2"})
    assert s.read(v2.ref).sort_by("patient_id").equals(
        big.cast(s.read(v2.ref).schema).sort_by("patient_id"))
    assert catalog_check(root) == [] and not list((root / "features" / "dltr").glob(".tmp-*"))
    json.dumps(s.describe("dltr"))  # the registry still describes cleanly
    shutil.rmtree(root)
