"""The DALI ROI pipeline: chunk-aligned Zarr reads in ``external_source``, then normalise,
resample to the grid, and (training) augment, on the CPU or the GPU.

Resampling: without augmentation the box is axis-aligned, so ``fn.resize`` (separable
trilinear over the box ROI, no antialiasing) does it - several times faster than
``warp_affine`` on the CPU, same values; with augmentation (rotation, scaling) ``warp_affine``.
Crops are padded to the unclipped read box with the channel mean (0 after normalisation), so
neither resampler needs a border rule: values outside the volume read as 0, as in the reference.

One graph definition for both devices. ``DaliRoiPipeline.run`` feeds batches from the
caller's process (batch k + 1 read on a prefetch thread while DALI processes batch k) and is
reused across calls - the extraction path.
``DaliRoiLoader`` drives the same graph from a parallel ``external_source`` (worker
processes, ``spawn``) or from threads, through DALI's PyTorch iterator - the training path.
"""

from __future__ import annotations

import math
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from dltr.core.exceptions import MissingDependencyError
from pipeline.loaders._augment import AugmentConfig, augment_matrix, flip_args, jitter, scanner
from pipeline.loaders._config import RoiConfig
from pipeline.loaders._roi import RoiCrop, RoiReader, dali_matrix


def input_names(resample: str, with_mask: bool) -> tuple[str, ...]:
    """The external_source inputs: the box as a warp matrix ("warp") or as a resize ROI ("resize")."""
    box = ("mat",) if resample == "warp" else ("roi0", "roi1")
    return ("crop",) + box + ("mean", "std", "box", "idx") + (("mask",) if with_mask else ())


def _padded(c: RoiCrop) -> tuple[np.ndarray, np.ndarray | None, np.ndarray]:
    """The crop on the unclipped read box (requested box + 1 voxel per side); voxels outside the
    volume hold the channel mean (0 after normalisation; mask 0), so the resampler never reads
    past the array and needs no border rule. Returns (crop, mask, padded box)."""
    pbox = np.concatenate([c.requested[:3] - 1, c.requested[3:] + 1])
    lo = c.read[:3] - pbox[:3]
    if not lo.any() and np.array_equal(c.read[3:], pbox[3:]):
        return c.crop, c.mask, pbox
    inner = tuple(slice(int(lo[a]), int(lo[a] + c.crop.shape[a])) for a in range(3))
    shape = tuple(int(pbox[3 + a] - pbox[a]) for a in range(3))
    crop = np.empty(shape + (c.crop.shape[3],), np.float32)
    crop[...] = c.mean
    crop[inner] = c.crop
    mask = None
    if c.mask is not None:
        mask = np.zeros(shape, np.float32)
        mask[inner] = c.mask
    return crop, mask, pbox


def dali_available() -> bool:
    """True when NVIDIA DALI can be imported."""
    try:
        import nvidia.dali  # noqa: F401
    except ImportError:
        return False
    return True


def _require_dali():
    if not dali_available():
        raise MissingDependencyError("NVIDIA DALI is not installed: pip install nvidia-dali-cuda120 "
                                     "(the reference loader is a baseline, not a fallback)")


def resolve_device(device: int | str | None) -> int | None:
    """``"auto"`` -> GPU 0 when torch sees one, else None (CPU)."""
    if device == "auto":
        import torch

        return 0 if torch.cuda.is_available() else None
    return None if device is None else int(device)


def reads_mask(config: RoiConfig, with_mask: bool) -> bool:
    """Whether a batch reads the mask: asked for (``with_mask``: the pipeline also returns it), or an input
    channel of the encoder (``config.mask_channel``)."""
    return bool(with_mask or config.mask_channel)


