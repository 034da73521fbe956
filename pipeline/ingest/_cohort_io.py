"""The cohort as ingest needs it: manifest rows grouped by patient, each patient's center, the phase
order. Reads through ``dltr.cohort.load_cohort`` (the cohort contract) when it is available."""

from __future__ import annotations

from pathlib import Path

from dltr.core.exceptions import CohortError
from dltr.core.hashing import pseudonym

from ._patient import Row

__all__ = ["cohort_rows", "pseudonym"]


def _text(v) -> str | None:
    if v is None:
        return None
    s = str(v).strip()
    return None if s == "" or s.lower() in ("nan", "nat", "none", "<na>") else s


def _date(v) -> str | None:
    s = _text(v)
    if s is None:
        return None
    return s[:10]


def cohort_rows(cohort_path: Path, loaded=None) -> tuple[dict[str, list[Row]], dict[str, str], list[str]]:
    """``(rows by patient, center by patient, phase order)``; rows keep the manifest's 1-based row number.
    ``loaded``: the cohort at ``cohort_path`` as ``dltr.cohort.load_cohort`` returned it (not read again)."""
    try:
        from dltr.cohort import load_cohort
    except ImportError:  # the cohort contract is not installed: read the two CSVs directly
        manifest, clinical, phases = _read_csv(cohort_path)
    else:
        c = loaded if loaded is not None else load_cohort(cohort_path)
        manifest, clinical = c.manifest, c.clinical
        phases = list(getattr(c.config, "phases", None) or [])
    if not phases:
        phases = list(dict.fromkeys(str(p) for p in manifest["phase"]))
    order = {p: i for i, p in enumerate(phases)}
    centers = {str(r.patient_id): str(r.center) for r in clinical.itertuples(index=False)}
    by_patient: dict[str, list[Row]] = {}
    for i, r in enumerate(manifest.to_dict("records")):
        pid = str(r["patient_id"])
        row = int(r.get("row", i + 1)) if _text(r.get("row")) else i + 1
        by_patient.setdefault(pid, []).append(Row(row, str(r["phase"]), str(r["image"]), _text(r.get("mask")),
                                                  _date(r.get("study_date"))))
    for pid in by_patient:
        by_patient[pid].sort(key=lambda x: (order.get(x.phase, len(order)), x.phase))
    return by_patient, centers, phases


def _read_csv(cohort_path: Path):
    import pandas as pd

    cohort_path = Path(cohort_path)
    for name in ("manifest.csv", "clinical.csv"):
        if not (cohort_path / name).is_file():
            raise CohortError(f"{cohort_path / name}: missing; a cohort needs manifest.csv and clinical.csv")
    manifest = pd.read_csv(cohort_path / "manifest.csv", dtype=str, keep_default_na=False)
    clinical = pd.read_csv(cohort_path / "clinical.csv", dtype=str, keep_default_na=False)
    phases: list[str] = []
    toml = cohort_path / "cohort.toml"
    if toml.is_file():
        import tomllib

        phases = list(tomllib.loads(toml.read_text()).get("phases", []))
    return manifest, clinical, phases
