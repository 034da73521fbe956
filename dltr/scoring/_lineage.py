"""Everything a single-patient score needs, looked up from the head's lineage (never re-specified).

head ``STORE/heads/<name>/<version>/head.json`` -> feature-set version (registry) -> encoder card
(``encoder_card_hash``) -> ``RoiConfig`` (the card's ``preprocess``, checked against the version's
``preprocess_hash``) -> ingest output config (``ingest/run.json``, checked against the
``ingest_config_hash`` the feature set's volumes carry) -> intensity statistics of the training
ingest (``ingest/intensity_stats.parquet``).
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq

from dltr.core.exceptions import ModelError, StoreError
from dltr.core.layout import StoreLayout, VolumeAttrs, encoder_card
from dltr.core.vocabulary import PRIMARY_HEAD, parse_ref

__all__ = ["ScoringLineage", "resolve_lineage"]

_INGEST_OUTPUT_FIELDS = ("target_spacing", "chunks", "compressor", "max_voxels")


@dataclass(frozen=True)
class ScoringLineage:
    """The resolved recipe of one registered head (``to_dict`` is the lineage a prediction reports)."""

    head: str
    head_version: str
    feature_set: str
    feature_set_version: str
    encoder_card_hash: str
    preprocess_hash: str
    preprocess: dict[str, Any]
    ingest_config: dict[str, Any]
    ingest_config_hash: str
    clinical: tuple[str, ...]          # clinical-table columns of the training frame
    labs: tuple[str, ...]              # lab names of the training frame (columns lab_<name>)
    max_age_days: int | None
    clinical_selected: tuple[str, ...]  # variables the clinical block actually uses
    cutoff: float

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        for k in ("clinical", "labs", "clinical_selected"):
            d[k] = list(d[k])
        return d


def _ingest_config(store_root: Path, volume_hash: str | None) -> tuple[dict[str, Any], str]:
    from pipeline.ingest import IngestConfig

    run = StoreLayout.of(store_root).ingest_run
    if not run.is_file():
        raise StoreError(f"{run}: missing; the store's ingest configuration is unknown (run `dltr ingest`)")
    cfg = json.loads(run.read_text()).get("config", {})
    kw = {k: cfg[k] for k in _INGEST_OUTPUT_FIELDS if k in cfg and cfg[k] is not None}
    if "target_spacing" in kw:
        kw["target_spacing"] = tuple(kw["target_spacing"])
    out = IngestConfig(**kw)
    if volume_hash is not None and out.output_hash() != volume_hash:
        raise StoreError(f"{run}: ingest output config hash {out.output_hash()} differs from the "
                         f"ingest_config_hash {volume_hash} of the feature set's volumes; the last ingest run "
                         "used other settings - re-run `dltr ingest` with the training settings")
    return {k: v for k, v in out.to_dict().items() if k in _INGEST_OUTPUT_FIELDS}, out.output_hash()


def _volume_config_hash(store_root: Path, patient_id: str) -> str | None:
    p = StoreLayout.of(store_root).volume_attrs(patient_id)
    if not p.is_file():
        return None
    return VolumeAttrs.read(p).get("ingest_config_hash")


def resolve_lineage(store_root: str | Path, head: str = PRIMARY_HEAD) -> tuple[ScoringLineage, Any]:
    """(the lineage of ``head`` (NAME or NAME@VERSION), the loaded head object)."""
    from features import FeatureStore
    from models.heads import HeadRegistry
    from pipeline.loaders import RoiConfig

    store_root = Path(store_root)
    name, version = parse_ref(head, what="head")
    fh, meta = HeadRegistry(store_root).load(name, version)
    lin = meta["lineage"]
    store = FeatureStore(store_root, create=False)
    fsv = store.resolve(f"{lin['feature_set']}@{lin['feature_set_version']}")
    card_hash, pre_hash = fsv.lineage.get("encoder_card_hash"), fsv.lineage.get("preprocess_hash")
    card_path = encoder_card(StoreLayout.of(store_root).encoder(str(card_hash)))
    if not card_path.is_file():
        raise ModelError(f"{card_path}: encoder {card_hash} of feature set {fsv.ref} is not in the store")
    card = json.loads(card_path.read_text())
    roi = RoiConfig.from_dict(card["preprocess"])
    if roi.content_hash() != pre_hash:
        raise ModelError(f"{card_path}: preprocess hash {roi.content_hash()} differs from the feature set's "
                         f"preprocess_hash {pre_hash}; the store is inconsistent - re-run `dltr extract`")
    one = store.read(fsv.ref, columns=["patient_id"]).column("patient_id")[0].as_py()
    ingest_cfg, ingest_hash = _ingest_config(store_root, _volume_config_hash(store_root, one))
    labs = tuple(lin.get("labs") or ())
    clinical = tuple(c for c in lin.get("clinical_candidates", []) if not c.startswith("lab_"))
    lineage = ScoringLineage(
        head=name, head_version=meta["version"], feature_set=fsv.name, feature_set_version=fsv.version_id,
        encoder_card_hash=str(card_hash), preprocess_hash=str(pre_hash), preprocess=roi.to_dict(),
        ingest_config=ingest_cfg, ingest_config_hash=ingest_hash, clinical=clinical, labs=labs,
        max_age_days=lin.get("max_age_days"),
        clinical_selected=tuple(lin.get("clinical_selected") or ()) if _uses_clinical(fh) else (),
        cutoff=float(meta["cutoff"]))
    return lineage, fh


def _uses_clinical(fh: Any) -> bool:
    return getattr(fh, "name", None) == "clinical" or getattr(fh, "clinical", None) is not None


def training_stats(store_root: str | Path) -> Any:
    """The training ingest's intensity statistics (Arrow table)."""
    path = StoreLayout.of(store_root).intensity_stats
    if not path.is_file():
        raise StoreError(f"{path}: missing; scoring normalises with the training ingest's statistics")
    return pq.read_table(path)
