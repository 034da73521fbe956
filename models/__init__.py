"""Encoders (torch) and, in ``models.heads``, the response heads.

``build_encoder`` / ``ENCODERS``: the 3D candidates; ``models.training.train_encoder``: CV
selection and refit; ``save_encoder`` / ``load_encoder``: a checkpoint folder <-> (module in eval mode, card).
"""

from models._auxiliary import descriptor_names, roi_descriptors
from models._checkpoint import card_hash, load_encoder, save_encoder
from models.encoders import ENCODERS, Encoder3d, build_encoder

__all__ = ["ENCODERS", "Encoder3d", "build_encoder", "card_hash", "descriptor_names", "load_encoder", "roi_descriptors",
           "save_encoder"]