class RoiBatcher:
    """Reads a batch of patients into the pipeline's inputs; picklable for DALI worker processes."""

    def __init__(self, reader: RoiReader, patient_ids=(), batch_size: int = 1, *, shuffle: bool = False,
                 seed: int = 0, threads: int = 1, with_mask: bool = False, resample: str = "resize"):
        self.reader, self.patient_ids = reader, list(patient_ids)
        self.batch_size, self.shuffle, self.seed = batch_size, shuffle, seed
        self.threads, self.resample = threads, resample
        self.with_mask = reads_mask(reader.config, with_mask)
        self.names = input_names(resample, self.with_mask)

    def __getstate__(self) -> dict[str, Any]:
        return dict(self.__dict__)

    def batch(self, ids, idx=None) -> list[list[np.ndarray]]:
        crops = self.reader.read_many(ids, self.with_mask, self.threads)
        idx = range(len(ids)) if idx is None else idx
        cols: dict[str, list[np.ndarray]] = {n: [] for n in self.names}
        for c, i in zip(crops, idx, strict=True):
            crop, mask, pbox = _padded(c)
            cols["crop"].append(crop)
            if self.resample == "warp":
                cols["mat"].append(dali_matrix(c.requested, pbox, self.reader.config.grid))
            else:  # the requested box inside the padded crop: from voxel 1 to 1 + extent
                ext = (c.requested[3:] - c.requested[:3]).astype(np.float32)
                cols["roi0"].append(np.ones(3, np.float32))
                cols["roi1"].append(1.0 + ext)
            cols["mean"].append(c.mean.reshape(1, 1, 1, -1))
            cols["std"].append((1.0 / c.std).astype(np.float32).reshape(1, 1, 1, -1))
            cols["box"].append(c.read.astype(np.int32))
            cols["idx"].append(np.array(i, dtype=np.int64))
            if self.with_mask:
                cols["mask"].append(mask[..., None])
        return [cols[n] for n in self.names]

    def __call__(self, info):
        n = len(self.patient_ids)
        start = info.iteration * self.batch_size
        if start >= n:
            raise StopIteration
        order = np.arange(n)
        if self.shuffle:
            order = np.random.default_rng([self.seed, info.epoch_idx]).permutation(n)
        sel = order[start:start + self.batch_size]
        return tuple(self.batch([self.patient_ids[i] for i in sel], idx=sel))


def resample_mode(aug) -> str:
    """``"warp"`` (``warp_affine``) with augmentation, else ``"resize"`` (``resize`` over the box ROI)."""
    return "warp" if aug else "resize"


def _build(config: RoiConfig, batch_size: int, device: int | None, num_threads: int, augment, seed: int,
           source=None, parallel: bool = False, py_workers: int = 1, with_mask: bool = False):
    from nvidia.dali import fn, pipeline_def, types

    aug = AugmentConfig() if augment is True else (augment or None)
    names = input_names(resample_mode(aug), reads_mask(config, with_mask))
    layouts = {"crop": "DHWC", "mask": "DHWC"}

    @pipeline_def
    def graph():
        if source is None:
            ins = [fn.external_source(name=n, layout=layouts.get(n)) for n in names]
        else:
            ins = fn.external_source(source=source, num_outputs=len(names), batch=True, batch_info=True,
                                     parallel=parallel, layout=[layouts.get(n, "") for n in names])
        d = dict(zip(names, ins, strict=True))
        gpu = device is not None
        x, mean, inv = (d["crop"].gpu(), d["mean"].gpu(), d["std"].gpu()) if gpu else (d["crop"], d["mean"], d["std"])
        x = (x - mean) * inv
        if aug:  # rotation and scaling: a general affine warp
            mat = augment_matrix(fn, d["mat"], config.grid, aug)
            warp = dict(matrix=mat, size=list(config.grid), fill_value=0.0, interp_type=types.INTERP_LINEAR,
                        inverse_map=True)

            def resample(v):
                return fn.warp_affine(v, **warp)
        else:  # the axis-aligned box: separable trilinear resize (several times faster on the CPU)
            def resample(v):
                return fn.resize(v, size=list(config.grid), roi_start=d["roi0"], roi_end=d["roi1"],
                                 roi_relative=False, antialias=False, interp_type=types.INTERP_LINEAR)
        x = resample(x)
        flips = flip_args(fn, aug) if aug else {}
        if flips:
            x = fn.flip(x, **flips)
        if aug:  # intensity augmentation of the image channels only
            x = jitter(fn, scanner(fn, x, mean, inv, aug, config.grid, gpu), len(config.phases), aug, gpu)
        m = None
        if reads_mask(config, with_mask):  # the mask warped and flipped with the images
            m = d["mask"].gpu() if gpu else d["mask"]
            m = resample(m)
            m = fn.flip(m, **flips) if flips else m
        if config.mask_channel:
            x = fn.cat(x, m, axis=3)
        outs = [fn.transpose(x, perm=[3, 0, 1, 2]), d["box"], d["idx"]]
        if with_mask:
            outs.append(fn.transpose(m, perm=[3, 0, 1, 2]))
        return tuple(outs)

    kw: dict[str, Any] = {}
    if source is None:
        kw["prefetch_queue_depth"] = 1
    if parallel:
        kw.update(py_num_workers=py_workers, py_start_method="spawn")
    pipe = graph(batch_size=batch_size, num_threads=num_threads, device_id=device, seed=seed, **kw)
    pipe.build()
    return pipe


