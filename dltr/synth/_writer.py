"""``synthesize``: write the cohort (in the contract) and its ground truth, atomically."""

from __future__ import annotations

import json
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from dltr.core.exceptions import DltrError
from dltr.core.io import publish_dir

from ._anatomy import render_study
from ._clinical import RESPONSE_MODEL, draw_patients, oracle_aucs
from ._config import SynthConfig
from ._dicom import write_dicom_series
from ._expression import draw_expression
from ._formats import write_nifti, write_nrrd_mask
from ._labs import draw_labs

__all__ = ["SynthResult", "synthesize"]

CLINICAL_COLUMNS = ["patient_id", "center", "split", "age", "sex", "etiology", "child_pugh", "albi_score",
                    "albi_grade", "bclc", "afp", "tumour_count", "largest_diameter_mm", "portal_vein_invasion",
                    "tace_date", "response", "pfs_days", "pfs_event"]
TRUTH_COLUMNS = ["patient_id", "center", "split", "p_true", "logit", "s_img", "s_clin", "responder", "response",
                 "hyper", "washout", "capsule", "necrosis", "heterogeneity", "irregularity", "diameter_mm",
                 "z_h", "z_w", "z_cap", "z_nec", "z_het", "z_irr", "z_d", "z_afp", "a_albi", "study_date"]
_FIRST = ["Alex", "Maria", "Wei", "Fatima", "John", "Yuki", "Olga", "Ahmed", "Lucia", "Chen"]
_LAST = ["Smith", "Garcia", "Wang", "Khan", "Muller", "Sato", "Ivanova", "Hassan", "Rossi", "Li"]


@dataclass(frozen=True)
class SynthResult:
    root: Path
    cohort: Path
    truth: Path
    n_patients: int
    n_files: int
    seconds: float
    centers: dict  # per-center oracle AUCs (truth/centers.json)

    def to_dict(self) -> dict:
        return {"root": str(self.root), "cohort": str(self.cohort), "truth": str(self.truth),
                "n_patients": self.n_patients, "n_files": self.n_files, "seconds": round(self.seconds, 2),
                "centers": self.centers}


def _csv(df: pd.DataFrame, path: Path, sep: str = ",") -> None:
    path.write_text(df.to_csv(index=False, sep=sep, lineterminator="\n", float_format="%.6g"))


def _identifiers(cfg: SynthConfig, pid: str, sex: str, age: int, tace: str) -> dict:
    rng = np.random.default_rng([cfg.seed, 6, sum(map(ord, pid)), len(pid)] + [ord(c) for c in pid])
    year = int(tace[:4]) - age
    return {"patient_id": pid, "name": f"{rng.choice(_LAST)}^{rng.choice(_FIRST)}",
            "dicom_patient_id": f"MRN{rng.integers(10**7, 10**8)}", "other_id": f"HOSP-{rng.integers(10**5, 10**6)}",
            "birth_date": f"{year:04d}{int(rng.integers(1, 13)):02d}{int(rng.integers(1, 29)):02d}",
            "sex": sex, "accession": f"ACC{rng.integers(10**6, 10**7)}",
            "institution": "Synthetic General Hospital C", "physician": f"Dr^{rng.choice(_LAST)}"}


def _write_images(cfg: SynthConfig, patients: pd.DataFrame, cohort: Path, progress) -> tuple[list, list, list]:
    manifest, tumour_rows, idents = [], [], []
    todo = [(ci, pi, r) for ci, c in enumerate(cfg.centers)
            for pi, (_, r) in enumerate(patients[patients["center"] == c.name].iterrows())]
    for ci, pi, p in (progress(todo) if progress else todo):
        spec = cfg.centers[ci]
        st = render_study(cfg, p, ci, pi)
        rel = Path("images") / spec.name / st.patient_id
        (cohort / rel).mkdir(parents=True, exist_ok=True)
        if spec.fmt == "dicom":
            ident = _identifiers(cfg, st.patient_id, p["sex"], int(p["age"]), p["tace_date"])
            idents.append(ident)
            order = np.random.default_rng([cfg.seed, 7, ci, pi]).permutation(st.mask.shape[2]) + 1
            for si, phase in enumerate(cfg.phases):
                write_dicom_series(cohort / rel / phase, st.stored[phase], st.affine, slope=spec.slope,
                                   inter=spec.inter, ident=ident, phase=phase, series_number=si + 1,
                                   study_date=p["study_date"], seed=cfg.seed, order=order)
            mask_rel = rel / "mask.nrrd"
            write_nrrd_mask(cohort / mask_rel, st.mask, st.affine)
            images = {ph: rel / ph for ph in cfg.phases}
        else:
            images = {ph: rel / f"{ph}.nii.gz" for ph in cfg.phases}
            for ph in cfg.phases:
                write_nifti(cohort / images[ph], st.stored[ph], st.affine, spec.slope, spec.inter)
            mask_rel = rel / "mask.nii.gz"
            write_nifti(cohort / mask_rel, st.mask, st.affine)
        for ph in cfg.phases:
            manifest.append({"patient_id": st.patient_id, "phase": ph, "image": images[ph].as_posix(),
                             "mask": mask_rel.as_posix(), "study_date": "" if spec.fmt == "dicom"
                             else p["study_date"]})
        for t, tm in enumerate(st.tumours, start=1):
            cw, cc = tm["center_world"], tm["centroid_world"]
            tumour_rows.append({"patient_id": st.patient_id, "tumour": t, "label": t, "radius_mm": tm["radius_mm"],
                                "n_voxels": tm["n_voxels"], "centroid_x": cc[0], "centroid_y": cc[1],
                                "centroid_z": cc[2], "center_x": cw[0], "center_y": cw[1], "center_z": cw[2]})
    return manifest, tumour_rows, idents


