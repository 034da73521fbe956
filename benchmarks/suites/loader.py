"""Loader suite: the DALI ROI pipeline against the reference torch DataLoader on one store.

Same output (z-scored ROI tensors on the same grid), same cores (DALI: 2 CPU threads;
reference: DataLoader with 2 worker processes), same store, in one run. Three cohort sizes
give the growth exponent. DALI's two read modes (threads in-process, spawned worker
processes) are both measured; the notes say which was faster.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from benchmarks.harness import BenchContext, Figure, Timing, growth_exponent
from dltr.core.layout import StoreLayout

PHASES = ("arterial", "portal", "delayed")


def make_store(root: Path, n: int, seed: int, shape=(96, 96, 32)) -> Path:
    """A synthetic store (int16 volumes, ellipsoid tumours, stats, clinical) in the ingest layout
    (chunks and codec of ``IngestConfig``'s defaults)."""
    import pyarrow as pa
    import pyarrow.parquet as pq
    import zarr

    from benchmarks.suites.extraction import ingest_layout

    layout = ingest_layout()
    rng = np.random.default_rng(seed)
    grp = zarr.open_group(StoreLayout.of(root).volumes, mode="w")
    ii = np.indices(shape, dtype=np.float32)
    for p in range(n):
        c = [rng.uniform(15, s - 15) for s in shape[:2]] + [rng.uniform(4, shape[2] - 4)]
        r = [rng.uniform(5, 12), rng.uniform(5, 12), rng.uniform(2, 4)]
        mask = (sum(((ii[a] - c[a]) / r[a]) ** 2 for a in range(3)) <= 1).astype(np.uint8)
        g = grp.create_group(f"B{p:04d}")
        for k, ph in enumerate(PHASES):
            vol = (200 + 30 * k + rng.normal(0, 20, shape) + 100 * mask).astype(np.int16)
            g.create_array(ph, shape=shape, dtype="int16", **layout)[...] = vol
        g.create_array("mask", shape=shape, dtype="uint8", **layout)[...] = mask
        nz = np.nonzero(mask)
        g.attrs.update({"patient_id": f"B{p:04d}", "center": "A", "phases": list(PHASES),
                        "bbox_vox": [int(a.min()) for a in nz] + [int(a.max()) + 1 for a in nz],
                        "spacing": [0.8, 0.8, 4.0]})
    (StoreLayout.of(root).ingest).mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pylist([
        {"phase": ph, "center": "A", "region": "body", "n": 1, "mean": 230.0 + 30 * k, "std": 25.0,
         "p01": 0.0, "p50": 0.0, "p99": 0.0} for k, ph in enumerate(PHASES)]),
        StoreLayout.of(root).intensity_stats)
    return root


def _reference_pass(store, ids, cfg, batch):
    import torch

    from pipeline.loaders import ReferenceRoiDataset

    dl = torch.utils.data.DataLoader(ReferenceRoiDataset(store, ids, cfg), batch_size=batch, num_workers=2)
    return torch.cat([b["x"] for b in dl])


def _dali_pass(loader):
    import torch

    return torch.cat([b["x"] for b in loader])


def run(ctx: BenchContext) -> list[Figure]:
    from pipeline.loaders import DaliRoiLoader, RoiConfig, RoiReader

    cfg = RoiConfig()
    sizes = ctx.sizes(full=(16, 32, 64), quick=(4, 8, 12))
    store = make_store(Path(ctx.work) / "store", max(sizes), ctx.seed,
                       shape=(64, 64, 24) if ctx.quick else (96, 96, 32))
    all_ids = [f"B{p:04d}" for p in range(max(sizes))]
    reader = RoiReader(store, cfg)
    figs, t_dali, t_ref, notes = [], [], [], {}
    for n in sizes:
        ids = all_ids[:n]
        mb = sum(reader.read(p).crop.size * 2 for p in ids) / 1e6  # int16 bytes of the ROI reads
        loaders = {w: DaliRoiLoader(store, ids, cfg, batch_size=8, workers=w, num_threads=2, py_workers=2)
                   for w in ("threads", "processes")}
        rates: dict[str, list[float]] = {"threads": [], "processes": [], "reference": []}
        out_ref = _reference_pass(store, ids, cfg, 8)
        for w, ld in loaders.items():  # warm-up + same-output check
            diff = float((_dali_pass(ld) - out_ref).abs().max())
            notes[f"max_abs_diff_n{n}_{w}"] = round(diff, 7)
        for _ in range(ctx.repeats):
            for name in rates:
                t0 = time.perf_counter()
                _reference_pass(store, ids, cfg, 8) if name == "reference" else _dali_pass(loaders[name])
                rates[name].append(time.perf_counter() - t0)
        for ld in loaders.values():
            ld.close()
        best = min(("threads", "processes"), key=lambda w: float(np.median(rates[w])))
        notes[f"faster_mode_n{n}"] = best
        t_dali.append(float(np.median(rates[best])))
        t_ref.append(float(np.median(rates["reference"])))
        for unit, work in (("ROI volumes/s", n), ("MB/s", mb)):
            figs.append(Figure("loader", f"{n} studies, grid {cfg.grid}, 3 phases", unit,
                               ours=Timing(tuple(rates[best])).rate(work),
                               baseline=Timing(tuple(rates["reference"])).rate(work),
                               baseline_name="torch DataLoader(2 workers) over reference_roi",
                               notes={"dali_mode": best, "other_mode_vol_s": round(
                                   n / float(np.median(rates["processes" if best == "threads" else "threads"])), 2)}
                               if unit == "ROI volumes/s" else {}))
    notes["growth_exponent_dali"] = round(growth_exponent(list(sizes), t_dali), 3)
    notes["growth_exponent_reference"] = round(growth_exponent(list(sizes), t_ref), 3)
    figs[-2] = Figure(**{**figs[-2].__dict__, "notes": {**figs[-2].notes, **notes}})
    figs.append(_epoch_figure(store, all_ids, cfg, ctx.repeats))
    return figs


def _epoch_figure(store: Path, ids: list[str], cfg, repeats: int) -> Figure:
    """Augmented training epochs (the encoder trainer's loader: shuffle, flips, rotation, scaling, jitter)
    with the trainer's crop cache (epochs after the first read no chunk) vs reading the store every epoch."""
    from pipeline.loaders import DaliRoiLoader

    kw = dict(batch_size=8, augment=True, seed=0, shuffle=True, num_threads=2)
    plain = DaliRoiLoader(store, ids, cfg, **kw)
    cache: dict = {}
    cached = DaliRoiLoader(store, ids, cfg, crop_cache=cache, **kw)
    _dali_pass(plain)
    _dali_pass(cached)  # the first epoch fills the cache
    t = {"plain": [], "cached": []}
    for _ in range(repeats):
        for name, ld in (("plain", plain), ("cached", cached)):
            t0 = time.perf_counter()
            _dali_pass(ld)
            t[name].append(time.perf_counter() - t0)
    plain.close()
    cached.close()
    return Figure("loader", f"augmented training epoch, {len(ids)} studies, grid {cfg.grid}", "ROI volumes/s",
                  ours=Timing(tuple(t["cached"])).rate(len(ids)), baseline=Timing(tuple(t["plain"])).rate(len(ids)),
                  baseline_name="the same loader reading the store every epoch",
                  notes={"cached_crops": len(cache),
                         "cache_mb": round(sum(c.crop.nbytes for c in cache.values()) / 1e6, 1)})
