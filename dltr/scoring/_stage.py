"""One patient into a temporary, de-identified store: cohort copy -> ingest -> training statistics.

The patient is copied into ``WORK/cohort`` under the neutral key ``SCORING_KEY`` (file names become
``<phase>.<ext>`` / ``mask.<ext>``; the manifest's patient_id never reaches the temporary store) and
ingested (serially, with the training ingest's output config) into ``WORK/store``, never into the
cohort's ``volumes.zarr``. ``WORK/store/ingest/intensity_stats.parquet`` is then the *training*
ingest's statistics, so the ROI is normalised with the training cohort's numbers for the patient's
center. Unseen center rule: the statistics of the training split's center(s) (pooled over them,
weighted by voxel count, when there are several) stand in for it, and the prediction says so.
"""

from __future__ import annotations

import csv
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from dltr.core.exceptions import CohortError
from dltr.core.layout import StoreLayout

__all__ = ["SCORING_KEY", "StagedPatient", "normalisation_table", "stage_cohort"]

SCORING_KEY = "scoring-patient"
_EXTS = (".nii.gz", ".nii", ".nrrd", ".nhdr", ".dcm")


@dataclass
class StagedPatient:
    """The de-identified one-patient cohort written under the work folder."""

    cohort: Path
    center: str
    patient_id: str | None  # the source's patient_id (kept in memory only, for the caller's record)


def _read_csv(path: Path) -> tuple[list[str], list[dict[str, str]]]:
    with path.open(newline="") as f:
        r = csv.DictReader(f)
        return list(r.fieldnames or []), list(r)


def _write_csv(path: Path, header: list[str], rows: list[dict[str, Any]]) -> None:
    with path.open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=header, extrasaction="ignore")
        w.writeheader()
        w.writerows(rows)


def _ext(rel: str) -> str:
    low = rel.lower()
    return next((e for e in _EXTS if low.endswith(e)), "")


def _copy(src_root: Path, rel: str, dst_root: Path, stem: str, done: dict[str, str]) -> str:
    if rel in done:
        return done[rel]
    src = (src_root / rel).resolve()
    if not src.is_relative_to(src_root.resolve()):
        raise CohortError(f"{src_root / 'manifest.csv'}: path {rel!r} leaves the cohort folder; give a path inside it")
    if not src.exists():
        raise CohortError(f"{src_root / 'manifest.csv'}: file {rel!r} not found; fix the manifest path")
    new = f"images/{stem}{_ext(rel)}" if src.is_file() else f"images/{stem}"
    (dst_root / "images").mkdir(parents=True, exist_ok=True)
    if src.is_dir():
        shutil.copytree(src, dst_root / new)
    else:
        shutil.copyfile(src, dst_root / new)
    done[rel] = new
    return new


def stage_cohort(src: str | Path, work: Path) -> StagedPatient:
    """Copy a one-patient cohort folder into ``work/cohort`` under ``SCORING_KEY``."""
    src = Path(src)
    for name in ("manifest.csv", "clinical.csv"):
        if not (src / name).is_file():
            raise CohortError(f"{src / name}: missing; PATIENT must be a one-patient cohort folder "
                              "(manifest.csv, clinical.csv, images)")
    mh, man = _read_csv(src / "manifest.csv")
    ch, clin = _read_csv(src / "clinical.csv")
    ids = sorted({r.get("patient_id", "") for r in man} | {r.get("patient_id", "") for r in clin})
    if len(ids) != 1 or not ids[0] or len(clin) != 1:
        raise CohortError(f"{src}: a scoring cohort holds exactly one patient (one clinical.csv row and its "
                          f"manifest rows); found {len(ids)} patient_id(s) and {len(clin)} clinical row(s)")
    dst = work / "cohort"
    dst.mkdir(parents=True)
    done: dict[str, str] = {}
    for r in man:
        r["image"] = _copy(src, r["image"], dst, r["phase"], done)
        if r.get("mask"):
            r["mask"] = _copy(src, r["mask"], dst, "mask", done)
        r["patient_id"] = SCORING_KEY
    _write_csv(dst / "manifest.csv", mh, man)
    clin[0]["patient_id"] = SCORING_KEY
    _write_csv(dst / "clinical.csv", ch, clin)
    if (src / "labs.csv").is_file():
        lh, labs = _read_csv(src / "labs.csv")
        labs = [r | {"patient_id": SCORING_KEY} for r in labs if r.get("patient_id") == ids[0]]
        _write_csv(dst / "labs.csv", lh, labs)
    if (src / "cohort.toml").is_file():
        shutil.copyfile(src / "cohort.toml", dst / "cohort.toml")
    return StagedPatient(dst, str(clin[0].get("center", "")), ids[0])


def _train_centers(store_root: Path) -> list[str]:
    t = pq.read_table(StoreLayout.of(store_root).table("clinical"), columns=["center", "split"]).to_pylist()
    return sorted({str(r["center"]) for r in t if r["split"] == "train"})


def _pooled(rows: list[dict[str, Any]]) -> tuple[float, float, int]:
    n = np.array([r["n"] for r in rows], np.float64)
    m = np.array([r["mean"] for r in rows], np.float64)
    s = np.array([r["std"] for r in rows], np.float64)
    mean = float((n * m).sum() / n.sum())
    var = float((n * (s**2 + (m - mean) ** 2)).sum() / n.sum())
    return mean, var**0.5, int(n.sum())


def normalisation_table(stats: pa.Table, store_root: Path, center: str) -> tuple[pa.Table, dict[str, Any]]:
    """(the statistics table for the temporary store, how the patient's center is normalised)."""
    rows = stats.to_pylist()
    if any(str(r["center"]) == center for r in rows):
        return stats, {"center": center, "statistics_of": center, "rule": "training statistics of the center"}
    train = _train_centers(store_root)
    if not train:
        raise CohortError(f"center {center!r} is not in the training statistics and the store has no train split")
    extra = []
    for (phase, region) in sorted({(r["phase"], r["region"]) for r in rows}):
        sel = [r for r in rows if r["phase"] == phase and r["region"] == region and str(r["center"]) in train]
        if not sel:
            continue
        mean, std, n = _pooled(sel)
        one = sel[0] if len(sel) == 1 else {}
        extra.append({**{k: one.get(k) for k in stats.column_names}, "phase": phase, "center": center,
                      "region": region, "n": n, "mean": mean, "std": std})
    table = pa.concat_tables([stats, pa.Table.from_pylist(extra, schema=stats.schema)])
    return table, {"center": center, "statistics_of": ",".join(train),
                   "rule": "unseen center: statistics of the training split's center(s), pooled"}
