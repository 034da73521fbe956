"""``dltr bench``: the benchmark suites (benchmarks/), results.json + results.md."""

from __future__ import annotations

from pathlib import Path

import typer


def register(app: typer.Typer) -> None:
    @app.command("bench")
    def bench(
        out: Path = typer.Option(Path("bench-out"), "--out", help="Folder for results.json, results.md and scratch data."),
        quick: bool = typer.Option(False, "--quick", help="Small sizes, 3 repetitions: a smoke run in a few minutes."),
        only: list[str] = typer.Option(None, "--only", help="Run only this suite (repeatable)."),
        scale: float = typer.Option(1.0, "--scale", help="Multiply every problem size by this factor."),
        seed: int = typer.Option(0, "--seed", help="Seed of the generated benchmark data."),
        repeats: int = typer.Option(None, "--repeats", min=1, help="Timed runs per measurement (default 3 with "
                                    "--quick, else 5); the figures report their median, min and max."),
        seeds: str = typer.Option(None, "--seeds", help="validity: comma-separated cohort seeds (default 0,1,2,3,4)."),
        cohort: Path = typer.Option(None, "--cohort", help="validity: a cohort folder instead of the synthetic one."),
        truth: Path = typer.Option(None, "--truth", help="validity: the cohort's truth folder (patients.csv, p_true)."),
        sets: list[str] = typer.Option(None, "--set", help="validity: KEY=VALUE method option, e.g. "
                                       "normalisation=zscore (repeatable)."),
    ) -> None:
        """Run the benchmark suites: each figure against a baseline from the same run, with its ceiling."""
        from benchmarks.harness import machine_info, render_markdown, run_suites

        options = dict(kv.split("=", 1) for kv in sets or [] if "=" in kv)
        options.update({k: str(v) for k, v in (("seeds", seeds), ("cohort", cohort), ("truth", truth)) if v})
        figures = run_suites(out, quick=quick, only=only or None, scale=scale, seed=seed,
                             log=lambda m: typer.echo(m, err=True), options=options, repeats=repeats)
        typer.echo(render_markdown(figures, machine_info()))
        typer.echo(f"results: {out / 'results.json'}, {out / 'results.md'}", err=True)
