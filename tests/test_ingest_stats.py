"""Ingest intensity statistics on float32 volumes (the bounded histogram path) against NumPy on the
concatenated voxels read back from the store; int16 exactness is tests/test_ingest.py's
``test_dask_statistics_equal_numpy``."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import zarr
from kit.images import nifti_cohort, region_values

from pipeline.ingest import IngestConfig, ingest_cohort
from pipeline.ingest._stats import FLOAT_RTOL  # the stated accuracy, documented in pipeline/ingest/_stats.py

SHAPE = (34, 30, 10)
PHASES = ("arterial", "portal")


def _cohort(root: Path, kinds: dict[str, tuple[str, str]], seed: int) -> Path:
    """kinds: patient_id -> (center, 'float' | 'int' | 'intfloat'); float = non-integer float32 with
    negative values, int = integer-valued (stored int16), intfloat = integer values plus 0.5 on a
    quarter of the voxels (float32, few distinct values)."""
    rng = np.random.default_rng(seed)
    ii = np.indices(SHAPE, dtype=np.float32)
    patients = {}
    for pid, (center, kind) in kinds.items():
        c = rng.uniform(8, 22, 3)
        mask = ((((ii[0] - c[0]) / 6) ** 2 + ((ii[1] - c[1]) / 5) ** 2 + ((ii[2] - 5) / 2.5) ** 2) <= 1)
        images = {}
        for k, ph in enumerate(PHASES):
            v = rng.lognormal(5.0 + 0.3 * k, 0.6, SHAPE) + 60 * mask
            v[:3] = 0.0  # air: outside "body"
            v[3:5] = -rng.uniform(0.5, 40.0, v[3:5].shape)  # negative values (e.g. subtraction images)
            if kind == "int":
                v = np.round(v).astype(np.int16)
            elif kind == "intfloat":
                v = (np.round(v) + 0.5 * (rng.random(SHAPE) < 0.25)).astype(np.float32)
            else:
                v = v.astype(np.float32)
            images[ph] = v
        patients[pid] = (center, mask, images)
    return nifti_cohort(root, patients, np.diag([0.9, 1.1, 2.5, 1.0]))


@pytest.fixture(scope="module")
def float_store(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("fstats")
    kinds = {"P000": ("A", "float"), "P001": ("A", "float"), "P002": ("A", "int"),  # A mixes int16 and float32
             "P003": ("B", "intfloat"), "P004": ("B", "intfloat")}
    cohort = _cohort(tmp / "c", kinds, seed=5)
    ingest_cohort(cohort, tmp / "s", IngestConfig(), executor="serial")
    grp = zarr.open_group(tmp / "s" / "volumes.zarr", mode="r")
    dtypes = {pid: str(grp[pid]["arterial"].dtype) for pid in kinds}
    assert dtypes == {"P000": "float32", "P001": "float32", "P002": "int16", "P003": "float32",
                      "P004": "float32"}, dtypes  # the test really covers the float path and the mix
    return tmp / "s"


def test_float32_statistics_within_stated_tolerance_of_numpy(float_store):
    stats = pq.read_table(float_store / "ingest" / "intensity_stats.parquet").to_pylist()
    assert len(stats) == 2 * 2 * 2
    worst = 0.0
    for s in stats:
        v = region_values(float_store, s["center"], s["phase"], s["region"])
        assert s["n"] == v.size
        np.testing.assert_allclose([s["mean"], s["std"]], [v.mean(), v.std()], rtol=1e-10)
        for name, q in (("p01", 1.0), ("p50", 50.0), ("p99", 99.0)):
            ref = np.percentile(v, q)
            pos = q / 100 * (v.size - 1)
            bound = FLOAT_RTOL * max(abs(v[int(np.floor(pos))]), abs(v[int(np.ceil(pos))]))
            err = abs(s[name] - ref)
            assert err <= bound, f"{s['center']} {s['phase']} {s['region']} {name}: {s[name]} vs {ref}"
            worst = max(worst, err / abs(ref))
    assert worst < FLOAT_RTOL


def test_float32_with_few_distinct_values_is_exact(float_store):
    """Center B: integer-or-half values (float32): each bucket holds one distinct value, so the
    histogram gives NumPy's percentiles exactly."""
    stats = pq.read_table(float_store / "ingest" / "intensity_stats.parquet").to_pylist()
    rows = [s for s in stats if s["center"] == "B"]
    assert len(rows) == 4
    for s in rows:
        v = region_values(float_store, s["center"], s["phase"], s["region"])
        assert len(np.unique(v)) > 100  # many values, all representable in one bucket each
        np.testing.assert_allclose([s["p01"], s["p50"], s["p99"]], np.percentile(v, [1, 50, 99]), rtol=1e-12)
