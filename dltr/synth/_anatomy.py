"""Rendering one study: an abdomen-like phantom sampled on a center's voxel grid, in world RAS mm.

The phantom is defined analytically in world coordinates (body ellipse, liver ellipsoid, spine, aorta,
inferior vena cava, portal vein, one to three tumours with irregular margins, a necrotic core and a capsule),
so every center's grid, whatever its spacing and axis order, sees the same anatomy. Per phase the tissues take
the intensities of ``_PHASES`` modulated by the patient's traits; then a smooth multiplicative bias field, a
tumour texture (heterogeneity), Rician noise and the center's intensity scale, offset and file rescale.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np

from ._config import CenterSpec, SynthConfig

__all__ = ["Study", "center_affine", "render_study"]

_DIRS = {"R": (1, 0, 0), "L": (-1, 0, 0), "A": (0, 1, 0), "P": (0, -1, 0), "S": (0, 0, 1), "I": (0, 0, -1)}
# tissue -> phase -> base signal; tumour values are set from the traits in _tumour_signal
_PHASES = {
    "t2": {"air": 0, "body": 320, "liver": 220, "spine": 180, "artery": 120, "vein": 120, "necrosis": 650},
    "arterial": {"air": 0, "body": 260, "liver": 280, "spine": 220, "artery": 1000, "vein": 350, "necrosis": 150},
    "portal": {"air": 0, "body": 250, "liver": 480, "spine": 220, "artery": 600, "vein": 650, "necrosis": 160},
    "delayed": {"air": 0, "body": 240, "liver": 440, "spine": 220, "artery": 420, "vein": 480, "necrosis": 170},
}
_REF_SIGNAL = 480.0
_BANK = 1 << 21  # liver, portal phase: the noise level's reference


@dataclass(frozen=True)
class Study:
    """One patient's rendered images: what the files must decode to."""

    patient_id: str
    center: str
    affine: np.ndarray  # 4x4, voxel (i, j, k) -> world RAS mm
    stored: dict  # phase -> integer array as written to the file (X, Y, Z)
    values: dict  # phase -> float32 array after the file's rescale (stored * slope + inter)
    mask: np.ndarray  # uint8 (X, Y, Z): 0 background, t = tumour number t (1-based)
    tumours: tuple  # per tumour: dict(center_world, radius_mm, centroid_world, n_voxels)


def center_affine(spec: CenterSpec, shape: tuple[int, int, int], shift=(0.0, 0.0, 0.0)) -> np.ndarray:
    """Voxel -> RAS affine of a center's grid, the field of view centred on ``shift`` (world mm)."""
    rot = np.array([_DIRS[c] for c in spec.orientation.upper()], float).T * np.asarray(spec.spacing, float)
    a = np.eye(4)
    a[:3, :3] = rot
    a[:3, 3] = np.asarray(shift, float) - rot @ ((np.asarray(shape, float) - 1) / 2)
    return a


def _world_grid(affine: np.ndarray, shape) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    i, j, k = (np.arange(n, dtype=np.float32) for n in shape)
    a = affine.astype(np.float32)
    xyz = [a[r, 0] * i[:, None, None] + a[r, 1] * j[None, :, None] + a[r, 2] * k[None, None, :] + a[r, 3]
           for r in range(3)]
    return xyz[0], xyz[1], xyz[2]


def _place_tumours(p, liver_c, liver_r, rng) -> list[dict]:
    radii = [p["diameter_mm"] / 2] + [max(10.0, p["diameter_mm"] / 2 * rng.uniform(0.4, 0.75))
                                      for _ in range(int(p["tumour_count"]) - 1)]
    out: list[dict] = []
    for r in radii:
        for _ in range(30):
            u = rng.standard_normal(3)
            u = u / np.linalg.norm(u) * rng.uniform(0, 1) ** (1 / 3)
            c = liver_c + u * np.maximum(liver_r - r, 5.0) * 0.8
            if all(np.linalg.norm(c - t["center_world"]) > r + t["radius_mm"] for t in out):
                break
        out.append({"center_world": c, "radius_mm": float(r),
                    "harm": rng.uniform(-1, 1, 4), "phase": rng.uniform(0, 2 * np.pi, 4)})
    return out


