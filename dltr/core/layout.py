"""The store layout: the one module that spells a path inside a store folder.

Every stage takes a store (a path, a ``StoreLayout`` or a ``FeatureStore``) and asks the layout
where things live; no other module writes ``"volumes.zarr"`` or ``"tables/clinical.parquet"``.

::

    STORE/
      volumes.zarr/<patient_id>/<phase>, mask      ingested volumes (pipeline.ingest)
      ingest/studies.parquet, errors.parquet,      ingest tables, the last run's summary,
             intensity_stats.parquet, run.json,    the writer lock and the temporary folder
             .writer.lock, .tmp/
      tables/<name>.parquet                        cohort and result tables (features.FeatureStore)
      features/<name>/<version>/center=<c>/        feature-set versions; _staging/<version>/ while written
      registry.json, catalog.duckdb                the registry (the commit) and the SQL catalog
      encoders/<card_hash>/model.safetensors, model_card.json
      heads/<name>/<version>/head.json + the head's state files
      figures/, report/, logs/
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

#: File names inside a folder the layout points at (an encoder checkpoint, a head version, a lock).
ENCODER_WEIGHTS = "model.safetensors"
ENCODER_CARD = "model_card.json"
ENCODER_CROSSFIT = "crossfit.npz"
HEAD_META = "head.json"
HEAD_STATE = "state.json"          # a head's JSON state (models.heads registry; no pickle)
HEAD_TENSORS = "state.safetensors"  # a head's array state (the MLP's weights)
LOCK_NAME = ".writer.lock"
STAGING = "_staging"
VERSION_ENTRY = "version.json"


@dataclass(frozen=True)
class StoreLayout:
    """Paths of one store folder. ``StoreLayout.of(x)`` accepts a path, a layout or any object with a
    ``layout`` attribute (``features.FeatureStore``)."""

    root: Path

    def __post_init__(self) -> None:
        object.__setattr__(self, "root", Path(self.root))

    @classmethod
    def of(cls, store: Any) -> StoreLayout:
        if isinstance(store, StoreLayout):
            return store
        layout = getattr(store, "layout", None)
        if isinstance(layout, StoreLayout):
            return layout
        return cls(Path(store))

    # volumes (pipeline.ingest)
    @property
    def volumes(self) -> Path:
        return self.root / "volumes.zarr"

    def volume_group(self, patient_id: str) -> Path:
        return self.volumes / patient_id

    def volume_attrs(self, key: str) -> Path:
        """The zarr v3 metadata file of a group or array (``key`` relative to ``volumes``)."""
        return self.volumes / key / "zarr.json"

    # ingest tables
    @property
    def ingest(self) -> Path:
        return self.root / "ingest"

    @property
    def studies(self) -> Path:
        return self.ingest / "studies.parquet"

    @property
    def ingest_errors(self) -> Path:
        return self.ingest / "errors.parquet"

    @property
    def intensity_stats(self) -> Path:
        return self.ingest / "intensity_stats.parquet"

    @property
    def ingest_run(self) -> Path:
        return self.ingest / "run.json"

    @property
    def ingest_tmp(self) -> Path:
        return self.ingest / ".tmp"

    # tables and feature sets (features)
    @property
    def tables(self) -> Path:
        return self.root / "tables"

    def table(self, name: str) -> Path:
        return self.tables / f"{name}.parquet"

    @property
    def features(self) -> Path:
        return self.root / "features"

    def feature_set(self, name: str) -> Path:
        return self.features / name

    def feature_version(self, name: str, version: str) -> Path:
        return self.feature_set(name) / version

    def feature_version_entry(self, name: str, version: str) -> Path:
        """A version's registry entry, written into its folder before the commit (immutable)."""
        return self.feature_version(name, version) / VERSION_ENTRY

    def feature_staging(self, name: str, version: str | None = None) -> Path:
        base = self.feature_set(name) / STAGING
        return base if version is None else base / version

    @property
    def registry(self) -> Path:
        return self.root / "registry.json"

    @property
    def catalog(self) -> Path:
        return self.root / "catalog.duckdb"

    # models
    @property
    def encoders(self) -> Path:
        return self.root / "encoders"

    def encoder(self, card_hash: str) -> Path:
        return self.encoders / card_hash

    @property
    def heads(self) -> Path:
        return self.root / "heads"

    def head(self, name: str, version: str) -> Path:
        return self.heads / name / version

    # outputs
    @property
    def figures(self) -> Path:
        return self.root / "figures"

    @property
    def report(self) -> Path:
        return self.root / "report"

    @property
    def logs(self) -> Path:
        return self.root / "logs"

    @property
    def ray_log(self) -> Path:
        """What an embedded or joined Ray prints while a command runs (pipeline.extract)."""
        return self.logs / "ray.log"


def encoder_card(folder: str | Path) -> Path:
    """The model card of an encoder checkpoint folder (inside a store or not)."""
    return Path(folder) / ENCODER_CARD


def encoder_weights(folder: str | Path) -> Path:
    return Path(folder) / ENCODER_WEIGHTS


def encoder_crossfit(folder: str | Path) -> Path:
    """The encoder's cross-fitting record (out-of-fold read-out scores of its training rows, refit read-out)."""
    return Path(folder) / ENCODER_CROSSFIT
