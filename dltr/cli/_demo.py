"""``dltr demo`` (the whole pipeline on a synthetic cohort) and ``dltr report`` (rebuild the report)."""

from __future__ import annotations

from pathlib import Path

import typer

from dltr.cli._common import PSEUDONYM_HELP, echo_json, pseudonym_key


def register(app: typer.Typer) -> None:
    @app.command("demo")
    def demo(
        out: Path = typer.Option(Path("demo-out"), "--out", help="Folder for the cohort, the store and the report."),
        profile: str = typer.Option(None, "--profile", help="Synthetic cohort size: default (380 patients) or tiny."),
        seed: int = typer.Option(None, "--seed", help="Seed of the cohort and of every model (default 0)."),
        epochs: int = typer.Option(None, "--epochs", help="Encoder training epochs per fold (default by profile)."),
        gene_sets: Path = typer.Option(None, "--gene-sets", help="GMT file of gene sets for the generator and the "
                                       "enrichment (default: MSigDB Hallmark beside the checkout, if present)."),
        pseudonym_key_env: str = typer.Option(None, "--pseudonym-key-env", help=PSEUDONYM_HELP),
        as_json: bool = typer.Option(False, "--json", help="Print the stage records as JSON at the end."),
    ) -> None:
        """Run every stage on a synthetic cohort and write OUT/report/report.html; a re-run reuses what is done."""
        from dltr.demo import DemoConfig, run_demo

        cfg = DemoConfig.for_profile(profile or DemoConfig.profile, seed=seed, epochs=epochs,
                                     gene_sets=str(gene_sets) if gene_sets else None,
                                     pseudonym_key=pseudonym_key(pseudonym_key_env))
        res = run_demo(out, cfg, log=lambda m: typer.echo(m, err=True))
        if as_json:
            echo_json({"report_html": str(res.report_html), "report_md": str(res.report_md),
                       "seconds": res.seconds, "stages": res.stages})
            return
        typer.echo(f"report: {res.report_html}")
        typer.echo(f"        {res.report_md}")
        typer.echo(f"total {res.seconds:.1f} s")

    @app.command("report")
    def report(
        store: Path = typer.Option(..., "--store", help="Store folder to report on."),
        out: Path = typer.Option(None, "--out", help="Report folder (default: STORE/../report)."),
        truth: Path = typer.Option(None, "--truth", help="Ground-truth folder of a synthetic cohort, for the oracle."),
    ) -> None:
        """Rebuild report.html and report.md from a store, recomputing nothing."""
        from dltr.report import build_report

        out = out or store.resolve().parent / "report"
        if truth is None and (store.resolve().parent / "synthetic" / "truth").exists():
            truth = store.resolve().parent / "synthetic" / "truth"
        html, md = build_report(store, out, truth_dir=truth)
        typer.echo(f"report: {html}\n        {md}")
