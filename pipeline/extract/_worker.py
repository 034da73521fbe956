"""The stateful extraction worker: one DALI ROI pipeline and one encoder in eval mode.

Used as the callable class of Ray Data's ``map_batches`` (one instance per actor) and, in
``extract_local``, directly in a plain loop - the same object on both paths, so their rows agree.
"""

from __future__ import annotations

import os
import socket
import time
from pathlib import Path

import numpy as np
import pyarrow as pa

from pipeline.extract._rows import work_rows

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
        """Tensor and boxes of the readable studies; unreadable ones isolated study by study."""
        try:
            x, boxes = self.pipe.run(ids)
            return x, np.asarray(boxes), {}
        except Exception:  # noqa: BLE001 - one bad study must not sink its batch; retried one by one
            pass
        xs, boxes, errors = [], [], {}
        for p in ids:
            try:
                x1, b1 = self.pipe.run([p])
                xs.append(x1)
                boxes.append(np.asarray(b1)[0])
            except Exception as e:  # noqa: BLE001 - recorded with its reason in the errors table
                errors[p] = (f"{type(e).__name__}: {e}".splitlines()[0][:500], "load")
                xs.append(None)
                boxes.append(np.zeros(6, np.int32))
        return xs, np.stack(boxes), errors

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
        emb = np.zeros((len(ids), self.dim), np.float32)
        if isinstance(x, list):  # some studies failed: encode the readable ones together
            good = [i for i, t in enumerate(x) if t is not None]
            if good:
                import torch

                emb[good] = self._encode(torch.cat([x[i] for i in good]))
        elif len(ids):
            emb[:] = self._encode(x)
        t2 = time.perf_counter()
        for i, p in enumerate(ids):
            if p not in errors and not np.all(np.isfinite(emb[i])):
                errors[p] = (f"embedding has {int((~np.isfinite(emb[i])).sum())} non-finite value(s)", "encode")
                emb[i] = 0.0
        return work_rows(batch, boxes, emb, errors, t1 - t0, t2 - t1, self.worker)


def _maybe_crash() -> None:
    path = os.environ.get(CRASH_ONCE_ENV)
    if path and not os.path.exists(path):
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        except FileExistsError:
            return
        os.close(fd)
        os._exit(17)
