"""``dltr demo`` end to end on the tiny profile, the report it writes, and its idempotence."""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from dltr.core.vocabulary import HEADS, MULTI_HEADS, display_name
from dltr.demo import run_demo
from features import FeatureStore

# The tiny cohort leaves some risk groups empty: the survival stage warns (ApproximationWarning) by design.
pytestmark = [pytest.mark.slow, pytest.mark.filterwarnings("ignore::dltr.core.exceptions.ApproximationWarning")]

SECTIONS = ("Cohort", "Model comparison", "Radiomics", "ROC, calibration and decision curves",
            "Progression-free survival", "Radiogenomics", "This run beside the paper and the oracle", "Performance",
            "Lineage")
ARTIFACTS = Path(__file__).resolve().parents[1] / "test-artifacts"


@pytest.fixture(scope="module")
def demo(tiny_demo):
    """(result, log lines) of the session's tiny demo (kit/demo.py: keyed, one encoder candidate)."""
    return tiny_demo.result, tiny_demo.logs


def _sections(md: str) -> dict[str, str]:
    parts = re.split(r"^## ", md, flags=re.M)[1:]
    return {p.splitlines()[0].strip(): p for p in parts}


def _md_table(block: str, after: str) -> pd.DataFrame:
    """The first Markdown table following the line containing ``after``."""
    lines = block[block.index(after):].splitlines()
    start = next(i for i, ln in enumerate(lines) if ln.startswith("|"))
    rows = []
    for ln in lines[start:]:
        if not ln.startswith("|"):
            break
        rows.append([c.strip() for c in ln.strip("|").split("|")])
    return pd.DataFrame(rows[2:], columns=rows[0])


def test_report_holds_every_section_with_numbers(demo):
    res, _ = demo
    md = res.report_md.read_text()
    secs = _sections(md)
    assert list(secs) == list(SECTIONS)
    # Model comparison: every model has an "AUC [lo-hi]" cell in every external cohort, and the
    # numbers equal the store's eval_metrics table (the report is a rendering of the store).
    table = _md_table(secs["Model comparison"], "AUC [95 % CI]")
    metrics = FeatureStore(res.out / "store").table("eval_metrics").to_pandas()
    ext = [c for c in table.columns if c.startswith("external")]
    assert len(ext) == 2
    for _, row in table.iterrows():
        for c in ext:
            m = re.fullmatch(r"(\d\.\d{3}) \[(\d\.\d{3})-(\d\.\d{3})\]", row[c])
            assert m, f"{row['model']} / {c}: {row[c]!r}"
            lo, auc, hi = float(m[2]), float(m[1]), float(m[3])
            assert lo <= auc <= hi
            head = {display_name(h): h for h in (*HEADS, *MULTI_HEADS)}[row["model"]]
            ref = metrics[(metrics["head"] == head) & (metrics["evaluation_group"] == c)]["auc"].item()
            assert abs(ref - auc) < 5e-4
    # the text describes the DLTR_MLP that was trained: its lineage's fusion inputs (the demo trains the default)
    from dltr.core.layout import StoreLayout
    from models.heads import HeadRegistry, HeadsConfig

    lineage = HeadRegistry(res.out / "store").meta("dltr_mlp")["lineage"]
    fusion, native = lineage.get("fusion", ""), "native_spacing_mm" in lineage
    assert fusion.startswith("descriptors") == (HeadsConfig().fusion in ("descriptors", "native"))
    assert native == (HeadsConfig().fusion == "native")
    # with no resolution declared, the native descriptors' is the floor raised to the coarsest stored voxel (the tiny
    # profile's up to 7.6 x 7.6 x 12 mm), read here from the volumes' own attributes
    layout = StoreLayout.of(res.out / "store")
    voxels = np.array([json.loads(layout.volume_attrs(p.name).read_text())["attributes"]["spacing"]
                       for p in layout.volumes.iterdir() if p.is_dir()])
    expect = np.maximum([4.5, 4.5, 7.0], voxels.max(0))
    assert not native or np.allclose(lineage["native_spacing_mm"], expect, atol=1e-3) and expect[2] > 7.0
    assert not native or "raised to the coarsest stored voxel" in lineage["native_spacing_source"]
    assert not native or "evaluation centers included" in secs["Model comparison"]   # named in the report too
    assert ("ROI descriptors measured on each patient's own encoder input" in secs["Model comparison"]) \
        == fusion.startswith("descriptors")
    said = " x ".join(f"{v:g}" for v in lineage.get("native_spacing_mm", [])) + " mm"
    assert (f"tumour descriptors measured on the ingested volumes brought to one resolution, {said}"
            in secs["Model comparison"]) == native
    # ... and what it learnt from: the mRECIST grades of the store's labelled training rows (the default), or the label
    from models.heads import grade_positions

    fh, meta = HeadRegistry(res.out / "store").load("dltr_mlp")
    ordinal = meta["lineage"]["outcome"].startswith("mRECIST")
    assert ordinal == HeadsConfig().ordinal == fh.estimator.ordinal
    clin = FeatureStore(res.out / "store").table("clinical").to_pandas()
    train = clin[(clin["split"] == "train") & clin["response"].notna()]
    assert not ordinal or fh.estimator.grades_.tolist() == sorted(set(grade_positions(train["response"]).tolist()))
    assert ("trained on the four mRECIST grades" in secs["Model comparison"]) == ordinal
    # ... and the depth its inner CV chose (a linear network is no multilayer perceptron, and the text says so)
    hidden = list(fh.estimator.best_params_["hidden"])
    assert meta["lineage"]["inner_cv_choice"]["hidden"] == hidden
    said = ("chose a network without a hidden layer" if not hidden
            else f"chose 1 hidden layer of {hidden[0]} units" if len(hidden) == 1 else "hidden layers of")
    assert said in secs["Model comparison"]
    # Survival: a log-rank P per external center, each a probability.
    surv = _md_table(secs["Progression-free survival"], "PFS by DLTR_MLP")
    ext_rows = surv[surv["evaluation_group"].str.startswith("external")]
    assert len(ext_rows) >= 2
    for r in ext_rows.itertuples():  # a probability, or NA exactly when the cutoff left one risk group empty
        one_group = min(int(r.n_low), int(r.n_high)) == 0
        assert (r.logrank_p == "NA") == one_group and (one_group or 0.0 <= float(r.logrank_p) <= 1.0), r
    # Radiogenomics: the gene count in the text equals the store's table.
    n_sig = FeatureStore(res.out / "store").table("genes_significant").num_rows
    assert re.search(rf"^{n_sig} genes correlate", secs["Radiogenomics"], flags=re.M)
    # Paper side by side: the paper's own numbers, and this run's external AUCs.
    paper = secs["This run beside the paper and the oracle"]
    for number in ("0.800 / 0.818", "0.649 / 0.629", "0.648 / 0.659", "0.035", "149"):
        assert number in paper
    oracle = json.loads((res.out / "synthetic/truth/centers.json").read_text())
    assert f"{oracle['B']['oracle_auc']:.3g}" in paper
    # Performance: one row per stage with its seconds; lineage names the published feature version.
    perf = _md_table(secs["Performance"], "| stage")
    assert len(perf) == len(res.stages) and all(float(s) >= 0 for s in perf["seconds"])
    version = FeatureStore(res.out / "store").versions("dltr")[-1].version_id
    assert version in secs["Lineage"]
    # Figures referenced by the Markdown exist beside it.
    for rel in re.findall(r"!\[[^\]]*\]\(([^)]+)\)", md):
        assert (res.report_md.parent / rel).stat().st_size > 1000


