"""Cohort tables for the store (docs/architecture.md): clinical, labs, expression, studies.

Turns a loaded ``dltr.cohort.Cohort`` into Arrow tables with the store's types: dates as
``date32``, lab times as ``timestamp[us]`` (naive UTC), ``label`` as ``int8``, expression in
long form on the log2(TPM+1) scale.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from dltr.core.exceptions import StoreError
from dltr.core.layout import StoreLayout

DATE_COLUMNS = ("tace_date",)
TIME_COLUMNS = ("measured_at", "recorded_at")


def _to_arrow(df: pd.DataFrame) -> pa.Table:
    df = df.reset_index(drop=True)
    for c in df.columns:
        if isinstance(df[c].dtype, pd.DatetimeTZDtype):
            df[c] = df[c].dt.tz_convert("UTC").dt.tz_localize(None)
    t = pa.Table.from_pandas(df, preserve_index=False)
    return t.replace_schema_metadata(None)


def _cast(t: pa.Table, name: str, typ: pa.DataType) -> pa.Table:
    if name not in t.column_names:
        return t
    i = t.column_names.index(name)
    col = t.column(i)
    if pa.types.is_timestamp(col.type) and pa.types.is_date(typ):
        col = col.cast(pa.timestamp("us")).cast(pa.date32())
    else:
        col = col.cast(typ)
    return t.set_column(i, pa.field(name, typ), col)


def clinical_table(clinical: pd.DataFrame) -> pa.Table:
    for col in ("patient_id", "center", "tace_date", "split", "label"):
        if col not in clinical.columns:
            raise StoreError(f"clinical table: column {col!r} missing; load the cohort with dltr.cohort.load_cohort")
    t = _to_arrow(clinical)
    t = _cast(t, "patient_id", pa.string())
    t = _cast(t, "tace_date", pa.date32())
    t = _cast(t, "label", pa.int8())
    return t


def labs_table(labs: pd.DataFrame | None) -> pa.Table:
    cols = ["patient_id", "name", "value", "unit", "measured_at", "recorded_at"]
    if labs is None:
        labs = pd.DataFrame({c: pd.Series(dtype="object") for c in cols})
    labs = labs.copy()
    if "unit" not in labs.columns:
        labs["unit"] = None
    if "recorded_at" not in labs.columns:
        labs["recorded_at"] = labs["measured_at"]
    labs["recorded_at"] = labs["recorded_at"].fillna(labs["measured_at"])
    t = _to_arrow(labs[cols])
    for c, typ in (("patient_id", pa.string()), ("name", pa.string()), ("value", pa.float64()),
                   ("unit", pa.string()), ("measured_at", pa.timestamp("us")), ("recorded_at", pa.timestamp("us"))):
        t = _cast(t, c, typ)
    return t


def expression_table(expr: pd.DataFrame | None, scale: str) -> tuple[pa.Table, dict[str, Any]]:
    """Wide gene x patient -> long ``patient_id, gene, value`` (float32, log2(TPM+1))."""
    schema = pa.schema([("patient_id", pa.string()), ("gene", pa.string()), ("value", pa.float32())])
    if expr is None or expr.empty:
        return schema.empty_table(), {"source_scale": scale, "conversion": "none (no expression)"}
    wide = expr.set_index("gene") if "gene" in expr.columns else expr
    values = wide.to_numpy(dtype=np.float64)
    if scale == "log2tpm1":
        conversion = "none (already log2(TPM+1))"
    elif scale == "tpm":
        values, conversion = np.log2(values + 1.0), "log2(tpm + 1)"
    elif scale == "counts":
        lib = np.nansum(values, axis=0, keepdims=True)
        values = np.log2(values / np.where(lib > 0, lib, 1.0) * 1e6 + 1.0)
        conversion = "log2(CPM + 1) from counts (no gene lengths: CPM stands in for TPM)"
    else:
        raise StoreError(f"expression scale {scale!r} is not one of log2tpm1, tpm, counts (cohort.toml)")
    genes = np.asarray(wide.index.astype(str))
    patients = np.asarray(wide.columns.astype(str))
    t = pa.table({
        "patient_id": pa.array(np.repeat(patients, len(genes))),
        "gene": pa.array(np.tile(genes, len(patients))),
        "value": pa.array(values.T.reshape(-1).astype(np.float32)),
    }, schema=schema)
    return t, {"source_scale": scale, "conversion": conversion}


def cohort_tables(cohort: Any, store_root: Path) -> dict[str, tuple[pa.Table, dict[str, Any]]]:
    """name -> (table, lineage) for every cohort table, studies from ``STORE/ingest`` when present."""
    source = str(getattr(cohort, "root", getattr(cohort, "path", "")))
    cfg = getattr(cohort, "config", None)
    predictors = list(getattr(cfg, "predictors", ()) or ())  # cohort.toml's declared predictors (dltr.cohort)
    out = {"clinical": (clinical_table(cohort.clinical), {"source": source, "file": "clinical.csv",
                                                          "predictors": predictors}),
           "labs": (labs_table(getattr(cohort, "labs", None)), {"source": source, "file": "labs.csv"})}
    scale = getattr(cfg, "expression_scale", "log2tpm1") if cfg is not None else "log2tpm1"
    expr, lin = expression_table(getattr(cohort, "expression", None), scale)
    out["expression"] = (expr, {"source": source, "file": "expression.tsv", **lin})
    studies = StoreLayout.of(store_root).studies
    if studies.is_file():
        out["studies"] = (pq.read_table(studies), {"source": studies.relative_to(store_root).as_posix()})
    return out
