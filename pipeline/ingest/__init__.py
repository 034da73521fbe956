"""Ingest: a cohort folder (DICOM, NIfTI, NRRD) into one canonical, chunked Zarr v3 volume store.

Public API
----------
- ``ingest_cohort(cohort_path, store_root, config) -> IngestReport`` (Dask ``LocalCluster`` by
  default, or ``config.scheduler_address``); ``IngestConfig``.
- ``read_image(path) -> Volume``; readers ``ImageReader`` (base), ``NiftiReader``, ``NrrdReader``,
  ``DicomSeriesReader``, ``DicomMultiframeReader``; ``to_canonical``, ``resample``.
- ``intensity_stats`` (out-of-core; percentiles exact for integer volumes, within 2**-12 relative for
  float ones), the named read errors.

Guarantees: a patient's group appears in ``STORE/volumes.zarr`` by one rename, complete or not at all;
re-running skips patients whose source checksums and output config are unchanged and rewrites changed
ones; only the manifest's ``patient_id`` (or its keyed pseudonym) leaves ingest - no DICOM header
attribute other than geometry, pixel values, rescale and StudyDate is read into the store.
"""

from ._config import COMPRESSORS, DEFAULT_CHUNKS, DEFAULT_COMPRESSOR, IngestConfig
from ._dicom import DicomMultiframeReader, DicomSeriesReader
from ._errors import (
    CorruptFileError,
    DuplicateSliceError,
    EmptyMaskError,
    InconsistentGeometryError,
    IngestReadError,
    IrregularSpacingError,
    MaskMismatchError,
    MissingFileError,
    MissingSliceError,
    NonFiniteError,
    NoPixelDataError,
    PathOutsideCohortError,
    TooLargeError,
    UnsupportedImageError,
)
from ._readers import ImageReader, NiftiReader, NrrdReader, read_image, reader_for
from ._run import IngestReport, ingest_cohort
from ._stats import intensity_stats
from ._volume import Volume, resample, to_canonical
from ._writer import compressor_codec

__all__ = [
    "COMPRESSORS", "DEFAULT_CHUNKS", "DEFAULT_COMPRESSOR", "CorruptFileError", "DicomMultiframeReader",
    "DicomSeriesReader", "DuplicateSliceError", "EmptyMaskError", "ImageReader", "InconsistentGeometryError",
    "IngestConfig", "IngestReadError", "IngestReport", "IrregularSpacingError", "MaskMismatchError",
    "MissingFileError", "MissingSliceError", "NiftiReader", "NoPixelDataError", "NonFiniteError", "NrrdReader",
    "PathOutsideCohortError", "TooLargeError", "UnsupportedImageError", "Volume", "compressor_codec", "ingest_cohort",
    "intensity_stats", "read_image", "reader_for", "resample", "to_canonical",
]