# known before the first TACE: the clinical sheet's baseline columns and the lab names (labs.csv); the sheet's
# response and PFS are outcomes and are not listed
PREDICTORS = ["age", "sex", "etiology", "child_pugh", "albi_score", "albi_grade", "bclc", "afp", "tumour_count",
              "largest_diameter_mm", "portal_vein_invasion"]


def _toml_list(names) -> str:
    return "[" + ", ".join(f'"{n}"' for n in names) + "]"


def _cohort_toml(cfg: SynthConfig, lab_names) -> str:
    train = [c.name for c in cfg.centers if c.split == "train_internal"]
    return (f'name = "{cfg.name}"\nphases = {_toml_list(cfg.phases)}\nexpression_scale = "log2tpm1"\n'
            f'train_centers = {_toml_list(train)}\n'
            f'predictors = {_toml_list(dict.fromkeys(PREDICTORS + sorted(lab_names)))}\n'
            '\n[units]\nafp = "ng/mL"\nlargest_diameter_mm = "mm"\npfs_days = "days"\n')


#: The gene sets of the cohort's expression, in the cohort folder (what `dltr genes --gene-sets` reads;
#: no pipeline stage reads truth/): the GMT given to the generator, else its own synthetic pathways.
GENE_SETS = "gene_sets.gmt"


def _write_gene_sets(cfg: SynthConfig, genes: dict, path: Path) -> None:
    if cfg.gene_sets:
        shutil.copyfile(cfg.gene_sets, path)
        return
    path.write_text("".join(f"{name}\tsynthetic pathway (dltr synth)\t" + "\t".join(members) + "\n"
                            for name, members in genes["synthetic_sets"].items()))


def _check_target(out: Path) -> None:
    if out.exists() and any(out.iterdir()) and not (out / "truth" / "params.json").exists():
        raise DltrError(f"{out}: folder exists and is not a synthetic cohort; give an empty or new folder")


def synthesize(out_dir: str | Path, config: SynthConfig | None = None, *, progress=None) -> SynthResult:
    """Write ``out_dir/cohort`` and ``out_dir/truth``; nothing is visible until both are complete."""
    cfg = config or SynthConfig.profile("default")
    out = Path(out_dir).absolute()
    _check_target(out)
    t0 = time.perf_counter()
    tmp = out.parent / f".{out.name}.synth-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    cohort, truth = tmp / "cohort", tmp / "truth"
    try:
        cohort.mkdir(parents=True)
        truth.mkdir()
        patients = draw_patients(cfg)
        patients["largest_diameter_mm"] = patients["diameter_mm"].round(1)
        manifest, tumours, idents = _write_images(cfg, patients, cohort, progress)
        _csv(pd.DataFrame(manifest), cohort / "manifest.csv")
        _csv(patients[CLINICAL_COLUMNS], cohort / "clinical.csv")
        labs, late, asof = draw_labs(patients, cfg.seed)
        _csv(labs, cohort / "labs.csv")
        expr, genes = draw_expression(cfg, patients)
        _csv(expr, cohort / "expression.tsv", sep="\t")
        (cohort / "cohort.toml").write_text(_cohort_toml(cfg, set(labs["name"])))
        centers = oracle_aucs(patients)
        _csv(patients[TRUTH_COLUMNS], truth / "patients.csv")
        _csv(pd.DataFrame(tumours), truth / "tumours.csv")
        _csv(late, truth / "late_labs.csv")
        _csv(asof, truth / "labs_asof.csv")
        dump = {"indent": 2, "sort_keys": True}
        (truth / "centers.json").write_text(json.dumps(centers, **dump) + "\n")
        (truth / "genes.json").write_text(json.dumps(genes, **dump) + "\n")
        (truth / "identifiers.json").write_text(json.dumps(idents, **dump) + "\n")
        _write_gene_sets(cfg, genes, cohort / GENE_SETS)
        (truth / "params.json").write_text(json.dumps({"config": cfg.to_dict(), "response_model": RESPONSE_MODEL},
                                                      **dump) + "\n")
        n_files = sum(len(f) for _, _, f in os.walk(tmp))
        publish_dir(tmp, out, fsync=False)  # thousands of DICOM slices; regenerable
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return SynthResult(out, out / "cohort", out / "truth", len(patients), n_files, time.perf_counter() - t0, centers)
