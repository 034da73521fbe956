"""A real cohort's path through the whole pipeline (issue 17), on one keyed tiny demo run:
one pseudonym in every table and file of the store, and no raw patient identifier anywhere in it."""

from __future__ import annotations

import pytest
from kit.demo import CANDIDATES, KEY

from dltr.core.exceptions import StoreError
from dltr.core.hashing import pseudonym
from dltr.demo import DemoConfig
from features import FeatureStore

pytestmark = [pytest.mark.slow, pytest.mark.filterwarnings("ignore::dltr.core.exceptions.ApproximationWarning")]


def test_demo_reports_progress_of_ingest_training_and_extraction(tiny_demo):
    raw = tiny_demo.raw_ids
    last = {}
    for stage, done, total in tiny_demo.progress:
        assert done >= last.get(stage, (0,))[0]                  # monotone
        last[stage] = (done, total)
    assert last["ingest"] == (len(raw), len(raw))
    assert last["train encoder"][0] == last["train encoder"][1] == len(CANDIDATES) * tiny_demo.config.folds + 1
    n_feat = FeatureStore(tiny_demo.store).read("dltr", columns=["patient_id"]).num_rows
    assert last["extract"] == (n_feat, n_feat)
    assert (tiny_demo.store / "logs" / "ray.log").is_file()    # Ray's own output went to the store's log


def test_no_stage_opens_the_truth_folder_only_the_report(tiny_demo):
    """Item 4 of issue 17: the genes stage reads the cohort's gene_sets.gmt; of the whole demo only the report
    (the oracle beside the results) opens files under truth/. (Opens inside C++ readers, e.g. Arrow's, are
    not audited; every stage that could read truth/ reads CSV/JSON/GMT through Python.)"""
    res, opens = tiny_demo.result, tiny_demo.truth_opens
    assert opens, "the audit hook saw no open under truth/ (the report reads centers.json): the watch is broken"
    assert all("/dltr/report/" in opener for _, opener in opens), opens
    stages = __import__("json").loads((res.out / "stages.json").read_text())
    assert stages["radiogenomics"]["outputs"]["gene_sets"] == str(tiny_demo.cohort / "gene_sets.gmt")


def test_keyed_demo_leaves_no_raw_identifier_in_any_store_file(tiny_demo):
    raw, store = tiny_demo.raw_ids, tiny_demo.store
    files = [p for p in store.rglob("*") if p.is_file()]
    assert len(files) > 50
    needles = [r.encode() for r in raw]
    leaks = {str(p.relative_to(store)): [n.decode() for n in needles if n in p.read_bytes()] for p in files}
    assert not {k: v for k, v in leaks.items() if v}
    # ... and the same pseudonym joins every stage: volumes, clinical table, features, scores
    keyed = {pseudonym(r, KEY) for r in raw}
    fs = FeatureStore(store)
    volumes = {p.name for p in (store / "volumes.zarr").iterdir() if p.is_dir()}
    assert volumes and volumes <= keyed
    assert set(fs.table("clinical").column("patient_id").to_pylist()) == keyed
    assert set(fs.table("labs").column("patient_id").to_pylist()) <= keyed
    assert set(fs.table("expression").column("patient_id").to_pylist()) <= keyed
    feats = set(fs.read("dltr", columns=["patient_id"]).column("patient_id").to_pylist())
    assert feats == volumes
    scored = set(fs.table("scores").column("patient_id").to_pylist())
    assert scored == feats and len(fs.sql("SELECT * FROM scores WHERE label IS NOT NULL")) > 0


def test_add_cohort_without_the_ingest_key_is_refused(tiny_demo, tmp_path):
    store = tiny_demo.store_copy(tmp_path)
    before = (store / "tables" / "clinical.parquet").read_bytes()
    with pytest.raises(StoreError, match="matches the .* ingested patients; give --pseudonym-key-env"):
        FeatureStore(store).add_cohort(tiny_demo.cohort)
    assert (store / "tables" / "clinical.parquet").read_bytes() == before


def test_cli_add_cohort_applies_the_ingest_pseudonym(tiny_demo, tmp_path, monkeypatch, capsys):
    from dltr.cli import main

    raw, store = tiny_demo.raw_ids, tiny_demo.store_copy(tmp_path)
    args = ["store", "add-cohort", str(tiny_demo.cohort), "--store", str(store),
            "--pseudonym-key-env", "DLTR_TEST_KEY"]
    before = FeatureStore(store).table("clinical")
    monkeypatch.setenv("DLTR_TEST_KEY", KEY)
    assert main(args) == 0
    after = FeatureStore(store).table("clinical")
    assert after.equals(before)
    assert sorted(after.column("patient_id").to_pylist()) == sorted(pseudonym(p, KEY) for p in raw)
    monkeypatch.delenv("DLTR_TEST_KEY")
    capsys.readouterr()
    assert main(args) == 2
    assert "DLTR_TEST_KEY: the variable is unset or empty" in capsys.readouterr().err


def _cli(*args: str) -> tuple[int, str, str]:
    """``dltr ARGS`` in a child process (as a user runs it); (exit code, stdout, stderr)."""
    import os
    import subprocess
    import sys

    env = {**os.environ, "DLTR_TEST_KEY": KEY}
    p = subprocess.run([sys.executable, "-m", "dltr", *args], capture_output=True, text=True, env=env, timeout=900)
    return p.returncode, p.stdout, p.stderr


