"""CLI of the ingest stage: ``dltr ingest COHORT --store STORE``."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import typer

from dltr.cli._common import PSEUDONYM_HELP, Bars, config_from, echo_json, pseudonym_key
from dltr.core.exceptions import IngestError


def _spacing(text: str | None) -> tuple[float, float, float] | None:
    if not text:
        return None
    try:
        vals = tuple(float(x) for x in text.split(","))
    except ValueError:
        vals = ()
    if len(vals) != 3:
        raise IngestError(f"--target-spacing {text!r}: give three mm values as X,Y,Z (e.g. 0.8,0.8,3)")
    return vals


def ingest_cmd(
    cohort: Path = typer.Argument(..., help="Cohort folder (manifest.csv, clinical.csv, images)."),
    store: Path = typer.Option(..., "--store", help="Store folder; the volumes go to its Zarr volume store."),
    workers: int = typer.Option(None, "--workers", help="Workers of the local Dask cluster (default 2)."),
    scheduler: str = typer.Option(None, "--scheduler", help="Address of an existing Dask scheduler to use instead."),
    threads: bool = typer.Option(None, "--threads/--processes", help="Local Dask workers as threads in this "
                                 "process or one process per worker (default: IngestConfig's, threads)."),
    target_spacing: str = typer.Option(None, "--target-spacing", help="Resample to X,Y,Z mm (default: native)."),
    strict: bool = typer.Option(False, "--strict", help="Fail the run (exit 2) if any file has an error."),
    pseudonym_key_env: str = typer.Option(None, "--pseudonym-key-env", help=PSEUDONYM_HELP),
    as_json: bool = typer.Option(False, "--json", help="Print the run summary as JSON."),
) -> None:
    """Decode a cohort's DICOM / NIfTI / NRRD images once into the canonical, chunked Zarr volume store."""
    from pipeline.ingest import IngestConfig, ingest_cohort

    key = pseudonym_key(pseudonym_key_env)
    cfg = config_from(IngestConfig(), target_spacing=_spacing(target_spacing), workers=workers,
                      processes=None if threads is None else not threads, scheduler_address=scheduler,
                      strict=strict or None, pseudonym_key=key)
    try:
        with Bars() as bars:
            report = ingest_cohort(cohort, store, cfg, on_patient=lambda _r: bars.advance("ingest"))
    except IngestError as e:
        if getattr(e, "report", None) is not None:
            _print_errors(e.report, store)
        raise
    _print_errors(report, store)
    s = report.summary
    if as_json:
        echo_json(s)
        return
    typer.echo(f"patients {s['patients']} (ok {s['ok']}, unchanged {s['skipped']}, failed {s['failed']}), "
               f"volumes {s['volumes']}, source {s['source_mb']:.1f} MB decoded, {s['written_mb']:.1f} MB written, "
               f"{s['mb_per_s']:.1f} MB/s, {s['seconds']:.1f} s")


def _print_errors(report, store: Path) -> None:
    if report.errors:
        codes = Counter(e["code"] for e in report.errors)
        typer.echo(f"{len(report.errors)} error(s) ({', '.join(f'{k}: {v}' for k, v in sorted(codes.items()))}); "
                   f"table: {store / 'ingest/errors.parquet'}", err=True)
        for e in report.errors[:20]:
            typer.echo(f"  {e['file']} row {e['row']} [{e['code']}]: {e['reason']}", err=True)


def register(app: typer.Typer) -> None:
    """Add this stage's commands to ``app``."""
    app.command("ingest")(ingest_cmd)
