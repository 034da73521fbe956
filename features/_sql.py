"""SQL over the store: read-only by default, enforced by DuckDB itself, not by pattern matching.

A read-only session (1) accepts only statements DuckDB's own parser classifies as SELECT (which
covers DESCRIBE, SHOW, SUMMARIZE, FROM-first queries) or EXPLAIN of one, (2) opens the catalog with
``read_only=True`` (DuckDB refuses DDL/DML on it), and (3) disables external access except for the
store's own data folders and locks the configuration, so ``COPY ... TO``, ``ATTACH`` of another file,
``INSTALL``/``LOAD`` and reading files outside the store are refused by the engine as well.
"""

from __future__ import annotations

import re
import shutil
import tempfile
from pathlib import Path

import duckdb
import pyarrow as pa

from dltr.exceptions import ReadOnlyQueryError, StoreError
from features._catalog import CATALOG_NAME, build_catalog, fresh_catalog, literal
from features._lock import WriterLock
from features._registry import Registry

_READ_TYPES = {"SELECT"}
_EXPLAIN = re.compile(r"^\s*EXPLAIN(\s+ANALY[SZ]E)?\s+", re.IGNORECASE)


def check_read_only(query: str) -> list[str]:
    """The statements of ``query``; ReadOnlyQueryError if any of them could write."""
    try:
        stmts = duckdb.extract_statements(query)
    except duckdb.Error as e:
        raise StoreError(f"SQL does not parse: {str(e).splitlines()[0]}") from e
    if not stmts:
        raise StoreError("SQL is empty; give a SELECT statement")
    out = []
    for s in stmts:
        kind = str(s.type).rsplit(".", 1)[-1]
        text = s.query.strip()
        if kind == "EXPLAIN":
            inner = _EXPLAIN.sub("", text, count=1)
            kinds = {str(t.type).rsplit(".", 1)[-1] for t in duckdb.extract_statements(inner)}
            if kinds <= _READ_TYPES:
                out.append(text)
                continue
        elif kind in _READ_TYPES:
            out.append(text)
            continue
        raise ReadOnlyQueryError(
            f"refused {kind} statement {text[:60]!r}: `dltr sql` is read-only (only SELECT, DESCRIBE, SHOW, "
            "EXPLAIN); re-run with --write to modify the catalog, or use FeatureStore.write_table")
    return out


def _lock_down(con: duckdb.DuckDBPyConnection, root: Path) -> None:
    dirs = ", ".join(literal((root.resolve() / d).as_posix() + "/") for d in ("features", "tables"))
    con.execute(f"SET allowed_directories = [{dirs}]")
    con.execute("SET enable_external_access = false")
    con.execute("SET autoinstall_known_extensions = false")
    con.execute("SET autoload_known_extensions = false")
    con.execute("SET lock_configuration = true")


def _run(con: duckdb.DuckDBPyConnection, stmts: list[str]) -> pa.Table:
    result = None
    for i, s in enumerate(stmts):
        if i < len(stmts) - 1:
            con.execute(s).fetchall()
        else:
            rel = con.sql(s)
            result = rel.to_arrow_table() if rel is not None else pa.table({})
    return result if result is not None else pa.table({})


def run_read_only(root: Path, query: str) -> pa.Table:
    stmts = check_read_only(query)
    with fresh_catalog(root) as path:
        con = duckdb.connect(str(path), read_only=True)
        try:
            _lock_down(con, root)
            return _run(con, stmts)
        except duckdb.PermissionException as e:
            raise ReadOnlyQueryError(f"refused: {str(e).splitlines()[0]} (read-only session)") from e
        except duckdb.Error as e:
            raise StoreError(f"SQL failed: {str(e).splitlines()[0]}") from e
        finally:
            con.close()


def run_write(root: Path, query: str) -> pa.Table:
    """Run any SQL on a copy of the catalog under the writer lock, then swap the copy in."""
    try:
        duckdb.extract_statements(query)
    except duckdb.Error as e:
        raise StoreError(f"SQL does not parse: {str(e).splitlines()[0]}") from e
    with WriterLock(root, "run SQL with --write"):
        shared = root / CATALOG_NAME
        build_catalog(root, Registry.load(root), shared)
        tmpdir = tempfile.mkdtemp(prefix=".sql-", dir=root)
        try:
            work = Path(tmpdir) / CATALOG_NAME
            shutil.copyfile(shared, work)
            con = duckdb.connect(str(work))
            try:
                out = _run(con, [s.query for s in duckdb.extract_statements(query)])
                con.execute("CHECKPOINT")
            except duckdb.Error as e:
                raise StoreError(f"SQL failed (catalog unchanged): {str(e).splitlines()[0]}") from e
            finally:
                con.close()
            build_catalog(root, Registry.load(root), work)  # managed views stay the registry's
            shutil.move(str(work), shared)
        finally:
            shutil.rmtree(tmpdir, ignore_errors=True)
    return out


def memory_connection(threads: int | None = None) -> duckdb.DuckDBPyConnection:
    con = duckdb.connect(":memory:")
    if threads:
        con.execute(f"SET threads = {int(threads)}")
    return con
