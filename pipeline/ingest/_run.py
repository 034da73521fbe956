"""``ingest_cohort``: every patient of a cohort into ``STORE/volumes.zarr`` in parallel with Dask,
then the studies / errors / intensity-statistics tables and ``run.json``."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from dltr.core.exceptions import IngestError
from dltr.core.io import atomic_write_text
from dltr.core.layout import StoreLayout

from ._cohort_io import cohort_rows, pseudonym
from ._config import IngestConfig
from ._patient import PatientResult, PatientTask, run_patient
from ._stats import intensity_stats
from ._tables import ERRORS_SCHEMA, STATS_SCHEMA, STUDIES_SCHEMA, studies_rows, write_parquet
from ._writer import clean_tmp, ingest_lock, open_root


@dataclass
class IngestReport:
    """What a run did; ``summary`` is what ``run.json`` holds."""

    patients: int = 0
    ok: int = 0
    skipped: int = 0
    failed: int = 0
    volumes: int = 0
    source_mb: float = 0.0
    written_mb: float = 0.0
    seconds: float = 0.0
    errors: list[dict[str, Any]] = field(default_factory=list)
    config: dict[str, Any] = field(default_factory=dict)

    @property
    def mb_per_s(self) -> float:
        return self.source_mb / self.seconds if self.seconds > 0 else 0.0

    @property
    def summary(self) -> dict[str, Any]:
        d = asdict(self)
        d.pop("errors")
        return d | {"mb_per_s": self.mb_per_s, "n_errors": len(self.errors)}


def _tasks(cohort_path: Path, store_root: Path, config: IngestConfig, cohort=None) -> list[PatientTask]:
    rows, centers, _phases = cohort_rows(cohort_path, cohort)
    return [PatientTask(pseudonym(pid, config.pseudonym_key), pid, centers.get(pid, ""), tuple(r),
                        str(cohort_path), str(store_root), config) for pid, r in sorted(rows.items())]


@dataclass
class _StoreFault:
    """A patient's task hit an OSError (full disk, read-only or vanished store): the run stops."""

    key: str
    reason: str


def _run_one(task: PatientTask) -> PatientResult | _StoreFault:
    """``run_patient``, with an OSError returned as a result: the Dask worker then logs no traceback,
    and the driver turns it into one typed line (``_fault_error``)."""
    try:
        return run_patient(task)
    except OSError as e:  # sources' read errors are typed IngestReadErrors inside run_patient
        return _StoreFault(task.key, _os_reason(e))


def _os_reason(e: OSError) -> str:
    # strerror and errno only: the filename may be a source path holding a patient identifier
    return f"{e.strerror or type(e).__name__} (errno {e.errno})" if e.errno else str(e).splitlines()[0]


def _fault_error(store_root: Path, fault: _StoreFault) -> IngestError:
    return IngestError(f"{store_root}: writing patient {fault.key} failed: {fault.reason}; fix the store "
                       "(free space, permissions) and re-run: finished patients are kept, nothing partial is visible")


def _run_serial(tasks, on_done, store_root: Path):
    out = []
    for t in tasks:
        r = _run_one(t)
        if isinstance(r, _StoreFault):
            raise _fault_error(store_root, r)
        out.append(r)
        on_done(r)
    return out


def _run_dask(tasks, on_done, store_root: Path, config: IngestConfig):
    from distributed import as_completed

    client, cluster = _client(config)
    results = []
    try:
        futures = client.map(_run_one, tasks, pure=False)
        for fut in as_completed(futures):
            r = fut.result()
            if isinstance(r, _StoreFault):
                client.cancel(futures)
                raise _fault_error(store_root, r)
            results.append(r)
            on_done(r)
    except BaseException:
        _close(client, cluster)
        raise
    return results, client, cluster


def _client(config: IngestConfig):
    import logging
    import warnings

    from distributed import Client, LocalCluster

    if config.scheduler_address:
        return Client(config.scheduler_address), None
    with warnings.catch_warnings():  # the scheduler's HTTP server moves off a busy port 8787: not our user's concern
        warnings.filterwarnings("ignore", message="Port .* is already in use", category=UserWarning)
        cluster = LocalCluster(n_workers=config.workers, threads_per_worker=1, processes=config.processes,
                               dashboard_address=None, silence_logs=logging.ERROR)
    return Client(cluster), cluster


