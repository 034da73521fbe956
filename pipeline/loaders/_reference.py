"""The NumPy ground truth of the ROI transform, and a plain ``torch.utils.data`` baseline.

Not a fallback for DALI: it is what the DALI pipeline is tested against and benchmarked
against. The resampling is separable trilinear interpolation (the box is axis-aligned),
written as one interpolation matrix per axis with zero weight outside the volume.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from pipeline.loaders._config import RoiConfig
from pipeline.loaders._roi import RoiCrop, RoiReader, sample_positions


@dataclass
class RoiSample:
    """One encoder input: ``x`` float32 (C, X, Y, Z), the voxel box read, the patient."""

    patient_id: str
    x: np.ndarray
    roi_box: np.ndarray


def _interp_matrix(pos: np.ndarray, n: int) -> np.ndarray:
    """(len(pos), n) linear-interpolation weights; neighbours outside [0, n) get no weight (read as 0)."""
    w = np.zeros((len(pos), n), dtype=np.float64)
    i0 = np.floor(pos).astype(np.int64)
    f = pos - i0
    rows = np.arange(len(pos))
    for idx, wt in ((i0, 1.0 - f), (i0 + 1, f)):
        ok = (idx >= 0) & (idx < n)
        np.add.at(w, (rows[ok], idx[ok]), wt[ok])
    return w


def transform_crop(crop: RoiCrop, config: RoiConfig) -> np.ndarray:
    """Normalise the crop per channel and resample the requested box to ``config.grid`` -> (C, X, Y, Z);
    with ``config.mask_channel`` the crop's mask (0 outside the volume) is resampled as one more channel."""
    vol = (crop.crop.astype(np.float64) - crop.mean) / crop.std
    if config.mask_channel:
        vol = np.concatenate([vol, crop.mask.astype(np.float64)[..., None]], axis=3)
    pos = sample_positions(crop.requested, crop.read, config.grid)
    wx, wy, wz = (_interp_matrix(p, n) for p, n in zip(pos, vol.shape[:3], strict=True))
    out = np.einsum("xi,ijkc->xjkc", wx, vol, optimize=True)
    out = np.einsum("yj,xjkc->xykc", wy, out, optimize=True)
    out = np.einsum("zk,xykc->cxyz", wz, out, optimize=True)
    return np.ascontiguousarray(out, dtype=np.float32)


def reference_roi(store_root: str | Path, patient_id: str, config: RoiConfig, *,
                  zarr_store: Any = None, reader: RoiReader | None = None) -> RoiSample:
    """The deterministic ROI tensor of one patient (no augmentation), computed in NumPy."""
    reader = reader or RoiReader(store_root, config, zarr_store=zarr_store)
    crop = reader.read(patient_id, with_mask=config.mask_channel)
    return RoiSample(patient_id, transform_crop(crop, config), crop.read.astype(np.int32))


class ReferenceRoiDataset(Dataset):
    """``torch.utils.data.Dataset`` over :func:`reference_roi`; items are dicts of x, roi_box, patient_id."""

    def __init__(self, store_root: str | Path, patient_ids, config: RoiConfig):
        self.store_root = Path(store_root)
        self.patient_ids = list(patient_ids)
        self.config = config
        self._reader = RoiReader(self.store_root, config)

    def __len__(self) -> int:
        return len(self.patient_ids)

    def __getitem__(self, i: int) -> dict[str, Any]:
        s = reference_roi(self.store_root, self.patient_ids[i], self.config, reader=self._reader)
        return {"x": torch.from_numpy(s.x), "roi_box": torch.from_numpy(s.roi_box), "patient_id": s.patient_id}