def _tumour_signal(phase: str, p) -> tuple[float, float]:
    """(tumour, capsule) signal of a phase from the traits."""
    h, w, cap, het = p["hyper"], p["washout"], p["capsule"], p["heterogeneity"]
    return {"t2": (330 + 60 * het, 200.0), "arterial": (280 + 520 * h, 280.0),
            "portal": (480 - 160 * w + 60 * h, 480 + 120 * cap),
            "delayed": (440 - 230 * w, 440 + 250 * cap)}.get(phase, (480 - 160 * w, 480 + 120 * cap))


@functools.lru_cache(maxsize=2)
def _noise_bank(seed: int) -> np.ndarray:
    """A seeded bank of standard normals; each noise field is a random window of it (drawing fresh
    normals per voxel dominated the rendering time)."""
    return np.random.default_rng([seed, 9]).standard_normal(_BANK, dtype=np.float32)


def _noise(seed: int, rng: np.random.Generator, shape) -> np.ndarray:
    n = int(np.prod(shape))
    bank = _noise_bank(seed)
    start = int(rng.integers(0, bank.size - n))
    return bank[start:start + n].reshape(shape)


def _box(inv: np.ndarray, center, half_mm: float, shape) -> tuple[slice, slice, slice]:
    """Voxel slices of the axis-aligned world box ``center +- half_mm`` (clipped to the grid, never empty)."""
    corners = np.array([[center[0] + sx * half_mm, center[1] + sy * half_mm, center[2] + sz * half_mm, 1.0]
                        for sx in (-1, 1) for sy in (-1, 1) for sz in (-1, 1)])
    ijk = (inv @ corners.T)[:3]
    lo = np.clip(np.floor(ijk.min(1)).astype(int), 0, np.asarray(shape) - 1)
    hi = np.clip(np.ceil(ijk.max(1)).astype(int) + 1, lo + 1, np.asarray(shape))
    return tuple(slice(int(a), int(b)) for a, b in zip(lo, hi, strict=True))


