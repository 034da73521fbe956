"""Extraction and the materialised encoder inputs (feature set ``roi_tensors``, ``models.materialise_rois``):
which patients an extraction encodes from current tensors, and (``ExtractConfig.rois="materialise"``) the
tensors the ``LoadWorker`` actors produce for the encoder, staged as a ``roi_tensors`` version during the
run, so the first extraction pays only the writes."""

from __future__ import annotations

import pyarrow as pa
import pyarrow.compute as pc

from pipeline.extract._config import ExtractConfig
from pipeline.extract._scope import Scope

TENSOR_COLUMNS = ("patient_id", "center", "phases", "roi_box", "input_checksum", "x")


def current_tensors(store, scope: Scope, cfg: ExtractConfig, pending: pa.Table):
    """The materialised ROI tensors current for the pending patients (None: read every patient's volumes)."""
    if cfg.rois == "volumes" or cfg.gpus_per_worker > 0 or not pending.num_rows:
        return None
    from models import find_roi_tensors
    from pipeline.loaders import RoiConfig

    want = dict(zip(pending.column("patient_id").to_pylist(), pending.column("input_checksum").to_pylist(),
                    strict=True))
    return find_roi_tensors(store, RoiConfig.from_dict(scope.card["preprocess"]), want)


def open_tensors(store, scope: Scope, pending: pa.Table, hit):
    """(the writer of the ``roi_tensors`` version of the ``pending`` patients, with the current rows of
    ``hit`` staged; or None when that version exists, its reference)."""
    from models import copy_current, tensor_writer
    from pipeline.loaders import RoiConfig

    writer, ref = tensor_writer(store, RoiConfig.from_dict(scope.card["preprocess"]), pending)
    if writer is not None:
        copy_current(writer, hit)
    return writer, ref


def tensor_rows_of(work: pa.Table) -> pa.Table:
    """The tensor-set rows of a result batch with its ``x`` column (patients that failed are left out)."""
    ok = work.filter(pc.invert(pc.is_valid(work.column("error")))).select(list(TENSOR_COLUMNS))
    return ok.rename_columns([*TENSOR_COLUMNS[:-1], "embedding"])


def publish_tensors(writer, failed: bool) -> None:
    """Publish what was staged (``partial`` when patients failed); nothing staged: nothing published."""
    try:
        if writer.done_keys():
            writer.publish(allow_partial=failed)
    finally:
        writer.close()
