"""Logistic regression: odds ratios with confidence intervals, per patient (Logit) and per
screw clustered within patients (GEE), from statsmodels.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
import pandas as pd

__all__ = ["OddsRatio", "logistic_odds_ratios", "odds_ratio_table", "clustered_odds_ratio", "clustered_proportion"]


@dataclass(frozen=True)
class OddsRatio:
    """Odds ratio of the outcome per unit of ``predictor`` (per ``per`` units for a continuous one).

    ``model`` says how it was estimated: univariate, multivariable (adjusted for the other
    predictors) or GEE.
    """

    predictor: str
    odds_ratio: float
    ci_low: float
    ci_high: float
    p_value: float
    model: str
    n: int


class FitError(ValueError):
    """A model could not be fitted (separation, too few events, a constant predictor)."""


def _design(frame: pd.DataFrame, predictors: list[str]) -> pd.DataFrame:
    import statsmodels.api as sm

    return sm.add_constant(frame[predictors].astype(float), has_constant="add")


def _fit_logit(outcome: np.ndarray, design: pd.DataFrame):
    import statsmodels.api as sm
    from statsmodels.tools.sm_exceptions import ConvergenceWarning, PerfectSeparationWarning

    with warnings.catch_warnings():
        warnings.simplefilter("error", PerfectSeparationWarning)
        warnings.simplefilter("error", ConvergenceWarning)
        try:
            fit = sm.Logit(outcome.astype(float), design).fit(disp=0, maxiter=100)
        except (PerfectSeparationWarning, ConvergenceWarning, np.linalg.LinAlgError) as exc:
            raise FitError(f"the logistic model of {', '.join(design.columns[1:])} cannot be fitted: {exc}") from None
    return fit


def _ratios(fit, predictors: list[str], model: str, n: int, ci_level: float) -> list[OddsRatio]:
    ci = fit.conf_int(alpha=1 - ci_level)
    return [OddsRatio(p, float(np.exp(fit.params[p])), float(np.exp(ci.loc[p, 0])), float(np.exp(ci.loc[p, 1])),
                      float(fit.pvalues[p]), model, n) for p in predictors]


def logistic_odds_ratios(frame: pd.DataFrame, outcome: str, predictors: list[str], *,
                         multivariable: bool = True, ci_level: float = 0.95) -> list[OddsRatio]:
    """Odds ratios of ``outcome`` per unit of each predictor, univariate (one model per
    predictor, all its complete rows) and multivariable (one model of all predictors, rows
    complete in all), as in a paper's "Table 2".

    Parameters
    ----------
    frame : DataFrame
        ``outcome`` as bool or 0/1; predictors numeric (bool as 0/1).
    outcome : str
    predictors : list of str
    multivariable : bool
        Also fit the model of all predictors together (when there are two or more).

    Returns
    -------
    list of OddsRatio
        Univariate first, in the order of ``predictors``, then multivariable. Wald CIs.

    Raises
    ------
    FitError
        When a model cannot be fitted (perfect separation, no convergence).
    """
    out = []
    for p in predictors:
        rows = frame[[outcome, p]].dropna()
        fit = _fit_logit(rows[outcome].to_numpy(), _design(rows, [p]))
        out += _ratios(fit, [p], "univariate", len(rows), ci_level)
    if multivariable and len(predictors) > 1:
        rows = frame[[outcome, *predictors]].dropna()
        fit = _fit_logit(rows[outcome].to_numpy(), _design(rows, predictors))
        out += _ratios(fit, predictors, "multivariable", len(rows), ci_level)
    return out


def odds_ratio_table(ratios: list[OddsRatio]) -> pd.DataFrame:
    """The odds ratios as a table: predictor, model, n, OR, CI low, CI high, p."""
    return pd.DataFrame([{"predictor": r.predictor, "model": r.model, "n": r.n, "OR": r.odds_ratio,
                          "CI low": r.ci_low, "CI high": r.ci_high, "p": r.p_value} for r in ratios])


def _fit_gee(rows: pd.DataFrame, outcome: str, design: pd.DataFrame, cluster: str, cov_struct, what: str):
    import statsmodels.api as sm
    from statsmodels.tools.sm_exceptions import ConvergenceWarning, PerfectSeparationWarning

    with warnings.catch_warnings():
        for w in (PerfectSeparationWarning, ConvergenceWarning, RuntimeWarning):
            warnings.simplefilter("error", w)
        try:
            return sm.GEE(rows[outcome].astype(float), design, groups=rows[cluster], family=sm.families.Binomial(),
                          cov_struct=cov_struct).fit()
        except (PerfectSeparationWarning, ConvergenceWarning, RuntimeWarning, np.linalg.LinAlgError,
                ValueError) as exc:
            raise FitError(f"the GEE of {what} cannot be fitted: {exc}") from None


def clustered_proportion(frame: pd.DataFrame, outcome: str, cluster: str, *,
                         ci_level: float = 0.95) -> tuple[float, float, float]:
    """Share of units with ``outcome`` (screws loose) and its CI respecting the clusters (patients).

    A GEE with an intercept only, independence working correlation (so the estimate is the
    plain share) and robust standard errors; the CI is the logit-scale Wald interval.

    Returns
    -------
    rate, ci_low, ci_high : float
        Proportions (0-1).

    Raises
    ------
    FitError
        When every unit or none has the outcome, or the model cannot be fitted.
    """
    import statsmodels.api as sm

    rows = frame[[outcome, cluster]].dropna()
    events = rows[outcome].astype(float).sum()
    if events in (0, len(rows)):
        raise FitError(f"{outcome}: {'no' if events == 0 else 'every'} unit has the outcome; no logit CI")
    design = pd.DataFrame({"const": np.ones(len(rows))}, index=rows.index)
    fit = _fit_gee(rows, outcome, design, cluster, sm.cov_struct.Independence(), f"{outcome} (rate)")
    low, high = fit.conf_int(alpha=1 - ci_level).loc["const"]
    return float(events / len(rows)), float(_expit(low)), float(_expit(high))


def _expit(x: float) -> float:
    return 1.0 / (1.0 + np.exp(-x))


def clustered_odds_ratio(frame: pd.DataFrame, outcome: str, predictor: str, cluster: str, *,
                         ci_level: float = 0.95) -> OddsRatio:
    """Odds ratio of a per-unit outcome (a screw's loosening) for a predictor, the units
    clustered (screws within a patient): a GEE, binomial family, logit link, exchangeable
    working correlation, robust (sandwich) standard errors.

    Raises
    ------
    FitError
        When the GEE cannot be fitted.
    """
    import statsmodels.api as sm

    rows = frame[[outcome, predictor, cluster]].dropna()
    fit = _fit_gee(rows, outcome, _design(rows, [predictor]), cluster, sm.cov_struct.Exchangeable(),
                   f"{outcome} on {predictor}")
    return _ratios(fit, [predictor], "GEE", len(rows), ci_level)[0]
