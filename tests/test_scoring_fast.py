"""The scoring service's per-request parts that no longer touch a store: the in-memory frame
(``features.memory_frame``) equals the stored frame column by column, and one DALI pipeline
retargeted from store to store gives the tensors a fresh pipeline gives."""

from __future__ import annotations

import types

import numpy as np
import pytest
from kit.tables import LABS, clinical_tables
from test_store import feature_rows

from dltr.core.exceptions import StoreError
from features import FeatureStore, memory_frame


def _subset(cohort, pids):
    return types.SimpleNamespace(**{**vars(cohort), "clinical": cohort.clinical[cohort.clinical.patient_id.isin(pids)],
                                    "labs": cohort.labs[cohort.labs.patient_id.isin(pids)]})


@pytest.mark.parametrize("clinical, labs, max_age, label", [
    ([], [], None, "response"),
    (["age", "sex"], list(LABS), None, "response"),
    (["age"], ["albumin"], 60, "pfs_event"),
])
@pytest.mark.parametrize("n_patients", [1, 7])
def test_memory_frame_equals_the_stored_frame(tmp_path, clinical, labs, max_age, label, n_patients):
    """Same rows, types, order and values (labs' point-in-time rule, late-recorded values left out,
    categorical clinical columns, int8 label) as FeatureStore.training_frame on the same tables."""
    cohort, late = clinical_tables(n=30, seed=5)
    pids = list(cohort.clinical.patient_id[3:3 + n_patients])
    one = _subset(cohort, pids)
    rows = feature_rows(one.clinical.patient_id, one.clinical.center, dim=12, seed=1)
    s = FeatureStore(tmp_path / "s")
    s.add_cohort(one)
    s.publish("dltr", rows, "test", {"inputs_hash": "x"})
    want = s.training_frame("dltr", label=label, clinical=clinical, labs=labs, max_age_days=max_age).table
    got = memory_frame(one, rows, label=label, clinical=clinical, labs=labs, max_age_days=max_age).table
    assert got.schema.equals(want.schema)
    assert got.equals(want)
    if labs:  # the late-recorded planted values (>= 9000) never reach the frame
        vals = np.concatenate([got.column(f"lab_{n}").to_numpy(zero_copy_only=False) for n in labs])
        assert not (vals[~np.isnan(vals.astype(float))] >= 9000).any()


def test_memory_frame_checks_the_request_like_the_store(tmp_path):
    cohort, _ = clinical_tables(n=6, seed=1)
    rows = feature_rows(cohort.clinical.patient_id, cohort.clinical.center, dim=4)
    with pytest.raises(StoreError, match="no column"):
        memory_frame(cohort, rows, clinical=["not_a_column"])
    with pytest.raises(StoreError, match="no lab named"):
        memory_frame(cohort, rows, labs=["not_a_lab"])


def test_one_dali_pipeline_retargeted_equals_a_fresh_pipeline_per_store(tmp_path):
    """The scorer's single DALI pipeline, pointed at one store after another, gives each store's
    tensors and boxes exactly as a pipeline built for that store does (no state carried over)."""
    import torch
    from kit.roi_store import PHASES, roi_store

    from pipeline.loaders import DaliRoiPipeline, RoiConfig

    stores = [roi_store(tmp_path / f"s{i}", n_patients=3, seed=i) for i in range(3)]
    cfg = RoiConfig(phases=PHASES, grid=(16, 16, 8))
    with DaliRoiPipeline(stores[0], cfg, batch_size=1, num_threads=1) as shared:
        for store in stores[1:] + stores[:1]:
            shared.retarget(store)
            with DaliRoiPipeline(store, cfg, batch_size=1, num_threads=1) as fresh:
                for pid in ("P000", "P001", "P002"):
                    x, box = shared.run([pid])
                    y, want = fresh.run([pid])
                    assert torch.equal(x, y) and np.array_equal(box, want)
    a, _ = DaliRoiPipeline(stores[1], cfg, batch_size=1, num_threads=1).run(["P001"])
    b, _ = DaliRoiPipeline(stores[2], cfg, batch_size=1, num_threads=1).run(["P001"])
    assert not torch.equal(a, b)  # the stores differ, so reading the wrong one would be seen
