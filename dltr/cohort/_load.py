"""``load_cohort``: the cohort's tables with proper dtypes, ``split`` and ``label``."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pandas as pd

from dltr.core.exceptions import CohortError
from dltr.core.vocabulary import RESPONDERS

from ._dates import DATE, DATE_TIME, parse_dates
from ._model import Cohort, CohortConfig
from ._validate import RESPONSES, SPLITS, validate

__all__ = ["load_cohort", "derive_split"]

_FATAL_ROWLESS = {"manifest.csv", "clinical.csv", "cohort.toml"}


_INT_EXACT = 2.0**53  # a whole-number text below this parses to exactly that integer; from it on, float


def _date(s: pd.Series, kind: str = DATE) -> pd.Series:
    return parse_dates(s, kind)  # the validator's parser: a reported cell is null, an accepted one is used


def _numeric_or_text(s: pd.Series) -> pd.Series:
    """A covariate column: Int64 when every value is a whole number that float64 holds exactly, float64
    when numeric otherwise ('INF', '1E100' stay float, never wrapped or cast), else text."""
    non_empty = s[s != ""]
    num = pd.to_numeric(non_empty, errors="coerce")
    if len(non_empty) and num.notna().all():
        out = pd.to_numeric(s.where(s != ""), errors="coerce").astype("float64")
        vals = out.dropna().to_numpy()
        if (np.isfinite(vals) & (np.abs(vals) < _INT_EXACT) & (vals == np.round(vals))).all():
            return out.astype("Int64")
        return out
    return s.where(s != "").astype("string")


def derive_split(clinical: pd.DataFrame, config: CohortConfig) -> pd.Series:
    """The documented split: the first of ``train_centers`` (default the largest center) is train/internal
    by a seeded hash of patient_id (``internal_fraction`` internal), every other center external."""
    centers = clinical["center"].astype(str)
    if config.train_centers:
        train_center = config.train_centers[0]
    else:
        counts = centers.value_counts()
        train_center = sorted(counts[counts == counts.max()].index)[0] if len(counts) else ""

    def u(pid: str) -> float:
        h = hashlib.sha256(f"{config.split_seed}:{pid}".encode()).digest()
        return int.from_bytes(h[:8], "big") / 2.0 ** 64

    internal = clinical["patient_id"].astype(str).map(u) < config.internal_fraction
    split = np.where(centers == train_center, np.where(internal, "internal", "train"), "external")
    return pd.Series(split, index=clinical.index, dtype="string")


def _clinical(df: pd.DataFrame, config: CohortConfig) -> pd.DataFrame:
    out = pd.DataFrame(index=df.index)
    for c in df.columns:
        if c in ("patient_id", "center"):
            out[c] = df[c].astype("string")
        elif c == "tace_date":
            out[c] = _date(df[c])
        elif c in ("response", "split"):
            allowed = RESPONSES if c == "response" else SPLITS
            out[c] = df[c].where(df[c].isin(allowed)).astype("string")
        elif c == "pfs_days":
            out[c] = pd.to_numeric(df[c].where(df[c] != ""), errors="coerce").astype("float64")
        elif c == "pfs_event":
            out[c] = pd.to_numeric(df[c].where(df[c].isin(["0", "1"])), errors="coerce").astype("Int8")
        else:
            out[c] = _numeric_or_text(df[c])
    derived = derive_split(out, config)
    out["split"] = out["split"].fillna(derived) if "split" in out else derived
    label = out["response"].map({g: int(g in RESPONDERS) for g in RESPONSES}) if "response" in out else pd.NA
    out["label"] = pd.array(label if "response" in out else [pd.NA] * len(out), dtype="Int8")
    return out.reset_index(drop=True)


def _labs(df: pd.DataFrame) -> pd.DataFrame:
    out = pd.DataFrame({"patient_id": df["patient_id"].astype("string"), "name": df["name"].astype("string"),
                        "value": pd.to_numeric(df["value"], errors="coerce").astype("float64")})
    out["unit"] = df["unit"].astype("string") if "unit" in df else pd.Series(pd.NA, index=df.index, dtype="string")
    out["measured_at"] = _date(df["measured_at"], DATE_TIME)
    rec = _date(df["recorded_at"], DATE_TIME) if "recorded_at" in df else pd.Series(pd.NaT, index=df.index)
    out["recorded_at"] = rec.fillna(out["measured_at"]).astype("datetime64[ns]")
    out["measured_at"] = out["measured_at"].astype("datetime64[ns]")
    return out.reset_index(drop=True)


def load_cohort(path: str | Path) -> Cohort:
    """Validate and load a cohort folder.

    Raises ``CohortError`` when the cohort is unusable (no folder, a required file or column missing,
    cohort.toml unreadable); row-level problems stay in ``cohort.report`` and their cells become null.
    """
    root = Path(path)
    if not root.is_dir():
        raise CohortError(f"{root}: cohort folder does not exist or is not a folder; give the folder holding "
                          "manifest.csv and clinical.csv")
    report, tables, config = validate(root)
    fatal = [i for i in report.errors if i.row is None and i.file in _FATAL_ROWLESS
             and (i.column is None or i.reason.startswith("required column"))]
    if fatal:
        raise CohortError(f"{root}: {fatal[0].file}: {fatal[0].reason}"
                          + (f" (and {len(fatal) - 1} more)" if len(fatal) > 1 else ""))
    man = tables["manifest.csv"].copy()
    for c in man.columns:
        man[c] = _date(man[c]) if c == "study_date" else man[c].where(man[c] != "").astype("string")
    labs = _labs(tables["labs.csv"]) if tables["labs.csv"] is not None else None
    expr = None
    if tables["expression.tsv"] is not None:
        e = tables["expression.tsv"].set_index("gene")
        expr = e.apply(lambda s: pd.to_numeric(s, errors="coerce")).astype("float64")
    return Cohort(root=root, config=config, manifest=man.reset_index(drop=True),
                  clinical=_clinical(tables["clinical.csv"], config), labs=labs, expression=expr, report=report)