def test_rerun_reuses_every_stage_and_gives_the_same_report(tiny_demo):
    res = tiny_demo.result
    before = res.report_md.read_text()
    logs: list[str] = []
    again = run_demo(res.out, tiny_demo.config, log=logs.append)
    assert all(s["reused"] for s in again.stages), [s["name"] for s in again.stages if not s["reused"]]
    assert sum("up to date" in m for m in logs) == len(again.stages)
    assert again.report_md.read_text() == before


def test_report_command_rebuilds_without_recomputing(demo, tmp_path):
    from dltr.cli import main

    res, _ = demo
    code = main(["report", "--store", str(res.out / "store"), "--out", str(tmp_path / "r")])
    assert code == 0
    rebuilt = _sections((tmp_path / "r/report.md").read_text())
    original = _sections(res.report_md.read_text())
    for name in ("Model comparison", "Progression-free survival", "Radiogenomics"):
        assert rebuilt[name] == original[name]


def test_report_renders_in_a_real_browser(demo, tmp_path):
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        if os.environ.get("CI"):
            pytest.fail("no Chromium in CI: .ci/run installs Debian's chromium package; the report must be opened")
        pytest.skip("no Chromium on this machine (CI installs Debian's chromium package in .ci/run)")
    from playwright.sync_api import sync_playwright

    res, _ = demo
    errors: list[str] = []
    ARTIFACTS.mkdir(exist_ok=True)
    with sync_playwright() as p:
        ctx = p.chromium.launch_persistent_context(
            str(tmp_path / "profile"), executable_path=chromium, headless=True,
            args=["--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync"])
        page = ctx.new_page()
        page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.goto(res.report_html.resolve().as_uri())
        images = page.evaluate(
            "Array.from(document.images).map(i => [i.alt, i.complete, i.naturalWidth, i.naturalHeight])")
        headings = page.evaluate("Array.from(document.querySelectorAll('h2')).map(h => h.textContent)")
        page.screenshot(path=str(ARTIFACTS / "report.png"), full_page=True)
        ctx.close()
    assert errors == []
    assert headings == list(SECTIONS)
    figures_in_md = re.findall(r"!\[", res.report_md.read_text())
    assert len(images) == len(figures_in_md) > 5
    for alt, complete, w, h in images:
        assert complete and w > 0 and h > 0, alt
