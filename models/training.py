"""``train_encoder``: k-fold CV of each candidate on the training split, selection by CV AUC,
refit of the winner on the whole training split, checkpoint + model card in the store.

Only rows with ``clinical.split == "train"`` and a label are used; every patient the DALI
loaders deliver is recorded (``EncoderTrainResult.rows_seen``) so that tests can prove no
internal or external row was touched. Early stopping: validation BCE per epoch, patience
``patience``; the fold's AUC is taken at its best epoch. The refit runs the median best
epoch count. CPU runs are deterministic (seeded, ``torch.use_deterministic_algorithms``).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from dltr.core.exceptions import ModelError
from dltr.core.hashing import content_hash
from dltr.core.layout import ENCODER_CROSSFIT, StoreLayout, encoder_card
from models._auxiliary import descriptor_names, roi_descriptors
from models._checkpoint import save_encoder, software_versions
from models._crossfit import crossfit_bytes, fold_ensemble, readout_scores, readout_weights
from models.encoders import Encoder3d, build_encoder
from pipeline.loaders import AugmentConfig, DaliRoiLoader, DaliRoiPipeline, RoiConfig


@dataclass(frozen=True)
class EncoderTrainConfig:
    candidates: tuple[str, ...] = ("resnet10", "densenet", "plain")
    folds: int = 3
    epochs: int = 12
    patience: int = 4
    batch_size: int = 8
    lr: float = 2e-3
    weight_decay: float = 1e-4
    embed_dim: int = 256
    width: int = 8  # the width every demo result was measured with (the demo and `dltr train-encoder` share it)
    seed: int = 0
    # the encoder's input: the phases and, by default, the tumour mask as one more channel, each phase read as its
    # signal relative to the image's own peritumoral liver ("ratio"); both adopted on the 10-seed validity
    # benchmark (BENCHMARKS.md, "Method choices")
    roi: RoiConfig = field(default_factory=lambda: RoiConfig(mask_channel=True, normalisation="ratio"))
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    device: str = "auto"  # "auto" | "cpu" | "cuda"
    num_threads: int = 2
    aux_weight: float = 1.0  # weight of the label-free ROI-descriptor loss (models/_auxiliary.py); 0 = off
    # label-free warm-up: epochs, before the supervised ones, in which the encoder learns only to predict the ROI
    # descriptors of its training rows (no label is read; needs aux_weight > 0); 0 = off
    pretrain_epochs: int = 0
    # also record the mean read-out of the selected candidate's k CV fold encoders for every other store row
    # (inference only) in crossfit.npz, so heads may read internal/external rows from the fold ensemble
    fold_ensemble: bool = False

    def __post_init__(self) -> None:
        if self.pretrain_epochs < 0 or (self.pretrain_epochs and self.aux_weight <= 0):
            raise ModelError(f"EncoderTrainConfig.pretrain_epochs={self.pretrain_epochs}: the label-free warm-up "
                             f"learns the ROI descriptors, so it needs pretrain_epochs >= 0 and aux_weight > 0 "
                             f"(aux_weight={self.aux_weight})")

    def to_dict(self) -> dict[str, Any]:
        d = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        d.update(candidates=list(self.candidates), roi=self.roi.to_dict(), augment=self.augment.to_dict())
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> EncoderTrainConfig:
        d = dict(d)
        d["candidates"] = tuple(d.get("candidates", cls.candidates))
        if "roi" in d:
            d["roi"] = RoiConfig.from_dict(d["roi"])
        if "augment" in d:
            d["augment"] = AugmentConfig.from_dict(d["augment"])
        return cls(**d)


@dataclass
class EncoderTrainResult:
    card: dict[str, Any]
    path: Path
    rows_seen: tuple[str, ...]
    seconds: float = 0.0
    rows_scored: tuple[str, ...] = ()  # other rows only scored by the fold encoders (``fold_ensemble``)

    @property
    def card_hash(self) -> str:
        return self.card["card_hash"]

    @property
    def summary(self) -> list[dict[str, Any]]:
        return [{"candidate": k, "cv_auc_mean": v["cv_auc_mean"], "cv_auc_sd": v["cv_auc_sd"],
                 "selected": k == self.card["architecture"]["name"]} for k, v in self.card["candidates"].items()]


def training_rows(store_root: str | Path) -> tuple[list[str], np.ndarray]:
    """Sorted patient ids and labels of the labelled ``split == "train"`` rows of the clinical table."""
    import pyarrow.parquet as pq

    path = StoreLayout.of(store_root).table("clinical")
    if not path.is_file():
        raise ModelError(f"{path}: missing; register the cohort first (`dltr store add-cohort`)")
    t = pq.read_table(path, columns=["patient_id", "split", "label"]).to_pylist()
    rows = sorted((str(r["patient_id"]), int(r["label"])) for r in t
                  if r["split"] == "train" and r["label"] is not None)
    labels = np.array([y for _, y in rows], dtype=np.int64)
    if len(rows) < 4 or labels.min() == labels.max():
        raise ModelError(f"{path}: {len(rows)} labelled training rows with classes {sorted(set(labels.tolist()))}; "
                         "encoder training needs both classes")
    return [p for p, _ in rows], labels


def cv_folds(labels: np.ndarray, folds: int, seed: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """The encoder's CV folds (train, validation positions) over the training rows in ``training_rows`` order:
    stratified on the label, shuffled by ``seed``. Any measurement on "the encoder's folds" takes them from here."""
    from sklearn.model_selection import StratifiedKFold

    return list(StratifiedKFold(folds, shuffle=True, random_state=seed).split(np.zeros(len(labels)), labels))


@contextlib.contextmanager
def _deterministic(seed: int, threads: int):
    prev = (torch.are_deterministic_algorithms_enabled(), torch.get_num_threads())
    torch.manual_seed(seed)
    torch.use_deterministic_algorithms(True)
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(prev[0])
        torch.set_num_threads(prev[1])


def _auc(y: np.ndarray, s: np.ndarray) -> float:
    from sklearn.metrics import roc_auc_score

    return float(roc_auc_score(y, s)) if len(set(y.tolist())) == 2 else float("nan")


class _Trainer:
    """Trains one model on a set of patients, reading batches through the DALI loader."""

    def __init__(self, store_root: Path, cfg: EncoderTrainConfig, device: torch.device, seen: set[str],
                 aux: dict[str, torch.Tensor] | None = None):
        self.store_root, self.cfg, self.device, self.seen = store_root, cfg, device, seen
        self.dali_device = 0 if device.type == "cuda" else None
        self.aux = aux or {}  # patient -> standardised ROI descriptors (label-free auxiliary targets)
        self.crops: dict = {}  # ROI crops read once for every fold, candidate and epoch (pipeline.loaders.RoiReader)

    def fit(self, name: str, ids: list[str], y: dict[str, int], seed: int, epochs: int,
            val: tuple[torch.Tensor, np.ndarray] | None = None
            ) -> tuple[Encoder3d, list[float], list[float], torch.nn.Linear | None]:
        cfg = self.cfg
        torch.manual_seed(seed)
        model = build_encoder(name, cfg.roi.n_channels, cfg.embed_dim, cfg.width).to(self.device)
        use_aux = cfg.aux_weight > 0 and bool(self.aux)
        n_aux = next(iter(self.aux.values())).numel() if use_aux else 0
        params, aux_head = list(model.parameters()), None
        if use_aux:  # a linear read-out of the embedding, used in training only (not in the checkpoint)
            aux_head = torch.nn.Linear(cfg.embed_dim, n_aux).to(self.device)
            params += list(aux_head.parameters())
        opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
        npos = sum(y[p] for p in ids)
        loss_fn = torch.nn.BCEWithLogitsLoss(pos_weight=torch.tensor((len(ids) - npos) / max(npos, 1),
                                                                     device=self.device))
        loader = DaliRoiLoader(self.store_root, ids, cfg.roi, batch_size=cfg.batch_size, augment=cfg.augment,
                               seed=seed, shuffle=True, device=self.dali_device, num_threads=cfg.num_threads,
                               crop_cache=self.crops)
        val_losses, val_aucs, best, best_state, best_aux = [], [], math.inf, None, None
        amp = self.device.type == "cuda"
        try:
            for _ in range(cfg.pretrain_epochs if use_aux else 0):  # label-free warm-up: descriptors only
                model.train()
                for b in loader:
                    self.seen.update(b["patient_id"])
                    with torch.autocast("cuda", dtype=torch.bfloat16, enabled=amp):
                        emb, _ = model(b["x"].to(self.device))
                    t_aux = torch.stack([self.aux[p] for p in b["patient_id"]]).to(self.device)
                    loss = torch.nn.functional.mse_loss(aux_head(emb.float()), t_aux)
                    opt.zero_grad(set_to_none=True)
                    loss.backward()
                    opt.step()
            for _ in range(epochs):
                model.train()
                for b in loader:
                    self.seen.update(b["patient_id"])
                    target = torch.tensor([y[p] for p in b["patient_id"]], dtype=torch.float32, device=self.device)
                    with torch.autocast("cuda", dtype=torch.bfloat16, enabled=amp):
                        emb, logit = model(b["x"].to(self.device))
                    loss = loss_fn(logit.float(), target)
                    if use_aux:
                        t_aux = torch.stack([self.aux[p] for p in b["patient_id"]]).to(self.device)
                        loss = loss + cfg.aux_weight * torch.nn.functional.mse_loss(aux_head(emb.float()), t_aux)
                    opt.zero_grad(set_to_none=True)
                    loss.backward()
                    opt.step()
                if val is None:
                    continue
                vl, va = self._evaluate(model, val, loss_fn)
                val_losses.append(vl)
                val_aucs.append(va)
                if vl < best - 1e-6:
                    best, best_state = vl, {k: v.detach().clone() for k, v in model.state_dict().items()}
                    best_aux = None if aux_head is None else {k: v.detach().clone()
                                                              for k, v in aux_head.state_dict().items()}
                elif len(val_losses) - 1 - int(np.argmin(val_losses)) >= cfg.patience:
                    break
        finally:
            loader.close()
        if best_state is not None:
            model.load_state_dict(best_state)
            if aux_head is not None:
                aux_head.load_state_dict(best_aux)
        return model.eval(), val_losses, val_aucs, aux_head

    @torch.no_grad()
    def _evaluate(self, model, val, loss_fn) -> tuple[float, float]:
        x, yv = val
        model.eval()
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=self.device.type == "cuda"):
            _, logit = model(x.to(self.device))
        logit = logit.float()
        loss = float(loss_fn(logit, torch.as_tensor(yv, dtype=torch.float32, device=self.device)))
        return loss, _auc(yv, logit.cpu().numpy())


def _aux_targets(ids: list[str], x: torch.Tensor, masks: torch.Tensor,
                 cfg: EncoderTrainConfig) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Per-patient ROI descriptors of the unaugmented inputs, standardised over the training split.

    Computed once: flips and the small intensity jitter of the augmentations barely move them.
    """
    d = roi_descriptors(x[:, :len(cfg.roi.phases)], masks)  # the images, not the mask channel
    mu, sd = d.mean(0), d.std(0)
    z = (d - mu) / torch.where(sd > 1e-6, sd, torch.ones_like(sd))
    info = {"names": descriptor_names(cfg.roi.phases), "weight": cfg.aux_weight,
            "mean": [round(float(v), 6) for v in mu], "std": [round(float(v), 6) for v in sd]}
    return {p: z[i] for i, p in enumerate(ids)}, info


