"""Cohort tables for the store (docs/architecture.md): clinical, labs, expression, studies.

Turns a loaded ``dltr.cohort.Cohort`` into Arrow tables with the store's types: dates as
``date32``, lab times as ``timestamp[us]`` (naive UTC), ``label`` as ``int8``, expression in
long form on the log2(TPM+1) scale.

With a pseudonym key every ``patient_id`` (and each expression column) is replaced by the same
keyed pseudonym that ingest gives the volumes (``dltr.core.hashing.pseudonym``), before any table
is built: the raw identifier reaches no file of the store, and every table joins the volumes.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from dltr.core.exceptions import StoreError
from dltr.core.hashing import pseudonym
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


def _keyed(df: pd.DataFrame | None, key: str | None) -> pd.DataFrame | None:
    if df is None or not key or "patient_id" not in df.columns:
        return df
    return df.assign(patient_id=[None if pd.isna(v) else pseudonym(str(v), key) for v in df["patient_id"]])


def _keyed_expression(expr: pd.DataFrame | None, key: str | None) -> pd.DataFrame | None:
    if expr is None or not key:
        return expr
    return expr.rename(columns={c: pseudonym(str(c), key) for c in expr.columns if c != "gene"})


def _check_join(clinical: pa.Table, studies: pa.Table, keyed: bool, path: Path) -> None:
    """The cohort's patients must be the volumes' patients: a key given to one stage only joins nothing."""
    ids, vol = set(clinical.column("patient_id").to_pylist()), set(studies.column("patient_id").to_pylist())
    if vol and not ids & vol:
        hint = ("the same key as `dltr ingest --pseudonym-key-env`" if keyed else
                "--pseudonym-key-env with the key ingest used (the volumes are keyed by pseudonyms)")
        raise StoreError(f"{path}: none of the {len(ids)} clinical patient_ids matches the {len(vol)} ingested "
                         f"patients; give {hint}")


def cohort_tables(cohort: Any, store_root: Path, *,
                  pseudonym_key: str | None = None) -> dict[str, tuple[pa.Table, dict[str, Any]]]:
    """name -> (table, lineage) for every cohort table, studies from ``STORE/ingest`` when present;
    with ``pseudonym_key`` every patient id is the keyed pseudonym ingest used."""
    source = str(getattr(cohort, "root", getattr(cohort, "path", "")))
    keyed = {"pseudonymised": bool(pseudonym_key)}
    cfg = getattr(cohort, "config", None)
    cohort_config = cfg.to_dict() if hasattr(cfg, "to_dict") else None
    out = {"clinical": (clinical_table(_keyed(cohort.clinical, pseudonym_key)),
                        {"source": source, "file": "clinical.csv", "cohort_config": cohort_config, **keyed}),
           "labs": (labs_table(_keyed(getattr(cohort, "labs", None), pseudonym_key)),
                    {"source": source, "file": "labs.csv", **keyed})}
    scale = getattr(cfg, "expression_scale", "log2tpm1") if cfg is not None else "log2tpm1"
    expr, lin = expression_table(_keyed_expression(getattr(cohort, "expression", None), pseudonym_key), scale)
    out["expression"] = (expr, {"source": source, "file": "expression.tsv", **lin, **keyed})
    layout = StoreLayout.of(store_root)
    if layout.studies.is_file():
        studies = pq.read_table(layout.studies)
        _check_join(out["clinical"][0], studies, bool(pseudonym_key), layout.studies)
        out["studies"] = (studies, {"source": layout.studies.relative_to(layout.root).as_posix()})
    return out


def registered_cohort_config(store: Any) -> dict[str, Any] | None:
    """``cohort.toml`` as ``store add-cohort`` registered it (``CohortConfig.to_dict()``), or None
    when the store's clinical table did not come from a cohort folder."""
    try:
        entry = store.describe("clinical")
    except (StoreError, KeyError):
        return None
    return (entry.get("lineage") or {}).get("cohort_config")


def predictor_columns(store: Any) -> tuple[list[str], list[str]] | None:
    """``(clinical columns, lab names)`` named by the registered cohort.toml's ``predictors``: each name
    goes to the clinical table when it is one of its columns and to the labs when a lab of that name
    exists (a name may be both, e.g. AFP). None when no cohort.toml was registered."""
    cfg = registered_cohort_config(store)
    if cfg is None:
        return None
    wanted = [str(p) for p in cfg.get("predictors") or ()]
    columns = set(store.table("clinical").column_names)
    try:
        labs = set(store.table("labs").column("name").to_pylist())
    except (StoreError, KeyError):
        labs = set()
    unknown = [p for p in wanted if p not in columns and p not in labs]
    if unknown:
        raise StoreError(f"cohort.toml predictors {unknown} are neither clinical.csv columns nor labs.csv names; "
                         "fix cohort.toml and run `dltr store add-cohort` again")
    return [p for p in wanted if p in columns], [p for p in wanted if p in labs]
