"""Encoders (torch) and, in ``models.heads``, the response heads.

``build_encoder`` / ``ENCODERS``: the 3D candidates; ``models.training.train_encoder``: CV
selection and refit; ``load_encoder``: a stored checkpoint -> (module in eval mode, card).
"""

from models._checkpoint import card_hash, load_encoder
from models.encoders import ENCODERS, Encoder3d, build_encoder

__all__ = ["ENCODERS", "Encoder3d", "build_encoder", "card_hash", "load_encoder"]
