"""The Ray Data job: scope rows -> actor pool of ``EmbedWorker`` -> streamed result batches."""

from __future__ import annotations

import contextlib
import logging
import os
import time
import warnings
from collections.abc import Callable, Iterator

import pyarrow as pa

from dltr.core.exceptions import DltrError
from pipeline.extract._config import ExtractConfig
from pipeline.extract._worker import EmbedWorker, EncodeWorker, LoadWorker


@contextlib.contextmanager
def ray_session(address: str | None, log_file: str | os.PathLike | None = None) -> Iterator[float]:
    """Join ``address``, reuse a running session, or start an embedded Ray (shut down on exit).

    The embedded instance is always a new one (``address="local"``): a ``ray_current_cluster`` file left
    in Ray's temp folder by a cluster that died, or ``RAY_ADDRESS``, never makes it join another cluster.
    It runs with Ray's default token authentication. Joining a cluster with token authentication takes
    Ray's own ``RAY_AUTH_MODE=token`` and ``RAY_AUTH_TOKEN`` (or ``RAY_AUTH_TOKEN_PATH``) in the environment.

    With ``log_file``, the standard error goes to that file while Ray runs (Ray's loggers, its token
    notice, core-worker lines); errors are raised, and shown, after it is restored. Yields the start-up
    seconds (paid once per run, not per batch).
    """
    import ray

    t0 = time.perf_counter()
    started = False
    with _stderr_to(log_file):
        if not ray.is_initialized():
            kw = dict(include_dashboard=False, log_to_driver=False, logging_level=logging.WARNING,
                      configure_logging=False)
            try:
                if address:
                    ray.init(address=address, **kw)
                else:
                    ray.init(address="local", num_cpus=os.cpu_count(), **kw)
            except (ConnectionError, RuntimeError, ValueError) as e:
                where = f"Ray at {address}" if address else "embedded Ray"
                hint = (" (a cluster with token authentication: export RAY_AUTH_MODE=token and RAY_AUTH_TOKEN, "
                        "or give --auth-token-env)" if address else "")
                raise DltrError(f"{where}: cannot start or connect ({e}){hint}; check --address or run "
                                "without it for an embedded instance") from None
            started = True
        try:
            yield time.perf_counter() - t0
        finally:
            if started:
                ray.shutdown()


@contextlib.contextmanager
def _stderr_to(log_file: str | os.PathLike | None) -> Iterator[None]:
    """The standard error (file descriptor 2: Python's ``sys.stderr``, Ray's loggers, native code, child
    processes) to ``log_file`` while the block runs. A progress bar keeps its own terminal handle
    (``dltr.cli._common.Bars``)."""
    if log_file is None:
        yield
        return
    import sys
    from pathlib import Path

    Path(log_file).parent.mkdir(parents=True, exist_ok=True)
    sys.stderr.flush()
    saved = os.dup(2)
    fd = os.open(log_file, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    os.dup2(fd, 2)
    os.close(fd)
    try:
        yield
    finally:
        sys.stderr.flush()
        os.dup2(saved, 2)
        os.close(saved)


def run_ray(pending: pa.Table, store_root: str, encoder_dir: str, cfg: ExtractConfig,
            on_batch: Callable[[pa.Table], None], *, keep_x: bool = False) -> None:
    """Stream the work rows of ``pending`` through the actor pool into ``on_batch`` (driver side)."""
    import ray.data
    from ray.data import ActorPoolStrategy

    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = False
    ctx.print_on_execution_start = False
    torch_threads = max(1, int(cfg.cpus_per_worker))
    with warnings.catch_warnings():
        # Ray 2.60 deprecates passing actor options through **ray_remote_args but has no named
        # parameter for max_restarts / max_task_retries yet (its default is -1: retry forever).
        warnings.filterwarnings("ignore", message=".*ray_remote_args.*deprecated")
        ds = _dataset(ray.data, ActorPoolStrategy, pending, store_root, encoder_dir, cfg, torch_threads, keep_x)
    for batch in ds.iter_batches(batch_size=None, batch_format="pyarrow", prefetch_batches=1):
        on_batch(batch)


def _dataset(data, pool, pending, store_root, encoder_dir, cfg, torch_threads, keep_x=False):
    # one block per batch: every actor of the pool gets its own inputs (a single block is one task)
    blocks = [pending.slice(s, cfg.batch_size) for s in range(0, pending.num_rows, cfg.batch_size)]
    ds = data.from_arrow(blocks)
    if (cfg.pipelined or keep_x) and cfg.gpus_per_worker == 0:
        # two actor pools, half a worker's CPUs each: Ray Data streams batch k+1's reads while batch k
        # encodes, so a worker's rate is bounded by the slower stage, not by their sum
        common = dict(batch_size=cfg.batch_size, batch_format="pyarrow", zero_copy_batch=True,
                      compute=pool(size=cfg.workers), num_cpus=cfg.cpus_per_worker / 2,
                      max_restarts=cfg.max_restarts, max_task_retries=cfg.max_task_retries,
                      udf_modifying_row_count=False)
        ds = ds.map_batches(LoadWorker, fn_constructor_kwargs=dict(
            store_root=str(store_root), encoder_dir=str(encoder_dir), batch_size=cfg.batch_size,
            dali_threads=cfg.dali_threads), **common)
        return ds.map_batches(EncodeWorker, fn_constructor_kwargs=dict(
            encoder_dir=str(encoder_dir), torch_threads=torch_threads, keep_x=keep_x), **common)
    return ds.map_batches(
        EmbedWorker,
        fn_constructor_kwargs=dict(store_root=str(store_root), encoder_dir=str(encoder_dir),
                                   batch_size=cfg.batch_size, gpu=cfg.gpus_per_worker > 0,
                                   dali_threads=cfg.dali_threads, torch_threads=torch_threads),
        batch_size=cfg.batch_size, batch_format="pyarrow", zero_copy_batch=True,
        compute=pool(size=cfg.workers),
        num_cpus=cfg.cpus_per_worker, num_gpus=cfg.gpus_per_worker or None,
        max_restarts=cfg.max_restarts, max_task_retries=cfg.max_task_retries,
        udf_modifying_row_count=False,
    )
