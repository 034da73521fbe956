"""CLI of the heads stage: ``dltr train-heads`` and ``dltr evaluate``."""

from __future__ import annotations

from pathlib import Path

import typer

from dltr.cli._common import config_from, echo_json


def _store(path: Path):
    from features import FeatureStore

    return FeatureStore(path)


def _names(text: str | None) -> list[str] | None:
    return None if text is None else [t.strip() for t in text.split(",") if t.strip()]


def _spacing(text: str | None) -> tuple[float, ...] | None:
    """``--native-spacing X,Y,Z`` (mm); HeadsConfig checks the values."""
    if text is None:
        return None
    try:
        return tuple(float(t) for t in text.split(","))
    except ValueError:
        from dltr.core.exceptions import ModelError

        raise ModelError(f"--native-spacing {text!r}: three voxel sizes in mm, X,Y,Z, e.g. 4.5,4.5,7") from None


def predictors(fs, clinical: str | None, labs: str | None) -> tuple[list[str] | None, list[str] | None]:
    """``--clinical`` / ``--labs`` as given, else cohort.toml's ``predictors`` as `store add-cohort`
    registered them (None, the library's default, for a store without a registered cohort.toml)."""
    from features import predictor_columns

    clin, lab = _names(clinical), _names(labs)
    if clin is None or lab is None:
        declared = predictor_columns(fs)
        if declared is not None:
            clin = declared[0] if clin is None else clin
            lab = declared[1] if lab is None else lab
    return clin, lab


def _fmt(name: str, value) -> str:
    """``name 0.812``, or nothing for a metric the head does not have (NaN / missing)."""
    import math

    return f"  {name} {value:.3f}" if isinstance(value, float) and math.isfinite(value) else ""


