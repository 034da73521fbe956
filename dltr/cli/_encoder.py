"""``dltr train-encoder``: CV selection of the DLTR encoder on the training split."""

from __future__ import annotations

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


def register(app: typer.Typer) -> None:
    @app.command("train-encoder")
    def train_encoder_cmd(
        store: Path = typer.Option(..., "--store", help="The dltr store (ingested volumes and the registered cohort tables)."),
        candidates: str = typer.Option(None, "--candidates",
                                       help="Comma-separated encoder families to compare (see models.ENCODERS; "
                                            "default resnet10,densenet,plain)."),
        folds: int = typer.Option(None, "--folds", help="Cross-validation folds inside the training split (default 3)."),
        epochs: int = typer.Option(None, "--epochs", help="Maximum epochs per fold (default 12; early stopping may "
                                    "end sooner)."),
        grid: str = typer.Option(None, "--grid", help="Encoder input grid X,Y,Z (default: RoiConfig's, 32,32,16)."),
        phases: str = typer.Option(None, "--phases", help="Input channels, comma-separated phase names in order "
                                   "(default: RoiConfig's, arterial,portal,delayed; the demo uses cohort.toml's)."),
        aux_weight: float = typer.Option(None, "--aux-weight", help="Weight of the label-free ROI-descriptor "
                                         "loss (tumour/ring/core/rim intensities; default 1); 0 trains on the "
                                         "label alone."),
        seed: int = typer.Option(None, "--seed", help="Seed of folds, initialisation and augmentation (default 0)."),
        as_json: bool = typer.Option(False, "--json", help="Print the model card as JSON."),
    ) -> None:
        """Train each candidate with k-fold CV on the training split, refit the best, write the checkpoint."""
        import dataclasses

        from dltr.cli._common import config_from, echo_json
        from models.training import EncoderTrainConfig, train_encoder
        from pipeline.loaders import RoiConfig, dali_available

        if not dali_available():
            from dltr.core.exceptions import MissingDependencyError

            raise MissingDependencyError("train-encoder reads its batches with NVIDIA DALI, which is not installed "
                                         "(pip install nvidia-dali-cuda120)")
        roi = RoiConfig() if grid is None else dataclasses.replace(RoiConfig(), grid=_grid(grid))
        if phases:
            roi = dataclasses.replace(roi, phases=tuple(p.strip() for p in phases.split(",") if p.strip()))
        names = None if candidates is None else tuple(c.strip() for c in candidates.split(",") if c.strip())
        cfg = config_from(EncoderTrainConfig(), candidates=names, folds=folds, epochs=epochs, seed=seed, roi=roi,
                          aux_weight=aux_weight)
        res = train_encoder(store, cfg, log=lambda m: typer.echo(m, err=True))
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
