"""Cohort intensity statistics per phase, center and region, out of core with ``dask.array``.

Regions (``region`` column):
- ``tumour``: voxels where the patient's mask is non-zero;
- ``body``: voxels with intensity > 0 (MRI magnitude images are 0 in the air around the body).

The Zarr arrays are opened as ``dask.array`` and reduced block by block (one Zarr chunk per block),
so no volume, let alone the cohort, is held in memory. Percentiles are exact (NumPy's default
"linear" method), not sketches: pass 1 counts, sums and finds min/max, pass 2 takes the centred sum
of squares and a 4096-bin histogram, pass 3 pulls only the values in the bins that hold the wanted
order statistics and sorts those.
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np

QUANTILES = (("p01", 1.0), ("p50", 50.0), ("p99", 99.0))
REGIONS = ("body", "tumour")
BINS = 4096


def _values(img: np.ndarray, mask: np.ndarray, region: str) -> np.ndarray:
    v = np.asarray(img).ravel()
    sel = np.asarray(mask).ravel() > 0 if region == "tumour" else v > 0
    return v[sel].astype(np.float64)


def _moments(img, mask, region):
    v = _values(img, mask, region)
    if not v.size:
        return 0, 0.0, np.inf, -np.inf
    return v.size, float(v.sum()), float(v.min()), float(v.max())


def _bin(v: np.ndarray, lo: float, hi: float) -> np.ndarray:
    if hi <= lo:
        return np.zeros(v.shape, np.int64)
    return np.clip(np.floor((v - lo) * (BINS / (hi - lo))).astype(np.int64), 0, BINS - 1)


def _pass2(img, mask, region, mean, lo, hi):
    v = _values(img, mask, region)
    return float(((v - mean) ** 2).sum()), np.bincount(_bin(v, lo, hi), minlength=BINS)


def _pass3(img, mask, region, lo, hi, bins):
    v = _values(img, mask, region)
    return v[np.isin(_bin(v, lo, hi), bins)]


def _lerp(a: float, b: float, t: float) -> float:  # numpy's _lerp (function_base.py)
    d = b - a
    return b - d * (1 - t) if t >= 0.5 else a + d * t


def _blocks(store_root: Path, key: str, phase: str) -> list[tuple[Any, Any]]:
    import dask.array as da

    img = da.from_zarr(str(store_root / "volumes.zarr"), component=f"{key}/{phase}")
    mask = da.from_zarr(str(store_root / "volumes.zarr"), component=f"{key}/mask")
    mask = mask.rechunk(img.chunks)
    return list(zip(img.to_delayed().ravel(), mask.to_delayed().ravel(), strict=True))


def intensity_stats(store_root: str | Path, volumes: list[tuple[str, str, str]], compute) -> list[dict[str, Any]]:
    """Rows ``phase, center, region, n, mean, std, p01, p50, p99`` for ``volumes`` = [(key, center, phase)].

    ``compute`` is ``dask.compute`` or a distributed client's ``compute``-and-gather.
    """
    from dask import delayed

    store_root = Path(store_root)
    groups: dict[tuple[str, str], list] = defaultdict(list)
    for key, center, phase in volumes:
        groups[(phase, center)].extend(_blocks(store_root, key, phase))
    keys = [(ph, c, r) for (ph, c) in sorted(groups) for r in REGIONS]
    m = compute([[delayed(_moments)(i, k, r) for i, k in groups[(ph, c)]] for ph, c, r in keys])
    agg = {}
    for g, parts in zip(keys, m, strict=True):
        n = sum(p[0] for p in parts)
        if n:
            agg[g] = {"n": n, "mean": sum(p[1] for p in parts) / n,
                      "lo": min(p[2] for p in parts), "hi": max(p[3] for p in parts)}
    live = [g for g in keys if g in agg]
    p2 = compute([[delayed(_pass2)(i, k, g[2], agg[g]["mean"], agg[g]["lo"], agg[g]["hi"])
                   for i, k in groups[g[:2]]] for g in live])
    need = {}
    for g, parts in zip(live, p2, strict=True):
        a = agg[g]
        a["std"] = float(np.sqrt(sum(p[0] for p in parts) / a["n"]))
        cum = np.cumsum(np.sum([p[1] for p in parts], axis=0))
        a["cum"], ranks = cum, []
        for _name, q in QUANTILES:
            pos = q / 100.0 * (a["n"] - 1)
            ranks += [int(np.floor(pos)), int(np.ceil(pos))]
        a["ranks"] = ranks
        need[g] = sorted({int(np.searchsorted(cum, r, side="right")) for r in ranks})
    p3 = compute([[delayed(_pass3)(i, k, g[2], agg[g]["lo"], agg[g]["hi"], need[g])
                   for i, k in groups[g[:2]]] for g in live])
    rows = []
    for g, parts in zip(live, p3, strict=True):
        a = agg[g]
        vals = np.sort(np.concatenate(parts))

        def at(rank: int, a=a, vals=vals, g=g) -> float:
            b = int(np.searchsorted(a["cum"], rank, side="right"))
            before = int(a["cum"][b - 1]) if b > 0 else 0
            # values of the needed bins are sorted together; skip the needed bins below b
            skipped = sum(int(a["cum"][x] - (a["cum"][x - 1] if x > 0 else 0)) for x in need[g] if x < b)
            return float(vals[skipped + rank - before])

        row = {"phase": g[0], "center": g[1], "region": g[2], "n": int(a["n"]), "mean": float(a["mean"]),
               "std": a["std"]}
        for (name, q), (r0, r1) in zip(QUANTILES, zip(a["ranks"][::2], a["ranks"][1::2], strict=True),
                                       strict=True):
            pos = q / 100.0 * (a["n"] - 1)
            row[name] = _lerp(at(r0), at(r1), pos - np.floor(pos))
        rows.append(row)
    return rows
