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


# Under pytest-xdist (`make test` runs `-n 2 --dist loadgroup`) each test file stays on one worker, so a module
# fixture (a trained tiny demo) is built once; the files that share the session's scoring store form one group.
# Files are handed out longest first (measured on 2 cores), so the short ones fill in at the end.
_SHARED_GROUPS = {"test_scoring.py": "scoring_demo", "test_serve.py": "scoring_demo"}
_LONGEST_FIRST = ("test_cohorts_e2e.py", "test_demo.py", "test_bench.py", "test_clusters.py", "test_radiomics.py",
                  "test_validity.py", "test_scoring.py", "test_serve.py", "test_extract.py", "test_reliability_crash.py",
                  "test_heads.py", "test_encoder.py", "test_reliability_concurrency.py", "test_evaluation.py")


def pytest_collection_modifyitems(config, items):
    rank = {name: i for i, name in enumerate(_LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))  # stable: file order kept within a rank
    for item in items:
        item.add_marker(pytest.mark.xdist_group(_SHARED_GROUPS.get(item.path.name, item.path.name)))
