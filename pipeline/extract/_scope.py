"""What an extraction covers: the encoder, the studies in scope, the lineage and the version id."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa

from dltr.core.exceptions import ModelError, StoreError
from dltr.core.hashing import content_hash
from dltr.core.layout import ENCODER_CARD, StoreLayout, encoder_card
from models import roi_inputs

PRODUCER = "pipeline.extract"
#: Lineage keys of the device and precision an extraction ran in (``ExtractConfig.numerics``).
NUMERICS_KEYS = ("device", "dtype", "autocast")
CPU_NUMERICS = {"device": "cpu", "dtype": "float32", "autocast": "none"}


def resolve_encoder(store_root: str | Path, encoder: str | Path | None) -> Path:
    """An encoder folder from a path, a card hash in ``STORE/encoders``, or (None) the newest there."""
    root = StoreLayout.of(store_root).encoders
    if encoder is not None:
        for cand in (Path(encoder), root / str(encoder)):
            if encoder_card(cand).is_file():
                return cand
        raise ModelError(f"encoder {str(encoder)!r}: neither a folder with {ENCODER_CARD} nor a card hash "
                         f"under {root}; run `dltr train-encoder` or give the checkpoint folder")
    cards = sorted(root.glob(f"*/{ENCODER_CARD}"), key=lambda p: (p.stat().st_mtime, p.parent.name)) \
        if root.is_dir() else []
    if not cards:
        raise ModelError(f"{root}: no encoder checkpoint; run `dltr train-encoder --store "
                         f"{Path(store_root)}` or pass --encoder")
    return cards[-1].parent


def read_card(encoder_dir: Path) -> dict[str, Any]:
    card = json.loads(encoder_card(encoder_dir).read_text())
    for key in ("card_hash", "preprocess", "embed_dim"):
        if key not in card:
            raise ModelError(f"{encoder_card(encoder_dir)}: field {key!r} missing; the card does not "
                             "follow docs/architecture.md (retrain the encoder)")
    return card


@dataclass
class Scope:
    """The studies of one extraction, its lineage and version id, and studies that cannot be in it."""

    name: str
    encoder_dir: Path
    card: dict[str, Any]
    table: pa.Table
    lineage: dict[str, str]
    version_id: str
    producer: str = PRODUCER
    excluded: list[dict[str, Any]] = field(default_factory=list)

    @property
    def embed_dim(self) -> int:
        return int(self.card["embed_dim"])


def build_scope(store, store_root: str | Path, encoder: str | Path | None, name: str,
                numerics: dict[str, str] | None = None) -> Scope:
    from pipeline.loaders import RoiConfig

    store_root = Path(store_root)
    enc = resolve_encoder(store_root, encoder)
    card = read_card(enc)
    roi = RoiConfig.from_dict(card["preprocess"])
    table, excluded = roi_inputs(store, store_root, roi)
    if not table.num_rows:
        raise StoreError(f"{store_root}: no study has all phases {list(roi.phases)} of encoder "
                         f"{card['card_hash']}; ingest them first")
    lineage = {"encoder_card_hash": str(card["card_hash"]), "preprocess_hash": roi.content_hash(),
               "inputs_hash": content_hash(sorted(table.column("input_checksum").to_pylist())),
               **{k: str((numerics or CPU_NUMERICS)[k]) for k in NUMERICS_KEYS}}
    version_id = content_hash({"name": name, "producer": PRODUCER, "lineage": lineage})
    return Scope(name, enc, card, table, lineage, version_id, PRODUCER, excluded)
