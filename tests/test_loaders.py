"""DALI ROI pipeline against the NumPy reference; box geometry by hand; chunk-aligned reads;
augmentation properties. DALI runs on the CPU (device_id=None)."""

from __future__ import annotations

import itertools
import pickle

import numpy as np
import pytest
import zarr
from kit.roi_store import CHUNKS, PHASES, roi_store
from scipy.ndimage import map_coordinates
from zarr.storage import LocalStore, WrapperStore

from dltr.core.exceptions import StoreError
from pipeline.loaders import (
    DaliRoiLoader,
    DaliRoiPipeline,
    RoiConfig,
    RoiReader,
    reference_roi,
    requested_box,
)

TOL = 1e-4  # max |DALI - reference| after z-scoring (float32 warp vs float64 separable interpolation)


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    return roi_store(tmp_path_factory.mktemp("roi") / "store", n_patients=9, seed=7)


IDS = [f"P{i:03d}" for i in range(9)]
CONFIGS = [RoiConfig(),  # margin 0.25: downsampled in-plane, border tumours padded
           RoiConfig(grid=(20, 12, 24), margin=0.1, min_extent_mm=60.0),  # boxes far past the border
           RoiConfig(phases=("delayed", "arterial"), grid=(9, 7, 5), margin=0.5, normalisation="none"),
           RoiConfig(grid=(20, 12, 24), margin=0.1, min_extent_mm=60.0, mask_channel=True)]  # + the mask


@pytest.mark.parametrize("cfg", CONFIGS, ids=["default", "wide", "coarse", "mask-channel"])
def test_dali_equals_reference(store, cfg):
    with DaliRoiPipeline(store, cfg, batch_size=4, num_threads=2) as pipe:
        x, boxes = pipe.run(IDS)
    assert tuple(x.shape) == (len(IDS), cfg.n_channels, *cfg.grid)
    crosses = 0
    for i, pid in enumerate(IDS):
        ref = reference_roi(store, pid, cfg)
        np.testing.assert_array_equal(boxes[i], ref.roi_box)
        assert np.abs(x[i].numpy() - ref.x).max() < TOL * max(1.0, np.abs(ref.x).max())
        attrs = zarr.open_group(store / "volumes.zarr" / pid, mode="r").attrs
        req = requested_box(attrs["bbox_vox"], attrs["spacing"], cfg)
        crosses += bool(np.any(req[:3] < 0) or np.any(req[3:] > zarr.open_array(
            store / "volumes.zarr" / pid / "portal", mode="r").shape))
    assert crosses >= 2  # the parity covers boxes that cross the volume border


def _image_stats_by_hand(g, ph, lo, hi):
    """Median and IQR / 1.349 of the read box's voxels outside the mask (read box = requested + 1, clipped)."""
    shape = np.asarray(g[ph].shape)
    a0 = np.clip(lo.astype(int) - 1, 0, shape)
    a1 = np.clip(hi.astype(int) + 1, 0, shape)
    sl = tuple(slice(int(a0[a]), int(a1[a])) for a in range(3))
    v = g[ph][sl].astype(np.float64)[g["mask"][sl] == 0]
    q25, med, q75 = np.percentile(v, [25, 50, 75])
    return med, (q75 - q25) / 1.349


@pytest.mark.parametrize("mode", ["zscore", "image", "ratio"])
def test_reference_equals_scipy_on_whole_volume(store, mode):
    """Independent check of the box, sampling points, padding and normalisation: scipy on the full volume."""
    cfg = RoiConfig(grid=(16, 16, 8), margin=0.3, normalisation=mode)
    import pyarrow.parquet as pq

    stats = {(r["center"], r["phase"]): (r["mean"], r["std"]) for r in
             pq.read_table(store / "ingest" / "intensity_stats.parquet").to_pylist() if r["region"] == "body"}
    for pid in IDS[:4]:
        g = zarr.open_group(store / "volumes.zarr" / pid, mode="r")
        b = np.asarray(g.attrs["bbox_vox"], float)
        sp = g.attrs["spacing"]
        lo, hi = b[:3].copy(), b[3:].copy()
        for a in range(3):  # the documented rule, written out again
            m = np.ceil(0.3 * (hi[a] - lo[a]))
            lo[a] -= m
            hi[a] += m
            need = np.ceil(cfg.min_extent_mm / sp[a])
            if hi[a] - lo[a] < need:
                grow = need - (hi[a] - lo[a])
                lo[a] -= grow // 2
                hi[a] += grow - grow // 2
        pts = np.meshgrid(*[lo[a] + (np.arange(cfg.grid[a]) + 0.5) * (hi[a] - lo[a]) / cfg.grid[a] - 0.5
                            for a in range(3)], indexing="ij")
        exp = []
        for ph in cfg.phases:
            mean, std = (stats[(g.attrs["center"], ph)] if mode == "zscore" else _image_stats_by_hand(g, ph, lo, hi))
            if mode == "ratio":  # x / median - 1
                std = mean
            vol = (g[ph][...].astype(np.float64) - mean) / std
            exp.append(map_coordinates(vol, pts, order=1, mode="grid-constant", cval=0.0))
        got = reference_roi(store, pid, cfg).x
        np.testing.assert_allclose(got, np.stack(exp), atol=1e-5)


