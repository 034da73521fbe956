"""``dltr bench --quick``: each suite produces finite figures whose ratios are the medians' (a smoke test;
speed is not asserted). One test per suite, so that the suites spread over the test workers."""

from __future__ import annotations

import json
import math

import pytest

from benchmarks.harness import SUITES
from dltr.cli import main

pytestmark = pytest.mark.slow


@pytest.mark.parametrize("suite", SUITES)
def test_quick_bench_suite_produces_its_figures(suite, tmp_path, request):
    out = tmp_path / "bench"
    args = ["bench", "--quick", "--repeats", "2", "--only", suite, "--out", str(out)]  # 2: a median between two
    if suite == "serve":  # a copy of the session's trained tiny demo (the very demo the suite would train)
        args += ["--set", f"serve_demo={request.getfixturevalue('scoring_demo').out}"]
    assert main(args) == 0
    res = json.loads((out / "results.json").read_text())
    assert list(res["suites"]) == [suite] and res["suites"][suite].startswith("ok"), res["suites"]
    assert res["figures"] and {f["suite"] for f in res["figures"]} == {suite}
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
