"""Shared fixtures, built once per test session from the kit (tests/kit): the tiny synthetic cohort (seed 0,
about 2 s), the keyed tiny demo of the end-to-end tests and a trained tiny store for the scoring tests (about
2 min each)."""

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
def tiny_demo(tmp_path_factory):
    """The keyed tiny demo (one encoder candidate) shared by the demo, report and real-cohort tests; the tests
    that change its store work on a copy."""
    from kit.demo import build_tiny_demo

    return build_tiny_demo(tmp_path_factory.mktemp("tiny_demo"))


@pytest.fixture(scope="session")
def scoring_demo(tmp_path_factory):
    """A trained tiny store (one encoder candidate) shared by the scoring and service tests; read-only."""
    from kit.scoring import build_demo

    return build_demo(tmp_path_factory.mktemp("scoring"))


# Under pytest-xdist (`make test` runs `-n 2`) tests are handed out by group, a group to one worker, so that a
# fixture is built once: a test file is a group (its module fixtures), the files sharing a session store form one
# group, and each quick-bench suite is a group of its own (the serve suite's runs beside the scoring store).
# (xdist's own `--dist loadgroup` reads `xdist_group` markers into node ids that pytest 9.2 no longer uses, so
# the grouping is done here, by node id.) Groups are handed out longest first (measured on 2 cores), so the
# short ones fill in at the end.
_SHARED_GROUPS = {"test_scoring.py": "scoring_demo", "test_serve.py": "scoring_demo",
                  "test_demo.py": "tiny_demo", "test_cohorts_e2e.py": "tiny_demo"}
_LONGEST_FIRST = ("test_cohorts_e2e.py", "test_demo.py", "test_validity.py", "test_radiomics.py", "test_bench.py",
                  "test_scoring.py", "test_serve.py", "test_extract.py", "test_clusters.py", "test_reliability_crash.py",
                  "test_heads.py", "test_roi_tensors.py", "test_encoder.py", "test_reliability_concurrency.py",
                  "test_evaluation.py")


def xdist_group_of(nodeid: str) -> str:
    """The xdist group of a test, from its node id."""
    file = nodeid.split("::", 1)[0].rsplit("/", 1)[-1]
    if file == "test_bench.py":
        return "scoring_demo" if nodeid.endswith("[serve]") else nodeid
    return _SHARED_GROUPS.get(file, file)



def pytest_collection_modifyitems(config, items):
    rank = {name: i for i, name in enumerate(_LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))  # stable: file order kept within a rank


def pytest_xdist_make_scheduler(config, log):
    from xdist.scheduler import LoadScopeScheduling

    class GroupScheduling(LoadScopeScheduling):
        """xdist's scope scheduler with ``xdist_group_of`` as the scope."""

        def _split_scope(self, nodeid: str) -> str:
            return xdist_group_of(nodeid)

    return GroupScheduling(config, log)
