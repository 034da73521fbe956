"""``dltr extract``: encoder embeddings of every patient, on Ray, published as one feature-set version."""

from __future__ import annotations

from pathlib import Path

import typer


def register(app: typer.Typer) -> None:
    @app.command("extract")
    def extract(
        store: Path = typer.Option(..., "--store", help="The store folder (ingested volumes, tables, encoders)."),
        encoder: str = typer.Option(None, "--encoder",
                                    help="Encoder card hash in STORE/encoders or a checkpoint folder "
                                         "(default: the newest encoder in the store)."),
        name: str = typer.Option(None, "--name", help="Feature-set name to publish (default dltr)."),
        address: str = typer.Option(None, "--address",
                                    help="Ray cluster address; default: an embedded local Ray for this run."),
        workers: int = typer.Option(None, "--workers", help="Actors, each with a DALI pipeline and an encoder (default 1)."),
        gpus_per_worker: float = typer.Option(None, "--gpus-per-worker", help="GPUs per actor (default 0: CPU only)."),
        cpus_per_worker: float = typer.Option(None, "--cpus-per-worker", help="CPUs per actor (torch threads; default 1)."),
        batch_size: int = typer.Option(None, "--batch-size", help="Patients per batch (default 8)."),
        stage_every: float = typer.Option(None, "--stage-every", help="Seconds between staged parts, from which a "
                                          "killed run resumes (0: every batch is a part)."),
        rois: str = typer.Option(None, "--rois", help="Encoder inputs from: reuse (materialised ROI tensors where "
                                 "current, else the volumes; default), materialise (write the tensor set first, "
                                 "then read it), volumes (always decode and resample)."),
        allow_partial: bool = typer.Option(False, "--allow-partial",
                                           help="Publish even if some patients failed (recorded as partial)."),
        auth_token_env: str = typer.Option(None, "--auth-token-env", help="Name of an environment variable holding "
                                           "the token of a Ray cluster with token authentication (--address)."),
        as_json: bool = typer.Option(False, "--json", help="Print the run report as JSON."),
    ) -> None:
        """Extract DLTR deep features on Ray (resumable, incremental) and publish a feature-set version."""
        from dltr.cli._common import Bars, config_from, echo_json
        from dltr.core.exceptions import DltrError
        from pipeline.extract import ExtractConfig, extract_features

        if auth_token_env:
            import os

            token = os.environ.get(auth_token_env)
            if not token:
                raise DltrError(f"--auth-token-env {auth_token_env}: the variable is unset or empty")
            os.environ.update(RAY_AUTH_MODE="token", RAY_AUTH_TOKEN=token)   # Ray's own variables
        cfg = config_from(ExtractConfig(), name=name, address=address, workers=workers,
                          gpus_per_worker=gpus_per_worker, cpus_per_worker=cpus_per_worker, batch_size=batch_size,
                          stage_every_s=stage_every, rois=rois, allow_partial=allow_partial or None)
        with Bars() as bars:
            report = extract_features(store, encoder, cfg, progress=lambda n, total: bars.advance("extract", n, total))
        if as_json:
            echo_json(report.to_dict())
        else:
            typer.echo(report.summary())
            if report.status == "exists":
                typer.echo(f"version {report.version_id} of {cfg.name!r} already published: nothing to do")
        if report.status == "incomplete":
            failed = ", ".join(e["patient_id"] for e in report.errors if e.get("stage") != "scope")
            raise DltrError(f"{store}: {report.n_errors} patient(s) failed ({failed}); see table "
                            "extract_errors; fix them and re-run, or pass --allow-partial")

    @app.command("materialise-rois")
    def materialise(
        store: Path = typer.Option(..., "--store", help="The store folder (ingested volumes, encoders)."),
        encoder: str = typer.Option(None, "--encoder", help="Encoder whose preprocessing (RoiConfig) to materialise: "
                                    "card hash or checkpoint folder (default: the newest encoder in the store)."),
        batch_size: int = typer.Option(8, "--batch-size", help="Patients per DALI batch."),
        as_json: bool = typer.Option(False, "--json", help="Print the report as JSON."),
    ) -> None:
        """Write the encoder-input ROI tensors of every patient as feature set roi_tensors (read by later
        extractions with the same preprocessing instead of the volumes)."""
        import dataclasses
        import json

        from dltr.cli._common import echo_json
        from dltr.core.layout import encoder_card
        from models import materialise_rois
        from pipeline.extract import resolve_encoder
        from pipeline.loaders import RoiConfig

        card = json.loads(encoder_card(resolve_encoder(store, encoder)).read_text())
        rep = materialise_rois(store, RoiConfig.from_dict(card["preprocess"]), batch_size=batch_size)
        if as_json:
            echo_json(dataclasses.asdict(rep))
        else:
            typer.echo(f"{rep.ref}: {rep.status} ({rep.n_scope} patients: {rep.n_computed} loaded, "
                       f"{rep.n_reused} copied from an earlier version, {len(rep.errors)} failed) in {rep.seconds:.1f} s")
            for pid, why in list(rep.errors.items())[:10]:
                typer.echo(f"  error {pid}: {why}")
