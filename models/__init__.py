"""Encoders (torch) and, in ``models.heads``, the response heads.

``build_encoder`` / ``ENCODERS``: the 3D candidates; ``models.training.train_encoder``: CV
selection and refit; ``save_encoder`` / ``load_encoder``: a checkpoint folder <-> (module in eval mode, card);
``materialise_rois`` / ``find_roi_tensors``: the encoder-input tensors as feature set ``roi_tensors``;
``measure_descriptors`` (on the encoder grid) and ``native_descriptors`` (on the volumes, at one declared resolution):
label-free tumour descriptors that the fusion heads read.
"""

from models._auxiliary import descriptor_names, measure_descriptors, roi_descriptors
from models._checkpoint import card_hash, load_encoder, save_encoder
from models._native import (
    COARSER_TOLERANCE,
    NATIVE_FLOOR_MM,
    NATIVE_SETS,
    in_native_set,
    measure_native,
    native_descriptor_names,
    native_descriptors,
    native_resolution,
)
from models._roi_tensors import (
    ROI_TENSORS,
    MaterialiseReport,
    RoiTensorHit,
    copy_current,
    find_roi_tensors,
    input_checksum,
    materialise_rois,
    roi_inputs,
    studies_table,
    tensor_rows,
    tensor_writer,
)
from models.encoders import ENCODERS, Encoder3d, build_encoder

__all__ = ["COARSER_TOLERANCE", "ENCODERS", "NATIVE_FLOOR_MM", "NATIVE_SETS", "ROI_TENSORS", "Encoder3d", "MaterialiseReport", "RoiTensorHit", "build_encoder", "card_hash",
           "copy_current", "descriptor_names", "measure_descriptors", "find_roi_tensors", "input_checksum", "load_encoder", "materialise_rois", "roi_descriptors",
           "in_native_set", "measure_native", "native_descriptor_names", "native_descriptors", "native_resolution",
           "roi_inputs", "save_encoder", "studies_table", "tensor_rows", "tensor_writer"]
