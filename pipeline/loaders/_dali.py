"""The DALI ROI pipeline: chunk-aligned Zarr reads in ``external_source``, then normalise,
resample (+ augment) with ``warp_affine``, flip and jitter on the CPU or the GPU.

One graph definition for both devices. ``DaliRoiPipeline.run`` feeds batches from the
caller's process (reads on a thread pool) and is reused across calls - the extraction path.
``DaliRoiLoader`` drives the same graph from a parallel ``external_source`` (worker
processes, ``spawn``) or from threads, through DALI's PyTorch iterator - the training path.
"""

from __future__ import annotations

import math
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from dltr.exceptions import MissingDependencyError
from pipeline.loaders._augment import AugmentConfig, augment_matrix, flip_args, jitter
from pipeline.loaders._config import RoiConfig
from pipeline.loaders._roi import RoiReader, dali_matrix

_NAMES = ("crop", "mat", "mean", "std", "box", "idx")


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


class RoiBatcher:
    """Reads a batch of patients into the pipeline's inputs; picklable for DALI worker processes."""

    def __init__(self, reader: RoiReader, patient_ids=(), batch_size: int = 1, *, shuffle: bool = False,
                 seed: int = 0, threads: int = 1, with_mask: bool = False):
        self.reader, self.patient_ids = reader, list(patient_ids)
        self.batch_size, self.shuffle, self.seed = batch_size, shuffle, seed
        self.threads, self.with_mask = threads, with_mask

    def __getstate__(self) -> dict[str, Any]:
        return dict(self.__dict__)

    def batch(self, ids, idx=None) -> list[list[np.ndarray]]:
        grid = self.reader.config.grid
        if self.threads > 1 and len(ids) > 1:
            with ThreadPoolExecutor(self.threads) as ex:
                crops = list(ex.map(lambda p: self.reader.read(p, self.with_mask), ids))
        else:
            crops = [self.reader.read(p, self.with_mask) for p in ids]
        idx = range(len(ids)) if idx is None else idx
        cols = [[c.crop for c in crops],
                [dali_matrix(c.requested, c.read, grid) for c in crops],
                [c.mean.reshape(1, 1, 1, -1) for c in crops],
                [(1.0 / c.std).astype(np.float32).reshape(1, 1, 1, -1) for c in crops],
                [c.read.astype(np.int32) for c in crops],
                [np.array(i, dtype=np.int64) for i in idx]]
        if self.with_mask:
            cols.append([c.mask[..., None] for c in crops])
        return cols

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


def _build(config: RoiConfig, batch_size: int, device: int | None, num_threads: int, augment, seed: int,
           source=None, parallel: bool = False, py_workers: int = 1, with_mask: bool = False):
    from nvidia.dali import fn, pipeline_def, types

    aug = AugmentConfig() if augment is True else (augment or None)
    names = _NAMES + (("mask",) if with_mask else ())
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
        mat = augment_matrix(fn, d["mat"], config.grid, aug) if aug else d["mat"]
        warp = dict(matrix=mat, size=list(config.grid), fill_value=0.0, interp_type=types.INTERP_LINEAR,
                    inverse_map=True)
        x = fn.warp_affine(x, **warp)
        flips = flip_args(fn, aug) if aug else {}
        if flips:
            x = fn.flip(x, **flips)
        if aug:
            x = jitter(fn, x, config.n_channels, aug, gpu)
        outs = [fn.transpose(x, perm=[3, 0, 1, 2]), d["box"], d["idx"]]
        if with_mask:
            m = d["mask"].gpu() if gpu else d["mask"]
            m = fn.warp_affine(m, **warp)
            m = fn.flip(m, **flips) if flips else m
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
        self._batcher = RoiBatcher(RoiReader(store_root, config, zarr_store=zarr_store), batch_size=batch_size,
                                   threads=read_threads or num_threads, with_mask=with_mask)
        self._pipe = _build(config, batch_size, self.device, num_threads, augment, seed, with_mask=with_mask)

    def run(self, patient_ids) -> tuple[Any, np.ndarray] | tuple[Any, np.ndarray, Any]:
        """(x (N, C, X, Y, Z) float32 tensor, roi_boxes (N, 6) int32[, warped masks (N, 1, X, Y, Z)])."""
        import torch

        ids = list(patient_ids)
        xs, boxes, masks = [], [], []
        for s in range(0, len(ids), self.batch_size):
            cols = self._batcher.batch(ids[s:s + self.batch_size])
            outs = self._pipe.run(**{n: c for n, c in zip(_NAMES + ("mask",), cols, strict=False)})
            xs.append(to_torch(outs[0]))
            boxes.append(np.array(outs[1].as_array()))
            if self.with_mask:
                masks.append(to_torch(outs[3]))
        if not ids:
            g = self.config.grid
            return torch.empty((0, self.config.n_channels, *g)), np.empty((0, 6), np.int32)
        res = (torch.cat(xs), np.concatenate(boxes))
        return res + (torch.cat(masks),) if self.with_mask else res

    def close(self) -> None:
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
    """

    def __init__(self, store_root: str | Path, patient_ids, config: RoiConfig, batch_size: int = 8,
                 augment: bool | AugmentConfig = False, seed: int = 0, shard_id: int = 0, num_shards: int = 1,
                 device: int | str | None = None, *, shuffle: bool = False, num_threads: int = 2,
                 workers: str = "threads", py_workers: int = 2):
        _require_dali()
        ids = list(patient_ids)
        self.patient_ids = [str(p) for p in np.array_split(np.array(ids, dtype=object), num_shards)[shard_id]]
        self.batch_size = batch_size
        par = workers == "processes"
        src = RoiBatcher(RoiReader(store_root, config), self.patient_ids, batch_size, shuffle=shuffle,
                         seed=seed, threads=1 if par else num_threads)
        self._pipe = _build(config, batch_size, resolve_device(device), num_threads, augment, seed,
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
