"""Clinical model: logistic regression on clinical variables chosen the way clinical studies do.

1. Encoding (fitted on training rows): numbers keep their unit, missing values take the
   training median, strongly right-skewed positive variables (skewness > 2, e.g. AFP) are
   log-transformed; text variables become indicator columns against their most frequent
   training level (missing = its own reference-level fill, the mode).
2. Univariable screening: likelihood-ratio test of each variable alone, kept if p < ``screen_p``
   (default 0.25, Hosmer, Lemeshow & Sturdivant, *Applied Logistic Regression*, 3rd ed., 4.2: the
   stricter 0.05-0.10 often drops variables that matter only jointly, e.g. AFP and ALBI whose
   marginal effect is masked by their correlation with the tumour's imaging phenotype).
3. Multivariable backward elimination: by AIC (drop the variable whose removal lowers AIC
   most, until none does) or by p-value (drop the largest LR-test p above ``keep_p``).
Odds ratios with Wald 95 % CIs from the inverse observed information (the Hessian).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy.special import expit
from scipy.stats import chi2, norm, skew

from dltr.core.exceptions import ApproximationWarning, ModelError

from ._registry import estimator_from_state, estimator_state, head_state_class

__all__ = ["ClinicalDesign", "ClinicalModel", "LogisticFit", "fit_logistic"]


@dataclass(frozen=True)
class LogisticFit:
    """Maximum-likelihood logistic regression: coefficients (intercept first), covariance, log-lik."""

    coef: np.ndarray
    cov: np.ndarray
    loglik: float

    @property
    def aic(self) -> float:
        return 2.0 * self.coef.size - 2.0 * self.loglik

    @property
    def se(self) -> np.ndarray:
        return np.sqrt(np.diag(self.cov))


def fit_logistic(x: np.ndarray, y: np.ndarray, *, max_iter: int = 100) -> LogisticFit:
    """Newton-Raphson logistic regression of ``y`` on ``[1, x]``; Wald covariance = inverse Hessian.

    Columns are centred and scaled internally for conditioning; coefficients and covariance are
    returned on the original scale.
    """
    x = np.asarray(x, float).reshape(len(y), -1)
    y = np.asarray(y, float)
    mu, sd = x.mean(0), x.std(0)
    sd[sd == 0] = 1.0
    a = np.column_stack([np.ones(len(y)), (x - mu) / sd])
    beta = np.zeros(a.shape[1])
    beta[0] = np.log(y.mean() / (1 - y.mean()))

    def loglik(b):
        eta = a @ b
        return float(np.sum(y * eta - np.logaddexp(0.0, eta)))

    ll = loglik(beta)
    for _ in range(max_iter):
        p = expit(a @ beta)
        grad = a.T @ (y - p)
        hess = (a * (p * (1 - p))[:, None]).T @ a
        step = np.linalg.lstsq(hess, grad, rcond=None)[0]
        t = 1.0
        while True:
            new, ll_new = beta + t * step, loglik(beta + t * step)
            if ll_new >= ll - 1e-10 or t < 1e-6:
                break
            t /= 2
        done = abs(ll_new - ll) < 1e-10 * (1 + abs(ll))
        beta, ll = new, ll_new
        if done:
            break
    p = expit(a @ beta)
    hess = (a * (p * (1 - p))[:, None]).T @ a
    cov_s = np.linalg.pinv(hess)
    # back to the original scale: beta_j = b_j / sd_j, b0 = b0 - sum b_j mu_j / sd_j
    t_mat = np.eye(a.shape[1])
    t_mat[1:, 1:] = np.diag(1 / sd)
    t_mat[0, 1:] = -mu / sd
    return LogisticFit(t_mat @ beta, t_mat @ cov_s @ t_mat.T, ll)


class ClinicalDesign:
    """Training-fitted encoding of clinical columns into a numeric design (see module doc)."""

    def __init__(self, *, skew_log: float = 2.0):
        self.skew_log = skew_log

    def fit(self, df: pd.DataFrame) -> ClinicalDesign:
        self.columns_ = list(df.columns)
        self.spec_: dict[str, dict] = {}
        for c in self.columns_:
            s = df[c]
            if pd.api.types.is_bool_dtype(s) or pd.api.types.is_numeric_dtype(s):
                v = pd.to_numeric(s, errors="coerce").astype(float)
                fill = float(v.median()) if v.notna().any() else 0.0
                vv = v.fillna(fill).to_numpy()
                log = bool(vv.min() > 0 and vv.std() > 0 and skew(vv) > self.skew_log)
                if vv.std() == 0:
                    continue
                self.spec_[c] = {"kind": "numeric", "fill": fill, "log": log,
                                 "terms": [f"log({c})" if log else c]}
            else:
                v = s.astype("string")
                counts = v.value_counts(dropna=True)
                if counts.size < 2:
                    continue
                levels = sorted(counts.index.tolist())
                ref = str(counts.sort_index().idxmax())
                others = [lv for lv in levels if lv != ref]
                self.spec_[c] = {"kind": "categorical", "fill": ref, "reference": ref, "levels": others,
                                 "terms": [f"{c}={lv}" for lv in others]}
        return self

    def variables(self) -> list[str]:
        return list(self.spec_)

    def transform(self, df: pd.DataFrame, variables: list[str] | None = None) -> np.ndarray:
        cols = []
        for c in self.variables() if variables is None else variables:
            spec = self.spec_[c]
            if c not in df.columns:
                raise ModelError(f"clinical variable {c!r} missing from the frame (columns {list(df.columns)})")
            if spec["kind"] == "numeric":
                v = pd.to_numeric(df[c], errors="coerce").astype(float).fillna(spec["fill"]).to_numpy()
                cols.append(np.log(np.maximum(v, 1e-12)) if spec["log"] else v)
            else:
                v = df[c].astype("string").fillna(spec["fill"]).to_numpy()
                cols.extend((v == lv).astype(float) for lv in spec["levels"])
        return np.column_stack(cols) if cols else np.zeros((len(df), 0))

    def terms(self, variables: list[str]) -> list[str]:
        return [t for c in variables for t in self.spec_[c]["terms"]]


class ClinicalModel:
    """Logistic regression on clinical variables with univariable screening and backward selection.

    ``fit(X, y)`` takes a DataFrame of candidate clinical columns (training rows only).
    Learned: ``design_``, ``univariable_`` (table), ``selected_`` (variables), ``fit_``,
    ``summary_`` (term, coef, OR, 95 % CI, p).
    """

    def __init__(self, *, screen_p: float = 0.25, selection: str = "aic", keep_p: float = 0.05):
        self.screen_p = screen_p
        self.selection = selection
        self.keep_p = keep_p

    def _fit_vars(self, df, y, variables):
        return fit_logistic(self.design_.transform(df, variables), y)

    def fit(self, X: pd.DataFrame, y) -> ClinicalModel:
        if self.selection not in ("aic", "p"):
            raise ModelError(f"ClinicalModel: selection {self.selection!r} is not 'aic' or 'p'")
        y = np.asarray(y, float)
        if not isinstance(X, pd.DataFrame) or len(X) != y.size:
            raise ModelError("ClinicalModel.fit needs a DataFrame of clinical columns, one row per label")
        if y.min() == y.max():
            raise ModelError(f"ClinicalModel: training labels hold one class only ({int(y[0])})")
        self.design_ = ClinicalDesign().fit(X)
        null = fit_logistic(np.zeros((y.size, 0)), y)
        uni = []
        for v in self.design_.variables():
            f = self._fit_vars(X, y, [v])
            k = f.coef.size - 1
            lr = max(0.0, 2 * (f.loglik - null.loglik))
            uni.append({"variable": v, "df": k, "lr_stat": lr, "p": float(chi2.sf(lr, k))})
        self.univariable_ = pd.DataFrame(uni, columns=["variable", "df", "lr_stat", "p"])
        chosen = [r["variable"] for r in uni if r["p"] < self.screen_p]
        self.screened_ = list(chosen)
        chosen = self._backward(X, y, chosen)
        if not chosen:
            warnings.warn("ClinicalModel: no clinical variable passed selection; intercept-only model",
                          ApproximationWarning, stacklevel=2)
        self.selected_ = chosen
        self.fit_ = self._fit_vars(X, y, chosen)
        self.summary_ = self._summary()
        return self

    def _backward(self, X, y, chosen):
        chosen = list(chosen)
        while chosen:
            full = self._fit_vars(X, y, chosen)
            trials = {v: self._fit_vars(X, y, [c for c in chosen if c != v]) for v in chosen}
            if self.selection == "aic":
                best = min(trials, key=lambda v: (trials[v].aic, v))
                if trials[best].aic >= full.aic:
                    break
            else:
                pv = {v: chi2.sf(max(0.0, 2 * (full.loglik - f.loglik)), full.coef.size - f.coef.size)
                      for v, f in trials.items()}
                best = max(pv, key=lambda v: (pv[v], v))
                if pv[best] <= self.keep_p:
                    break
            chosen.remove(best)
        return chosen

    def _summary(self) -> pd.DataFrame:
        f = self.fit_
        z = norm.ppf(0.975)
        terms = ["(intercept)"] + self.design_.terms(self.selected_)
        se = f.se
        uni = dict(zip(self.univariable_["variable"], self.univariable_["p"], strict=True))
        owner = ["(intercept)"] + [c for c in self.selected_ for _ in self.design_.spec_[c]["terms"]]
        with np.errstate(over="ignore"):           # a quasi-separated term gets an infinite CI bound
            return self._table(terms, owner, f, se, z, uni)

    @staticmethod
    def _table(terms, owner, f, se, z, uni) -> pd.DataFrame:
        return pd.DataFrame({
            "term": terms, "variable": owner, "coef": f.coef, "se": se,
            "odds_ratio": np.exp(f.coef), "or_ci_low": np.exp(f.coef - z * se),
            "or_ci_high": np.exp(f.coef + z * se), "p": 2 * norm.sf(np.abs(f.coef / se)),
            "univariable_p": [uni.get(v, np.nan) for v in owner],
        })

    def design_matrix(self, X: pd.DataFrame) -> np.ndarray:
        """The selected variables, encoded as in training (the clinical block of fusion heads)."""
        if not hasattr(self, "fit_"):
            raise ModelError("ClinicalModel is not fitted; call fit(X, y) first")
        return self.design_.transform(X, self.selected_)

    def predict_proba(self, X: pd.DataFrame) -> np.ndarray:
        d = self.design_matrix(X)
        p1 = expit(self.fit_.coef[0] + d @ self.fit_.coef[1:])
        return np.column_stack([1 - p1, p1])

    def get_state(self) -> dict:
        """Encoding, screening table, selection and the fit as JSON values (the summary is recomputed)."""
        d = self.design_
        return estimator_state(self, design_={"skew_log": d.skew_log, "columns_": d.columns_, "spec_": d.spec_},
                               univariable_=self.univariable_.to_dict(orient="list"), screened_=self.screened_,
                               selected_=self.selected_, coef=self.fit_.coef.tolist(), cov=self.fit_.cov.tolist(),
                               loglik=self.fit_.loglik)

    @classmethod
    def from_state(cls, state: dict) -> ClinicalModel:
        m = estimator_from_state(cls, state)
        d = state["design_"]
        m.design_ = ClinicalDesign(skew_log=d["skew_log"])
        m.design_.columns_, m.design_.spec_ = list(d["columns_"]), dict(d["spec_"])
        m.univariable_ = pd.DataFrame(state["univariable_"], columns=["variable", "df", "lr_stat", "p"])
        m.screened_, m.selected_ = list(state["screened_"]), list(state["selected_"])
        m.fit_ = LogisticFit(np.asarray(state["coef"], float).reshape(-1), np.asarray(state["cov"], float).reshape(
            len(state["coef"]), len(state["coef"])), float(state["loglik"]))
        m.summary_ = m._summary()
        return m


head_state_class(ClinicalModel)
