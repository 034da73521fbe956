"""Expression tables as TCGA distributes them, and the store's long expression table.

``read_tcga_tpm`` reads a genes x samples TPM table whose row ids are ``SYMBOL|EntrezID`` (TCGA
RSEM / Linnorm style) and whose columns are TCGA sample barcodes (``TCGA-DD-A1EC-01A`` or with
dots). The choices, each reported in the returned info dict:

- rows whose symbol is ``?`` (no HGNC symbol) are dropped;
- rows sharing a symbol (different Entrez ids) are collapsed by **summing their TPM** (TPM is
  additive over transcripts of one symbol, so the collapsed row stays on the TPM scale);
- samples are kept by barcode sample-type code: tumour 01-09 (default), normal 10-19, control
  20-29; a column that is not a TCGA barcode raises;
- TPM -> log2(TPM + 1).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from dltr.core.exceptions import DltrError

__all__ = ["ExpressionError", "SAMPLE_KINDS", "expression_matrix", "read_tcga_tpm", "tcga_sample_kind"]

SAMPLE_KINDS = {"tumour": range(1, 10), "normal": range(10, 20), "control": range(20, 30)}
_BARCODE = re.compile(r"^(TCGA)[.\-]([A-Z0-9]{2})[.\-]([A-Z0-9]{4})[.\-](\d{2})([A-Z]?)", re.IGNORECASE)


class ExpressionError(DltrError, ValueError):
    """An expression table breaks its format."""


def tcga_sample_kind(barcode: str) -> tuple[str, str]:
    """``(patient barcode TCGA-XX-XXXX, kind)`` of a TCGA sample barcode."""
    m = _BARCODE.match(barcode)
    if not m:
        raise ExpressionError(f"column {barcode!r} is not a TCGA sample barcode (TCGA-XX-XXXX-NN...)")
    code = int(m.group(4))
    kind = next((k for k, r in SAMPLE_KINDS.items() if code in r), "other")
    return f"TCGA-{m.group(2)}-{m.group(3)}".upper(), kind


def read_tcga_tpm(path: str | Path, *, keep: str = "tumour") -> tuple[pd.DataFrame, dict[str, Any]]:
    """log2(TPM+1) genes x samples (index: symbol; columns: patient barcodes) and the info dict."""
    path = Path(path)
    if keep not in SAMPLE_KINDS:
        raise ExpressionError(f"keep={keep!r}: choose one of {list(SAMPLE_KINDS)}")
    try:
        raw = pd.read_csv(path, index_col=0)
    except (OSError, ValueError, UnicodeDecodeError) as e:
        raise ExpressionError(f"{path}: cannot read the expression table ({e})") from e
    ids = raw.index.astype(str)
    bad = [i for i, s in enumerate(ids) if s.count("|") != 1]
    if bad:
        raise ExpressionError(f"{path} row {bad[0] + 2}: row id {ids[bad[0]]!r} is not 'SYMBOL|EntrezID'")
    nonnum = [c for c in raw.columns if not pd.api.types.is_numeric_dtype(raw[c])]
    if nonnum:
        raise ExpressionError(f"{path}: column {nonnum[0]!r} holds non-numeric values")
    if (raw.to_numpy() < 0).any():
        r, c = np.argwhere(raw.to_numpy() < 0)[0]
        raise ExpressionError(f"{path} row {r + 2}, column {raw.columns[c]!r}: negative TPM "
                              f"{raw.iat[r, c]}")
    symbol = ids.str.split("|").str[0]
    kinds = {c: tcga_sample_kind(c) for c in raw.columns}
    cols = [c for c in raw.columns if kinds[c][1] == keep]
    unknown = symbol == "?"
    tpm = raw.loc[~unknown, cols]
    tpm.index = symbol[~unknown]
    dup = tpm.index[tpm.index.duplicated(keep=False)].unique()
    tpm = tpm.groupby(level=0, sort=True).sum()
    patients = [kinds[c][0] for c in cols]
    if len(set(patients)) != len(patients):
        raise ExpressionError(f"{path}: several {keep} samples of one patient: {sorted(patients)}")
    tpm.columns = patients
    tpm.index.name = "gene"
    info = {
        "file": str(path), "rows_in_file": int(len(raw)), "samples_in_file": int(raw.shape[1]),
        "sample_kinds": {k: sum(1 for v in kinds.values() if v[1] == k) for k in (*SAMPLE_KINDS, "other")},
        "kept": keep, "samples_kept": int(len(cols)), "barcodes_kept": cols,
        "dropped_unknown_symbol_rows": int(unknown.sum()),
        "tpm_fraction_dropped_unknown": float(raw.loc[unknown, cols].to_numpy().sum() / raw[cols].to_numpy().sum()),
        "duplicate_symbols": sorted(map(str, dup)), "duplicate_rule": "sum of TPM over the rows of one symbol",
        "genes": int(len(tpm)), "transform": "log2(TPM + 1)", "column_rule": "patient barcode TCGA-XX-XXXX",
    }
    return np.log2(tpm + 1.0), info


def expression_matrix(long: pd.DataFrame, patients=None) -> pd.DataFrame:
    """Store long form (patient_id, gene, value) -> patients x genes (float64); genes with a
    missing value for any of ``patients`` are dropped."""
    wide = long.pivot_table(index="patient_id", columns="gene", values="value", aggfunc="first")
    if patients is not None:
        wide = wide.reindex(pd.Index(list(patients), name="patient_id"))
    return wide.dropna(axis=1, how="any").astype(np.float64).sort_index(axis=1)
