"""An extraction that materialises its encoder inputs (``ExtractConfig.rois="materialise"``): the ROI
tensors the ``LoadWorker`` actors produce for the encoder are also staged as a ``roi_tensors`` version
(``models.materialise_rois``'s feature set), so the first extraction pays only the writes."""

from __future__ import annotations

import pyarrow as pa
import pyarrow.compute as pc

from pipeline.extract._scope import Scope

TENSOR_COLUMNS = ("patient_id", "center", "phases", "roi_box", "input_checksum", "x")


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
