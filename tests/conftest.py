"""Shared fixtures, built once per test session from the kit (tests/kit): the tiny synthetic cohort (seed 0,
about 2 s) and a trained tiny store for the scoring tests (about 2 min)."""

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


@pytest.fixture(scope="session")
def scoring_demo(tmp_path_factory):
    """A trained tiny store (one encoder candidate) shared by the scoring and service tests; read-only."""
    from kit.scoring import build_demo

    return build_demo(tmp_path_factory.mktemp("scoring"))
