"""Cohort tables built in code (clinical, labs), for the feature-store tests: the shape
``dltr.cohort.load_cohort`` returns, without image files."""

from __future__ import annotations

import datetime as dt
import types

import numpy as np
import pandas as pd

LABS = ("afp", "albumin")


def clinical_tables(n: int = 30, seed: int = 0):
    """A cohort object as dltr.cohort.load_cohort returns it, built in code, with planted
    late-recorded lab values (value >= 9000) that must never reach a training frame."""
    rng = np.random.default_rng(seed)
    pids = [f"P{i:03d}" for i in range(n)]
    tace = [dt.date(2020, 1, 1) + dt.timedelta(days=int(d)) for d in rng.integers(0, 600, n)]
    resp = rng.choice(["CR", "PR", "SD", "PD", None], n)
    clinical = pd.DataFrame({
        "patient_id": pids, "center": [("A", "B", "C")[i % 3] for i in range(n)],
        "tace_date": pd.to_datetime(tace), "response": resp,
        "pfs_days": rng.integers(30, 900, n).astype(float), "pfs_event": rng.integers(0, 2, n),
        "split": [("train", "internal", "external")[i % 3] for i in range(n)],
        "label": pd.array([None if r is None else int(r in ("CR", "PR")) for r in resp], dtype="Int8"),
        "age": rng.integers(35, 85, n), "sex": pd.Categorical(rng.choice(["F", "M"], n)),
    })
    rows, late = [], []
    for pid, t in zip(pids, tace, strict=True):
        t0 = pd.Timestamp(t)
        for name in LABS:
            for k in range(int(rng.integers(0, 5))):  # ordinary values, known before TACE
                m = t0 - pd.Timedelta(days=int(rng.integers(1, 200)), hours=int(rng.integers(0, 20)))
                rows.append((pid, name, float(rng.normal(50, 10)), m, m + pd.Timedelta(hours=k)))
            m = t0 - pd.Timedelta(days=int(rng.integers(0, 5)), hours=1)  # measured before, recorded after
            late.append((pid, name, 9000.0 + len(late), m, t0 + pd.Timedelta(days=int(rng.integers(1, 4)))))
            late.append((pid, name, 9500.0 + len(late), t0 + pd.Timedelta(hours=9), t0 + pd.Timedelta(hours=10)))
    if rows:  # an amendment: same measured_at, recorded later (but before TACE) -> the amended value wins
        p, nm, v, m, r = rows[0]
        rows.append((p, nm, v + 1.0, m, r + pd.Timedelta(minutes=5)))
    labs = pd.DataFrame(rows + late, columns=["patient_id", "name", "value", "measured_at", "recorded_at"])
    labs["unit"] = "u"
    cohort = types.SimpleNamespace(clinical=clinical, labs=labs, expression=None, root="<in-code>",
                                   config=types.SimpleNamespace(expression_scale="log2tpm1"))
    return cohort, pd.DataFrame(late, columns=labs.columns[:5])
