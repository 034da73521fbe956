"""Distributed deep-feature extraction: plain Ray actors (DALI ROI pipeline + DLTR encoder, ``_ray_job``)
stream their blocks of patients back -> feature set; patients with current materialised ROI tensors go through
encoder actors that read the tensors (``_tensor_job``), no volume decoded.

``extract_features`` runs on an embedded local Ray or a cluster (``ExtractConfig.address``) and
publishes one version of the ``dltr`` feature set (docs/architecture.md, "Feature rows");
``extract_local`` is the single-process reference with the same loader and encoder.
"""

from models import input_checksum, studies_table
from pipeline.actors import ray_session
from pipeline.extract._config import ExtractConfig, ExtractReport
from pipeline.extract._driver import ERRORS_TABLE, clean_committed_staging, extract_features, extract_local
from pipeline.extract._scope import resolve_encoder

__all__ = ["ERRORS_TABLE", "ExtractConfig", "ExtractReport", "clean_committed_staging", "extract_features",
           "extract_local", "input_checksum", "ray_session", "resolve_encoder", "studies_table"]
