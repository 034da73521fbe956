"""Staged, resumable writes of one feature-set version, published in one registry commit.

Lifecycle (the Ray ``Datasink`` pattern): open (takes the store's writer lock) -> ``write`` parts
into ``features/<name>/_staging/<version_id>/`` (each part written to a temporary name, fsynced,
renamed) -> ``publish`` (validate all staged rows, write the ``center=<c>/`` partitions into a
temporary folder, fsync, rename it to ``features/<name>/<version_id>/``, then the single registry
commit, then the catalog rebuild) -> staging removed. A crash anywhere before the registry commit
leaves the version invisible; a new writer resumes from the staged parts (``done_keys``).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import time
import uuid
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from dltr.core.exceptions import StoreError
from dltr.core.hashing import content_hash
from dltr.core.io import atomic_file, fsync_dir, fsync_tree
from dltr.core.layout import PARTITION_FILE, StoreLayout
from dltr.core.lock import WriterLock
from features._catalog import NAME_RE, build_catalog
from features._frame_embed import write_matrix
from features._registry import FeatureSetVersion, Registry, now_iso
from features._rows import check_rows, conform, is_packed

ROW_GROUP = 16384  # rows per Parquet row group: a 33k-row partition decodes on both cores
HOOK_ENV = "DLTR_STORE_PAUSE_AT"  # test hook: pause (for a SIGKILL) at a named publish step
HOOK_MARK_ENV = "DLTR_STORE_PAUSE_MARK"


def _hook(point: str) -> None:
    if os.environ.get(HOOK_ENV) == point:
        mark = os.environ.get(HOOK_MARK_ENV)
        if mark:
            Path(mark).write_text(point)
        time.sleep(float(os.environ.get("DLTR_STORE_PAUSE_S", "120")))


def version_id_of(name: str, producer: str, lineage: dict[str, Any]) -> str:
    """The contract's version id: content hash of what produced the rows."""
    return content_hash({"name": name, "producer": producer, "lineage": lineage})


class FeatureWriter:
    """Writer of one version; holds the store's writer lock until ``publish`` or ``close``."""

    def __init__(self, root: Path, name: str, version_id: str, producer: str, lineage: dict[str, Any],
                 dim: int, *, known: set[str] | None = None):
        if not NAME_RE.match(name):
            raise StoreError(f"feature-set name {name!r} is not a plain SQL identifier ([A-Za-z_][A-Za-z0-9_]*)")
        expected = version_id_of(name, producer, lineage)
        if version_id != expected:
            raise StoreError(f"version id {version_id!r} of {name!r} is not the content hash of its name, producer "
                             f"and lineage ({expected!r}); compute it with features.version_id_of")
        if int(dim) < 1:
            raise StoreError(f"{name}: dimension {dim} must be a positive integer")
        self.root, self.name, self.version_id = Path(root), name, version_id
        self.producer, self.lineage, self.dim, self.known = producer, dict(lineage), int(dim), known
        self.staging = StoreLayout.of(self.root).feature_staging(name, version_id)
        self._lock = WriterLock(self.root, f"publish {name}@{version_id}").acquire()
        self._done: set[str] | None = None

    # -- lifecycle ------------------------------------------------------------------------------
    def __enter__(self) -> FeatureWriter:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        """Release the lock; staged parts stay for a later resume."""
        self._lock.release()

    def _parts(self) -> list[Path]:
        return sorted(self.staging.glob("part-*.parquet")) if self.staging.exists() else []

    def done_keys(self) -> set[str]:
        """patient_ids already staged for this version (a resumed run skips them)."""
        if self._done is None:
            self._done = set()
            for p in self._parts():
                self._done.update(pq.read_table(p, columns=["patient_id"]).column(0).to_pylist())
        return set(self._done)

    def write(self, table: pa.Table) -> int:
        """Validate and stage ``table`` as one fsynced Parquet part; returns the rows staged."""
        if table.num_rows == 0:
            return 0
        done = self.done_keys()
        what = f"{self.name}@{self.version_id} batch"
        table = conform(table, self.dim, what, packed=is_packed(self.lineage))
        check_rows(table, what, seen=done, known=self.known)
        self.staging.mkdir(parents=True, exist_ok=True)
        part = self.staging / f"part-{time.time_ns():020d}-{uuid.uuid4().hex[:8]}.parquet"
        with atomic_file(part) as f:
            pq.write_table(table, f)
        self._done = done | set(table.column("patient_id").to_pylist())
        return table.num_rows

    def publish(self, allow_partial: bool = False) -> FeatureSetVersion:
        """Make the staged rows a published version (``status="partial"`` when ``allow_partial``)."""
        try:
            reg = Registry.load(self.root)
            if reg.has_version(self.name, self.version_id):
                shutil.rmtree(self.staging, ignore_errors=True)
                return _existing(reg, self.name, self.version_id)
            parts = self._parts()
            if not parts:
                raise StoreError(f"{self.name}@{self.version_id}: nothing staged; write rows before publishing")
            table = pa.concat_tables([pq.read_table(p) for p in parts])
            what = f"{self.name}@{self.version_id}"
            table = conform(table, self.dim, what, packed=is_packed(self.lineage))
            check_rows(table, what, known=self.known)
            _hook("staged")
            return commit_version(self.root, table, name=self.name, version_id=self.version_id,
                                  producer=self.producer, lineage=self.lineage, dim=self.dim,
                                  status="partial" if allow_partial else "published", cleanup=self.staging)
        finally:
            self.close()