def _device(cfg: EncoderTrainConfig) -> torch.device:
    if cfg.device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(cfg.device)


def train_encoder(store_root: str | Path, config: EncoderTrainConfig | None = None,
                  log: Callable[[str], None] | None = None,
                  progress: Callable[[int, int], None] | None = None) -> EncoderTrainResult:
    """Select the encoder by k-fold CV AUC on the training split, refit it, publish it in the store.

    ``progress(done, total)`` after each fold of each candidate and after the refit (a progress bar)."""
    import time

    cfg, store_root, log = config or EncoderTrainConfig(), Path(store_root), log or (lambda _m: None)
    t0 = time.perf_counter()
    ids, labels = training_rows(store_root)
    if cfg.folds < 2 or min(np.bincount(labels)) < cfg.folds:
        raise ModelError(f"folds={cfg.folds}: need 2 <= folds <= the smaller class count ({min(np.bincount(labels))})")
    y = dict(zip(ids, labels.tolist(), strict=True))
    device, seen = _device(cfg), set()
    dali_device = 0 if device.type == "cuda" else None
    with _deterministic(cfg.seed, cfg.num_threads):
        pipe = DaliRoiPipeline(store_root, cfg.roi, batch_size=cfg.batch_size, num_threads=cfg.num_threads,
                               device=dali_device, with_mask=cfg.aux_weight > 0)
        got = pipe.run(ids)
        pipe.close()
        x_all = got[0].cpu()
        seen.update(ids)
        aux, aux_info = _aux_targets(ids, x_all, got[2].cpu(), cfg) if cfg.aux_weight > 0 else ({}, None)
        trainer = _Trainer(store_root, cfg, device, seen, aux)
        folds = cv_folds(labels, cfg.folds, cfg.seed)
        cands: dict[str, dict[str, Any]] = {}
        n_out = 1 + (len(descriptor_names(cfg.roi.phases)) if aux_info else 0)
        oof = {name: np.full((len(ids), n_out), np.nan, np.float32) for name in cfg.candidates}
        fold_models: dict[str, list] = {name: [] for name in cfg.candidates}
        for name in cfg.candidates:
            aucs, epochs = [], []
            for k, (tr, va) in enumerate(folds):
                fold_model, losses, va_auc, fold_aux = trainer.fit(name, [ids[i] for i in tr], y, cfg.seed + 1000 * k,
                                                                   cfg.epochs, val=(x_all[va], labels[va]))
                oof[name][va] = readout_scores(fold_model, fold_aux, x_all[va], device)
                if cfg.fold_ensemble:
                    fold_models[name].append((fold_model, fold_aux))
                best = int(np.argmin(losses))
                aucs.append(va_auc[best])
                epochs.append(best + 1)
                log(f"{name} fold {k + 1}/{cfg.folds}: AUC {va_auc[best]:.3f} at epoch {best + 1}")
                if progress:
                    progress(len(cands) * cfg.folds + k + 1, len(cfg.candidates) * cfg.folds + 1)
            cands[name] = {"cv_auc_mean": float(np.mean(aucs)), "cv_auc_sd": float(np.std(aucs, ddof=1)),
                           "folds": [float(a) for a in aucs], "best_epochs": epochs}
            log(f"{name}: CV AUC {cands[name]['cv_auc_mean']:.3f} +/- {cands[name]['cv_auc_sd']:.3f}")
        chosen = max(cfg.candidates, key=lambda c: (np.nan_to_num(cands[c]["cv_auc_mean"], nan=-1.0),))
        n_ep = int(np.median(cands[chosen]["best_epochs"]))
        model, _, _, aux_head = trainer.fit(chosen, ids, y, cfg.seed + 999_999, n_ep)
        log(f"selected {chosen}; refit on {len(ids)} training rows for {n_ep} epochs")
        if progress:
            progress(len(cfg.candidates) * cfg.folds + 1, len(cfg.candidates) * cfg.folds + 1)
        ensemble = (fold_ensemble(store_root, cfg.roi, cfg.batch_size, cfg.num_threads, fold_models[chosen], device, ids)
                    if cfg.fold_ensemble else None)
    readout = readout_weights(model.cpu(), aux_head)
    names = ["logit"] + (list(aux_info["names"]) if aux_info else [])
    card = {
        "architecture": model.arch, "in_channels": cfg.roi.n_channels, "embed_dim": cfg.embed_dim,
        "preprocess": cfg.roi.to_dict(), "preprocess_hash": cfg.roi.content_hash(),
        "augmentations": cfg.augment.to_dict(),
        "training_rows_hash": content_hash([[p, int(v)] for p, v in zip(ids, labels.tolist(), strict=True)]),
        "n_training_rows": len(ids), "candidates": cands, "refit_epochs": n_ep, "seed": cfg.seed,
        "auxiliary_targets": aux_info,
        "crossfit": {"scheme": "out-of-fold read-out scores of the k CV fold encoders for training rows; "
                               "the refit encoder's read-out of the stored embedding for every other row",
                     "readout": names, "folds": cfg.folds, "file": ENCODER_CROSSFIT,
                     "oof_hash": content_hash([[p, [round(float(v), 6) for v in r]]
                                               for p, r in zip(ids, oof[chosen], strict=True)]),
                     "fold_ensemble": None if ensemble is None else {
                         "rows": len(ensemble[0]), "scheme": "mean read-out of the selected candidate's k CV fold "
                                                             "encoders (inference only) for every other row"}},
        "train_config": cfg.to_dict(), "software": software_versions(),
    }
    path = save_encoder(store_root, model.cpu(), card, crossfit=crossfit_bytes(ids, oof[chosen], readout, ensemble))
    card = json.loads(encoder_card(path).read_text())
    return EncoderTrainResult(card, path, tuple(sorted(seen)), time.perf_counter() - t0,
                              tuple(ensemble[0]) if ensemble else ())
