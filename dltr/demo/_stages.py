"""Idempotent stages for ``dltr demo``: each stage records the hash of its inputs and
what it produced; a re-run with the same inputs reuses the output and says so."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dltr.core.hashing import content_hash
from dltr.core.io import atomic_write_text


@dataclass
class StageRecord:
    name: str
    inputs_hash: str
    outputs: dict[str, Any]
    seconds: float
    reused: bool = False
    work: dict[str, float] = field(default_factory=dict)  # e.g. {"volumes": 1200} for volumes/s


class StageLog:
    """The demo's ledger (``OUT/stages.json``): one record per stage, rewritten atomically."""

    def __init__(self, path: Path, log: Callable[[str], None] = print):
        self.path = Path(path)
        self.log = log
        self.records: dict[str, dict[str, Any]] = {}
        if self.path.exists():
            self.records = json.loads(self.path.read_text())

    def run(self, name: str, inputs: Any, fn: Callable[[], tuple[dict[str, Any], dict[str, float]]],
            done: Callable[[dict[str, Any]], bool] = lambda _o: True) -> StageRecord:
        """Run ``fn`` unless a record with the same inputs exists and ``done(outputs)`` holds.

        ``fn`` returns ``(outputs, work)``; outputs must be JSON-serialisable and are what
        later stages and the report read.
        """
        h = content_hash(inputs)
        prev = self.records.get(name)
        if prev and prev["inputs_hash"] == h and done(prev["outputs"]):
            self.log(f"[{name}] up to date (inputs {h}); reusing the result of the earlier run")
            rec = StageRecord(name, h, prev["outputs"], prev["seconds"], reused=True, work=prev.get("work", {}))
            return rec
        self.log(f"[{name}] running ...")
        t0 = time.perf_counter()
        outputs, work = fn()
        secs = time.perf_counter() - t0
        self.log(f"[{name}] done in {secs:.1f} s")
        order = self.records.get(name, {}).get("order", len(self.records))
        self.records[name] = {"inputs_hash": h, "outputs": outputs, "seconds": secs, "work": work, "order": order}
        atomic_write_text(self.path, json.dumps(self.records, indent=2, sort_keys=True, default=str))
        return StageRecord(name, h, outputs, secs, work=work)