def _existing(reg: Registry, name: str, version_id: str) -> FeatureSetVersion:
    v = reg.resolve(name, version_id)
    return FeatureSetVersion(**{**v.to_dict(), "new": False})


def _write_partitions(table: pa.Table, dest: Path) -> dict[str, int]:
    table = table.sort_by([("center", "ascending"), ("patient_id", "ascending")])
    counts: dict[str, int] = {}
    for center in pc.unique(table.column("center")).to_pylist():
        rows = table.filter(pc.equal(table.column("center"), center))
        safe = "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in center)
        d = dest / f"center={safe}"
        d.mkdir(parents=True, exist_ok=True)
        # no dictionary and no compression for the embedding: float bytes gain nothing from either (snappy left
        # 33k x 512 at 65 MB and 96 encoder-input tensors at 18.9 MB) and decoding them costs 25 % more CPU
        dict_cols = [c for c in rows.column_names if c != "embedding"]
        pq.write_table(rows, d / PARTITION_FILE, row_group_size=ROW_GROUP, use_dictionary=dict_cols,
                       compression={c: "none" if c == "embedding" else "snappy" for c in rows.column_names})
        write_matrix(rows.column("embedding"), d)
        counts[center] = rows.num_rows
    return counts


def commit_version(root: Path, table: pa.Table, *, name: str, version_id: str, producer: str,
                   lineage: dict[str, Any], dim: int, status: str, cleanup: Path | None = None,
                   reg: Registry | None = None) -> FeatureSetVersion:
    """Write partitions to a temporary folder, rename into place, then the one registry commit.
    The caller holds the writer lock and has validated ``table``; ``reg`` is the registry it
    loaded under that lock (read again when not given)."""
    base = StoreLayout.of(root).feature_set(name)
    final = base / version_id
    if base.is_dir():  # debris of a writer killed mid-write (scandir: no pattern match per version folder)
        with os.scandir(base) as entries:
            stale = [e.path for e in entries if e.name.startswith(f".tmp-{version_id}-")]
        for path in stale:
            shutil.rmtree(path, ignore_errors=True)
    if final.exists():  # renamed into place by a writer killed before its commit: not visible, redo
        shutil.rmtree(final)
    tmp = base / f".tmp-{version_id}-{os.getpid()}"
    tmp.mkdir(parents=True)
    centers = _write_partitions(table, tmp)
    v = FeatureSetVersion(
        name=name, version_id=version_id, created_at=now_iso(), producer=producer, row_count=table.num_rows,
        dim=int(dim), schema=[{"name": f.name, "type": str(f.type)} for f in table.schema], lineage=lineage,
        status=status, path=final.relative_to(root).as_posix(), centers=centers)
    entry = StoreLayout.of(root).feature_version_entry(name, version_id)
    (tmp / entry.name).write_text(json.dumps(v.to_dict(), sort_keys=True, indent=1))
    _hook("parts_written")
    fsync_tree(tmp)
    os.replace(tmp, final)
    fsync_dir(base)
    _hook("dir_renamed")
    reg = reg if reg is not None else Registry.load(root)
    reg.add_version(v)
    reg.commit()
    _hook("registry_committed")
    build_catalog(root, reg, StoreLayout.of(root).catalog)
    if cleanup is not None:
        shutil.rmtree(cleanup, ignore_errors=True)
        with contextlib.suppress(OSError):
            cleanup.parent.rmdir()
    return v
