"""The in-memory volume every reader returns, the canonical frame and resampling.

Canonical frame: RAS+ (nibabel's ``as_closest_canonical``): array axes i, j, k point as closely
as possible along +x (Right), +y (Anterior), +z (Superior). Only flips and permutations are
applied, so voxel values are never interpolated; an oblique acquisition keeps its rotation in
the affine. The reader's affine is kept as ``original_affine``.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from ._errors import NonFiniteError

INT16 = np.iinfo(np.int16)


@dataclass(frozen=True)
class Volume:
    """Voxels ``(X, Y, Z)`` and the 4x4 affine from ``(i, j, k, 1)`` to RAS world millimetres."""

    voxels: np.ndarray
    affine: np.ndarray
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def spacing(self) -> tuple[float, float, float]:
        return tuple(float(s) for s in np.linalg.norm(self.affine[:3, :3], axis=0))

    @property
    def orientation(self) -> str:
        import nibabel as nib

        return "".join(nib.aff2axcodes(self.affine))


def to_canonical(vol: Volume) -> Volume:
    """Flip/permute axes to the closest RAS+ frame; records ``original_affine`` and ``orientation``."""
    import nibabel.orientations as no

    ornt = no.io_orientation(vol.affine)
    meta = {"original_affine": vol.meta.get("original_affine", vol.affine.tolist()),
            "orientation": vol.meta.get("orientation", vol.orientation), **vol.meta}
    if np.array_equal(ornt, [[0, 1], [1, 1], [2, 1]]):
        return replace(vol, meta=meta)
    data = no.apply_orientation(vol.voxels, ornt)
    affine = vol.affine @ no.inv_ornt_aff(ornt, vol.voxels.shape)
    return Volume(np.ascontiguousarray(data), affine, meta)


def resample(vol: Volume, spacing: tuple[float, float, float], *, order: int) -> Volume:
    """Resample to ``spacing`` mm along the volume's own axes (order 1 = linear, 0 = nearest).

    The voxel centre (0, 0, 0) keeps its world position and the axis directions are unchanged,
    so every world point keeps its coordinates; the extent is covered to the last old voxel.
    """
    from scipy import ndimage

    old = np.asarray(vol.spacing)
    new = np.asarray(spacing, dtype=np.float64)
    scale = new / old
    shape = tuple(int(np.floor((n - 1) / s + 1e-6)) + 1 for n, s in zip(vol.voxels.shape, scale, strict=True))
    src = vol.voxels.astype(np.float32) if order > 0 else vol.voxels
    out = ndimage.affine_transform(src, scale, offset=0.0, output_shape=shape, order=order, mode="nearest")
    if order > 0 and np.issubdtype(vol.voxels.dtype, np.integer):
        out = np.clip(np.rint(out), INT16.min, INT16.max).astype(np.int16)
    affine = vol.affine.copy()
    affine[:3, :3] = vol.affine[:3, :3] * scale[None, :]
    return Volume(out, affine, {**vol.meta, "resampled_from_spacing": old.tolist()})


def compact_image(voxels: np.ndarray, where: str) -> np.ndarray:
    """int16 when every value is an integer inside the int16 range, float32 otherwise.

    Raises ``NonFiniteError`` on NaN or infinite voxels.
    """
    v = np.asarray(voxels)
    if v.dtype.kind in "iub":
        lo, hi = (int(v.min()), int(v.max())) if v.size else (0, 0)
        return v.astype(np.int16) if lo >= INT16.min and hi <= INT16.max else v.astype(np.float32)
    if v.dtype.kind != "f":
        raise NonFiniteError(f"{where}: voxel dtype {v.dtype} is not numeric; give a scalar image")
    finite = np.isfinite(v)
    if not finite.all():
        bad = int(v.size - finite.sum())
        raise NonFiniteError(f"{where}: {bad} NaN or infinite voxel(s); fix or mask them in the source")
    if v.size and np.all(v == np.rint(v)) and v.min() >= INT16.min and v.max() <= INT16.max:
        return v.astype(np.int16)
    return v.astype(np.float32)


def compact_mask(voxels: np.ndarray, where: str) -> np.ndarray:
    """uint8 label map (labels above 255 collapse to 1: non-zero = tumour)."""
    v = np.asarray(voxels)
    if v.dtype.kind == "f" and not np.isfinite(v).all():
        raise NonFiniteError(f"{where}: mask has NaN or infinite voxels")
    if v.size and v.min() >= 0 and v.max() <= 255 and (v.dtype.kind in "iub" or np.all(v == np.rint(v))):
        return v.astype(np.uint8)
    return (v != 0).astype(np.uint8)


def bbox(mask: np.ndarray) -> list[int]:
    """Half-open voxel box ``[x0, y0, z0, x1, y1, z1]`` of the non-zero voxels."""
    nz = [np.flatnonzero(np.any(mask, axis=tuple(b for b in range(3) if b != a))) for a in range(3)]
    return [int(n[0]) for n in nz] + [int(n[-1]) + 1 for n in nz]


def bbox_world(box: list[int], affine: np.ndarray) -> list[float]:
    """World extent (RAS mm) of the voxel-centre corners of a half-open voxel box."""
    lo, hi = np.asarray(box[:3], float), np.asarray(box[3:], float) - 1
    corners = np.array([[c[0], c[1], c[2], 1.0] for c in np.array(np.meshgrid(*zip(lo, hi, strict=True)))
                        .reshape(3, -1).T])
    w = (affine @ corners.T)[:3]
    return [float(x) for x in w.min(axis=1)] + [float(x) for x in w.max(axis=1)]
