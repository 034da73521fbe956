"""One harness for every suite: repeated timings, ratios, ceilings, results files."""

from __future__ import annotations

import dataclasses
import datetime as dt
import importlib
import json
import math
import os
import platform
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

SUITES = ("ingest", "loader", "encoder", "extraction", "store", "heads", "genes", "serve", "radiomics")
OPT_IN = ("validity",)  # hours of CPU: run only when named with --only


@dataclass(frozen=True)
class Timing:
    """Repeated measurements of one quantity (seconds, or a rate if ``unit`` says so)."""

    values: tuple[float, ...]

    @property
    def median(self) -> float:
        return statistics.median(self.values)

    @property
    def min(self) -> float:
        return min(self.values)

    @property
    def max(self) -> float:
        return max(self.values)

    def to_dict(self) -> dict[str, Any]:
        return {"median": self.median, "min": self.min, "max": self.max, "n": len(self.values),
                "values": list(self.values)}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Timing:
        return cls(tuple(float(v) for v in d["values"]))

    def rate(self, work: float) -> Timing:
        """Seconds -> work per second (each repetition separately)."""
        return Timing(tuple(work / v for v in self.values))


@dataclass(frozen=True)
class Figure:
    """One row of results.md: our figure, the baseline's, and the ceiling where known.

    ``higher_is_better`` says how ``ratio`` reads: for rates ratio = ours / baseline,
    for times ratio = baseline / ours, so a ratio above 1 is always a win.
    """

    suite: str
    workload: str
    unit: str
    ours: Timing
    baseline: Timing | None = None
    baseline_name: str = ""
    ceiling: Timing | None = None
    ceiling_name: str = ""
    higher_is_better: bool = True
    notes: dict[str, Any] = field(default_factory=dict)

    @property
    def ratio(self) -> float | None:
        if self.baseline is None:
            return None
        a, b = self.ours.median, self.baseline.median
        return a / b if self.higher_is_better else b / a

    @property
    def fraction_of_ceiling(self) -> float | None:
        if self.ceiling is None:
            return None
        a, c = self.ours.median, self.ceiling.median
        return a / c if self.higher_is_better else c / a

    def to_dict(self) -> dict[str, Any]:
        d = {
            "suite": self.suite,
            "workload": self.workload,
            "unit": self.unit,
            "higher_is_better": self.higher_is_better,
            "ours": self.ours.to_dict(),
            "baseline": self.baseline.to_dict() if self.baseline else None,
            "baseline_name": self.baseline_name,
            "ceiling": self.ceiling.to_dict() if self.ceiling else None,
            "ceiling_name": self.ceiling_name,
            "ratio": self.ratio,
            "fraction_of_ceiling": self.fraction_of_ceiling,
            "notes": self.notes,
        }
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Figure:
        """The figure ``to_dict`` wrote (the derived ratio and fraction are recomputed, not read)."""
        def timing(key: str) -> Timing | None:
            return Timing.from_dict(d[key]) if d.get(key) is not None else None

        return cls(suite=d["suite"], workload=d["workload"], unit=d["unit"], ours=Timing.from_dict(d["ours"]),
                   baseline=timing("baseline"), baseline_name=d["baseline_name"], ceiling=timing("ceiling"),
                   ceiling_name=d["ceiling_name"], higher_is_better=bool(d["higher_is_better"]),
                   notes=dict(d["notes"]))

    def finite(self) -> bool:
        vals = list(self.ours.values)
        for t in (self.baseline, self.ceiling):
            if t is not None:
                vals += list(t.values)
        return all(math.isfinite(v) for v in vals)


@dataclass(frozen=True)
class BenchContext:
    """What a suite may use: a scratch folder, the size factor, repetitions."""

    work: Path
    quick: bool = False
    scale: float = 1.0
    repeats: int = 5
    seed: int = 0
    options: dict[str, Any] = field(default_factory=dict)  # suite options (validity: seeds, cohort, truth, ...)

    def sizes(self, full: tuple[int, ...], quick: tuple[int, ...]) -> tuple[int, ...]:
        """Problem sizes for a growth curve: ``quick`` under --quick, else ``full`` x scale."""
        return quick if self.quick else tuple(max(1, int(s * self.scale)) for s in full)


def measure(fn: Callable[[], Any], repeats: int, warmup: int = 1) -> Timing:
    """Wall-clock seconds of ``fn()`` over ``repeats`` runs after ``warmup`` runs."""
    for _ in range(warmup):
        fn()
    out = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t0)
    return Timing(tuple(out))


def peak_rss_mb() -> float:
    """Peak resident set size of this process (MB)."""
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def _run_in_process(name: str, ctx: BenchContext) -> list[Figure]:
    """Suite ``name`` in a fresh interpreter (``python -m benchmarks REQUEST``); its figures come back
    as JSON. A suite that fails raises ``DltrError`` naming it and its exit status (its output went to ours)."""
    import subprocess
    import sys

    from dltr.core.exceptions import DltrError

    ctx.work.mkdir(parents=True, exist_ok=True)
    request, answer = ctx.work / "suite-request.json", ctx.work / "suite-figures.json"
    answer.unlink(missing_ok=True)
    context = {f.name: getattr(ctx, f.name) for f in dataclasses.fields(ctx)}
    request.write_text(json.dumps({"suite": name, "answer": str(answer), "context": context}, default=str))
    root = str(Path(__file__).resolve().parents[1])   # the folder holding this package, first on the child's path
    env = os.environ | {"PYTHONPATH": os.pathsep.join(p for p in (root, os.environ.get("PYTHONPATH")) if p)}
    rc = subprocess.run([sys.executable, "-m", "benchmarks", str(request)], env=env,
                        check=False).returncode
    if rc != 0 or not answer.is_file():
        raise DltrError(f"benchmark suite {name!r} failed in its own process (exit status {rc}); its output is "
                        f"above; re-run it alone with `dltr bench --only {name}`")
    return [Figure.from_dict(d) for d in json.loads(answer.read_text())]


