"""The trial's endpoints by arm: loosening (per patient and per screw) and fusion rates at each
follow-up, ODI and VAS over time.

Per-patient rates carry Wilson score intervals and two arms are compared by chi-square or
Fisher's exact test. Screws are clustered within patients: their rate's CI and the arms'
odds ratio come from GEEs with robust standard errors
(:func:`~bmdpipe.stats.regression.clustered_proportion`,
:func:`~bmdpipe.stats.regression.clustered_odds_ratio`).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy import stats

from ..config import StatsSettings
from ..store.db import TIMEPOINTS
from .groups import compare_groups, two_by_two_test
from .regression import FitError, clustered_odds_ratio, clustered_proportion

__all__ = ["rates_by_arm", "screw_rates_by_arm", "scores_by_arm", "patient_loosening"]


def _by_visit(frame: pd.DataFrame) -> pd.DataFrame:
    """``frame`` in visit order (baseline, month_3 ... month_24), arms sorted within a visit."""
    if frame.empty:
        return frame
    order = frame.timepoint.map({t: i for i, t in enumerate(TIMEPOINTS)})
    return frame.assign(_order=order).sort_values(["_order", "arm"], kind="stable").drop(columns="_order")


def _wilson(events: int, n: int, ci_level: float) -> tuple[float, float]:
    from statsmodels.stats.proportion import proportion_confint

    low, high = proportion_confint(events, n, alpha=1 - ci_level, method="wilson")
    return float(low), float(high)


def _rate_cells(events: int, n: int, settings: StatsSettings) -> dict:
    if n == 0:
        return {"n": 0, "events": 0, "rate %": np.nan, "CI low %": np.nan, "CI high %": np.nan}
    low, high = _wilson(events, n, settings.ci_level)
    return {"n": n, "events": events, "rate %": 100 * events / n, "CI low %": 100 * low, "CI high %": 100 * high}


def _arm_test(groups: list[pd.Series], settings: StatsSettings) -> tuple[str, float]:
    if len(groups) != 2 or min(len(g) for g in groups) < settings.min_per_group:
        return f"n too small (< {settings.min_per_group} per arm)", np.nan
    counts = np.array([[int(g.sum()), int(len(g) - g.sum())] for g in groups])
    if (counts.sum(axis=0) == 0).any():
        return "no test (one outcome only)", np.nan
    return two_by_two_test(counts, settings.min_expected_count)


def rates_by_arm(frame: pd.DataFrame, arm: str, outcome: str, settings: StatsSettings) -> pd.DataFrame:
    """Per arm and timepoint: n, events, rate with CI (%), and the test between two arms.

    Parameters
    ----------
    frame : DataFrame
        One row per patient x timepoint: ``timepoint``, ``arm`` and ``outcome`` (0/1, NaN
        = not known; left out).
    """
    rows = []
    for t, at in frame.dropna(subset=[arm, outcome]).groupby("timepoint", sort=False):
        groups = {a: g[outcome].astype(float) for a, g in at.groupby(arm)}
        test, p = _arm_test(list(groups.values()), settings)
        for a, g in groups.items():
            rows.append({"timepoint": t, "arm": a, **_rate_cells(int(g.sum()), len(g), settings), "test": test,
                         "p": p})
    return _by_visit(pd.DataFrame(rows))


def _screw_rate_cells(g: pd.DataFrame, settings: StatsSettings) -> dict:
    """n, events and the rate of loose screws with a CI clustered by patient (GEE, robust SE); too few
    patients or events: the rate alone, the CI empty and a note saying why."""
    n, events = len(g), int(g.loose.sum())
    cells = {"patients": g.study_id.nunique(), "n": n, "events": events, "rate %": 100 * events / n,
             "CI low %": np.nan, "CI high %": np.nan, "CI note": ""}
    if cells["patients"] < settings.min_per_group:
        cells["CI note"] = f"n too small (< {settings.min_per_group} patients)"
        return cells
    try:
        _, low, high = clustered_proportion(g, "loose", "study_id", ci_level=settings.ci_level)
        cells.update({"CI low %": 100 * low, "CI high %": 100 * high})
    except FitError as exc:
        cells["CI note"] = str(exc)
    return cells


def _arm_gee(at: pd.DataFrame, arm: str, settings: StatsSettings) -> dict:
    """The GEE odds ratio of a loose screw between two arms (the later-sorted arm vs the first)."""
    names = sorted(at[arm].unique())
    gee = {"GEE OR": np.nan, "OR CI low": np.nan, "OR CI high": np.nan, "p": np.nan,
           "OR note": f"{names[-1]} vs {names[0]}" if len(names) == 2 else ""}
    patients = at.groupby(arm).study_id.nunique()
    if len(patients) != 2 or patients.min() < settings.min_per_group or at.loose.sum() in (0, len(at)):
        gee["OR note"] = f"n too small (< {settings.min_per_group} patients per arm) or one outcome only"
        return gee
    try:
        r = clustered_odds_ratio(at.assign(arm_code=(at[arm] == names[-1]).astype(float)), "loose", "arm_code",
                                 "study_id", ci_level=settings.ci_level)
        gee.update({"GEE OR": r.odds_ratio, "OR CI low": r.ci_low, "OR CI high": r.ci_high, "p": r.p_value})
    except FitError as exc:
        gee["OR note"] = str(exc)
    return gee


def screw_rates_by_arm(screws: pd.DataFrame, arm: str, settings: StatsSettings) -> pd.DataFrame:
    """Per arm and timepoint: screws, loose screws, their rate with a patient-clustered CI, and
    the GEE odds ratio of loosening between two arms with its robust CI and p."""
    rows = []
    for t, at in screws.dropna(subset=[arm, "loose"]).groupby("timepoint", sort=False):
        at = at.assign(loose=at.loose.astype(float))
        gee = _arm_gee(at, arm, settings)
        for a, g in at.groupby(arm):
            rows.append({"timepoint": t, "arm": a, **_screw_rate_cells(g, settings), **gee})
    return _by_visit(pd.DataFrame(rows))


def scores_by_arm(visits: pd.DataFrame, arm: str, score: str, settings: StatsSettings) -> pd.DataFrame:
    """Per arm and timepoint: n, mean, SD and the mean's t-based CI of ``score``; the arms
    compared per timepoint (t-test or Mann-Whitney U by Shapiro-Wilk)."""
    rows = []
    for t, at in visits.dropna(subset=[arm, score]).groupby("timepoint", sort=False):
        at = at.assign(**{score: at[score].astype(float)})
        test, p = "", np.nan
        if at[arm].nunique() == 2 and at.groupby(arm).size().min() >= settings.min_per_group:
            _, (row,) = compare_groups(at, arm, [score], normality_alpha=settings.normality_alpha)
            test, p = row.test, row.p_value
        for a, g in at.groupby(arm):
            x = g[score].to_numpy(float)
            half = stats.t.ppf(0.5 + settings.ci_level / 2, x.size - 1) * x.std(ddof=1) / np.sqrt(x.size) \
                if x.size > 1 else np.nan
            rows.append({"timepoint": t, "arm": a, "n": x.size, "mean": x.mean(),
                         "SD": x.std(ddof=1) if x.size > 1 else np.nan, "CI low": x.mean() - half,
                         "CI high": x.mean() + half, "test": test, "p": p})
    return _by_visit(pd.DataFrame(rows))


def patient_loosening(screws: pd.DataFrame, visits: pd.DataFrame) -> pd.DataFrame:
    """Per study x follow-up: ``loosened`` (1/0) = any screw loose on that visit's CT, else the
    reader's call recorded at the visit (NaN when neither is known)."""
    by_screws = screws.dropna(subset=["loose"]).groupby(["study_id", "timepoint"]).loose.any().astype(float)
    reader = visits.dropna(subset=["loosening_reader"]).set_index(["study_id", "timepoint"]).loosening_reader
    both = pd.concat([by_screws.rename("screws"), reader.astype(float).rename("reader")], axis=1)
    both["loosened"] = both.screws.where(both.screws.notna(), both.reader)
    return both[["loosened"]].reset_index()
