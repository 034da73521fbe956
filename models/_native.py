"""Tumour descriptors measured on the ingested volumes at one declared physical resolution ("native" descriptors).

The encoder's 32 x 32 x 16 grid is laid over each tumour's own box, so it measures relative intensities well
and texture poorly (BENCHMARKS.md, session 10: heterogeneity R² 0.33 on the grid). At the volumes' own voxels
texture is measured well, but it moves with the voxel size: on the synthetic cohort, descriptors at each site's
own spacing lost 0.20 AUC on the center with the coarsest voxels. So every image is first brought to one
resolution, declared, coarser than any site's (``spacing_mm``): a Gaussian of FWHM ``sqrt(target² - own²)`` per
axis (none where the image is already as coarse) and trilinear resampling to ``spacing_mm`` (the mask alike, then
thresholded at one half; the field of view kept, so the voxel size is ``spacing_mm`` to within one voxel's
rounding of the field of view), the practice for
multi-center radiomics (IBSI: resample to one voxel size; the blur makes the effective resolutions equal, not
only the grids). Per image and label-free: nothing is fitted on any row, and a patient from a new center is
measured as the training patients were. An image coarser than the resolution on some axis (beyond
``COARSER_TOLERANCE``) cannot be brought to it, and measured at its own voxels it would read unlike the others
(BENCHMARKS.md, session 10: measured at each site's own voxels, the coarsest center lost 0.20 AUC), so
``native_descriptors`` refuses it, naming the patients and the fix, rather than score it silently wrong.

Per phase, on ``r = x / m - 1`` with ``m`` the median of the liver 0-10 mm outside the tumour (the relative
signal of ``RoiConfig.normalisation="ratio"``): the tumour's mean, standard deviation and entropy (40 bins on
[-1, 3]), the core (deeper than 4 mm) and rim means, the near (0-4 mm outside) and far (4-10 mm) peritumoral
means (the 4 and 10 mm widened to one and two of the coarsest voxels, ``band_mm``), and the fine texture (mean absolute difference from the 3 x 3 x 3 mean, inside the tumour less its
outer voxel layer); then the tumour's log volume (mm³) and sphericity (face-counted surface). Empty regions fall
back to the tumour's mean; a liver median <= 0 falls back to its interquartile range (and to 1).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from dltr.core.exceptions import ModelError

__all__ = ["COARSER_TOLERANCE", "NATIVE_FLOOR_MM", "NATIVE_PER_PHASE", "NATIVE_SETS", "band_mm", "in_native_set",
           "measure_native", "native_descriptor_names", "native_descriptors", "native_resolution"]

NATIVE_PER_PHASE = ("mean", "sd", "entropy", "core", "rim", "near", "far", "fine")
#: named subsets of the native descriptors a fusion head may read (``HeadsConfig.native_set``), chosen without
#: labels: "all"; "texture", each phase's heterogeneity (sd, entropy, fine texture), what the encoder's grid
#: measures poorly (BENCHMARKS.md, session 10: heterogeneity R² 0.33 on the grid), the relative intensities
#: being measured well there already
NATIVE_SETS = {"all": NATIVE_PER_PHASE + ("log_volume", "sphericity"), "texture": ("sd", "entropy", "fine")}
_FWHM_PER_SIGMA = 2.0 * np.sqrt(2.0 * np.log(2.0))
#: relative slack on a voxel size before an image counts as coarser than the declared resolution (header rounding)
COARSER_TOLERANCE = 0.01
#: the resolution (mm) the native descriptors are measured at when none is declared: coarser than clinical liver
#: MRI's usual 1-2 mm in-plane and 2-6 mm slices; raised per axis to the coarsest stored image (``native_resolution``)
NATIVE_FLOOR_MM = (4.5, 4.5, 7.0)


def native_descriptor_names(phases: Sequence[str], native_set: str = "all") -> list[str]:
    """Names of ``measure_native``'s values for these phases, in order (``native_set``: those of that subset,
    ``NATIVE_SETS``)."""
    names = [f"native.{p}.{d}" for p in phases for d in NATIVE_PER_PHASE] + ["native.log_volume", "native.sphericity"]
    return [n for n in names if in_native_set(n, native_set)]


def in_native_set(name: str, native_set: str) -> bool:
    """Whether native descriptor ``name`` (``native.<phase>.<descriptor>``, with or without a prefix) is in
    subset ``native_set`` (``NATIVE_SETS``)."""
    return name.rsplit(".", 1)[1] in NATIVE_SETS[native_set]


def band_mm(spacing_mm: Sequence[float]) -> tuple[float, float]:
    """(width of the rim and near-liver bands, reach of the liver reference), mm: 4 and 10 mm, widened to one and
    two of the coarsest voxels at ``spacing_mm`` so that every band holds voxels."""
    band = max(4.0, float(np.max(spacing_mm)))
    return band, max(10.0, 2.0 * band)


def _grid(shape: Sequence[int], spacing: np.ndarray, target: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(output shape, its exact voxel size) of a field of view of ``shape`` voxels of ``spacing`` resampled to
    about ``target``: the whole field of view is kept, so the voxel size is ``shape * spacing / output shape``."""
    extent = np.asarray(shape, float) * spacing
    out = np.maximum(1, np.round(extent / target)).astype(int)
    return out, extent / out


