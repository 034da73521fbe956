"""The ``dltr`` command line: thin, one library call per command.

Each stage registers its commands from its own module (``_cohort``, ``_ingest``,
...), so that stages stay apart. Conventions: outputs go where ``--out`` or
``--store`` say; long work shows a progress bar; bad input prints one line and
exits non-zero (the traceback only with ``--debug``); ``--json`` where a machine
reads the result.
"""

from __future__ import annotations

import importlib
import sys
from importlib.metadata import version as _dist_version

import typer

from dltr.core.exceptions import DltrError

app = typer.Typer(
    name="dltr",
    help="Feature-store pipeline for MRI deep learning in HCC: response to TACE from MRI + clinical data.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

_STATE = {"debug": False}

# One module per stage; each defines register(app).
_COMMAND_MODULES = (
    "_cohort",  # validate, synth
    "_ingest",  # ingest
    "_encoder",  # train-encoder
    "_store",  # store ..., sql
    "_extract",  # extract
    "_radiomics",  # radiomics
    "_heads",  # train-heads, evaluate
    "_analysis",  # survival, genes
    "_demo",  # demo, report
    "_bench",  # bench
    "_serve",  # predict, serve
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"dltr {_dist_version('dltr')}")
        raise typer.Exit()


@app.callback()
def _root(
    debug: bool = typer.Option(False, "--debug", help="Show Python tracebacks on errors."),
    version: bool = typer.Option(
        False, "--version", callback=_version, is_eager=True, help="Print the version and exit."
    ),
) -> None:
    _STATE["debug"] = debug


for _name in _COMMAND_MODULES:
    importlib.import_module(f"dltr.cli.{_name}").register(app)


def main(argv: list[str] | None = None) -> int:
    """Console-script entry point: one-line errors unless ``--debug``."""
    args = sys.argv[1:] if argv is None else argv
    debug = "--debug" in args
    try:
        rc = app(args=args, standalone_mode=False)
    except DltrError as e:
        if debug:
            raise
        typer.secho(f"error: {e}", err=True, fg="red")
        return e.exit_code
    except typer.Exit as e:
        return e.exit_code
    except typer.Abort:
        typer.secho("aborted", err=True)
        return 130
    except KeyboardInterrupt:
        return 130
    except Exception as e:  # noqa: BLE001 - the CLI's last line of defence
        import click

        if isinstance(e, click.ClickException):
            e.show()
            return e.exit_code
        if debug:
            raise
        typer.secho(f"error: {type(e).__name__}: {e} (re-run with --debug for the traceback)", err=True, fg="red")
        return 1
    return rc if isinstance(rc, int) else 0
