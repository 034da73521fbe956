"""Named read/validation errors: each is an ``ImageReadError`` with a short ``code`` that lands in
``ingest/errors.parquet`` next to the file, the manifest row and the one-line reason."""

from __future__ import annotations

from dltr.core.exceptions import ImageReadError


class IngestReadError(ImageReadError):
    """Base of the named per-file errors; ``code`` is the machine-readable name."""

    code = "read_error"


class MissingFileError(IngestReadError):
    code = "missing_file"


class PathOutsideCohortError(IngestReadError):
    code = "path_outside_cohort"


class CorruptFileError(IngestReadError):
    code = "corrupt_file"


class UnsupportedImageError(IngestReadError):
    code = "unsupported_image"


class TooLargeError(IngestReadError):
    code = "too_large"


class NoPixelDataError(IngestReadError):
    code = "no_pixel_data"


class MissingSliceError(IngestReadError):
    code = "missing_slice"


class DuplicateSliceError(IngestReadError):
    code = "duplicate_slice"


class IrregularSpacingError(IngestReadError):
    code = "irregular_spacing"


class InconsistentGeometryError(IngestReadError):
    code = "inconsistent_geometry"


class NonFiniteError(IngestReadError):
    code = "non_finite"


class MaskMismatchError(IngestReadError):
    code = "mask_mismatch"


class EmptyMaskError(IngestReadError):
    code = "empty_mask"
