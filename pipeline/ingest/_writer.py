"""Zarr v3 patient groups, written under a temporary name and renamed into place.

``STORE/volumes.zarr/<patient_id>`` appears in one ``rename`` only when every array and attribute
of the patient is on disk (fsynced); a crash leaves at most a folder under ``STORE/ingest/.tmp``,
which the next run removes. A changed patient replaces the old group the same way (old group moved
aside first, then the new one renamed in), so readers see the old or the new patient, never a mix.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import uuid
from pathlib import Path
from typing import Any

import numpy as np

from dltr._io import fsync_dir, fsync_tree

from ._config import IngestConfig

TMP_DIR = Path("ingest") / ".tmp"


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
    """Create (once) and open the root group ``STORE/volumes.zarr``."""
    import zarr

    path = store_root / "volumes.zarr"
    if not (path / "zarr.json").exists():
        zarr.open_group(path, mode="a")
    return zarr.open_group(path, mode="r")


def clean_tmp(store_root: Path) -> None:
    """Remove what an interrupted run left under ``ingest/.tmp``."""
    shutil.rmtree(store_root / TMP_DIR, ignore_errors=True)


def dir_bytes(path: Path) -> int:
    return sum(os.path.getsize(os.path.join(r, f)) for r, _d, fs in os.walk(path) for f in fs)


def write_patient(store_root: Path, key: str, arrays: dict[str, tuple[np.ndarray, dict[str, Any]]],
                  group_attrs: dict[str, Any], config: IngestConfig) -> int:
    """Write one patient group atomically; returns the bytes written."""
    import zarr

    tmp_root = store_root / TMP_DIR
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
        _publish(tmp, store_root / "volumes.zarr" / key, tmp_root)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return nbytes


def _publish(tmp: Path, final: Path, tmp_root: Path) -> None:
    fsync_tree(tmp)
    if final.exists():
        old = tmp_root / f"{final.name}.old.{uuid.uuid4().hex}"
        os.replace(final, old)
        os.replace(tmp, final)
        with contextlib.suppress(OSError):
            shutil.rmtree(old)
    else:
        os.replace(tmp, final)
    fsync_dir(final.parent)
