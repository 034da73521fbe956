"""Native descriptors (models.native_descriptors): tumour measurements on the volumes at one declared resolution."""

from __future__ import annotations

import numpy as np
import pytest

from models import measure_native, native_descriptor_names

TARGET = (4.5, 4.5, 7.0)


def _phantom(spacing, *, tumour=(180.0, 60.0), liver=(100.0, 120.0), radius=16.0, noise=0.0, seed=0):
    """Two phases of a uniform liver holding a sphere (radius mm) of uniform tumour, sampled at ``spacing``."""
    sp = np.asarray(spacing, float)
    n = np.ceil(80.0 / sp).astype(int)
    grid = np.meshgrid(*[(np.arange(k) - (k - 1) / 2) * s for k, s in zip(n, sp, strict=True)], indexing="ij")
    inside = np.sqrt(sum(g ** 2 for g in grid)) <= radius
    rng = np.random.default_rng(seed)
    images = [np.where(inside, t, v) * (1 + noise * rng.standard_normal(inside.shape)) for t, v in
              zip(tumour, liver, strict=True)]
    return images, inside.astype(np.uint8)


def _named(values, phases=("arterial", "portal")):
    return dict(zip(native_descriptor_names(phases), values, strict=True))


@pytest.mark.parametrize("spacing", [(1.5, 1.5, 3.0), (3.8, 3.8, 5.25), (4.2, 4.2, 7.0)])
def test_uniform_phantom_reads_its_ratios_volume_and_shape_at_every_acquisition(spacing):
    """A uniform tumour in a uniform liver: the tumour's core reads tumour / liver - 1, the far liver 0, the tumour
    is uniform inside (sd of the core region ~ 0 shows as core = ratio), and the volume and sphericity are the
    sphere's, whatever voxel size the phantom was acquired at."""
    images, mask = _phantom(spacing)
    d = _named(measure_native(images, mask, spacing, TARGET))
    assert d["native.arterial.core"] == pytest.approx(180 / 100 - 1, abs=2e-3)
    assert d["native.portal.core"] == pytest.approx(60 / 120 - 1, abs=2e-3)
    assert abs(d["native.arterial.far"]) < 5e-3 and abs(d["native.portal.far"]) < 5e-3  # the blur's tail only
    assert d["native.arterial.rim"] < d["native.arterial.mean"] < d["native.arterial.core"]  # partial border voxels
    assert d["native.arterial.far"] < d["native.arterial.near"] < d["native.arterial.rim"]
    assert d["native.log_volume"] == pytest.approx(np.log(4 / 3 * np.pi * 16.0 ** 3), abs=0.15)
    assert 0.5 < d["native.sphericity"] < 0.9   # face counting on 4.5 x 4.5 x 7 mm voxels: not 1, not a blob


def test_descriptors_do_not_move_with_the_acquisition_resolution_or_the_receiver_gain():
    """The same noisy phantom acquired at three voxel sizes (1.5 x 1.5 x 3 to 4.2 x 4.2 x 7 mm) gives the same
    intensity, band and shape descriptors within 0.07 (tumour contrasts +0.8 and -0.5; each image is blurred to
    the target's resolution before resampling), and scaling an image's intensities (the receiver's arbitrary
    gain) changes nothing. (The texture of white noise is not compared: its level per voxel falls with the voxel's
    volume by nature.)"""
    got = []
    for spacing in [(1.5, 1.5, 3.0), (3.8, 3.8, 5.25), (4.2, 4.2, 7.0)]:
        images, mask = _phantom(spacing, noise=0.15, seed=1)
        got.append(_named(measure_native(images, mask, spacing, TARGET)))
        scaled = _named(measure_native([3.7 * images[0], images[1]], mask, spacing, TARGET))
        assert scaled == pytest.approx(got[-1], rel=1e-9, abs=1e-12)
    for name in got[0]:
        values = [g[name] for g in got]
        if name.endswith(("mean", "core", "rim", "near", "far", "sphericity")):
            assert np.ptp(values) < 0.07, (name, values)
    assert all(abs(g["native.log_volume"] - np.log(4 / 3 * np.pi * 16.0 ** 3)) < 0.15 for g in got)


def test_an_empty_mask_is_refused():
    images, mask = _phantom((4.0, 4.0, 6.0))
    with pytest.raises(ValueError, match="empty"):
        measure_native(images, np.zeros_like(mask), (4.0, 4.0, 6.0), TARGET)


def test_native_columns_are_named_once_in_the_frame():
    """The frame columns the fusion heads read: ``roi.native.<phase>.<descriptor>`` in ``measure_native``'s order,
    each row's values on its row; a frame that already holds them is refused (they would be read twice)."""
    import pandas as pd

    from dltr.core.exceptions import ModelError
    from models.heads import NATIVE_PREFIX, add_native_descriptors

    phases = ("arterial", "portal")
    values = np.arange(3 * 18, dtype=float).reshape(3, 18)
    df = add_native_descriptors(pd.DataFrame({"patient_id": ["a", "b", "c"]}, index=[7, 8, 9]), values, phases)
    cols = [c for c in df.columns if c.startswith(NATIVE_PREFIX)]
    assert cols == ["roi." + n for n in native_descriptor_names(phases)]
    np.testing.assert_array_equal(df[cols].to_numpy(), values)
    assert df["patient_id"].tolist() == ["a", "b", "c"]
    with pytest.raises(ModelError, match="already holds native descriptors"):
        add_native_descriptors(df, values, phases)


