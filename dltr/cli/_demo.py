"""``dltr demo`` (the whole pipeline on a synthetic cohort) and ``dltr report`` (rebuild the report)."""

from __future__ import annotations

from pathlib import Path

import typer

from dltr.cli._common import PSEUDONYM_HELP, Bars, echo_json, pseudonym_key


def _check_evaluated(store: Path, ref: str) -> None:
    """The report renders the store's evaluation: the head version asked for must be the one evaluated."""
    from dltr.core.exceptions import StoreError
    from dltr.core.vocabulary import parse_ref
    from features import FeatureStore

    name, version = parse_ref(ref, what="--head")
    fs = FeatureStore(store, create=False)
    got = []
    if "eval_metrics" in fs.tables():
        t = fs.table("eval_metrics").select(["head", "head_version"]).to_pylist()
        got = sorted({r["head_version"] for r in t if r["head"] == name})
    if not got or (version is not None and version not in got):
        held = f"holds {name}@{got[0]}" if got else f"holds no evaluation of {name}"
        raise StoreError(f"{store}: the evaluation {held}; run `dltr evaluate --store {store} --head {ref}` "
                         "before `dltr report --head`")


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
        with Bars() as bars:
            res = run_demo(out, cfg, log=lambda m: typer.echo(m, err=True), progress=bars.update)
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
        head: list[str] = typer.Option(None, "--head", help="NAME@VERSION the report must show (repeatable): "
                                       "refused unless the store's evaluation holds that version."),
    ) -> None:
        """Rebuild report.html and report.md from a store, recomputing nothing."""
        from dltr.report import build_report

        for ref in head or ():
            _check_evaluated(store, ref)
        out = out or store.resolve().parent / "report"
        if truth is None and (store.resolve().parent / "synthetic" / "truth").exists():
            truth = store.resolve().parent / "synthetic" / "truth"
        html, md = build_report(store, out, truth_dir=truth)
        typer.echo(f"report: {html}\n        {md}")
