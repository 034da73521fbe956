"""Two-group survival comparison of one evaluation group with lifelines.

Groups: ``high`` risk (predicted non-responder, score < cutoff) against ``low`` risk (predicted
responder, score >= cutoff). Hazard ratios are high against low, and per ``score_unit`` increase of
the continuous score (the predicted probability of objective response, so an HR below 1 means a
higher predicted response goes with longer PFS). The C-index treats a higher score as a longer
expected PFS (lifelines' convention for ``predicted_scores``).
"""

from __future__ import annotations

import math
import warnings
from typing import Any

import numpy as np
import pandas as pd

from dltr.core.exceptions import ApproximationWarning

GROUPS = ("low", "high")


def km_frame(time: np.ndarray, event: np.ndarray, *, level: float = 0.95, label: str = "") -> pd.DataFrame:
    """Kaplan-Meier step function with its pointwise CI (lifelines' exponential Greenwood band)
    and the event table: columns time, survival, ci_lower, ci_upper, at_risk, events, censored.
    The first row is time 0 (survival 1)."""
    from lifelines import KaplanMeierFitter

    kmf = KaplanMeierFitter(alpha=1 - level).fit(time, event, label=label or "km")
    sf = kmf.survival_function_.iloc[:, 0]
    ci = kmf.confidence_interval_
    et = kmf.event_table
    return pd.DataFrame({
        "time": sf.index.to_numpy(dtype=float),
        "survival": sf.to_numpy(dtype=float),
        "ci_lower": ci.iloc[:, 0].to_numpy(dtype=float),
        "ci_upper": ci.iloc[:, 1].to_numpy(dtype=float),
        "at_risk": et["at_risk"].reindex(sf.index).to_numpy(dtype=np.int64),
        "events": et["observed"].reindex(sf.index).to_numpy(dtype=np.int64),
        "censored": et["censored"].reindex(sf.index).to_numpy(dtype=np.int64),
    })


def median_from_km(km: pd.DataFrame) -> tuple[float, float, float]:
    """Median survival and its CI from a ``km_frame`` (the first time the curve / band reaches
    0.5 or below; NaN where not reached), as lifelines' ``median_survival_times`` reads it."""
    def first(col: str) -> float:
        hit = km.loc[km[col] <= 0.5, "time"]
        return float(hit.iloc[0]) if len(hit) else float("nan")

    return first("survival"), first("ci_lower"), first("ci_upper")


def _cox(df: pd.DataFrame, covariate: str, level: float) -> dict[str, float]:
    from lifelines import CoxPHFitter
    from lifelines.exceptions import ConvergenceError
    from lifelines.statistics import proportional_hazard_test

    try:
        cph = CoxPHFitter(alpha=1 - level).fit(df[["time", "event", covariate]], "time", "event")
    except ConvergenceError:  # e.g. every event in one group: the partial likelihood has no maximum
        warnings.warn(f"Cox model on {covariate!r} did not converge (separated groups?); its statistics are NaN",
                      ApproximationWarning, stacklevel=2)
        return dict(_NAN_COX)
    s = cph.summary.loc[covariate]
    ph = proportional_hazard_test(cph, df[["time", "event", covariate]], time_transform="rank")
    return {"hr": float(s["exp(coef)"]), "hr_lower": float(s[f"exp(coef) lower {level:.0%}"]),
            "hr_upper": float(s[f"exp(coef) upper {level:.0%}"]), "p": float(s["p"]),
            "ph_p": float(np.asarray(ph.p_value).ravel()[0])}


_NAN_COX = {"hr": math.nan, "hr_lower": math.nan, "hr_upper": math.nan, "p": math.nan, "ph_p": math.nan}


def _named(d: dict[str, float], what: str) -> dict[str, float]:
    """hr -> hr_<what>, hr_lower -> hr_<what>_lower, p -> cox_p_<what>, ph_p -> ph_p_<what>."""
    return {f"hr_{what}": d["hr"], f"hr_{what}_lower": d["hr_lower"], f"hr_{what}_upper": d["hr_upper"],
            f"cox_p_{what}": d["p"], f"ph_p_{what}": d["ph_p"]}


def compare_groups(time, event, score, cutoff: float, *, level: float = 0.95, score_unit: float = 0.1,
                   evaluation_group: str = "") -> tuple[dict[str, Any], pd.DataFrame]:
    """All statistics of one evaluation group: ``(summary row, long KM frame with a group column)``."""
    from lifelines.statistics import logrank_test
    from lifelines.utils import concordance_index

    t = np.asarray(time, float)
    e = np.asarray(event, float).astype(int)
    s = np.asarray(score, float)
    high = s < cutoff
    row: dict[str, Any] = {"evaluation_group": evaluation_group, "n": int(t.size), "events": int(e.sum()), "cutoff": float(cutoff)}
    kms = []
    for g, mask in (("low", ~high), ("high", high)):
        row[f"n_{g}"] = int(mask.sum())
        row[f"events_{g}"] = int(e[mask].sum())
        if mask.any():
            km = km_frame(t[mask], e[mask], level=level, label=g).assign(group=g)
            kms.append(km)
            row[f"median_pfs_{g}"], row[f"median_pfs_{g}_lower"], row[f"median_pfs_{g}_upper"] = median_from_km(km)
        else:
            row[f"median_pfs_{g}"] = row[f"median_pfs_{g}_lower"] = row[f"median_pfs_{g}_upper"] = math.nan
    two_groups = bool(high.any() and (~high).any() and e.sum() > 0)
    df = pd.DataFrame({"time": t, "event": e, "high_risk": high.astype(float), "score": s / score_unit})
    if two_groups:
        lr = logrank_test(t[high], t[~high], e[high], e[~high])
        row.update(logrank_stat=float(lr.test_statistic), logrank_p=float(lr.p_value))
        row.update(_named(_cox(df, "high_risk", level), "group"))
    else:
        warnings.warn(f"survival, evaluation group {evaluation_group!r}: {row['n_low']} low-risk / {row['n_high']} high-risk "
                      f"patients and {row['events']} events; group statistics are NaN",
                      ApproximationWarning, stacklevel=2)
        row.update(logrank_stat=math.nan, logrank_p=math.nan)
        row.update(_named(_NAN_COX, "group"))
    if e.sum() > 0 and np.ptp(s) > 0:
        row.update(_named(_cox(df, "score", level), "score"))
        row["c_index"] = float(concordance_index(t, s, e))
    else:
        row.update(_named(_NAN_COX, "score"))
        row["c_index"] = math.nan
    km_all = pd.concat(kms, ignore_index=True) if kms else pd.DataFrame(
        columns=["time", "survival", "ci_lower", "ci_upper", "at_risk", "events", "censored", "group"])
    return row, km_all


def at_risk_counts(km: pd.DataFrame, times) -> list[int]:
    """Numbers at risk at ``times`` read off a ``km_frame``: #{T >= t} is the ``at_risk`` of the
    first event-table time at or after t (0 past the last time)."""
    tt = km["time"].to_numpy(float)
    ar = km["at_risk"].to_numpy(int)
    out = []
    for x in times:
        i = int(np.searchsorted(tt, x, side="left"))
        out.append(int(ar[i]) if i < tt.size else 0)
    return out
