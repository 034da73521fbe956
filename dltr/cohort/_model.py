"""The cohort contract's objects: config (cohort.toml), issues, the validation report, the loaded cohort."""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

__all__ = ["Cohort", "CohortConfig", "CohortIssue", "ValidationReport", "EXPRESSION_SCALES", "NOT_PREDICTORS"]

EXPRESSION_SCALES = ("tpm", "counts", "log2tpm1")
# clinical.csv columns that are keys, dates, the split or outcomes: never model predictors
NOT_PREDICTORS = ("patient_id", "center", "tace_date", "split", "response", "label", "pfs_days", "pfs_event")


@dataclass(frozen=True)
class CohortConfig:
    """``cohort.toml``: name, phase order (encoder channels), expression scale, training centers, units, and
    ``predictors``: the clinical.csv columns and labs.csv measurement names known before treatment that models
    may use. Nothing else is ever a predictor (a sheet also holds what happened after treatment)."""

    name: str = "cohort"
    phases: tuple[str, ...] = ()
    expression_scale: str = "log2tpm1"
    train_centers: tuple[str, ...] = ()
    internal_fraction: float = 0.3
    split_seed: int = 0
    units: dict = field(default_factory=dict)
    #: clinical.csv columns and labs.csv names the clinical and fusion models may use (known before TACE)
    predictors: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "phases": list(self.phases), "expression_scale": self.expression_scale,
                "train_centers": list(self.train_centers), "internal_fraction": self.internal_fraction,
                "split_seed": self.split_seed, "units": dict(self.units), "predictors": list(self.predictors)}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> CohortConfig:
        return cls(name=str(d.get("name", "cohort")), phases=tuple(d.get("phases", ())),
                   expression_scale=str(d.get("expression_scale", "log2tpm1")),
                   train_centers=tuple(d.get("train_centers", ())),
                   internal_fraction=float(d.get("internal_fraction", 0.3)), split_seed=int(d.get("split_seed", 0)),
                   units=dict(d.get("units", {})), predictors=tuple(d.get("predictors", ())))

    @classmethod
    def read(cls, path: Path) -> CohortConfig:
        """Parse ``cohort.toml`` (raises ``tomllib.TOMLDecodeError``, ``ValueError`` or ``TypeError``)."""
        with open(path, "rb") as f:
            d = tomllib.load(f)
        for key in ("phases", "train_centers", "predictors"):
            v = d.get(key, [])
            if not isinstance(v, list) or not all(isinstance(x, str) and x for x in v):
                raise ValueError(f"{key} must be a list of non-empty strings, got {v!r}")
        reserved = sorted(set(d.get("predictors", [])) & set(NOT_PREDICTORS))
        if reserved:
            raise ValueError(f"predictors {reserved} are keys, dates or outcomes, never predictors; remove them")
        if len(set(d.get("predictors", []))) != len(d.get("predictors", [])):
            raise ValueError(f"predictors {d['predictors']!r} lists a name twice")
        if d.get("expression_scale", "log2tpm1") not in EXPRESSION_SCALES:
            raise ValueError(f"expression_scale {d.get('expression_scale')!r} is not one of {EXPRESSION_SCALES}")
        return cls.from_dict(d)


@dataclass(frozen=True)
class CohortIssue:
    """One problem: ``row`` is the 1-based data row of the file (header not counted), or None."""

    file: str
    row: int | None
    column: str | None
    reason: str
    severity: str = "error"  # or "warning"

    def __str__(self) -> str:
        where = self.file + (f" row {self.row}" if self.row is not None else "")
        where += f" column {self.column}" if self.column else ""
        return f"{self.severity}: {where}: {self.reason}"

    def to_dict(self) -> dict[str, Any]:
        return {"file": self.file, "row": self.row, "column": self.column, "reason": self.reason,
                "severity": self.severity}


@dataclass(frozen=True)
class ValidationReport:
    root: Path
    issues: tuple[CohortIssue, ...]
    counts: dict  # patients, manifest_rows, phases ...

    @property
    def errors(self) -> list[CohortIssue]:
        return [i for i in self.issues if i.severity == "error"]

    @property
    def warnings(self) -> list[CohortIssue]:
        return [i for i in self.issues if i.severity == "warning"]

    @property
    def ok(self) -> bool:
        return not self.errors

    @property
    def summary(self) -> dict[str, Any]:
        return {"cohort": str(self.root), "ok": self.ok, "errors": len(self.errors),
                "warnings": len(self.warnings), **self.counts}

    def to_dict(self) -> dict[str, Any]:
        return {"summary": self.summary, "issues": [i.to_dict() for i in self.issues]}

    def to_frame(self) -> pd.DataFrame:
        return pd.DataFrame([i.to_dict() for i in self.issues],
                            columns=["file", "row", "column", "reason", "severity"])


@dataclass(frozen=True)
class Cohort:
    """A loaded cohort: typed tables (rows with bad cells kept, the bad cells null) and its report."""

    root: Path
    config: CohortConfig
    manifest: pd.DataFrame
    clinical: pd.DataFrame
    labs: pd.DataFrame | None
    expression: pd.DataFrame | None  # index gene, one column per patient
    report: ValidationReport

    @property
    def patients(self) -> list[str]:
        return self.clinical["patient_id"].tolist()

    def image_path(self, rel: str) -> Path:
        return self.root / rel
