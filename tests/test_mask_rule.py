"""One mask rule for `dltr validate` and `dltr ingest` (issue 17, item 7): a patient needs a tumour mask
on at least one manifest row. A patient without one is an error row in both, with the same reason,
and the other patients go on."""

from __future__ import annotations

import shutil

import pandas as pd

from dltr.cohort import validate_cohort
from dltr.synth import SynthConfig, synthesize
from pipeline.ingest import IngestConfig, ingest_cohort


def test_validate_and_ingest_refuse_a_patient_without_mask_alike(tmp_path):
    res = synthesize(tmp_path / "synth", SynthConfig.profile("tiny", seed=3, patients=2))
    cohort = tmp_path / "cohort"
    shutil.copytree(res.cohort, cohort)
    man = pd.read_csv(cohort / "manifest.csv", dtype=str, keep_default_na=False)
    victim = man["patient_id"].iloc[0]
    rows = man.index[man["patient_id"] == victim]
    man.loc[rows, "mask"] = ""
    man.to_csv(cohort / "manifest.csv", index=False)
    rep = validate_cohort(cohort)
    hits = [i for i in rep.errors if i.column == "mask" and "has no mask on any manifest row" in i.reason]
    assert [(i.file, i.row) for i in hits] == [("manifest.csv", int(rows[0]) + 1)], [str(i) for i in rep.issues]
    run = ingest_cohort(cohort, tmp_path / "store", IngestConfig(workers=1, processes=False))
    errs = [e for e in run.errors if e["patient_id"] == victim]
    assert [e["reason"] for e in errs] == [hits[0].reason] and errs[0]["row"] == hits[0].row
    assert run.summary["failed"] == 1 and run.summary["ok"] == man["patient_id"].nunique() - 1
    # a patient whose mask is on one row only is sound for both (the other rows use it)
    man = pd.read_csv(res.cohort / "manifest.csv", dtype=str, keep_default_na=False)
    other = man["patient_id"].iloc[-1]
    keep = man.index[man["patient_id"] == other]
    man.loc[keep[1:], "mask"] = ""
    man.to_csv(cohort / "manifest.csv", index=False)
    assert not [i for i in validate_cohort(cohort).errors if i.column == "mask"]
