"""What an extraction covers: the encoder, the studies in scope, the lineage and the version id."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from dltr.core.exceptions import ModelError, StoreError
from dltr.core.hashing import content_hash
from dltr.core.layout import ENCODER_CARD, StoreLayout, encoder_card

PRODUCER = "pipeline.extract"
#: Lineage keys of the device and precision an extraction ran in (``ExtractConfig.numerics``).
NUMERICS_KEYS = ("device", "dtype", "autocast")
CPU_NUMERICS = {"device": "cpu", "dtype": "float32", "autocast": "none"}
SCOPE_SCHEMA = pa.schema([("patient_id", pa.string()), ("center", pa.string()),
                          ("phases", pa.list_(pa.string())), ("input_checksum", pa.string()),
                          ("itemsize", pa.int32())])


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


def studies_table(store, store_root: Path) -> pa.Table:
    """The registered ``studies`` table, else the ingest's own studies table (before ``store add-cohort``)."""
    try:
        return store.table("studies")
    except (StoreError, KeyError, FileNotFoundError):
        path = StoreLayout.of(store_root).studies
        if not path.is_file():
            raise StoreError(f"{store_root}: no studies table (neither registered nor {path}); run "
                             "`dltr ingest` and `dltr store add-cohort`") from None
        return pq.read_table(path)


def input_checksum(phase_sha: dict[str, str], mask_sha: str) -> str:
    """Hash of the source checksums of the phases (in encoder order) and the mask."""
    return content_hash({"phases": [[p, s] for p, s in phase_sha.items()], "mask": mask_sha}, length=32)


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
    studies = studies_table(store, store_root).to_pylist()
    by_pid: dict[str, dict[str, Any]] = {}
    for r in studies:
        if r.get("status", "ok") != "ok":
            continue
        d = by_pid.setdefault(str(r["patient_id"]), {"center": str(r["center"]), "phase": {}, "mask": None,
                                                      "itemsize": 2})
        d["phase"][str(r["phase"])] = str(r["source_sha256"])
        d["mask"] = d["mask"] or r.get("mask_sha256")
        if r.get("dtype"):
            d["itemsize"] = int(np.dtype(str(r["dtype"])).itemsize)
    rows, excluded = [], []
    for pid in sorted(by_pid):
        d = by_pid[pid]
        missing = [p for p in roi.phases if p not in d["phase"]]
        if missing or not d["mask"]:
            excluded.append({"patient_id": pid, "center": d["center"], "stage": "scope",
                             "reason": f"studies table has no ok row for phase(s) {missing or ['mask']}"})
            continue
        rows.append({"patient_id": pid, "center": d["center"], "phases": list(roi.phases),
                     "input_checksum": input_checksum({p: d["phase"][p] for p in roi.phases}, d["mask"]),
                     "itemsize": d["itemsize"]})
    if not rows:
        raise StoreError(f"{store_root}: no study has all phases {list(roi.phases)} of encoder "
                         f"{card['card_hash']}; ingest them first")
    table = pa.Table.from_pylist(rows, schema=SCOPE_SCHEMA)
    lineage = {"encoder_card_hash": str(card["card_hash"]), "preprocess_hash": roi.content_hash(),
               "inputs_hash": content_hash(sorted(r["input_checksum"] for r in rows)),
               **{k: str((numerics or CPU_NUMERICS)[k]) for k in NUMERICS_KEYS}}
    version_id = content_hash({"name": name, "producer": PRODUCER, "lineage": lineage})
    return Scope(name, enc, card, table, lineage, version_id, PRODUCER, excluded)
