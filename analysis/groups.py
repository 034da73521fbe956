"""Evaluation groups: ``training`` (split train), ``internal`` (split internal) and one
``external <center>`` per external center, each a boolean mask over the rows of a table that has
``split`` and ``center`` columns (the vocabulary is ``dltr.core.vocabulary``)."""

from __future__ import annotations

import numpy as np
import pandas as pd

from dltr.core.vocabulary import EXTERNAL, INTERNAL, TRAINING, external_group

__all__ = ["evaluation_groups", "labelled_groups"]


def evaluation_groups(table: pd.DataFrame, usable: np.ndarray, *, pooled: bool = False) -> dict[str, np.ndarray]:
    """Group name -> mask of the ``usable`` rows in that group; empty groups are left out.

    ``pooled=True`` adds ``external (pooled)`` when there are several external centers."""
    split = table["split"].astype(str).to_numpy()
    center = table["center"].astype(str).to_numpy()
    out = {TRAINING: usable & (split == "train"), INTERNAL: usable & (split == "internal")}
    ext = sorted(set(center[split == "external"]))
    for c in ext:
        out[external_group(c)] = usable & (split == "external") & (center == c)
    if pooled and len(ext) > 1:
        out[f"{EXTERNAL} (pooled)"] = usable & (split == "external")
    return {k: v for k, v in out.items() if v.any()}


def labelled_groups(scores: pd.DataFrame) -> dict[str, np.ndarray]:
    """Evaluation group -> mask of its rows that have a label (a ``scores`` table)."""
    return evaluation_groups(scores, scores["label"].notna().to_numpy())
