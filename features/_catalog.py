"""``STORE/catalog.duckdb``: one view per table and per feature set (latest); pinned versions on demand.

View names: a table ``clinical`` -> ``clinical``; a feature set ``dltr`` -> ``dltr`` (latest
version), and each version ``v`` -> ``dltr__v`` (plain identifier) and ``"dltr@v"`` (quoted).
The file holds the table and latest views only, so a commit costs the same at the thousandth
version as at the tenth (DuckDB reads and rewrites its whole catalog on open and checkpoint: 2,000
pinned views made a commit 4x slower than at 10 versions). The pinned views are temporary views that
every store session creates, from the registry, for the names its query uses (``pinned_views``);
outside dltr a pinned version reads as ``read_parquet('STORE/<version path>/*/*.parquet')``.
A feature set whose lineage names its dimensions (``feature_names``, e.g. ``radiomics``) also has the long
view ``radiomics_long`` (latest) and, on demand like the other pinned views, ``radiomics_long__v``.
The catalog is derived from the registry: after each registry commit it is rebuilt into a temporary
file and renamed into place, so a reader (``read_only=True``) never waits on a writer. It records the
store root and registry revision it was built from; a reader that finds either different (the store
was moved, or a writer died between its commit and the rebuild) refreshes it, or, when a writer
holds the lock, builds a private copy for itself.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import tempfile
import time
from collections.abc import Iterable
from pathlib import Path

import duckdb

from dltr.core.io import fsync_dir
from dltr.core.layout import StoreLayout
from dltr.core.lock import try_lock
from features._registry import FeatureSetVersion, Registry
from features._rows import is_packed

CATALOG_NAME = StoreLayout(Path(".")).catalog.name  # the file name of a catalog (a private copy has the same)
META = "_dltr_catalog"
MANAGED = "_dltr_views"
NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def version_glob(root: Path, v: FeatureSetVersion, *, resolved: bool = False) -> str:
    base = Path(root) if resolved else Path(root).resolve()
    return (base / v.path / "*" / "*.parquet").as_posix()


def version_select(root: Path, v: FeatureSetVersion, *, resolved: bool = False) -> str:
    """The SELECT behind a version's view: Parquet lists -> DuckDB ``FLOAT[D]`` arrays (a packed version's
    embedding stays the BLOB of its 4 * D little-endian float32 bytes: ``features._rows.PACKED``)."""
    emb = "embedding" if is_packed(v.lineage) else f"CAST(embedding AS FLOAT[{int(v.dim)}]) AS embedding"
    return ("SELECT patient_id, center, phases, roi_box, input_checksum, "
            f"{emb} "
            f"FROM read_parquet({literal(version_glob(root, v, resolved=resolved))}, hive_partitioning = false)")


def long_select(root: Path, v: FeatureSetVersion, *, resolved: bool = False) -> str | None:
    """The long form of a version whose producer named its dimensions (lineage ``feature_names``: one
    ``a/b/c`` name per dimension, split into the columns ``feature_name_parts``): one row per patient and
    dimension, ``(patient_id, center, <parts...>, value)``; None when the lineage names none."""
    names, parts = v.lineage.get("feature_names"), v.lineage.get("feature_name_parts") or ["feature"]
    if not isinstance(names, list) or len(names) != int(v.dim) or not all(NAME_RE.match(str(p)) for p in parts):
        return None
    k = len(parts)
    split = [str(n).split("/", k - 1) for n in names]
    if any(len(q) != k for q in split):
        return None
    values = ", ".join(f"({i + 1}, {', '.join(literal(x) for x in q)})" for i, q in enumerate(split))
    cols = ", ".join(f"n.{ident(p)}" for p in parts)
    return (f"SELECT f.patient_id, f.center, {cols}, f.embedding[n.i] AS value "
            f"FROM ({version_select(root, v, resolved=resolved)}) AS f "
            f"CROSS JOIN (VALUES {values}) AS n(i, {', '.join(ident(p) for p in parts)})")


def table_select(root: Path, entry: dict, *, resolved: bool = False) -> str:
    base = Path(root) if resolved else Path(root).resolve()
    return f"SELECT * FROM read_parquet({literal((base / entry['path']).as_posix())})"


def view_statements(root: Path, reg: Registry) -> list[tuple[str, str]]:
    """(view name, SELECT) of the catalog file: every table, every feature set's latest version and, for a
    feature set with named dimensions, its latest long view."""
    root = Path(root).resolve()
    out = [(name, table_select(root, entry, resolved=True)) for name, entry in sorted(reg.tables().items())]
    for name in reg.feature_sets():
        latest = reg.resolve(name)
        out.append((name, version_select(root, latest, resolved=True)))
        long = long_select(root, latest, resolved=True)
        if long is not None and f"{name}_long" not in reg.tables() and f"{name}_long" not in reg.feature_sets():
            out.append((f"{name}_long", long))
    return out


def pinned_names(reg: Registry, texts: Iterable[str]) -> dict[str, FeatureSetVersion]:
    """The pinned-version view names (``name@version``, ``name__version``; a registered feature set
    and the full id of one of its versions) that occur in ``texts``, with their versions."""
    sets = reg.feature_sets()
    if not sets:
        return {}
    pattern = re.compile("(?<![A-Za-z0-9_])(" + "|".join(map(re.escape, sets)) + r")(@|__|_long__)([0-9a-f]+)")
    out: dict[str, FeatureSetVersion] = {}
    for text in texts:
        for m in pattern.finditer(text):
            name, vid = m.group(1), m.group(3)
            if m.group(0) not in out and reg.has_version(name, vid):
                out[m.group(0)] = reg.resolve(name, vid)
    return out


def pinned_views(con: duckdb.DuckDBPyConnection, root: Path, reg: Registry, texts: Iterable[str]) -> None:
    """Create, as temporary views of ``con``, the pinned-version views that ``texts`` (SQL) name."""
    for view, v in pinned_names(reg, texts).items():
        sel = long_select(root, v) if view.startswith(f"{v.name}_long__") else version_select(root, v)
        if sel is not None:
            con.execute(f"CREATE OR REPLACE TEMP VIEW {ident(view)} AS {sel}")


def build_catalog(root: Path, reg: Registry, dest: Path) -> None:
    """Write a catalog for ``reg`` to ``dest`` atomically, keeping objects users created with --write."""
    dest = Path(dest)
    fd, tmp = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".tmp", dir=dest.parent)
    os.close(fd)
    os.unlink(tmp)
    try:
        if dest.exists():
            shutil.copyfile(dest, tmp)
        try:
            con = duckdb.connect(tmp)
        except duckdb.Error:  # an unreadable old catalog: start afresh
            os.unlink(tmp)
            con = duckdb.connect(tmp)
        try:
            _fill(con, root, reg)
        finally:
            con.close()
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, dest)
        fsync_dir(dest.parent)
    finally:
        for p in (tmp, tmp + ".wal"):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(p)


def _fill(con: duckdb.DuckDBPyConnection, root: Path, reg: Registry) -> None:
    """Bring the catalog's views in line with ``reg``, touching only views whose SELECT changed.

    ``_dltr_views`` records each managed view's name and SELECT, so a commit that adds one version
    creates its two views and replaces the feature set's latest view: the cost of a commit does not
    grow with the versions already in the store (creating a view binds it, which reads its Parquet
    footers). A catalog from before the SELECT was recorded is rebuilt in full once.
    """
    cols = [r[0] for r in con.execute(
        "SELECT column_name FROM duckdb_columns() WHERE database_name = current_database() "
        "AND schema_name = 'main' AND table_name = ?", [MANAGED]).fetchall()]
    if cols and "sql" not in cols:
        for (name,) in con.execute(f"SELECT name FROM {MANAGED}").fetchall():
            con.execute(f"DROP VIEW IF EXISTS {ident(name)}")
        con.execute(f"DROP TABLE {MANAGED}")
    con.execute(f"CREATE TABLE IF NOT EXISTS {MANAGED} (name VARCHAR PRIMARY KEY, sql VARCHAR)")
    have = dict(con.execute(f"SELECT name, sql FROM {MANAGED}").fetchall())
    want = dict(view_statements(root, reg))
    gone = [n for n in have if n not in want]
    changed = [(n, sel) for n, sel in want.items() if have.get(n) != sel]
    for name in gone:
        con.execute(f"DROP VIEW IF EXISTS {ident(name)}")
    for name, sel in changed:
        con.execute(f"CREATE OR REPLACE VIEW {ident(name)} AS {sel}")
    stale = gone + [n for n, _ in changed if n in have]
    if stale:
        con.execute(f"DELETE FROM {MANAGED} WHERE list_contains(?, name)", [stale])
    if changed:
        con.executemany(f"INSERT INTO {MANAGED} VALUES (?, ?)", [[n, sel] for n, sel in changed])
    con.execute(f"CREATE OR REPLACE TABLE {META} AS SELECT ? AS root, ?::BIGINT AS revision",
                [str(Path(root).resolve()), reg.revision])
    con.execute("CHECKPOINT")


def catalog_state(path: Path) -> tuple[str, int] | None:
    """(root, registry revision) the catalog at ``path`` was built from; None if unreadable."""
    if not Path(path).exists():
        return None
    try:
        con = duckdb.connect(str(path), read_only=True)
    except duckdb.Error:
        return None
    try:
        row = con.execute(f"SELECT root, revision FROM {META}").fetchone()
        return (row[0], int(row[1])) if row else None
    except duckdb.Error:
        return None
    finally:
        con.close()


@contextlib.contextmanager
def fresh_catalog(root: Path):
    """Yield the path of a catalog matching the current registry.

    The shared catalog when it is fresh (a writer mid-publish is given a moment to finish its
    rebuild); when the store was moved, the shared catalog is rebuilt if no writer holds the lock;
    otherwise a private temporary catalog, removed afterwards. Readers never wait on the lock.
    """
    root = Path(root)
    shared = root / CATALOG_NAME
    here = str(root.resolve())
    for attempt in range(4):
        reg = Registry.load(root)
        state = catalog_state(shared)
        if state == (here, reg.revision):
            yield shared
            return
        if state is not None and state[0] != here:
            break
        time.sleep(0.02 * (attempt + 1))
    if state is None or state[0] != here:
        lock = try_lock(root, "refresh the catalog of a moved store")
        if lock is not None:
            try:
                build_catalog(root, Registry.load(root), shared)
            finally:
                lock.release()
            yield shared
            return
    tmpdir = tempfile.mkdtemp(prefix="dltr-catalog-")
    try:
        private = Path(tmpdir) / CATALOG_NAME
        build_catalog(root, reg, private)
        yield private
    finally:
        shutil.rmtree(tmpdir, ignore_errors=True)
