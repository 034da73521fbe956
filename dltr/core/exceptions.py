"""Typed errors shared by every stage.

A message names the thing, the rule, the value received and the fix, in one
line: ``clinical.csv row 14: tace_date '2021-13-02' is not an ISO date (YYYY-MM-DD)``.
The CLI prints ``str(error)`` and exits non-zero; ``--debug`` adds the traceback.
"""

from __future__ import annotations


class DltrError(Exception):
    """Base class of every error this project raises on purpose."""

    exit_code = 2


class CohortError(DltrError, ValueError):
    """The cohort folder breaks the cohort contract (shared/spec/cohort.md)."""


class ImageReadError(DltrError, ValueError):
    """An image or mask file cannot be decoded, or its geometry is unusable."""


class IngestError(DltrError, RuntimeError):
    """Ingest failed as a whole (``--strict``, no sound patient, store unusable)."""


class InvalidReferenceError(DltrError, ValueError):
    """A ``NAME@VERSION`` reference (feature set or head) that does not parse."""


class StoreError(DltrError, RuntimeError):
    """The feature store refused an operation (bad rows, unknown version, ...)."""


class StoreLockedError(StoreError):
    """Another writer holds the store's write lock."""


class ReadOnlyQueryError(StoreError, PermissionError):
    """A statement that writes was sent to a read-only SQL session."""


class ModelError(DltrError, RuntimeError):
    """An encoder or head cannot be trained, loaded or applied."""


class MissingDependencyError(DltrError, ImportError):
    """An optional runtime (DALI, a GPU, Chromium) the command needs is absent."""


class DltrWarning(UserWarning):
    """Base class of the statistical and data caveats this project warns about."""


class ApproximationWarning(DltrWarning):
    """A statistic was computed with a fallback or approximation (ties, tiny groups)."""
