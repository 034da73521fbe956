"""``validate_cohort``: every check of the cohort contract, reported per file, row and column."""

from __future__ import annotations

import re
from pathlib import Path, PurePosixPath

import pandas as pd

from dltr.core.exceptions import CohortError
from dltr.core.vocabulary import MRECIST_GRADES

from ._dates import DATE, DATE_TIME, FORMATS, parse_dates
from ._model import CohortConfig, CohortIssue, ValidationReport

__all__ = ["validate_cohort", "read_table", "mask_issue", "REQUIRED"]

PATIENT_ID = re.compile(r"^[A-Za-z0-9._-]{1,64}$")
REQUIRED = {"manifest.csv": ("patient_id", "phase", "image"), "clinical.csv": ("patient_id", "center", "tace_date"),
            "labs.csv": ("patient_id", "name", "value", "measured_at"), "expression.tsv": ("gene",)}
RESPONSES = tuple(reversed(MRECIST_GRADES))  # CR, PR, SD, PD
SPLITS = ("train", "internal", "external")
_INJECTION = ("=", "+", "-", "@", "\t", "\r")
_STRUCTURED = {"patient_id", "phase", "image", "mask", "study_date", "center", "tace_date", "response", "split",
               "pfs_days", "pfs_event", "name", "value", "unit", "measured_at", "recorded_at", "gene"}


class _Issues(list):
    def add(self, file, row, column, reason, severity="error"):
        self.append(CohortIssue(file, None if row is None else int(row), column, reason, severity))


def read_table(path: Path, sep: str = ",") -> pd.DataFrame:
    """Every cell as text ('' when empty), so that each cell can be checked and typed on purpose."""
    return pd.read_csv(path, sep=sep, dtype=str, keep_default_na=False, na_filter=False, encoding="utf-8")


def _is_number(s: str) -> bool:
    try:
        float(s)
    except ValueError:
        return False
    return True


def _dates(issues, file, df, column, required, kind=DATE):
    col = df[column]
    parsed = parse_dates(col, kind)  # the loader's parser: what is reported here is exactly what it nulls
    bad = (col != "") & parsed.isna()
    fmt = FORMATS[kind]
    for r in df.index[((col == "") & required).to_numpy()] + 1:
        issues.add(file, r, column, f"{column} is empty; give an ISO {kind}")
    for r, v in zip(df.index[bad.to_numpy()] + 1, col[bad], strict=True):
        issues.add(file, r, column, f"{column} {v!r} is not an ISO {kind} ({fmt})")


def _path(issues, root: Path, file, r, column, v, required=True):
    if v == "":
        if required:
            issues.add(file, r, column, f"{column} is empty; give a path relative to the cohort folder")
        return
    p = PurePosixPath(v.replace("\\", "/"))
    if p.is_absolute() or re.match(r"^[A-Za-z]:", v):
        issues.add(file, r, column, f"{column} {v!r} is an absolute path; give it relative to the cohort folder")
    elif ".." in p.parts:
        issues.add(file, r, column, f"{column} {v!r} escapes the cohort folder ('..'); keep files inside it")
    else:
        full = root / p
        if not full.resolve().is_relative_to(root.resolve()):
            issues.add(file, r, column, f"{column} {v!r} leads outside the cohort folder (symlink); keep it inside")
        elif not full.exists():
            issues.add(file, r, column, f"{column} {v!r} does not exist")


def mask_issue(patient_id: str, masks) -> str | None:
    """The one mask rule, applied by ``dltr validate`` and by ``dltr ingest``: a patient needs a tumour
    mask on at least one of its manifest rows (a row without one uses the patient's mask). The reason
    when ``masks`` (the patient's mask cells) hold none, else None."""
    if any(m is not None and str(m).strip() != "" for m in masks):
        return None
    return (f"patient {patient_id!r} has no mask on any manifest row; give a tumour mask (the same file may "
            "be repeated on each row)")


def _ids(issues, file, df):
    for r, v in zip(df.index + 1, df["patient_id"], strict=True):
        if not PATIENT_ID.match(v):
            issues.add(file, r, "patient_id", f"patient_id {v!r} must match ^[A-Za-z0-9._-]{{1,64}}$")


def _injection(issues, file, df):
    for c in df.columns:
        if c in _STRUCTURED:
            continue
        for r, v in zip(df.index + 1, df[c], strict=True):
            if v[:1] in _INJECTION and not _is_number(v):
                issues.add(file, r, c, f"cell {v[:20]!r} starts with {v[:1]!r} (spreadsheet formula injection)",
                           "warning")


