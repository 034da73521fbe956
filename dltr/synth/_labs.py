"""labs.csv of the synthetic cohort: dated measurements before and after TACE, with late and amended reports.

Per patient five labs (afp, albumin, bilirubin, platelets, inr) at two visits before TACE (about 45 and 7
days before; the later one equals clinical.csv's baseline) and two after (30 and 90 days). About 20 % of
patients have an extra pre-TACE draw one day before TACE whose report was signed only after TACE (``late``),
and about 10 % have their 7-day AFP amended after TACE (``amended``: same ``measured_at``, later
``recorded_at``, other value). A point-in-time correct join must ignore both; ``truth/labs_asof.csv`` holds
what it must return and ``truth/late_labs.csv`` the rows it must skip.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from dltr.core.vocabulary import RESPONDERS

__all__ = ["draw_labs"]

_UNITS = {"afp": "ng/mL", "albumin": "g/L", "bilirubin": "umol/L", "platelets": "10^9/L", "inr": ""}


def _ts(date: np.datetime64, days: int, minutes: int) -> pd.Timestamp:
    return pd.Timestamp(date + np.timedelta64(int(days), "D") + np.timedelta64(8 * 60 + int(minutes), "m"))


def draw_labs(patients: pd.DataFrame, seed: int) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """``(labs, late_labs, labs_asof)`` for ``patients`` (rows of ``draw_patients``)."""
    rng = np.random.default_rng([seed, 4])
    rows, late, asof = [], [], []
    for p in patients.itertuples(index=False):
        tace = np.datetime64(p.tace_date)
        alb = float(np.clip(rng.normal(38, 4.5), 25, 50))
        bili = float(np.clip(10 ** ((p.albi_score + 0.085 * alb) / 0.66), 3, 200))
        base = {"afp": float(p.afp), "albumin": round(alb, 1), "bilirubin": round(bili, 1),
                "platelets": float(round(np.clip(rng.lognormal(np.log(140), 0.4), 30, 500))),
                "inr": round(float(np.clip(rng.normal(1.15, 0.1), 0.9, 1.8)), 2)}
        resp = p.response in RESPONDERS
        visits = [(-int(rng.integers(35, 56)), 1.0), (-int(rng.integers(3, 11)), None),
                  (int(rng.integers(25, 36)), 0.4 if resp else 1.3), (int(rng.integers(80, 100)), 0.3 if resp else 1.8)]
        for day, factor in visits:
            minutes = int(rng.integers(0, 240))
            for name, v0 in base.items():
                if factor is None:
                    v = v0
                elif name == "afp":
                    v = round(v0 * factor * float(rng.lognormal(0, 0.1)), 1)
                else:
                    v = round(v0 * float(rng.lognormal(0, 0.06)), 2)
                t = _ts(tace, day, minutes)
                rec = "" if rng.random() < 0.5 else (t + pd.Timedelta(hours=int(rng.integers(2, 30)))).isoformat()
                if day < 0 and rec and pd.Timestamp(rec) >= pd.Timestamp(tace):
                    rec = (t + pd.Timedelta(hours=1)).isoformat()
                rows.append((p.patient_id, name, v, _UNITS[name], t.isoformat(), rec))
        asof_day = visits[1][0]
        for name, v0 in base.items():
            asof.append((p.patient_id, name, v0, _ts(tace, asof_day, 0).date().isoformat()))
        if rng.random() < 0.2:  # drawn the day before TACE, report signed after it
            t = _ts(tace, -1, int(rng.integers(0, 120)))
            rec = _ts(tace, int(rng.integers(1, 11)), 300).isoformat()
            for name in ("afp", "bilirubin"):
                v = round(base[name] * float(rng.uniform(1.4, 2.5)), 1)
                rows.append((p.patient_id, name, v, _UNITS[name], t.isoformat(), rec))
                late.append((p.patient_id, name, v, t.isoformat(), rec, "late"))
        if rng.random() < 0.1:  # the pre-TACE AFP amended after TACE
            t = next(r[4] for r in reversed(rows) if r[0] == p.patient_id and r[1] == "afp"
                     and pd.Timestamp(r[4]) < pd.Timestamp(tace) and pd.Timestamp(r[4]).date()
                     == _ts(tace, asof_day, 0).date())
            rec = _ts(tace, int(rng.integers(2, 20)), 200).isoformat()
            v = round(base["afp"] * float(rng.uniform(0.3, 0.7)), 1)
            rows.append((p.patient_id, "afp", v, "ng/mL", t, rec))
            late.append((p.patient_id, "afp", v, t, rec, "amended"))
    labs = pd.DataFrame(rows, columns=["patient_id", "name", "value", "unit", "measured_at", "recorded_at"])
    late_df = pd.DataFrame(late, columns=["patient_id", "name", "value", "measured_at", "recorded_at", "kind"])
    asof_df = pd.DataFrame(asof, columns=["patient_id", "name", "value", "measured_on"])
    return labs, late_df, asof_df
