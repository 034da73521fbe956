"""``dltr demo``: every stage on a synthetic cohort, resumable stage by stage (application floor)."""

from dltr.demo._run import DemoConfig, DemoResult, default_gene_sets, run_demo
from dltr.demo._stages import DEMO_RADIOMICS_LEFT_OUT, StageLog, StageRecord, demo_radiomics_settings

__all__ = ["DEMO_RADIOMICS_LEFT_OUT", "DemoConfig", "DemoResult", "StageLog", "StageRecord",
           "default_gene_sets", "demo_radiomics_settings", "run_demo"]