def _check_manifest(issues, root, df, phases, clinical_ids):
    f = "manifest.csv"
    _ids(issues, f, df)
    for r, ph in zip(df.index + 1, df["phase"], strict=True):
        if ph == "":
            issues.add(f, r, "phase", "phase is empty")
    dup = df.duplicated(["patient_id", "phase"], keep="first")
    for r, (pid, ph) in zip(df.index[dup] + 1, df.loc[dup, ["patient_id", "phase"]].itertuples(index=False),
                            strict=True):
        issues.add(f, r, "phase", f"duplicate row for patient {pid!r} phase {ph!r}")
    for r, row in zip(df.index + 1, df.itertuples(index=False), strict=True):
        _path(issues, root, f, r, "image", row.image)
        if "mask" in df.columns:
            _path(issues, root, f, r, "mask", row.mask, required=False)
    if "study_date" in df.columns:
        _dates(issues, f, df, "study_date", required=False)
    for ph in sorted(set(df["phase"]) - set(phases) - {""}):
        issues.add(f, None, "phase", f"phase {ph!r} is not in cohort.toml phases {list(phases)}", "warning")
    for pid, g in df.groupby("patient_id", sort=True):
        reason = mask_issue(pid, g["mask"] if "mask" in g.columns else [])
        if reason:
            issues.add(f, int(g.index[0]) + 1, "mask", reason)
        for ph in phases:
            if ph not in set(g["phase"]):
                issues.add(f, int(g.index[0]) + 1, "phase", f"patient {pid!r} has no {ph!r} image "
                           f"(every patient needs every phase of {list(phases)})")
    if clinical_ids is not None:
        for r, pid in zip(df.index + 1, df["patient_id"], strict=True):
            if pid not in clinical_ids:
                issues.add(f, r, "patient_id", f"patient {pid!r} is not in clinical.csv")


def _check_clinical(issues, df):
    f = "clinical.csv"
    _ids(issues, f, df)
    for r, pid in zip(df.index[df.duplicated("patient_id")] + 1, df.loc[df.duplicated("patient_id"), "patient_id"],
                      strict=True):
        issues.add(f, r, "patient_id", f"duplicate patient {pid!r} (one row per patient)")
    for r, v in zip(df.index + 1, df["center"], strict=True):
        if v == "":
            issues.add(f, r, "center", "center is empty")
    _dates(issues, f, df, "tace_date", required=True)
    rules = {"response": (RESPONSES, "CR/PR/SD/PD"), "pfs_event": (("0", "1"), "0 or 1"),
             "split": (SPLITS, "train/internal/external")}
    for col, (allowed, text) in rules.items():
        if col in df.columns:
            for r, v in zip(df.index + 1, df[col], strict=True):
                if v != "" and v not in allowed:
                    issues.add(f, r, col, f"{col} {v!r} is not one of {text}")
    if "pfs_days" in df.columns:
        for r, v in zip(df.index + 1, df["pfs_days"], strict=True):
            if v != "" and (not _is_number(v) or float(v) < 0):
                issues.add(f, r, "pfs_days", f"pfs_days {v!r} is not a number >= 0")
    if ("pfs_days" in df.columns) != ("pfs_event" in df.columns):
        issues.add(f, None, "pfs_event", "pfs_days and pfs_event come together; give both or neither")
    _injection(issues, f, df)


def _check_labs(issues, df, clinical_ids):
    f = "labs.csv"
    for r, row in zip(df.index + 1, df.itertuples(index=False), strict=True):
        if clinical_ids is not None and row.patient_id not in clinical_ids:
            issues.add(f, r, "patient_id", f"patient {row.patient_id!r} is not in clinical.csv")
        if row.name == "":
            issues.add(f, r, "name", "name is empty")
        if not _is_number(row.value):
            issues.add(f, r, "value", f"value {row.value!r} is not a number")
    _dates(issues, f, df, "measured_at", required=True, kind=DATE_TIME)
    if "recorded_at" in df.columns:
        _dates(issues, f, df, "recorded_at", required=False, kind=DATE_TIME)
        m, rec = parse_dates(df["measured_at"], DATE_TIME), parse_dates(df["recorded_at"], DATE_TIME)
        for r in df.index[(rec < m).to_numpy()] + 1:
            issues.add(f, r, "recorded_at", "recorded_at is before measured_at", "warning")
    _injection(issues, f, df)


