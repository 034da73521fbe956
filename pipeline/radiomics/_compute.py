"""pyradiomics on the store's canonical volumes: NumPy arrays + affine -> SimpleITK -> feature values.

The canonical frame is RAS+ with array axes along +x, +y, +z (docs/architecture.md); SimpleITK's
physical space is LPS, so the affine is negated on x and y to give ITK its origin and direction. The
whole phase array is passed (pyradiomics' normalisation uses the whole image, its resampling and
filters crop to the mask's box plus ``padDistance`` themselves), with the tumour mask as label
``setting.label`` (every non-zero mask voxel is tumour).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import numpy as np

from pipeline.radiomics._settings import RadiomicsSettings

FEATURE_NAME_PARTS = ("phase", "image_type", "feature")


def sitk_image(array: np.ndarray, affine) -> Any:
    """A SimpleITK image of an (X, Y, Z) canonical array with the affine's spacing, origin and direction."""
    import SimpleITK as sitk

    img = sitk.GetImageFromArray(np.ascontiguousarray(np.asarray(array).transpose(2, 1, 0)))
    lps = np.diag([-1.0, -1.0, 1.0, 1.0]) @ np.asarray(affine, dtype=np.float64)
    spacing = np.linalg.norm(lps[:3, :3], axis=0)
    img.SetSpacing(spacing.tolist())
    img.SetOrigin(lps[:3, 3].tolist())
    img.SetDirection((lps[:3, :3] / spacing).ravel().tolist())
    return img


def extractor(settings: RadiomicsSettings):
    import radiomics
    from radiomics import featureextractor

    radiomics.setVerbosity(logging.ERROR)
    return featureextractor.RadiomicsFeatureExtractor(settings.params())


def split_name(key: str) -> tuple[str, str]:
    """pyradiomics' ``original_glcm_Contrast`` -> (``original``, ``glcm_Contrast``)."""
    image_type, _, feature = key.partition("_")
    return image_type, feature


def execute(ext, image, mask) -> dict[str, float]:
    """Feature values (diagnostics dropped), in pyradiomics' order."""
    label = int(ext.settings.get("label", 1))
    out = ext.execute(image, mask, label=label)
    return {k: float(v) for k, v in out.items() if not k.startswith("diagnostics_")}


def probe_names(settings: RadiomicsSettings) -> list[str]:
    """The pyradiomics feature keys the recipe yields, from one run on a fixed 16^3 probe volume."""
    rng = np.random.default_rng(0)
    img = rng.normal(100.0, 20.0, size=(16, 16, 16)).astype(np.float32)
    mask = np.zeros((16, 16, 16), np.uint8)
    mask[4:12, 5:11, 4:12] = 1
    mask[6:10, 3:13, 6:10] = 1
    eye = np.eye(4)
    ext = extractor(settings)
    return list(execute(ext, sitk_image(img, eye), sitk_image(mask * int(ext.settings.get("label", 1)), eye)))


def dimension_names(phases: Sequence[str], names: Sequence[str]) -> list[str]:
    """One ``phase/image_type/feature`` name per embedding dimension (phase-major)."""
    return [f"{p}/{'/'.join(split_name(n))}" for p in phases for n in names]


def patient_vector(ext, arrays: dict[str, np.ndarray], mask: np.ndarray, affine, phases: Sequence[str],
                   names: Sequence[str]) -> np.ndarray:
    """The (len(phases) * len(names),) float64 vector of one patient; raises ValueError naming a
    non-finite or missing feature."""
    label = int(ext.settings.get("label", 1))
    m = sitk_image((np.asarray(mask) > 0).astype(np.uint8) * label, affine)
    out = np.empty(len(phases) * len(names), np.float64)
    for i, phase in enumerate(phases):
        vals = execute(ext, sitk_image(arrays[phase], affine), m)
        missing = [n for n in names if n not in vals]
        if missing:
            raise ValueError(f"phase {phase}: pyradiomics gave no value for {missing[:3]}")
        row = np.array([vals[n] for n in names], np.float64)
        bad = np.flatnonzero(~np.isfinite(row))
        if bad.size:
            raise ValueError(f"phase {phase}: feature {names[bad[0]]} is {row[bad[0]]} "
                             f"({bad.size} non-finite); the tumour mask may be too small or flat for it")
        out[i * len(names):(i + 1) * len(names)] = row
    return out
