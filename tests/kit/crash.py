"""Crash-test harness: real SIGKILLs at deterministic points, then re-run and compare.

A *kill point* ``N`` is "just before the N-th filesystem mutation that touches the store", counted
inside the process under test: ``os.replace`` / ``os.rename`` (every commit and every zarr chunk),
``os.fsync``, ``os.unlink``, ``os.rmdir`` and ``os.mkdir`` whose path (or file descriptor) lies
under the store root. ``KillSwitch`` wraps those functions in the victim process and sends itself
``SIGKILL`` at event ``N``: the kernel ends the process there, with no ``finally`` and no flush,
exactly like a power cut for the process (not for the page cache).

Two runners:

- ``fork_call``: a *zygote* process imports the stack once and forks one child per kill point, so a
  sweep of hundreds of points costs milliseconds of start-up each. The zygote itself never touches
  zarr or DuckDB (their background threads must not exist before ``fork``); every check runs in a
  forked child too.
- ``python tests/kit/crash.py exec --root STORE --kill-at N -- -m dltr ...``: the same switch
  in front of a real CLI run (used for ``dltr extract`` on Ray, whose driver cannot be forked).

Targets (``ingest``, ``ingest-update``, ``publish``, ``staged``) and the sweep driver live in
``scripts/crash_sweep.py``; the snapshot and invariant helpers here are shared with the tests.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import sys
import threading
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

from dltr.core.layout import StoreLayout

EVENTS = ("replace", "rename", "fsync", "unlink", "rmdir", "mkdir")


class KillSwitch:
    """Count store-touching filesystem events; SIGKILL this process just before event ``kill_at``.

    ``kill_when(event, paths)`` may replace the counter: the process is killed just *after* the
    first event for which it returns True (e.g. between the two renames of a replaced group).
    """

    def __init__(self, root: str | Path, kill_at: int | None = None,
                 kill_when: Callable[[str, list[str]], bool] | None = None, sig: int = signal.SIGKILL):
        self.sig = sig  # SIGSTOP instead: freeze the process there (a concurrency test resumes it)
        self.root = os.path.realpath(root)
        self.kill_at = kill_at
        self.kill_when = kill_when
        self.count = 0
        self.trace: list[str] = []
        self._lock = threading.Lock()
        self._orig: dict[str, Callable] = {}

    def _paths(self, name: str, args: tuple, kw: dict) -> list[str]:
        if name == "fsync":
            try:
                return [os.readlink(f"/proc/self/fd/{args[0] if args else kw['fd']}")]
            except OSError:
                return []
        dir_fd = kw.get("dir_fd") or kw.get("src_dir_fd")
        out = []
        for a in args[:2] if name in ("replace", "rename") else args[:1]:
            if isinstance(a, int):
                continue
            p = os.fsdecode(os.fspath(a))
            if not os.path.isabs(p) and dir_fd is not None:
                try:
                    p = os.path.join(os.readlink(f"/proc/self/fd/{dir_fd}"), p)
                except OSError:
                    pass
            out.append(os.path.abspath(p))
        return out

    def _touches_store(self, paths: list[str]) -> bool:
        return any(p == self.root or p.startswith(self.root + os.sep) for p in paths)

    def _wrap(self, name: str, fn: Callable) -> Callable:
        def wrapped(*args, **kw):
            paths = self._paths(name, args, kw)
            if not self._touches_store(paths):
                return fn(*args, **kw)
            with self._lock:
                self.count += 1
                n = self.count
                if len(self.trace) < 100000:
                    self.trace.append(f"{n} {name} {' -> '.join(p.replace(self.root, '$S') for p in paths)}")
            if self.kill_at is not None and n == self.kill_at:
                os.kill(os.getpid(), self.sig)
            out = fn(*args, **kw)
            if self.kill_when is not None and self.kill_when(name, paths):
                os.kill(os.getpid(), self.sig)
            return out

        return wrapped

    def install(self) -> KillSwitch:
        for name in EVENTS:
            self._orig[name] = getattr(os, name)
            setattr(os, name, self._wrap(name, self._orig[name]))
        return self

    def uninstall(self) -> None:
        for name, fn in self._orig.items():
            setattr(os, name, fn)


def fork_call(fn: Callable[[], Any], *, switch: KillSwitch | None = None, timeout: float = 300.0,
              result_dir: str | Path = "/tmp") -> dict[str, Any]:
    """Run ``fn()`` in a forked child (with ``switch`` installed); return how it ended.

    ``{"status": "killed" | "ok" | "error" | "timeout", "events": n, "result": ..., "error": text}``.
    """
    out = Path(result_dir) / f".fork-{os.getpid()}-{time.monotonic_ns()}.json"
    sys.stdout.flush()
    sys.stderr.flush()
    pid = os.fork()
    if pid == 0:  # child
        code = 0
        try:
            if switch is not None:
                switch.install()
            res = fn()
            msg = {"status": "ok", "result": res}
        except BaseException:  # noqa: BLE001 - reported to the parent
            msg = {"status": "error", "error": traceback.format_exc()[-4000:]}
            code = 1
        if switch is not None:
            switch.uninstall()
            msg["events"] = switch.count
        try:
            out.write_text(json.dumps(msg, default=str))
        finally:
            os._exit(code)
    deadline = time.monotonic() + timeout
    while True:
        wpid, status = os.waitpid(pid, os.WNOHANG)
        if wpid:
            break
        if time.monotonic() > deadline:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            return {"status": "timeout"}
        time.sleep(0.005)
    if os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL:
        out.unlink(missing_ok=True)
        return {"status": "killed", "events": switch.kill_at if switch else None}
    try:
        msg = json.loads(out.read_text())
    except (OSError, ValueError):
        msg = {"status": "error", "error": f"child ended with wait status {status} and no result"}
    out.unlink(missing_ok=True)
    return msg


def sample_points(total: int, k: int | None) -> list[int]:
    """Kill points 1..total (all when ``k`` is None), else ``k`` evenly spread, first and last included."""
    if total < 1:
        return []
    if k is None or k >= total:
        return list(range(1, total + 1))
    return sorted({1 + round(i * (total - 1) / max(k - 1, 1)) for i in range(k)})


# -- snapshots (run them in a child: they use zarr / DuckDB) -----------------------------------------
def _sha(b: bytes) -> str:
    return hashlib.sha256(b).hexdigest()


def group_snapshot(group_dir: Path) -> dict[str, Any]:
    """Attributes and array bytes (hashed) of one patient group."""
    import zarr

    g = zarr.open_group(group_dir, mode="r")
    snap: dict[str, Any] = {"attrs": json.loads(json.dumps(dict(g.attrs)))}
    for name in sorted(g.array_keys()):
        a = g[name]
        snap[name] = {"sha": _sha(a[...].tobytes()), "dtype": str(a.dtype), "shape": list(a.shape),
                      "chunks": list(a.chunks), "attrs": json.loads(json.dumps(dict(a.attrs)))}
    return snap


def visible_groups(store: Path) -> list[str]:
    vz = StoreLayout.of(store).volumes
    return sorted(p.name for p in vz.iterdir() if p.is_dir() and not p.name.startswith(".")) if vz.is_dir() else []


def parquet_rows(path: Path) -> list[dict[str, Any]] | None:
    import pyarrow.parquet as pq

    if not Path(path).exists():
        return None
    return json.loads(json.dumps(pq.read_table(path).to_pylist(), default=str))


def volume_store_snapshot(store: Path) -> dict[str, Any]:
    """Every group's arrays and attributes plus the three ingest tables (not run.json: it has timings)."""
    store = Path(store)
    snap: dict[str, Any] = {"groups": {k: group_snapshot(StoreLayout.of(store).volume_group(k)) for k in visible_groups(store)}}
    for t in ("studies", "errors", "intensity_stats"):
        snap[t] = parquet_rows(StoreLayout.of(store).ingest / f"{t}.parquet")
    return snap


