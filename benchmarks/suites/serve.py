"""Serve suite: single-patient scoring latency (median, p95; split into ingest, preprocessing,
encoder, head) and requests per second of ``dltr serve`` (uvicorn on 127.0.0.1) under a small
bounded concurrent load, against the batch pipeline's per-patient cost measured in the same run
(``dltr demo`` tiny profile: ingest + extraction stage seconds / patients, plus ``score_heads``).

Work: the tiny synthetic cohort's external patients (all 32; ``--quick`` 6 and 8 requests at
concurrency 2, else 32 requests at concurrency 4).
"""

from __future__ import annotations

import json
import shutil
import socket
import statistics
import threading
import time
import warnings
from pathlib import Path

import numpy as np

from benchmarks.harness import BenchContext, Figure, Timing
from dltr.core.layout import StoreLayout


def _p95(values) -> float:
    return float(np.percentile(np.asarray(values, float), 95))


def demo_config(seed: int):
    """The tiny demo the suite scores against: one encoder candidate, no radiomics (the scoring path does not
    depend on which candidate won). The test suite's scoring fixture builds this very demo and hands it to the
    suite (``--set serve_demo=DIR``), so that every stage is reused."""
    from dltr.demo import DemoConfig

    return DemoConfig.for_profile("tiny", seed=seed, candidates=("plain",), radiomics=False)


def _demo(ctx: BenchContext) -> tuple[Path, Path, dict]:
    """The tiny demo (one encoder candidate) the suite scores against. ``--set serve_demo=DIR``: a copy of an
    earlier run of that very demo (same seed), whose stages are then all reused and whose recorded stage
    seconds stand for the batch pipeline (the test suite passes its session store so as not to train twice)."""
    import shutil

    from dltr.core.exceptions import DltrWarning
    from dltr.demo import run_demo

    out = ctx.work / f"serve-demo-{time.time_ns()}"
    if ctx.options.get("serve_demo"):
        shutil.copytree(ctx.options["serve_demo"], out)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DltrWarning)
        res = run_demo(out, demo_config(ctx.seed), log=lambda _m: None)
    stages = {s["name"]: s for s in res.stages}
    return out / "store", out / "synthetic" / "cohort", stages


def _one(cohort: Path, pid: str, dst: Path) -> Path:
    import csv
    import shutil

    dst.mkdir(parents=True)
    for name in ("manifest.csv", "clinical.csv", "labs.csv"):
        with (cohort / name).open(newline="") as f:
            r = csv.DictReader(f)
            rows, header = [x for x in r if x["patient_id"] == pid], r.fieldnames
        with (dst / name).open("w", newline="") as f:
            w = csv.DictWriter(f, header)
            w.writeheader()
            w.writerows(rows)
        if name == "manifest.csv":
            for x in rows:
                for rel in {x["image"], x["mask"]}:
                    (dst / rel).parent.mkdir(parents=True, exist_ok=True)
                    (shutil.copytree if (cohort / rel).is_dir() else shutil.copyfile)(cohort / rel, dst / rel)
    return dst


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _all_nifti(folder: Path) -> bool:
    import csv

    rows = list(csv.DictReader((folder / "manifest.csv").open()))
    return all(r[k].endswith((".nii", ".nii.gz")) for r in rows for k in ("image", "mask"))


def _upload(folder: Path) -> tuple[dict, list]:
    import csv

    clin = next(csv.DictReader((folder / "clinical.csv").open()))
    clin = {k: (v or None) for k, v in clin.items() if k not in ("patient_id", "response", "pfs_days", "pfs_event")}
    labs = [{"name": r["name"], "value": float(r["value"]), "measured_at": r["measured_at"],
             "recorded_at": r["recorded_at"] or None} for r in csv.DictReader((folder / "labs.csv").open())]
    rows = list(csv.DictReader((folder / "manifest.csv").open()))
    files = [("files", (f"{r['phase']}.nii.gz", (folder / r["image"]).read_bytes())) for r in rows]
    files.append(("files", ("mask.nii.gz", (folder / rows[0]["mask"]).read_bytes())))
    return {"clinical": json.dumps(clin | {"labs": labs})}, files


