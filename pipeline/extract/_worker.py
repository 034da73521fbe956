"""The stateful extraction workers: DALI ROI pipelines and encoders in eval mode.

``EmbedWorker`` loads and encodes in line (the GPU path: DALI hands the encoder a GPU tensor)
and is also ``extract_local``'s plain loop. On CPU each Ray actor of the job holds a ``LoadWorker``
that reads and preprocesses batch k+1 on one thread while its ``EncodeWorker`` encodes batch k on
another (``_ray_job._VolumeEncoder``). All three share ``_load_batch`` and ``_encode_batch``,
so the rows agree bit for bit whichever path produced them.
"""

from __future__ import annotations

import os
import socket
import time
from pathlib import Path

import numpy as np
import pyarrow as pa

from dltr.core.layout import encoder_card
from pipeline.extract._rows import roi_boxes, work_rows

# Test hook: when set to a file path that does not exist, the first worker to see it creates
# it and dies hard (os._exit) - a real actor crash for the restart-and-retry test.
CRASH_ONCE_ENV = "DLTR_EXTRACT_CRASH_ONCE"


class EmbedWorker:
    """Batch of scope rows (``pyarrow.Table``) -> work rows (feature row or error + timings)."""

    def __init__(self, store_root: str, encoder_dir: str, batch_size: int, *, gpu: bool = False,
                 dali_threads: int = 1, torch_threads: int = 1):
        import torch

        from models import load_encoder
        from pipeline.loaders import DaliRoiPipeline, RoiConfig

        if torch_threads > 0:
            torch.set_num_threads(int(torch_threads))
        self.gpu = bool(gpu) and torch.cuda.is_available()
        self.device = torch.device("cuda", torch.cuda.current_device()) if self.gpu else torch.device("cpu")
        module, card = load_encoder(Path(encoder_dir))
        if self.gpu:
            module = module.to(self.device, memory_format=torch.channels_last_3d)
        self.module, self.card = module.eval(), card
        self.dim = int(card["embed_dim"])
        self.config = RoiConfig.from_dict(card["preprocess"])
        self.pipe = DaliRoiPipeline(store_root, self.config, batch_size,
                                    device=self.device.index if self.gpu else None, num_threads=dali_threads)
        self.worker = f"{socket.gethostname()}:{os.getpid()}"

    def _load(self, ids: list[str]):
        return _load_batch(self.pipe, ids)

    def _encode(self, x):
        import torch

        with torch.inference_mode():
            if self.gpu:
                x = x.to(self.device, non_blocking=True).contiguous(memory_format=torch.channels_last_3d)
                with torch.autocast("cuda", dtype=torch.bfloat16):
                    emb, _ = self.module(x)
            else:
                emb, _ = self.module(x)
            return emb.float().cpu().numpy()

    def __call__(self, batch: pa.Table) -> pa.Table:
        _maybe_crash()
        ids = [str(p) for p in batch.column("patient_id").to_pylist()]
        t0 = time.perf_counter()
        x, boxes, errors = self._load(ids)
        t1 = time.perf_counter()
        emb = _encode_batch(self._encode, x, len(ids), self.dim)
        t2 = time.perf_counter()
        _check_finite(ids, emb, errors)
        return work_rows(batch, boxes, emb, errors, t1 - t0, t2 - t1, self.worker)


def _load_batch(pipe, ids: list[str]):
    """(tensor or per-patient list with None for failures, boxes, errors): unreadable patients isolated one by one."""
    try:
        x, boxes = pipe.run(ids)
        return x, np.asarray(boxes), {}
    except Exception:  # noqa: BLE001 - one bad patient must not sink its batch; retried one by one
        pass
    xs, boxes, errors = [], [], {}
    for p in ids:
        try:
            x1, b1 = pipe.run([p])
            xs.append(x1)
            boxes.append(np.asarray(b1)[0])
        except Exception as e:  # noqa: BLE001 - recorded with its reason in the errors table
            errors[p] = (f"{type(e).__name__}: {e}".splitlines()[0][:500], "load")
            xs.append(None)
            boxes.append(np.zeros(6, np.int32))
    return xs, np.stack(boxes), errors


def _encode_batch(encode, x, n: int, dim: int) -> np.ndarray:
    """Embeddings of the loaded patients (zeros where loading failed), the readable ones in one forward pass."""
    emb = np.zeros((n, dim), np.float32)
    if isinstance(x, list):  # some patients failed: encode the readable ones together
        good = [i for i, t in enumerate(x) if t is not None]
        if good:
            import torch

            emb[good] = encode(torch.cat([x[i] for i in good]))
    elif n:
        emb[:] = encode(x)
    return emb


def _check_finite(ids: list[str], emb: np.ndarray, errors: dict[str, tuple[str, str]]) -> None:
    finite = np.isfinite(emb).all(axis=1)
    if finite.all():
        return
    for i, p in enumerate(ids):
        if p not in errors and not finite[i]:
            errors[p] = (f"embedding has {int((~np.isfinite(emb[i])).sum())} non-finite value(s)", "encode")
            emb[i] = 0.0


