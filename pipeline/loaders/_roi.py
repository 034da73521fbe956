"""ROI geometry and chunk-aligned reads from the Zarr volume store (shared by both loaders).

Box convention: voxel boxes are ``[x0, y0, z0, x1, y1, z1]``, half-open, in the canonical
frame. The *requested* box is the tumour box plus margin and minimum extent; it may cross
the volume border. The *read* box is the requested box grown by one voxel per side (the
trilinear neighbours of the outermost sample points) and clipped to the volume: exactly
the voxels read from the store, so only the chunks it overlaps are fetched.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from dltr.core.exceptions import StoreError
from dltr.core.layout import StoreLayout, VolumeAttrs
from pipeline.loaders._chunks import BoxRead
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


@dataclass
class _PatientMeta:
    bbox_vox: Any
    spacing: Any
    center: str
    shape: tuple[int, ...]
    arrays: list[Any]
    mask: Any


async def _fetch_all(reads: list[BoxRead]) -> None:
    import asyncio

    await asyncio.gather(*(r.fetch() for r in reads))


def _decode_all(reads: list[BoxRead]) -> None:
    for r in reads:
        r.decode()


def _read_local(reads: list[BoxRead]) -> list[BoxRead]:
    """Read and decode the boxes stored in local files; returns the others (to fetch through the store)."""
    remote = []
    for r in reads:
        if r.read_local():
            r.decode()
        else:
            remote.append(r)
    return remote


class RoiReader:
    """Reads ROI crops of the configured phases; picklable (opens the store lazily per process).

    ``read_many`` reads a batch with one event-loop round trip for the metadata (the patients'
    groups and phase arrays, opened concurrently), then only the chunks the read boxes overlap:
    from a plain local store straight from the chunk files, from any other store in one
    concurrent fetch; decoded in the calling thread (``pipeline.loaders._chunks``), values
    identical to zarr's own read. Opened groups and arrays are kept (up to ``META_CACHE``
    patients) so later epochs fetch chunks only; a reader assumes the patients it has opened
    are not re-ingested while it lives. ``zarr_store`` replaces the ``STORE/volumes.zarr``
    store (a ``zarr.abc.store.Store``), e.g. a wrapper that counts reads.

    ``crop_cache`` (a dict the caller owns, e.g. one per encoder training run): crops read once are
    kept there and served again without touching the store, so training epochs after the first read
    no chunk (the crops, not resampled tensors: the augmentation still warps the same voxels).
    """

    META_CACHE = 4096
    CROP_CACHE_BYTES = 2 << 30  # crops beyond this many bytes in ``crop_cache`` are read, not kept

    def __init__(self, store_root: str | Path, config: RoiConfig, zarr_store: Any = None,
                 crop_cache: dict | None = None):
        self.store_root = Path(store_root)
        self.config = config
        self.zarr_store = zarr_store
        self.crop_cache = crop_cache
        self._stats = _load_stats(self.store_root, config)
        self._root = None
        self._meta: OrderedDict[tuple[str, bool], _PatientMeta] = OrderedDict()

    def __getstate__(self) -> dict[str, Any]:
        d = dict(self.__dict__)
        d["_root"], d["_meta"] = None, OrderedDict()
        d["crop_cache"] = {} if self.crop_cache is not None else None  # each process fills its own
        return d

    def read(self, patient_id: str, with_mask: bool = False) -> RoiCrop:
        return self.read_many([patient_id], with_mask)[0]

    def read_many(self, patient_ids, with_mask: bool = False, threads: int = 1) -> list[RoiCrop]:
        """The crops of ``patient_ids`` in order; the first unreadable patient's ``StoreError`` is raised.

        ``threads`` > 1 reads and decodes the patients' chunks on that many threads (file reads and
        the decompressors release the GIL).
        """
        from zarr.core.sync import sync

        ids = [str(p) for p in patient_ids]
        if not ids:
            return []
        if self.crop_cache is not None:
            return self._cached(ids, with_mask, threads)
        want_mask = with_mask
        with_mask = with_mask or self.config.per_image  # the reference region needs the mask
        metas = sync(self._open_many(ids, with_mask))
        for m in metas:
            if isinstance(m, BaseException):
                raise m
        crops, reads = [], []
        for pid, m in zip(ids, metas, strict=True):
            crop, r = self._plan(pid, m, with_mask)
            crops.append(crop)
            reads.append(r)
        # local files: read and decode patient by patient; other stores: one concurrent fetch, then decode
        if threads > 1 and len(ids) > 1:
            with ThreadPoolExecutor(min(threads, len(ids))) as ex:
                remote = [r for rs in ex.map(_read_local, reads) for r in rs]
        else:
            remote = [r for rs in reads for r in _read_local(rs)]
        if remote:
            sync(_fetch_all(remote))
            _decode_all(remote)
        if self.config.per_image:
            for c in crops:
                c.mean, c.std = image_reference_stats(c.crop, c.mask, self.config.normalisation)
                if not want_mask:
                    c.mask = None
        return crops

    def _cached(self, ids: list[str], with_mask: bool, threads: int) -> list[RoiCrop]:
        """``read_many`` through ``crop_cache`` (keyed by patient and whether the mask was read)."""
        cache, key = self.crop_cache, (lambda p: (p, with_mask))
        miss = [p for p in dict.fromkeys(ids) if key(p) not in cache]
        got: dict[str, RoiCrop] = {}
        if miss:
            self.crop_cache = None
            try:
                got = dict(zip(miss, self.read_many(miss, with_mask, threads), strict=True))
            finally:
                self.crop_cache = cache
            used = sum(c.crop.nbytes + (0 if c.mask is None else c.mask.nbytes) for c in cache.values())
            for p, c in got.items():
                if used < self.CROP_CACHE_BYTES:
                    cache[key(p)] = c
                    used += c.crop.nbytes + (0 if c.mask is None else c.mask.nbytes)
        return [got[p] if p in got else cache[key(p)] for p in ids]

    def _plan(self, pid: str, m: _PatientMeta, with_mask: bool) -> tuple[RoiCrop, list[BoxRead]]:
        req = requested_box(m.bbox_vox, m.spacing, self.config)
        rbox = read_box(req, m.shape)
        sl = tuple(slice(int(rbox[a]), int(rbox[3 + a])) for a in range(3))
        crop = np.empty(tuple(int(rbox[3 + a] - rbox[a]) for a in range(3)) + (len(m.arrays),), np.float32)
        reads = [BoxRead(arr, sl, crop[..., c]) for c, arr in enumerate(m.arrays)]
        mask = None
        if with_mask:
            mask = np.empty(crop.shape[:3], np.float32)
            reads.append(BoxRead(m.mask, sl, mask))
        for r in reads:
            r.plan()
        mean, std = self.norm(m.center, pid)
        return RoiCrop(pid, crop, req, rbox, mean, std, mask), reads

    async def _open_many(self, ids: list[str], with_mask: bool) -> list[Any]:
        import asyncio

        if self._root is None:
            from zarr.api.asynchronous import open_group

            src = self.zarr_store if self.zarr_store is not None else StoreLayout.of(self.store_root).volumes
            if self.zarr_store is None and not Path(src).is_dir():
                raise StoreError(f"{src}: no volume store; run `dltr ingest` first")
            self._root = await open_group(src, mode="r")
        out = await asyncio.gather(*(self._open(p, with_mask) for p in ids), return_exceptions=True)
        for pid, m in zip(ids, out, strict=True):
            if isinstance(m, _PatientMeta):
                self._meta[(pid, with_mask)] = m
                self._meta.move_to_end((pid, with_mask))
        while len(self._meta) > self.META_CACHE:
            self._meta.popitem(last=False)
        return out

    async def _open(self, pid: str, with_mask: bool) -> _PatientMeta:
        import asyncio

        hit = self._meta.get((pid, with_mask))
        if hit is not None:
            return hit
        try:
            g = await self._root.getitem(pid)
        except KeyError:
            raise StoreError(
                f"{StoreLayout.of(self.store_root).volumes}: patient {pid!r} is not in the volume store") from None
        attrs = VolumeAttrs.of(g.attrs, StoreLayout.of(self.store_root).volume_group(pid))
        missing = [p for p in self.config.phases if p not in attrs.phases]
        if missing:
            raise StoreError(f"{attrs.where}: phase(s) {missing} missing (has {attrs.phases}); ingest them or drop "
                             "them from RoiConfig.phases")
        names = list(self.config.phases) + (["mask"] if with_mask else [])
        arrays = await asyncio.gather(*(g.getitem(n) for n in names))
        shape = tuple(arrays[0].shape)
        for name, arr in zip(names, arrays, strict=True):
            if tuple(arr.shape) != shape:
                raise StoreError(f"{StoreLayout.of(self.store_root).volume_group(pid) / name}: shape {tuple(arr.shape)} "
                                 f"differs from {shape} of the other phases; re-run ingest")
        n = len(self.config.phases)  # the image arrays (the mask channel is read as the mask)
        return _PatientMeta(attrs.bbox_vox, attrs.spacing, str(attrs.get("center", "")), shape,
                            arrays[:n], arrays[n] if with_mask else None)

    def norm(self, center: str, patient_id: str) -> tuple[np.ndarray, np.ndarray]:
        """Per-center (``"zscore"``) or identity statistics; per-image ones are set after the read."""
        c = self.config
        if c.normalisation == "none" or c.per_image:
            return np.zeros(len(c.phases), np.float32), np.ones(len(c.phases), np.float32)
        out = []
        for p in c.phases:
            ms = self._stats.get((center, p))
            if ms is None:
                raise StoreError(
                    f"{StoreLayout.of(self.store_root).intensity_stats}: no row for center {center!r}, phase "
                    f"{p!r}, region {c.norm_region!r} (patient {patient_id}); re-run ingest or set norm_region")
            out.append(ms)
        a = np.asarray(out, dtype=np.float64)
        return a[:, 0].astype(np.float32), a[:, 1].astype(np.float32)


MIN_REFERENCE_VOXELS = 32


def image_reference_stats(crop: np.ndarray, mask: np.ndarray | None,
                          mode: str = "image") -> tuple[np.ndarray, np.ndarray]:
    """Per channel (location, scale) of the crop's reference region: the voxels outside the tumour
    mask (the whole crop when fewer than ``MIN_REFERENCE_VOXELS`` lie outside it). Location = median;
    scale = IQR / 1.349 for ``mode="image"`` and the median itself for ``"ratio"`` (so that
    ``(x - loc) / scale = x / median - 1``). A flat reference (zero spread) falls back to the standard
    deviation, then to 1; a ``"ratio"`` median <= 0 (not a magnitude image) to that spread scale."""
    flat = crop.reshape(-1, crop.shape[-1]).astype(np.float64)
    if mask is not None:
        outside = mask.reshape(-1) <= 0.5
        if outside.sum() >= MIN_REFERENCE_VOXELS:
            flat = flat[outside]
    q25, med, q75 = np.percentile(flat, (25.0, 50.0, 75.0), axis=0)
    scale = (q75 - q25) / 1.349
    sd = flat.std(0)
    scale = np.where(scale > 1e-6, scale, np.where(sd > 1e-6, sd, 1.0))
    if mode == "ratio":
        scale = np.where(med > 1e-6, med, scale)
    return med.astype(np.float32), scale.astype(np.float32)


def _load_stats(store_root: Path, config: RoiConfig) -> dict[tuple[str, str], tuple[float, float]]:
    if config.normalisation == "none" or config.per_image:
        return {}
    path = StoreLayout.of(store_root).intensity_stats
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
