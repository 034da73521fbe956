"""The radiomics producer: scope -> resume -> Ray actors (or one process) -> staged parts -> one version.

``extract_radiomics`` publishes a version of the feature set ``radiomics``: the feature-row contract
(docs/architecture.md) with ``embedding`` = the pyradiomics features of every phase, phase-major, and
the lineage naming each dimension (``feature_names``, ``phase/image_type/feature``), which the catalog
turns into the long view ``radiomics_long`` (patient_id, center, phase, image_type, feature, value).
Resumable: each result batch is one staged part (``features.FeatureWriter``); a re-run after a kill
computes only the patients not staged yet. Then the center-effect table (``analysis.center_effect``).
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from dltr.core.exceptions import DltrError, StoreError
from dltr.core.hashing import content_hash
from dltr.core.layout import StoreLayout
from pipeline.radiomics._compute import FEATURE_NAME_PARTS, dimension_names, probe_names
from pipeline.radiomics._settings import RadiomicsSettings, library_version, load_settings
from pipeline.radiomics._worker import RadiomicsActor, RadiomicsWorker

PRODUCER = "pipeline.radiomics"
CENTER_EFFECT_TABLE = "radiomics_center_effect"
ERRORS_TABLE = "radiomics_errors"
Progress = Callable[[int, int], None]


@dataclass(frozen=True)
class RadiomicsConfig:
    """How a radiomics run executes (none of it changes the values).

    ``backend``: ``ray`` (an actor pool of ``workers`` actors, ``address`` as in ``ExtractConfig``) or
    ``local`` (the same worker in a plain loop in this process: the serial reference).
    """

    name: str = "radiomics"
    backend: str = "ray"
    address: str | None = None
    workers: int = 1
    batch_size: int = 4
    allow_partial: bool = False
    max_restarts: int = 3
    max_task_retries: int = 3

    def __post_init__(self) -> None:
        if self.backend not in ("ray", "local") or self.workers < 1 or self.batch_size < 1 or not self.name:
            raise DltrError(f"RadiomicsConfig: backend={self.backend!r} (ray|local), workers={self.workers} (>= 1), "
                            f"batch_size={self.batch_size} (>= 1), name={self.name!r} (non-empty)")


@dataclass
class RadiomicsReport:
    name: str
    version_id: str
    status: str  # published | exists | partial | incomplete
    n_scope: int
    dim: int
    n_resumed: int = 0
    n_computed: int = 0
    n_errors: int = 0
    errors: list[dict[str, Any]] = field(default_factory=list)
    seconds: float = 0.0
    startup_s: float = 0.0
    backend: str = "ray"

    @property
    def patients_per_s(self) -> float:
        return self.n_computed / self.seconds if self.seconds > 0 else 0.0

    def to_dict(self) -> dict[str, Any]:
        return {**dataclasses.asdict(self), "patients_per_s": self.patients_per_s}

    def summary(self) -> str:
        lines = [f"{self.name}@{self.version_id}: {self.status} ({self.n_scope} patients in scope, {self.dim} "
                 f"features each: {self.n_computed} computed, {self.n_resumed} already staged, "
                 f"{self.n_errors} failed; {self.patients_per_s:.2f} patients/s on {self.backend})"]
        lines += [f"  error {e['patient_id']}: {e['reason']}" for e in self.errors[:10]]
        return "\n".join(lines)


@dataclass
class Scope:
    table: pa.Table  # patient_id, center, input_checksum
    phases: list[str]
    names: list[str]  # pyradiomics keys per phase
    lineage: dict[str, Any]
    version_id: str
    excluded: list[dict[str, Any]]

    @property
    def dim(self) -> int:
        return len(self.phases) * len(self.names)


def build_scope(store, settings: RadiomicsSettings, name: str) -> Scope:
    from features import version_id_of
    from pipeline.extract import input_checksum, studies_table

    by_pid: dict[str, dict[str, Any]] = {}
    for r in studies_table(store, store.root).to_pylist():
        if r.get("status", "ok") == "ok":
            d = by_pid.setdefault(str(r["patient_id"]), {"center": str(r["center"]), "phase": {}, "mask": None})
            d["phase"][str(r["phase"])] = str(r["source_sha256"])
            d["mask"] = d["mask"] or r.get("mask_sha256")
    if not by_pid:
        raise StoreError(f"{store.root}: the studies table has no ingested study; run `dltr ingest` first")
    phases = list(settings.phases or [])
    if not phases:  # the phases every patient has, in the order first seen
        seen = list(dict.fromkeys(p for d in by_pid.values() for p in d["phase"]))
        phases = [p for p in seen if all(p in d["phase"] for d in by_pid.values())]
    rows, excluded = [], []
    for pid in sorted(by_pid):
        d = by_pid[pid]
        missing = [p for p in phases if p not in d["phase"]] + ([] if d["mask"] else ["mask"])
        if missing or not phases:
            excluded.append({"patient_id": pid, "center": d["center"], "stage": "scope",
                             "reason": f"no ingested study for {missing or 'any common phase'}"})
            continue
        rows.append({"patient_id": pid, "center": d["center"],
                     "input_checksum": input_checksum({p: d["phase"][p] for p in phases}, d["mask"])})
    if not rows:
        raise StoreError(f"{store.root}: no patient has all phases {phases} and a mask; ingest them first")
    names = probe_names(settings)
    lineage = {"preprocess_hash": settings.content_hash(), "library": library_version(),
               "settings": settings.to_dict(), "phases": phases,
               "inputs_hash": content_hash(sorted(r["input_checksum"] for r in rows)),
               "feature_names": dimension_names(phases, names), "feature_name_parts": list(FEATURE_NAME_PARTS)}
    table = pa.Table.from_pylist(rows, schema=pa.schema([("patient_id", pa.string()), ("center", pa.string()),
                                                         ("input_checksum", pa.string())]))
    return Scope(table, phases, names, lineage, version_id_of(name, PRODUCER, lineage), excluded)


def _worker_args(store, scope: Scope, settings: RadiomicsSettings) -> dict[str, Any]:
    return dict(volumes=str(StoreLayout.of(store).volumes), settings=settings.to_dict() | {"phases": scope.phases},
                phases=scope.phases, names=scope.names)


def extract_radiomics(store_root: Any, settings: RadiomicsSettings | str | Path | None = None,
                      config: RadiomicsConfig | None = None, *, progress: Progress | None = None
                      ) -> RadiomicsReport:
    """Compute the recipe's features for every patient in scope and publish one version (see module doc);
    ``store_root``: the store (a path, a ``StoreLayout`` or a ``FeatureStore``)."""
    from features import FeatureStore

    cfg = config or RadiomicsConfig()
    if not isinstance(settings, RadiomicsSettings):
        settings = load_settings(settings)
    store = FeatureStore(StoreLayout.of(store_root).root)
    scope = build_scope(store, settings, cfg.name)
    report = RadiomicsReport(cfg.name, scope.version_id, "exists", scope.table.num_rows, scope.dim,
                             backend=cfg.backend)
    if any(v.version_id == scope.version_id for v in _versions(store, cfg.name)):
        return report
    writer = store.feature_writer(cfg.name, scope.version_id, PRODUCER, scope.lineage, scope.dim)
    try:
        done = writer.done_keys()
        ids = scope.table.column("patient_id")
        report.n_resumed = len(done & set(ids.to_pylist()))
        pending = scope.table.filter(pc.invert(pc.is_in(ids, pa.array(sorted(done), pa.string()))))
        failed: list[dict[str, Any]] = []

        def sink(work: pa.Table) -> None:
            bad = pc.is_valid(work.column("error"))
            ok = work.filter(pc.invert(bad)).drop_columns(["error", "seconds", "worker"])
            fresh = pa.array([p not in done for p in ok.column("patient_id").to_pylist()])
            ok = ok.filter(fresh)  # a retried batch never stages a patient twice
            report.n_computed += writer.write(ok)
            done.update(ok.column("patient_id").to_pylist())
            failed.extend({"patient_id": r["patient_id"], "center": r["center"], "stage": "radiomics",
                           "reason": r["error"]} for r in work.filter(bad).to_pylist())
            if progress:
                progress(work.num_rows, pending.num_rows)

        if pending.num_rows:
            run = _run_ray if cfg.backend == "ray" else _run_local
            run(pending, _worker_args(store, scope, settings), cfg, sink, report)
        report.errors, report.n_errors = scope.excluded + failed, len(failed)
        if report.errors:
            _record_errors(store, scope, cfg.name, report.errors)
        if failed and not cfg.allow_partial:
            report.status = "incomplete"
            return report
        writer.publish(allow_partial=bool(failed))
        report.status = "partial" if failed else "published"
    finally:
        writer.close()
    write_center_effect(store, f"{cfg.name}@{scope.version_id}")
    return report


def _versions(store, name: str) -> list[Any]:
    return list(store.versions(name)) if name in store.feature_sets() else []


def _run_local(pending: pa.Table, args: dict[str, Any], cfg: RadiomicsConfig, sink, report) -> None:
    worker = RadiomicsWorker(**args)
    t0 = time.perf_counter()
    for s in range(0, pending.num_rows, cfg.batch_size):
        sink(worker(pending.slice(s, cfg.batch_size)))
    report.seconds = time.perf_counter() - t0


def _run_ray(pending: pa.Table, args: dict[str, Any], cfg: RadiomicsConfig, sink, report) -> None:
    import ray

    from pipeline.actors import ray_session, run_actors

    with ray_session(cfg.address) as startup:
        report.startup_s = startup
        t0 = time.perf_counter()
        table = ray.put(pending)
        run_actors(RadiomicsActor, args, lambda j, n: (table, cfg.batch_size, j, n), sink, workers=cfg.workers,
                   num_cpus=1, max_restarts=cfg.max_restarts, max_task_retries=cfg.max_task_retries,
                   what="radiomics")
        report.seconds = time.perf_counter() - t0


def _record_errors(store, scope: Scope, name: str, errors: list[dict[str, Any]]) -> None:
    import datetime as dt

    now = dt.datetime.now(dt.UTC)
    rows = [{"feature_set": name, "version_id": scope.version_id, "patient_id": e["patient_id"],
             "center": e.get("center"), "stage": e["stage"], "reason": e["reason"], "recorded_at": now}
            for e in errors]
    store.write_table(ERRORS_TABLE, pa.Table.from_pylist(rows), lineage={"feature_set": name,
                                                                       "version_id": scope.version_id})


def write_center_effect(store, ref: str) -> pa.Table:
    """Kruskal-Wallis across centers of every feature of version ``ref``, as table ``radiomics_center_effect``."""
    import numpy as np

    from analysis.center_effect import center_effect
    from features import embedding_matrix

    v = store.resolve(ref)
    rows = store.read(v.ref, columns=["patient_id", "center", "embedding"]).combine_chunks()
    names = list(v.lineage.get("feature_names") or [f"dim/{i}" for i in range(v.dim)])
    table = center_effect(np.asarray(embedding_matrix(rows), np.float64), rows.column("center").to_pylist(), names,
                          v.lineage.get("feature_name_parts") or ())
    table = table.append_column("feature_set", pa.array([v.name] * table.num_rows, pa.string())) \
        .append_column("version_id", pa.array([v.version_id] * table.num_rows, pa.string()))
    store.write_table(CENTER_EFFECT_TABLE, table, lineage={"feature_set": v.name, "version_id": v.version_id,
                                                          "test": "Kruskal-Wallis H (tie-corrected), "
                                                                  "epsilon^2 = H / (n - 1)"})
    return table
