"""The Ray job from the volumes: scope rows -> one plain actor per worker (DALI ROI loads and the encoder,
overlapped on threads on CPU) -> streamed result batches (``pipeline.actors.run_actors``)."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pyarrow as pa

from dltr.core.memory import retain_freed_memory
from pipeline.actors import StreamsBlocks, ahead, blocks_of, run_actors
from pipeline.extract._config import ExtractConfig
from pipeline.extract._worker import EmbedWorker, EncodeWorker, LoadWorker


class _VolumeEncoder:
    """One CPU worker: a ``LoadWorker`` (DALI ROI reads) a block ahead of an ``EncodeWorker`` on threads of their
    own, so that a worker's rate is bounded by the slower of the two, not by their sum (DALI's reads and the
    forward pass release the GIL). The rows are those of ``EmbedWorker``, bit for bit."""

    def __init__(self, store_root: str, encoder_dir: str, batch_size: int, dali_threads: int, torch_threads: int,
                 keep_x: bool):
        retain_freed_memory()  # the actor's process is ours: no page faults for each forward's buffers
        self.load = LoadWorker(store_root, encoder_dir, batch_size, dali_threads=dali_threads)
        self.enc = EncodeWorker(encoder_dir, torch_threads=torch_threads, keep_x=keep_x)

    def stream(self, table: pa.Table, size: int, part: int, parts: int) -> Iterator[pa.Table]:
        loaded = ahead((self.enc.inputs(self.load(b)) for b in blocks_of(table, size, part, parts)), 2)
        yield from ahead((self.enc.encode(x) for x in loaded), 4, gather=True)


class _VolumeEmbedder(StreamsBlocks, EmbedWorker):
    """One worker loading and encoding in line (``ExtractConfig.pipelined=False``, and every GPU worker: DALI
    hands the encoder a GPU tensor)."""

    def __init__(self, *args, **kwargs):
        retain_freed_memory()
        super().__init__(*args, **kwargs)


def run_ray(pending: pa.Table, store_root: str, encoder_dir: str, cfg: ExtractConfig,
            on_batch: Callable[[pa.Table], None], *, keep_x: bool = False) -> None:
    """Stream the work rows of ``pending`` through ``cfg.workers`` actors into ``on_batch`` (driver side); with
    ``keep_x`` (CPU) the rows carry their encoder inputs too (the run materialises them)."""
    import ray

    torch_threads = max(1, int(cfg.cpus_per_worker))
    if (cfg.pipelined or keep_x) and cfg.gpus_per_worker == 0:
        actor, kwargs = _VolumeEncoder, dict(store_root=str(store_root), encoder_dir=str(encoder_dir),
                                             batch_size=cfg.batch_size, dali_threads=cfg.dali_threads,
                                             torch_threads=torch_threads, keep_x=keep_x)
    else:
        actor, kwargs = _VolumeEmbedder, dict(store_root=str(store_root), encoder_dir=str(encoder_dir),
                                              batch_size=cfg.batch_size, gpu=cfg.gpus_per_worker > 0,
                                              dali_threads=cfg.dali_threads, torch_threads=torch_threads)
    table = ray.put(pending)
    run_actors(actor, kwargs, lambda j, n: (table, cfg.batch_size, j, n), on_batch, workers=cfg.workers,
               num_cpus=cfg.cpus_per_worker, num_gpus=cfg.gpus_per_worker, max_restarts=cfg.max_restarts,
               max_task_retries=cfg.max_task_retries, what="extraction")
