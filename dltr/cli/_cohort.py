"""``dltr validate`` and ``dltr synth``: the cohort contract and the synthetic cohort."""

from __future__ import annotations

from pathlib import Path

import typer

from dltr.cli._common import echo_json, progress


def validate(
    cohort: Path = typer.Argument(..., help="Cohort folder (manifest.csv, clinical.csv, ...)."),
    as_json: bool = typer.Option(False, "--json", help="Print the report as JSON (summary + issues)."),
) -> None:
    """Check a cohort folder against the cohort contract; exit code 2 when it has errors."""
    from dltr.cohort import validate_cohort

    report = validate_cohort(cohort)
    if as_json:
        echo_json(report.to_dict())
    else:
        for issue in report.issues:
            row = "-" if issue.row is None else str(issue.row)
            typer.echo(f"{issue.severity:<8} {issue.file:<15} row {row:>5}  {issue.column or '-':<14} {issue.reason}")
        s = report.summary
        typer.echo(f"{'OK' if s['ok'] else 'FAILED'}: {s['errors']} errors, {s['warnings']} warnings; "
                   f"{s['patients']} patients, {s['manifest_rows']} images, phases {', '.join(s['phases'])}, "
                   f"centers {', '.join(s['centers'])}")
    if not report.ok:
        from dltr.core.exceptions import CohortError

        first = report.errors[0]
        raise CohortError(f"{cohort}: {len(report.errors)} errors, first: {first.file}"
                          + (f" row {first.row}" if first.row is not None else "") + f": {first.reason}")


def synth(
    out: Path = typer.Argument(..., help="Output folder; gets cohort/ and truth/ (replaced if a previous synth)."),
    profile: str = typer.Option(None, "--profile", help="Size profile: default (demo) or tiny (tests)."),
    seed: int = typer.Option(None, "--seed", help="Random seed (default 0); the same seed gives the same bytes."),
    patients: int = typer.Option(None, "--patients", help="Patients per center (overrides the profile)."),
    gene_sets: Path = typer.Option(None, "--gene-sets", help="GMT file whose pathways are planted in expression."),
    as_json: bool = typer.Option(False, "--json", help="Print the result (paths, counts, oracle AUCs) as JSON."),
) -> None:
    """Write a synthetic multicenter TACE cohort (three centers, NIfTI + DICOM) and its ground truth."""
    from dltr.core.exceptions import DltrError
    from dltr.synth import SynthConfig, synthesize

    if gene_sets is not None and not gene_sets.is_file():
        raise DltrError(f"--gene-sets {gene_sets}: file does not exist; give a GMT file")
    given = {"patients": patients, "seed": seed, "gene_sets": None if gene_sets is None else str(gene_sets.absolute())}
    cfg = SynthConfig.profile(profile or SynthConfig.profile_name, **{k: v for k, v in given.items() if v is not None})
    res = synthesize(out, cfg, progress=lambda it: progress(it, desc="patients"))
    if as_json:
        echo_json(res.to_dict())
        return
    typer.echo(f"wrote {res.n_patients} patients ({res.n_files} files) to {res.cohort} in {res.seconds:.1f} s; "
               f"truth in {res.truth}")
    for c, r in res.centers.items():
        typer.echo(f"  center {c}: n={r['n']}, response rate {r['response_rate']:.2f}, oracle AUC "
                   f"{r['oracle_auc']:.3f} (image-only {r['image_only_auc']:.3f}, clinical-only "
                   f"{r['clinical_only_auc']:.3f})")


def register(app: typer.Typer) -> None:
    """Add this stage's commands to ``app``."""
    app.command("validate")(validate)
    app.command("synth")(synth)
