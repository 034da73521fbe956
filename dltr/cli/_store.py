"""``dltr store ...`` and ``dltr sql``: the feature store from the command line (thin: one library call each)."""

from __future__ import annotations

import sys
from pathlib import Path

import typer

from dltr.cli._common import PSEUDONYM_HELP, echo_json, pseudonym_key
from dltr.core.exceptions import StoreError

STORE_OPT = typer.Option(..., "--store", help="Store folder (created if missing).")
JSON_OPT = typer.Option(False, "--json", help="Print the result as JSON.")


def _store(path: Path):
    from features import FeatureStore

    return FeatureStore(path)


def _print_table(table, fmt: str, out: Path | None) -> None:
    import pyarrow.csv as pcsv
    import pyarrow.parquet as pq

    if fmt == "parquet":
        if out is None:
            raise StoreError("--format parquet needs --out FILE")
        from dltr.core.io import atomic_file

        with atomic_file(out) as f:
            pq.write_table(table, f)
        return
    if fmt == "csv":
        tbl = table
        for i, fld in enumerate(tbl.schema):  # CSV has no arrays: write them as JSON lists
            if fld.type.num_fields:
                import pyarrow as pa

                tbl = tbl.set_column(i, fld.name, pa.array([None if v is None else str(v) for v in
                                                             tbl.column(i).to_pylist()], pa.string()))
        if out is not None:
            pcsv.write_csv(tbl, out)
        else:
            buf = __import__("io").BytesIO()
            pcsv.write_csv(tbl, buf)
            sys.stdout.write(buf.getvalue().decode())
        return
    if fmt == "json":
        import json

        from dltr.core.hashing import json_default

        text = json.dumps(table.to_pylist(), indent=2, default=json_default) + "\n"
    elif fmt == "table":
        import pandas as pd

        with pd.option_context("display.max_rows", 200, "display.max_columns", 50, "display.width", 160):
            text = table.to_pandas().to_string(index=False) + f"\n({table.num_rows} rows)\n"
    else:
        raise StoreError(f"--format {fmt!r} is not one of table, csv, json, parquet")
    if out is not None:
        from dltr.core.io import atomic_write_text

        atomic_write_text(out, text)
    else:
        sys.stdout.write(text)


def register(app: typer.Typer) -> None:
    """Add ``dltr store`` (ls, describe, versions, diff, add-cohort) and ``dltr sql``."""
    store_app = typer.Typer(help="The feature store: feature sets, versions, cohort tables.", no_args_is_help=True)
    app.add_typer(store_app, name="store")

    @store_app.command("ls")
    def ls(store: Path = STORE_OPT, as_json: bool = JSON_OPT) -> None:
        """List feature sets (latest version, rows, dimension) and tables."""
        s = _store(store)
        fsets = [s.describe(n) for n in s.feature_sets()]
        tables = {n: s.describe(n) for n in s.tables()}
        if as_json:
            echo_json({"feature_sets": fsets, "tables": tables})
            return
        for d in fsets:
            typer.echo(f"feature set {d['name']:<20} latest {d['version_id']}  rows {d['row_count']:>8}  "
                       f"dim {d['dim']:>5}  versions {len(d['versions'])}  {d['status']}")
        for n, d in tables.items():
            typer.echo(f"table       {n:<20} rows {d['row_count']:>8}  {d['path']}")

    @store_app.command("describe")
    def describe(name: str = typer.Argument(..., help="Feature set (NAME or NAME@VERSION) or table name."),
                 store: Path = STORE_OPT) -> None:
        """Registry entry of a feature set version or table: schema, lineage, counts (JSON)."""
        echo_json(_store(store).describe(name))

    @store_app.command("versions")
    def versions(name: str = typer.Argument(..., help="Feature set name."), store: Path = STORE_OPT,
                 as_json: bool = JSON_OPT) -> None:
        """Every published version of a feature set, oldest first."""
        vs = _store(store).versions(name)
        if as_json:
            echo_json([v.to_dict() for v in vs])
            return
        for v in vs:
            typer.echo(f"{v.version_id}  {v.created_at}  rows {v.row_count:>8}  dim {v.dim}  {v.status}  "
                       f"producer {v.producer}")

    @store_app.command("diff")
    def diff(a: str = typer.Argument(..., help="First version, NAME@VERSION."),
             b: str = typer.Argument(..., help="Second version, NAME@VERSION."),
             store: Path = STORE_OPT, as_json: bool = JSON_OPT) -> None:
        """Rows added / removed / changed between two versions and per-dimension mean drift."""
        d = _store(store).diff(a, b)
        if as_json:
            echo_json(d)
            return
        typer.echo(f"{d['a']} -> {d['b']}: rows {d['rows_a']} -> {d['rows_b']}, added {len(d['added'])}, "
                   f"removed {len(d['removed'])}, changed {d['changed']}")
        if d.get("drift") is not None:
            typer.echo(f"mean drift: max |d| {d['drift_max_abs']:.6g}, L2 {d['drift_l2']:.6g}")

    @store_app.command("add-cohort")
    def add_cohort(cohort: Path = typer.Argument(..., help="Cohort folder (shared/spec/cohort.md)."),
                   store: Path = STORE_OPT,
                   pseudonym_key_env: str = typer.Option(None, "--pseudonym-key-env", help=PSEUDONYM_HELP),
                   as_json: bool = JSON_OPT) -> None:
        """Register the cohort's clinical, labs, expression and the ingest studies table in the store."""
        entries = _store(store).add_cohort(cohort, pseudonym_key=pseudonym_key(pseudonym_key_env))
        if as_json:
            echo_json(entries)
            return
        for n, e in entries.items():
            typer.echo(f"registered {n}: {e['row_count']} rows -> {e['path']}")

    @app.command("sql")
    def sql(query: str = typer.Argument(..., help="SQL to run against the store's catalog."),
            store: Path = STORE_OPT,
            fmt: str = typer.Option("table", "--format", help="Output format: table, csv, json or parquet."),
            out: Path = typer.Option(None, "--out", help="Write the result to this file instead of stdout."),
            write: bool = typer.Option(False, "--write", help="Allow statements that modify the catalog.")) -> None:
        """Run SQL on the store (read-only unless --write). Views: each table, each feature set
        (latest) and each version as NAME__VERSION or "NAME@VERSION"."""
        _print_table(_store(store).sql(query, write=write), fmt, out)
