"""Scoring records: ``record=True`` appends the scored patient's features and result to the store's
``scoring_records`` table (``FeatureStore.write_table``; the whole table is rewritten atomically with
the new row appended, so a reader sees the old table or the new one, never a half-written one).

A separate table rather than a feature-set version: feature-set versions are immutable and
content-addressed by their inputs, while scoring records grow one patient at a time.
Columns: record_id, scored_at (UTC), patient_id (the manifest's id from the CLI's cohort folder, or
null for service uploads), center, head, head_version, feature_set, feature_set_version,
encoder_card_hash, preprocess_hash, input_checksum, probability, cutoff, predicted, embedding.
"""

from __future__ import annotations

import datetime as dt
import uuid
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

__all__ = ["RECORDS_TABLE", "append_record", "recorded_patient_id", "records_schema", "store_pseudonymised"]

RECORDS_TABLE = "scoring_records"


def records_schema(dim: int) -> pa.Schema:
    s = pa.string()
    return pa.schema([("record_id", s), ("scored_at", pa.timestamp("us", tz="UTC")), ("patient_id", s),
                      ("center", s), ("head", s), ("head_version", s), ("feature_set", s),
                      ("feature_set_version", s), ("encoder_card_hash", s), ("preprocess_hash", s),
                      ("input_checksum", s), ("probability", pa.float64()), ("cutoff", pa.float64()),
                      ("predicted", pa.int8()), ("embedding", pa.list_(pa.float32(), dim))])


def store_pseudonymised(store_root: str | Path) -> bool:
    """True when the store's cohort tables were registered with a pseudonym key (``store add-cohort
    --pseudonym-key-env``): its patient ids are keyed pseudonyms."""
    from features import FeatureStore

    try:
        lineage = FeatureStore(store_root, create=False).describe("clinical").get("lineage") or {}
    except Exception:  # noqa: BLE001 - a store without a registered clinical table has no keyed ids
        return False
    return bool(lineage.get("pseudonymised"))


def recorded_patient_id(store_root: str | Path, patient_id: str, pseudonym_key: str | None, *,
                        keyed: bool | None = None) -> str:
    """The id a record of ``patient_id`` (a one-patient folder's manifest id) gets: the store's own form of
    it, so that records join the store's tables and no manifest id enters a pseudonymised store. A store
    registered with a pseudonym key records the same keyed pseudonym and needs the key; a store without one
    refuses a key (its ids would no longer join). ``keyed``: ``store_pseudonymised(store_root)`` when the
    caller already knows it."""
    from dltr.core.exceptions import DltrError
    from dltr.core.hashing import pseudonym

    keyed = store_pseudonymised(store_root) if keyed is None else keyed
    if keyed and not pseudonym_key:
        raise DltrError(f"{store_root}: its patient ids are keyed pseudonyms, so a record would carry the "
                        f"manifest's id {patient_id!r} in the clear; give --pseudonym-key-env with the key "
                        "ingest used, or score without --record")
    if pseudonym_key and not keyed:
        raise DltrError(f"{store_root}: its patient ids are not pseudonymised, so a keyed record would not join "
                        "its tables; drop --pseudonym-key-env")
    return pseudonym(patient_id, pseudonym_key)


def append_record(store_root: str | Path, pred: Any, patient_id: str | None, emb: np.ndarray) -> str:
    """Append one record (the caller serialises concurrent appends); returns its record_id."""
    from features import FeatureStore

    store = FeatureStore(store_root)
    schema = records_schema(int(emb.shape[0]))
    rid = uuid.uuid4().hex
    lin = pred.lineage
    row = {"record_id": rid, "scored_at": dt.datetime.now(dt.UTC), "patient_id": patient_id,
           "center": pred.center, "head": lin["head"], "head_version": lin["head_version"],
           "feature_set": lin["feature_set"], "feature_set_version": lin["feature_set_version"],
           "encoder_card_hash": lin["encoder_card_hash"], "preprocess_hash": lin["preprocess_hash"],
           "input_checksum": pred.input_checksum, "probability": pred.probability, "cutoff": pred.cutoff,
           "predicted": pred.predicted, "embedding": emb.astype(np.float32).tolist()}
    new = pa.Table.from_pylist([row], schema=schema)
    if RECORDS_TABLE in store.tables():
        new = pa.concat_tables([store.table(RECORDS_TABLE).cast(schema), new])
    store.write_table(RECORDS_TABLE, new, lineage={"producer": "dltr.scoring", "append": True})
    return rid
