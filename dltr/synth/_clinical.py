"""Patients of the synthetic cohort: latent tumour traits, clinical factors, response and PFS.

Every trait is a fixed monotone function of a standard-normal latent ``z``:

    arterial hyper-enhancement  h   = sigmoid(1.2 z_h)                 in (0, 1)
    wash-out                    w   = sigmoid(1.2 z_w)
    capsule                     cap = sigmoid(1.5 z_cap)
    necrotic core fraction      nec = 0.6 sigmoid(1.3 z_nec - 0.5)
    internal heterogeneity      het = sigmoid(1.2 z_het)
    margin irregularity         irr = 0.35 sigmoid(1.2 z_irr)
    largest diameter (mm)       d   = clip(45 exp(0.4 z_d), 15, 110)

With the standard-normal image score g = (0.55 z_h + 0.30 z_w + 0.30 z_cap - 0.45 z_nec - 0.40 z_het
- 0.35 z_d - 0.20 z_irr) / |w| and independent standard normals e_*, the clinical factors are
z_afp = 0.5 g + sqrt(0.75) e_afp (hypervascular tumours secrete more AFP), log10 AFP = 1.6 + 1.1 z_afp,
a_albi = 0.35 g + sqrt(1 - 0.35^2) e_albi, ALBI score = -2.55 + 0.45 a_albi (grades at -2.60 / -1.39),
Child-Pugh B when 0.8 a_albi + 0.6 e_cp > 0.95, portal vein invasion (PVI) when e_pvi > 1.2, tumour count
1 + Bern(0.45) + Bern(0.2), BCLC C with PVI, A for a single tumour, B otherwise.

Objective response (CR or PR) is Bernoulli(p) with the **logistic model**

    logit p = b0 + S_img + S_clin,          b0 = 0.85
    S_img  = 1.65 g
    S_clin = 1.75 (-0.55 z_afp - 0.45 a_albi - 0.50 [Child-Pugh B] - 0.35 (count - 1) - 1.0 [PVI])

S_img and S_clin are negatively correlated (about -0.5), so each alone ranks patients much worse (expected
AUC about 0.66 and 0.65) than both together (about 0.83), as in Chen et al. 2025; response rate about 51 %.
mRECIST: a responder is CR with probability sigmoid(logit p - 2.5), else PR; a non-responder is PD with
probability sigmoid(-logit p - 0.6), else SD.

**PFS** (days) is Weibull with shape k = 1.3 and proportional hazards

    h(t) = lambda k t^(k-1) exp(-0.25 (logit p - b0) + 0.4 [SD or PD] + 0.4 [PD]),  lambda = (1/560)^k

censored by random loss to follow-up (exponential, mean 1100 days) and administratively at ``study_end``
(median PFS about 9.5 months: 14 in responders, 6 in non-responders; about 28 % censored).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from ._config import SynthConfig

__all__ = ["RESPONSE_MODEL", "draw_patients", "oracle_aucs"]

RESPONSE_MODEL = {
    "b0": 0.85, "k_img": 1.65, "k_clin": 1.75, "rho_afp": 0.5, "rho_albi": 0.35,
    "w_img": {"z_h": 0.55, "z_w": 0.30, "z_cap": 0.30, "z_nec": -0.45, "z_het": -0.40, "z_d": -0.35,
              "z_irr": -0.20},
    "w_clin": {"z_afp": -0.55, "a_albi": -0.45, "child_pugh_b": -0.50, "count_minus_1": -0.35, "pvi": -1.0},
    "pfs": {"shape": 1.3, "scale_days": 560.0, "beta_lp": -0.25, "beta_nonresp": 0.4, "beta_pd": 0.4,
            "loss_mean_days": 1100.0},
}
_ETIOLOGY = np.array(["HBV", "HCV", "alcohol", "NASH", "other"])
_CENTER_ETIOLOGY = {"A": [0.6, 0.1, 0.15, 0.1, 0.05], "B": [0.45, 0.2, 0.2, 0.1, 0.05],
                    "C": [0.3, 0.3, 0.2, 0.15, 0.05]}


def _sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


def _auc(y: np.ndarray, s: np.ndarray) -> float:
    """Mann-Whitney AUC with ties counted one half (NaN with one class)."""
    y = np.asarray(y, bool)
    if y.all() or not y.any():
        return float("nan")
    r = pd.Series(s).rank().to_numpy()
    n1, n0 = int(y.sum()), int((~y).sum())
    return float((r[y].sum() - n1 * (n1 + 1) / 2) / (n1 * n0))


def _draw_center(cfg: SynthConfig, ci: int, rng: np.random.Generator) -> pd.DataFrame:
    c = cfg.centers[ci]
    n = c.n_patients
    m = RESPONSE_MODEL
    z = {k: rng.standard_normal(n) for k in ("z_h", "z_w", "z_cap", "z_nec", "z_het", "z_irr", "z_d")}
    a_albi, a_afp, a_pvi, e_cp = (rng.standard_normal(n) for _ in range(4))
    d = pd.DataFrame({"patient_id": [f"SYN-{c.name}-{i + 1:04d}" for i in range(n)], "center": c.name})
    d["hyper"] = _sigmoid(1.2 * z["z_h"])
    d["washout"] = _sigmoid(1.2 * z["z_w"])
    d["capsule"] = _sigmoid(1.5 * z["z_cap"])
    d["necrosis"] = 0.6 * _sigmoid(1.3 * z["z_nec"] - 0.5)
    d["heterogeneity"] = _sigmoid(1.2 * z["z_het"])
    d["irregularity"] = 0.35 * _sigmoid(1.2 * z["z_irr"])
    d["diameter_mm"] = np.clip(45.0 * np.exp(0.4 * z["z_d"]), 15.0, 110.0)
    count = 1 + (rng.random(n) < 0.45).astype(int) + (rng.random(n) < 0.2).astype(int)
    wi = m["w_img"]
    norm = np.sqrt(sum(v * v for v in wi.values()))
    g = sum(wi[k] * z[k] for k in wi) / norm  # standard normal image score
    ra, rb = m["rho_afp"], m["rho_albi"]
    z_afp = ra * g + np.sqrt(1 - ra * ra) * a_afp
    a_albi = rb * g + np.sqrt(1 - rb * rb) * a_albi
    log_afp = 1.6 + 1.1 * z_afp
    albi = -2.55 + 0.45 * a_albi
    cp_b = (0.8 * a_albi + 0.6 * e_cp > 0.95).astype(int)
    pvi = (a_pvi > 1.2).astype(int)
    s_img = m["k_img"] * g
    wc = m["w_clin"]
    s_clin = m["k_clin"] * (wc["z_afp"] * z_afp + wc["a_albi"] * a_albi + wc["child_pugh_b"] * cp_b
                            + wc["count_minus_1"] * (count - 1) + wc["pvi"] * pvi)
    lp = m["b0"] + s_img + s_clin
    p = _sigmoid(lp)
    u = rng.random((n, 3))
    responder = u[:, 0] < p
    response = np.where(responder, np.where(u[:, 1] < _sigmoid(lp - 2.5), "CR", "PR"),
                        np.where(u[:, 1] < _sigmoid(-lp - 0.6), "PD", "SD"))
    for k, v in z.items():
        d[k] = v
    d["a_albi"], d["z_afp"] = a_albi, z_afp
    d["s_img"], d["s_clin"], d["logit"], d["p_true"] = s_img, s_clin, lp, p
    d["responder"] = responder.astype(int)
    d["response"] = response
    d["tumour_count"] = count
    d["afp"] = np.round(10.0 ** log_afp, 1)
    d["albi_score"] = np.round(albi, 3)
    d["albi_grade"] = np.where(albi <= -2.60, 1, np.where(albi <= -1.39, 2, 3))
    d["child_pugh"] = np.where(cp_b == 1, "B", "A")
    d["portal_vein_invasion"] = pvi
    d["bclc"] = np.where(pvi == 1, "C", np.where(count == 1, "A", "B"))
    d["age"] = np.clip(np.round(rng.normal(60, 10, n)), 25, 90).astype(int)
    d["sex"] = np.where(rng.random(n) < 0.82, "M", "F")
    probs = _CENTER_ETIOLOGY.get(c.name, _CENTER_ETIOLOGY["A"])
    d["etiology"] = rng.choice(_ETIOLOGY, size=n, p=probs)
    _dates_and_pfs(cfg, d, rng)
    return d


def _dates_and_pfs(cfg: SynthConfig, d: pd.DataFrame, rng: np.random.Generator) -> None:
    n = len(d)
    first, last = np.datetime64(cfg.first_tace), np.datetime64(cfg.last_tace)
    tace = first + rng.integers(0, int((last - first).astype(int)) + 1, n).astype("timedelta64[D]")
    d["tace_date"] = pd.to_datetime(tace).strftime("%Y-%m-%d")
    d["study_date"] = pd.to_datetime(tace - rng.integers(3, 31, n).astype("timedelta64[D]")).strftime("%Y-%m-%d")
    pf = RESPONSE_MODEL["pfs"]
    lp0 = d["logit"].to_numpy() - RESPONSE_MODEL["b0"]
    nonresp = d["response"].isin(["SD", "PD"]).to_numpy()
    eta = pf["beta_lp"] * lp0 + pf["beta_nonresp"] * nonresp + pf["beta_pd"] * (d["response"] == "PD").to_numpy()
    k, scale = pf["shape"], pf["scale_days"]
    t_event = scale * (rng.exponential(1.0, n) / np.exp(eta)) ** (1.0 / k)
    t_loss = rng.exponential(pf["loss_mean_days"], n)
    t_admin = (np.datetime64(cfg.study_end) - tace).astype(int).astype(float)
    t_cens = np.minimum(t_loss, t_admin)
    d["pfs_days"] = np.maximum(1, np.round(np.minimum(t_event, t_cens))).astype(int)
    d["pfs_event"] = (t_event <= t_cens).astype(int)


def draw_patients(cfg: SynthConfig) -> pd.DataFrame:
    """Every patient's latent traits, clinical factors, true probability and outcomes (one row each).

    Center ``i`` draws from its own stream ``default_rng([seed, 1, i])``, so adding patients to one center
    leaves the others unchanged.
    """
    frames = []
    for ci, c in enumerate(cfg.centers):
        d = _draw_center(cfg, ci, np.random.default_rng([cfg.seed, 1, ci]))
        if c.split == "train_internal":
            r = np.random.default_rng([cfg.seed, 2, ci]).permutation(len(d))
            n_int = int(round(cfg.internal_fraction * len(d)))
            d["split"] = np.where(np.isin(np.arange(len(d)), r[:n_int]), "internal", "train")
        else:
            d["split"] = "external"
        frames.append(d)
    return pd.concat(frames, ignore_index=True)


def oracle_aucs(patients: pd.DataFrame) -> dict[str, dict[str, float]]:
    """Per-center AUC of the true probability and of the image-only / clinical-only true sub-models.

    ``*_auc`` use the drawn responses; ``*_expected_auc`` replace each label by its probability (the AUC the
    model would reach averaged over outcome draws for these patients), which varies much less.
    """
    out: dict[str, dict[str, float]] = {}
    for center, g in patients.groupby("center", sort=True):
        y = g["responder"].to_numpy()
        p = g["p_true"].to_numpy()
        row = {"n": int(len(g)), "response_rate": float(y.mean())}
        for key, s in (("oracle", g["logit"]), ("image_only", g["s_img"]), ("clinical_only", g["s_clin"])):
            s = s.to_numpy()
            row[f"{key}_auc"] = _auc(y, s)
            row[f"{key}_expected_auc"] = _expected_auc(p, s)
        out[str(center)] = row
    return out


def _expected_auc(p: np.ndarray, s: np.ndarray) -> float:
    gt = (s[:, None] > s[None, :]) + 0.5 * (s[:, None] == s[None, :])
    w = p[:, None] * (1 - p[None, :])
    np.fill_diagonal(w, 0.0)
    return float((w * gt).sum() / w.sum())
