"""``ExtractConfig`` (how to run an extraction) and ``ExtractReport`` (what it did)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from dltr.core.exceptions import DltrError
from dltr.core.hashing import from_dict_checked
from dltr.core.vocabulary import DEFAULT_FEATURE_SET

ROI_SOURCES = ("reuse", "materialise", "volumes")


@dataclass(frozen=True)
class ExtractConfig:
    """How an extraction runs; only the device and its precision (``numerics()``) change the feature
    values, and they enter the lineage beside the encoder's.

    - ``name``: the feature set (``dltr``).
    - ``address``: a Ray cluster to join (``"auto"``, ``"ray://host:10001"``, ...); ``None`` starts an
      embedded local Ray sized to the machine and shuts it down at the end.
    - ``workers``: actors in the pool, each with one DALI pipeline and one encoder copy.
    - ``gpus_per_worker``: 0 runs DALI and torch on the CPU; > 0 puts both on the actor's GPU
      (bf16 autocast, channels-last-3d).
    - ``cpus_per_worker``: CPUs reserved per actor (torch intra-op threads follow it).
    - ``batch_size``: patients per batch (one DALI run, one forward pass).
    - ``stage_every_s``: the rows that arrived since the last staged part (one fsynced Parquet part) are staged
      once this many seconds have passed since it, and at the end; a killed run resumes from the staged parts,
      so it loses at most about this much work. ``0`` stages every batch as a part of its own. A part costs
      about 2 ms of the driver's CPU and an fsync whatever its rows, which 8-patient batches of a fast
      encoder (hundreds a second) took from the cores the forward passes run on.
    - ``dali_threads``: DALI CPU threads per actor (ROI reads run on as many threads).
    - ``allow_partial``: publish even when some patients failed (recorded in the registry).
    - ``max_restarts`` / ``max_task_retries``: Ray restarts of a crashed actor and retries of its batch.
    - ``pipelined``: on CPU, each actor loads (``LoadWorker``) a batch ahead of encoding
      (``EncodeWorker``) on a thread of its own, so that reads overlap encoding; ``False`` (and every
      GPU run) loads and encodes in line (``EmbedWorker``).
    - ``rois``: where the encoder inputs come from. ``"reuse"``: the materialised ROI tensors
      (feature set ``roi_tensors``, ``models.materialise_rois``) of patients whose tensors are current
      for the encoder's ``RoiConfig`` and their input checksums; the other patients from the volumes.
      ``"materialise"``: the same, and the tensors loaded from the volumes in this run are also
      published as a ``roi_tensors`` version (with the current ones copied). ``"volumes"``: always
      decode and resample the volumes. CPU runs only (a GPU run reads the volumes on its GPU).
    """

    name: str = DEFAULT_FEATURE_SET
    address: str | None = None
    workers: int = 1
    gpus_per_worker: float = 0.0
    cpus_per_worker: float = 1.0
    batch_size: int = 8
    stage_every_s: float = 1.0
    dali_threads: int = 1
    allow_partial: bool = False
    max_restarts: int = 3
    max_task_retries: int = 3
    pipelined: bool = True
    rois: str = "reuse"

    def __post_init__(self) -> None:
        bad = []
        if not self.name or "/" in self.name:
            bad.append(f"name={self.name!r} (a non-empty name without '/')")
        if self.workers < 1:
            bad.append(f"workers={self.workers} (>= 1)")
        if self.batch_size < 1:
            bad.append(f"batch_size={self.batch_size} (>= 1)")
        if not self.stage_every_s >= 0:
            bad.append(f"stage_every_s={self.stage_every_s} (>= 0 seconds)")
        if self.gpus_per_worker < 0 or self.cpus_per_worker <= 0:
            bad.append(f"gpus_per_worker={self.gpus_per_worker}, cpus_per_worker={self.cpus_per_worker} "
                       "(gpus >= 0, cpus > 0)")
        if self.rois not in ROI_SOURCES:
            bad.append(f"rois={self.rois!r} (one of {ROI_SOURCES})")
        if self.dali_threads < 1:
            bad.append(f"dali_threads={self.dali_threads} (>= 1)")
        if bad:
            raise DltrError("ExtractConfig: " + "; ".join(bad))

    def numerics(self) -> dict[str, str]:
        """Where and in what precision the encoder runs, as the workers do it (``_worker.EmbedWorker``):
        part of the feature set's lineage and version id, since it changes the feature values."""
        if self.gpus_per_worker > 0:
            return {"device": "cuda", "dtype": "float32", "autocast": "bfloat16"}
        return {"device": "cpu", "dtype": "float32", "autocast": "none"}

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ExtractConfig:
        return from_dict_checked(cls, d, DltrError)


