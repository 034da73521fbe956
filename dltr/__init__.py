"""dltr: a feature-store pipeline for MRI deep learning in hepatocellular carcinoma.

The stages live in their own top-level packages (``pipeline``, ``features``,
``models``, ``analysis``) and meet only in the store and the cohort contract
(:mod:`dltr.cohort`). This package holds what every stage shares: the cohort
contract, the synthetic cohort, typed errors, hashing and the CLI.
"""

__version__ = "0.1.0"
__all__ = ["__version__"]
