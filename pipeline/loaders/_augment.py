"""Training augmentations as DALI operators, and their recorded settings."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class AugmentConfig:
    """Random flips of each axis, a rotation in the axial (X-Y) plane, per-axis scaling, and
    per-channel intensity jitter ``x * U(1-j, 1+j) + U(-j, j)`` (in normalised units).

    Bounds are small so the tumour (the central 1 / (1 + 2 * margin) of the box) stays in the
    crop: a corner at 1/3 of the half-width moves at most to 1/3 * (cos + sin) / (1 - s) < 1/2.
    """

    flip: bool = True
    max_rotation_deg: float = 10.0
    max_scale: float = 0.1
    intensity_jitter: float = 0.1

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> AugmentConfig:
        return cls(**d)


def augment_matrix(fn, base, grid, aug: AugmentConfig):
    """dst->src matrix: the augmentation about the grid centre, then the ROI box matrix."""
    center = [grid[2] / 2.0, grid[1] / 2.0, grid[0] / 2.0]  # DALI (x, y, z) = our (Z, Y, X)
    parts = []
    if aug.max_scale > 0:
        s = fn.random.uniform(range=[1.0 - aug.max_scale, 1.0 + aug.max_scale], shape=[3])
        parts.append(fn.transforms.scale(scale=s, center=center))
    if aug.max_rotation_deg > 0:
        a = fn.random.uniform(range=[-aug.max_rotation_deg, aug.max_rotation_deg])
        parts.append(fn.transforms.rotation(angle=a, axis=[1.0, 0.0, 0.0], center=center))
    if not parts:
        return base
    return fn.transforms.combine(*parts, base)


def flip_args(fn, aug: AugmentConfig) -> dict[str, Any]:
    if not aug.flip:
        return {}
    return {k: fn.random.coin_flip(probability=0.5) for k in ("horizontal", "vertical", "depthwise")}


def jitter(fn, x, n_channels: int, aug: AugmentConfig, gpu: bool):
    if aug.intensity_jitter <= 0:
        return x
    j = aug.intensity_jitter
    a = fn.random.uniform(range=[1.0 - j, 1.0 + j], shape=[n_channels])
    b = fn.random.uniform(range=[-j, j], shape=[n_channels])
    if gpu:
        a, b = a.gpu(), b.gpu()
    return x * a + b
