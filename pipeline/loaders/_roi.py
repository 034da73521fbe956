"""ROI geometry and chunk-aligned reads from the Zarr volume store (shared by both loaders).

Box convention: voxel boxes are ``[x0, y0, z0, x1, y1, z1]``, half-open, in the canonical
frame. The *requested* box is the tumour box plus margin and minimum extent; it may cross
the volume border. The *read* box is the requested box grown by one voxel per side (the
trilinear neighbours of the outermost sample points) and clipped to the volume: exactly
the voxels read from the store, so only the chunks it overlaps are fetched.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from dltr.exceptions import StoreError
from pipeline.loaders._config import RoiConfig


def requested_box(bbox_vox, spacing, config: RoiConfig) -> np.ndarray:
    """Tumour box + ``margin`` per side, grown symmetrically to ``min_extent_mm`` (int64, may cross the border)."""
    b = np.asarray(bbox_vox, dtype=np.int64).reshape(2, 3)
    lo, hi = b[0].copy(), b[1].copy()
    if np.any(hi <= lo):
        raise StoreError(f"bbox_vox {list(map(int, b.ravel()))}: empty tumour box (x1 <= x0); re-run ingest")
    for a in range(3):
        m = math.ceil(config.margin * (hi[a] - lo[a]) - 1e-9)
        lo[a], hi[a] = lo[a] - m, hi[a] + m
        need = math.ceil(config.min_extent_mm / float(spacing[a]) - 1e-9)
        if hi[a] - lo[a] < need:
            grow = need - (hi[a] - lo[a])
            lo[a], hi[a] = lo[a] - grow // 2, hi[a] + grow - grow // 2
    return np.concatenate([lo, hi])


def read_box(req: np.ndarray, shape) -> np.ndarray:
    """The requested box grown by one voxel per side and clipped to the volume."""
    shape = np.asarray(shape, dtype=np.int64)
    lo = np.clip(req[:3] - 1, 0, shape)
    hi = np.clip(req[3:] + 1, 0, shape)
    return np.concatenate([lo, hi])


def sample_positions(req: np.ndarray, rbox: np.ndarray, grid) -> list[np.ndarray]:
    """Per axis, the voxel-index positions (relative to the read box) of the grid's sample points."""
    out = []
    for a in range(3):
        step = (req[3 + a] - req[a]) / grid[a]
        out.append(req[a] - rbox[a] + (np.arange(grid[a]) + 0.5) * step - 0.5)
    return out


def dali_matrix(req: np.ndarray, rbox: np.ndarray, grid) -> np.ndarray:
    """3x4 dst->src matrix for DALI ``warp_affine`` on a (X, Y, Z, C) crop laid out as DHWC.

    DALI's point coordinates are (x, y, z) = (W, H, D) = our (Z, Y, X) axes, with voxel
    centres at +0.5; src = b0 + dst * extent / grid on each axis.
    """
    m = np.zeros((3, 4), dtype=np.float32)
    for d, a in enumerate((2, 1, 0)):
        m[d, d] = (req[3 + a] - req[a]) / grid[a]
        m[d, 3] = req[a] - rbox[a]
    return m


@dataclass
class RoiCrop:
    """What is read for one patient: the crop (X, Y, Z, C) float32, boxes and normalisation."""

    patient_id: str
    crop: np.ndarray
    requested: np.ndarray
    read: np.ndarray
    mean: np.ndarray
    std: np.ndarray
    mask: np.ndarray | None = None


