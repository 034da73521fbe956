"""The test-data kit: every test builds its data here (conftest.py turns the shared ones into fixtures).

- ``kit.images``: ``image_cohort`` (a three-center cohort folder: NIfTI in two orientations, NRRD masks,
  DICOM series written by pydicom, with geometry truth), ``nifti_cohort`` (a cohort from arrays given in
  code), ``write_dicom_series``, ``region_values`` (the numpy reference of the ingest statistics);
- ``kit.roi_store``: ``roi_store`` (a volume store written directly, for loader and encoder tests);
- ``kit.tables``: ``clinical_tables`` (clinical and lab tables in code, with planted late-recorded labs);
- ``kit.scoring``: ``build_demo`` (a trained tiny store; the session fixture ``scoring_demo``),
  ``one_patient_cohort``;
- ``kit.crash``: the kill harness (``KillSwitch``, ``fork_call``, store snapshots and checks);
- ``SHARED_DATA``: the real public files beside the checkout (``../shared/data``); ``shared_file`` fails,
  never skips, when one is missing, since CI always has them.
"""

from __future__ import annotations

from pathlib import Path

SHARED_DATA = Path(__file__).resolve().parents[3] / "shared" / "data"


def shared_file(relative: str) -> Path:
    """A file under ``../shared/data``; a missing one is a failure with the path and the fix."""
    import pytest

    path = SHARED_DATA / relative
    if not path.exists():
        pytest.fail(f"{path}: real test data missing; the checkout needs ../shared/data beside it (see README)")
    return path