def _load(store: Path, uploads: list, n_requests: int, concurrency: int) -> tuple[float, list[float]]:
    import httpx
    import uvicorn

    from dltr.scoring import create_app

    port = _free_port()
    server = uvicorn.Server(uvicorn.Config(create_app(store, max_concurrent=concurrency), host="127.0.0.1",
                                          port=port, log_level="warning", access_log=False))
    th = threading.Thread(target=server.run, daemon=True)
    th.start()
    while not server.started:
        time.sleep(0.05)
    lat, lock, nxt = [], threading.Lock(), iter(range(n_requests))

    def client():
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=120) as c:
            while True:
                with lock:
                    i = next(nxt, None)
                if i is None:
                    return
                data, files = uploads[i % len(uploads)]
                t0 = time.perf_counter()
                r = c.post("/predict", data=data, files=files)
                r.raise_for_status()
                with lock:
                    lat.append(time.perf_counter() - t0)

    try:
        t0 = time.perf_counter()
        workers = [threading.Thread(target=client) for _ in range(concurrency)]
        for w in workers:
            w.start()
        for w in workers:
            w.join()
        wall = time.perf_counter() - t0
    finally:
        server.should_exit = True
        th.join(timeout=30)
    return n_requests / wall, lat


def run(ctx: BenchContext) -> list[Figure]:
    from dltr.scoring import Scorer
    from features import FeatureStore
    from models.heads import score_heads

    store, cohort, stages = _demo(ctx)
    import pyarrow.parquet as pq

    clin = pq.read_table(StoreLayout.of(store).table("clinical"), columns=["patient_id", "split"]).to_pylist()
    n_all = len(clin)
    external = [r["patient_id"] for r in clin if r["split"] == "external"]
    pids = external[:6] if ctx.quick else external
    t0 = time.perf_counter()
    score_heads(FeatureStore(store), heads=("dltr_mlp",), write=False)
    heads_s = time.perf_counter() - t0
    batch_total = stages["ingest"]["seconds"] + stages["extract features"]["seconds"] + heads_s
    batch_pp = batch_total / n_all
    shutil.rmtree(ctx.work / "serve-patients", ignore_errors=True)  # a previous run's folders (same --out)
    folders = [_one(cohort, p, ctx.work / "serve-patients" / p) for p in pids]
    scorer = Scorer(store, "dltr_mlp", work_dir=ctx.work / "serve-tmp")
    scorer.score_folder(folders[0])  # warm-up: imports, DALI, torch kernels
    split = {k: [] for k in ("ingest_s", "preprocess_s", "encoder_s", "head_s", "total_s")}
    for f in folders:
        for k, v in scorer.score_folder(f).timings.items():
            split[k].append(v)
    notes = {f"{k[:-2]}_median_s": statistics.median(v) for k, v in split.items()}
    notes |= {f"{k[:-2]}_p95_s": _p95(v) for k, v in split.items()}
    notes |= {"patients": len(pids), "batch_seconds_per_patient": batch_pp, "batch_patients": n_all,
              "batch_parts_s": {"ingest": stages["ingest"]["seconds"],
                                "extract": stages["extract features"]["seconds"], "score_heads": heads_s}}
    figs = [Figure("serve", f"single-patient latency, {len(pids)} external patients", "s",
                   Timing(tuple(split["total_s"])), Timing((batch_pp,)), "batch pipeline per patient (same run)",
                   higher_is_better=False, notes=notes)]
    n_req, conc = (8, 2) if ctx.quick else (32, 4)
    # the HTTP API takes NIfTI parts (and DICOM as a zip); the load test sends the all-NIfTI patients
    uploads = [_upload(f) for f in folders if _all_nifti(f)]
    rps, lat = _load(store, uploads, n_req, conc)
    figs.append(Figure("serve", f"POST /predict on 127.0.0.1, {n_req} requests at concurrency {conc}",
                       "requests/s", Timing((rps,)), Timing((1.0 / batch_pp,)),
                       "batch pipeline patients/s (same run)", higher_is_better=True,
                       notes={"latency_median_s": statistics.median(lat), "latency_p95_s": _p95(lat),
                              "concurrency": conc, "requests": n_req}))
    return figs
