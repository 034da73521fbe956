"""The encoder's cross-fitting record (``crossfit.npz``): read-out scores of an encoder, out-of-fold values of
the CV fold encoders for the training rows, the refit read-out, and optionally the fold encoders' mean
read-out of every other row (``EncoderTrainConfig.fold_ensemble``)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from dltr.core.layout import StoreLayout
from models.encoders import Encoder3d
from pipeline.loaders import DaliRoiPipeline, RoiConfig


@torch.no_grad()
def readout_scores(model: Encoder3d, aux_head: torch.nn.Linear | None, x: torch.Tensor,
                   device: torch.device) -> np.ndarray:
    """(N, 1 + A) float32: the response logit and the auxiliary descriptor predictions of inputs ``x``:
    read-outs whose meaning is the same for every encoder trained on this task, so the out-of-fold values of
    different fold encoders can stand in one column (an embedding's axes cannot)."""
    model.eval()
    emb, logit = model(x.to(device))
    cols = [logit.float()[:, None]] + ([aux_head(emb.float())] if aux_head is not None else [])
    return torch.cat(cols, 1).cpu().numpy().astype(np.float32)


def readout_weights(model: Encoder3d, aux_head: torch.nn.Linear | None) -> tuple[np.ndarray, np.ndarray]:
    """(W (1 + A, D), b (1 + A,)) such that ``embedding @ W.T + b`` = :func:`readout_scores` (both read-outs
    are linear layers on the embedding), so the scores follow from a stored embedding."""
    w = [model.head.weight.detach().cpu()] + ([aux_head.weight.detach().cpu()] if aux_head is not None else [])
    b = [model.head.bias.detach().cpu()] + ([aux_head.bias.detach().cpu()] if aux_head is not None else [])
    return torch.cat(w, 0).numpy().astype(np.float64), torch.cat(b, 0).numpy().astype(np.float64)


def crossfit_bytes(ids: list[str], oof: np.ndarray, readout: tuple[np.ndarray, np.ndarray],
                   ensemble: tuple[list[str], np.ndarray] | None = None) -> bytes:
    """``crossfit.npz`` (no pickle): training patient ids, their out-of-fold read-out scores, the refit
    read-out weights and bias; with ``ensemble`` also the other rows' ids and their mean fold-encoder read-out."""
    import io

    buf = io.BytesIO()
    extra = {} if ensemble is None else {"ensemble_patient_id": np.asarray(ensemble[0], dtype=np.str_),
                                         "ensemble": ensemble[1].astype(np.float32)}
    np.savez(buf, patient_id=np.asarray(ids, dtype=np.str_), oof=oof, weight=readout[0], bias=readout[1], **extra)
    return buf.getvalue()


def _other_rows(store_root: Path, train_ids: list[str]) -> list[str]:
    """Sorted ids of every clinical row that is not an encoder training row (internal, external, unlabelled)."""
    import pyarrow.parquet as pq

    t = pq.read_table(StoreLayout.of(store_root).table("clinical"), columns=["patient_id"])
    return sorted(set(map(str, t.column("patient_id").to_pylist())) - set(train_ids))


def fold_ensemble(store_root: Path, roi: RoiConfig, batch_size: int, num_threads: int, models: list,
                  device: torch.device, train_ids: list[str]) -> tuple[list[str], np.ndarray]:
    """Mean read-out of the fold encoders ``[(model, aux_head), ...]`` on every non-training row (inference)."""
    other = _other_rows(store_root, train_ids)
    if not other:
        return [], np.zeros((0, 0), np.float32)
    with DaliRoiPipeline(store_root, roi, batch_size=batch_size, num_threads=num_threads,
                         device=0 if device.type == "cuda" else None) as pipe:
        x = pipe.run(other)[0].cpu()
    return other, np.mean([readout_scores(m, a, x, device) for m, a in models], axis=0).astype(np.float32)