def test_image_normalisation_is_invariant_to_a_center_scanner_scale(store):
    """Prospective-safe mode: an affine change of one image's intensities (another scanner's gain and offset)
    leaves its encoder input unchanged, and nothing of other patients or centers is read."""
    from pipeline.loaders._roi import image_reference_stats

    cfg = RoiConfig(grid=(12, 12, 6))
    reader = RoiReader(store, cfg)
    c = reader.read(IDS[2], with_mask=True)
    x = c.crop
    m1, s1 = image_reference_stats(x, c.mask)
    m2, s2 = image_reference_stats(x * 1.7 + 40.0, c.mask)
    np.testing.assert_allclose(m2, m1 * 1.7 + 40.0, rtol=1e-5)
    np.testing.assert_allclose(s2, s1 * 1.7, rtol=1e-5)
    assert reader._stats == {}  # no ingest statistics were loaded


def test_ratio_normalisation_reads_signal_relative_to_the_surroundings(store):
    """``"ratio"``: a scanner's gain leaves the input unchanged (an offset does not: MR magnitude has none),
    the reference region's median reads 0, and a voxel twice as bright as it reads 1."""
    from pipeline.loaders._roi import image_reference_stats

    reader = RoiReader(store, RoiConfig(grid=(12, 12, 6), normalisation="ratio"))
    c = reader.read(IDS[2], with_mask=True)
    x, outside = c.crop.astype(np.float64), c.mask.reshape(-1) <= 0.5
    loc, scale = image_reference_stats(x, c.mask, "ratio")
    med = np.median(x.reshape(-1, x.shape[-1])[outside], axis=0)
    np.testing.assert_allclose(loc, med, rtol=1e-6)
    np.testing.assert_allclose(scale, med, rtol=1e-6)
    np.testing.assert_allclose((2 * med - loc) / scale, 1.0, rtol=1e-6)
    loc2, scale2 = image_reference_stats(x * 1.7, c.mask, "ratio")
    np.testing.assert_allclose((x * 1.7 - loc2) / scale2, (x - loc) / scale, atol=1e-5)
    assert c.mean.tolist() == loc.tolist() and c.std.tolist() == scale.tolist()  # the reader applies it
    # a reference that is not a magnitude image (median <= 0) falls back to the spread scale
    _, s_img = image_reference_stats(x - med - 5.0, c.mask, "image")
    _, s_neg = image_reference_stats(x - med - 5.0, c.mask, "ratio")
    np.testing.assert_allclose(s_neg, s_img)


def test_requested_box_by_hand():
    cfg = RoiConfig(margin=0.25, min_extent_mm=20.0)
    # x: extent 8 -> margin 2; y: extent 3 -> margin 1 -> 5 voxels * 1 mm < 20 -> grown to 20 (7 below, 8 above)
    # z: extent 2 * 5 mm = 10 mm -> margin 1 -> 4 slices = 20 mm, kept
    box = requested_box([10, 5, 3, 18, 8, 5], [4.0, 1.0, 5.0], cfg)
    assert box.tolist() == [8, -3, 2, 20, 17, 6]
    with pytest.raises(StoreError, match="empty tumour box"):
        requested_box([4, 4, 4, 4, 6, 6], [1, 1, 1], cfg)


