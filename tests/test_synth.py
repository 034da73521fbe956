"""The synthetic cohort: determinism, outcome models, geometry read back by the reference libraries."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import nrrd
import numpy as np
import pandas as pd
import pydicom
import pytest
from kit import SHARED_DATA
from lifelines import KaplanMeierFitter

from dltr.core.exceptions import DltrError
from dltr.core.hashing import tree_sha256
from dltr.synth import SynthConfig, draw_patients, oracle_aucs, read_gmt, render_study, synthesize

GMT = SHARED_DATA / "genesets" / "h.all.v7.0.symbols.gmt"
TABLES = ["cohort/manifest.csv", "cohort/clinical.csv", "cohort/labs.csv", "cohort/expression.tsv",
          "cohort/cohort.toml", "truth/patients.csv", "truth/tumours.csv", "truth/centers.json"]


def _study(cfg: SynthConfig, truth: Path, pid: str):
    pats = draw_patients(cfg)
    row = pats[pats.patient_id == pid].iloc[0]
    ci = [c.name for c in cfg.centers].index(row.center)
    pi = int((pats[pats.center == row.center].patient_id == pid).to_numpy().argmax())
    return render_study(cfg, row, ci, pi)


def test_same_seed_same_bytes_other_seed_differs(tiny_cohort, tmp_path):
    again = synthesize(tmp_path / "again", SynthConfig.profile("tiny", seed=0))
    for t in TABLES:
        assert (tiny_cohort.root / t).read_bytes() == (again.root / t).read_bytes(), t
    assert tree_sha256(tiny_cohort.cohort / "images") == tree_sha256(again.cohort / "images")
    other = synthesize(tmp_path / "other", SynthConfig.profile("tiny", seed=1))
    assert (other.root / TABLES[1]).read_bytes() != (tiny_cohort.root / TABLES[1]).read_bytes()
    a = nib.load(tiny_cohort.cohort / "images/A/SYN-A-0001/arterial.nii.gz").get_fdata()
    b = nib.load(other.cohort / "images/A/SYN-A-0001/arterial.nii.gz").get_fdata()
    assert a.shape == b.shape and not np.array_equal(a, b)


def test_oracle_auc_response_rate_and_pfs_are_tace_like():
    # Population check on many patients (no images rendered): expected AUCs per center, as designed.
    pats = draw_patients(SynthConfig.profile("default", patients=1500, seed=3))
    for c, r in oracle_aucs(pats).items():
        assert 0.79 <= r["oracle_expected_auc"] <= 0.87, (c, r)
        assert 0.60 <= r["image_only_expected_auc"] <= 0.72, (c, r)
        assert 0.60 <= r["clinical_only_expected_auc"] <= 0.72, (c, r)
        assert r["oracle_expected_auc"] > max(r["image_only_expected_auc"], r["clinical_only_expected_auc"]) + 0.1
        assert 0.45 <= r["response_rate"] <= 0.65
    # the objective response matches the mRECIST category drawn
    assert (pats.responder == pats.response.isin(["CR", "PR"])).all()
    months = pats.pfs_days / 30.44
    km = KaplanMeierFitter().fit(months, pats.pfs_event)
    assert 8 <= km.median_survival_time_ <= 14
    assert 0.20 <= 1 - pats.pfs_event.mean() <= 0.35
    med = {r: KaplanMeierFitter().fit(months[pats.responder == r], pats.pfs_event[pats.responder == r])
           .median_survival_time_ for r in (0, 1)}
    assert med[1] > 1.5 * med[0]


def test_default_profile_seed0_centers_in_range():
    r = oracle_aucs(draw_patients(SynthConfig.profile("default", seed=0)))
    assert {c: v["n"] for c, v in r.items()} == {"A": 220, "B": 80, "C": 80}
    for c, v in r.items():
        assert 0.78 <= v["oracle_expected_auc"] <= 0.88, (c, v)
        assert 0.40 <= v["response_rate"] <= 0.70, (c, v)


def _centroid(mask: np.ndarray, affine: np.ndarray, label: int) -> np.ndarray:
    return affine[:3, :3] @ np.argwhere(mask == label).mean(0) + affine[:3, 3]


def test_dicom_series_reads_back_to_generated_voxels_and_world_geometry(tiny_cohort):
    cfg = SynthConfig.profile("tiny", seed=0)
    pid = "SYN-C-0002"
    st = _study(cfg, tiny_cohort.truth, pid)
    folder = tiny_cohort.cohort / "images/C" / pid / "portal"
    dss = [pydicom.dcmread(f) for f in folder.iterdir()]
    row, col = (np.array(dss[0].ImageOrientationPatient[:3], float), np.array(dss[0].ImageOrientationPatient[3:],
                                                                               float))
    normal = np.cross(row, col)
    dss.sort(key=lambda d: float(np.dot(normal, np.array(d.ImagePositionPatient, float))))
    by_position = [Path(d.filename).name for d in dss]
    assert by_position != sorted(by_position)  # files are named in shuffled order
    vol = np.stack([d.pixel_array.T * float(d.RescaleSlope) + float(d.RescaleIntercept) for d in dss], axis=-1)
    np.testing.assert_array_equal(vol, st.values["portal"])
    dr, dc = (float(v) for v in dss[0].PixelSpacing)  # row spacing (along columns), column spacing
    p0, p1 = (np.array(d.ImagePositionPatient, float) for d in dss[:2])
    lps = np.eye(4)
    lps[:3, 0], lps[:3, 1], lps[:3, 2], lps[:3, 3] = row * dc, col * dr, p1 - p0, p0
    ras = np.diag([-1.0, -1, 1, 1]) @ lps
    np.testing.assert_allclose(ras, st.affine, atol=1e-4)
    assert float(dss[0].SpacingBetweenSlices) == pytest.approx(np.linalg.norm(p1 - p0), abs=1e-4)
    # the NRRD mask in the same world space; each tumour centroid within half a voxel of truth
    mask, hdr = nrrd.read(str(tiny_cohort.cohort / "images/C" / pid / "mask.nrrd"))
    assert hdr["space"] == "left-posterior-superior"
    m_lps = np.eye(4)
    m_lps[:3, :3], m_lps[:3, 3] = np.asarray(hdr["space directions"], float).T, hdr["space origin"]
    m_ras = np.diag([-1.0, -1, 1, 1]) @ m_lps
    truth = pd.read_csv(tiny_cohort.truth / "tumours.csv").query("patient_id == @pid")
    half = np.abs(st.affine[:3, :3]).sum(1) / 2
    for t in truth.itertuples():
        c = _centroid(mask, m_ras, t.label)
        assert np.all(np.abs(c - [t.centroid_x, t.centroid_y, t.centroid_z]) <= half)
        assert np.linalg.norm(c - [t.center_x, t.center_y, t.center_z]) < t.radius_mm / 2  # near the planted one
    # identifiers: fake, recorded in truth, never the manifest key
    ident = {i["patient_id"]: i for i in json.loads((tiny_cohort.truth / "identifiers.json").read_text())}[pid]
    assert str(dss[0].PatientName) == ident["name"] and dss[0].PatientID == ident["dicom_patient_id"] != pid
    study_date = pd.read_csv(tiny_cohort.truth / "patients.csv").set_index("patient_id").study_date[pid]
    assert dss[0].Modality == "MR" and dss[0].StudyDate == study_date.replace("-", "")


@pytest.mark.parametrize("pid", ["SYN-A-0003", "SYN-B-0004"])
def test_nifti_reads_back_with_nibabel(tiny_cohort, pid):
    cfg = SynthConfig.profile("tiny", seed=0)
    st = _study(cfg, tiny_cohort.truth, pid)
    center = pid.split("-")[1]
    img = nib.load(tiny_cohort.cohort / "images" / center / pid / "arterial.nii.gz")
    np.testing.assert_array_equal(img.get_fdata(dtype=np.float32), st.values["arterial"])
    np.testing.assert_allclose(img.affine, st.affine, atol=1e-5)
    assert "".join(nib.aff2axcodes(img.affine)) == cfg.center(center).orientation
    mimg = nib.load(tiny_cohort.cohort / "images" / center / pid / "mask.nii.gz")
    mask = np.asarray(mimg.dataobj)
    truth = pd.read_csv(tiny_cohort.truth / "tumours.csv").query("patient_id == @pid")
    half = np.abs(st.affine[:3, :3]).sum(1) / 2
    for t in truth.itertuples():
        c = _centroid(mask, mimg.affine, t.label)
        assert np.all(np.abs(c - [t.centroid_x, t.centroid_y, t.centroid_z]) <= half)


def test_late_lab_reports_and_point_in_time_truth(tiny_cohort):
    labs = pd.read_csv(tiny_cohort.cohort / "labs.csv", parse_dates=["measured_at", "recorded_at"])
    labs["recorded_at"] = labs["recorded_at"].fillna(labs["measured_at"])
    tace = pd.read_csv(tiny_cohort.cohort / "clinical.csv", parse_dates=["tace_date"]).set_index("patient_id")
    labs["tace"] = labs.patient_id.map(tace.tace_date)
    late = pd.read_csv(tiny_cohort.truth / "late_labs.csv", parse_dates=["measured_at", "recorded_at"])
    assert len(late) > 0 and set(late.kind) == {"late", "amended"}
    lt = late.patient_id.map(tace.tace_date)
    assert ((late.measured_at < lt) & (late.recorded_at > lt)).all()
    # an independent as-of join: latest measured, then latest recorded, both known at TACE
    known = labs[(labs.measured_at <= labs.tace) & (labs.recorded_at <= labs.tace)]
    asof = known.sort_values(["measured_at", "recorded_at"]).groupby(["patient_id", "name"]).tail(1)
    expect = pd.read_csv(tiny_cohort.truth / "labs_asof.csv")
    got = asof.set_index(["patient_id", "name"]).value.sort_index()
    np.testing.assert_allclose(got, expect.set_index(["patient_id", "name"]).value.sort_index().loc[got.index])
    assert len(got) == len(expect)
    # a naive join on measured_at alone would pick the late values
    naive = labs[labs.measured_at <= labs.tace].sort_values("measured_at").groupby(["patient_id", "name"]).tail(1)
    assert (naive.set_index(["patient_id", "name"]).value.sort_index() != got).any()


def test_expression_plants_real_hallmark_pathways(tmp_path):
    cfg = SynthConfig.profile("tiny", seed=0, gene_sets=str(GMT), radiogenomics_n=18)
    res = synthesize(tmp_path / "s", cfg)
    genes = json.loads((res.truth / "genes.json").read_text())
    sets = read_gmt(GMT)
    expr = pd.read_csv(res.cohort / "expression.tsv", sep="\t").set_index("gene")
    assert set().union(*sets.values()) <= set(expr.index)
    assert [p["pathway"] for p in genes["planted_pathways"]] == list(cfg.planted_pathways)
    assert all(g["gene"] in sets[g["pathway"]] for g in genes["planted_genes"])
    traits = pd.read_csv(res.truth / "patients.csv").set_index("patient_id").loc[expr.columns]
    def corr(g, trait):
        return abs(np.corrcoef(expr.loc[g].to_numpy(), traits[trait].to_numpy())[0, 1])
    planted = np.mean([corr(g["gene"], g["trait"]) for g in genes["planted_genes"]])
    planted_names = {g["gene"] for g in genes["planted_genes"]}
    noise = np.mean([corr(g, "z_h") for g in expr.index[:400] if g not in planted_names])
    assert planted > 0.5 and noise < 0.25


def test_refuses_to_replace_a_foreign_folder(tmp_path):
    (tmp_path / "mine.txt").write_text("keep")
    with pytest.raises(DltrError, match="not a synthetic cohort"):
        synthesize(tmp_path, SynthConfig.profile("tiny", patients=2))
    assert (tmp_path / "mine.txt").read_text() == "keep"
    assert sorted(p.name for p in tmp_path.parent.iterdir() if p.name.startswith(f".{tmp_path.name}")) == []


def test_config_round_trips():
    cfg = SynthConfig.profile("tiny", seed=5, patients=3, gene_sets="x.gmt")
    assert SynthConfig.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg


def test_synthetic_gene_sets_are_written_as_a_gmt_the_genes_stage_reads(tiny_cohort):
    """Without a GMT the generator's own pathways land in cohort/gene_sets.gmt (the demo's genes-stage default),
    not in truth/ (no pipeline stage reads truth/)."""
    from analysis.gmt import read_gmt as read_analysis_gmt

    genes = json.loads((tiny_cohort.truth / "genes.json").read_text())
    sets = read_analysis_gmt(tiny_cohort.cohort / "gene_sets.gmt")
    assert not (tiny_cohort.truth / "gene_sets.gmt").exists()
    assert {k: list(v.genes) for k, v in sets.items()} == genes["synthetic_sets"]
    expr = pd.read_csv(tiny_cohort.cohort / "expression.tsv", sep="\t", usecols=["gene"])
    assert set().union(*(set(v.genes) for v in sets.values())) <= set(expr["gene"])
