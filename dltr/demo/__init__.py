"""``dltr demo``: every stage on a synthetic cohort, resumable stage by stage (application floor)."""

from dltr.demo._run import DemoConfig, DemoResult, default_gene_sets, run_demo
from dltr.demo._stages import StageLog, StageRecord

__all__ = ["DemoConfig", "DemoResult", "StageLog", "StageRecord", "default_gene_sets", "run_demo"]
