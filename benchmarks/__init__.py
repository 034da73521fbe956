"""Benchmarks: ratios against a baseline measured in the same run, with the ceiling.

``dltr bench`` runs the suites in :mod:`benchmarks.suites`; each suite module has
``run(ctx: BenchContext) -> list[Figure]``. See BENCHMARKS.md.
"""

from benchmarks.harness import BenchContext, Figure, Timing, measure, peak_rss_mb, run_suites

__all__ = ["BenchContext", "Figure", "Timing", "measure", "peak_rss_mb", "run_suites"]
