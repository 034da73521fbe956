"""``IngestConfig``: how a cohort becomes the volume store (frozen, round-trips through dicts)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from dltr.core.exceptions import IngestError
from dltr.core.hashing import content_hash, from_dict_checked

# Chunks (64, 64, 16) int16 = 128 KiB raw: a 64-cubed ROI around the tumour touches at most
# 2 x 2 x 5 chunks (MRI slices are 2-5x thicker than pixels, so 16 slices span about as many mm as
# 64 pixels), small enough that a crop over-reads little, large enough that per-chunk overhead
# (one file open + one blosc call) stays below the decode time. Clipped to the volume shape.
DEFAULT_CHUNKS = (64, 64, 16)
# Blosc zstd level 3 with byte shuffle won the measurement on the TotalSegmentator MR volume
# (int16, 117x91x20, chunks above): compression ratio 1.87 against 1.44 for blosc-lz4 (23 % fewer
# bytes written), 1.58 for plain zstd and 1.53 for gzip-6, with read speed on par with lz4/zstd
# (benchmarks/suites/ingest.py re-measures it on every run).
DEFAULT_COMPRESSOR = "blosc-zstd-3"
COMPRESSORS = ("blosc-zstd-3", "blosc-lz4-5", "zstd-3", "gzip-6", "none")


@dataclass(frozen=True)
class IngestConfig:
    """Ingest options.

    - ``target_spacing``: resample every volume to (sx, sy, sz) mm (linear for images, nearest for
      masks); ``None`` keeps native spacing.
    - ``chunks``, ``compressor``: Zarr layout (see the module comments for why).
    - ``workers``, ``processes``: size and kind of the local Dask cluster (threads by default: the
      work is zlib decoding, blosc compression and hashing, which release the GIL, and a process
      cluster's start-up and transfers made it 0.8x the serial loop on 2 cores; ``processes=True``
      for pure-Python-heavy readers on many cores); ``scheduler_address`` uses an existing cluster.
    - ``strict``: any per-file error fails the run (``IngestError``) after the sound patients are written.
    - ``pseudonym_key``: when set, ``patient_id`` is replaced by a keyed HMAC-SHA256 pseudonym
      (the key is never stored; give it with ``--pseudonym-key-env``).
    - ``stats``: compute ``ingest/intensity_stats.parquet`` (Dask, out of core).
    - ``durable``: make each patient group durable (``syncfs``, else one fsync per file) before it is
      renamed into place. ``False`` only for a scratch store that is thrown away after use (the scoring
      service ingests each request into one): still atomic (rename), but a power loss may lose it, and
      no ``syncfs`` flushes every other writer's dirty pages of the file system on each request.
    """

    target_spacing: tuple[float, float, float] | None = None
    chunks: tuple[int, int, int] = DEFAULT_CHUNKS
    compressor: str = DEFAULT_COMPRESSOR
    workers: int = 2
    processes: bool = False
    scheduler_address: str | None = None
    strict: bool = False
    pseudonym_key: str | None = dataclasses.field(default=None, repr=False)
    stats: bool = True
    durable: bool = True
    max_voxels: int = 1024**3
    max_bytes: int = 2**31  # a declared image above this many bytes is refused before allocating

    def __post_init__(self) -> None:
        if self.target_spacing is not None:
            ts = tuple(float(s) for s in self.target_spacing)
            if len(ts) != 3 or not all(s > 0 for s in ts):
                raise IngestError(f"target_spacing {self.target_spacing!r}: give three positive mm values")
            object.__setattr__(self, "target_spacing", ts)
        object.__setattr__(self, "chunks", tuple(int(c) for c in self.chunks))
        if len(self.chunks) != 3 or min(self.chunks) < 1:
            raise IngestError(f"chunks {self.chunks!r}: give three positive voxel counts")
        if self.compressor not in COMPRESSORS:
            raise IngestError(f"compressor {self.compressor!r}: choose one of {COMPRESSORS}")
        if self.workers < 1:
            raise IngestError(f"workers {self.workers!r}: give at least 1")

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["pseudonym_key"] = None  # never serialised
        d["chunks"] = list(self.chunks)
        d["target_spacing"] = list(self.target_spacing) if self.target_spacing else None
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> IngestConfig:
        return from_dict_checked(cls, d, IngestError)

    def output_hash(self) -> str:
        """Hash of the fields that change what is written (not how many workers wrote it)."""
        d = self.to_dict()
        keep = ("target_spacing", "chunks", "compressor")
        return content_hash({k: d[k] for k in keep} | {"pseudonymised": self.pseudonym_key is not None})
