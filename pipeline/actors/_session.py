"""The Ray instance a run works in: joined, reused, or started embedded and shut down with the run."""

from __future__ import annotations

import contextlib
import logging
import os
import time
from collections.abc import Iterator

from dltr.core.exceptions import DltrError


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
        if started and _KEPT:
            _KEPT[-1] = True  # the enclosing ``kept_ray`` shuts it down
            started = False
        try:
            yield time.perf_counter() - t0
        finally:
            if started:
                ray.shutdown()


#: one entry per open ``kept_ray``: whether a ``ray_session`` inside it started the embedded Ray
_KEPT: list[bool] = []


@contextlib.contextmanager
def kept_ray(log_file: str | os.PathLike | None = None) -> Iterator[None]:
    """Inside, the first ``ray_session`` that starts a Ray leaves it running for the next ones, and it is shut
    down here on exit: a run of several Ray stages (the demo's extraction and radiomics, a validity seed)
    pays Ray's start-up (about 7 CPU-s and 5-10 s) once, and a run whose stages are all reused pays none."""
    import ray

    _KEPT.append(False)
    try:
        yield
    finally:
        if _KEPT.pop() and ray.is_initialized():
            with _stderr_to(log_file):
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
