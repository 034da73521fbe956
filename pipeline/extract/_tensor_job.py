"""Extraction from materialised ROI tensors: each ``EncodeWorker`` actor reads its share of the tensor
rows from the Parquet files itself and streams one result batch per block back to the driver (a Ray
streaming generator), no Ray Data and no per-batch round trip.

Profile (issue #19, 96 studies, batch 8): under Ray Data's streaming executor the encoder actor sat idle
25-30 ms between calls of ~34 ms (its own work: 2 ms to unpack the rows, 30 ms to encode, 1 ms to pack the
result), so the run reached under half of the encoder-only rate. Here the actor goes from one block to the
next without waiting for the driver; start-up (the actors' imports and the encoder load) is paid once per
run, before the first block."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pyarrow as pa

from dltr.core.exceptions import DltrError
from pipeline.extract._config import ExtractConfig
from pipeline.extract._worker import EncodeWorker


class _Encoder(EncodeWorker):
    """``EncodeWorker`` as a plain Ray actor that streams its share of the blocks."""

    def encode_blocks(self, files: list[str], patient_ids: list[str], size: int, part: int,
                      parts: int) -> Iterator[pa.Table]:
        """Work rows of blocks ``part``, ``part + parts``, ... of ``tensor_blocks(files, patient_ids, size)``.
        The next block is read and decoded from Parquet on a thread while this one encodes (both release
        the GIL), so the read is off the encoder's path."""
        from concurrent.futures import ThreadPoolExecutor

        mine = (b for i, b in enumerate(tensor_blocks(files, patient_ids, size)) if i % parts == part)
        with ThreadPoolExecutor(1, thread_name_prefix="dltr-read") as pool:
            ahead = pool.submit(next, mine, None)
            while (block := ahead.result()) is not None:
                ahead = pool.submit(next, mine, None)
                yield self(block)


def run_ray_tensors(hit, encoder_dir: str, cfg: ExtractConfig, on_batch: Callable[[pa.Table], None]) -> None:
    """Stream the materialised ROI tensors of ``hit`` (``models.RoiTensorHit``) through ``cfg.workers``
    ``EncodeWorker`` actors into ``on_batch`` (driver side, in completion order); no volume is decoded.
    Blocks of ``batch_size`` rows are dealt to the actors in turn (the same blocks whatever the number of
    workers). A crashed actor is restarted and its stream retried (``max_restarts`` /
    ``max_task_retries``; the sink drops rows it has already staged); one that cannot be raises ``DltrError``."""
    import ray

    remote = ray.remote(_Encoder).options(num_cpus=cfg.cpus_per_worker, max_restarts=cfg.max_restarts,
                                          max_task_retries=cfg.max_task_retries)
    actors = [remote.remote(encoder_dir=str(encoder_dir), torch_threads=max(1, int(cfg.cpus_per_worker)))
              for _ in range(cfg.workers)]
    files, ids = [str(f) for f in hit.files], sorted(hit.patient_ids)
    streams = [a.encode_blocks.remote(files, ids, cfg.batch_size, j, cfg.workers) for j, a in enumerate(actors)]
    try:
        while streams:
            ready, _ = ray.wait(streams, num_returns=1)
            for gen in ready:
                try:
                    batch = ray.get(next(gen))
                except StopIteration:
                    streams.remove(gen)
                    continue
                except (ray.exceptions.RayActorError, ray.exceptions.RayTaskError) as e:
                    raise DltrError(f"extraction from ROI tensors: an encoder actor failed beyond its "
                                    f"{cfg.max_restarts} restarts ({type(e).__name__}: {str(e).splitlines()[0]}); "
                                    "run again to resume from the staged batches") from None
                on_batch(batch)
    finally:
        for a in actors:
            ray.kill(a, no_restart=True)


def tensor_blocks(files: list[str], patient_ids: list[str], size: int) -> Iterator[pa.Table]:
    """Blocks of ``size`` tensor rows of ``patient_ids``, in file order (one record batch in memory at a time)."""
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    want, held = pa.array(sorted(patient_ids), pa.string()), []
    for f in files:
        for rb in pq.ParquetFile(f).iter_batches(batch_size=max(size, 64)):
            rows = pa.Table.from_batches([rb])
            keep = pc.is_in(rows.column("patient_id"), want)
            if not pc.all(keep).as_py():  # a copy only when some rows are not wanted
                rows = rows.filter(keep)
            rows = pa.concat_tables([*held, rows]) if held else rows
            held = []
            for s in range(0, rows.num_rows - rows.num_rows % size, size):
                block = rows.slice(s, size)
                yield block if all(c.num_chunks == 1 for c in block.columns) else block.combine_chunks()
            if rows.num_rows % size:
                held = [rows.slice(rows.num_rows - rows.num_rows % size)]
    if held and held[0].num_rows:
        yield held[0].combine_chunks()
