"""Resource bounds: ingest's peak memory does not grow with the number of patients.

Scaled down from "a cohort larger than RAM": each patient is 2 phases of 128 x 128 x 32 (2 MB decoded
as int16, 4 MB as float32); ingesting 4N patients instead of N adds 3N patients' worth of voxels (30 MB
as int16, 60 MB as float32). Loading the cohort whole, or keeping per-voxel state across patients, would
show up as that much extra peak RSS; a streaming ingest stays within noise (under 12 MB).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from kit.images import nifti_cohort

REPO = Path(__file__).resolve().parents[1]
SHAPE = (128, 128, 32)
N = 5
GROWTH_LIMIT_MB = 18.0  # over 15 added patients: 1.2 MB each, below the 2 (int16) or 4 (float32) MB of one patient's volumes

MEASURE = r"""
import re, sys
from pipeline.ingest import IngestConfig, ingest_cohort
rep = ingest_cohort(sys.argv[1], sys.argv[2], IngestConfig(), executor="serial")
assert rep.ok == int(sys.argv[3]), rep.errors[:3]
# VmHWM: this image's own peak RSS (ru_maxrss would keep the forking parent's RSS across exec)
print(int(re.search(r"VmHWM:\s+(\d+)", open("/proc/self/status").read()).group(1)) / 1024)
"""


def _cohort(root: Path, n: int, dtype: str) -> Path:
    rng = np.random.default_rng(0)
    ii = np.indices(SHAPE, dtype=np.float32)
    mask = ((((ii[0] - 64) / 12) ** 2 + ((ii[1] - 60) / 10) ** 2 + ((ii[2] - 16) / 4) ** 2) <= 1).astype(np.uint8)
    patients = {}
    for k in range(n):
        images = {}
        for ph in ("arterial", "portal"):
            v = rng.normal(200, 40, SHAPE)
            images[ph] = v.astype(np.float32) if dtype == "float32" else np.round(v).astype(np.int16)
        patients[f"P{k:03d}"] = ("A", mask, images)
    return nifti_cohort(root, patients, np.diag([0.8, 0.8, 3.0, 1.0]))


def _peak_mb(tmp: Path, n: int, dtype: str) -> float:
    cohort = _cohort(tmp / f"c{n}{dtype}", n, dtype)
    env = {**os.environ, "PYTHONPATH": str(REPO), "OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1",
           "MALLOC_ARENA_MAX": "2"}  # the measure is ingest's growth, not glibc's per-thread arenas
    p = subprocess.run([sys.executable, "-c", MEASURE, str(cohort), str(tmp / f"s{n}{dtype}"), str(n)], cwd=REPO,
                       env=env, capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr[-2000:]
    return float(p.stdout.split()[-1])


@pytest.mark.slow
@pytest.mark.serial  # peak RSS of a busy process depends on what else runs: `make test` runs it alone
# float32 volumes have nearly every voxel distinct: exact distinct-value statistics grew 531 -> 1192 MB
# at 5 -> 20 patients before the bounded float histogram (pipeline/ingest/_stats.py).
@pytest.mark.parametrize("dtype", ["int16", "float32"])
def test_ingest_peak_memory_does_not_grow_with_patients(tmp_path, dtype):
    n = N
    small, large = _peak_mb(tmp_path, n, dtype), _peak_mb(tmp_path, 4 * n, dtype)
    extra_mb = 3 * n * 2 * np.prod(SHAPE) * (4 if dtype == "float32" else 2) / 2**20
    assert extra_mb > 1.5 * GROWTH_LIMIT_MB  # loading it whole would be seen
    assert large - small < GROWTH_LIMIT_MB, f"peak RSS {small:.0f} MB at {n} patients, {large:.0f} MB at {4 * n}"
