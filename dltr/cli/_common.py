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