def run_suite_request(request_path: str) -> None:
    """The child side of ``_run_in_process`` (``benchmarks/__main__.py``): run one suite, write its figures."""
    from dltr.core.io import atomic_write_text

    req = json.loads(Path(request_path).read_text())
    ctx = BenchContext(**(req["context"] | {"work": Path(req["context"]["work"])}))
    figs = importlib.import_module(f"benchmarks.suites.{req['suite']}").run(ctx)
    atomic_write_text(Path(req["answer"]), json.dumps([f.to_dict() for f in figs], default=str))


def growth_exponent(sizes: list[float], times: list[float]) -> float:
    """Slope of log(time) against log(size): 1.0 is linear growth."""
    import numpy as np

    return float(np.polyfit(np.log(sizes), np.log(times), 1)[0])


def machine_info() -> dict[str, Any]:
    import importlib.metadata as md

    versions = {}
    for pkg in ("dltr", "torch", "nvidia-dali-cuda120", "ray", "zarr", "dask", "duckdb", "pyarrow",
                "xgboost", "scikit-learn", "lifelines", "numpy"):
        try:
            versions[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            versions[pkg] = None
    return {
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpus": os.cpu_count(),
        "memory_gb": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1),
        "python": platform.python_version(),
        "versions": versions,
    }


def _fmt(x: float | None) -> str:
    if x is None:
        return "-"
    if x == 0 or 0.01 <= abs(x) < 10000:
        return f"{x:.3g}" if abs(x) < 100 else f"{x:.0f}"
    return f"{x:.3g}"


def render_markdown(figures: list[Figure], info: dict[str, Any]) -> str:
    lines = [
        f"# Benchmark results ({info['date']})",
        "",
        f"Machine: {info['platform']}, {info['cpus']} CPUs, {info['memory_gb']} GB; Python {info['python']}.",
        "Medians over repetitions, [min-max] in brackets; ratio > 1 means ours is better.",
        "",
        "| suite | workload | unit | ours | baseline | ratio | ceiling | fraction of ceiling |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for f in figures:
        ours = f"{_fmt(f.ours.median)} [{_fmt(f.ours.min)}-{_fmt(f.ours.max)}]"
        base = (f"{_fmt(f.baseline.median)} ({f.baseline_name})" if f.baseline else "-")
        ceil = (f"{_fmt(f.ceiling.median)} ({f.ceiling_name})" if f.ceiling else "-")
        lines.append(
            f"| {f.suite} | {f.workload} | {f.unit} | {ours} | {base} | {_fmt(f.ratio)} | {ceil} "
            f"| {_fmt(f.fraction_of_ceiling)} |"
        )
    notes = [(f, f.notes) for f in figures if f.notes]
    if notes:
        lines += ["", "Notes:", ""]
        for f, n in notes:
            lines.append(f"- {f.suite} / {f.workload}: " + ", ".join(f"{k}={v}" for k, v in n.items()))
    return "\n".join(lines) + "\n"


def run_suites(out: Path, *, quick: bool = False, only: list[str] | None = None,
               scale: float = 1.0, seed: int = 0, log: Callable[[str], None] = print,
               options: dict[str, Any] | None = None, repeats: int | None = None,
               isolate: bool | None = None) -> list[Figure]:
    """Run the suites (all, or ``only``), write results.json and results.md under ``out``; ``repeats`` timed
    runs per measurement (default 3 with ``quick``, else 5).

    ``isolate`` (default: when more than one suite runs) runs each suite in a fresh Python process, as asv does:
    a suite's figures then do not depend on which suites ran before it in the same driver (session 12: the
    extraction suite's forward pass ran 1.2x slower after the ingest, loader and encoder suites than alone, and
    the genes suite's peak RSS read the store suite's high-water mark)."""
    from dltr.core.io import atomic_write_text

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    names = only or list(SUITES)
    unknown = [n for n in names if n not in SUITES + OPT_IN]
    if unknown:
        from dltr.core.exceptions import DltrError

        raise DltrError(f"unknown benchmark suite(s) {unknown}; choose from {list(SUITES + OPT_IN)}")
    ctx = BenchContext(work=out / "work", quick=quick, scale=scale, repeats=repeats or (3 if quick else 5), seed=seed,
                       options=dict(options or {}))
    ctx.work.mkdir(parents=True, exist_ok=True)
    figures: list[Figure] = []
    status: dict[str, str] = {}
    isolate = len(names) > 1 if isolate is None else isolate
    where = ", own process" if isolate else ""
    for name in names:
        try:
            mod = importlib.import_module(f"benchmarks.suites.{name}")
        except ModuleNotFoundError as e:
            if e.name == f"benchmarks.suites.{name}":
                status[name] = "not yet implemented"
                log(f"[bench] {name}: no suite yet")
                continue
            raise
        log(f"[bench] {name}{' (own process)' if isolate else ''} ...")
        t0 = time.perf_counter()
        suite_ctx = dataclasses.replace(ctx, work=ctx.work / name)
        figs = _run_in_process(name, suite_ctx) if isolate else mod.run(suite_ctx)
        status[name] = f"ok ({time.perf_counter() - t0:.1f} s{where})"
        figures.extend(figs)
    info = machine_info()
    atomic_write_text(out / "results.json", json.dumps(
        {"machine": info, "quick": quick, "scale": scale, "suites": status,
         "figures": [f.to_dict() for f in figures]}, indent=2))
    atomic_write_text(out / "results.md", render_markdown(figures, info))
    return figures
