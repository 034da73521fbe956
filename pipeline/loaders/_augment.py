"""Training augmentations as DALI operators, and their recorded settings.

Two families: geometry and a small intensity jitter (on by default), and *scanner variation* (off by default
until the validity benchmark decides; each knob 0 adds no operator, so the graph and its random stream are
unchanged): a smooth multiplicative bias field, gamma, anisotropic blur and Gaussian noise, the differences
between scanners and protocols that per-image standardisation does not remove.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class AugmentConfig:
    """Random flips of each axis, a rotation in the axial (X-Y) plane, per-axis scaling, and
    per-channel intensity jitter ``x * U(1-j, 1+j) + U(-j, j)`` (in normalised units).

    Bounds are small so the tumour (the central 1 / (1 + 2 * margin) of the box) stays in the
    crop: a corner at 1/3 of the half-width moves at most to 1/3 * (cos + sin) / (1 - s) < 1/2.

    Scanner variation, applied in this order after resampling (0 = off):

    - ``bias_field``: a smooth multiplicative field ``exp(a * z)`` on the *raw* intensities (shared by the
      phases, as one coil's sensitivity is), ``z`` a standard-normal 3 x 3 x 3 lattice upsampled trilinearly
      to the grid, ``a ~ U(0, bias_field)``. In normalised units (``x = (raw - m) / s``, the image's own
      reference location and scale) that is ``(x + m / s) * exp(a z) - m / s``, exact for every normalisation.
    - ``gamma``: per channel ``lo + (hi - lo) * ((x - lo) / (hi - lo)) ** g`` with ``lo``, ``hi`` the
      channel's min and max in the ROI and ``log g ~ U(-gamma, gamma)`` (as nnU-Net's gamma transform):
      a monotone contrast change that keeps the order of intensities.
    - ``blur_sigma``: Gaussian blur with an independent ``sigma ~ U(0, blur_sigma)`` grid voxels per axis
      (anisotropic: thicker slices or a softer reconstruction kernel).
    - ``noise``: additive Gaussian noise, its sd ``~ U(0, noise)`` in units of the image's reference scale.
    """

    flip: bool = True
    max_rotation_deg: float = 10.0
    max_scale: float = 0.1
    intensity_jitter: float = 0.1
    bias_field: float = 0.0
    gamma: float = 0.0
    blur_sigma: float = 0.0
    noise: float = 0.0

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


def scanner(fn, x, mean, inv, aug: AugmentConfig, grid, gpu: bool):
    """Scanner variation (see :class:`AugmentConfig`) of the resampled ``x`` (DHWC); ``mean`` and ``inv``
    (= 1 / s) are the pipeline's normalisation inputs. Adds no operator for a knob at 0."""
    import nvidia.dali.math as dmath

    def dev(v):
        return v.gpu() if gpu else v

    if aug.bias_field > 0:
        z = fn.reshape(fn.random.normal(shape=[3, 3, 3, 1]), layout="DHWC")
        z = fn.resize(z, size=list(grid), antialias=False, interp_type=_linear())
        a = fn.random.uniform(range=[0.0, aug.bias_field])
        loc = mean * inv  # the raw intensity 0 in normalised units
        x = (x + loc) * dev(dmath.exp(z * a)) - loc
    if aug.gamma > 0:
        g = dev(dmath.exp(fn.random.uniform(range=[-aug.gamma, aug.gamma])))
        lo = fn.reductions.min(x, axis_names="DHW", keep_dims=True)
        span = dmath.max(fn.reductions.max(x, axis_names="DHW", keep_dims=True) - lo, 1e-6)
        x = lo + span * dmath.pow(dmath.clamp((x - lo) / span, 0.0, 1.0), g)
    if aug.blur_sigma > 0:
        sigma = fn.random.uniform(range=[1e-3, aug.blur_sigma], shape=[3])
        x = fn.gaussian_blur(x, sigma=sigma, window_size=2 * math.ceil(3 * aug.blur_sigma) + 1)
    if aug.noise > 0:
        x = fn.noise.gaussian(x, stddev=fn.random.uniform(range=[0.0, aug.noise]))
    return x


def _linear():
    from nvidia.dali import types

    return types.INTERP_LINEAR
