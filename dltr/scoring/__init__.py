"""Scoring new patients with the registered models: one patient in, a response probability out.

``predict_patient(store_root, patient_dir, head="dltr_mlp[@VERSION]", record=False) -> Prediction``
runs exactly the registered recipe, looked up from the head's lineage (``resolve_lineage``): the
training ingest's reader / canonical frame / output config into a temporary de-identified store,
the encoder card's ``RoiConfig`` through the DALI ROI pipeline with the training intensity
statistics, the encoder, the store's point-in-time frame and the head. ``Scorer`` keeps the models
loaded between patients (the service). ``create_app`` is the HTTP service (FastAPI).
"""

from ._app import create_app
from ._lineage import ScoringLineage, resolve_lineage
from ._prediction import Prediction
from ._record import RECORDS_TABLE, recorded_patient_id
from ._scorer import Scorer, predict_patient
from ._stage import SCORING_KEY, StagedPatient, stage_cohort
from ._upload import ServeLimits, UploadError

__all__ = ["RECORDS_TABLE", "SCORING_KEY", "Prediction", "Scorer", "ScoringLineage", "ServeLimits", "StagedPatient",
           "UploadError", "create_app", "predict_patient", "recorded_patient_id", "resolve_lineage", "stage_cohort"]