@dataclass
class ExtractReport:
    """What one ``extract_features`` call did.

    ``status``: ``published`` (a new version), ``exists`` (the version was already published:
    no work done), ``partial`` (published with ``allow_partial`` although patients failed) or
    ``incomplete`` (patients failed; rows stay staged, nothing published).
    """

    name: str
    version_id: str
    status: str
    lineage: dict[str, str]
    n_scope: int
    n_reused: int = 0
    n_resumed: int = 0
    n_computed: int = 0
    n_errors: int = 0
    errors: list[dict[str, Any]] = field(default_factory=list)
    seconds: float = 0.0
    startup_s: float = 0.0
    mb_read: float = 0.0
    load_s: float = 0.0
    encode_s: float = 0.0
    per_worker: dict[str, dict[str, float]] = field(default_factory=dict)
    backend: str = "ray"
    steady_patients_per_s: float = 0.0  # between the first and the last result batch (no actor start-up)
    n_from_tensors: int = 0  # computed from materialised ROI tensors (the rest from the volumes)
    roi_tensors: str | None = None  # the roi_tensors version read (NAME@VERSION)
    roi_tensors_written: str | None = None  # the roi_tensors version this run wrote (rois="materialise")
    materialise_s: float = 0.0  # opening, copying and publishing the tensor set (rois="materialise")
    stage_s: float = 0.0  # staging result parts (Parquet + fsync, on the driver's writer thread)

    @property
    def patients_per_s(self) -> float:
        return self.n_computed / self.seconds if self.seconds > 0 else 0.0

    @property
    def mb_per_s(self) -> float:
        return self.mb_read / self.seconds if self.seconds > 0 else 0.0

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d.update(patients_per_s=self.patients_per_s, mb_per_s=self.mb_per_s)
        return d

    def summary(self) -> str:
        """Human-readable lines: what happened, rates, load/encode split, per worker."""
        lines = [f"{self.name}@{self.version_id}: {self.status} ({self.n_scope} patients in scope: "
                 f"{self.n_computed} computed, {self.n_reused} reused from an earlier version, "
                 f"{self.n_resumed} already staged, {self.n_errors} failed)"]
        if self.roi_tensors:
            lines.append(f"  {self.n_from_tensors} patients encoded from the materialised ROI tensors {self.roi_tensors}")
        if self.roi_tensors_written:
            lines.append(f"  encoder inputs materialised as {self.roi_tensors_written}")
        if self.n_computed:
            busy = self.load_s + self.encode_s
            share = self.load_s / busy if busy > 0 else 0.0
            lines.append(f"  {self.patients_per_s:.2f} patients/s, {self.mb_per_s:.2f} MB/s read over "
                         f"{self.seconds:.2f} s ({self.steady_patients_per_s:.2f} patients/s after the first batch; "
                         f"Ray start-up {self.startup_s:.2f} s); "
                         f"actor time: loading {self.load_s:.2f} s ({share:.0%}), encoding {self.encode_s:.2f} s")
            for w, s in sorted(self.per_worker.items()):
                lines.append(f"  worker {w}: {s['patients']:.0f} patients, {s['patients_per_s']:.2f} patients/s busy, "
                             f"load {s['load_s']:.2f} s, encode {s['encode_s']:.2f} s")
        for e in self.errors[:10]:
            lines.append(f"  error {e['patient_id']}: {e['reason']}")
        return "\n".join(lines)
