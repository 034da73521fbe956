"""Helpers every CLI module shares: JSON output, progress bars."""

from __future__ import annotations

import json
import sys
from typing import Any

from dltr.core.hashing import json_default


def echo_json(obj: Any) -> None:
    """Write ``obj`` as indented JSON to stdout (the ``--json`` convention)."""
    sys.stdout.write(json.dumps(obj, indent=2, default=json_default) + "\n")


def pseudonym_key(env_name: str | None, option: str = "--pseudonym-key-env") -> str | None:
    """The secret held by the environment variable ``env_name`` (None when no name is given); the
    same option on ``dltr ingest`` and ``dltr store add-cohort`` gives every stage the same pseudonym."""
    import os

    from dltr.core.exceptions import DltrError

    if not env_name:
        return None
    key = os.environ.get(env_name)
    if not key:
        raise DltrError(f"{option} {env_name}: the variable is unset or empty; export the pseudonym key in it")
    return key


PSEUDONYM_HELP = ("Name of an environment variable holding a secret; when given, patient_id is replaced by a "
                  "keyed pseudonym (HMAC-SHA256). Give the same one to `dltr ingest` and `dltr store add-cohort`.")


def progress(iterable=None, *, total: int | None = None, desc: str = "", disable: bool | None = None):
    """A rich progress bar over ``iterable`` on stderr; silent when stderr is not a terminal
    unless DLTR_PROGRESS=1."""
    import os

    from rich.progress import track

    if disable is None:
        disable = not (sys.stderr.isatty() or os.environ.get("DLTR_PROGRESS") == "1")
    if disable:
        return iterable
    return track(iterable, total=total, description=desc, transient=False)


def config_from(base: Any, **given: Any) -> Any:
    """``base`` (a config dataclass instance) with the options the user gave: every CLI option defaults to
    ``None``, so the defaults live only in the dataclass."""
    import dataclasses

    return dataclasses.replace(base, **{k: v for k, v in given.items() if v is not None})


class Bars:
    """Rich progress bars on stderr, one per stage, for ``with Bars() as bars:`` around long library calls
    (ingest, encoder training, extraction, the demo). Shown on a terminal, or anywhere with DLTR_PROGRESS=1;
    otherwise every call is a no-op."""

    def __init__(self, enabled: bool | None = None):
        import os

        if enabled is None:
            enabled = sys.stderr.isatty() or os.environ.get("DLTR_PROGRESS") == "1"
        self._p = None
        self._tasks: dict[str, Any] = {}
        self._done: dict[str, int] = {}
        if enabled:
            from rich.console import Console
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

            # its own handle on the terminal: extraction sends the standard error to STORE/logs/ray.log
            try:
                self._out = os.fdopen(os.dup(sys.stderr.fileno()), "w", buffering=1)
            except (AttributeError, OSError, ValueError):  # a stderr without a descriptor (captured)
                self._out = None
            self._p = Progress(TextColumn("{task.description:<16}"), BarColumn(), MofNCompleteColumn(),
                               TimeElapsedColumn(), console=Console(file=self._out, stderr=self._out is None),
                               transient=False)

    def __enter__(self) -> Bars:
        if self._p is not None:
            self._p.start()
        return self

    def __exit__(self, *exc) -> None:
        if self._p is not None:
            self._p.stop()
            if self._out is not None:
                self._out.close()

    def update(self, stage: str, done: int, total: int | None = None) -> None:
        """``done`` of ``total`` steps of ``stage`` (total None: unknown)."""
        self._done[stage] = done
        if self._p is None:
            return
        if stage not in self._tasks:
            self._tasks[stage] = self._p.add_task(stage, total=total)
        self._p.update(self._tasks[stage], completed=done, total=total)

    def advance(self, stage: str, n: int = 1, total: int | None = None) -> None:
        self.update(stage, self._done.get(stage, 0) + n, total)
