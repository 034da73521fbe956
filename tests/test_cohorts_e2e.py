"""A real cohort's path through the whole pipeline (issue 17), on one keyed tiny demo run:
one pseudonym in every table and file of the store, and no raw patient identifier anywhere in it."""

from __future__ import annotations

import pandas as pd
import pytest

from dltr.core.exceptions import StoreError
from dltr.core.hashing import pseudonym
from dltr.demo import DemoConfig, run_demo
from features import FeatureStore

pytestmark = [pytest.mark.slow, pytest.mark.filterwarnings("ignore::dltr.core.exceptions.ApproximationWarning")]

KEY = "issue-17-secret"


@pytest.fixture(scope="module")
def keyed_demo(tmp_path_factory):
    out = tmp_path_factory.mktemp("keyed") / "out"
    logs: list[str] = []
    res = run_demo(out, DemoConfig.for_profile("tiny", seed=0, pseudonym_key=KEY), log=logs.append)
    raw = pd.read_csv(out / "synthetic" / "cohort" / "clinical.csv", dtype=str)["patient_id"].tolist()
    return res, logs, raw


def test_keyed_demo_leaves_no_raw_identifier_in_any_store_file(keyed_demo):
    res, _, raw = keyed_demo
    store = res.out / "store"
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


def test_add_cohort_without_the_ingest_key_is_refused(keyed_demo):
    res, _, _ = keyed_demo
    store = res.out / "store"
    before = (store / "tables" / "clinical.parquet").read_bytes()
    with pytest.raises(StoreError, match="matches the .* ingested patients; give --pseudonym-key-env"):
        FeatureStore(store).add_cohort(res.out / "synthetic" / "cohort")
    assert (store / "tables" / "clinical.parquet").read_bytes() == before


def test_cli_add_cohort_applies_the_ingest_pseudonym(keyed_demo, monkeypatch, capsys):
    from dltr.cli import main

    res, _, raw = keyed_demo
    store = res.out / "store"
    args = ["store", "add-cohort", str(res.out / "synthetic" / "cohort"), "--store", str(store),
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
