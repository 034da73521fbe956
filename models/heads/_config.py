"""``HeadsConfig``: what ``train_heads(store, config)`` trains; the one place its defaults live."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from dltr.core.exceptions import ModelError
from dltr.core.hashing import from_dict_checked
from dltr.core.vocabulary import DEFAULT_FEATURE_SET, HEADS

from ._clinical import CLINICAL_BOOTSTRAP

#: the fusion heads' inputs (``HeadsConfig.fusion``)
FUSIONS = ("readout", "descriptors", "native")
#: those of them whose fusion heads read measured ROI descriptors (and the encoder's cross-fitting record)
MEASURED_FUSIONS = ("descriptors", "native")


def _check_count(name: str, value: Any, what: str, least: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < least:
        raise ModelError(f"{name} {value!r}: a number of {what} >= {least} expected")


@dataclass(frozen=True)
class HeadsConfig:
    """``feature_set``: NAME or NAME@VERSION; ``clinical`` / ``labs``: candidate predictors (None = the
    clinical columns / lab names among cohort.toml's declared ``predictors``; an undeclared one is refused); ``max_age_days``: the oldest lab value used;
    ``heads``: which heads to train, by name (``dltr.core.vocabulary.HEADS``); ``clinical_selection``: the
    clinical model's variable selection (``ClinicalModel.selection``: "aic", "p", "none" = screening only,
    "all" = every declared predictor); ``deep_rows``: the deep block of non-training rows, "refit" (the refit
    encoder's read-out of the stored embedding) or "fold_ensemble" (the CV fold encoders' mean read-out, needs
    an encoder trained with ``fold_ensemble=True``; rows outside its record get the refit read-out);
    ``fusion``: the inputs of the fusion heads (DLTR_MLP, XGBoost), "descriptors" (the encoder's response
    logit, the ROI descriptors *measured* on each patient's own encoder input, ``models.measure_descriptors``,
    and every declared predictor; needs the encoder's cross-fitting record), "native" (default since session 17,
    adopted on the 10-seed validity benchmark, BENCHMARKS.md: those inputs plus tumour descriptors measured on the
    ingested volumes brought to one resolution, ``native_spacing_mm``: ``models.native_descriptors``)
    or "readout" (the encoder's read-out, i.e. its response logit and its predictions of the ROI descriptors,
    plus the clinical model's selected variables). The clinical and DLTR heads are the same under all three.
    ``native_spacing_mm``: the one voxel size (mm) the native descriptors are measured at (each image is blurred to
    it and resampled), recorded in the fusion heads. None (default): ``models.NATIVE_FLOOR_MM``, 4.5 x 4.5 x 7 mm,
    coarser than clinical liver MRI's usual 1-2 mm in-plane and 2-6 mm slices, raised on each axis to the coarsest
    voxel of the frame's stored images (``models.native_resolution``; voxel sizes are acquisition metadata, and the
    lineage says when the floor was raised). A declared one is kept as given, and a stored image coarser than it is
    refused by name. Either way a patient scored later whose image is coarser than the head's resolution is
    refused. ``native_set``: which of them the fusion heads read (``models.NATIVE_SETS``: "all", or "texture", each
    phase's heterogeneity; opt-in). ``clinical_bootstrap``: bootstrap resamples of the clinical model's selection
    whose inclusion frequencies report its stability (``ClinicalModel.n_bootstrap``; 0 reports none). They change no score, only the frequencies' precision (sd at most 0.5 / sqrt(resamples)).
    ``mlp_members``: DLTR_MLP's seed ensemble, the number of final networks averaged on the logit scale
    (``DLTRMLP.n_members``; 1 = one network). ``ordinal`` (default, adopted on the validity benchmark,
    BENCHMARKS.md): DLTR_MLP learns from the four mRECIST grades of the training rows (``DLTRMLP.ordinal``, the
    cumulative-logit likelihood) instead of the binary objective response; its score is still the probability
    of objective response (CR or PR). False: the binary label, as before. ``mlp_linear`` (default, adopted on the
    validity benchmark): DLTR_MLP's inner CV may also choose a network without a hidden layer (``LINEAR_GRID``: a
    linear model on the same inputs, started at zero so that early stopping shrinks it towards zero) beside the
    widths 16 and 64; False: the hidden-layer widths only, as before."""

    feature_set: str = DEFAULT_FEATURE_SET
    clinical: tuple[str, ...] | None = None
    labs: tuple[str, ...] | None = None
    max_age_days: int | None = None
    seed: int = 0
    heads: tuple[str, ...] = tuple(HEADS)
    clinical_selection: str = "aic"
    deep_rows: str = "refit"
    fusion: str = "native"
    native_spacing_mm: tuple[float, float, float] | None = None
    native_set: str = "all"
    clinical_bootstrap: int = CLINICAL_BOOTSTRAP
    mlp_members: int = 1
    ordinal: bool = True
    mlp_linear: bool = True

    def __post_init__(self) -> None:
        _check_count("clinical_bootstrap", self.clinical_bootstrap, "resamples", 0)
        _check_count("mlp_members", self.mlp_members, "networks", 1)
        if self.native_spacing_mm is not None:
            object.__setattr__(self, "native_spacing_mm", tuple(float(v) for v in self.native_spacing_mm))
            if len(self.native_spacing_mm) != 3 or min(self.native_spacing_mm) <= 0:
                raise ModelError(f"native_spacing_mm {self.native_spacing_mm}: three positive voxel sizes (mm) "
                                 "expected, or None for the default")
        for name in ("clinical", "labs", "heads"):
            v = getattr(self, name)
            if v is not None and not isinstance(v, tuple):
                object.__setattr__(self, name, tuple(v))
        if self.fusion not in FUSIONS:
            raise ModelError(f"fusion {self.fusion!r}: choose among {list(FUSIONS)}")
        from models import NATIVE_SETS

        if self.native_set not in NATIVE_SETS:
            raise ModelError(f"native_set {self.native_set!r}: choose among {list(NATIVE_SETS)}")
        unknown = [h for h in self.heads if h not in HEADS]
        if unknown or not self.heads:
            raise ModelError(f"heads {list(self.heads)}: {unknown or 'none given'}; choose among {list(HEADS)}")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> HeadsConfig:
        return from_dict_checked(cls, d, ModelError)
