"""The architecture, checked: the import-linter contracts (floors, core independence; pyproject.toml) pass,
no module imports another package's private (``_name``) module or name, and no module but
``dltr/core/layout.py`` spells a store path."""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PACKAGES = ("dltr", "pipeline", "features", "models", "analysis", "benchmarks")
STORE_NAMES = ("volumes.zarr", "intensity_stats.parquet", "studies.parquet", "clinical.parquet", "model_card.json",
               "model.safetensors", "registry.json", "catalog.duckdb", "head.json", ".writer.lock")
LAYOUT = Path("dltr/core/layout.py")


def _modules():
    for pkg in PACKAGES:
        for f in sorted((REPO / pkg).rglob("*.py")):
            rel = f.relative_to(REPO)
            parts = list(rel.with_suffix("").parts)
            is_pkg = parts[-1] == "__init__"
            yield rel, ".".join(parts[:-1] if is_pkg else parts), is_pkg, ast.parse(f.read_text(), str(f))


def _targets(node, mod: str, is_pkg: bool):
    if isinstance(node, ast.Import):
        return [(n.name, None) for n in node.names]
    if isinstance(node, ast.ImportFrom):
        if node.level:
            base = mod.split(".") if is_pkg else mod.split(".")[:-1]
            base = base[: len(base) - (node.level - 1)]
            target = ".".join(base + ([node.module] if node.module else []))
        else:
            target = node.module or ""
        return [(target, n.name) for n in node.names]
    return []


def _private_owner(target: str, name: str | None) -> str | None:
    """The package that owns a private module or name in ``target`` (None when nothing private)."""
    parts = target.split(".")
    for i, p in enumerate(parts):
        if p.startswith("_") and not p.startswith("__"):
            return ".".join(parts[:i])
    if name and name.startswith("_") and not name.startswith("__"):
        return target
    return None


def test_import_linter_contracts_pass():
    lint = Path(sys.executable).with_name("lint-imports")
    p = subprocess.run([str(lint)], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-2000:]
    assert re.search(r"Contracts: \d+ kept, 0 broken", p.stdout), p.stdout[-2000:]


def test_no_private_imports_across_packages():
    bad = []
    for rel, mod, is_pkg, tree in _modules():
        for node in ast.walk(tree):
            for target, name in _targets(node, mod, is_pkg):
                if target.split(".")[0] not in PACKAGES:
                    continue
                owner = _private_owner(target, name)
                if owner is not None and not (mod == owner or mod.startswith(owner + ".")):
                    bad.append(f"{rel}:{node.lineno} imports {target}{'.' + name if name else ''}")
    assert bad == []


@pytest.mark.parametrize("name", STORE_NAMES)
def test_store_paths_are_spelled_only_by_the_layout(name):
    spelled = sorted(str(rel) for rel, _mod, _pkg, tree in _modules() for node in ast.walk(tree)
                     if isinstance(node, ast.Constant) and isinstance(node.value, str) and name in node.value
                     and "\n" not in node.value)
    assert set(spelled) <= {str(LAYOUT)}, spelled


def test_the_checks_find_what_they_look_for():
    """The AST checks above are not vacuous: a planted private import and a planted store literal are found."""
    tree = ast.parse("from features._store import X\nfrom pipeline.ingest import _helper\np = 'volumes.zarr'\n")
    owners = [_private_owner(t, n) for node in ast.walk(tree) for t, n in _targets(node, "models.x", False)]
    assert owners == ["features", "pipeline.ingest"]
    assert any(isinstance(n, ast.Constant) and n.value == "volumes.zarr" for n in ast.walk(tree))
