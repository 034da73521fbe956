"""Helpers every CLI module shares: JSON output, progress bars."""

from __future__ import annotations

import json
import sys
from typing import Any

from dltr.core.hashing import json_default


def echo_json(obj: Any) -> None:
    """Write ``obj`` as indented JSON to stdout (the ``--json`` convention)."""
    sys.stdout.write(json.dumps(obj, indent=2, default=json_default) + "\n")


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
