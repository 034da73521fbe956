"""The words every stage shares, each with one meaning.

- a *study* is one (patient, phase) image; a *patient* is a patient (extraction counts patients);
- an *evaluation group* is ``training`` / ``internal`` / ``external <center>``; a *cohort* is only the
  input folder (``../shared/spec/cohort.md``);
- a *head* is a response model on top of the frame, named by ``HEADS`` and shown by ``display_name``;
- a *reference* ``NAME@VERSION`` names a feature set or head version (``parse_ref``).
"""

from __future__ import annotations

from dltr.core.exceptions import InvalidReferenceError

#: The default deep feature set (the DLTR encoder's embeddings).
DEFAULT_FEATURE_SET = "dltr"

#: Head names, in the paper's order, and how reports show them.
CLINICAL, DLTR, DLTR_MLP, XGB_FUSION = "clinical", "dltr", "dltr_mlp", "xgb_fusion"
HEADS: dict[str, str] = {CLINICAL: "Clinical", DLTR: "DLTR", DLTR_MLP: "DLTR_MLP", XGB_FUSION: "XGBoost fusion"}
#: Heads on several feature sets (models.heads.train_multi_heads): radiomics, radiomics + clinical,
#: deep + radiomics + clinical; shown after the paper's heads.
RADIOMICS, RADIOMICS_CLINICAL, DEEP_RADIOMICS_CLINICAL = "radiomics", "radiomics_clinical", "deep_radiomics_clinical"
MULTI_HEADS: dict[str, str] = {RADIOMICS: "Radiomics", RADIOMICS_CLINICAL: "Radiomics+clinical",
                               DEEP_RADIOMICS_CLINICAL: "Deep+radiomics+clinical"}
#: The head the survival stratification and the report's headline use.
PRIMARY_HEAD = DLTR_MLP

#: mRECIST grades of the response to the first TACE, worst to best; objective response (the binary ``label``) is a
#: grade from ``RESPONDER_GRADE`` on (CR or PR). Heads that learn from the grades code them as positions here.
MRECIST_GRADES = ("PD", "SD", "PR", "CR")
RESPONDER_GRADE = MRECIST_GRADES.index("PR")
RESPONDERS = MRECIST_GRADES[RESPONDER_GRADE:]

#: Evaluation groups (the ``split`` column's values map onto the first three).
TRAINING, INTERNAL, EXTERNAL = "training", "internal", "external"
SPLIT_TO_GROUP = {"train": TRAINING, "internal": INTERNAL, "external": EXTERNAL}


def display_name(head: str) -> str:
    """``"dltr_mlp"`` -> ``"DLTR_MLP"``; an unknown head shows its own name."""
    return HEADS.get(head) or MULTI_HEADS.get(head, head)


def head_order(names) -> list[str]:
    """Known heads in the paper's order, then the multi-set heads, then the others sorted."""
    names = set(names)
    known = [*HEADS, *MULTI_HEADS]
    return [h for h in known if h in names] + sorted(names - set(known))


def external_group(center: str) -> str:
    return f"{EXTERNAL} {center}"


def parse_ref(ref: str, version: str | None = None, *, what: str = "reference") -> tuple[str, str | None]:
    """``"dltr@abc"`` -> ``("dltr", "abc")``; ``"dltr"`` -> ``("dltr", version)``.

    The one parser of ``NAME@VERSION`` (feature sets, heads, ``--head``, ``--feature-set``). An empty name or
    version, or a version given twice and different, is a one-line ``InvalidReferenceError``.
    """
    text = str(ref).strip()
    name, sep, v = text.partition("@")
    if not name or (sep and not v) or "@" in v:
        raise InvalidReferenceError(f"{what} {ref!r}: give NAME or NAME@VERSION (e.g. {DLTR_MLP} or {DLTR_MLP}@1a2b3c)")
    if not sep:
        return name, version
    if version is not None and version != v:
        raise InvalidReferenceError(f"{what} {ref!r} names version {v!r} but version={version!r} was also given")
    return name, v


def format_ref(name: str, version: str | None) -> str:
    return name if not version else f"{name}@{version}"
