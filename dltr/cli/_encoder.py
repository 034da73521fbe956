"""``dltr train-encoder``: CV selection of the DLTR encoder on the training split.

Every option defaults to None and then takes ``models.training.EncoderTrainConfig``'s default (the demo
takes the same), except the input channels: cohort.toml's ``phases`` as `dltr store add-cohort`
registered them (the demo reads the same file), else ``RoiConfig``'s."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import typer


def _grid(text: str) -> tuple[int, int, int]:
    from dltr.core.exceptions import ModelError

    try:
        g = tuple(int(v) for v in text.split(","))
    except ValueError:
        g = ()
    if len(g) != 3:
        raise ModelError(f"--grid {text!r}: give three voxel counts X,Y,Z, e.g. 32,32,16")
    return g  # type: ignore[return-value]


def _split(text: str) -> tuple[str, ...]:
    return tuple(t.strip() for t in text.split(",") if t.strip())


def _phases(store: Path, phases: str | None) -> tuple[str, ...] | None:
    if phases:
        return _split(phases)
    from features import FeatureStore, registered_cohort_config

    cfg = registered_cohort_config(FeatureStore(store)) or {}
    return tuple(cfg.get("phases") or ()) or None


def encoder_config(store: Path, *, grid: str | None = None, phases: str | None = None, candidates: str | None = None,
                   mask_channel: bool | None = None, normalisation: str | None = None, **given):
    """The ``EncoderTrainConfig`` the command trains with (given options over the dataclass's defaults)."""
    from models.training import EncoderTrainConfig

    roi = EncoderTrainConfig().roi
    if grid is not None:
        roi = dataclasses.replace(roi, grid=_grid(grid))
    chans = _phases(store, phases)
    if chans:
        roi = dataclasses.replace(roi, phases=chans)
    if mask_channel is not None:
        roi = dataclasses.replace(roi, mask_channel=bool(mask_channel))
    if normalisation is not None:
        roi = dataclasses.replace(roi, normalisation=normalisation)
    if candidates is not None:
        given["candidates"] = _split(candidates)
    from dltr.cli._common import config_from

    return config_from(EncoderTrainConfig(), roi=roi, **given)


def register(app: typer.Typer) -> None:
    @app.command("train-encoder")
    def train_encoder_cmd(
        store: Path = typer.Option(..., "--store", help="The dltr store (ingested volumes and the registered cohort tables)."),
        candidates: str = typer.Option(None, "--candidates", help="Comma-separated encoder families to compare "
                                       "(see models.ENCODERS; default resnet10,densenet,plain)."),
        folds: int = typer.Option(None, "--folds", help="Cross-validation folds inside the training split (default 3)."),
        epochs: int = typer.Option(None, "--epochs", help="Maximum epochs per fold; early stopping may end sooner "
                                   "(default 12)."),
        grid: str = typer.Option(None, "--grid", help="Encoder input grid X,Y,Z (default: RoiConfig's, 32,32,16)."),
        phases: str = typer.Option(None, "--phases", help="Input channels, comma-separated phase names in order "
                                   "(default: cohort.toml's phases as registered by `dltr store add-cohort`)."),
        mask_channel: bool = typer.Option(None, "--mask-channel/--no-mask-channel", help="Feed the tumour mask, "
                                          "resampled like the images, as one more input channel "
                                          "(RoiConfig.mask_channel; default on, EncoderTrainConfig.roi)."),
        normalisation: str = typer.Option(None, "--normalisation", help="ROI intensity normalisation "
                                          "(RoiConfig.normalisation): image, ratio (per image, prospective-safe), "
                                          "zscore (per center: transductive), none (default: "
                                          "EncoderTrainConfig.roi's)."),
        width: int = typer.Option(None, "--width", help="Channels of the first convolution (default 8)."),
        embed_dim: int = typer.Option(None, "--embed-dim", help="Length of the deep feature vector (default 256)."),
        batch_size: int = typer.Option(None, "--batch-size", help="Studies per training batch (default 8)."),
        lr: float = typer.Option(None, "--lr", help="AdamW learning rate (default 2e-3)."),
        device: str = typer.Option(None, "--device", help="auto, cpu or cuda (default auto: cuda when available)."),
        threads: int = typer.Option(None, "--threads", help="CPU threads of torch and DALI (default 2; part of "
                                    "the model card, since CPU results depend on it)."),
        aux_weight: float = typer.Option(None, "--aux-weight", help="Weight of the label-free ROI-descriptor "
                                         "loss (tumour/ring/core/rim intensities); 0 trains on the label alone "
                                         "(default 1)."),
        pretrain_epochs: int = typer.Option(None, "--pretrain-epochs", help="Label-free warm-up epochs before the "
                                            "supervised ones: the encoder learns only the ROI descriptors, no "
                                            "label read (default 0)."),
        seed: int = typer.Option(None, "--seed", help="Seed of folds, initialisation and augmentation (default 0)."),
        as_json: bool = typer.Option(False, "--json", help="Print the model card as JSON."),
    ) -> None:
        """Train each candidate with k-fold CV on the training split, refit the best, write the checkpoint."""
        from dltr.cli._common import Bars, echo_json
        from models.training import train_encoder
        from pipeline.loaders import dali_available

        if not dali_available():
            from dltr.core.exceptions import MissingDependencyError

            raise MissingDependencyError("train-encoder reads its batches with NVIDIA DALI, which is not installed "
                                         "(pip install nvidia-dali-cuda120)")
        cfg = encoder_config(store, grid=grid, phases=phases, candidates=candidates, mask_channel=mask_channel,
                             normalisation=normalisation, folds=folds, epochs=epochs,
                             width=width, embed_dim=embed_dim, batch_size=batch_size, lr=lr, device=device,
                             num_threads=threads, aux_weight=aux_weight, pretrain_epochs=pretrain_epochs, seed=seed)
        with Bars() as bars:
            res = train_encoder(store, cfg, log=lambda m: typer.echo(m, err=True),
                                progress=lambda d, t: bars.update("train encoder", d, t))
        if as_json:
            echo_json(res.card)
            return
        typer.echo(f"{'candidate':<10} {'CV AUC':>7} {'sd':>6}  folds")
        for row in res.summary:
            c = res.card["candidates"][row["candidate"]]
            mark = "  <- DLTR" if row["selected"] else ""
            typer.echo(f"{row['candidate']:<10} {row['cv_auc_mean']:>7.3f} {row['cv_auc_sd']:>6.3f}  "
                       + " ".join(f"{a:.3f}" for a in c["folds"]) + mark)
        typer.echo(f"encoder {res.card_hash} -> {res.path} ({res.seconds:.1f} s, {res.card['n_training_rows']} rows)")
