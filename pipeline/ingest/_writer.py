"""Zarr v3 patient groups, written under a temporary name and renamed into place.

``STORE/volumes.zarr/<patient_id>`` appears in one ``rename`` only when every array and attribute
of the patient is on disk (fsynced); a crash leaves at most a folder under ``STORE/ingest/.tmp``,
which the next run removes (``clean_tmp``, under the ingest lock ``STORE/ingest/.writer.lock``).

A changed patient replaces its group by one atomic *exchange* of the two directory entries
(Linux ``renameat2(RENAME_EXCHANGE)``): at every instant ``volumes.zarr/<patient_id>`` is either the
complete old group or the complete new one - never absent, never a mix - so ``ingest/studies.parquet``
(written after all patients) never names a missing group, whatever the kill point. The old group,
now at the temporary name, is renamed to ``ingest/.tmp/<key>.old.<hex>`` and removed.

Where the filesystem has no exchange (non-Linux, or EINVAL from the filesystem) the fallback is two
renames (old aside, new in). A kill between them leaves the old group at ``ingest/.tmp/<key>.old.<hex>``
and no visible group; the next run's ``clean_tmp`` (before any patient is written) renames it back, so
the store is consistent again at open. On such filesystems readers can see that window until then.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import os
import re
import shutil
import uuid
from pathlib import Path
from typing import Any

import numpy as np

from dltr.core.exceptions import StoreError
from dltr.core.io import fsync_dir, fsync_tree
from dltr.core.layout import StoreLayout, VolumeAttrs

from ._config import IngestConfig

OLD_TAG = ".old."  # <key>.old.<hex>: a replaced group on its way out (see the module docstring)
_AT_FDCWD = -100
_RENAME_EXCHANGE = 2


def compressor_codec(name: str):
    """The zarr v3 codec for a compressor name of ``IngestConfig.compressor``."""
    from zarr.codecs import BloscCodec, GzipCodec, ZstdCodec

    kind, _, level = name.rpartition("-")
    if name == "none":
        return None
    if kind == "blosc-zstd":
        return BloscCodec(cname="zstd", clevel=int(level), shuffle="shuffle")
    if kind == "blosc-lz4":
        return BloscCodec(cname="lz4", clevel=int(level), shuffle="shuffle")
    if kind == "zstd":
        return ZstdCodec(level=int(level))
    return GzipCodec(level=int(level))


def open_root(store_root: Path):
    """Create (once) and open the root group of the volume store (``StoreLayout.volumes``)."""
    import zarr

    path = StoreLayout.of(store_root).volumes
    if not (path / "zarr.json").exists():
        zarr.open_group(path, mode="a")
    return zarr.open_group(path, mode="r")


def ingest_lock(store_root: Path):
    """The volume store's single-writer lock, ``fcntl.flock`` on ``STORE/ingest/.writer.lock``.

    The feature store's ``WriterLock`` (held for the whole run; the OS releases it when the process
    dies; re-entrant within a process), on its own file so that ingest and feature-store writers do
    not exclude each other. A second run gets ``StoreLockedError`` at once.
    """
    from dltr.core.lock import WriterLock

    (StoreLayout.of(store_root).ingest).mkdir(parents=True, exist_ok=True)
    return WriterLock(StoreLayout.of(store_root).ingest, "ingest")


def clean_tmp(store_root: Path) -> None:
    """Remove what an interrupted run left under ``ingest/.tmp`` (takes the ingest lock: a concurrent
    run's temporary groups are never removed under it). A replaced group whose new group never landed
    (the two-rename fallback, killed between the renames) is renamed back first."""
    with ingest_lock(store_root):
        tmp_root = StoreLayout.of(store_root).ingest_tmp
        if not tmp_root.is_dir():
            return
        for p in sorted(tmp_root.iterdir()):
            key = _old_group_key(p)
            if key is not None and not (StoreLayout.of(store_root).volume_group(key)).exists():
                os.replace(p, StoreLayout.of(store_root).volume_group(key))
                fsync_dir(StoreLayout.of(store_root).volumes)
        shutil.rmtree(tmp_root, ignore_errors=True)


def _old_group_key(p: Path) -> str | None:
    """The patient key of a replaced group ``<key>.old.<hex>``, else None. A temporary group of a
    patient whose key itself contains ``.old.`` is told apart by its own ``patient_id`` attribute."""
    m = re.fullmatch(r"(.+)\.old\.[0-9a-f]{32}", p.name)
    if m is None or not p.is_dir():
        return None
    try:
        attrs = VolumeAttrs.read(p / "zarr.json")
    except StoreError:
        return None
    return m.group(1) if attrs.get("patient_id") == m.group(1) else None


def dir_bytes(path: Path) -> int:
    return sum(os.path.getsize(os.path.join(r, f)) for r, _d, fs in os.walk(path) for f in fs)


def write_patient(store_root: Path, key: str, arrays: dict[str, tuple[np.ndarray, dict[str, Any]]],
                  group_attrs: dict[str, Any], config: IngestConfig) -> int:
    """Write one patient group atomically; returns the bytes written."""
    import zarr

    tmp_root = StoreLayout.of(store_root).ingest_tmp
    tmp_root.mkdir(parents=True, exist_ok=True)
    tmp = tmp_root / f"{key}.{uuid.uuid4().hex}"
    try:
        grp = zarr.open_group(tmp, mode="w", attributes=group_attrs)
        codec = compressor_codec(config.compressor)
        for name, (data, attrs) in arrays.items():
            chunks = tuple(min(c, s) for c, s in zip(config.chunks, data.shape, strict=True))
            arr = grp.create_array(name, shape=data.shape, chunks=chunks, dtype=data.dtype,
                                   compressors=[codec] if codec is not None else None, fill_value=0,
                                   attributes=attrs)
            write_array(arr, data)
        nbytes = dir_bytes(tmp)
        _publish(tmp, StoreLayout.of(store_root).volume_group(key), tmp_root, durable=config.durable)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return nbytes


def write_array(arr, data: np.ndarray) -> None:
    """``arr[...] = data`` for a new array, the same files byte for byte (tests/test_ingest.py compares them).

    zarr 3 writes each chunk through its one event-loop thread with about 1 ms of Python per chunk (a
    patient of 2 phases + mask is about 150 chunks), so two ingest threads queued behind each other there
    and the Dask cluster ran no faster than the serial loop. Where the array is a plain local folder and
    its codecs are zarr's ``BytesCodec`` (+ one ``BloscCodec``), each chunk is cut, encoded with the codec
    zarr itself evolved for the array (blosc releases the GIL) and written in the calling thread; chunks
    equal to the fill value are not written, as zarr's default ``write_empty_chunks=False`` does. Any other
    array is written by zarr."""
    import itertools

    from zarr.codecs import BloscCodec, BytesCodec
    from zarr.storage import LocalStore

    meta = arr.metadata
    codecs = getattr(meta, "codecs", ())
    plain = (isinstance(arr.store, LocalStore) and getattr(meta, "zarr_format", 2) == 3 and codecs
             and isinstance(codecs[0], BytesCodec) and all(isinstance(c, BloscCodec) for c in codecs[1:])
             and len(codecs) <= 2 and data.shape == arr.shape and data.dtype == arr.dtype
             and not zarr_config_writes_empty())
    if not plain:
        arr[...] = data
        return
    blosc = codecs[1]._blosc_codec if len(codecs) == 2 else None
    dtype = np.dtype(arr.dtype).newbyteorder("<" if codecs[0].endian is None or codecs[0].endian.value == "little"
                                             else ">")
    fill = np.asarray(meta.fill_value, dtype=arr.dtype)
    chunks = arr.chunks
    base = Path(arr.store.root) / arr.path
    made: set[Path] = set()
    for idx in itertools.product(*(range(-(-n // c)) for n, c in zip(arr.shape, chunks, strict=True))):
        sl = tuple(slice(i * c, min((i + 1) * c, n)) for i, c, n in zip(idx, chunks, arr.shape, strict=True))
        part = data[sl]
        if (not part.any()) if fill == 0 else np.all(part == fill):
            continue
        if part.shape != chunks:  # an edge chunk: zarr 3 stores full chunks, padded with the fill value
            full = np.full(chunks, fill, dtype=arr.dtype)
            full[tuple(slice(0, s) for s in part.shape)] = part
            part = full
        # each chunk copied straight into zarr's C order: from the readers' F order this costs half as much
        # CPU as one C-order copy of the volume followed by chunk copies (11-12 against 21-23 ms a volume)
        raw = np.ascontiguousarray(part, dtype=dtype).view(np.uint8).reshape(-1)
        path = base / meta.chunk_key_encoding.encode_chunk_key(idx)
        if path.parent not in made:
            path.parent.mkdir(parents=True, exist_ok=True)
            made.add(path.parent)
        with open(path, "wb") as f:
            f.write(blosc.encode(raw) if blosc is not None else raw)


def zarr_config_writes_empty() -> bool:
    import zarr

    return bool(zarr.config.get("array.write_empty_chunks"))


def _exchange(a: Path, b: Path) -> bool:
    """Swap two directory entries atomically; False where the OS or filesystem cannot."""
    fn = getattr(_libc(), "renameat2", None)
    if fn is None:
        return False
    fn.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    if fn(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE) == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.EINVAL, errno.ENOSYS, errno.ENOTSUP, errno.EPERM):
        return False
    raise OSError(err, os.strerror(err), str(b))


def _libc():
    try:
        return ctypes.CDLL(None, use_errno=True)
    except OSError:
        return None


def sync_tree(path: Path) -> None:
    """Make every file and folder below ``path`` durable before it is renamed into place.

    Linux: one ``syncfs`` of the file system holding ``path`` (it returns once all its dirty data
    and metadata are on disk, these files' included) instead of one ``fsync`` per chunk file: a
    patient of 3 phases + mask is about 150 chunk files, and their fsyncs were the largest single
    cost of a serial ingest after decoding. Elsewhere (no ``syncfs``, or it fails) ``fsync_tree``."""
    fn = getattr(_libc(), "syncfs", None)
    if fn is not None:
        fd = os.open(path, os.O_RDONLY)
        try:
            if fn(fd) == 0:
                return
        finally:
            os.close(fd)
    fsync_tree(path)


def _publish(tmp: Path, final: Path, tmp_root: Path, *, durable: bool = True) -> None:
    """Make ``tmp`` the group at ``final``; consistent at every instant (see the module docstring).
    ``durable=False`` (a scratch store): the same renames without syncing anything."""
    if not durable:
        if final.exists():
            old = tmp_root / f"{final.name}{OLD_TAG}{uuid.uuid4().hex}"
            os.replace(final, old)
            os.replace(tmp, final)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, final)
        return
    sync_tree(tmp)
    old = tmp_root / f"{final.name}{OLD_TAG}{uuid.uuid4().hex}"
    if not final.exists():
        os.replace(tmp, final)
    elif _exchange(tmp, final):  # final: the new group; tmp: the old one
        fsync_dir(final.parent)
        fsync_dir(tmp_root)
        os.replace(tmp, old)
    else:  # two renames; a kill between them is repaired by the next clean_tmp
        os.replace(final, old)
        os.replace(tmp, final)
    fsync_dir(final.parent)
    if old.exists():
        with contextlib.suppress(OSError):
            shutil.rmtree(old)
