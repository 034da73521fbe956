"""``dltr radiomics``: IBSI radiomics features (pyradiomics) of every patient, on Ray, as feature set ``radiomics``."""

from __future__ import annotations

from pathlib import Path

import typer


def register(app: typer.Typer) -> None:
    @app.command("radiomics")
    def radiomics(
        store: Path = typer.Option(..., "--store", help="The store folder (ingested volumes and tables)."),
        settings: Path = typer.Option(None, "--settings",
                                      help="pyradiomics parameter file (YAML or JSON; optional key 'phases'); "
                                           "default: dltr's MRI recipe (pipeline/radiomics/default_settings.json)."),
        name: str = typer.Option(None, "--name", help="Feature-set name to publish (default: radiomics)."),
        address: str = typer.Option(None, "--address", help="Ray cluster address; default: an embedded local Ray."),
        workers: int = typer.Option(None, "--workers", help="Ray actors (one pyradiomics extractor each)."),
        batch_size: int = typer.Option(None, "--batch-size", help="Patients per batch (and per staged part)."),
        local: bool = typer.Option(False, "--local", help="No Ray: the same worker in a loop in this process."),
        allow_partial: bool = typer.Option(None, "--allow-partial",
                                           help="Publish even if some patients failed (recorded as partial)."),
        as_json: bool = typer.Option(False, "--json", help="Print the run report as JSON."),
    ) -> None:
        """Compute radiomics features per patient and phase inside the tumour mask (resumable) and publish them."""
        from dltr.cli._common import config_from, echo_json
        from dltr.core.exceptions import DltrError
        from pipeline.radiomics import RadiomicsConfig, extract_radiomics

        cfg = config_from(RadiomicsConfig(), name=name, address=address, workers=workers, batch_size=batch_size,
                          allow_partial=allow_partial, backend="local" if local else None)
        report = extract_radiomics(store, settings, cfg)
        if as_json:
            echo_json(report.to_dict())
        else:
            typer.echo(report.summary())
        if report.status == "incomplete":
            failed = ", ".join(e["patient_id"] for e in report.errors if e.get("stage") != "scope")
            raise DltrError(f"{store}: {report.n_errors} patient(s) failed ({failed}); see table radiomics_errors; "
                            "fix them and re-run (staged patients are kept), or pass --allow-partial")

    @app.command("train-radiomics-heads")
    def train_radiomics_heads(
        store: Path = typer.Option(..., "--store", help="Store folder with the radiomics feature set."),
        radiomics: str = typer.Option(None, "--radiomics",
                                      help="Radiomics feature set: NAME or NAME@VERSION (default: radiomics)."),
        deep: str = typer.Option(None, "--deep",
                                 help="Deep feature set for Deep+radiomics+clinical (NAME or NAME@VERSION; default: "
                                      "dltr); that head is skipped when the store has none."),
        seed: int = typer.Option(None, "--seed", help="Seed of the CV folds and the LASSO solver (default 0)."),
        max_age_days: int = typer.Option(None, "--max-age-days", help="Oldest lab value (days before TACE) to use."),
        as_json: bool = typer.Option(False, "--json", help="Print versions and metrics as JSON."),
    ) -> None:
        """Train Radiomics, Radiomics+clinical and Deep+radiomics+clinical (selection inside CV, LASSO); their
        scores join the scores table beside the paper's heads, so `dltr evaluate` and the report show them."""
        from dltr.cli._common import config_from, echo_json
        from features import FeatureStore
        from models.heads import MultiHeadsConfig, train_multi_heads

        cfg = config_from(MultiHeadsConfig(), radiomics=radiomics, deep=deep, seed=seed, max_age_days=max_age_days)
        res = train_multi_heads(FeatureStore(store), cfg)
        if as_json:
            echo_json({k: res[k] for k in ("versions", "metrics", "lineage")})
            return
        for name, v in res["versions"].items():
            m = res["metrics"][name]
            typer.echo(f"{name:<24} {v}  CV AUC {m['cv_auc']:.3f} (sd {m['cv_auc_sd']:.3f})  "
                       f"{m['n_selected']} of {m['n_inputs']} inputs selected")
