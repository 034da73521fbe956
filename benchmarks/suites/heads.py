"""Heads suite: retraining time of DLTR_MLP and the XGBoost fusion head on N x D deep features
(10,000 training rows x 512; --quick 400 x 32, one repetition: a smoke run; plus 20 % held out for AUCs), against scikit-learn's MLPClassifier and
HistGradientBoostingClassifier with matched capacity, on the same matrix in one run.

The matrix goes through the training-frame path: an Arrow ``fixed_size_list<float32>[D]``
embedding column converted once to NumPy (``models.heads.frame_arrays``), as a head reads it
from the store. Features carry a planted signal (a latent trait seen through noisy features plus
an interaction); held-out AUCs of every model are in the notes.
"""

from __future__ import annotations

import numpy as np

from benchmarks.harness import BenchContext, Figure, measure


class _Frame:
    """A training frame's shape as models.heads.frame_arrays reads it (Arrow table + lineage)."""

    def __init__(self, table):
        self.table, self.lineage = table, {}


def _matrix(n: int, d: int, seed: int):
    import pandas as pd
    import pyarrow as pa

    from models.heads import frame_arrays

    rng = np.random.default_rng(seed)
    trait = rng.normal(size=n)
    emb = (trait[:, None] * rng.normal(size=(1, d)) / np.sqrt(d) * 4 + rng.normal(size=(n, d))).astype(np.float32)
    lp = 1.2 * trait + 0.6 * np.tanh(emb[:, 0] * emb[:, 1])
    y = (rng.random(n) < 1 / (1 + np.exp(-lp))).astype(np.int8)
    t = pa.Table.from_pandas(pd.DataFrame({"patient_id": [f"P{i}" for i in range(n)], "label": y}))
    t = t.append_column("embedding", pa.FixedSizeListArray.from_arrays(pa.array(emb.ravel()), d))
    df, X = frame_arrays(_Frame(t))
    return X, df["label"].to_numpy().astype(int)


def run(ctx: BenchContext) -> list[Figure]:
    from sklearn.ensemble import HistGradientBoostingClassifier
    from sklearn.metrics import roc_auc_score
    from sklearn.neural_network import MLPClassifier

    from models.heads import DLTRMLP, XGBFusionHead

    n, d = (400, 32) if ctx.quick else (max(500, int(10000 * ctx.scale)), 512)
    n_test = max(200, n // 5)                       # held out for the AUCs in the notes
    X, y = _matrix(n + n_test, d, ctx.seed)
    cut = n
    Xtr, ytr, Xte, yte = X[:cut], y[:cut], X[cut:], y[cut:]
    reps = 1 if ctx.quick else min(ctx.repeats, 3)
    ours_mlp = DLTRMLP(seed=ctx.seed, n_threads=2)
    sk_mlp = MLPClassifier(hidden_layer_sizes=(64,), alpha=1e-2, batch_size=256, learning_rate_init=1e-3,
                           max_iter=100, early_stopping=True, n_iter_no_change=8, random_state=ctx.seed)
    ours_xgb = XGBFusionHead(seed=ctx.seed, n_jobs=2)
    sk_hgb = HistGradientBoostingClassifier(max_iter=ours_xgb.n_estimators, learning_rate=ours_xgb.learning_rate,
                                            max_depth=ours_xgb.max_depth, early_stopping=False,
                                            random_state=ctx.seed)
    figs = []
    for label, ours, base, base_name in (("DLTR_MLP retrain (3-fold CV early stopping + refit)", ours_mlp, sk_mlp,
                                          "sklearn MLPClassifier (hidden 64, early stopping)"),
                                         ("XGBoost fusion retrain", ours_xgb, sk_hgb,
                                          "sklearn HistGradientBoostingClassifier (same trees)")):
        t_ours = measure(lambda o=ours: o.fit(Xtr, ytr), repeats=reps, warmup=0)
        t_base = measure(lambda b=base: b.fit(Xtr, ytr), repeats=reps, warmup=0)
        figs.append(Figure(
            suite="heads", workload=f"{label}, {cut} x {d}", unit="s", ours=t_ours, baseline=t_base,
            baseline_name=base_name, higher_is_better=False,
            notes={"auc_ours": round(float(roc_auc_score(yte, ours.predict_proba(Xte)[:, 1])), 4),
                   "auc_baseline": round(float(roc_auc_score(yte, base.predict_proba(Xte)[:, 1])), 4),
                   "n_test": n_test, "source": "Arrow fixed_size_list -> NumPy (frame_arrays)"}))
    return figs
