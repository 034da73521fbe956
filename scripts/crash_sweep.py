"""Crash sweep: SIGKILL ingest and feature-store publishes at every filesystem event, re-run, compare.

Usage (from the repository root)::

    .venv/bin/python scripts/crash_sweep.py ingest ingest-update publish staged --work /tmp/crash-sweep
    .venv/bin/python scripts/crash_sweep.py ingest --points 12 --json out.json    # the CI sample

For each target the sweep (1) builds a reference store with an uninterrupted run, (2) counts the
store-touching filesystem events ``E`` of one run (renames, fsyncs, unlinks, mkdirs, rmdirs: see
``tests/kit/crash.py``), then (3) for each kill point ``N`` in ``1..E`` (or ``--points`` of
them, evenly spread) prepares a store, runs the victim in a forked child that SIGKILLs itself just
before event ``N``, checks what the crash left (only complete, reference-equal patients/versions
visible, the catalog opens and every view answers), re-runs the same command to completion and
asserts the result equals the reference (same arrays + attributes, same rows, same hashes).

Targets:
  ingest         a fresh ingest (3 patients: NIfTI, NIfTI, DICOM) killed, then resumed
  ingest-update  a re-ingest after one source changed (replaces a patient group) killed, then resumed
  publish        FeatureStore.publish of a second version + a result table, killed, then retried
  staged         FeatureWriter parts + publish (the extraction path), killed, then resumed

Exit status 0 when every point passed; the JSON report lists every point and every violation.
The full sweep of all four targets takes a few minutes on two cores.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from pathlib import Path

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")  # no BLAS threads in the zygote (it forks)
os.environ.setdefault("OMP_NUM_THREADS", "1")
REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "tests")]

from kit.crash import (  # noqa: E402
    KillSwitch,
    catalog_check,
    diff,
    feature_store_snapshot,
    fork_call,
    group_snapshot,
    parquet_rows,
    sample_points,
    visible_groups,
    volume_store_snapshot,
)

DIM = 8


def _preload() -> None:
    """Import the stack once in the zygote (imports start no threads; first use would)."""
    import dask.array  # noqa: F401
    import duckdb  # noqa: F401
    import nibabel  # noqa: F401
    import pyarrow.parquet  # noqa: F401
    import pydicom  # noqa: F401
    import scipy.ndimage  # noqa: F401
    import zarr  # noqa: F401

    import dltr.cohort  # noqa: F401
    import features  # noqa: F401
    import pipeline.ingest  # noqa: F401


# -- ingest ----------------------------------------------------------------------------------------
class IngestTarget:
    """Fresh ingest of a three-patient cohort (one per center: NIfTI LPS, NIfTI RAS, DICOM series)."""

    name = "ingest"

    def __init__(self, work: Path, per_center: int = 1, seed: int = 3):
        from kit.images import image_cohort

        self.work = work
        self.cohort, _ = image_cohort(work / "cohort", per_center=per_center, seed=seed)
        self.ref = work / "ref.json"

    def _ingest(self, store: Path, cohort: Path | None = None) -> dict:
        from pipeline.ingest import IngestConfig, ingest_cohort

        rep = ingest_cohort(cohort or self.cohort, store, IngestConfig(), executor="serial")
        return {"ok": rep.ok, "skipped": rep.skipped, "failed": rep.failed}

    def reference(self) -> None:
        store = self.work / "ref-store"
        self._ingest(store)
        self.ref.write_text(json.dumps(volume_store_snapshot(store)))

    def prepare(self, store: Path) -> None:
        shutil.rmtree(store, ignore_errors=True)

    def victim(self, store: Path) -> dict:
        return self._ingest(store)

    def allowed_groups(self, ref: dict, key: str) -> list:
        return [ref["groups"].get(key)]

    def allowed_studies(self, ref: dict) -> list:
        return [ref["studies"]]

    def check(self, store: Path) -> dict:
        ref = json.loads(self.ref.read_text())
        after, window = [], []
        for k in visible_groups(store):
            try:
                snap = group_snapshot(store / "volumes.zarr" / k)
            except Exception as e:  # noqa: BLE001 - any failure to read is the violation
                after.append(f"visible group {k} unreadable: {type(e).__name__}: {e}")
                continue
            if snap not in self.allowed_groups(ref, k):
                after.append(f"visible group {k} is not a complete reference group")
        studies = parquet_rows(store / "ingest" / "studies.parquet")
        if studies is not None:
            if studies not in self.allowed_studies(ref):
                after.append("studies.parquet is neither the old nor the new table")
            missing = sorted({r["patient_id"] for r in studies} - set(visible_groups(store)))
            if missing:
                window.append(f"studies.parquet lists {missing} whose group is not visible")
        self.victim(store)  # the re-run
        final = diff(volume_store_snapshot(store), ref)
        left = [p.name for p in (store / "ingest" / ".tmp").glob("*")] if (store / "ingest" / ".tmp").exists() else []
        if left:
            final.append(f"ingest/.tmp leftovers: {left}")
        return {"after_kill": after, "window": window, "final": final}


class IngestUpdateTarget(IngestTarget):
    """Re-ingest after one patient's source changed: the patient's group is replaced."""

    name = "ingest-update"

    def __init__(self, work: Path):
        super().__init__(work)
        import nibabel as nib
        import numpy as np

        self.v1 = self.cohort
        self.cohort = work / "cohort-v2"
        shutil.copytree(self.v1, self.cohort)
        p = next(iter(sorted((self.cohort / "images").glob("*/arterial.nii"))))  # center B, plain NIfTI
        img = nib.load(str(p))
        nib.save(nib.Nifti1Image(np.asanyarray(img.dataobj) + np.int16(7), img.affine), str(p))
        self.ref_v1 = work / "ref-v1.json"

    def reference(self) -> None:
        super().reference()
        base = self.work / "base-v1"
        self._ingest(base, self.v1)
        self.ref_v1.write_text(json.dumps(volume_store_snapshot(base)))

    def prepare(self, store: Path) -> None:
        shutil.rmtree(store, ignore_errors=True)
        shutil.copytree(self.work / "base-v1", store)

    def allowed_groups(self, ref: dict, key: str) -> list:
        return [ref["groups"].get(key), json.loads(self.ref_v1.read_text())["groups"].get(key)]

    def allowed_studies(self, ref: dict) -> list:
        return [ref["studies"], json.loads(self.ref_v1.read_text())["studies"]]


# -- feature store ---------------------------------------------------------------------------------
def feature_rows(n: int, seed: int, dim: int = DIM):
    import numpy as np
    import pyarrow as pa

    rng = np.random.default_rng(seed)
    emb = rng.normal(size=(n, dim)).astype(np.float32)
    pids = [f"P{i:04d}" for i in range(n)]
    return pa.table({"patient_id": pids, "center": [("A", "B", "C")[i % 3] for i in range(n)],
                     "phases": [["arterial", "portal"]] * n,
                     "roi_box": pa.array([[0, 0, 0, 4, 4, 2]] * n, pa.list_(pa.int32())),
                     "input_checksum": [f"c{seed}-{p}" for p in pids],
                     "embedding": pa.FixedSizeListArray.from_arrays(pa.array(emb.ravel()), dim)})


class PublishTarget:
    """A store with version v1; the victim publishes v2 (60 rows) and writes a result table."""

    name = "publish"

    def __init__(self, work: Path):
        self.work = work
        self.ref = work / "ref.json"

    def _base(self, store: Path) -> None:
        from features import FeatureStore

        FeatureStore(store).publish("dltr", feature_rows(40, 1), "crash", {"inputs_hash": "v1"})

    def victim(self, store: Path) -> dict:
        import pyarrow as pa

        from features import FeatureStore

        s = FeatureStore(store)
        v = s.publish("dltr", feature_rows(60, 2), "crash", {"inputs_hash": "v2"})
        s.write_table("scores", pa.table({"patient_id": ["P0001", "P0002"], "score": [0.25, 0.75]}))
        return {"version": v.version_id}

    def reference(self) -> None:
        store = self.work / "ref-store"
        self._base(store)
        self.victim(store)
        self.ref.write_text(json.dumps(feature_store_snapshot(store)))

    def prepare(self, store: Path) -> None:
        shutil.rmtree(store, ignore_errors=True)
        r = fork_call(lambda: self._base(store))
        if r["status"] != "ok":
            raise RuntimeError(f"base store: {r}")

    def check(self, store: Path) -> dict:
        from features import FeatureStore

        ref = json.loads(self.ref.read_text())
        after = catalog_check(store)  # the raw catalog as the crash left it, before any reader refreshes it
        s = FeatureStore(store)
        n = s.sql("SELECT count(*) AS n FROM dltr").column("n")[0].as_py()
        if n not in (40, 60):
            after.append(f"SQL sees {n} rows of dltr: part of a version")
        for v in s.versions("dltr"):
            rows = s.read(v.ref)
            if rows.num_rows != v.row_count or len(set(rows.column("patient_id").to_pylist())) != v.row_count:
                after.append(f"{v.ref}: {rows.num_rows} rows readable, registry says {v.row_count}")
        v1 = [v for v in ref["feature_sets"].values() if v["lineage"] == {"inputs_hash": "v1"}][0]
        if feature_store_snapshot(store)["feature_sets"].get(f"dltr@{v1['version_id']}") != v1:
            after.append("version v1 changed")
        self.victim(store)  # the retry
        final = diff(feature_store_snapshot(store), ref) + catalog_check(store)
        debris = [p.name for p in (store / "features" / "dltr").glob(".tmp-*")]
        debris += ["_staging/" + p.name for p in (store / "features" / "dltr" / "_staging").glob("*")]
        return {"after_kill": after, "window": [], "final": final,
                "debris": [f"invisible debris left: {debris}"] if debris else []}


class StagedTarget(PublishTarget):
    """FeatureWriter: three staged parts then publish (what extraction does); resumed by a new writer."""

    name = "staged"

    def victim(self, store: Path) -> dict:
        from features import FeatureStore, version_id_of

        s = FeatureStore(store)
        lin = {"inputs_hash": "v2"}
        if any(v.lineage == lin for v in s.versions("dltr")):  # extraction's "exists" path, with its clean-up
            from pipeline.extract import clean_committed_staging

            clean_committed_staging(store, "dltr")
            return {"version": "exists"}
        w = s.feature_writer("dltr", version_id_of("dltr", "crash", lin), "crash", lin, DIM)
        t = feature_rows(60, 2)
        done = w.done_keys()
        for start in range(0, 60, 20):
            part = t.slice(start, 20)
            ids = part.column("patient_id").to_pylist()
            if not set(ids) <= done:
                w.write(part)
        v = w.publish()
        return {"version": v.version_id}


class NonAtomicIngestTarget(IngestTarget):
    """Harness self-test: a writer that builds groups in place (no temporary name) must be caught."""

    name = "self-test-nonatomic"

    def victim(self, store: Path) -> dict:
        from dltr.core.layout import StoreLayout

        StoreLayout.ingest_tmp = property(lambda lay: lay.volumes)  # mutation: write straight into the visible namespace
        return self._ingest(store)


TARGETS = {t.name: t for t in (IngestTarget, IngestUpdateTarget, PublishTarget, StagedTarget,
                               NonAtomicIngestTarget)}

# Kill just after a named step (not a count): the places where a two-step commit can be caught halfway.
PROBES = {
    # pipeline/ingest/_writer.py:_publish moves the old group aside, then renames the new one in
    "between-group-renames": ("ingest-update", lambda ev, paths: ev == "replace" and ".old." in paths[-1]),
    # features/_writer.py:commit_version: registry committed, catalog and staging cleanup not yet done
    "after-registry-commit": ("staged", lambda ev, paths: ev == "replace" and paths[-1].endswith("registry.json")),
}


def probe(name: str, work: Path, timeout: float = 300.0) -> dict:
    """Kill the target's victim just after the probe's step, then check and re-run as the sweep does."""
    tname, when = PROBES[name]
    work.mkdir(parents=True, exist_ok=True)
    target = TARGETS[tname](work)
    r = fork_call(target.reference, timeout=timeout, result_dir=work)
    if r["status"] != "ok":
        raise RuntimeError(f"{tname}: reference run failed: {r.get('error', r)}")
    store = work / "probe"
    target.prepare(store)
    killed = fork_call(lambda: target.victim(store), switch=KillSwitch(store, kill_when=when), timeout=timeout,
                       result_dir=work)
    chk = fork_call(lambda: target.check(store), timeout=timeout, result_dir=work)
    return {"probe": name, "target": tname, "victim": killed["status"], "check": chk}


def sweep(name: str, work: Path, points: int | None, timeout: float = 300.0, log=print) -> dict:
    """Run one target's sweep; returns the report (``passed``, ``points``, per-point results)."""
    work.mkdir(parents=True, exist_ok=True)
    target = TARGETS[name](work)
    t0 = time.monotonic()
    r = fork_call(target.reference, timeout=timeout, result_dir=work)
    if r["status"] != "ok":
        raise RuntimeError(f"{name}: reference run failed: {r.get('error', r)}")
    count_store = work / "count"
    target.prepare(count_store)
    r = fork_call(lambda: target.victim(count_store), switch=KillSwitch(count_store), timeout=timeout,
                  result_dir=work)
    if r["status"] != "ok":
        raise RuntimeError(f"{name}: counting run failed: {r.get('error', r)}")
    total = int(r["events"])
    results = []
    for n in sample_points(total, points):
        store = work / f"point-{n:05d}"
        target.prepare(store)
        killed = fork_call(lambda s=store: target.victim(s), switch=KillSwitch(store, kill_at=n),
                           timeout=timeout, result_dir=work)
        chk = fork_call(lambda s=store: target.check(s), timeout=timeout, result_dir=work)
        res = {"point": n, "victim": killed["status"]}
        if chk["status"] != "ok":
            res.update(after_kill=[f"check crashed: {chk.get('error', chk)}"], window=[], final=["not re-run"])
        else:
            res.update(chk["result"])
        res.setdefault("debris", [])
        res["ok"] = killed["status"] == "killed" and not res["after_kill"] and not res["final"]
        results.append(res)
        shutil.rmtree(store, ignore_errors=True)
        log(f"{name} point {n}/{total}: {res['victim']}, "
            f"{'ok' if res['ok'] else 'FAIL'}{' (window: ' + res['window'][0] + ')' if res['window'] else ''}"
            + ("" if res["ok"] else f" {res['after_kill'][:2]} {res['final'][:2]}")
            + (f" (debris: {res['debris'][0]})" if res["debris"] else ""))
    return {"target": name, "events": total, "points": len(results), "killed": sum(r["victim"] == "killed"
            for r in results), "passed": all(r["ok"] for r in results),
            "window_violations": sum(bool(r["window"]) for r in results),
            "debris_violations": sum(bool(r["debris"]) for r in results), "results": results,
            "seconds": round(time.monotonic() - t0, 1)}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("targets", nargs="*", help=f"what to kill: {sorted(TARGETS)}, each optionally NAME:POINTS")
    ap.add_argument("--points", type=int, default=None, help="kill points per target (default: every event)")
    ap.add_argument("--probe", action="append", default=[], choices=sorted(PROBES),
                    help="also kill just after a named step (see PROBES)")
    ap.add_argument("--work", type=Path, default=Path("/tmp/dltr-crash-sweep"), help="scratch folder (emptied)")
    ap.add_argument("--json", type=Path, default=None, help="write the full report here")
    ap.add_argument("--quiet", action="store_true", help="no per-point lines")
    args = ap.parse_args(argv)
    shutil.rmtree(args.work, ignore_errors=True)
    _preload()
    reports = []
    for spec in args.targets:
        name, _, k = spec.partition(":")
        if name not in TARGETS:
            ap.error(f"unknown target {name!r}; choose from {sorted(TARGETS)}")
        reports.append(sweep(name, args.work / name, int(k) if k else args.points,
                             log=(lambda *_: None) if args.quiet else print))
    probes = [probe(p, args.work / f"probe-{p}") for p in args.probe]
    summary = {"targets": reports, "probes": probes, "kill_points": sum(r["points"] for r in reports) + len(probes),
               "passed": all(r["passed"] for r in reports if not r["target"].startswith("self-test"))}
    if args.json:
        args.json.write_text(json.dumps(summary, indent=1))
    for r in reports:
        print(f"{r['target']}: {r['points']} kill points of {r['events']} events, {r['killed']} killed, "
              f"{'PASS' if r['passed'] else 'FAIL'}, window violations {r['window_violations']}, "
              f"debris {r['debris_violations']}, {r['seconds']} s")
    for p in probes:
        print(f"probe {p['probe']}: victim {p['victim']}, check {json.dumps(p['check'].get('result', p['check']))}")
    return 0 if summary["passed"] else 1


if __name__ == "__main__":
    sys.exit(main())
