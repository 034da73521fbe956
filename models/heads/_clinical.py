"""Clinical model: Firth-penalised logistic regression on the declared predictors, with selection whose
stability is reported.

1. Candidates: only the clinical.csv columns and lab names that ``cohort.toml`` declares in
   ``predictors`` (``dltr.cohort``); the caller passes exactly those.
2. Encoding (fitted on training rows): numbers keep their unit, missing values take the
   training median, strongly right-skewed positive variables (skewness > 2, e.g. AFP) are
   log-transformed; text variables become indicator columns against their most frequent
   training level (missing = its own reference-level fill, the mode).
3. Every fit is Firth's penalised likelihood (Firth, Biometrika 1993; Heinze & Schemper, Stat Med
   2002), ``firthmodels``: finite estimates under complete or quasi-complete separation (a
   separated PVTT or a rare category gave OR 1e-10 with CI [0, inf] by maximum likelihood), and
   less small-sample bias. Tests between nested models are penalised likelihood-ratio tests.
4. Univariable screening: penalised LR test of each variable alone, kept if p < ``screen_p``
   (default 0.25, Hosmer, Lemeshow & Sturdivant, *Applied Logistic Regression*, 3rd ed., 4.2).
5. Backward elimination by AIC (drop the variable whose removal lowers AIC most) or by p-value
   (drop the largest LR-test p above ``keep_p``); ``selection="none"`` keeps every screened variable;
   ``selection="all"`` skips screening too: every declared predictor (less aliased ones) is in the model.
6. Stability: the screening + elimination is repeated on ``n_bootstrap`` bootstrap resamples of the
   training rows; ``inclusion_`` holds each variable's bootstrap inclusion frequency (Heinze, Wallisch
   & Dunkler, Biometrical J 2018, recommendation 7), also shown in ``summary_``. With ``"all"`` the
   frequency is that of screening + backward AIC (how stably each variable would be selected).
Odds ratios with profile penalised-likelihood 95 % CIs and penalised LR-test p-values (logistf's defaults).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy.special import expit
from scipy.stats import chi2, skew

from dltr.core.exceptions import ApproximationWarning, ModelError

from ._registry import estimator_from_state, estimator_state, head_state_class

#: bootstrap resamples of the selection whose inclusion frequencies report its stability (the one default;
#: ``HeadsConfig.clinical_bootstrap`` and ``fit_heads`` read it)
CLINICAL_BOOTSTRAP = 50

__all__ = ["ClinicalDesign", "ClinicalModel", "LogisticFit", "fit_logistic"]


@dataclass(frozen=True)
class LogisticFit:
    """Firth (or ML) logistic regression: coefficients (intercept first), Wald covariance, log-likelihood
    (penalised for Firth), and optionally profile-likelihood CI bounds and LR-test p-values."""

    coef: np.ndarray
    cov: np.ndarray
    loglik: float
    ci: np.ndarray | None = None       # (k, 2) bounds of coef, intercept first
    lrt_p: np.ndarray | None = None    # penalised LR-test p-value of each coefficient, intercept first

    @property
    def aic(self) -> float:
        return 2.0 * self.coef.size - 2.0 * self.loglik

    @property
    def se(self) -> np.ndarray:
        return np.sqrt(np.diag(self.cov))


def fit_logistic(x: np.ndarray, y: np.ndarray, *, firth: bool = True, inference: bool = False,
                 max_iter: int = 100) -> LogisticFit:
    """Logistic regression of ``y`` on ``[1, x]``, Firth-penalised unless ``firth=False``.

    ``inference=True`` also computes profile (penalised) likelihood CIs and LR-test p-values.
    The Wald covariance is the inverse Fisher information at the estimate (logistf's ``var``).
    """
    from firthmodels import FirthLogisticRegression

    x = np.asarray(x, float).reshape(len(y), -1)
    y = np.asarray(y, float)
    m = FirthLogisticRegression(backend="numpy", max_iter=max_iter, penalty_weight=0.5 if firth else 0.0)
    if x.shape[1] == 0:   # intercept only: closed form (Firth adds one half to each class count)
        k = 0.5 if firth else 0.0
        b0 = float(np.log((y.sum() + k) / (len(y) - y.sum() + k)))
        coef, loglik, ci, lrt_p = np.array([b0]), None, None, None
    else:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")      # firthmodels' convergence notes; checked below
            m.fit(x, y)
        if not m.converged_:
            warnings.warn(f"Firth logistic regression did not converge in {max_iter} iterations",
                          ApproximationWarning, stacklevel=2)
        coef = np.r_[m.intercept_, m.coef_]
        loglik = float(m.loglik_)
        ci = lrt_p = None
        if inference:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                b = m.conf_int(method="pl")
                m.lrt()
            ci = np.vstack([b[-1:], b[:-1]])
            lrt_p = np.r_[m.lrt_pvalues_[-1], m.lrt_pvalues_[:-1]]
    a = np.column_stack([np.ones(len(y)), x])
    p = expit(a @ coef)
    info = (a * (p * (1 - p))[:, None]).T @ a
    if loglik is None:
        loglik = float(np.sum(y * np.log(p) + (1 - y) * np.log1p(-p)))
        if firth:
            loglik += 0.5 * float(np.linalg.slogdet(info)[1])
    return LogisticFit(coef, np.linalg.pinv(info), loglik, ci, lrt_p)


def _firth_state(a: np.ndarray, y: np.ndarray, beta: np.ndarray):
    """(p, w, Fisher information, penalised log-likelihood ``l(beta) + log|I(beta)| / 2``, Cholesky factor
    of the information or None where it is singular) at ``beta``."""
    eta = a @ beta
    p = expit(eta)
    w = p * (1 - p)
    info = (a * w[:, None]).T @ a
    try:
        chol = np.linalg.cholesky(info)
        logdet = 2.0 * float(np.log(np.diagonal(chol)).sum())
    except np.linalg.LinAlgError:
        chol, logdet = None, float(np.linalg.slogdet(info)[1])
    ll = float(np.sum(y * eta - np.logaddexp(0.0, eta)) + 0.5 * logdet)
    return p, w, info, ll, chol


def _leverages(aw: np.ndarray, info: np.ndarray, chol: np.ndarray | None) -> np.ndarray:
    """Diagonal of the hat matrix ``W^1/2 A I^-1 A' W^1/2`` (``aw`` = ``W^1/2 A``): through the inverse
    Cholesky factor where the information is positive definite, else its pseudo-inverse."""
    if chol is not None:
        z = aw @ np.linalg.inv(chol).T
        return (z * z).sum(1)
    return ((aw @ np.linalg.pinv(info, hermitian=True)) * aw).sum(1)


def constrained_firth(a: np.ndarray, y: np.ndarray, free: np.ndarray, *, max_iter: int = 50,
                      start: np.ndarray | None = None) -> tuple[float, np.ndarray]:
    """Maximum of the penalised log-likelihood with the coefficients outside ``free`` held at 0, the penalty
    taken on the *whole* design ``a``: the restricted fit of a penalised likelihood-ratio test (logistf's
    ``anova`` / ``drop1``; a smaller design would change the penalty with the columns' units).
    Newton steps on the free coordinates with Firth's modified score ``a'(y - p + h (1/2 - p))``, from
    ``start`` (its non-free coordinates set to 0; e.g. the unrestricted fit) or from 0. A step longer than 5
    (standardised units) in any coordinate is scaled down whole, never clipped coordinate by coordinate (that bent
    it off the ascent direction on near-singular information, and fits of 13-row resamples stopped short of the
    maximum); where no fraction of a step ascends, the fit stops. Returns (maximum, coefficients)."""
    beta = np.zeros(a.shape[1]) if start is None else np.where(free, start, 0.0)
    p, w, info, ll, chol = _firth_state(a, y, beta)
    sub_ix = np.ix_(free, free)
    for _ in range(max_iter):
        h = _leverages(a * np.sqrt(w)[:, None], info, chol)
        score = a.T @ (y - p + h * (0.5 - p))
        step = np.zeros_like(beta)
        sub = info[sub_ix]
        try:
            step[free] = np.linalg.solve(sub, score[free])
        except np.linalg.LinAlgError:
            step[free] = np.linalg.lstsq(sub, score[free], rcond=None)[0]
        big = float(np.abs(step).max(initial=0.0))
        if big > 5.0:  # at most 5 (standardised units) per coordinate, along the Newton direction
            step *= 5.0 / big
        t = 1.0
        while True:
            new = beta + t * step
            state = _firth_state(a, y, new)
            if state[3] >= ll - 1e-12:
                break
            t /= 2
            if t < 1e-6:  # no ascent along the step at this precision (a near-singular information): beta stands
                return ll, beta
        done = abs(state[3] - ll) < 1e-10 * (1 + abs(ll)) or float(np.abs(t * step).max(initial=0.0)) < 1e-10
        beta, (p, w, info, ll, chol) = new, state
        if done:
            break
    return ll, beta


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
    """Firth logistic regression on clinical variables with screening, backward selection and bootstrap
    inclusion frequencies.

    ``fit(X, y)`` takes a DataFrame of the declared predictor columns (training rows only).
    Learned: ``design_``, ``univariable_`` (table), ``screened_``, ``selected_`` (variables), ``fit_``,
    ``inclusion_`` (variable -> bootstrap inclusion frequency), ``summary_`` (term, coef, OR, 95 % CI, p).
    ``inference=False`` with ``selection="all"`` fits the point estimates alone (no univariable tests, no
    intervals or p-values in ``summary_``): the same design and coefficients at a fraction of the cost, for a
    clinical block that only other heads read (the fusion heads' "every declared predictor").
    """

    def __init__(self, *, screen_p: float = 0.25, selection: str = "aic", keep_p: float = 0.05,
                 firth: bool = True, n_bootstrap: int = CLINICAL_BOOTSTRAP, seed: int = 0, inference: bool = True):
        self.screen_p = screen_p
        self.selection = selection
        self.keep_p = keep_p
        self.firth = firth
        self.n_bootstrap = n_bootstrap
        self.seed = seed
        self.inference = inference

    def _fit(self, xd: dict[str, np.ndarray], y, variables, inference: bool = False) -> LogisticFit:
        x = np.column_stack([xd[v] for v in variables]) if variables else np.zeros((len(y), 0))
        return fit_logistic(x, y, firth=self.firth, inference=inference)

    def fit(self, X: pd.DataFrame, y) -> ClinicalModel:
        if self.selection not in ("aic", "p", "none", "all"):
            raise ModelError(f"ClinicalModel: selection {self.selection!r} is not 'aic', 'p', 'none' or 'all'")
        y = np.asarray(y, float)
        if not isinstance(X, pd.DataFrame) or len(X) != y.size:
            raise ModelError("ClinicalModel.fit needs a DataFrame of clinical columns, one row per label")
        if y.min() == y.max():
            raise ModelError(f"ClinicalModel: training labels hold one class only ({int(y[0])})")
        self.design_ = ClinicalDesign().fit(X)
        xd = {v: self.design_.transform(X, [v]) for v in self.design_.variables()}
        if self.selection == "all" and not self.inference:  # nothing tested: every independent variable
            uni, chosen = [], self._backward(xd, y, list(xd), "all")
        else:
            uni, chosen = self._select(xd, y)
        self.inclusion_ = self._bootstrap(xd, y)
        self.univariable_ = pd.DataFrame(uni, columns=["variable", "df", "lr_stat", "p"])
        self.screened_ = [r["variable"] for r in uni if self.selection == "all" or r["p"] < self.screen_p]
        # left out as linear combinations of earlier candidates (recorded in the heads' lineage)
        self.aliased_ = [v for v in self.screened_ if v not in self._independent(xd, self.screened_)]
        if not chosen:
            warnings.warn("ClinicalModel: no clinical variable passed selection; intercept-only model",
                          ApproximationWarning, stacklevel=2)
        self.selected_ = chosen
        self.fit_ = self._fit(xd, y, chosen, inference=self.inference)
        self.summary_ = self._summary()
        return self

    @staticmethod
    def _standardised(xd, n: int, variables) -> tuple[np.ndarray, list[str | None]]:
        """(design ``[1, columns of variables]`` with each column standardised, the variable of each column
        (None for the intercept)).

        The penalised LR statistic does not depend on the columns' location or scale, and Newton steps are
        better conditioned. A column constant in these rows (a level absent from a bootstrap resample or a
        fold) carries no information and is left out: kept, it would make the information singular and every
        log-likelihood of the model -inf."""
        cols, owner = [np.ones(n)], [None]
        for v in variables:
            for c in xd[v].T:
                sd = c.std()
                if sd > 0:
                    cols.append((c - c.mean()) / sd)
                    owner.append(v)
        return np.column_stack(cols), owner

    def _loglik(self, a: np.ndarray, y, free: np.ndarray, start: np.ndarray | None = None
                ) -> tuple[float, np.ndarray | None]:
        """(penalised (Firth) or plain log-likelihood, coefficients) of the model on design ``a`` (from
        ``_standardised``) with the columns outside ``free`` held at 0, Newton steps from ``start`` (the
        unrestricted fit's coefficients, say)."""
        if not self.firth:
            f = fit_logistic(a[:, 1:][:, free[1:]], y, firth=False)
            return f.loglik, None
        return constrained_firth(a, y, free, start=start)

    def _drop_stats(self, xd, y, variables) -> dict[str, tuple[float, int]]:
        """Penalised LR statistic and degrees of freedom of dropping each of ``variables`` from their joint
        model (one standardised design; each restricted fit starts from the joint fit's coefficients)."""
        a, owner = self._standardised(xd, len(y), variables)
        owner = np.array(owner, dtype=object)
        full, beta = self._loglik(a, y, np.ones(a.shape[1], bool))
        return {v: (max(0.0, 2 * (full - self._loglik(a, y, owner != v, start=beta)[0])), xd[v].shape[1])
                for v in variables}

    def _select(self, xd, y, selection: str | None = None) -> tuple[list[dict], list[str]]:
        selection = selection or self.selection
        uni = []
        for v in xd:
            lr, k = self._drop_stats(xd, y, [v])[v]
            uni.append({"variable": v, "df": k, "lr_stat": lr, "p": float(chi2.sf(lr, k))})
        chosen = [r["variable"] for r in uni if selection == "all" or r["p"] < self.screen_p]
        return uni, self._backward(xd, y, chosen, selection)

    def _bootstrap(self, xd, y) -> dict[str, float]:
        """Share of bootstrap resamples (both classes present) whose selection keeps each variable."""
        rng = np.random.default_rng(self.seed)
        counts, n_ok = dict.fromkeys(xd, 0), 0
        for _ in range(self.n_bootstrap):
            idx = rng.integers(0, len(y), len(y))
            if y[idx].min() == y[idx].max():
                continue
            _, kept = self._select({v: a[idx] for v, a in xd.items()}, y[idx],
                                   "aic" if self.selection == "all" else self.selection)
            n_ok += 1
            for v in kept:
                counts[v] += 1
        return {v: (c / n_ok if n_ok else float("nan")) for v, c in counts.items()}

    @staticmethod
    def _independent(xd, variables) -> list[str]:
        """``variables`` in order, less those whose columns are linear combinations of the earlier ones and
        the intercept (aliased: e.g. a grade derived from a score, BCLC from tumour count and PVI)."""
        keep, cols = [], [np.ones(len(next(iter(xd.values()))))] if xd else []
        for v in variables:
            trial = np.column_stack(cols + [c for c in xd[v].T])
            if np.linalg.matrix_rank(trial) == trial.shape[1]:
                keep.append(v)
                cols = list(trial.T)
        return keep

    def _backward(self, xd, y, chosen, selection: str):
        """Drop, one at a time, the variable with the weakest penalised LR test: by AIC (statistic below
        twice its degrees of freedom) or by p-value (above ``keep_p``)."""
        chosen = self._independent(xd, [v for v in chosen if np.ptp(xd[v], axis=0).max() > 0])
        if selection in ("none", "all"):
            return chosen
        while chosen:
            stat = self._drop_stats(xd, y, chosen)
            if selection == "aic":
                best = min(stat, key=lambda v: (stat[v][0] - 2 * stat[v][1], v))
                if stat[best][0] - 2 * stat[best][1] >= 0:
                    break
            else:
                pv = {v: chi2.sf(*stat[v]) for v in chosen}
                best = max(pv, key=lambda v: (pv[v], v))
                if pv[best] <= self.keep_p:
                    break
            chosen.remove(best)
        return chosen

    def _summary(self) -> pd.DataFrame:
        f = self.fit_
        terms = ["(intercept)"] + self.design_.terms(self.selected_)
        uni = dict(zip(self.univariable_["variable"], self.univariable_["p"], strict=True))
        owner = ["(intercept)"] + [c for c in self.selected_ for _ in self.design_.spec_[c]["terms"]]
        ci = f.ci if f.ci is not None else np.full((f.coef.size, 2), np.nan)
        p = f.lrt_p if f.lrt_p is not None else np.full(f.coef.size, np.nan)
        return pd.DataFrame({
            "term": terms, "variable": owner, "coef": f.coef, "se": f.se,
            "odds_ratio": np.exp(f.coef), "or_ci_low": np.exp(ci[:, 0]), "or_ci_high": np.exp(ci[:, 1]),
            "p": p, "univariable_p": [uni.get(v, np.nan) for v in owner],
            "inclusion_frequency": [self.inclusion_.get(v, np.nan) for v in owner],
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
                               selected_=self.selected_, inclusion_=dict(self.inclusion_),
                               aliased_=list(getattr(self, "aliased_", [])),
                               coef=self.fit_.coef.tolist(), cov=self.fit_.cov.tolist(), loglik=self.fit_.loglik,
                               ci=None if self.fit_.ci is None else np.asarray(self.fit_.ci, float).tolist(),
                               lrt_p=None if self.fit_.lrt_p is None else np.asarray(self.fit_.lrt_p, float).tolist())

    @classmethod
    def from_state(cls, state: dict) -> ClinicalModel:
        m = estimator_from_state(cls, state)
        d = state["design_"]
        m.design_ = ClinicalDesign(skew_log=d["skew_log"])
        m.design_.columns_, m.design_.spec_ = list(d["columns_"]), dict(d["spec_"])
        m.univariable_ = pd.DataFrame(state["univariable_"], columns=["variable", "df", "lr_stat", "p"])
        m.screened_, m.selected_ = list(state["screened_"]), list(state["selected_"])
        k = len(state["coef"])
        ci, lrt_p = state.get("ci"), state.get("lrt_p")
        m.fit_ = LogisticFit(np.asarray(state["coef"], float).reshape(-1), np.asarray(state["cov"], float).reshape(k, k),
                             float(state["loglik"]), None if ci is None else np.asarray(ci, float).reshape(k, 2),
                             None if lrt_p is None else np.asarray(lrt_p, float).reshape(-1))
        m.inclusion_ = {str(v): float(f) for v, f in state["inclusion_"].items()}
        m.aliased_ = [str(v) for v in state.get("aliased_", [])]
        m.summary_ = m._summary()
        return m


head_state_class(ClinicalModel)
