"""A multi-set frame's blocks as the multi-set heads read them, the deep block cross-fitted.

For a deep feature set made by an encoder of the store, the block is that encoder's read-out scores
(``CrossFit``, the encoder's ``crossfit.npz``, as DLTR_MLP reads it): out-of-fold for the rows the encoder
was trained on, the refit encoder's read-out of the stored embedding for every other row. No head then sees
a deep value computed by an encoder that trained on that row.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from dltr.core.exceptions import ModelError
from dltr.core.layout import StoreLayout, encoder_card, encoder_crossfit

from ._train import CrossFit

__all__ = ["HeadBlocks", "head_blocks"]


@dataclass
class HeadBlocks:
    """A multi-set frame's blocks as the heads read them: ``blocks`` (set -> (N, D)); for a cross-fitted deep
    set, ``crossfit`` (set -> its ``CrossFit``), ``oof_rows`` (set -> rows that got out-of-fold values),
    ``names`` (set -> read-out names) and ``scheme`` (words for the lineage)."""

    blocks: dict[str, np.ndarray]
    crossfit: dict[str, CrossFit]
    oof_rows: dict[str, np.ndarray]
    names: dict[str, list[str]]
    scheme: dict[str, str]


def head_blocks(store, frame, deep: str | None) -> HeadBlocks:
    """The frame's blocks with the deep set ``deep`` cross-fitted (module doc). Refuses a deep set whose
    encoder is in the store's lineage without a cross-fitting record (its training rows would be in-sample)."""
    import json

    blocks, cfs, hits, names, scheme = dict(frame.blocks), {}, {}, {}, {}
    if deep is None:
        return HeadBlocks(blocks, cfs, hits, names, scheme)
    fs = next(f for f in frame.lineage["feature_sets"] if f["name"] == deep)
    card = (fs.get("lineage") or {}).get("encoder_card_hash")
    if not card:
        scheme[deep] = ("embedding: the feature set names no encoder (a producer not trained on this store's "
                        "labels), read as stored")
        return HeadBlocks(blocks, cfs, hits, names, scheme)
    folder = StoreLayout.of(store).encoder(str(card))
    cf = CrossFit.load(encoder_crossfit(folder))
    if cf is None:
        raise ModelError(f"{encoder_crossfit(folder)}: missing; feature set {deep}@{fs['version']} comes from "
                         "an encoder without a cross-fitting record, so its training rows' deep features are "
                         "in-sample; retrain the encoder (`dltr train-encoder`) and re-extract")
    ids = frame.table.column("patient_id").to_pylist()
    blocks[deep], hits[deep] = cf.deep(ids, blocks[deep])
    cfs[deep] = cf
    path = encoder_card(folder)
    ro = (json.loads(path.read_text()).get("crossfit") or {}).get("readout") if path.is_file() else None
    if isinstance(ro, list) and len(ro) == cf.weight.shape[0]:
        names[deep] = [f"{deep}/{n}" for n in ro]
    scheme[deep] = ("cross-fitted: read-out scores of encoder " + str(card) + ", out-of-fold (CV fold encoders) "
                    "for the rows it was trained on, the refit read-out of the stored embedding otherwise")
    return HeadBlocks(blocks, cfs, hits, names, scheme)
