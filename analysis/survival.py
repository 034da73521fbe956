"""Progression-free survival by predicted response (the paper's survival stratification).

Risk groups come from one head's score with a cutoff fixed on the **training split only**: by
default the cutoff the ``scores`` table carries (Youden on the training split, written by the
heads stage); ``cutoff="youden"`` recomputes Youden from the training rows' labels and scores,
``"median"`` takes the training rows' median score. Patients with score >= cutoff are predicted
responders (``low`` risk), the others ``high`` risk. Per evaluation group (``training``, ``internal``, each
``external <center>`` and, with more than one external center, ``external (pooled)``): Kaplan-Meier
curves with CI bands and numbers at risk, log-rank test, Cox HR (high vs low, and per
``score_unit`` of the score) with CI and the Schoenfeld-residual proportional-hazards test
(lifelines ``proportional_hazard_test``, rank time transform), Harrell's C-index, median PFS.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from dltr.core.exceptions import StoreError
from dltr.core.layout import StoreLayout
from dltr.core.vocabulary import PRIMARY_HEAD

from ._km import at_risk_counts, compare_groups, km_frame
from .groups import evaluation_groups

__all__ = ["SurvivalConfig", "SurvivalResult", "at_risk_counts", "fixed_cutoff", "km_frame", "run_survival",
           "survival_analysis", "survival_groups"]

CUTOFF_METHODS = ("scores", "youden", "median")


@dataclass(frozen=True)
class SurvivalConfig:
    head: str = PRIMARY_HEAD
    cutoff: str = "scores"
    level: float = 0.95
    score_unit: float = 0.1

    def __post_init__(self):
        if self.cutoff not in CUTOFF_METHODS:
            raise ValueError(f"SurvivalConfig.cutoff {self.cutoff!r} is not one of {CUTOFF_METHODS}")
        if not 0 < self.level < 1 or self.score_unit <= 0:
            raise ValueError(f"SurvivalConfig: level {self.level} must be in (0, 1) and "
                             f"score_unit {self.score_unit} > 0")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> SurvivalConfig:
        return cls(**d)


def fixed_cutoff(frame: pd.DataFrame, method: str = "scores") -> float:
    """The risk-group cutoff, read from or fitted on the rows with ``split == "train"`` only."""
    from .roc import youden_cutoff

    train = frame.loc[frame["split"].astype(str) == "train"]
    if train.empty:
        raise StoreError("survival: no row has split 'train'; the cutoff must be fixed on the training split")
    if method == "scores":
        if "cutoff" not in train:
            raise StoreError("survival: the scores rows have no 'cutoff' column; use cutoff='youden'")
        vals = pd.unique(train["cutoff"].astype(float))
        if len(vals) != 1 or not np.isfinite(vals[0]):
            raise StoreError(f"survival: the training rows carry cutoffs {list(vals)[:5]}; expected one "
                             "finite value per head")
        return float(vals[0])
    if method == "median":
        return float(np.median(train["score"].astype(float)))
    lab = train.loc[train["label"].notna()]
    if lab["label"].nunique() < 2:
        raise StoreError("survival: Youden cutoff needs both outcomes among the labelled training rows")
    return youden_cutoff(lab["label"].astype(int).to_numpy(), lab["score"].astype(float).to_numpy())


def survival_groups(frame: pd.DataFrame) -> dict[str, np.ndarray]:
    """Cohort name -> boolean row mask (rows with a PFS time and event only)."""
    ok = (frame["pfs_days"].notna() & frame["pfs_event"].notna()).to_numpy()
    return evaluation_groups(frame, ok, pooled=True)


@dataclass
class SurvivalResult:
    """``summary``: one row per evaluation group; ``km``: long Kaplan-Meier table (evaluation_group, group, time, ...)."""

    head: str
    head_version: str
    cutoff: float
    cutoff_method: str
    summary: pd.DataFrame
    km: pd.DataFrame

    def tables(self) -> dict[str, pd.DataFrame]:
        ident = {"head": self.head, "head_version": self.head_version}
        return {"survival_summary": self.summary.assign(**ident, cutoff_method=self.cutoff_method),
                "survival_km": self.km.assign(**ident)}


def survival_analysis(frame: pd.DataFrame, config: SurvivalConfig | None = None, *,
                      head_version: str = "") -> SurvivalResult:
    """Core analysis on a DataFrame with patient_id, center, split, score, pfs_days, pfs_event
    (and ``cutoff`` / ``label`` as the cutoff method needs)."""
    cfg = config or SurvivalConfig()
    missing = {"patient_id", "center", "split", "score", "pfs_days", "pfs_event"} - set(frame.columns)
    if missing:
        raise StoreError(f"survival: input lacks columns {sorted(missing)}")
    cutoff = fixed_cutoff(frame, cfg.cutoff)
    rows, kms = [], []
    for name, mask in survival_groups(frame).items():
        d = frame.loc[mask]
        row, km = compare_groups(d["pfs_days"], d["pfs_event"], d["score"], cutoff, level=cfg.level,
                                 score_unit=cfg.score_unit, evaluation_group=name)
        rows.append(row)
        kms.append(km.assign(evaluation_group=name))
    if not rows:
        raise StoreError("survival: no patient has both a score and pfs_days / pfs_event")
    km = pd.concat(kms, ignore_index=True)
    km = km[["evaluation_group", "group"] + [c for c in km.columns if c not in ("evaluation_group", "group")]]
    return SurvivalResult(cfg.head, head_version, cutoff, cfg.cutoff, pd.DataFrame(rows), km)


def _frame_from_store(store, head: str) -> tuple[pd.DataFrame, str]:
    scores = store.table("scores").to_pandas()
    scores = scores.loc[scores["head"] == head]
    if scores.empty:
        raise StoreError(f"survival: the scores table has no rows for head {head!r}; run `dltr train-heads`")
    versions = pd.unique(scores["head_version"].astype(str))
    if len(versions) != 1:
        raise StoreError(f"survival: head {head!r} has several versions in scores: {list(versions)}")
    clin = store.table("clinical").to_pandas()[["patient_id", "pfs_days", "pfs_event"]]
    frame = scores.merge(clin, on="patient_id", how="left", validate="one_to_one")
    return frame, str(versions[0])


def run_survival(store, config: SurvivalConfig | None = None, *, out: str | Path | None = None,
                 write: bool = True) -> SurvivalResult:
    """Store-facing job: read ``scores`` and ``clinical``, analyse, write ``survival_summary`` and
    ``survival_km`` to the store and the KM figures (one PNG per evaluation group) to ``out`` (default
    ``STORE/figures``)."""
    import pyarrow as pa

    cfg = config or SurvivalConfig()
    frame, version = _frame_from_store(store, cfg.head)
    res = survival_analysis(frame, cfg, head_version=version)
    if write:
        lineage = {"config": cfg.to_dict(), "head_version": version, "cutoff": res.cutoff}
        for name, df in res.tables().items():
            store.write_table(name, pa.Table.from_pandas(df, preserve_index=False), lineage=lineage)
        from .survival_plots import save_survival_figures

        save_survival_figures(res, Path(out) if out else StoreLayout.of(store).figures)
    return res
