"""``RoiConfig``: the recipe that turns a stored study into an encoder input tensor.

Its ``content_hash`` is the ``preprocess_hash`` of every feature set made with it, so every
field that changes the output tensor lives here and nothing else does.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from dltr.core.exceptions import ModelError
from dltr.core.hashing import content_hash, from_dict_checked

# (32, 32, 16): a 3-phase ROI of 16k voxels per channel. It keeps a three-candidate,
# three-fold encoder selection inside a few minutes on 2 CPU cores, keeps the synthetic
# tumours (10-25 voxels across) at about native in-plane resolution, and halves Z because
# MRI slices are 2-5x thicker than the in-plane pixel size. Raise it on a GPU host.
DEFAULT_GRID = (32, 32, 16)
# "image": prospective-safe, each image standardised on its own reference region (default);
# "ratio": prospective-safe, each image as its relative signal to its own reference region;
# "zscore": per-center statistics from ingest (transductive: a new center's own images are needed first);
# "none": raw intensities.
NORMALISATIONS = ("image", "ratio", "zscore", "none")
TRANSDUCTIVE_NORMALISATIONS = ("zscore",)
#: modes whose statistics come from the image's own reference region (read with the mask)
PER_IMAGE_NORMALISATIONS = ("image", "ratio")


@dataclass(frozen=True)
class RoiConfig:
    """How to cut, resample and normalise the tumour ROI.

    - ``phases``: the image arrays stacked as channels, in this order.
    - ``grid``: (X, Y, Z) voxels of the encoder input; the ROI box is stretched to it
      per axis (trilinear, sample points at voxel centres, align_corners=False).
    - ``margin``: fraction of the tumour box extent added on each side (rounded up to voxels).
    - ``min_extent_mm``: each box axis spans at least this many mm (grown symmetrically).
    - ``normalisation``: ``"image"`` (default, prospective-safe) standardises each phase of each
      image on its own reference region: the voxels of the read box outside the tumour mask (the
      peritumoral liver), location = median, scale = interquartile range / 1.349 (robust to air or
      vessels at the box's edge), the way WhiteStripe standardises brain MRI on normal-appearing
      white matter (Shinohara et al., NeuroImage Clin 2014). Nothing is fitted on any center, so a
      patient from a center never seen is scored exactly like a training patient.
      ``"ratio"`` (prospective-safe) reads each phase as its signal relative to the same reference
      region, ``x / median - 1`` (0 = the surrounding liver, 1 = twice as bright): the lesion-to-liver
      ratio and relative enhancement of liver MRI, invariant to the scanner's arbitrary gain and, unlike
      ``"image"``, not divided by the reference's spread, which is noise and texture rather than tissue
      contrast (a reference median <= 0 falls back to ``"image"``'s scale for that phase).
      ``"zscore"`` (opt-in, *transductive*) z-scores per phase with the ingest statistics (``mean``,
      ``std`` of ``ingest/intensity_stats.parquet``) of the patient's center, phase and
      ``norm_region``: an external center's numbers then depend on having its images at ingest.
      ``"none"`` keeps raw intensities.
    - Padding: voxels of the box outside the volume read as 0 *after* normalisation (the
      reference location: the image's reference median, or the center's mean); trilinear samples next to the border blend towards it
      (scipy ``map_coordinates(mode="grid-constant", cval=0)``).
    - ``mask_channel``: append the tumour mask, resampled like the images (trilinear, so a soft 0-1
      boundary), as one more input channel after the phases: the encoder sees where the tumour ends
      instead of inferring it from intensity (off by default; intensity augmentation never touches it).
    """

    phases: tuple[str, ...] = ("arterial", "portal", "delayed")
    grid: tuple[int, int, int] = DEFAULT_GRID
    margin: float = 0.25
    min_extent_mm: float = 20.0
    normalisation: str = "image"
    norm_region: str = "body"
    mask_channel: bool = False

    def __post_init__(self) -> None:
        object.__setattr__(self, "phases", tuple(str(p) for p in self.phases))
        object.__setattr__(self, "grid", tuple(int(g) for g in self.grid))
        if not self.phases or len(set(self.phases)) != len(self.phases):
            raise ModelError(f"RoiConfig.phases {self.phases!r}: give one or more distinct phase names")
        if len(self.grid) != 3 or min(self.grid) < 1:
            raise ModelError(f"RoiConfig.grid {self.grid!r}: give three positive voxel counts (X, Y, Z)")
        if not self.margin >= 0 or not self.min_extent_mm >= 0:
            raise ModelError(
                f"RoiConfig margin={self.margin!r}, min_extent_mm={self.min_extent_mm!r}: must be >= 0")
        if self.normalisation not in NORMALISATIONS:
            raise ModelError(
                f"RoiConfig.normalisation {self.normalisation!r}: choose one of {NORMALISATIONS}")

    @property
    def transductive(self) -> bool:
        """True when a patient's input depends on statistics of its center's other images."""
        return self.normalisation in TRANSDUCTIVE_NORMALISATIONS

    @property
    def per_image(self) -> bool:
        """True when each image is normalised on its own reference region (needs the mask at read)."""
        return self.normalisation in PER_IMAGE_NORMALISATIONS

    @property
    def n_channels(self) -> int:
        """Channels of the encoder input: the phases, then the mask when ``mask_channel``."""
        return len(self.phases) + int(self.mask_channel)

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["phases"], d["grid"] = list(self.phases), list(self.grid)
        if not self.mask_channel:  # added later: left out at its default, so earlier preprocessing hashes hold
            del d["mask_channel"]
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> RoiConfig:
        return from_dict_checked(cls, d, ModelError)

    def content_hash(self) -> str:
        return content_hash(self.to_dict())