def _check_expression(issues, df, clinical_ids):
    f = "expression.tsv"
    for r in df.index[df.duplicated("gene")] + 1:
        issues.add(f, r, "gene", f"duplicate gene {df.at[r - 1, 'gene']!r}", "warning")
    for c in df.columns[1:]:
        if clinical_ids is not None and c not in clinical_ids:
            issues.add(f, None, c, f"column {c!r} is not a patient of clinical.csv")
        bad = ~df[c].map(_is_number)
        for r in df.index[bad.to_numpy()][:5] + 1:
            issues.add(f, r, c, f"value {df.at[r - 1, c]!r} is not a number")


def _read(issues, root, name, required) -> pd.DataFrame | None:
    path = root / name
    if not path.exists():
        if required:
            issues.add(name, None, None, f"{name} is missing (required by the cohort contract)")
        return None
    try:
        df = read_table(path, sep="\t" if name.endswith(".tsv") else ",")
    except (pd.errors.ParserError, UnicodeDecodeError, pd.errors.EmptyDataError) as e:
        issues.add(name, None, None, f"cannot parse {name}: {str(e).splitlines()[0]}")
        return None
    missing = [c for c in REQUIRED[name] if c not in df.columns]
    if name == "expression.tsv" and len(df.columns) and df.columns[0] != "gene":
        missing = ["gene"]
    for c in missing:
        issues.add(name, None, c, f"required column {c!r} is missing")
    return None if missing else df


def _check_predictors(issues, config: CohortConfig, cli, labs) -> None:
    """Each declared predictor names a clinical.csv column or a labs.csv measurement (a warning otherwise:
    the models go on without it); a cohort without ``predictors`` gets a note that no clinical value is used."""
    if cli is None:
        return
    if not config.predictors:
        issues.add("cohort.toml", None, "predictors", "no predictors declared: the clinical and fusion models "
                   "use no clinical value; list the pre-treatment columns in cohort.toml predictors", "warning")
        return
    known = set(cli.columns) | (set(labs["name"]) if labs is not None and "name" in labs.columns else set())
    for name in config.predictors:
        if name not in known:
            issues.add("cohort.toml", None, "predictors", f"predictor {name!r} is neither a clinical.csv column "
                       "nor a labs.csv name; fix the spelling or remove it", "warning")


def validate(root: Path) -> tuple[ValidationReport, dict, CohortConfig]:
    """Run every check; also return the raw text tables and the config for the loader."""
    issues = _Issues()
    config = CohortConfig()
    if (root / "cohort.toml").exists():
        try:
            config = CohortConfig.read(root / "cohort.toml")
        except (ValueError, TypeError) as e:
            issues.add("cohort.toml", None, None, f"cannot read cohort.toml: {e}")
    tables = {n: _read(issues, root, n, n in ("manifest.csv", "clinical.csv")) for n in REQUIRED}
    man, cli = tables["manifest.csv"], tables["clinical.csv"]
    if man is not None and not config.phases:
        config = CohortConfig.from_dict({**config.to_dict(), "phases": list(dict.fromkeys(man["phase"]))})
    ids = set(cli["patient_id"]) if cli is not None else None
    if cli is not None:
        _check_clinical(issues, cli)
    if man is not None:
        _check_manifest(issues, root, man, config.phases, ids)
    if tables["labs.csv"] is not None:
        _check_labs(issues, tables["labs.csv"], ids)
    if tables["expression.tsv"] is not None:
        _check_expression(issues, tables["expression.tsv"], ids)
    _check_predictors(issues, config, cli, tables["labs.csv"])
    counts = {"patients": 0 if cli is None else int(cli["patient_id"].nunique()),
              "manifest_rows": 0 if man is None else len(man), "phases": list(config.phases),
              "centers": [] if cli is None else sorted(set(cli["center"]) - {""})}
    return ValidationReport(root, tuple(issues), counts), tables, config


def validate_cohort(path: str | Path) -> ValidationReport:
    """Check a cohort folder against the contract; raises ``CohortError`` only when it is not a folder."""
    root = Path(path)
    if not root.is_dir():
        raise CohortError(f"{root}: cohort folder does not exist or is not a folder; give the folder holding "
                          "manifest.csv and clinical.csv")
    return validate(root)[0]
