"""The store layout: the one module that spells a path inside a store folder.

Every stage takes a store (a path, a ``StoreLayout`` or a ``FeatureStore``) and asks the layout
where things live; no other module writes ``"volumes.zarr"`` or ``"tables/clinical.parquet"``. The attributes
ingest writes on a patient group are read and written through ``VolumeAttrs`` (typed, one error for a missing one).

::

    STORE/
      volumes.zarr/<patient_id>/<phase>, mask      ingested volumes (pipeline.ingest)
      ingest/studies.parquet, errors.parquet,      ingest tables, the last run's summary,
             intensity_stats.parquet, run.json,    the writer lock and the temporary folder
             .writer.lock, .tmp/
      tables/<name>.parquet                        cohort and result tables (features.FeatureStore)
      features/<name>/<version>/center=<c>/        feature-set versions (part-00000.parquet, embedding.npy);
                                                   _staging/<version>/ while written
      registry.json, catalog.duckdb                the registry (the commit) and the SQL catalog
      encoders/<card_hash>/model.safetensors, model_card.json
      heads/<name>/<version>/head.json + the head's state files
      figures/, report/, logs/
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dltr.core.exceptions import StoreError

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
PARTITION_FILE = "part-00000.parquet"  # one per center=<c>/ folder of a feature-set version
EMBEDDING_MATRIX = "embedding.npy"     # beside it: the same rows' embeddings as one float32 (N, D) array


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


# The attributes ingest writes on a patient group ``volumes.zarr/<patient_id>`` (the key names live here).
@dataclass(frozen=True)
class VolumeAttrs:
    """A patient group's attributes, typed: the one reader of what ``pipeline.ingest`` writes on
    ``volumes.zarr/<patient_id>``. ``where`` names the group in errors; a missing attribute raises
    ``StoreError`` naming the group, the attribute and the fix (re-run ingest).

    ``VolumeAttrs.build(...)`` makes the mapping ingest writes, so writer and readers share the key names."""

    where: str
    raw: Mapping[str, Any]

    @classmethod
    def of(cls, attrs: Mapping[str, Any], where: str | Path) -> VolumeAttrs:
        return cls(str(where), dict(attrs))

    @classmethod
    def read(cls, zarr_json: str | Path) -> VolumeAttrs:
        """From a group's ``zarr.json`` (no zarr import; a missing or unreadable file raises ``StoreError``)."""
        import json

        p = Path(zarr_json)
        try:
            meta = json.loads(p.read_text())
        except (OSError, ValueError) as e:
            raise StoreError(f"{p}: cannot read the group's metadata ({e}); re-run `dltr ingest`") from None
        return cls(str(p.parent), meta.get("attributes", {}))

    @staticmethod
    def build(*, patient_id: str, center: str, phases: Sequence[str], bbox_vox: Sequence[int],
              bbox_world: Sequence[float], spacing: Sequence[float], affine: Sequence[Sequence[float]],
              ingest_config_hash: str, source_sha256: Mapping[str, str], input_sha256: str,
              n_tumour_voxels: int) -> dict[str, Any]:
        """The attribute mapping ingest writes (``source_sha256`` per phase plus ``"mask"``)."""
        return {"patient_id": patient_id, "center": center, "phases": list(phases),
                "bbox_vox": [int(v) for v in bbox_vox], "bbox_world": [float(v) for v in bbox_world],
                "spacing": [float(v) for v in spacing], "affine": [[float(v) for v in row] for row in affine],
                "ingest_config_hash": ingest_config_hash, "source_sha256": dict(source_sha256),
                "input_sha256": input_sha256, "n_tumour_voxels": int(n_tumour_voxels)}

    def _get(self, key: str) -> Any:
        try:
            return self.raw[key]
        except KeyError:
            raise StoreError(f"{self.where}: attribute {key!r} is missing (has {sorted(self.raw)}); the group was "
                             "not written by this version's ingest - re-run `dltr ingest`") from None

    def _values(self, key: str, n: int, cast: type) -> tuple[Any, ...]:
        """Attribute ``key`` as a tuple of ``n`` values of type ``cast``."""
        vals = tuple(cast(v) for v in self._get(key))
        if len(vals) != n:
            raise StoreError(f"{self.where}: {key} {list(vals)} has {len(vals)} values, not {n}; re-run `dltr ingest`")
        return vals

    def get(self, key: str, default: Any = None) -> Any:
        """An attribute that older stores or hand-built ones may lack."""
        return self.raw.get(key, default)

    @property
    def patient_id(self) -> str:
        return str(self._get("patient_id"))

    @property
    def center(self) -> str:
        return str(self._get("center"))

    @property
    def phases(self) -> list[str]:
        return [str(p) for p in self._get("phases")]

    @property
    def bbox_vox(self) -> tuple[int, int, int, int, int, int]:
        """The tumour's voxel box: lower corner (inclusive) then upper corner (exclusive), axis order i, j, k."""
        return self._values("bbox_vox", 6, int)  # type: ignore[return-value]

    @property
    def spacing(self) -> tuple[float, float, float]:
        """Voxel spacing in mm along the array's axes."""
        return self._values("spacing", 3, float)  # type: ignore[return-value]

    @property
    def affine(self) -> list[list[float]]:
        """Voxel index to world (mm, RAS) as a 4 x 4 nested list."""
        return [[float(v) for v in row] for row in self._get("affine")]

    @property
    def source_sha256(self) -> dict[str, str]:
        """The SHA-256 of each phase's source file, and of the mask's under ``"mask"``."""
        return {str(k): str(v) for k, v in self._get("source_sha256").items()}

    @property
    def input_sha256(self) -> str:
        """The hash of every input the group was written from (ingest's skip-if-unchanged key)."""
        return str(self._get("input_sha256"))

    @property
    def ingest_config_hash(self) -> str:
        return str(self._get("ingest_config_hash"))

    @property
    def n_tumour_voxels(self) -> int:
        return int(self._get("n_tumour_voxels"))

    @property
    def bbox_world(self) -> list[float]:
        return [float(v) for v in self._get("bbox_world")]