def to_torch(out) -> Any:
    """A DALI TensorList (CPU or GPU) -> torch tensor (on the same device)."""
    import torch

    if hasattr(out, "as_cpu") and type(out).__name__.endswith("GPU"):
        from nvidia.dali.plugin.pytorch import feed_ndarray

        t = out.as_tensor()
        res = torch.empty(t.shape(), dtype=torch.float32, device="cuda")
        feed_ndarray(t, res)
        return res
    return torch.from_numpy(np.array(out.as_array()))


class DaliRoiPipeline:
    """One DALI pipeline reused for every ``run(patient_ids)`` call (batch in, tensor out)."""

    def __init__(self, store_root: str | Path, config: RoiConfig, batch_size: int = 8,
                 device: int | str | None = None, num_threads: int = 2, augment: bool | AugmentConfig = False,
                 seed: int = 0, *, read_threads: int | None = None, with_mask: bool = False,
                 zarr_store: Any = None):
        _require_dali()
        self.config, self.batch_size = config, batch_size
        self.device = resolve_device(device)
        self.with_mask = with_mask
        aug = AugmentConfig() if augment is True else (augment or None)
        self._batcher = RoiBatcher(RoiReader(store_root, config, zarr_store=zarr_store), batch_size=batch_size,
                                   threads=read_threads or num_threads, with_mask=with_mask,
                                   resample=resample_mode(aug))
        self._pipe = _build(config, batch_size, self.device, num_threads, aug, seed, with_mask=with_mask)
        self._prefetch: ThreadPoolExecutor | None = None

    def retarget(self, store_root: str | Path, zarr_store: Any = None) -> None:
        """Read the next ``run`` calls from another store with the graph already built (the scoring
        service builds one pipeline per process and ingests each request into a temporary store)."""
        self._batcher.reader = RoiReader(store_root, self.config, zarr_store=zarr_store)

    def run(self, patient_ids) -> tuple[Any, np.ndarray] | tuple[Any, np.ndarray, Any]:
        """(x (N, C, X, Y, Z) float32 tensor, roi_boxes (N, 6) int32[, warped masks (N, 1, X, Y, Z)]).

        Batch k + 1 is read on a prefetch thread while DALI processes batch k.
        """
        import torch

        ids = list(patient_ids)
        if not ids:
            g = self.config.grid
            empty = (torch.empty((0, self.config.n_channels, *g)), np.empty((0, 6), np.int32))
            return empty + (torch.empty((0, 1, *g)),) if self.with_mask else empty
        batches = [ids[s:s + self.batch_size] for s in range(0, len(ids), self.batch_size)]
        if len(batches) > 1 and self._prefetch is None:
            self._prefetch = ThreadPoolExecutor(1, thread_name_prefix="dltr-roi-prefetch")
        xs, boxes, masks = [], [], []
        nxt = self._prefetch.submit(self._batcher.batch, batches[0]) if len(batches) > 1 else None
        for k, b in enumerate(batches):
            cols = nxt.result() if nxt is not None else self._batcher.batch(b)
            nxt = self._prefetch.submit(self._batcher.batch, batches[k + 1]) if k + 1 < len(batches) else None
            try:
                outs = self._pipe.run(**dict(zip(self._batcher.names, cols, strict=True)))
            except BaseException:
                if nxt is not None and not nxt.cancel():
                    nxt.exception()  # let the read in flight finish before the reader is used again
                raise
            xs.append(to_torch(outs[0]))
            boxes.append(np.array(outs[1].as_array()))
            if self.with_mask:
                masks.append(to_torch(outs[3]))
        res = (torch.cat(xs), np.concatenate(boxes))
        return res + (torch.cat(masks),) if self.with_mask else res

    def close(self) -> None:
        if self._prefetch is not None:
            self._prefetch.shutdown(wait=True)
            self._prefetch = None
        self._pipe = None

    def __enter__(self) -> DaliRoiPipeline:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class DaliRoiLoader:
    """Iterable of ``{"x", "patient_id", "roi_box"}`` batches through DALI's PyTorch iterator.

    Shard ``shard_id`` of ``num_shards`` takes a contiguous slice of ``patient_ids``.
    ``workers="threads"`` reads on a thread pool in this process; ``"processes"`` uses DALI's
    parallel external_source with ``py_workers`` spawned processes (see benchmarks/suites/loader.py).
    ``crop_cache``: a dict kept by the caller across loaders and epochs (``RoiReader``): every crop
    is read from the store once (with ``"processes"``, once per worker process).
    """

    def __init__(self, store_root: str | Path, patient_ids, config: RoiConfig, batch_size: int = 8,
                 augment: bool | AugmentConfig = False, seed: int = 0, shard_id: int = 0, num_shards: int = 1,
                 device: int | str | None = None, *, shuffle: bool = False, num_threads: int = 2,
                 workers: str = "threads", py_workers: int = 2, crop_cache: dict | None = None):
        _require_dali()
        ids = list(patient_ids)
        self.patient_ids = [str(p) for p in np.array_split(np.array(ids, dtype=object), num_shards)[shard_id]]
        self.batch_size = batch_size
        par = workers == "processes"
        aug = AugmentConfig() if augment is True else (augment or None)
        src = RoiBatcher(RoiReader(store_root, config, crop_cache=crop_cache), self.patient_ids, batch_size,
                         shuffle=shuffle,
                         seed=seed, threads=1 if par else num_threads, resample=resample_mode(aug))
        self._pipe = _build(config, batch_size, resolve_device(device), num_threads, aug, seed,
                            source=src, parallel=par, py_workers=py_workers)
        from nvidia.dali.plugin.pytorch import DALIGenericIterator, LastBatchPolicy

        self._it = DALIGenericIterator(self._pipe, ["x", "roi_box", "idx"], last_batch_policy=LastBatchPolicy.PARTIAL,
                                       auto_reset=True)

    def __len__(self) -> int:
        return math.ceil(len(self.patient_ids) / self.batch_size)

    def __iter__(self):
        for (b,) in self._it:
            idx = b["idx"].reshape(-1).tolist()
            yield {"x": b["x"], "patient_id": [self.patient_ids[i] for i in idx], "roi_box": b["roi_box"].numpy()}

    def close(self) -> None:
        self._it = self._pipe = None
