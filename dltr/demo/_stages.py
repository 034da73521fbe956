"""Idempotent stages for ``dltr demo``: each stage records the hash of its inputs and
what it produced; a re-run with the same inputs reuses the output and says so. Also the demo's
radiomics stage (``radiomics_stage``)."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dltr.core.exceptions import DltrError
from dltr.core.hashing import content_hash
from dltr.core.io import atomic_write_text
from dltr.core.vocabulary import PRIMARY_HEAD


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


# -- the radiomics stage ---------------------------------------------------------------------------------------
#: Classes of dltr's default recipe (pipeline/radiomics/default_settings.json) the demo leaves out: GLCM's 13
#: co-occurrence directions at the recipe's bin width (5 on the x100 z-score scale: 100+ grey levels) cost about 5x
#: all the other classes together (424 vs 88 ms CPU per study on the default profile's 72x72x28 volumes);
#: GLRLM, GLSZM, GLDM and NGTDM keep the texture families beside shape and first-order statistics.
DEMO_RADIOMICS_LEFT_OUT = ("glcm",)


def demo_radiomics_settings():
    """dltr's default radiomics recipe without ``DEMO_RADIOMICS_LEFT_OUT`` (the recipe's hash is in the lineage)."""
    from pipeline.radiomics import RadiomicsSettings, load_settings

    d = load_settings().to_dict()
    d["featureClass"] = {k: v for k, v in d["featureClass"].items() if k not in DEMO_RADIOMICS_LEFT_OUT}
    return RadiomicsSettings.from_dict(d, source=f"dltr demo: the default recipe without {DEMO_RADIOMICS_LEFT_OUT}")


def radiomics_stage(store, *, deep: str, clinical, labs, seed: int, workers: int) -> tuple[dict[str, Any], dict]:
    """Radiomics features (Ray), the multi-set heads beside the paper's, the evaluation of every head again (paired
    DeLong against DLTR_MLP) and the survival stratification of each multi-set head and DLTR_MLP
    (table ``survival_by_head``)."""
    from analysis.evaluation import EvaluateConfig, evaluate
    from models.heads import MultiHeadsConfig, train_multi_heads
    from pipeline.radiomics import RadiomicsConfig, extract_radiomics

    rep = extract_radiomics(store, demo_radiomics_settings(), RadiomicsConfig(workers=workers))
    if rep.status not in ("published", "exists"):
        raise DltrError(f"radiomics: {rep.summary()}")
    res = train_multi_heads(store, MultiHeadsConfig(deep=deep, clinical=clinical, labs=labs, seed=seed))
    evaluate(store, EvaluateConfig(seed=seed))
    survival_by_head(store, [PRIMARY_HEAD, *res["versions"]])
    out = {"version_id": rep.version_id, "dim": rep.dim, "patients_per_s": rep.patients_per_s,
           "heads": res["versions"], "cv_auc": {h: m["cv_auc"] for h, m in res["metrics"].items()}}
    return out, {"patients": rep.n_computed}


def survival_by_head(store, heads: list[str]) -> None:
    """PFS by each head's risk groups (its training cutoff), one ``survival_summary`` block per head, in the table
    ``survival_by_head`` (the report's comparison of the heads' stratification)."""
    import pandas as pd
    import pyarrow as pa

    from analysis.survival import SurvivalConfig, run_survival

    parts = [run_survival(store, SurvivalConfig(head=h), write=False).tables()["survival_summary"] for h in heads]
    df = pd.concat(parts, ignore_index=True)
    store.write_table("survival_by_head", pa.Table.from_pandas(df, preserve_index=False), lineage={"heads": heads})
