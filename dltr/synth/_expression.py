"""expression.tsv of the radiogenomics subset: log2(TPM+1) values in which planted pathways follow image traits.

Each planted pathway follows one latent image trait (angiogenesis - arterial hyper-enhancement z_h,
epithelial-mesenchymal transition - margin irregularity z_irr, hypoxia - necrosis z_nec, TGF-beta -
heterogeneity z_het). A planted gene g of a pathway with trait z is

    value = mu_g + sd_g (sign_g r_g z + sqrt(1 - r_g^2) e),   r_g ~ U(0.55, 0.85), e ~ N(0, 1)

and every other gene is mu_g + sd_g e. mu_g ~ Gamma(2, 1.8), sd_g ~ U(0.4, 1.2); values clipped at 0.
With a GMT file the planted pathways are that file's sets (``planted_fraction`` of each set's genes, a gene in
two sets planted once), and the universe is every symbol of the file plus filler ``SYNG#####`` up to
``n_genes``; without one, synthetic symbols ``GENE#####`` and synthetic sets written to truth.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from dltr.core.exceptions import DltrError

from ._config import SynthConfig

__all__ = ["draw_expression", "read_gmt"]

_TRAITS = ("z_h", "z_irr", "z_nec", "z_het")


def read_gmt(path: str | Path) -> dict[str, list[str]]:
    sets: dict[str, list[str]] = {}
    for ln, line in enumerate(Path(path).read_text().splitlines(), start=1):
        parts = [p.strip() for p in line.split("\t")]
        if not line.strip():
            continue
        if len(parts) < 3:
            raise DltrError(f"{path} line {ln}: a GMT line needs a name, a description and genes")
        sets[parts[0]] = list(dict.fromkeys(g for g in parts[2:] if g))
    return sets


def _gene_sets(cfg: SynthConfig, rng) -> tuple[list[str], dict[str, list[str]], list[str]]:
    """(universe, all sets, planted set names)."""
    if cfg.gene_sets:
        sets = read_gmt(cfg.gene_sets)
        planted = [p for p in cfg.planted_pathways if p in sets] or list(sets)[:4]  # a GMT without them
        symbols = sorted({g for genes in sets.values() for g in genes})
        n_fill = max(0, cfg.n_genes - len(symbols))
        universe = symbols + [f"SYNG{i:05d}" for i in range(1, n_fill + 1)]
        return universe, sets, planted
    universe = [f"GENE{i:05d}" for i in range(1, cfg.n_genes + 1)]
    n_set = max(10, min(100, cfg.n_genes // 30))
    names = [f"SYNTHETIC_PATHWAY_{i + 1:02d}" for i in range(12)]
    sets = {nm: sorted(rng.choice(universe, n_set, replace=False).tolist()) for nm in names}
    return universe, sets, names[:4]


def draw_expression(cfg: SynthConfig, patients: pd.DataFrame) -> tuple[pd.DataFrame, dict]:
    """``(expression table gene x patients, genes truth dict)`` for the radiogenomics subset."""
    rng = np.random.default_rng([cfg.seed, 5])
    pool = patients[patients["center"] == cfg.radiogenomics_center]
    n = min(cfg.radiogenomics_n, len(pool))
    sub = pool.iloc[np.sort(rng.choice(len(pool), n, replace=False))]
    universe, sets, planted_sets = _gene_sets(cfg, rng)
    g = len(universe)
    mu = rng.gamma(2.0, 1.8, g)
    sd = rng.uniform(0.4, 1.2, g)
    x = mu[:, None] + sd[:, None] * rng.standard_normal((g, n))
    index = {s: i for i, s in enumerate(universe)}
    planted: list[dict] = []
    taken: set[str] = set()
    fractions = {}
    for pw, trait in zip(planted_sets, _TRAITS, strict=False):
        genes = [s for s in sets[pw] if s not in taken]
        k = int(round(cfg.planted_fraction * len(sets[pw])))
        chosen = sorted(rng.choice(genes, min(k, len(genes)), replace=False).tolist())
        fractions[pw] = len(chosen) / len(sets[pw])
        z = sub[trait].to_numpy()
        for s in chosen:
            r, sign = float(rng.uniform(0.55, 0.85)), float(rng.choice([-1.0, 1.0], p=[0.25, 0.75]))
            i = index[s]
            x[i] = mu[i] + sd[i] * (sign * r * z + np.sqrt(1 - r * r) * rng.standard_normal(n))
            planted.append({"gene": s, "pathway": pw, "trait": trait, "r": round(r, 4), "sign": int(sign)})
            taken.add(s)
    x = np.round(np.clip(x, 0, None), 4)
    table = pd.DataFrame(x, columns=sub["patient_id"].tolist())
    table.insert(0, "gene", universe)
    truth = {"universe_size": g, "gene_sets_file": cfg.gene_sets, "patients": sub["patient_id"].tolist(),
             "planted_pathways": [{"pathway": pw, "trait": t, "set_size": len(sets[pw]),
                                   "planted_fraction": round(fractions[pw], 4)}
                                  for pw, t in zip(planted_sets, _TRAITS, strict=False)],
             "planted_genes": planted, "scale": "log2tpm1"}
    if not cfg.gene_sets:
        truth["synthetic_sets"] = sets
    return table, truth