def test_readme_quick_start_trains_the_demos_encoder(tiny_demo, tmp_path):
    """`dltr store add-cohort` + `dltr train-encoder` with the demo profile's epochs and folds, on the volumes
    the demo ingested, write the demo's model card and weights byte for byte (phases from cohort.toml)."""
    import json
    import shutil

    store = tmp_path / "st"
    shutil.copytree(tiny_demo.store / "volumes.zarr", store / "volumes.zarr")
    shutil.copytree(tiny_demo.store / "ingest", store / "ingest")
    cohort = str(tiny_demo.cohort)
    assert _cli("store", "add-cohort", cohort, "--store", str(store), "--pseudonym-key-env", "DLTR_TEST_KEY")[0] == 0
    tiny = DemoConfig.for_profile("tiny")
    code, out, err = _cli("train-encoder", "--store", str(store), "--epochs", str(tiny.epochs),
                          "--folds", str(tiny.folds), "--candidates", ",".join(CANDIDATES))
    assert code == 0, err
    demo_cards = list((tiny_demo.store / "encoders").glob("*/model_card.json"))
    cli_cards = list((store / "encoders").glob("*/model_card.json"))
    assert len(demo_cards) == len(cli_cards) == 1
    a, b = json.loads(demo_cards[0].read_text()), json.loads(cli_cards[0].read_text())
    assert a["card_hash"] == b["card_hash"], {k: (a[k], b.get(k)) for k in a if a[k] != b.get(k)}
    assert (demo_cards[0].parent / "model.safetensors").read_bytes() == \
        (cli_cards[0].parent / "model.safetensors").read_bytes()


def test_train_heads_takes_cohort_toml_predictors_and_heads_are_chosen_by_version(tiny_demo, tmp_path):
    import json
    import tomllib

    from models.heads import HeadRegistry

    store = tiny_demo.store_copy(tmp_path)
    declared = tomllib.loads((tiny_demo.cohort / "cohort.toml").read_text())["predictors"]
    reg = HeadRegistry(store)
    v_demo, v_dltr = reg.latest("dltr_mlp"), reg.latest("dltr")
    args = ("train-heads", "--store", str(store), "--clinical", "age,afp", "--labs", "albumin", "--seed", "1",
            "--heads", "clinical,dltr_mlp", "--clinical-bootstrap", "10")
    # a declared resolution finer than the tiny cohort's voxels (up to 7.6 x 7.6 x 12 mm) is kept as declared, so
    # the coarser patients are refused by name with the fix, and nothing is published
    code, out, err = _cli(*args, "--native-spacing", "4.5,4.5,7")
    assert code != 0 and "coarser than the native descriptors' resolution 4.5 x 4.5 x 7 mm" in err, err
    assert "--native-spacing" in err and reg.latest("dltr_mlp") == v_demo
    code, out, err = _cli(*args)      # none declared: the default floor, raised to the coarsest stored voxel
    assert code == 0, err
    assert reg.meta("dltr_mlp")["lineage"]["native_spacing_mm"][2] == pytest.approx(12.0, abs=1e-3)
    assert reg.meta("clinical")["hyperparameters"]["n_bootstrap"] == 10   # recorded with the head
    assert "nan" not in out.lower() and "CV AUC" in out       # the clinical head has no CV AUC: none printed
    assert "clinical   " in out and "CV AUC" not in next(ln for ln in out.splitlines() if ln.startswith("clinical"))
    lin = reg.meta("dltr_mlp")["lineage"]
    assert lin["clinical_candidates"] == ["age", "afp", "lab_albumin"] and lin["labs"] == ["albumin"]
    v_new = reg.latest("dltr_mlp")
    assert v_new != v_demo
    # the heads not named keep their version and their rows of the scores table
    assert reg.latest("dltr") == v_dltr and "dltr " not in out
    kept = FeatureStore(store).sql("SELECT DISTINCT head_version FROM scores WHERE head = 'dltr'").column(0)
    assert kept.to_pylist() == [v_dltr]
    # the demo trained with cohort.toml's predictors (every pre-treatment column and lab)
    demo_lin = reg.meta("dltr_mlp", v_demo)["lineage"]
    assert set(demo_lin["labs"]) | {c for c in demo_lin["clinical_candidates"] if not c.startswith("lab_")} \
        == set(declared)
    # one head alone: no DeLong pair, and the store's SQL catalog stays sound
    code, out, err = _cli("evaluate", "--store", str(store), "--head", "clinical")
    assert code == 0, err
    assert FeatureStore(store).sql("SELECT count(*) AS n FROM eval_delong").column("n")[0].as_py() == 0
    # an earlier version is evaluated, stratified and reported by NAME@VERSION
    code, out, err = _cli("evaluate", "--store", str(store), "--head", f"dltr_mlp@{v_demo}", "--head", "clinical")
    assert code == 0, err
    fs = FeatureStore(store)
    got = fs.sql("SELECT DISTINCT head, head_version FROM eval_metrics ORDER BY head").to_pylist()
    assert got == [{"head": "clinical", "head_version": reg.latest("clinical")},
                   {"head": "dltr_mlp", "head_version": v_demo}]
    code, out, err = _cli("survival", "--store", str(store), "--head", f"dltr_mlp@{v_new}", "--json")
    assert code == 0, err
    assert json.loads(out)["head_version"] == v_new
    assert set(fs.sql("SELECT DISTINCT head_version FROM scores WHERE head = 'dltr_mlp'").column(0).to_pylist()) \
        == {v_new}
    code, out, err = _cli("report", "--store", str(store), "--out", str(tmp_path / "r2"), "--head", f"dltr_mlp@{v_new}")
    assert code == 2 and f"holds dltr_mlp@{v_demo}" in err
    assert _cli("report", "--store", str(store), "--out", str(tmp_path / "r2"), "--head", f"dltr_mlp@{v_demo}")[0] == 0