def train_heads_cmd(
    store: Path = typer.Option(..., "--store", help="Store folder (holds the feature set and cohort tables)."),
    feature_set: str = typer.Option(None, "--feature-set", help="Feature set to train on: NAME or NAME@VERSION "
                                     "(default: dltr, latest version)."),
    seed: int = typer.Option(None, "--seed", help="Seed of every random choice (CV folds, network init, trees); "
                           "default 0."),
    clinical: str = typer.Option(None, "--clinical", help="Clinical covariates, comma-separated clinical.csv "
                                 "columns (default: cohort.toml's predictors that are columns; '' for none)."),
    labs: str = typer.Option(None, "--labs", help="Lab values, comma-separated labs.csv names, latest before TACE "
                             "(default: cohort.toml's predictors that are labs; '' for none)."),
    max_age_days: int = typer.Option(None, "--max-age-days", help="Oldest lab value (days before TACE) to use."),
    heads: str = typer.Option(None, "--heads", help="Heads to train, comma-separated (default: clinical, dltr, "
                              "dltr_mlp, xgb_fusion); the others keep their registered versions."),
    fusion: str = typer.Option(None, "--fusion", help="Inputs of DLTR_MLP and XGBoost: 'native' (default: the "
                               "encoder's response logit, the ROI descriptors measured on each patient's input, "
                               "tumour descriptors measured on the volumes at one resolution, --native-spacing, and "
                               "every declared predictor), 'descriptors' (the same without the native ones) or "
                               "'readout' (the encoder's read-out and the clinical model's selection)."),
    native_spacing: str = typer.Option(None, "--native-spacing", help="With --fusion native: the voxel size (mm) "
                                       "the native descriptors are measured at, X,Y,Z; a stored or scored image "
                                       "coarser than it is refused by name (default: 4.5,4.5,7 raised to the "
                                       "coarsest stored voxel)."),
    native_set: str = typer.Option(None, "--native-set", help="With --fusion native: which native descriptors the "
                                   "fusion heads read, 'all' (default) or 'texture' (each phase's heterogeneity)."),
    clinical_bootstrap: int = typer.Option(None, "--clinical-bootstrap", min=0, help="Bootstrap resamples of the "
                                           "clinical selection, whose inclusion frequencies report its stability "
                                           "(default 50; 0: none). No score depends on them."),
    mlp_members: int = typer.Option(None, "--mlp-members", min=1, help="DLTR_MLP's seed ensemble: final networks "
                                    "averaged on the logit scale (default 1)."),
    ordinal: bool = typer.Option(None, "--ordinal/--binary", help="DLTR_MLP learns from the four mRECIST grades "
                                 "(cumulative logit; the default) or from the binary objective response."),
    mlp_linear: bool = typer.Option(None, "--mlp-linear/--no-mlp-linear", help="DLTR_MLP's inner CV may also "
                                    "choose a network without a hidden layer (a linear model started at zero)."),
    as_json: bool = typer.Option(False, "--json", help="Print the result as JSON."),
) -> None:
    """Train the clinical, DLTR, DLTR_MLP and XGBoost heads (or those of --heads) on the training split and
    register them."""
    from models.heads import HeadsConfig, train_heads

    fs = _store(store)
    clin, lab = predictors(fs, clinical, labs)
    res = train_heads(fs, config_from(HeadsConfig(), feature_set=feature_set, clinical=clin, labs=lab, seed=seed,
                                      max_age_days=max_age_days, heads=_names(heads), fusion=fusion,
                                      native_spacing_mm=_spacing(native_spacing), native_set=native_set,
                                      clinical_bootstrap=clinical_bootstrap, mlp_members=mlp_members,
                                      ordinal=ordinal, mlp_linear=mlp_linear))
    if as_json:
        echo_json({"versions": res.versions, "metrics": res.metrics,
                   "clinical_selected": (res.clinical_summary["variable"].drop_duplicates().tolist()[1:]
                                         if len(res.clinical_summary) else []),   # --heads dltr: no clinical model
                   "feature_set_version": res.lineage.get("feature_set_version"),
                   "frame_row_hash": res.lineage.get("frame_row_hash")})
        return
    for name, v in res.versions.items():
        m = res.metrics[name]
        typer.echo(f"{name:<11} {v}" + _fmt("train AUC", m.get("train_auc")) + _fmt("CV AUC", m.get("cv_auc")))
    typer.echo("clinical model (odds ratios, 95 % CI):")
    for _, r in res.clinical_summary.iloc[1:].iterrows():
        typer.echo(f"  {r['term']:<24} OR {r['odds_ratio']:.3g} [{r['or_ci_low']:.3g}-{r['or_ci_high']:.3g}]"
                   f"  p={r['p']:.3g}")


def evaluate_cmd(
    store: Path = typer.Option(..., "--store", help="Store folder with trained heads (dltr train-heads)."),
    out: Path = typer.Option(None, "--out", help="Folder for the CSV/Markdown table and figures "
                                                 "(default STORE/figures)."),
    bootstrap: int = typer.Option(None, "--bootstrap", help="Also give stratified bootstrap AUC CIs with N "
                                   "resamples (default 0: DeLong only)."),
    seed: int = typer.Option(None, "--seed", help="Seed of the bootstrap and ROC bands (default 0)."),
    head: list[str] = typer.Option(None, "--head", help="Head to evaluate, NAME or NAME@VERSION (repeatable; "
                                   "default: every trained head at its latest version)."),
    as_json: bool = typer.Option(False, "--json", help="Print the metrics as JSON."),
) -> None:
    """Evaluate every head per evaluation group (AUC [95 % CI], cutoff metrics, DeLong, calibration, decision curves)."""
    from analysis.evaluation import EvaluateConfig, evaluate
    from models.heads import score_heads

    fs = _store(store)
    scores = score_heads(fs, heads=tuple(head) if head else None, write=True)
    res = evaluate(fs, config_from(EvaluateConfig(), bootstrap=bootstrap, seed=seed), out=out, scores=scores)
    if as_json:
        echo_json({"metrics": res.metrics.to_dict(orient="records"),
                   "delong": res.delong.to_dict(orient="records")})
        return
    typer.echo(res.summary.to_string())


def register(app: typer.Typer) -> None:
    """Add this stage's commands to ``app``."""
    app.command("train-heads")(train_heads_cmd)
    app.command("evaluate")(evaluate_cmd)