class LoadWorker:
    """Pipelined stage 1 (CPU): scope rows -> the same rows plus ``x`` (the flattened ROI tensor),
    ``roi_box``, ``load_error`` / ``load_stage`` and each row's share of the batch's ``load_s``."""

    def __init__(self, store_root: str, encoder_dir: str, batch_size: int, *, dali_threads: int = 1):
        import json

        from pipeline.loaders import DaliRoiPipeline, RoiConfig

        card = json.loads(encoder_card(encoder_dir).read_text())
        self.config = RoiConfig.from_dict(card["preprocess"])
        self.pipe = DaliRoiPipeline(store_root, self.config, batch_size, device=None, num_threads=dali_threads)

    def __call__(self, batch: pa.Table) -> pa.Table:
        ids = [str(p) for p in batch.column("patient_id").to_pylist()]
        t0 = time.perf_counter()
        x, boxes, errors = _load_batch(self.pipe, ids)
        size = self.config.n_channels * int(np.prod(self.config.grid))
        flat = np.zeros((len(ids), size), np.float32)
        for i in range(len(ids)):
            xi = x[i] if isinstance(x, list) else x[i:i + 1]
            if xi is not None:
                flat[i] = xi.numpy().reshape(-1)
        err = [errors.get(p, (None, None)) for p in ids]
        extra = {
            "x": pa.FixedSizeListArray.from_arrays(pa.array(flat.ravel()), size),
            "roi_box": roi_boxes(boxes),
            "load_error": pa.array([e[0] for e in err], pa.string()),
            "load_stage": pa.array([e[1] for e in err], pa.string()),
            # each row's share of its batch's load time
            "load_s": pa.array(np.full(len(ids), (time.perf_counter() - t0) / max(len(ids), 1)), pa.float64()),
        }
        for k, v in extra.items():
            batch = batch.append_column(k, v)
        return batch


class EncodeWorker:
    """Pipelined stage 2: ``LoadWorker`` rows -> work rows, exactly as ``EmbedWorker`` makes them."""

    def __init__(self, encoder_dir: str, *, torch_threads: int = 1, keep_x: bool = False):
        import torch

        from models import load_encoder
        from pipeline.loaders import RoiConfig

        if torch_threads > 0:
            torch.set_num_threads(int(torch_threads))
        module, card = load_encoder(Path(encoder_dir))
        self.module, self.dim = module.eval(), int(card["embed_dim"])
        self.config = RoiConfig.from_dict(card["preprocess"])
        self.worker = f"{socket.gethostname()}:{os.getpid()}"
        self.keep_x = keep_x  # return the input tensors too (the run materialises them)

    def _encode(self, x):
        import torch

        with torch.inference_mode():
            return self.module(x)[0].float().numpy()

    def __call__(self, batch: pa.Table) -> pa.Table:
        return self.encode(self.inputs(batch))

    def inputs(self, batch: pa.Table) -> tuple:
        """The encoder's input tensor and what the work rows need, unpacked from ``batch`` (a thread other
        than the encoder's can do this for the next batch)."""
        import torch

        if "x" not in batch.column_names:  # rows of the materialised ROI tensors (models.materialise_rois)
            batch = _from_tensors(batch)
        ids = [str(p) for p in batch.column("patient_id").to_pylist()]
        errs = batch.column("load_error").to_pylist()
        errors = {p: (e, s) for p, e, s in zip(ids, errs, batch.column("load_stage").to_pylist(), strict=True) if e}
        n, shape = len(ids), (self.config.n_channels, *self.config.grid)
        flat = batch.column("x").combine_chunks().flatten().to_numpy(zero_copy_only=False)
        xt = torch.from_numpy(flat.reshape(n, *shape).copy())
        x = [None if errs[i] else xt[i:i + 1] for i in range(n)] if errors else xt
        boxes = batch.column("roi_box").combine_chunks().flatten().to_numpy(zero_copy_only=False).reshape(n, 6)
        load_s = float(np.sum(batch.column("load_s").to_numpy()))
        return batch, ids, errors, x, boxes, load_s

    def encode(self, inputs: tuple) -> pa.Table:
        """Work rows of one batch of ``inputs``."""
        _maybe_crash()
        batch, ids, errors, x, boxes, load_s = inputs
        t1 = time.perf_counter()
        emb = _encode_batch(self._encode, x, len(ids), self.dim)
        t2 = time.perf_counter()
        _check_finite(ids, emb, errors)
        out = work_rows(batch, boxes, emb, errors, load_s, t2 - t1, self.worker)
        return out.append_column("x", batch.column("x")) if self.keep_x else out


def _from_tensors(batch: pa.Table) -> pa.Table:
    """Tensor-set rows (``embedding`` = the flattened encoder input) -> ``LoadWorker`` rows: nothing
    failed to load, and no volume bytes were read (``itemsize`` 0)."""
    from features import unpacked

    t0 = time.perf_counter()
    n = batch.num_rows
    x = unpacked(batch.column("embedding").combine_chunks())  # stored packed (features.PACKED): the same bytes
    cols = {"patient_id": batch.column("patient_id"), "center": batch.column("center"),
            "phases": batch.column("phases"), "input_checksum": batch.column("input_checksum"),
            "itemsize": pa.array(np.zeros(n, np.int32)), "x": x, "roi_box": batch.column("roi_box"),
            "load_error": pa.nulls(n, pa.string()), "load_stage": pa.nulls(n, pa.string())}
    out = pa.table(cols)
    return out.append_column("load_s", pa.array(np.full(n, (time.perf_counter() - t0) / max(n, 1)), pa.float64()))


def _maybe_crash() -> None:
    path = os.environ.get(CRASH_ONCE_ENV)
    if path and not os.path.exists(path):
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        except FileExistsError:
            return
        os.close(fd)
        os._exit(17)