def ingest_cohort(cohort_path: str | Path, store_root: str | Path, config: IngestConfig | None = None, *,
                  executor: str = "dask", on_patient: Callable[[PatientResult], None] | None = None,
                  cohort: Any = None) -> IngestReport:
    """Ingest a cohort folder into ``store_root`` (idempotent; see pipeline.ingest's docstring).

    ``executor="dask"`` runs patients on a ``dask.distributed`` cluster (local, or the one at
    ``config.scheduler_address``); ``"serial"`` runs them one after the other in this process
    (the benchmark's baseline). ``on_patient`` is called as each patient finishes. ``cohort``: the
    cohort at ``cohort_path`` already loaded by ``dltr.cohort.load_cohort`` (the scoring service
    loads it once per request), else it is loaded here.
    """
    config = config or IngestConfig()
    cohort_path, store_root = Path(cohort_path).resolve(), Path(store_root).resolve()
    if executor not in ("dask", "serial"):
        raise IngestError(f"executor {executor!r}: choose 'dask' or 'serial'")
    t0 = time.perf_counter()
    tasks = _tasks(cohort_path, store_root, config, cohort)
    try:
        lock = ingest_lock(store_root).acquire()  # held for the whole run; the OS drops it if we die
    except OSError as e:
        raise IngestError(f"{store_root}: cannot open the store's ingest lock: {_os_reason(e)}") from None
    try:
        report = _run_locked(tasks, store_root, config, executor, on_patient or (lambda _r: None), t0)
    except OSError as e:  # the driver's own writes (tables, run.json) on a full or read-only store
        raise IngestError(f"{store_root}: ingest failed: {_os_reason(e)}; fix the store and re-run") from None
    finally:
        lock.release()
    err = None
    if config.strict and report.errors:
        first = report.errors[0]
        err = IngestError(f"--strict: {len(report.errors)} error(s); first: row {first['row']} "
                          f"[{first['code']}] {first['reason']}")
    elif tasks and report.ok + report.skipped == 0:
        err = IngestError(f"{cohort_path}: no patient could be ingested ({len(report.errors)} errors; see "
                          f"{store_root / 'ingest/errors.parquet'})")
    if err is not None:
        err.report = report  # the CLI prints the per-row summary before failing
        raise err
    return report


def _run_locked(tasks, store_root: Path, config: IngestConfig, executor: str,
                done: Callable[[PatientResult], None], t0: float) -> IngestReport:
    clean_tmp(store_root)
    open_root(store_root)
    if executor == "serial":
        results, client, cluster = _run_serial(tasks, done, store_root), None, None
    else:
        results, client, cluster = _run_dask(tasks, done, store_root, config)
    try:
        report = _finish(tasks, results, store_root, config, client)
    finally:
        _close(client, cluster)
    report.seconds = time.perf_counter() - t0
    atomic_write_text(StoreLayout.of(store_root).ingest_run, json.dumps(report.summary, indent=2, sort_keys=True))
    return report


def _close(client, cluster) -> None:
    if client is not None:
        client.close()
    if cluster is not None:
        cluster.close()


def _finish(tasks, results, store_root: Path, config: IngestConfig, client) -> IngestReport:
    by_key = {r.key: r for r in results}
    rep = IngestReport(patients=len(tasks), config=config.to_dict())
    studies, errors, volumes = [], [], []
    for t in tasks:
        r = by_key[t.key]
        rep.source_mb += r.source_bytes / 1e6 if r.status == "ok" else 0.0
        rep.written_mb += r.written_bytes / 1e6
        rep.volumes += r.volumes
        errors += r.errors
        if r.status == "failed":
            rep.failed += 1
            continue
        rep.ok += r.status == "ok"
        rep.skipped += r.status == "skipped"
        rows = studies_rows(store_root, t.key)
        studies += rows
        volumes += [(t.key, row["center"], row["phase"]) for row in rows]
    studies.sort(key=lambda r: (r["patient_id"], r["phase"]))
    errors.sort(key=lambda e: (e["row"], e["file"]))
    rep.errors = errors
    write_parquet(StoreLayout.of(store_root).studies, studies, STUDIES_SCHEMA)
    write_parquet(StoreLayout.of(store_root).ingest_errors, errors, ERRORS_SCHEMA)
    if config.stats:
        stats = intensity_stats(store_root, volumes, _computer(client))
        write_parquet(StoreLayout.of(store_root).intensity_stats, stats, STATS_SCHEMA)
    return rep


def _computer(client):
    import dask

    if client is None:
        return lambda objs: dask.compute(objs, scheduler="synchronous")[0]
    return lambda objs: client.gather(client.compute(objs))
