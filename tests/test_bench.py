"""``dltr bench --quick``: every suite produces finite figures (a smoke test; speed is not asserted)."""

from __future__ import annotations

import json
import math

import pytest

from benchmarks.harness import SUITES
from dltr.cli import main

pytestmark = pytest.mark.slow


def test_quick_bench_produces_every_figure(tmp_path):
    out = tmp_path / "bench"
    assert main(["bench", "--quick", "--out", str(out)]) == 0
    res = json.loads((out / "results.json").read_text())
    assert set(res["suites"]) == set(SUITES)
    assert all(v.startswith("ok") for v in res["suites"].values()), res["suites"]
    by_suite = {f["suite"] for f in res["figures"]}
    assert by_suite == set(SUITES)
    for f in res["figures"]:
        values = [f["ours"]["median"], f["ours"]["min"], f["ours"]["max"]]
        for key in ("baseline", "ceiling"):
            if f[key] is not None:
                values += [f[key]["median"], f[key]["min"], f[key]["max"]]
        assert all(math.isfinite(v) and v >= 0 for v in values), f
        assert f["ours"]["min"] <= f["ours"]["median"] <= f["ours"]["max"]
        if f["baseline"] is not None:
            # The ratio in the file is recomputed from the medians it reports.
            a, b = f["ours"]["median"], f["baseline"]["median"]
            assert math.isclose(f["ratio"], a / b if f["higher_is_better"] else b / a, rel_tol=1e-9)
    md = (out / "results.md").read_text()
    assert md.count("\n|") - 2 == len(res["figures"])