def _to_resolution(x: np.ndarray, spacing: np.ndarray, target: np.ndarray, blur: bool) -> np.ndarray:
    """Trilinear resampling to about ``target`` (``_grid``), with ``blur`` first a Gaussian to the target's resolution."""
    from scipy import ndimage as ndi

    if blur:
        sigma = np.sqrt(np.maximum(target ** 2 - spacing ** 2, 0.0)) / _FWHM_PER_SIGMA / spacing
        x = ndi.gaussian_filter(x, sigma, mode="nearest") if (sigma > 0).any() else x
    out, _ = _grid(x.shape, spacing, target)
    # grid_mode: voxel edges, not centres, are aligned, so that the physical field of view is kept
    return ndi.zoom(x, out / np.asarray(x.shape, float), order=1, mode="nearest", grid_mode=True)


def measure_native(images: Sequence[np.ndarray], mask: np.ndarray, spacing: Sequence[float],
                   spacing_mm: Sequence[float]) -> np.ndarray:
    """(8 P + 2,) float64 descriptors of one patient: ``images`` (one array per phase, on one grid) and ``mask``
    (non-zero = tumour) with voxel size ``spacing`` (mm), measured at ``spacing_mm``."""
    from scipy import ndimage as ndi

    sp, target = np.asarray(spacing, float), np.asarray(spacing_mm, float)
    voxel = _grid(np.shape(mask), sp, target)[1]   # the exact voxel size of the resampled grid
    # the mask goes through the images' blur too, then a threshold at one half: its border then falls where the
    # blurred images' contrast does, at every source resolution alike. A lesion smaller than about two voxels of the
    # target (a 10 mm sphere at 4.5 x 4.5 x 7 mm) reaches one half nowhere: it keeps the voxels at or above half of
    # its own peak, so that a small tumour is measured where it is rather than refused
    if not np.any(mask):
        raise ValueError(f"the tumour mask is empty at {tuple(sp)} mm")
    blurred = _to_resolution(np.asarray(mask, np.float32), sp, target, blur=True)
    m = blurred > 0.5
    if not m.any() and blurred.max() > 0:
        m = blurred >= 0.5 * float(blurred.max())
    if not m.any():
        raise ValueError(f"the tumour mask is empty at {tuple(voxel)} mm")
    outside = ndi.distance_transform_edt(~m, sampling=voxel)
    inside = ndi.distance_transform_edt(m, sampling=voxel)
    band, reach = band_mm(voxel)
    liver = (outside > 0) & (outside <= reach)
    near, far = (outside > 0) & (outside <= band), (outside > band) & (outside <= reach)
    core, rim = inside > band, m & (inside <= band)
    inner = inside > voxel.min() * 1.01
    out: list[float] = []
    for img in images:
        x = _to_resolution(np.asarray(img, np.float64), sp, target, blur=True)
        ref = float(np.median(x[liver])) if liver.any() else float(np.median(x[~m]))
        if not ref > 0:
            q75, q25 = np.percentile(x[liver] if liver.any() else x[~m], [75, 25])
            ref = float(q75 - q25) if q75 > q25 else 1.0
        r = x / ref - 1.0
        t = r[m]
        hist, _ = np.histogram(np.clip(t, -1.0, 3.0), bins=40, range=(-1.0, 3.0))
        q = hist[hist > 0] / hist.sum()
        fine = np.abs(r - ndi.uniform_filter(r, 3, mode="nearest"))

        def mean_of(region: np.ndarray, r=r, t=t) -> float:
            return float(r[region].mean()) if region.any() else float(t.mean())

        out += [float(t.mean()), float(t.std()), float(-(q * np.log(q)).sum()), mean_of(core), mean_of(rim),
                mean_of(near), mean_of(far), float(fine[inner].mean()) if inner.any() else float(fine[m].mean())]
    faces = np.pad(m, 1).astype(np.int8)
    area = sum(float(np.abs(np.diff(faces, axis=a)).sum()) * float(np.prod(np.delete(voxel, a))) for a in range(3))
    volume = float(m.sum()) * float(np.prod(voxel))
    out += [float(np.log(volume)), float(np.pi ** (1 / 3) * (6 * volume) ** (2 / 3) / area)]
    return np.asarray(out, np.float64)


