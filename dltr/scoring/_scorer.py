"""``Scorer``: a registered head, its encoder and preprocessing, loaded once; one patient per call.

Per call: a work folder (``tempfile.mkdtemp`` under ``work_dir``) holds the de-identified cohort copy
and the temporary store; it is removed in ``finally`` whatever happens. Stages and their timings:
``ingest`` (reader, canonical frame, Zarr), ``preprocess`` (DALI ROI pipeline with the training
statistics), ``encoder`` (torch, eval mode), ``head`` (point-in-time frame + head).
"""

from __future__ import annotations

import shutil
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from dltr.core.exceptions import IngestError
from dltr.core.layout import StoreLayout, VolumeAttrs
from dltr.core.vocabulary import PRIMARY_HEAD

from ._lineage import ScoringLineage, resolve_lineage, training_stats
from ._prediction import Prediction, interval_for, pfs_group, survival_row
from ._stage import SCORING_KEY, StagedPatient, normalisation_table, stage_cohort

__all__ = ["Scorer", "predict_patient"]


class Scorer:
    """Scores single patients with ``head`` (NAME or NAME@VERSION) of the store at ``store_root``."""

    def __init__(self, store_root: str | Path, head: str = PRIMARY_HEAD, *, work_dir: str | Path | None = None,
                 torch_threads: int = 1, pseudonym_key: str | None = None):
        from models import load_encoder

        self.store_root = Path(store_root).resolve()
        self.lineage, self.head = resolve_lineage(self.store_root, head)
        self.module, self.card = load_encoder(StoreLayout.of(self.store_root).encoder(self.lineage.encoder_card_hash))
        self.stats = training_stats(self.store_root)
        self.train_schema = pq.read_schema(StoreLayout(self.store_root).table("clinical"))
        self.survival = survival_row(self.store_root, self.lineage.head, self.lineage.head_version)
        self.work_dir = Path(work_dir) if work_dir is not None else None
        self.torch_threads = torch_threads
        self.pseudonym_key = pseudonym_key  # records of a pseudonymised store carry the same keyed pseudonym
        self._keyed: bool | None = None     # whether the store's ids are keyed pseudonyms, read on the first record
        self._record_lock = threading.Lock()
        self._encode_lock = threading.Lock()
        self._pipe_lock = threading.Lock()
        self._pipe = None  # the DALI ROI pipeline, built on the first request and reused

    # -- public -----------------------------------------------------------------------------------
    def new_work(self) -> Path:
        """A fresh private work folder (the caller removes it, or uses ``score_folder``)."""
        if self.work_dir is not None:
            self.work_dir.mkdir(parents=True, exist_ok=True)
        return Path(tempfile.mkdtemp(prefix="dltr-score-", dir=self.work_dir))

    def score_folder(self, patient_dir: str | Path, *, record: bool = False) -> Prediction:
        """Score a one-patient cohort folder (copied, de-identified, into a temporary store)."""
        work = self.new_work()
        try:
            t0 = time.perf_counter()
            staged = stage_cohort(patient_dir, work)
            if record and staged.patient_id is not None:  # refused before any work when the key is missing
                self._record_id(staged.patient_id)
            return self.score_staged(staged, work, record=record, t_start=t0)
        finally:
            shutil.rmtree(work, ignore_errors=True)

    def score_staged(self, staged: StagedPatient, work: Path, *, record: bool = False,
                     t_start: float | None = None) -> Prediction:
        """Score a patient already staged as ``work/cohort`` (the service writes uploads there)."""
        t = [time.perf_counter() if t_start is None else t_start]
        tmp_store = work / "store"
        from dltr.cohort import load_cohort

        cohort = load_cohort(staged.cohort)  # once per request: ingest and the head's frame share it
        norm = self._ingest(staged, tmp_store, cohort)
        t.append(time.perf_counter())
        x, box, mask = self._preprocess(tmp_store)
        t.append(time.perf_counter())
        emb = self._encode(x)
        t.append(time.perf_counter())
        checksum = _input_checksum(tmp_store, self.lineage.preprocess["phases"])
        row = _feature_row(staged.center, self.lineage.preprocess["phases"], box, checksum, emb)
        from ._frame import head_frame

        df, e = head_frame(cohort, self.lineage, row, self.train_schema)
        if mask is not None:  # the head reads the ROI descriptors measured on this very input
            df = self._with_descriptors(df, x, mask, tmp_store)
        p = float(self.head.predict_proba_frame(df, e)[0])
        interval, method = interval_for(self.head, df, e)
        t.append(time.perf_counter())
        pred = self._prediction(p, interval, method, staged.center, norm, checksum)
        pred.timings = {"ingest_s": t[1] - t[0], "preprocess_s": t[2] - t[1], "encoder_s": t[3] - t[2],
                        "head_s": t[4] - t[3], "total_s": t[4] - t[0]}
        if record:
            from ._record import append_record

            pid = None if staged.patient_id is None else self._record_id(staged.patient_id)
            with self._record_lock:
                pred.record_id = append_record(self.store_root, pred, pid, emb)
        return pred

    def _record_id(self, patient_id: str) -> str:
        """The store's form of a manifest id for ``scoring_records`` (``_record.recorded_patient_id``); whether
        the store is pseudonymised is read once per scorer."""
        from ._record import recorded_patient_id, store_pseudonymised

        if self._keyed is None:
            self._keyed = store_pseudonymised(self.store_root)
        return recorded_patient_id(self.store_root, patient_id, self.pseudonym_key, keyed=self._keyed)

    # -- stages ------------------------------------------------------------------------------------
    def _ingest(self, staged: StagedPatient, tmp_store: Path, cohort: Any) -> dict[str, Any]:
        from pipeline.ingest import IngestConfig, ingest_cohort

        cfg = dict(self.lineage.ingest_config)
        if cfg.get("target_spacing") is not None:
            cfg["target_spacing"] = tuple(cfg["target_spacing"])
        from nibabel.filebasedimages import ImageFileError

        try:
            ingest_cohort(staged.cohort, tmp_store, IngestConfig(**cfg, workers=1, stats=False, strict=True,
                                                                   durable=False),
                          executor="serial", cohort=cohort)
        except ImageFileError as e:  # the NIfTI reader lets this one through (reported to ingest)
            msg = str(e).replace(str(staged.cohort) + "/", "")
            raise IngestError(f"the patient's images could not be read: {msg}") from None
        from pipeline.loaders import PER_IMAGE_NORMALISATIONS

        mode = self.lineage.preprocess.get("normalisation")
        if mode in PER_IMAGE_NORMALISATIONS:  # prospective-safe: nothing of any center
            scale = "IQR / 1.349" if mode == "image" else "median (x / median - 1)"
            return {"center": staged.center, "statistics_of": "the image itself",
                    "rule": f"per image: median and {scale} of the ROI box outside the tumour, per phase"}
        table, norm = normalisation_table(self.stats, self.store_root, staged.center)
        pq.write_table(table, StoreLayout.of(tmp_store).intensity_stats)
        return norm

    def _preprocess(self, tmp_store: Path):
        """(ROI tensor, box, warped mask where the head reads measured ROI descriptors, else None), from the
        one DALI pipeline of this scorer (built once; pointed at the request's temporary store; one request at
        a time, a DALI pipeline is not reentrant)."""
        from pipeline.loaders import DaliRoiPipeline, RoiConfig

        with self._pipe_lock:
            if self._pipe is None:
                roi = RoiConfig.from_dict(self.lineage.preprocess)
                self._pipe = DaliRoiPipeline(self.store_root, roi, batch_size=1, device=None, num_threads=1,
                                             with_mask=bool(getattr(self.head, "descriptors", ())))
            self._pipe.retarget(tmp_store)
            out = self._pipe.run([SCORING_KEY])
        return out[0], np.asarray(out[1])[0], (out[2] if len(out) > 2 else None)

    def _with_descriptors(self, df, x, mask, tmp_store: Path):
        """``df`` plus the ROI descriptors of the patient's encoder input ``x`` and warped ``mask``, as in
        training (``models.heads.with_descriptors``: the image channels, the same measurement), and the native
        ones on the patient's ingested volumes when the head reads them."""
        from models import native_descriptors, roi_descriptors
        from models.heads import add_descriptors, add_native_descriptors

        phases = list(self.lineage.preprocess["phases"])
        df = add_descriptors(df, roi_descriptors(x[:, :len(phases)], mask).numpy(), phases)
        spacing = getattr(self.head, "native_spacing_mm", None)
        if spacing is None:
            return df
        return add_native_descriptors(df, native_descriptors(tmp_store, [SCORING_KEY], phases, spacing), phases)

    def _encode(self, x) -> np.ndarray:
        import torch

        with self._encode_lock, torch.inference_mode():
            prev = torch.get_num_threads()
            torch.set_num_threads(self.torch_threads)
            try:
                emb, _ = self.module(x)
            finally:
                torch.set_num_threads(prev)
        return emb.float().cpu().numpy()[0]

    def _prediction(self, p: float, interval, method: str, center: str, norm: dict[str, Any],
                    checksum: str) -> Prediction:
        lin: ScoringLineage = self.lineage
        group, pfs = pfs_group(self.survival, lin.head, lin.head_version, p)
        predicted = int(p >= lin.cutoff)
        keep = ("head", "head_version", "feature_set", "feature_set_version", "encoder_card_hash",
                "preprocess_hash", "ingest_config_hash")
        return Prediction(
            probability=p, interval=interval, interval_method=method,
            risk_group="predicted responder" if predicted else "predicted non-responder", predicted=predicted,
            cutoff=lin.cutoff, pfs_group=group, pfs=pfs, center=center,
            lineage={k: getattr(lin, k) for k in keep}, normalisation=norm, input_checksum=checksum)


