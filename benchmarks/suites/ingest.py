"""Ingest suite: Dask ingest against a single-process loop on the same cohort (source MB/s and
volumes/s, with the raw decode rate of the sources as the ceiling); ROI read latency of a 64-cubed
(volume-bounded) crop around the tumour from the Zarr store against decoding the source NIfTI;
compression ratio of the chosen Zarr compressor against the alternatives."""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import numpy as np

from benchmarks.harness import BenchContext, Figure, Timing, measure
from dltr.core.layout import StoreLayout

ROI = 64


def _cohort(ctx: BenchContext) -> Path:
    """``--quick``: the tiny synthetic cohort (all three readers, DICOM included). Full size: gzip NIfTI
    volumes of clinical size (256 x 256 x 48 int16, 6 MB raw each), where decoding dominates as it does on
    real exports; the tiny cohort's 40 x 40 x 16 volumes fit in one chunk, so a "64-cubed ROI" read there
    is a whole-volume read and the comparison says nothing about ROI reads."""
    out = ctx.work / "synth"
    shutil.rmtree(out, ignore_errors=True)
    if not ctx.quick:
        return _nifti_cohort(out / "cohort", max(4, int(20 * ctx.scale)), ctx.seed, False)
    from dltr.synth import SynthConfig, synthesize

    synthesize(out, SynthConfig.profile("tiny", seed=ctx.seed, patients=4))
    return out / "cohort"


def _nifti_cohort(root: Path, n: int, seed: int, quick: bool) -> Path:
    import nibabel as nib

    rng = np.random.default_rng(seed)
    root.mkdir(parents=True)
    man, clin = ["patient_id,phase,image,mask,study_date"], ["patient_id,center,tace_date"]
    for p in range(n):
        shape = (64, 64, 24) if quick else (256, 256, 48)
        ii = np.indices(shape, dtype=np.float32)
        c = rng.uniform(0.3, 0.7, 3) * shape
        mask = (((ii[0] - c[0]) / 18) ** 2 + ((ii[1] - c[1]) / 16) ** 2 + ((ii[2] - c[2]) / 4) ** 2 <= 1)
        aff = np.diag([0.8, 0.8, 3.0, 1.0])
        nib.save(nib.Nifti1Image(mask.astype(np.uint8), aff), str(root / f"p{p}_mask.nii.gz"))
        for ph in ("arterial", "portal"):
            img = (300 + 40 * np.sin(ii[0] / 6) + rng.normal(0, 20, shape) + 150 * mask).astype(np.int16)
            nib.save(nib.Nifti1Image(img, aff), str(root / f"p{p}_{ph}.nii.gz"))
            man.append(f"p{p},{ph},p{p}_{ph}.nii.gz,p{p}_mask.nii.gz,")
        clin.append(f"p{p},{'AB'[p % 2]},2020-01-01")
    (root / "manifest.csv").write_text("\n".join(man) + "\n")
    (root / "clinical.csv").write_text("\n".join(clin) + "\n")
    return root


def _ingest_figures(ctx: BenchContext, cohort: Path, repeats: int) -> tuple[list[Figure], Path]:
    from pipeline.ingest import IngestConfig, ingest_cohort, read_image

    stores = iter(range(10**6))
    last: dict[str, object] = {}

    def run(executor: str, processes: bool = False):
        def fn():
            store = ctx.work / f"store{next(stores)}"
            shutil.rmtree(store, ignore_errors=True)  # a fresh store: nothing to skip
            # the default local cluster (thread workers); the process cluster is measured beside it
            cfg = IngestConfig(workers=2, processes=processes, stats=False)
            last[executor] = ingest_cohort(cohort, store, cfg, executor=executor)
            last[executor + "_store"] = store
        return fn

    t_dask = measure(run("dask"), repeats, warmup=0)
    t_serial = measure(run("serial"), repeats, warmup=0)
    t_procs = measure(run("dask", processes=True), repeats, warmup=0)
    rep = last["serial"]
    mb, vols = rep.source_mb, rep.volumes
    import pandas as pd

    man = pd.read_csv(cohort / "manifest.csv", dtype=str, keep_default_na=False)
    srcs = sorted({cohort / p for p in man["image"]} | {cohort / p for p in man["mask"] if p})
    t_decode = measure(lambda: [read_image(p) for p in srcs], repeats, warmup=0)
    notes = {"patients": rep.patients, "volumes": vols, "source_mb": round(mb, 2), "dask_workers": 2,
             "dask_processes": False, "dask_process_cluster_mb_s": round(t_procs.rate(rep.source_mb).median, 2),
             "dask_includes_cluster_start": True, "written_mb": round(rep.written_mb, 2)}
    figs = [
        Figure("ingest", "cohort ingest, source MB/s", "MB/s", t_dask.rate(mb), t_serial.rate(mb),
               "single-process loop", t_decode.rate(mb), "raw decode of the sources (1 process)", notes=notes),
        Figure("ingest", "cohort ingest, volumes/s", "volumes/s", t_dask.rate(vols), t_serial.rate(vols),
               "single-process loop", notes=notes),
    ]
    return figs, last["serial_store"]