def _stored_spacings(store_root: str | Path, patient_ids: Sequence[str]) -> np.ndarray:
    """(N, 3) voxel sizes (mm) of these patients' ingested volumes (their attributes; no image is read)."""
    import zarr

    from dltr.core.layout import StoreLayout, VolumeAttrs

    layout = StoreLayout.of(store_root)
    root = zarr.open_group(str(layout.volumes), mode="r")
    return np.asarray([VolumeAttrs.of(root[str(p)].attrs, layout.volume_group(str(p))).spacing for p in patient_ids],
                      np.float64).reshape(len(patient_ids), 3)


def native_resolution(store_root: str | Path, patient_ids: Sequence[str],
                      declared: Sequence[float] | None = None) -> tuple[tuple[float, float, float], str]:
    """(resolution in mm, how it was set) for measuring these patients' native descriptors. A ``declared`` resolution
    is kept as given (``native_descriptors`` then refuses an image coarser than it). Without one: ``NATIVE_FLOOR_MM``,
    raised on each axis to the coarsest of these patients' voxels, so that every stored image can be brought to it;
    the voxel sizes are acquisition metadata (no image content, no label), but they include the evaluation centers',
    so the text says so when the floor was raised, and the head's lineage and the report carry it; a patient scored
    later is measured alike or refused."""
    if declared is not None:
        return tuple(float(v) for v in declared), "declared"
    floor = np.asarray(NATIVE_FLOOR_MM, np.float64)
    coarsest = _stored_spacings(store_root, patient_ids).max(0) if len(patient_ids) else floor
    used = np.maximum(floor, np.round(coarsest, 3))
    if (used <= floor).all():
        return tuple(float(v) for v in floor), f"default {' x '.join(f'{v:g}' for v in floor)} mm"
    return (tuple(float(v) for v in used),
            f"default {' x '.join(f'{v:g}' for v in floor)} mm raised to the coarsest stored voxel "
            f"({' x '.join(f'{v:g}' for v in coarsest)} mm) of the {len(patient_ids)} patients measured: acquisition "
            "metadata of every center, evaluation centers included")


def native_descriptors(store_root: str | Path, patient_ids: Sequence[str], phases: Sequence[str],
                       spacing_mm: Sequence[float]) -> np.ndarray:
    """(N, 8 P + 2) ``measure_native`` of ``patient_ids`` on their ingested volumes (the tumour's box plus the
    liver reference's reach and one coarse voxel), at ``spacing_mm``."""
    import zarr

    from dltr.core.layout import StoreLayout, VolumeAttrs

    layout = StoreLayout.of(store_root)
    root = zarr.open_group(str(layout.volumes), mode="r")
    target = np.asarray(spacing_mm, float)
    rows, coarser = [], []
    for pid in patient_ids:
        g = root[str(pid)]
        attrs = VolumeAttrs.of(g.attrs, layout.volume_group(str(pid)))
        sp = np.asarray(attrs.spacing, float)
        if (sp > target * (1.0 + COARSER_TOLERANCE)).any():
            coarser.append(f"{pid} ({' x '.join(f'{v:g}' for v in sp)} mm)")
            continue
        box, shape = attrs.bbox_vox, g["mask"].shape
        pad = np.ceil((band_mm(spacing_mm)[1] + float(np.max(spacing_mm))) / sp).astype(int)
        crop = tuple(slice(max(0, int(box[i]) - pad[i]), min(shape[i], int(box[i + 3]) + pad[i])) for i in range(3))
        try:
            rows.append(measure_native([g[p][crop] for p in phases], g["mask"][crop], sp, spacing_mm))
        except ValueError as e:
            raise ModelError(f"{layout.volume_group(str(pid))}: patient {pid}: {e}; its native descriptors cannot "
                             "be measured: re-run `dltr ingest` with a mask that marks the tumour") from None
    if coarser:
        raise ModelError(f"{layout.volumes}: {len(coarser)} patient(s) acquired coarser than the native descriptors' "
                         f"resolution {' x '.join(f'{v:g}' for v in target)} mm, first {', '.join(coarser[:3])}: "
                         "an image must be at least as fine as that resolution to be measured like the others; train "
                         "the heads at one at least as coarse (`dltr train-heads --native-spacing X,Y,Z`, "
                         "HeadsConfig.native_spacing_mm; undeclared, it rises to the stored images' coarsest voxel) "
                         "or without these descriptors (`--fusion descriptors`)")
    return np.asarray(rows, np.float64).reshape(len(rows), len(native_descriptor_names(phases)))
