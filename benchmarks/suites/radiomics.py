"""Radiomics (pipeline.radiomics): patients/s on Ray with 1 and 2 workers against pyradiomics run serially
in one process (the library's own extractor in a plain loop over the same volumes), on one generated store
in one run; every Ray run's values are checked equal to the serial loop's. The Ray rate is the whole job's
(actor start-up, which imports pyradiomics in each new process, included; Ray's own start-up is not: it is
paid once per session). The first-to-last-batch "steady" rate of the extraction suite is not used here:
with few batches several arrive at once at the end, which inflated it 4x in a trial (under Ray Data)."""

from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np

from benchmarks.harness import BenchContext, Figure, Timing
from benchmarks.suites.extraction import ingest_layout
from dltr.core.layout import StoreLayout

PHASES = ("arterial", "portal")


def _store(root: Path, n: int, shape: tuple[int, int, int], seed: int) -> None:
    """Volumes (two phases, an ellipsoid tumour with texture), the studies table, as ``dltr ingest`` lays them."""
    import hashlib

    import pyarrow as pa
    import pyarrow.parquet as pq
    import zarr

    layout = ingest_layout()
    grp = zarr.open_group(StoreLayout.of(root).volumes, mode="w")
    spacing = (1.5, 1.5, 3.0)
    affine = np.diag([*spacing, 1.0]).tolist()
    rows = []
    for i in range(n):
        rng = np.random.default_rng([seed, i])
        pid, center = f"R{i:05d}", "ABC"[i % 3]
        c = rng.uniform(np.array(shape) * 0.35, np.array(shape) * 0.65)
        r = rng.uniform(np.array(shape) * 0.10, np.array(shape) * 0.18)
        ii = np.indices(shape, dtype=np.float32)
        mask = (sum(((ii[a] - c[a]) / r[a]) ** 2 for a in range(3)) <= 1).astype(np.uint8)
        g = grp.create_group(pid)
        sha = {}
        for k, ph in enumerate(PHASES):
            texture = rng.gamma(2.0 + k, 30.0, shape)
            vol = (200 + 30 * k + rng.normal(0, 25, shape) + mask * texture).astype(np.int16)
            g.create_array(ph, shape=shape, dtype="int16", **layout)[...] = vol
            sha[ph] = hashlib.sha256(vol.tobytes()).hexdigest()
        g.create_array("mask", shape=shape, dtype="uint8", **layout)[...] = mask
        nz = np.nonzero(mask)
        g.attrs.update({"patient_id": pid, "center": center, "phases": list(PHASES), "affine": affine,
                        "spacing": list(spacing),
                        "bbox_vox": [int(a.min()) for a in nz] + [int(a.max()) + 1 for a in nz]})
        msha = hashlib.sha256(mask.tobytes()).hexdigest()
        rows += [{"patient_id": pid, "center": center, "phase": ph, "source_sha256": sha[ph], "mask_sha256": msha,
                  "status": "ok"} for ph in PHASES]
    StoreLayout.of(root).ingest.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pylist(rows), StoreLayout.of(root).studies)


def _serial_library(root: Path, ids: list[str], settings) -> tuple[float, np.ndarray]:
    """pyradiomics' extractor in a plain loop in this process: (seconds, feature matrix). One BLAS/OpenMP thread,
    as in each Ray worker, so that the ratios measure the parallel runs, not thread oversubscription."""
    import zarr
    from threadpoolctl import threadpool_limits

    from pipeline.radiomics import extractor, probe_names

    t0 = time.perf_counter()
    ext = extractor(settings)
    names = probe_names(settings)
    grp = zarr.open_group(StoreLayout.of(root).volumes, mode="r")
    out = []
    with threadpool_limits(limits=1):
        _loop(grp, ids, ext, names, out)
    return time.perf_counter() - t0, np.asarray(out, np.float32)


def _loop(grp, ids, ext, names, out) -> None:
    from pipeline.radiomics import sitk_image

    for pid in ids:
        g = grp[pid]
        aff = g.attrs["affine"]
        m = sitk_image(g["mask"][...], aff)
        row = []
        for ph in PHASES:
            vals = ext.execute(sitk_image(g[ph][...], aff), m)
            row += [float(vals[n]) for n in names]
        out.append(row)


def run(ctx: BenchContext) -> list[Figure]:
    from features import FeatureStore, embedding_matrix
    from pipeline.actors import ray_session
    from pipeline.radiomics import RadiomicsConfig, extract_radiomics, load_settings

    n, shape, repeats = (6, (48, 48, 24), 1) if ctx.quick else (max(8, int(24 * ctx.scale)), (96, 96, 32), 2)
    root = ctx.work / "store"
    if root.exists():
        import shutil

        shutil.rmtree(root)
    _store(root, n, shape, ctx.seed)
    settings = load_settings().with_phases(PHASES)
    ids = [f"R{i:05d}" for i in range(n)]
    serial, ref = [], None
    for _ in range(repeats):
        s, ref = _serial_library(root, ids, settings)
        serial.append(n / s)
    with ray_session(None):  # an embedded Ray of its own, whatever the machine holds
        rates: dict[int, list[float]] = {1: [], 2: []}
        notes: dict[int, dict] = {}
        equal = True
        k = 0
        for workers in (1, 2):
            for _ in range(repeats):
                k += 1
                cfg = RadiomicsConfig(name=f"bench{k}", workers=workers, batch_size=2)
                rep = extract_radiomics(root, settings, cfg)
                rates[workers].append(rep.patients_per_s)
                got = FeatureStore(root).read(cfg.name).sort_by("patient_id").combine_chunks()
                equal &= bool(np.array_equal(embedding_matrix(got), ref))
                notes[workers] = {"patients": rep.n_computed, "features_per_patient": rep.dim,
                                  "job_s": round(rep.seconds, 2), "load_average_1min": round(os.getloadavg()[0], 1)}
    base = Timing(tuple(serial))
    common = {"volume_shape": list(shape), "phases": list(PHASES), "recipe": "dltr default (Original; shape, "
              "firstorder, GLCM, GLRLM, GLSZM, GLDM, NGTDM; z-score, bin width 5)", "cpus": os.cpu_count()}
    one, two = Timing(tuple(rates[1])), Timing(tuple(rates[2]))
    return [
        Figure("radiomics", f"Ray radiomics, 1 worker ({n} patients)", "patients/s", one, baseline=base,
               baseline_name="pyradiomics serial loop, one process", notes={**common, **notes[1],
                                                                           "values_equal_serial": equal}),
        Figure("radiomics", f"Ray radiomics, 2 workers ({n} patients)", "patients/s", two, baseline=base,
               baseline_name="pyradiomics serial loop, one process",
               notes={**common, **notes[2], "scaling_vs_1_worker": round(two.median / one.median, 3),
                      "values_equal_serial": equal}),
    ]
