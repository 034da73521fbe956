"""Zarr store -> encoder input tensors: the DALI pipeline and its NumPy reference.

``RoiConfig`` is the recipe; ``reference_roi`` / ``ReferenceRoiDataset`` the ground truth and
baseline; ``DaliRoiPipeline`` (reusable, batch in / tensor out) and ``DaliRoiLoader`` (PyTorch
iterator, sharded) the fast path. See docs/architecture.md, "Loader API".
"""

from pipeline.loaders._augment import AugmentConfig
from pipeline.loaders._config import DEFAULT_GRID, NORMALISATIONS, PER_IMAGE_NORMALISATIONS, RoiConfig
from pipeline.loaders._dali import DaliRoiLoader, DaliRoiPipeline, dali_available
from pipeline.loaders._reference import ReferenceRoiDataset, RoiSample, reference_roi, transform_crop
from pipeline.loaders._roi import RoiReader, read_box, requested_box

__all__ = [
    "DEFAULT_GRID",
    "NORMALISATIONS",
    "PER_IMAGE_NORMALISATIONS",
    "AugmentConfig",
    "DaliRoiLoader",
    "DaliRoiPipeline",
    "ReferenceRoiDataset",
    "RoiConfig",
    "RoiReader",
    "RoiSample",
    "dali_available",
    "read_box",
    "reference_roi",
    "requested_box",
    "transform_crop",
]