def _roi_figure(ctx: BenchContext, cohort: Path, store: Path, repeats: int) -> Figure:
    import nibabel as nib
    import pyarrow.parquet as pq
    import zarr

    rows = [r for r in pq.read_table(StoreLayout.of(store).studies).to_pylist()
            if r["source_path"].endswith((".nii", ".nii.gz"))]
    rows = rows[: 8 if ctx.quick else 40]

    def box(r, shape):
        b = r["bbox_vox"]
        c = [(b[a] + b[a + 3]) // 2 for a in range(3)]
        lo = [max(0, min(c[a] - ROI // 2, shape[a] - ROI)) for a in range(3)]
        return tuple(slice(lo[a], min(shape[a], lo[a] + ROI)) for a in range(3))

    def zarr_reads():
        for r in rows:
            a = zarr.open_array(StoreLayout.of(store).volumes / r["volume_key"], mode="r")
            a[box(r, a.shape)]

    def nifti_reads():  # the usual loader: decode the whole file, then crop (same canonical box)
        for r in rows:
            img = nib.as_closest_canonical(nib.load(str(cohort / r["source_path"])))
            np.asanyarray(img.dataobj)[box(r, img.shape)]

    tz = measure(zarr_reads, repeats)
    tn = measure(nifti_reads, repeats)
    per = lambda t: Timing(tuple(v / len(rows) * 1e3 for v in t.values))  # noqa: E731
    return Figure("ingest", f"ROI read {ROI}^3 around the tumour", "ms/read", per(tz), per(tn),
                  "decode source NIfTI (nibabel) + crop", higher_is_better=False, notes={"reads": len(rows)})


def _compressor_figure(store: Path) -> Figure:
    """Compression ratio of each codec on the stored image arrays (same chunks)."""
    import zarr

    from pipeline.ingest import DEFAULT_COMPRESSOR, compressor_codec

    grp = zarr.open_group(StoreLayout.of(store).volumes, mode="r")
    arrays = [grp[k][p][...] for k in sorted(grp.group_keys()) for p in grp[k].attrs["phases"]][:16]
    raw = sum(a.nbytes for a in arrays)
    ratios, secs = {}, {}
    for name in ("blosc-zstd-3", "blosc-lz4-5", "zstd-3", "gzip-6"):
        tmp = store.parent / f"codec-{name}.zarr"
        t0 = time.perf_counter()
        g = zarr.open_group(tmp, mode="w")
        for i, a in enumerate(arrays):
            g.create_array(str(i), shape=a.shape, chunks=tuple(min(c, s) for c, s in zip((64, 64, 16), a.shape,
                                                                                          strict=True)),
                           dtype=a.dtype, compressors=[compressor_codec(name)])[...] = a
        secs[name] = time.perf_counter() - t0
        ratios[name] = raw / sum(f.stat().st_size for f in tmp.rglob("*") if f.is_file() and f.name != "zarr.json")
        shutil.rmtree(tmp)
    return Figure("ingest", f"compression ratio ({DEFAULT_COMPRESSOR} vs blosc-lz4-5)", "x raw size",
                  Timing((ratios[DEFAULT_COMPRESSOR],)), Timing((ratios["blosc-lz4-5"],)), "blosc-lz4-5",
                  notes={k: f"ratio {ratios[k]:.2f}, write {raw / 1e6 / secs[k]:.0f} MB/s" for k in ratios})


def run(ctx: BenchContext) -> list[Figure]:
    ctx.work.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    cohort = _cohort(ctx)
    t1 = time.perf_counter()
    repeats = 2 if ctx.quick else ctx.repeats
    figs, store = _ingest_figures(ctx, cohort, 1 if ctx.quick else repeats)
    t2 = time.perf_counter()
    figs.append(_roi_figure(ctx, cohort, store, repeats))
    figs.append(_compressor_figure(store))
    figs[0].notes.update({"s_generate": round(t1 - t0, 1), "s_ingest_runs": round(t2 - t1, 1),
                          "s_roi_codecs": round(time.perf_counter() - t2, 1)})
    return figs
