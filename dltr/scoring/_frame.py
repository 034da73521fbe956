"""The head's input row for one patient, built by the feature store's own point-in-time frame SQL.

The patient's clinical and lab tables (typed like the training store's clinical table) and the
one-row feature table go to ``features.memory_frame``, which runs the SQL of
``FeatureStore.training_frame`` on them in memory, so clinical typing and lab point-in-time rules
cannot drift (and no temporary store, registry commit or catalog is built per request).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa

__all__ = ["head_frame"]


def _conform_clinical(df: pd.DataFrame, train_schema: pa.Schema, columns: tuple[str, ...]) -> pd.DataFrame:
    """Cast to the training clinical table's types; a training column the patient lacks is null."""
    df = df.copy()
    for name in columns:
        if name not in train_schema.names:
            continue
        typ = train_schema.field(name).type
        s = df[name] if name in df.columns else pd.Series([pd.NA] * len(df), index=df.index)
        if pa.types.is_floating(typ):
            df[name] = pd.to_numeric(s, errors="coerce").astype("float64")
        elif pa.types.is_integer(typ):
            v = pd.to_numeric(s, errors="coerce")
            df[name] = v.round().astype("Int64") if v.isna().all() or (v.dropna() == v.dropna().round()).all() \
                else v.astype("float64")
        elif pa.types.is_string(typ) or pa.types.is_large_string(typ):
            df[name] = s.astype("string").where(s.notna(), pd.NA) if len(s) else s.astype("string")
    return df


def _labs_with_names(labs: pd.DataFrame | None, names: tuple[str, ...], key: str) -> pd.DataFrame:
    """The patient's labs plus one null-valued row per training lab the patient lacks (the frame's
    SQL ignores null values, and a lab name must exist for the frame to have its column)."""
    cols = ["patient_id", "name", "value", "unit", "measured_at", "recorded_at"]
    if labs is None:
        labs = pd.DataFrame({c: pd.Series(dtype="object") for c in cols})
    have = set(labs["name"].dropna().astype(str)) if len(labs) else set()
    missing = [n for n in names if n not in have]
    if missing:
        extra = pd.DataFrame({"patient_id": key, "name": missing, "value": np.nan, "unit": pd.NA,
                              "measured_at": pd.NaT, "recorded_at": pd.NaT})
        labs = pd.concat([labs, extra.astype({"measured_at": "datetime64[ns]", "recorded_at": "datetime64[ns]"})],
                         ignore_index=True)
    labs["value"] = pd.to_numeric(labs["value"], errors="coerce").astype("float64")
    return labs


def head_frame(cohort: Any, lineage: Any, row: pa.Table, train_schema: pa.Schema
               ) -> tuple[pd.DataFrame, np.ndarray]:
    """(frame columns as pandas, embedding matrix) of the one scored patient (``cohort``: its
    one-patient cohort as ``dltr.cohort.load_cohort`` returns it): the store's frame SQL on the
    patient's tables in memory (``features.memory_frame``; no temporary store, no catalog)."""
    from features import memory_frame
    from models.heads import frame_arrays

    clinical = _conform_clinical(cohort.clinical, train_schema, lineage.clinical)
    key = str(clinical["patient_id"].iloc[0])
    labs = _labs_with_names(cohort.labs, lineage.labs, key)
    frame = memory_frame(dataclasses.replace(cohort, clinical=clinical, labs=labs, expression=None), row,
                         label="response", clinical=list(lineage.clinical), labs=list(lineage.labs),
                         max_age_days=lineage.max_age_days)
    return frame_arrays(frame)
