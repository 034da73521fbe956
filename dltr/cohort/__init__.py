"""The cohort contract (``shared/spec/cohort.md``): load and validate a cohort folder.

``validate_cohort(path)`` returns a :class:`ValidationReport` of per-file, per-row issues;
``load_cohort(path)`` returns a :class:`Cohort` with typed tables: dates parsed, ``recorded_at`` filled from
``measured_at``, and ``clinical`` with ``split`` (given, else derived: see :func:`derive_split`) and ``label``
(Int8: 1 for CR/PR, 0 for SD/PD, null when missing).
"""

from ._load import derive_split, load_cohort
from ._model import EXPRESSION_SCALES, NOT_PREDICTORS, Cohort, CohortConfig, CohortIssue, ValidationReport
from ._validate import PATIENT_ID, REQUIRED, RESPONSES, SPLITS, mask_issue, validate_cohort

__all__ = ["EXPRESSION_SCALES", "NOT_PREDICTORS", "PATIENT_ID", "REQUIRED", "RESPONSES", "SPLITS", "Cohort",
           "CohortConfig", "CohortIssue", "ValidationReport", "derive_split", "load_cohort", "mask_issue",
           "validate_cohort"]