class CountingStore(WrapperStore):
    """A real zarr store wrapper that records every key read."""

    def __init__(self, store):
        super().__init__(store)
        self.keys: list[str] = []

    async def get(self, key, prototype, byte_range=None):
        self.keys.append(key)
        return await self._store.get(key, prototype, byte_range)


def _chunks_by_hand(pid, rbox, phases):
    ranges = [range(rbox[a] // CHUNKS[a], (rbox[3 + a] - 1) // CHUNKS[a] + 1) for a in range(3)]
    return {f"{pid}/{ph}/c/{i}/{j}/{k}" for ph in phases for i, j, k in itertools.product(*ranges)}


def test_only_overlapping_chunks_are_read(store):
    cfg = RoiConfig(grid=(16, 16, 8), margin=0.1, min_extent_mm=5.0, normalisation="zscore")
    counting = CountingStore(LocalStore(store / "volumes.zarr", read_only=True))
    with DaliRoiPipeline(store, cfg, batch_size=3, num_threads=1, read_threads=1, zarr_store=counting) as pipe:
        _, boxes = pipe.run(IDS)
    chunk_reads = [k for k in counting.keys if "/c/" in k]
    expected = set().union(*(_chunks_by_hand(p, boxes[i].tolist(), cfg.phases) for i, p in enumerate(IDS)))
    assert sorted(chunk_reads) == sorted(expected)  # each overlapping chunk once, nothing else
    n_total = sum(np.prod([-(-s // c) for s, c in zip(zarr.open_array(store / "volumes.zarr" / p / "portal",
                                                                       mode="r").shape, CHUNKS, strict=True)])
                  for p in IDS) * len(cfg.phases)
    assert len(chunk_reads) < n_total  # the ROI read is a strict subset of the volumes
    counting.keys.clear()
    ref = reference_roi(store, IDS[1], cfg, zarr_store=counting)
    assert {k for k in counting.keys if "/c/" in k} == _chunks_by_hand(IDS[1], ref.roi_box.tolist(), cfg.phases)


def test_augmentation_changes_sample_and_keeps_tumour(store):
    cfg = RoiConfig()
    with DaliRoiPipeline(store, cfg, batch_size=5, with_mask=True) as plain:
        x0, _, m0 = plain.run(IDS)
        x0b, _, _ = plain.run(IDS)
    assert np.array_equal(x0.numpy(), x0b.numpy())  # augmentation off: identical runs
    with DaliRoiPipeline(store, cfg, batch_size=5, augment=True, seed=11, with_mask=True) as aug:
        x1, _, m1 = aug.run(IDS)
        x2, _, _ = aug.run(IDS)
    with DaliRoiPipeline(store, cfg, batch_size=5, augment=True, seed=11, with_mask=True) as again:
        x1b, _, _ = again.run(IDS)
    assert np.array_equal(x1.numpy(), x1b.numpy())  # seeded: reproducible
    for a, b in ((x0, x1), (x1, x2)):
        assert (a - b).abs().amax(dim=(1, 2, 3, 4)).min() > 0.05  # every sample changed
    m1 = m1.numpy()[:, 0]
    faces = [m1[:, 0], m1[:, -1], m1[:, :, 0], m1[:, :, -1], m1[:, :, :, 0], m1[:, :, :, -1]]
    assert max(f.max() for f in faces) == 0.0  # the tumour never reaches the crop's faces
    ratio = m1.sum(axis=(1, 2, 3)) / m0.numpy().sum(axis=(1, 2, 3, 4))
    assert np.all((ratio > 0.6) & (ratio < 1.6))  # scaled by at most 1.1^3, not cut off


def test_mask_channel_is_the_warped_mask_and_escapes_intensity_augmentation(store):
    from pipeline.loaders import AugmentConfig

    cfg = RoiConfig(mask_channel=True)
    aug = AugmentConfig(bias_field=0.3, gamma=0.3, blur_sigma=1.0, noise=0.2)
    with DaliRoiPipeline(store, cfg, batch_size=5, augment=aug, seed=3, with_mask=True) as pipe:
        x, _, m = pipe.run(IDS)
    with DaliRoiPipeline(store, RoiConfig(), batch_size=5, augment=aug, seed=3, with_mask=True) as pipe:
        x0, _, m0 = pipe.run(IDS)
    assert x.shape[1] == len(cfg.phases) + 1 == cfg.n_channels
    np.testing.assert_array_equal(x[:, -1].numpy(), m[:, 0].numpy())  # the same warp and flips, no jitter
    assert 0.0 <= float(m.min()) and float(m.max()) <= 1.0 and float(m.max()) > 0.5
    np.testing.assert_array_equal(m.numpy(), m0.numpy())  # the same draws as without the channel
    assert RoiConfig().to_dict() == {k: v for k, v in RoiConfig(mask_channel=False).to_dict().items()}
    assert "mask_channel" not in RoiConfig().to_dict() and cfg.to_dict()["mask_channel"] is True


def test_loader_shards_cover_each_patient_once(store):
    cfg = RoiConfig(grid=(16, 16, 8))
    with DaliRoiPipeline(store, cfg, batch_size=4) as pipe:
        ref, _ = pipe.run(IDS)
    seen = {}
    for shard in range(2):
        loader = DaliRoiLoader(store, IDS, cfg, batch_size=2, shard_id=shard, num_shards=2)
        for _epoch in range(2):
            got = [(p, b["x"][i]) for b in loader for i, p in enumerate(b["patient_id"])]
            assert len(got) == len(loader.patient_ids)
        loader.close()
        seen.update(got)
    assert sorted(seen) == IDS
    for i, p in enumerate(IDS):
        assert np.array_equal(seen[p].numpy(), ref[i].numpy())


def test_missing_phase_is_a_typed_error(store):
    with pytest.raises(StoreError, match=r"P000: phase\(s\) \['t2'\] missing"):
        reference_roi(store, "P000", RoiConfig(phases=("arterial", "t2")))
    with pytest.raises(StoreError, match="'PX' is not in the volume store"):
        reference_roi(store, "PX", RoiConfig())
    with pytest.raises(StoreError, match="region 'liver' not found"):
        reference_roi(store, "P000", RoiConfig(normalisation="zscore", norm_region="liver"))  # per-center mode
    assert set(PHASES) >= set(RoiConfig().phases)


# Array encodings: ingest's (blosc), zarr's default (zstd), gzip, uncompressed big-endian, and two that
# the chunk reader leaves to zarr (a transpose filter, sharding).
ENCODINGS = {
    "blosc": dict(compressors=zarr.codecs.BloscCodec(cname="zstd", clevel=3, shuffle="shuffle")),
    "zstd": {},
    "gzip": dict(compressors=zarr.codecs.GzipCodec(level=1)),
    "raw_big_endian": dict(compressors=None, serializer=zarr.codecs.BytesCodec(endian="big")),
    "transpose": dict(filters=[zarr.codecs.TransposeCodec(order=(2, 1, 0))]),
    "sharded": dict(shards=(20, 16, 8)),
}


def _encoded_store(root, enc, rng):
    """Patients whose phases use one encoding; tumours at the border; some chunks never written (fill value)."""
    grp = zarr.open_group(root / "volumes.zarr", mode="w")
    for n in range(3):
        shape = (37, 29, 13)  # not a multiple of the chunks: partial edge chunks
        g = grp.create_group(f"Q{n}")
        for ph in PHASES:
            vol = rng.integers(-300, 900, size=shape).astype(np.int16)
            vol[:10] = 0  # whole chunks at the fill value: not stored
            a = g.create_array(ph, shape=shape, chunks=(10, 8, 4), dtype="int16", fill_value=0,
                               **ENCODINGS[enc])
            a[...] = vol
        box = [[0, 3, 0, 9, 15, 5], [20, 10, 4, 37, 29, 13], [8, 2, 3, 24, 20, 10]][n]
        g.attrs.update({"patient_id": f"Q{n}", "center": "A", "phases": list(PHASES), "bbox_vox": box,
                        "spacing": [1.0, 1.0, 2.0]})
    return root


@pytest.mark.parametrize("enc", list(ENCODINGS))
def test_chunk_reader_equals_zarr(tmp_path, enc):
    """The batched chunk reader (local files, and any other store through the event loop) returns
    exactly zarr's own read of the read box, whatever the codecs; missing chunks read as the fill value."""
    root = _encoded_store(tmp_path, enc, np.random.default_rng(5))
    cfg = RoiConfig(margin=0.2, min_extent_mm=12.0, normalisation="none")
    ids = ["Q0", "Q1", "Q2"]
    counting = CountingStore(LocalStore(root / "volumes.zarr", read_only=True))
    for reader, threads in ((RoiReader(root, cfg), 1), (RoiReader(root, cfg), 3),
                            (RoiReader(root, cfg, zarr_store=counting), 1)):
        for _epoch in range(2):  # the second epoch uses the cached metadata
            crops = reader.read_many(ids, threads=threads)
            for pid, c in zip(ids, crops, strict=True):
                sl = tuple(slice(int(c.read[a]), int(c.read[3 + a])) for a in range(3))
                exp = np.stack([zarr.open_array(root / "volumes.zarr" / pid / ph, mode="r")[sl]
                                for ph in cfg.phases], axis=-1)
                assert c.patient_id == pid and c.crop.dtype == np.float32
                np.testing.assert_array_equal(c.crop, exp.astype(np.float32))
    assert any("/c/" in k for k in counting.keys)  # the wrapped store did serve the chunks
    with pytest.raises(StoreError, match="'PX' is not in the volume store"):
        RoiReader(root, cfg).read_many(["Q0", "PX", "Q1"])


def test_batching_threads_and_prefetch_do_not_change_output(store):
    cfg = RoiConfig(grid=(12, 10, 6))
    with DaliRoiPipeline(store, cfg, batch_size=4, num_threads=1, read_threads=1) as pipe:
        ref, ref_boxes = pipe.run(IDS)
    with DaliRoiPipeline(store, cfg, batch_size=2, num_threads=2, read_threads=3) as pipe:
        got, boxes = pipe.run(IDS[::-1])  # 5 batches: the prefetch thread reads batch k + 1 during batch k
        again, _ = pipe.run(IDS)
    assert np.array_equal(got.numpy()[::-1], ref.numpy()) and np.array_equal(boxes[::-1], ref_boxes)
    assert np.array_equal(again.numpy(), ref.numpy())


def test_spawned_workers_and_pickled_reader(store):
    """DALI's parallel external_source (spawned processes) and a reader pickled after use (as Ray
    ships it) give the in-process result."""
    cfg = RoiConfig(grid=(12, 10, 6))
    with DaliRoiPipeline(store, cfg, batch_size=3) as pipe:
        ref, _ = pipe.run(IDS)
    loader = DaliRoiLoader(store, IDS, cfg, batch_size=3, workers="processes", py_workers=2)
    got = {p: b["x"][i] for b in loader for i, p in enumerate(b["patient_id"])}
    loader.close()
    assert sorted(got) == IDS
    for i, p in enumerate(IDS):
        assert np.array_equal(got[p].numpy(), ref[i].numpy())
    reader = RoiReader(store, cfg)
    first = reader.read_many(IDS[:3])
    clone = pickle.loads(pickle.dumps(reader))
    for a, b in zip(first, clone.read_many(IDS[:3]), strict=True):
        np.testing.assert_array_equal(a.crop, b.crop)


def test_crop_cache_serves_later_epochs_without_the_store(store, tmp_path):
    """A loader with a crop cache gives the uncached loader's augmented batches, epoch for epoch, and after
    the first epoch it reads nothing from the store (the volumes moved away)."""
    import shutil

    cfg = RoiConfig(grid=(12, 10, 6))
    root = tmp_path / "store"
    shutil.copytree(store, root)
    kw = dict(batch_size=4, augment=True, seed=5, shuffle=True)
    plain = DaliRoiLoader(store, IDS, cfg, **kw)
    ref = [[(b["patient_id"], b["x"].numpy().copy()) for b in plain] for _epoch in range(2)]
    plain.close()
    cache: dict = {}
    cached = DaliRoiLoader(root, IDS, cfg, crop_cache=cache, **kw)
    got = [[(b["patient_id"], b["x"].numpy().copy()) for b in cached]]
    assert sorted(p for p, _ in cache) == IDS
    shutil.move(root / "volumes.zarr", tmp_path / "away")
    got.append([(b["patient_id"], b["x"].numpy().copy()) for b in cached])
    cached.close()
    for e in range(2):
        assert [p for p, _ in got[e]] == [p for p, _ in ref[e]]
        for (_, a), (_, b) in zip(got[e], ref[e], strict=True):
            assert np.array_equal(a, b)
    assert not np.array_equal(ref[0][0][1], ref[1][0][1])  # the epochs differ (augmentation, order)


GEOM_OFF = {"flip": False, "max_rotation_deg": 0.0, "max_scale": 0.0, "intensity_jitter": 0.0}


def _scanner_run(store, cfg, **knobs):
    from pipeline.loaders import AugmentConfig

    with DaliRoiPipeline(store, cfg, batch_size=5, augment=AugmentConfig(**GEOM_OFF, **knobs), seed=3) as p:
        return p.run(IDS)[0].numpy().astype(np.float64)


def test_scanner_augmentation_at_zero_is_the_plain_pipeline(store):
    """Every scanner knob at 0 adds no operator: the default training augmentation is bit-identical to
    before, and with geometry off too the output is the unaugmented pipeline's (warp vs resize)."""
    from pipeline.loaders import AugmentConfig

    cfg = RoiConfig()
    with DaliRoiPipeline(store, cfg, batch_size=5, augment=True, seed=11) as a, \
            DaliRoiPipeline(store, cfg, batch_size=5, augment=AugmentConfig(bias_field=0.0, gamma=0.0,
                                                                              blur_sigma=0.0, noise=0.0),
                            seed=11) as b:
        assert np.array_equal(a.run(IDS)[0].numpy(), b.run(IDS)[0].numpy())
    with DaliRoiPipeline(store, cfg, batch_size=5) as plain:
        x0 = plain.run(IDS)[0].numpy()
    assert np.abs(_scanner_run(store, cfg) - x0).max() < TOL


def test_scanner_augmentation_effects(store):
    cfg = RoiConfig()
    x0 = _scanner_run(store, cfg)
    crops = RoiReader(store, cfg).read_many(IDS, False, 1)
    loc = np.stack([c.mean / c.std for c in crops])[:, :, None, None, None]  # raw 0 in normalised units
    # bias field: raw * b with b smooth, shared by the phases, varying over the ROI
    xb = _scanner_run(store, cfg, bias_field=0.5)
    assert np.array_equal(xb, _scanner_run(store, cfg, bias_field=0.5))  # seeded
    ok = np.abs(x0 + loc) > 0.5
    logb = np.log(np.where(ok, (xb + loc) / np.where(ok, x0 + loc, 1.0), 1.0))
    lb = logb[:, 0]
    assert np.abs(np.where(ok[:, 1], logb[:, 1] - lb, 0)).max() < 1e-3  # one field for every phase
    spread = lb.reshape(len(IDS), -1).std(1)
    assert spread.min() > 1e-3 and spread.max() < 0.5  # a real field, bounded by its amplitude
    step = np.abs(np.diff(lb, axis=1)).max(axis=(1, 2, 3))
    assert np.all(step < 0.2 * np.ptp(lb, axis=(1, 2, 3)))  # smooth: no voxel-to-voxel jumps
    # gamma: per channel a monotone map with the same min and max, not the identity
    xg = _scanner_run(store, cfg, gamma=0.5)
    for s in range(len(IDS)):
        for c in range(cfg.n_channels):
            a, g = x0[s, c].ravel(), xg[s, c].ravel()
            o = np.argsort(a, kind="stable")
            assert np.all(np.diff(g[o]) >= -1e-5)
            assert abs(g.min() - a.min()) < 1e-4 and abs(g.max() - a.max()) < 1e-4
    assert np.abs(xg - x0).max() > 0.05
    # blur: less voxel-to-voxel variation, same mean; noise: zero-mean, spatially white
    xs = _scanner_run(store, cfg, blur_sigma=1.5)
    tv = lambda v: sum(np.abs(np.diff(v, axis=k)).mean() for k in (2, 3, 4))  # noqa: E731
    assert tv(xs) < 0.8 * tv(x0)
    assert np.abs(xs.mean(axis=(2, 3, 4)) - x0.mean(axis=(2, 3, 4))).max() < 0.15
    e = _scanner_run(store, cfg, noise=0.3) - x0
    sd = e.reshape(len(IDS), -1).std(1)
    assert sd.max() < 0.3 and sd.max() > 0.02 and abs(e.mean()) < 0.01
    lag = (e[:, :, 1:] * e[:, :, :-1]).mean() / e.var()
    assert abs(lag) < 0.05
