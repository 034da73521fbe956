"""Box reads from Zarr v3 arrays: only the chunks a box overlaps, decoded in the caller's thread.

zarr's ``Array.__getitem__`` costs one event-loop round trip per call and hands every chunk's
decode to a worker thread; for a small ROI box that overhead was most of the read. Here each box
is planned in advance (chunk keys, slices); its chunk files are read directly when the array is
in a plain ``LocalStore``, else fetched through the array's store for a whole batch in one
``gather``; then decoded with the numcodecs codec zarr wraps (blosc, zstd, gzip; they release
the GIL) or zarr's synchronous ``_decode_sync``. Arrays whose codecs do not allow it (sharding,
array-to-array codecs, v2 metadata) are read through zarr's own ``getitem``: same values either way
(tests/test_loaders.py compares every path with zarr).
"""

from __future__ import annotations

import itertools
import os
from dataclasses import dataclass
from typing import Any

import numpy as np


@dataclass
class BoxRead:
    """One array box to read into ``out`` (a view of the caller's buffer, any dtype)."""

    array: Any  # zarr AsyncArray
    box: tuple[slice, ...]
    out: np.ndarray
    _keys: list[str] | None = None
    _parts: list[tuple[tuple[slice, ...], tuple[slice, ...]]] | None = None
    _raw: list[bytes | None] | None = None
    _dense: np.ndarray | None = None

    def plan(self) -> None:
        """Chunk keys and (chunk slice, out slice) pairs of the box (left unset when zarr must read it)."""
        if _sync_codecs(self.array) is None:
            return
        if any(s.stop <= s.start for s in self.box):  # an empty box reads nothing
            self._keys, self._parts = [], []
            return
        md = self.array.metadata
        axes = []  # per axis: (chunk index, slice in the chunk, slice in out) of every overlapping chunk
        for s, c in zip(self.box, md.chunk_grid.chunk_shape, strict=True):
            ax = []
            for i in range(s.start // c, (s.stop - 1) // c + 1):
                lo, hi = max(s.start, i * c), min(s.stop, (i + 1) * c)
                ax.append((i, slice(lo - i * c, hi - i * c), slice(lo - s.start, hi - s.start)))
            axes.append(ax)
        self._keys, self._parts = [], []
        for parts in itertools.product(*axes):
            self._keys.append(md.encode_chunk_key(tuple(p[0] for p in parts)))
            self._parts.append((tuple(p[1] for p in parts), tuple(p[2] for p in parts)))

    async def fetch(self) -> None:
        """Fetch the chunk bytes through the store (or, on zarr's path, the decoded box)."""
        import asyncio

        if self._keys is None:
            self._dense = np.asarray(await self.array.getitem(self.box))
            return
        if self._raw is not None:  # already read from the local files
            return
        from zarr.core.buffer import default_buffer_prototype

        proto = default_buffer_prototype()
        sp = self.array.store_path
        got = await asyncio.gather(*((sp / k).get(prototype=proto) for k in self._keys))
        self._raw = [None if b is None else b.to_bytes() for b in got]

    def read_local(self) -> bool:
        """Read the chunk files directly when the array lives in a plain ``LocalStore`` (no event loop,
        no thread per chunk; the same files zarr would read). False when the store is anything else."""
        from zarr.storage import LocalStore

        sp = self.array.store_path
        if self._keys is None or type(sp.store) is not LocalStore:
            return False
        base = os.path.join(str(sp.store.root), sp.path)
        raw = []
        for k in self._keys:
            try:
                with open(os.path.join(base, k), "rb") as f:
                    raw.append(f.read())
            except FileNotFoundError:
                raw.append(None)
        self._raw = raw
        return True

    def decode(self) -> None:
        """Decode the fetched chunks into ``out`` (missing chunks read as the fill value)."""
        if self._dense is not None:
            self.out[...] = self._dense
            self._dense = None
            return
        arr = self.array
        decode = _decoder(arr)
        fill = arr.metadata.fill_value
        for raw, (src, dst) in zip(self._raw, self._parts, strict=True):
            self.out[dst] = fill if raw is None else decode(raw)[src]
        self._raw = None


_NUMCODECS = {"BloscCodec": "_blosc_codec", "ZstdCodec": "_zstd_codec", "GzipCodec": "_gzip_codec"}


def _decoder(arr):
    """bytes -> chunk ndarray: the numcodecs codecs directly when zarr wraps them (blosc, zstd,
    gzip; no Buffer objects per chunk), else zarr's own synchronous codec chain."""
    from zarr.core.buffer import default_buffer_prototype

    md = arr.metadata
    codecs = _sync_codecs(arr)
    chunk = tuple(md.chunk_grid.chunk_shape)
    if all(type(c).__name__ in _NUMCODECS for c in codecs[1:]):
        endian = codecs[0].endian
        dtype = np.dtype(md.dtype.to_native_dtype()).newbyteorder(
            ">" if endian is not None and endian.value == "big" else "<")
        steps = [getattr(c, _NUMCODECS[type(c).__name__]).decode for c in reversed(codecs[1:])]

        def fast(raw: bytes) -> np.ndarray:
            for step in steps:
                raw = step(raw)
            return np.frombuffer(raw, dtype=dtype).reshape(chunk)

        return fast
    spec = md.get_chunk_spec((0,) * len(chunk), arr.config, default_buffer_prototype())
    proto = default_buffer_prototype()

    def dec(raw: bytes) -> np.ndarray:
        buf = proto.buffer.from_bytes(raw)
        for c in reversed(codecs[1:]):
            buf = c._decode_sync(buf, spec)
        return codecs[0]._decode_sync(buf, spec).as_numpy_array()

    return dec


def _sync_codecs(arr) -> tuple | None:
    """The codec chain when it is one bytes codec + bytes-to-bytes codecs with synchronous decode."""
    from zarr.abc.codec import BytesBytesCodec
    from zarr.codecs import BytesCodec
    from zarr.core.chunk_grids import RegularChunkGrid

    md = arr.metadata
    if md.zarr_format != 3 or not isinstance(md.chunk_grid, RegularChunkGrid):
        return None
    codecs = tuple(md.codecs)
    if not codecs or type(codecs[0]) is not BytesCodec:
        return None
    if not all(isinstance(c, BytesBytesCodec) and hasattr(c, "_decode_sync") for c in codecs[1:]):
        return None
    return codecs