def catalog_check(store: Path) -> list[str]:
    """Open ``catalog.duckdb`` read-only and run a query on every view; the problems found."""
    import duckdb

    path = Path(store) / "catalog.duckdb"
    if not path.exists():
        return []
    problems = []
    try:
        con = duckdb.connect(str(path), read_only=True)
    except duckdb.Error as e:
        return [f"catalog does not open: {e}"]
    try:
        views = [r[0] for r in con.execute("SELECT view_name FROM duckdb_views() WHERE NOT internal").fetchall()]
        for v in views:
            try:
                con.execute(f'SELECT count(*) FROM "{v}"').fetchall()
            except duckdb.Error as e:
                problems.append(f"view {v!r} fails: {str(e).splitlines()[0]}")
    finally:
        con.close()
    return problems


def feature_store_snapshot(store: Path) -> dict[str, Any]:
    """Registry content (without timestamps and revision), every version's rows (hashed) and table bytes."""
    import pyarrow.parquet as pq

    from features import FeatureStore

    s = FeatureStore(store)
    reg = s.registry()
    snap: dict[str, Any] = {"feature_sets": {}, "tables": {}}
    for name in reg.feature_sets():
        for v in reg.versions(name):
            d = v.to_dict()
            d.pop("created_at")
            rows = s.read(v.ref).sort_by("patient_id")
            d["rows_sha"] = _sha(json.dumps(rows.to_pylist(), default=str).encode())
            d["n_unique"] = len(set(rows.column("patient_id").to_pylist()))
            snap["feature_sets"][v.ref] = d
        snap["latest_" + name] = reg.resolve(name).version_id
    for name, entry in reg.tables().items():
        e = {k: v for k, v in entry.items() if k != "created_at"}
        e["rows_sha"] = _sha(json.dumps(pq.read_table(Path(store) / entry["path"]).to_pylist(), default=str).encode())
        snap["tables"][name] = e
    return snap


