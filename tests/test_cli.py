"""The CLI's conventions: --help everywhere, --version, one-line errors without tracebacks."""

from __future__ import annotations

import importlib.metadata
import subprocess
import sys

import pytest
import typer.main

from dltr.cli import app, main

COMMANDS = sorted(typer.main.get_command(app).commands)


def _run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "dltr", *args], capture_output=True, text=True, timeout=120)


def test_version_matches_installed_distribution():
    out = _run("--version")
    assert out.returncode == 0
    assert out.stdout.strip() == f"dltr {importlib.metadata.version('dltr')}"


def test_every_stage_registered_its_commands():
    expected = {"validate", "synth", "ingest", "train-encoder", "store", "sql", "extract", "train-heads",
                "evaluate", "survival", "genes", "demo", "report", "bench"}
    assert expected <= set(COMMANDS), f"missing: {sorted(expected - set(COMMANDS))}"


@pytest.mark.parametrize("command", COMMANDS)
def test_every_command_has_help_text(command, capsys):
    code = main([command, "--help"])
    out = capsys.readouterr().out
    assert code == 0
    assert "Usage" in out and "--help" in out
    # Every option documents itself: no option line without text after its name.
    cmd = typer.main.get_command(app).commands[command]
    for p in getattr(cmd, "params", []):
        if p.param_type_name == "option":
            assert p.help, f"dltr {command}: option {p.opts} has no help text"


def test_bad_input_is_one_line_without_traceback(tmp_path):
    out = _run("validate", str(tmp_path / "no-such-cohort"))
    assert out.returncode != 0
    assert "Traceback" not in out.stderr
    lines = [ln for ln in out.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and "no-such-cohort" in lines[0]


def test_debug_shows_the_traceback(tmp_path):
    out = _run("--debug", "validate", str(tmp_path / "no-such-cohort"))
    assert out.returncode != 0
    assert "Traceback" in out.stderr
