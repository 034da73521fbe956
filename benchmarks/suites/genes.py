"""Radiogenomics correlation: chunked dask (ours) against dense NumPy, time and peak memory.

Workload: n patients x 512 deep features x G genes (full: 300 x 512 x 20,000; --quick:
100 x 512 x 5,000), Spearman, per-gene strongest correlation and count of features at P < 0.05.
The expression matrix lies in a Zarr array on disk (gene chunks of 1,000), as a store would
hold it. Each measurement runs in a fresh subprocess that reports its own wall time and peak RSS
(``ru_maxrss``): ours reads the Zarr chunks through ``dask.array`` and never assembles the
F x G matrix; the baseline loads the whole matrix, ranks it and computes the full F x G
correlation and P-value matrices with NumPy/SciPy (calling ``scipy.stats.spearmanr`` on the
concatenated matrix would need an (F+G)^2 matrix, 3.4 GB, and is not run).
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np

from benchmarks.harness import BenchContext, Figure, Timing

_CHILD = textwrap.dedent("""
    import json, resource, sys, time
    import numpy as np, zarr
    mode, path, feats = sys.argv[1], sys.argv[2], sys.argv[3]
    x = np.load(feats)
    t0 = time.perf_counter()
    if mode == "dask":
        import dask.array as da
        from analysis.genes import gene_summaries
        s = gene_summaries(x, da.from_zarr(path), chunk=1000, num_workers=2)
        n_sig = int(s["n_sig"].sum())
    else:
        from analysis.genes import r_to_p, standardize_columns
        from analysis._correlation import r_critical
        e = zarr.open_array(path, mode="r")[:]
        r = standardize_columns(x).T @ standardize_columns(e)
        p = r_to_p(r, x.shape[0])
        best = np.abs(r).argmax(axis=0)
        n_sig = int((p < 0.05).sum())
    dt = time.perf_counter() - t0
    json.dump({"seconds": dt, "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
               "n_sig": n_sig}, sys.stdout)
""")


def _write_inputs(work: Path, n: int, f: int, g: int, seed: int) -> tuple[Path, Path]:
    import zarr

    work.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    traits = rng.normal(size=(n, 4))
    feats = work / "features.npy"
    np.save(feats, traits @ rng.normal(size=(4, f)) + rng.normal(size=(n, f)))
    path = work / "expression.zarr"
    arr = zarr.open_array(str(path), mode="w", shape=(n, g), chunks=(n, 1000), dtype="f8")
    for s in range(0, g, 1000):
        w = min(1000, g - s)
        block = rng.normal(5.0, 1.0, size=(n, w))
        block[:, : w // 20] += traits[:, [0]]          # 5 % of genes follow a trait
        arr[:, s:s + w] = block
    return path, feats


def _child(mode: str, path: Path, feats: Path) -> dict:
    root = Path(__file__).resolve().parents[2]
    out = subprocess.run([sys.executable, "-c", _CHILD, mode, str(path), str(feats)], capture_output=True,
                         text=True, check=True, cwd=root)
    return json.loads(out.stdout)


def run(ctx: BenchContext) -> list[Figure]:
    n, g = (100, 5000) if ctx.quick else (max(10, int(300 * ctx.scale)), max(1000, int(20000 * ctx.scale)))
    f = 512
    path, feats = _write_inputs(Path(ctx.work), n, f, g, ctx.seed)
    reps = min(ctx.repeats, 3)
    runs = {m: [_child(m, path, feats) for _ in range(reps)] for m in ("dask", "numpy")}
    if {r["n_sig"] for r in runs["dask"]} != {r["n_sig"] for r in runs["numpy"]}:
        raise RuntimeError(f"genes bench: dask and NumPy disagree on the significant pairs: {runs}")
    wl = f"Spearman {n} patients x {f} features x {g} genes"
    notes = {"n_sig_pairs": runs["dask"][0]["n_sig"], "chunk_genes": 1000, "dask_workers": 2,
             "dense_FxG_matrix_mb": round(f * g * 8 / 2**20, 1)}
    return [
        Figure("genes", wl + " (time)", "s", Timing(tuple(r["seconds"] for r in runs["dask"])),
               baseline=Timing(tuple(r["seconds"] for r in runs["numpy"])), baseline_name="dense NumPy",
               higher_is_better=False, notes=notes),
        Figure("genes", wl + " (peak RSS)", "MB", Timing(tuple(r["peak_rss_mb"] for r in runs["dask"])),
               baseline=Timing(tuple(r["peak_rss_mb"] for r in runs["numpy"])), baseline_name="dense NumPy",
               higher_is_better=False),
    ]
