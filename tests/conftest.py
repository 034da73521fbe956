"""Shared fixtures: the tiny synthetic cohort (seed 0), generated once per test session (about 2 s)."""

from __future__ import annotations

from pathlib import Path
from typing import NamedTuple

import pytest


class TinyCohort(NamedTuple):
    root: Path  # the synth output folder
    cohort: Path  # root / "cohort": the cohort in the contract
    truth: Path  # root / "truth": ground truth no pipeline stage reads


@pytest.fixture(scope="session")
def tiny_cohort(tmp_path_factory) -> TinyCohort:
    from dltr.synth import SynthConfig, synthesize

    root = tmp_path_factory.mktemp("tiny_synth") / "synth"
    res = synthesize(root, SynthConfig.profile("tiny", seed=0))
    return TinyCohort(res.root, res.cohort, res.truth)
