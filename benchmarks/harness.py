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

    def to_dict(self) -> dict[str, float]:
        return {"median": self.median, "min": self.min, "max": self.max, "n": len(self.values)}

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
               options: dict[str, Any] | None = None, repeats: int | None = None) -> list[Figure]:
    """Run the suites (all, or ``only``), write results.json and results.md under ``out``; ``repeats`` timed
    runs per measurement (default 3 with ``quick``, else 5)."""
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
    for name in names:
        try:
            mod = importlib.import_module(f"benchmarks.suites.{name}")
        except ModuleNotFoundError as e:
            if e.name == f"benchmarks.suites.{name}":
                status[name] = "not yet implemented"
                log(f"[bench] {name}: no suite yet")
                continue
            raise
        log(f"[bench] {name} ...")
        t0 = time.perf_counter()
        figs = mod.run(dataclasses.replace(ctx, work=ctx.work / name))
        status[name] = f"ok ({time.perf_counter() - t0:.1f} s)"
        figures.extend(figs)
    info = machine_info()
    atomic_write_text(out / "results.json", json.dumps(
        {"machine": info, "quick": quick, "scale": scale, "suites": status,
         "figures": [f.to_dict() for f in figures]}, indent=2))
    atomic_write_text(out / "results.md", render_markdown(figures, info))
    return figures
