"""The synthetic multicenter TACE cohort: images, clinical data, labs, expression and their ground truth.

``synthesize(out_dir, SynthConfig.profile("tiny", seed=0))`` writes ``out_dir/cohort`` (the cohort contract,
``shared/spec/cohort.md``) and ``out_dir/truth`` (what no pipeline stage reads: oracle probabilities, latent
traits, tumour centroids, per-center oracle AUCs, planted genes, DICOM identifiers, late lab reports).
The response and PFS models are documented in :mod:`dltr.synth._clinical`.
"""

from ._anatomy import Study, center_affine, render_study
from ._clinical import RESPONSE_MODEL, draw_patients, oracle_aucs
from ._config import CenterSpec, SynthConfig
from ._expression import read_gmt
from ._writer import SynthResult, synthesize

__all__ = ["RESPONSE_MODEL", "CenterSpec", "Study", "SynthConfig", "SynthResult", "center_affine",
           "draw_patients", "oracle_aucs", "read_gmt", "render_study", "synthesize"]
