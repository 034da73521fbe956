"""Extraction from materialised ROI tensors: each ``EncodeWorker`` actor reads its share of the tensor
rows from the Parquet files itself and streams one result batch per block back to the driver (a Ray
streaming generator), no Ray Data and no per-batch round trip.

Profile (issue #19, 96 studies, batch 8, actor-side timestamps, shared machine at load 5-10): under Ray
Data's streaming executor the encoder actor sat idle 25-30 ms between calls of ~34 ms (its own work: 2 ms
to unpack the rows, 30 ms to encode, 1 ms to pack the result). With the actor streaming its own blocks the
gaps went, but each ``yield`` then waited 7-16 ms for Ray to store and report the result, and reading a
block from Parquet took ~5 ms: both now run on threads of their own beside the encoder
(``_Encoder.stream``), so calls follow each other back to back. Start-up (the actors' imports and
the encoder load) is paid once per run, before the first block.

Profile on a machine whose forward ran 2.7x faster (session 15, 96 studies, batch 8, per-thread rusage): the
actor's forward took 2.0-2.5 ms a volume against the driver's 1.6-1.8 for the same forward. Three causes, three
fixes: a fresh actor process faulted each forward's activation buffers in again (about 1,000 minor faults and 3-4
ms of system time per forward: ``dltr.core.memory.retain_freed_memory``); each result was its own 7-16 ms hand-off
to Ray (results ready meanwhile now go in one, ``ahead(..., gather=True)``); and the driver staged one fsynced
Parquet part per 8-row batch, 2.2 ms of CPU each, taken from the cores the forward runs on (a part now holds the
batches of ``ExtractConfig.stage_every_s``)."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pyarrow as pa

from dltr.core.memory import retain_freed_memory
from pipeline.actors import ahead, run_actors
from pipeline.extract._config import ExtractConfig
from pipeline.extract._worker import EncodeWorker


class _Encoder(EncodeWorker):
    """``EncodeWorker`` as a plain Ray actor that streams its share of the tensor blocks."""

    def __init__(self, encoder_dir: str, *, torch_threads: int = 1):
        retain_freed_memory()  # the actor's process is ours: no page faults for each forward's buffers
        super().__init__(encoder_dir, torch_threads=torch_threads)

    def stream(self, files: list[str], patient_ids: list[str], size: int, part: int,
               parts: int) -> Iterator[pa.Table]:
        """Work rows of blocks ``part``, ``part + parts``, ... of ``tensor_blocks(files, patient_ids, size)``.

        Three threads, each a queue ahead of the next: one reads and decodes the Parquet rows into the
        encoder's input tensor (``EncodeWorker.inputs``), one encodes (``EncodeWorker.encode``),
        and this generator hands results to Ray (a ``yield`` waits 7-16 ms for Ray to store and report the
        object; done in line, that wait stopped the encoder for a quarter of its time), every result ready at
        that moment in one hand-off (``ahead(..., gather=True)``). Parquet decoding, the forward pass and Ray's
        report all release the GIL."""
        mine = (b for i, b in enumerate(tensor_blocks(files, patient_ids, size)) if i % parts == part)
        yield from ahead((self.encode(x) for x in ahead((self.inputs(b) for b in mine), 2)), 4, gather=True)


def run_ray_tensors(hit, encoder_dir: str, cfg: ExtractConfig, on_batch: Callable[[pa.Table], None]) -> None:
    """Stream the materialised ROI tensors of ``hit`` (``models.RoiTensorHit``) through ``cfg.workers``
    ``EncodeWorker`` actors into ``on_batch`` (driver side, in completion order); no volume is decoded.
    Blocks of ``batch_size`` rows are dealt to the actors in turn (the same blocks whatever the number of
    workers); see ``pipeline.actors.run_actors`` for restarts and failures."""
    files, ids = [str(f) for f in hit.files], sorted(hit.patient_ids)
    run_actors(_Encoder, dict(encoder_dir=str(encoder_dir), torch_threads=max(1, int(cfg.cpus_per_worker))),
               lambda j, n: (files, ids, cfg.batch_size, j, n), on_batch, workers=cfg.workers,
               num_cpus=cfg.cpus_per_worker, max_restarts=cfg.max_restarts, max_task_retries=cfg.max_task_retries,
               what="extraction from ROI tensors")


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
