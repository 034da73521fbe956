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
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TypeVar

import duckdb
import pyarrow as pa

from dltr.core.exceptions import ReadOnlyQueryError, StoreError
from dltr.core.lock import WriterLock
from features._catalog import CATALOG_NAME, build_catalog, fresh_catalog, pinned_views
from features._registry import Registry
from features._session import CatalogSession, lock_down

T = TypeVar("T")

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


def _run(con: duckdb.DuckDBPyConnection, stmts: list[str]) -> pa.Table:
    result = None
    for i, s in enumerate(stmts):
        if i < len(stmts) - 1:
            con.execute(s).fetchall()
        else:
            rel = con.sql(s)
            result = rel.to_arrow_table() if rel is not None else pa.table({})
    return result if result is not None else pa.table({})


def run_read_only(root: Path, query: str, session: CatalogSession | None = None) -> pa.Table:
    """Run a read-only query on the store's catalog: through ``session`` when it has the fresh
    catalog attached (no database to open), else on a one-shot locked-down connection."""
    stmts = check_read_only(query)
    return on_catalog(root, lambda con: _run(con, stmts), session, sql=stmts)


def on_catalog(root: Path, fn: Callable[[duckdb.DuckDBPyConnection], T], session: CatalogSession | None = None,
               sql: Iterable[str] = ()) -> T:
    """``fn(con)`` on a read-only, locked-down connection to a fresh catalog, with the pinned-version
    views that the statements ``sql`` name created on it; DuckDB errors become ReadOnlyQueryError (a
    refused permission) or StoreError."""
    sql = list(sql)
    try:
        if session is not None:
            with session.cursor() as cur:
                if cur is not None:
                    pinned_views(cur, root, session.registry, sql)
                    return fn(cur)
        with fresh_catalog(root) as path:
            con = duckdb.connect(str(path), read_only=True)
            try:
                lock_down(con, root)
                pinned_views(con, root, Registry.load(root), sql)
                return fn(con)
            finally:
                con.close()
    except duckdb.PermissionException as e:
        raise ReadOnlyQueryError(f"refused: {str(e).splitlines()[0]} (read-only session)") from e
    except duckdb.Error as e:
        raise StoreError(f"SQL failed: {str(e).splitlines()[0]}") from e


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