def _input_checksum(tmp_store: Path, phases: list[str]) -> str:
    from pipeline.extract import input_checksum

    sums = VolumeAttrs.read(StoreLayout.of(tmp_store).volume_attrs(SCORING_KEY)).source_sha256
    return input_checksum({p: sums[p] for p in phases}, sums["mask"])


def _feature_row(center: str, phases: list[str], box: np.ndarray, checksum: str, emb: np.ndarray) -> pa.Table:
    from features import feature_schema

    dim = int(emb.shape[0])
    return pa.table({"patient_id": [SCORING_KEY], "center": [center], "phases": [list(phases)],
                     "roi_box": [box.astype(np.int32).tolist()], "input_checksum": [checksum],
                     "embedding": pa.FixedSizeListArray.from_arrays(pa.array(emb.astype(np.float32)), dim)},
                    schema=feature_schema(dim))


def predict_patient(store_root: str | Path, patient_dir: str | Path, head: str = PRIMARY_HEAD,
                    record: bool = False, *, work_dir: str | Path | None = None,
                    pseudonym_key: str | None = None) -> Prediction:
    """Score one patient (a one-patient cohort folder) with a registered head of the store; ``record``
    appends it to ``scoring_records`` under the store's form of its id (``pseudonym_key``: ingest's key,
    needed when the store is pseudonymised)."""
    return Scorer(store_root, head, work_dir=work_dir, pseudonym_key=pseudonym_key).score_folder(patient_dir,
                                                                                                record=record)