def diff(a: Any, b: Any, path: str = "") -> list[str]:
    """Readable differences between two JSON-like snapshots (first 10)."""
    out: list[str] = []
    if isinstance(a, dict) and isinstance(b, dict):
        for k in sorted(set(a) | set(b), key=str):
            if k not in a or k not in b:
                out.append(f"{path}/{k}: only in {'second' if k not in a else 'first'}")
            else:
                out += diff(a[k], b[k], f"{path}/{k}")
    elif a != b:
        out.append(f"{path}: {str(a)[:80]} != {str(b)[:80]}")
    return out[:10]


# -- processes started by a CLI victim ---------------------------------------------------------------
def session_pids(sid: int) -> list[int]:
    """Processes whose session id is ``sid`` (a victim started with ``start_new_session=True``)."""
    out = []
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            fields = Path(f"/proc/{d}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[3]) == sid:  # fields after the name: state ppid pgrp session ...
            out.append(int(d))
    return out


def kill_session(sid: int) -> int:
    """SIGKILL every process left in session ``sid`` (by pid); returns how many were killed."""
    n = 0
    for pid in session_pids(sid):
        try:
            os.kill(pid, signal.SIGKILL)
            n += 1
        except ProcessLookupError:
            pass
    return n


def process_state(pid: int) -> str:
    """The one-letter state of a process (``T`` when stopped), ``""`` when it is gone."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return ""


def _exec_main(argv: list[str]) -> None:
    """``exec --root STORE [--kill-at N | --stop-at N | --stop-after REGEX] [--count-file F] -- -m module ...``.

    ``--stop-after REGEX`` / ``--kill-after REGEX`` (with ``--nth N``, default 1): SIGSTOP / SIGKILL just
    after the N-th store event whose path matches ``REGEX``.
    """
    import runpy

    sep = argv.index("--")
    opts, rest = argv[:sep], argv[sep + 1:]
    root = opts[opts.index("--root") + 1]
    kill_at = int(opts[opts.index("--kill-at") + 1]) if "--kill-at" in opts else None
    sig = signal.SIGKILL
    if "--stop-at" in opts:
        kill_at, sig = int(opts[opts.index("--stop-at") + 1]), signal.SIGSTOP
    when: Callable[[str, list[str]], bool] | None = None
    for flag, flag_sig in (("--stop-after", signal.SIGSTOP), ("--kill-after", signal.SIGKILL)):
        if flag not in opts:
            continue
        import re

        pattern, seen = re.compile(opts[opts.index(flag) + 1]), []
        nth = int(opts[opts.index("--nth") + 1]) if "--nth" in opts else 1

        def _match(_ev: str, paths: list[str], pattern=pattern, seen=seen, nth=nth) -> bool:
            if any(pattern.search(p) for p in paths):
                seen.append(1)
                return len(seen) == nth
            return False

        when, sig = _match, flag_sig
    count_file = opts[opts.index("--count-file") + 1] if "--count-file" in opts else None
    sw = KillSwitch(root, kill_at, kill_when=when, sig=sig).install()
    if count_file:
        import atexit

        atexit.register(lambda: Path(count_file).write_text(str(sw.count)))
    if rest[0] != "-m":
        raise SystemExit("usage: exec --root STORE [--kill-at N] -- -m module args")
    sys.argv = [rest[1], *rest[2:]]
    try:
        runpy.run_module(rest[1], run_name="__main__", alter_sys=True)
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
        sys.stdout.flush()
        sys.exit(code)


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "exec":
        _exec_main(sys.argv[2:])
    else:
        raise SystemExit("usage: python tests/kit/crash.py exec --root STORE [--kill-at N] -- -m dltr ...")