def test_an_image_coarser_than_the_declared_resolution_is_refused_by_name(tmp_path):
    """Native descriptors are measured at one declared resolution coarser than every image; an image coarser still on
    some axis cannot be brought to it, so the store's measurement refuses it, naming the patient, its voxel and the
    fix, instead of measuring it unlike the others. Header rounding (within ``COARSER_TOLERANCE``) is accepted."""
    import zarr
    from kit.roi_store import PHASES, roi_store

    from dltr.core.exceptions import ModelError
    from dltr.core.layout import StoreLayout
    from models import COARSER_TOLERANCE, native_descriptors

    root = roi_store(tmp_path / "store", n_patients=6, seed=3)
    vols = zarr.open_group(str(StoreLayout.of(root).volumes), mode="r")
    ids = sorted(vols.group_keys())
    spacing = {p: np.asarray(vols[p].attrs["spacing"], float) for p in ids}
    coarsest = np.max(list(spacing.values()), axis=0)
    every = native_descriptors(root, ids, PHASES, tuple(coarsest * (1 + COARSER_TOLERANCE / 2)))  # rounding: accepted
    assert every.shape == (len(ids), len(native_descriptor_names(PHASES))) and np.isfinite(every).all()
    slices = sorted({float(s[2]) for s in spacing.values()})
    assert len(slices) > 1     # the kit's slices differ, so a target between them splits the patients
    target = (float(coarsest[0]), float(coarsest[1]), slices[-2])
    thick = [p for p in ids if spacing[p][2] > target[2] * (1 + COARSER_TOLERANCE)]
    with pytest.raises(ModelError) as err:
        native_descriptors(root, ids, PHASES, target)
    msg = str(err.value)
    assert f"{len(thick)} patient(s)" in msg and thick[0] in msg and f"{spacing[thick[0]][2]:g} mm" in msg
    assert "--native-spacing" in msg and "descriptors" in msg
    thin = [p for p in ids if p not in thick]
    assert np.array_equal(native_descriptors(root, thin, PHASES, target).shape, (len(thin), every.shape[1]))


def test_without_a_declared_resolution_the_floor_rises_to_the_coarsest_stored_voxel(tmp_path):
    """``native_resolution``: a declared resolution is kept; none declared gives ``NATIVE_FLOOR_MM`` raised on each
    axis to the coarsest voxel of the patients measured (read from their stored attributes), so that every stored
    image can be measured, and says how it was set."""
    import json

    from kit.roi_store import PHASES, roi_store

    from dltr.core.exceptions import ModelError
    from dltr.core.layout import StoreLayout
    from models import NATIVE_FLOOR_MM, native_descriptors, native_resolution

    root = roi_store(tmp_path / "store", n_patients=6, seed=3)     # in-plane 0.7-1.1 mm, slices 2.5-5 mm
    layout = StoreLayout.of(root)
    ids = sorted(p.name for p in layout.volumes.iterdir() if p.is_dir())
    assert native_resolution(root, ids, (9.0, 9.0, 9.0)) == ((9.0, 9.0, 9.0), "declared")
    used, how = native_resolution(root, ids)
    assert used == tuple(NATIVE_FLOOR_MM) and how.startswith("default") and "raised" not in how  # all finer
    # one patient re-acquired with 10 mm slices and 6 mm pixels: the floor rises on those axes only
    meta_path = layout.volume_attrs(ids[0])
    meta = json.loads(meta_path.read_text())
    meta["attributes"]["spacing"] = [6.0, 0.8, 10.0]
    meta_path.write_text(json.dumps(meta))
    used, how = native_resolution(root, ids)
    assert used == (6.0, NATIVE_FLOOR_MM[1], 10.0) and "raised to the coarsest stored voxel" in how
    with pytest.raises(ModelError, match=f"first {ids[0]} \\(6 x 0.8 x 10 mm\\)"):   # the floor, declared, refuses it
        native_descriptors(root, ids, PHASES, NATIVE_FLOOR_MM)


@pytest.mark.parametrize("radius", [3.0, 5.0])
def test_a_lesion_smaller_than_two_target_voxels_is_measured_where_it_is(radius):
    """A 6-10 mm lesion on a fine acquisition reaches half height nowhere once blurred to 4.5 x 4.5 x 7 mm; it keeps the
    voxels at half its own peak, so it is measured (brighter than the liver in the arterial phase, one or a few
    voxels of volume) instead of failing the whole cohort."""
    spacing = (0.8, 0.8, 3.0)
    images, mask = _phantom(spacing, radius=radius)
    d = _named(measure_native(images, mask, spacing, TARGET))
    assert np.isfinite(list(d.values())).all()
    assert d["native.arterial.mean"] > 0.0 > d["native.portal.mean"]      # 180 vs 100 (bright), 60 vs 120 (dark)
    assert np.log(4.5 * 4.5 * 7.0) - 1e-6 <= d["native.log_volume"] <= np.log(27 * 4.5 * 4.5 * 7.0)


def test_a_stored_patient_whose_mask_marks_nothing_is_named(tmp_path):
    """A stored mask that marks no voxel cannot give native descriptors: refused as a ModelError naming the patient
    and the fix, not a bare ValueError from inside the measurement."""
    import zarr
    from kit.roi_store import PHASES, roi_store

    from dltr.core.exceptions import ModelError
    from dltr.core.layout import StoreLayout
    from models import native_descriptors

    root = roi_store(tmp_path / "store", n_patients=3, seed=4)
    vols = zarr.open_group(str(StoreLayout.of(root).volumes), mode="r+")
    ids = sorted(vols.group_keys())
    vols[ids[1]]["mask"][...] = 0
    with pytest.raises(ModelError, match=f"patient {ids[1]}: the tumour mask is empty.*re-run `dltr ingest`"):
        native_descriptors(root, ids, PHASES, (4.5, 4.5, 7.0))