def render_study(cfg: SynthConfig, p, ci: int, pi: int) -> Study:
    """Render patient ``p`` (a row of ``draw_patients``), the ``pi``-th of center ``ci``; deterministic."""
    spec = cfg.centers[ci]
    shape = cfg.shapes[ci]
    rng = np.random.default_rng([cfg.seed, 3, ci, pi])
    affine = center_affine(spec, shape, shift=rng.uniform(-6, 6, 3))
    x, y, z = _world_grid(affine, shape)
    body = (x / float(rng.uniform(125, 145))) ** 2 + (y / float(rng.uniform(95, 115))) ** 2 <= 1
    liver_c = np.array([55, 10, 0]) + rng.uniform(-5, 5, 3)
    liver_r = np.array([72, 62, 68]) * rng.uniform(0.92, 1.08, 3)
    lc, lr = [float(v) for v in liver_c], [float(v) for v in liver_r]
    liver = body & (((x - lc[0]) / lr[0]) ** 2 + ((y - lc[1]) / lr[1]) ** 2 + ((z - lc[2]) / lr[2]) ** 2 <= 1)
    spine = (x ** 2 + (y + 75) ** 2) <= 15 ** 2
    artery = ((x + 15) ** 2 + (y + 50) ** 2) <= 10 ** 2
    vein = (((x - 25) ** 2 + (y + 45) ** 2) <= 9 ** 2) | (liver & (((x - 45 - 0.2 * z) ** 2 + (y + 5) ** 2)
                                                                   <= 6 ** 2))
    tumours = _place_tumours(p, liver_c, liver_r, rng)
    mask = np.zeros(shape, np.uint8)
    necrosis = np.zeros(shape, bool)
    capsule = np.zeros(shape, bool)
    tex = np.zeros(shape, np.float32)
    inv = np.linalg.inv(affine)
    for t, tm in enumerate(tumours, start=1):
        box = _box(inv, tm["center_world"], tm["radius_mm"] * (1 + p["irregularity"]) + 5.0, shape)
        c = [float(v) for v in tm["center_world"]]
        dx, dy, dz = x[box] - c[0], y[box] - c[1], z[box] - c[2]
        rho = np.sqrt(dx * dx + dy * dy + dz * dz) + np.float32(1e-6)
        th, ph = np.arctan2(dy, dx), np.arccos(np.clip(dz / rho, -1, 1))
        a, f = [float(v) for v in tm["harm"]], [float(v) for v in tm["phase"]]
        wobble = (a[0] * np.sin(3 * th + f[0]) + a[1] * np.sin(2 * ph + f[1])
                  + a[2] * np.sin(5 * th + 2 * ph + f[2]) + a[3] * np.sin(4 * th + f[3])) / 2
        q = rho / (float(tm["radius_mm"]) * (1 + float(p["irregularity"]) * wobble))
        inside = q <= 1
        if not inside.any():
            inside[tuple(np.asarray(inside.shape) // 2)] = True
        mask[box][inside] = t
        necrosis[box] |= q <= float(p["necrosis"]) ** (1 / 3)
        capsule[box] |= (q > 1) & (q <= 1 + 3.5 / tm["radius_mm"])
        waves = rng.standard_normal((4, 3)) * (2 * np.pi / 14.0)
        tex[box] += sum(np.cos(float(k[0]) * dx + float(k[1]) * dy + float(k[2]) * dz + float(u))
                        for k, u in zip(waves, rng.uniform(0, 2 * np.pi, 4), strict=True)) / np.float32(np.sqrt(2))
    necrosis &= mask > 0
    capsule &= liver & (mask == 0)
    for tm, t in zip(tumours, range(1, len(tumours) + 1), strict=True):
        vox = np.argwhere(mask == t)
        tm["n_voxels"] = int(len(vox))
        tm["centroid_world"] = (affine[:3, :3] @ vox.mean(0) + affine[:3, 3]) if len(vox) else np.full(3, np.nan)
    g = [np.linspace(-1, 1, s, dtype=np.float32) for s in shape]
    cb = rng.standard_normal(5) / 2
    bias = np.exp(spec.bias * (cb[0] * g[0][:, None, None] + cb[1] * g[1][None, :, None]
                               + cb[2] * g[0][:, None, None] ** 2 + cb[3] * g[0][:, None, None] * g[1][None, :, None]
                               + cb[4] * g[2][None, None, :])).astype(np.float32)
    stored, values = {}, {}
    lo, hi = (0, 65535) if spec.fmt == "dicom" else (-32768, 32767)
    for phase in cfg.phases:
        tab = _PHASES.get(phase, _PHASES["portal"])
        s = np.full(shape, tab["air"], np.float32)
        for tissue, m in (("body", body), ("liver", liver), ("spine", spine), ("artery", artery), ("vein", vein)):
            s[m] = tab[tissue]
        tum, cap = _tumour_signal(phase, p)
        s[capsule] = cap
        s[mask > 0] = tum * (1 + 0.3 * float(p["heterogeneity"]) * tex[mask > 0])
        s[necrosis] = tab["necrosis"]
        s *= bias
        sigma = np.float32(spec.noise * _REF_SIGNAL)
        n1, n2 = (_noise(cfg.seed, rng, shape) * sigma for _ in range(2))
        mag = np.sqrt((s + n1) ** 2 + n2 ** 2) * np.float32(spec.scale) + np.float32(spec.offset)
        st = np.clip(np.round((mag - np.float32(spec.inter)) / np.float32(spec.slope)), lo, hi).astype(np.uint16 if lo == 0 else np.int16)
        stored[phase] = st
        values[phase] = (st.astype(np.float32) * np.float32(spec.slope) + np.float32(spec.inter))
    return Study(str(p["patient_id"]), spec.name, affine, stored, values, mask, tuple(tumours))
