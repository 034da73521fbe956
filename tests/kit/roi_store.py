"""A small Zarr volume store built directly in code, in the layout ``pipeline.ingest`` writes
(docs/architecture.md): known volumes, ellipsoid tumours, anisotropic spacings, tumours at
the volume border, intensity statistics and a clinical table with splits and labels."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import zarr

from dltr.core.layout import StoreLayout

PHASES = ("arterial", "portal", "delayed")
CHUNKS = (16, 16, 8)


def _volume(rng, shape, center, radii, label: int, phase_i: int) -> tuple[np.ndarray, np.ndarray]:
    ii = np.indices(shape, dtype=np.float64)
    r2 = sum(((ii[a] - center[a]) / radii[a]) ** 2 for a in range(3))
    mask = (r2 <= 1.0).astype(np.uint8)
    body = 200 + 40 * phase_i + rng.normal(0, 20, size=shape)
    body += 15 * np.sin(ii[0] / 5.0) * np.cos(ii[1] / 7.0)  # smooth structure (interpolation matters)
    boost = (160 if label else 40) * (1.0 if phase_i == 0 else 0.5)
    vol = body + mask * (boost + rng.normal(0, 10, size=shape))
    return np.clip(np.round(vol), -32768, 32767).astype(np.int16), mask


def roi_store(root: str | Path, n_patients: int = 8, seed: int = 0, *, centers=("A",),
                border_every: int = 3, train_fraction: float = 1.0) -> Path:
    """Write STORE/volumes.zarr, ingest/intensity_stats.parquet and tables/clinical.parquet."""
    root = Path(root)
    rng = np.random.default_rng(seed)
    grp = zarr.open_group(StoreLayout.of(root).volumes, mode="w")
    rows, sums = [], {}
    for n in range(n_patients):
        pid = f"P{n:03d}"
        center = centers[n % len(centers)]
        k_in = n // len(centers)  # index within its center
        label = k_in % 2
        shape = tuple(int(v) for v in (rng.integers(36, 56), rng.integers(30, 48), rng.integers(12, 20)))
        spacing = [float(rng.choice([0.7, 0.8, 1.1])), float(rng.choice([0.7, 0.9])), float(rng.choice([2.5, 4.0, 5.0]))]
        radii = np.array([rng.uniform(4, 9), rng.uniform(4, 9), rng.uniform(2, 3.5)])
        if n % border_every == 0:  # tumour cut by the volume border (low side or high side)
            center_v = [0.0 if n % 2 == 0 else shape[0] - 1.0, rng.uniform(radii[1], shape[1] - radii[1]), 1.0]
        else:
            center_v = [rng.uniform(radii[a] + 1, shape[a] - radii[a] - 1) for a in range(3)]
        g = grp.create_group(pid)
        for k, ph in enumerate(PHASES):
            vol, mask = _volume(rng, shape, center_v, radii, label, k)
            g.create_array(ph, shape=shape, chunks=CHUNKS, dtype="int16")[...] = vol
            s = sums.setdefault((center, ph), [0.0, 0.0, 0])
            s[0] += float(vol.sum(dtype=np.float64))
            s[1] += float((vol.astype(np.float64) ** 2).sum())
            s[2] += vol.size
        g.create_array("mask", shape=shape, chunks=CHUNKS, dtype="uint8")[...] = mask
        nz = np.nonzero(mask)
        bbox = [int(a.min()) for a in nz] + [int(a.max()) + 1 for a in nz]
        g.attrs.update({"patient_id": pid, "center": center, "phases": list(PHASES), "bbox_vox": bbox,
                        "spacing": spacing})
        split = "external" if center != centers[0] else (
            "train" if k_in < train_fraction * n_patients / len(centers) else "internal")
        rows.append({"patient_id": pid, "center": center, "split": split, "label": label})
    (StoreLayout.of(root).ingest).mkdir(parents=True, exist_ok=True)
    (root / "tables").mkdir(parents=True, exist_ok=True)
    stats = []
    for (c, ph), (s1, s2, n) in sorted(sums.items()):
        mean = s1 / n
        std = float(np.sqrt(s2 / n - mean**2))
        for region in ("body", "tumour"):
            stats.append({"phase": ph, "center": c, "region": region, "n": n, "mean": mean, "std": std,
                          "p01": mean - 2 * std, "p50": mean, "p99": mean + 2 * std})
    pq.write_table(pa.Table.from_pylist(stats), StoreLayout.of(root).intensity_stats)
    clin = pa.Table.from_pylist(rows).cast(pa.schema([("patient_id", pa.string()), ("center", pa.string()),
                                                      ("split", pa.string()), ("label", pa.int8())]))
    pq.write_table(clin, StoreLayout.of(root).table("clinical"))
    return root
