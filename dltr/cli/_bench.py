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
    ) -> None:
        """Run the benchmark suites: each figure against a baseline from the same run, with its ceiling."""
        from benchmarks.harness import machine_info, render_markdown, run_suites

        figures = run_suites(out, quick=quick, only=only or None, scale=scale, seed=seed,
                             log=lambda m: typer.echo(m, err=True))
        typer.echo(render_markdown(figures, machine_info()))
        typer.echo(f"results: {out / 'results.json'}, {out / 'results.md'}", err=True)
