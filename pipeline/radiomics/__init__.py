"""Radiomics as a second feature producer: IBSI features (pyradiomics) per patient and phase.

``extract_radiomics(store, settings, RadiomicsConfig(...))`` reads the ingested volumes and tumour
masks, computes the recipe's features on Ray actors (or in one process, ``backend="local"``), and
publishes the feature set ``radiomics`` (embedding = features of every phase, names in the lineage;
SQL view ``radiomics_long``), then the center-effect table ``radiomics_center_effect``.
``load_settings(path)`` reads a pyradiomics parameter file; its content hash is the preprocess hash.
"""

from pipeline.radiomics._compute import FEATURE_NAME_PARTS, extractor, patient_vector, probe_names, sitk_image
from pipeline.radiomics._driver import (
    CENTER_EFFECT_TABLE,
    ERRORS_TABLE,
    PRODUCER,
    RadiomicsConfig,
    RadiomicsReport,
    extract_radiomics,
    write_center_effect,
)
from pipeline.radiomics._settings import (
    RadiomicsSettings,
    default_settings_path,
    library_version,
    load_settings,
)
from pipeline.radiomics._worker import RadiomicsWorker

__all__ = ["CENTER_EFFECT_TABLE", "ERRORS_TABLE", "FEATURE_NAME_PARTS", "PRODUCER", "RadiomicsConfig",
           "RadiomicsReport", "RadiomicsSettings", "RadiomicsWorker", "default_settings_path", "extract_radiomics",
           "extractor",
           "library_version", "load_settings", "patient_vector", "probe_names", "sitk_image", "write_center_effect"]
