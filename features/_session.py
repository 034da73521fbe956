"""One locked-down, read-only DuckDB session per ``FeatureStore``, reused across calls.

Opening a DuckDB database costs tens to hundreds of milliseconds (its thread pool and buffer
manager start each time), so the store keeps one in-memory database with the same lock-down as a
one-shot read-only session (external access off except the store's ``features/`` and ``tables/``
folders and its own catalog file; configuration locked) and ATTACHes ``catalog.duckdb`` read-only
into it. Each call takes a cursor (a cheap connection to that database) on the attached catalog.

Freshness: the catalog file is replaced by rename on every commit, so the session remembers the
(inode, mtime, size) of the catalog and registry it last verified; when either changed it attaches
the new catalog under a new alias and checks its recorded (root, revision) against the registry.
An old alias is detached once no cursor still uses it. When the catalog is stale and cannot be
attached fresh (a writer mid-rebuild, a moved store), :meth:`CatalogSession.cursor` yields None and
the caller falls back to a one-shot session on ``fresh_catalog``.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import threading
from pathlib import Path

import duckdb

from dltr.core.layout import StoreLayout
from features._catalog import META, literal
from features._registry import Registry

_ABANDONED: list = []  # sessions inherited across fork(): never closed in the child
_ALIASES = itertools.count(1)


def _stat(path: Path) -> tuple[int, int, int] | None:
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return None
    return (st.st_ino, st.st_mtime_ns, st.st_size)


def lock_down(con: duckdb.DuckDBPyConnection, root: Path, files: tuple[Path, ...] = ()) -> None:
    """Read only the store's data folders (and ``files``); no extensions; configuration locked."""
    root = Path(root).resolve()
    lay = StoreLayout.of(root)
    dirs = ", ".join(literal(d.as_posix() + "/") for d in (lay.features, lay.tables))
    con.execute(f"SET allowed_directories = [{dirs}]")
    if files:
        con.execute(f"SET allowed_paths = [{', '.join(literal(Path(f).as_posix()) for f in files)}]")
    con.execute("SET enable_external_access = false")
    con.execute("SET autoinstall_known_extensions = false")
    con.execute("SET autoload_known_extensions = false")
    con.execute("SET lock_configuration = true")


class CatalogSession:
    """A reusable read-only view of the store's DuckDB catalog (thread-safe; one per FeatureStore)."""

    def __init__(self, root: Path):
        self.root = Path(root)
        self._here = str(self.root.resolve())
        self._catalog = StoreLayout.of(self.root.resolve()).catalog
        self._lock = threading.Lock()
        self._con: duckdb.DuckDBPyConnection | None = None
        self._pid = os.getpid()
        self._key: tuple | None = None
        self._alias: str | None = None
        self._users: dict[str, int] = {}
        self.registry: Registry | None = None  # the registry the attached catalog was built from

    def _open(self) -> duckdb.DuckDBPyConnection:
        if self._con is None or self._pid != os.getpid():
            if self._pid != os.getpid() and self._con is not None:
                _ABANDONED.append(self._con)  # the parent's; closing it here could hang on its threads
            self._con, self._pid, self._key, self._alias, self._users = None, os.getpid(), None, None, {}
            con = duckdb.connect(":memory:")
            lock_down(con, self.root, (self._catalog, Path(f"{self._catalog}.wal")))
            self._con = con
        return self._con

    def _detach_unused(self, con: duckdb.DuckDBPyConnection) -> None:
        for alias, n in list(self._users.items()):
            if n == 0 and alias != self._alias:
                con.execute(f"DETACH {alias}")
                del self._users[alias]

    def _refresh(self, con: duckdb.DuckDBPyConnection) -> bool:
        """Attach the current catalog if it changed; False when it does not match the registry."""
        key = (_stat(self._catalog), _stat(StoreLayout.of(self.root).registry))
        if key == self._key and self._alias is not None:
            return True
        if key[0] is None:
            return False
        alias = f"dltr_catalog_{next(_ALIASES)}"
        try:
            con.execute(f"ATTACH {literal(self._catalog.as_posix())} AS {alias} (READ_ONLY)")
        except duckdb.Error:
            return False
        try:
            state = con.execute(f"SELECT root, revision FROM {alias}.{META}").fetchone()
        except duckdb.Error:
            state = None
        reg = Registry.load(self.root)
        if state is None or (state[0], int(state[1])) != (self._here, reg.revision):
            con.execute(f"DETACH {alias}")
            return False
        self._alias, self._key, self.registry = alias, key, reg
        self._users.setdefault(alias, 0)
        self._detach_unused(con)
        return True

    @contextlib.contextmanager
    def cursor(self):
        """Yield a cursor whose default catalog is the fresh store catalog, or None (fall back)."""
        with self._lock:
            con = self._open()
            if not self._refresh(con):
                alias = None
            else:
                alias = self._alias
                self._users[alias] += 1
                cur = con.cursor()
        if alias is None:
            yield None
            return
        try:
            cur.execute(f"USE {alias}")
            yield cur
        finally:
            cur.close()
            with self._lock:
                self._users[alias] -= 1
                if self._con is con:
                    self._detach_unused(con)

    def close(self) -> None:
        with self._lock:
            if self._con is not None and self._pid == os.getpid():
                self._con.close()
            self._con, self._key, self._alias, self._users = None, None, None, {}
