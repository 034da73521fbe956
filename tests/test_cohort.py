"""The cohort contract: validation finds each kind of bad input at the right file, row and column."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pandas as pd
import pytest

from dltr.cohort import CohortConfig, derive_split, load_cohort, validate_cohort
from dltr.core.exceptions import CohortError


def _copy(tiny_cohort, tmp_path):
    dst = tmp_path / "cohort"
    shutil.copytree(tiny_cohort.cohort, dst, copy_function=os.link)
    return dst


def _edit(path, fn, sep=","):
    df = pd.read_csv(path, sep=sep, dtype=str, keep_default_na=False)
    df = fn(df)
    path.unlink()  # hard link: never write through to the session's cohort
    df.to_csv(path, sep=sep, index=False)


def _set(row, col, value):
    def fn(df):
        df.loc[row - 1, col] = value(df) if callable(value) else value
        return df
    return fn


def _drop_portal_of_second_patient(df):
    pid = df.patient_id.unique()[1]
    return df[~((df.patient_id == pid) & (df.phase == "portal"))].reset_index(drop=True)


def _run(*args):
    return subprocess.run([sys.executable, "-m", "dltr", *args], capture_output=True, text=True, timeout=120)


def test_generated_cohort_passes_api_and_cli(tiny_cohort):
    rep = validate_cohort(tiny_cohort.cohort)
    assert rep.ok and rep.issues == () and rep.summary["patients"] == 50
    out = _run("validate", str(tiny_cohort.cohort), "--json")
    assert out.returncode == 0, out.stdout + out.stderr
    doc = json.loads(out.stdout)
    assert doc["summary"]["ok"] is True and doc["issues"] == [] and doc["summary"]["manifest_rows"] == 200


CASES = [
    ("missing column", "clinical.csv", lambda df: df.drop(columns=["tace_date"]),
     ("clinical.csv", None, "tace_date", "required column 'tace_date' is missing")),
    ("bad date", "clinical.csv", _set(3, "tace_date", "2021-13-02"),
     ("clinical.csv", 3, "tace_date", "'2021-13-02' is not an ISO date")),
    ("duplicate patient", "clinical.csv", _set(5, "patient_id", lambda df: df.patient_id[3]),
     ("clinical.csv", 5, "patient_id", "duplicate patient")),
    ("missing image", "manifest.csv", _set(2, "image", "images/A/none.nii.gz"),
     ("manifest.csv", 2, "image", "'images/A/none.nii.gz' does not exist")),
    ("missing phase", "manifest.csv", _drop_portal_of_second_patient,
     ("manifest.csv", 5, "phase", "has no 'portal' image")),
    ("bad response", "clinical.csv", _set(2, "response", "NE"),
     ("clinical.csv", 2, "response", "'NE' is not one of CR/PR/SD/PD")),
    ("dotdot path", "manifest.csv", _set(1, "image", "../../etc/passwd"),
     ("manifest.csv", 1, "image", "escapes the cohort folder")),
    ("absolute path", "manifest.csv", _set(4, "mask", "/etc/passwd"),
     ("manifest.csv", 4, "mask", "absolute path")),
    ("bad patient id", "clinical.csv", _set(6, "patient_id", "a/b"),
     ("clinical.csv", 6, "patient_id", "must match")),
    ("bad event", "clinical.csv", _set(7, "pfs_event", "2"), ("clinical.csv", 7, "pfs_event", "not one of 0 or 1")),
    ("negative pfs", "clinical.csv", _set(8, "pfs_days", "-3"), ("clinical.csv", 8, "pfs_days", ">= 0")),
    ("bad split", "clinical.csv", _set(9, "split", "test"), ("clinical.csv", 9, "split", "not one of")),
    ("unknown lab patient", "labs.csv", _set(10, "patient_id", "NOBODY"),
     ("labs.csv", 10, "patient_id", "'NOBODY' is not in clinical.csv")),
    ("bad lab time", "labs.csv", _set(11, "measured_at", "yesterday"),
     ("labs.csv", 11, "measured_at", "not an ISO date-time")),
    ("manifest patient unknown", "manifest.csv", _set(3, "patient_id", "GHOST"),
     ("manifest.csv", 3, "patient_id", "'GHOST' is not in clinical.csv")),
    ("duplicate image row", "manifest.csv", _set(2, "phase", "t2"),
     ("manifest.csv", 2, "phase", "duplicate row for patient")),
]


@pytest.mark.parametrize("name, file, edit, expected", CASES, ids=[c[0] for c in CASES])
def test_validate_finds_each_bad_input(tiny_cohort, tmp_path, name, file, edit, expected):
    root = _copy(tiny_cohort, tmp_path)
    _edit(root / file, edit)
    rep = validate_cohort(root)
    assert not rep.ok
    f, row, col, reason = expected
    hits = [i for i in rep.errors if (i.file, i.row, i.column) == (f, row, col) and reason in i.reason]
    assert hits, f"{name}: expected {expected}, got {[str(i) for i in rep.issues]}"


def test_symlink_out_of_cohort_is_an_escape(tiny_cohort, tmp_path):
    root = _copy(tiny_cohort, tmp_path)
    outside = tmp_path / "outside.nii.gz"
    outside.write_bytes(b"x")
    (root / "images" / "link.nii.gz").symlink_to(outside)
    _edit(root / "manifest.csv", _set(6, "image", "images/link.nii.gz"))
    rep = validate_cohort(root)
    assert [(i.row, i.column) for i in rep.errors] == [(6, "image")] and "outside" in rep.errors[0].reason


def test_cli_reports_rows_and_exits_2(tiny_cohort, tmp_path):
    root = _copy(tiny_cohort, tmp_path)
    _edit(root / "clinical.csv", _set(3, "tace_date", "03/02/2021"))
    _edit(root / "clinical.csv", _set(4, "etiology", "=HYPERLINK(\"x\")"))
    out = _run("validate", str(root), "--json")
    assert out.returncode == 2
    doc = json.loads(out.stdout)
    assert doc["summary"]["errors"] == 1 and doc["summary"]["warnings"] == 1
    err = next(i for i in doc["issues"] if i["severity"] == "error")
    assert (err["file"], err["row"], err["column"]) == ("clinical.csv", 3, "tace_date")
    warn = next(i for i in doc["issues"] if i["severity"] == "warning")
    assert (warn["row"], warn["column"]) == (4, "etiology") and "injection" in warn["reason"]
    text = _run("validate", str(root))
    assert text.returncode == 2 and "clinical.csv" in text.stdout and "FAILED: 1 errors" in text.stdout


def test_expression_unknown_column_is_reported(tiny_cohort, tmp_path):
    root = _copy(tiny_cohort, tmp_path)
    _edit(root / "expression.tsv", lambda df: df.rename(columns={df.columns[2]: "STRANGER"}), sep="\t")
    rep = validate_cohort(root)
    assert [(i.file, i.column) for i in rep.errors] == [("expression.tsv", "STRANGER")]


def test_load_types_label_split_and_recorded_at(tiny_cohort):
    c = load_cohort(tiny_cohort.cohort)
    raw = pd.read_csv(tiny_cohort.cohort / "clinical.csv")
    assert c.config.phases == ("t2", "arterial", "portal", "delayed") and c.config.expression_scale == "log2tpm1"
    assert str(c.clinical.label.dtype) == "Int8"
    expect = raw.response.map(lambda r: 1 if r in ("CR", "PR") else 0).tolist()
    assert c.clinical.label.tolist() == expect
    assert c.clinical.split.tolist() == raw.split.tolist()
    assert pd.api.types.is_datetime64_any_dtype(c.clinical.tace_date)
    assert c.clinical.tace_date.dt.strftime("%Y-%m-%d").tolist() == raw.tace_date.tolist()
    labs_raw = pd.read_csv(tiny_cohort.cohort / "labs.csv")
    empty = labs_raw.recorded_at.isna().to_numpy()
    assert empty.any() and (c.labs.recorded_at[empty] == c.labs.measured_at[empty]).all()
    assert c.expression.shape == (500, 15) and c.expression.index.name == "gene"


def test_split_is_derived_when_absent(tiny_cohort, tmp_path):
    root = _copy(tiny_cohort, tmp_path)
    _edit(root / "clinical.csv", lambda df: df.drop(columns=["split"]).assign(response=""))
    c = load_cohort(root)
    assert c.clinical.label.isna().all()
    a = c.clinical[c.clinical.center == "A"]
    assert set(c.clinical.split[c.clinical.center != "A"]) == {"external"}
    assert set(a.split) == {"train", "internal"}
    # the same rule on a large synthetic center gives about 30 % internal, stable per patient
    big = pd.DataFrame({"patient_id": [f"P{i}" for i in range(4000)], "center": "X"})
    s = derive_split(big, CohortConfig(train_centers=("X",)))
    assert 0.27 < (s == "internal").mean() < 0.33
    assert (derive_split(big.iloc[::-1], CohortConfig(train_centers=("X",))).sort_index() == s).all()


def test_load_raises_when_unusable(tiny_cohort, tmp_path):
    root = _copy(tiny_cohort, tmp_path)
    (root / "clinical.csv").unlink()
    with pytest.raises(CohortError, match="clinical.csv is missing"):
        load_cohort(root)
    with pytest.raises(CohortError, match="does not exist"):
        validate_cohort(tmp_path / "nowhere")


def test_predictors_come_only_from_cohort_toml(tiny_cohort, tmp_path):
    """The generator declares the pre-treatment columns and lab names; outcomes are never predictors; a
    declared name the sheet lacks is a warning; an outcome or key declared as a predictor is refused."""
    cfg = CohortConfig.read(tiny_cohort.cohort / "cohort.toml")
    assert {"afp", "albi_score", "child_pugh", "portal_vein_invasion", "bilirubin"} <= set(cfg.predictors)
    assert not {"response", "pfs_days", "pfs_event", "split", "center"} & set(cfg.predictors)
    assert load_cohort(tiny_cohort.cohort).config.predictors == cfg.predictors
    c = tmp_path / "c"
    shutil.copytree(tiny_cohort.cohort, c)
    toml = (c / "cohort.toml").read_text()
    (c / "cohort.toml").write_text(toml.replace('predictors = ["age"', 'predictors = ["second_tace", "age"'))
    warn = [i for i in validate_cohort(c).warnings if i.column == "predictors"]
    assert len(warn) == 1 and "'second_tace'" in warn[0].reason
    (c / "cohort.toml").write_text(toml.replace('predictors = ["age"', 'predictors = ["pfs_days", "age"'))
    rep = validate_cohort(c)
    assert any("cohort.toml" == i.file and "pfs_days" in i.reason for i in rep.errors)
    (c / "cohort.toml").write_text("\n".join(ln for ln in toml.splitlines() if not ln.startswith("predictors")))
    assert CohortConfig.read(c / "cohort.toml").predictors == ()
    assert any(i.column == "predictors" and "no predictors" in i.reason for i in validate_cohort(c).warnings)
