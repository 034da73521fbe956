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


def test_isolated_suites_run_in_their_own_interpreter(tmp_path, monkeypatch, capfd):
    """With more than one suite (or ``isolate=True``) each suite runs in a fresh process, so that its figures do
    not depend on the suites before it: a suite module broken in this process still runs there, and its figures
    come back through JSON unchanged (the ratio recomputed from the same values); the child imports the
    harness once (no runpy warning about a module already in sys.modules)."""
    import benchmarks.suites.encoder as encoder
    from benchmarks.harness import Figure, run_suites

    def broken(ctx):
        raise RuntimeError("the parent's copy of the suite ran")

    monkeypatch.setattr(encoder, "run", broken)
    with pytest.raises(RuntimeError, match="parent's copy"):
        run_suites(tmp_path / "inline", quick=True, only=["encoder"], repeats=2, isolate=False)
    capfd.readouterr()
    figs = run_suites(tmp_path / "own", quick=True, only=["encoder"], repeats=2, isolate=True, log=lambda m: None)
    assert "RuntimeWarning" not in capfd.readouterr().err
    res = json.loads((tmp_path / "own" / "results.json").read_text())
    assert res["suites"]["encoder"].endswith("own process)") and {f.suite for f in figs} == {"encoder"}
    for f, d in zip(figs, res["figures"], strict=True):
        assert Figure.from_dict(d) == f and len(f.ours.values) == 2
        assert d["ours"]["values"] == list(f.ours.values) and d["ours"]["median"] == f.ours.median
