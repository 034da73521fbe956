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

from dltr.core.io import fsync_dir, fsync_tree
from dltr.core.layout import StoreLayout

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
    import json

    m = re.fullmatch(r"(.+)\.old\.[0-9a-f]{32}", p.name)
    if m is None or not p.is_dir():
        return None
    try:
        attrs = json.loads((p / "zarr.json").read_text()).get("attributes", {})
    except (OSError, ValueError):
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
            arr[...] = data
        nbytes = dir_bytes(tmp)
        _publish(tmp, StoreLayout.of(store_root).volume_group(key), tmp_root, durable=config.durable)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return nbytes


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
