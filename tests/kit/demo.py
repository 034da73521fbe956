"""The tiny demo the end-to-end tests share (``build_tiny_demo``; the session fixture ``tiny_demo``): one keyed
run (a pseudonym key, as a real cohort's ingest has), one encoder candidate, with its log, its progress calls
and every file open under the synthetic truth folder recorded by an audit hook."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any, NamedTuple

KEY = "issue-17-secret"
CANDIDATES = ("plain",)  # one candidate: the report, keying and CLI paths do not depend on how many compete

_WATCH: dict[str, Any] = {"truth": None, "opens": []}
_HOOKED = False


class TinyDemo(NamedTuple):
    result: Any                                   # dltr.demo.DemoResult
    config: Any                                   # the DemoConfig it ran with (rerun it to test reuse)
    logs: list[str]
    progress: list[tuple[str, int, int | None]]   # (stage, done, total) calls
    truth_opens: list[tuple[str, str]]            # (path under truth/, first project module on the stack)
    raw_ids: list[str]                            # the cohort's patient ids before the pseudonym

    @property
    def out(self) -> Path:
        return self.result.out

    @property
    def store(self) -> Path:
        return self.result.out / "store"

    @property
    def cohort(self) -> Path:
        return self.result.out / "synthetic" / "cohort"

    def store_copy(self, dst: Path) -> Path:
        """A copy of the store for a test that writes to it (the shared one stays as the demo left it)."""
        import shutil

        return Path(shutil.copytree(self.store, dst / "store"))


def _opener() -> str:
    """The first project module on the stack that asked for the open (no source read: no nested opens)."""
    f = sys._getframe(2)
    while f is not None:
        name = f.f_code.co_filename
        if "/dltr/" in name or any(f"/{p}/" in name for p in ("pipeline", "features", "models", "analysis")):
            return name
        f = f.f_back
    return "?"


def _audit(event: str, args: tuple) -> None:
    truth = _WATCH["truth"]
    if event != "open" or truth is None or not isinstance(args[0], (str, bytes, os.PathLike)):
        return
    path = os.path.abspath(os.fsdecode(args[0]))
    if path.startswith(truth):
        _WATCH["opens"].append((path, _opener()))


def build_tiny_demo(root: Path) -> TinyDemo:
    import pandas as pd

    from dltr.demo import DemoConfig, run_demo

    global _HOOKED
    out = root / "out"
    cfg = DemoConfig.for_profile("tiny", seed=0, pseudonym_key=KEY, candidates=CANDIDATES)
    logs: list[str] = []
    progress: list[tuple[str, int, int | None]] = []
    if not _HOOKED:                   # hooks cannot be removed: it records only while _WATCH["truth"] is set
        sys.addaudithook(_audit)
        _HOOKED = True
    _WATCH["truth"], _WATCH["opens"] = str((out / "synthetic" / "truth").resolve()) + os.sep, []
    try:
        res = run_demo(out, cfg, log=logs.append, progress=lambda stage, done, total: progress.append(
            (stage, done, total)))
    finally:
        _WATCH["truth"] = None
    raw = pd.read_csv(out / "synthetic" / "cohort" / "clinical.csv", dtype=str)["patient_id"].tolist()
    return TinyDemo(res, cfg, logs, progress, list(_WATCH["opens"]), raw)