class RoiReader:
    """Reads ROI crops of the configured phases; picklable (opens the store lazily per process).

    ``zarr_store`` replaces the ``STORE/volumes.zarr`` store (a ``zarr.abc.store.Store``),
    e.g. a wrapper that counts reads.
    """

    def __init__(self, store_root: str | Path, config: RoiConfig, zarr_store: Any = None):
        self.store_root = Path(store_root)
        self.config = config
        self.zarr_store = zarr_store
        self._stats = _load_stats(self.store_root, config)
        self._root = None

    def __getstate__(self) -> dict[str, Any]:
        d = dict(self.__dict__)
        d["_root"] = None
        return d

    def _group(self, patient_id: str):
        import zarr

        if self._root is None:
            src = self.zarr_store if self.zarr_store is not None else self.store_root / "volumes.zarr"
            if self.zarr_store is None and not Path(src).is_dir():
                raise StoreError(f"{src}: no volume store; run `dltr ingest` first")
            self._root = zarr.open_group(src, mode="r")
        try:
            return self._root[patient_id]
        except KeyError:
            raise StoreError(
                f"{self.store_root / 'volumes.zarr'}: patient {patient_id!r} is not in the volume store") from None

    def read(self, patient_id: str, with_mask: bool = False) -> RoiCrop:
        g = self._group(patient_id)
        attrs = dict(g.attrs)
        missing = [p for p in self.config.phases if p not in attrs.get("phases", [])]
        if missing:
            raise StoreError(f"volumes.zarr/{patient_id}: phase(s) {missing} missing (has "
                             f"{attrs.get('phases')}); ingest them or drop them from RoiConfig.phases")
        arrays = [g[p] for p in self.config.phases]
        shape = arrays[0].shape
        req = requested_box(attrs["bbox_vox"], attrs["spacing"], self.config)
        rbox = read_box(req, shape)
        sl = tuple(slice(int(rbox[a]), int(rbox[3 + a])) for a in range(3))
        crop = np.empty(tuple(int(rbox[3 + a] - rbox[a]) for a in range(3)) + (len(arrays),), np.float32)
        for c, arr in enumerate(arrays):
            if arr.shape != shape:
                raise StoreError(f"volumes.zarr/{patient_id}/{self.config.phases[c]}: shape {arr.shape} "
                                 f"differs from {shape} of the other phases; re-run ingest")
            crop[..., c] = arr[sl]
        center = str(attrs.get("center", ""))
        mean, std = self.norm(center, patient_id)
        mask = np.asarray(g["mask"][sl], dtype=np.float32) if with_mask else None
        return RoiCrop(patient_id, crop, req, rbox, mean, std, mask)

    def norm(self, center: str, patient_id: str) -> tuple[np.ndarray, np.ndarray]:
        c = self.config
        if c.normalisation == "none":
            return np.zeros(c.n_channels, np.float32), np.ones(c.n_channels, np.float32)
        out = []
        for p in c.phases:
            ms = self._stats.get((center, p))
            if ms is None:
                raise StoreError(
                    f"{self.store_root / 'ingest/intensity_stats.parquet'}: no row for center {center!r}, phase "
                    f"{p!r}, region {c.norm_region!r} (patient {patient_id}); re-run ingest or set norm_region")
            out.append(ms)
        a = np.asarray(out, dtype=np.float64)
        return a[:, 0].astype(np.float32), a[:, 1].astype(np.float32)


def _load_stats(store_root: Path, config: RoiConfig) -> dict[tuple[str, str], tuple[float, float]]:
    if config.normalisation == "none":
        return {}
    path = store_root / "ingest" / "intensity_stats.parquet"
    if not path.is_file():
        raise StoreError(f"{path}: missing; z-score normalisation needs the ingest statistics (run `dltr ingest`)")
    import pyarrow.parquet as pq

    t = pq.read_table(path).to_pylist()
    regions = sorted({str(r["region"]) for r in t})
    if config.norm_region not in regions:
        raise StoreError(f"{path}: region {config.norm_region!r} not found (has {regions}); "
                         f"set RoiConfig.norm_region to one of them")
    stats = {}
    for r in t:
        if r["region"] == config.norm_region:
            std = float(r["std"])
            if not std > 0:
                raise StoreError(f"{path}: center {r['center']!r}, phase {r['phase']!r}: std {std!r} is not > 0")
            stats[(str(r["center"]), str(r["phase"]))] = (float(r["mean"]), std)
    return stats
