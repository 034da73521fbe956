"""A small trained store for the scoring tests (``build_demo``; the session fixture ``scoring_demo`` in
conftest.py builds it once), plus one-patient cohort folders cut from it."""

from __future__ import annotations

import csv
import shutil
import warnings
from pathlib import Path
from typing import NamedTuple


class ScoringDemo(NamedTuple):
    out: Path
    store: Path
    cohort: Path


def build_demo(root: Path) -> ScoringDemo:
    from benchmarks.suites.serve import demo_config
    from dltr.core.exceptions import DltrWarning
    from dltr.demo import run_demo

    out = root / "demo"
    # The serve benchmark's demo (one encoder candidate, no radiomics: near 2 minutes on 2 shared cores), so that
    # the quick serve bench reuses it; the radiomics heads are tests/test_demo.py's. Statistical caveats of the
    # tiny cohort (a survival group with no patient) are not what these tests are about.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DltrWarning)
        run_demo(out, demo_config(0), log=lambda _m: None)
    return ScoringDemo(out, out / "store", out / "synthetic" / "cohort")


def read_rows(path: Path) -> tuple[list[str], list[dict[str, str]]]:
    with path.open(newline="") as f:
        r = csv.DictReader(f)
        return list(r.fieldnames or []), list(r)


def one_patient_cohort(cohort: Path, patient_id: str, dst: Path, **clinical_overrides: str) -> Path:
    """Copy one patient's manifest rows, files, clinical row and lab rows into a cohort folder."""
    dst.mkdir(parents=True)
    for name in ("manifest.csv", "clinical.csv", "labs.csv"):
        header, rows = read_rows(cohort / name)
        rows = [r for r in rows if r["patient_id"] == patient_id]
        if name == "clinical.csv":
            rows = [r | clinical_overrides for r in rows]
        with (dst / name).open("w", newline="") as f:
            w = csv.DictWriter(f, header)
            w.writeheader()
            w.writerows(rows)
        if name == "manifest.csv":
            for r in rows:
                for rel in {r["image"], r["mask"]}:
                    s, d = cohort / rel, dst / rel
                    d.parent.mkdir(parents=True, exist_ok=True)
                    if s.is_dir():
                        shutil.copytree(s, d, dirs_exist_ok=True)
                    else:
                        shutil.copyfile(s, d)
    shutil.copyfile(cohort / "cohort.toml", dst / "cohort.toml")
    return dst


def patients_of(cohort: Path, split: str) -> list[str]:
    return [r["patient_id"] for r in read_rows(cohort / "clinical.csv")[1] if r["split"] == split]
