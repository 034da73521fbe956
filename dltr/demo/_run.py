"""``dltr demo``: the whole system on a synthetic cohort, end to end, on embedded defaults.

synthesise -> validate -> ingest (Dask) -> register the cohort -> train and select the encoder (DALI)
-> extract features (Ray + DALI) -> heads and evaluation -> survival -> radiomics (pyradiomics on Ray, the
multi-set heads beside DLTR_MLP, evaluation again) -> radiogenomics -> report.

Each stage is recorded in ``OUT/stages.json`` with the hash of its inputs; a re-run with the same
inputs reuses the output and says so (``dltr.demo._stages.StageLog``). Everything lands under ``OUT``:
``OUT/synthetic/{cohort,truth}``, ``OUT/store`` (volumes, tables, features, encoders, heads, figures)
and ``OUT/report/{report.html,report.md}``.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dltr.core.exceptions import CohortError
from dltr.core.hashing import content_hash
from dltr.core.layout import StoreLayout
from dltr.core.vocabulary import DEFAULT_FEATURE_SET, PRIMARY_HEAD, format_ref
from dltr.demo._stages import StageLog

_SHARED_HALLMARK = Path(__file__).resolve().parents[3] / "shared/data/genesets/h.all.v7.0.symbols.gmt"


def default_gene_sets() -> Path | None:
    """MSigDB Hallmark sets beside the checkout when present (real symbols), else None (synthetic ones)."""
    return _SHARED_HALLMARK if _SHARED_HALLMARK.exists() else None


@dataclass(frozen=True)
class DemoConfig:
    """What the demo runs. ``profile='tiny'`` is the test-suite size."""

    profile: str = "default"
    seed: int = 0
    gene_sets: str | None = None
    # Encoder training: None takes models.training.EncoderTrainConfig's default, the one `dltr train-encoder`
    # takes too, so that the README's quick start trains the demo's encoder (same model card).
    candidates: tuple[str, ...] | None = None
    folds: int | None = None
    epochs: int | None = None
    width: int | None = None
    aux_weight: float | None = None  # label-free ROI-descriptor loss weight (models/_auxiliary.py)
    phases: tuple[str, ...] | None = None  # encoder channels; None = cohort.toml's phases, in its order
    extract_workers: int = 2
    radiomics: bool = True  # radiomics features and the multi-set heads beside DLTR_MLP (dltr.demo._stages)
    clinical_bootstrap: int | None = None  # HeadsConfig.clinical_bootstrap (None: its default)
    ingest_workers: int = 2
    synth_overrides: dict[str, Any] = field(default_factory=dict)
    #: keyed pseudonyms through every stage (ingest and the cohort tables); never stored or hashed
    pseudonym_key: str | None = field(default=None, repr=False)

    @classmethod
    def for_profile(cls, profile: str = "default", **overrides: Any) -> DemoConfig:
        """Defaults sized so the demo profile runs in minutes on 2 CPU cores, the tiny one in about one."""
        # tiny: 10 stability resamples of the clinical selection (no score depends on them; 50 were 40 % of the
        # tiny heads stage)
        base = {"tiny": {"epochs": 4, "folds": 2, "clinical_bootstrap": 10}}.get(profile, {})
        return cls(profile=profile, **(base | {k: v for k, v in overrides.items() if v is not None}))

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["pseudonym_key"] = None if self.pseudonym_key is None else "<given>"
        d["candidates"] = None if self.candidates is None else list(self.candidates)
        d["phases"] = None if self.phases is None else list(self.phases)
        return d


@dataclass
class DemoResult:
    out: Path
    report_html: Path
    report_md: Path
    stages: list[dict[str, Any]]
    seconds: float


def encoder_roi(phases):
    """The encoder's input config: ``EncoderTrainConfig``'s default (the phases and the mask channel) with
    these phases as channels (imports torch, so only where the encoder is trained)."""
    from models.training import EncoderTrainConfig

    return dataclasses.replace(EncoderTrainConfig().roi, phases=tuple(phases))


def run_demo(out: str | Path, config: DemoConfig | None = None, log: Callable[[str], None] = print,
             progress: Callable[[str, int, int | None], None] | None = None) -> DemoResult:
    """Run (or resume) every stage under ``out`` and write the report; ``progress(stage, done, total)``
    while ingest (patients), encoder training (folds) and extraction (studies) run. Extraction and radiomics
    share one embedded Ray, started by the first of them that runs."""
    from pipeline.actors import kept_ray

    out = Path(out).resolve()
    with kept_ray(StoreLayout.of(out / "store").ray_log):
        return _run_demo(out, config or DemoConfig(), log, progress)


def _run_demo(out: Path, cfg: DemoConfig, log: Callable[[str], None],
              progress: Callable[[str, int, int | None], None] | None) -> DemoResult:
    from dltr.synth import SynthConfig, synthesize
    from features import FeatureStore

    out.mkdir(parents=True, exist_ok=True)
    ledger = StageLog(out / "stages.json", log=log)
    t_start = time.perf_counter()
    synth_dir, store_root = out / "synthetic", out / "store"
    cohort = synth_dir / "cohort"
    hallmark = default_gene_sets()
    gene_sets = cfg.gene_sets or (str(hallmark) if hallmark else None)
    scfg = SynthConfig.profile(cfg.profile, seed=cfg.seed, gene_sets=gene_sets, **cfg.synth_overrides)
    records = []
    tick = progress or (lambda _stage, _done, _total: None)

    def synth_stage():
        res = synthesize(synth_dir, scfg)
        return {"cohort": str(res.cohort), "truth": str(res.truth), "patients": res.n_patients,
                "files": res.n_files, "centers": res.centers}, {"patients": res.n_patients}

    records.append(ledger.run("synthesise", scfg.to_dict(), synth_stage, done=lambda o: cohort.exists()))
    synth_hash = records[-1].inputs_hash

    def validate_stage():
        from dltr.cohort import validate_cohort

        rep = validate_cohort(cohort)
        if not rep.ok:
            raise CohortError(f"the synthetic cohort failed validation: {rep.summary}")
        return {"errors": 0, "summary": str(rep.summary)}, {}

    records.append(ledger.run("validate", synth_hash, validate_stage))

    def ingest_stage():
        from pipeline.ingest import IngestConfig, ingest_cohort

        n, done = records[0].outputs.get("patients"), [0]

        def step(_result) -> None:
            done[0] += 1
            tick("ingest", done[0], n)

        rep = ingest_cohort(cohort, store_root, IngestConfig(workers=cfg.ingest_workers,
                                                             pseudonym_key=cfg.pseudonym_key), on_patient=step)
        s = rep.summary
        return {k: s[k] for k in ("patients", "volumes", "source_mb", "written_mb", "ok", "failed")}, \
            {"volumes": s["volumes"], "MB": s["source_mb"]}

    keyed = cfg.pseudonym_key is not None
    records.append(ledger.run("ingest", [synth_hash, cfg.ingest_workers, keyed], ingest_stage,
                              done=lambda o: (StoreLayout.of(store_root).studies).exists()))

    def register_stage():
        FeatureStore(store_root).add_cohort(cohort, pseudonym_key=cfg.pseudonym_key)
        return {"tables": ["clinical", "labs", "expression", "studies"]}, {}

    records.append(ledger.run("register cohort", [synth_hash, records[-1].inputs_hash], register_stage))

    from dltr.cohort import CohortConfig

    phases = tuple(cfg.phases or CohortConfig.read(cohort / "cohort.toml").phases)
    if not phases:  # a cohort.toml without phases: the loaders' default channels (imports torch, so only here)
        from pipeline.loaders import RoiConfig

        phases = RoiConfig().phases

    given = {k: v for k, v in {"candidates": cfg.candidates, "folds": cfg.folds, "epochs": cfg.epochs,
                               "width": cfg.width, "aux_weight": cfg.aux_weight}.items() if v is not None}

    roi = encoder_roi(phases)

    def encoder_stage():
        from models.training import EncoderTrainConfig, train_encoder

        tcfg = dataclasses.replace(EncoderTrainConfig(), seed=cfg.seed, roi=roi, **given)
        res = train_encoder(store_root, tcfg, log=log, progress=lambda d, t: tick("train encoder", d, t))
        return {"card_hash": res.card_hash, "path": str(res.path), "candidates": res.summary,
                "architecture": res.card["architecture"]["name"]}, {"patients": len(res.rows_seen)}

    enc_inputs = [synth_hash, given, cfg.seed, roi.to_dict(), keyed]
    records.append(ledger.run("train encoder", enc_inputs, encoder_stage,
                              done=lambda o: Path(o["path"]).exists()))
    card_hash = records[-1].outputs["card_hash"]

    def extract_stage():
        from pipeline.extract import ExtractConfig, extract_features

        done = [0]

        def step(n: int, total: int) -> None:
            done[0] += n
            tick("extract", done[0], total)

        rep = extract_features(store_root, card_hash, ExtractConfig(workers=cfg.extract_workers), progress=step)
        d = dataclasses.asdict(rep)
        keep = {k: d[k] for k in ("version_id", "status", "n_scope", "n_computed", "n_reused", "n_errors",
                                  "seconds", "startup_s", "mb_read", "load_s", "encode_s",
                                  "steady_patients_per_s", "per_worker")}
        return keep | {"patients_per_s": rep.patients_per_s}, {"patients": rep.n_computed}

    records.append(ledger.run("extract features", [card_hash, cfg.extract_workers], extract_stage))
    fs_version = records[-1].outputs.get("version_id")
    feature_set = format_ref(DEFAULT_FEATURE_SET, fs_version)

    def heads_stage():
        from analysis.evaluation import EvaluateConfig, evaluate
        from features import predictor_columns
        from models.heads import HeadsConfig, train_heads

        store = FeatureStore(store_root)
        clinical, labs = predictor_columns(store) or (None, None)   # cohort.toml's predictors
        boot = {} if cfg.clinical_bootstrap is None else {"clinical_bootstrap": cfg.clinical_bootstrap}
        res = train_heads(store, HeadsConfig(feature_set=feature_set, clinical=clinical, labs=labs, seed=cfg.seed,
                                             **boot))
        evaluate(store, EvaluateConfig(seed=cfg.seed))
        return {"heads": res.versions}, {}

    records.append(ledger.run("heads and evaluation", [fs_version, cfg.seed, synth_hash], heads_stage))
    heads_record = records[-1]

    def survival_stage():
        from analysis.survival import SurvivalConfig, run_survival

        run_survival(FeatureStore(store_root), SurvivalConfig(head=PRIMARY_HEAD))
        return {"head": PRIMARY_HEAD}, {}

    records.append(ledger.run("survival", records[-1].outputs, survival_stage))

    def radiomics_stage():
        from dltr.demo._stages import radiomics_stage as run
        from features import predictor_columns

        store = FeatureStore(store_root)
        clinical, labs = predictor_columns(store) or (None, None)
        return run(store, deep=feature_set, clinical=clinical, labs=labs, seed=cfg.seed, workers=cfg.extract_workers)

    if cfg.radiomics:  # after the heads stage, whose scores table it extends (so it re-runs when that stage does)
        records.append(ledger.run("radiomics", [heads_record.inputs_hash, heads_record.outputs, cfg.extract_workers],
                                  radiomics_stage))

    def genes_stage():
        from analysis.genes import GenesConfig, run_genes

        gmt = cohort / "gene_sets.gmt"  # the generator's sets, in the cohort folder (never truth/)
        res = run_genes(FeatureStore(store_root), gmt, GenesConfig(feature_set=feature_set))
        return {"n_significant": int(len(res.significant)), "gene_sets": str(gmt)}, {}

    records.append(ledger.run("radiogenomics", [fs_version, gene_sets], genes_stage))

    stages = [dataclasses.asdict(r) for r in records]
    from dltr.report import build_report

    html, md = build_report(store_root, out / "report", truth_dir=synth_dir / "truth", stages=stages,
                            run_info={"demo_config": cfg.to_dict(), "demo_hash": content_hash(cfg.to_dict())})
    total = time.perf_counter() - t_start
    log(f"[report] {html}")
    return DemoResult(out, html, md, stages, total)
