"""The trial report: endpoints by arm, ODI and VAS, vBMD against loosening (Tables 1-3, ROC
figure) and QCT categories, as one self-contained HTML page (figures inlined as base64 PNG).

Only pseudonymous aggregates are shown: no row names a patient. A section whose groups hold
fewer than ``stats.min_per_group`` cases says so instead of showing estimates.
"""

from __future__ import annotations

import base64
import datetime as dt
import html
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from ..config import StatsSettings
from .cohort import FOLLOW_UPS
from .data import COVARIATES, QCT_CATEGORIES, TrialData
from .endpoints import patient_loosening, rates_by_arm, scores_by_arm, screw_rates_by_arm
from .figures import over_time_figure, roc_figure
from .groups import compare_groups, group_table
from .regression import FitError, logistic_odds_ratios, odds_ratio_table
from .roc import Direction, compare_aucs, roc_analysis

__all__ = ["TrialReport", "trial_report"]

REGIONS = {"vbmd_a": "A (vertebral body)", "vbmd_b": "B (pedicle)", "vbmd_c": "C (screw trajectory)"}
ARMS = {"cement_arm": "cement vs none", "cage_arm": "cage: 3D-printed titanium vs PEEK"}


@dataclass
class TrialReport:
    """The report being built: HTML parts in order, and the figures (PNG bytes) by name."""

    settings: StatsSettings
    parts: list[str] = field(default_factory=list)
    figures: dict[str, bytes] = field(default_factory=dict)

    def heading(self, text: str, level: int = 2) -> None:
        self.parts.append(f"<h{level}>{html.escape(text)}</h{level}>")

    def text(self, text: str) -> None:
        self.parts.append(f"<p>{html.escape(text)}</p>")

    def too_small(self, what: str) -> None:
        self.parts.append(f'<p class="small-n">n too small: {html.escape(what)}</p>')

    def table(self, frame: pd.DataFrame, caption: str = "") -> None:
        cap = f"<caption>{html.escape(caption)}</caption>" if caption else ""
        body = frame.to_html(index=False, na_rep="", float_format=_number, border=0, escape=True)
        self.parts.append(body.replace("<thead>", cap + "<thead>", 1))

    def figure(self, name: str, png: bytes, caption: str) -> None:
        self.figures[name] = png
        data = base64.b64encode(png).decode("ascii")
        self.parts.append(f'<figure><img alt="{html.escape(caption)}" src="data:image/png;base64,{data}">'
                          f"<figcaption>{html.escape(caption)}</figcaption></figure>")

    def html(self, title: str) -> str:
        return (f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
                f"<style>{_CSS}</style></head><body><h1>{html.escape(title)}</h1>" + "\n".join(self.parts)
                + "</body></html>")


_CSS = ("body{font-family:sans-serif;max-width:70em;margin:2em auto;color:#222}table{border-collapse:collapse;"
        "margin:1em 0;font-size:90%}td,th{padding:3px 8px;border-bottom:1px solid #ddd;text-align:right}"
        "caption{text-align:left;font-weight:bold;padding:4px 0}.small-n{color:#a40}figure{display:inline-block;"
        "margin:1em}")


def _number(x: float) -> str:
    return f"{x:.3g}" if abs(x) < 0.001 and x != 0 else f"{x:.3f}" if abs(x) < 10 else f"{x:.1f}"


def _arms(patients: pd.DataFrame) -> pd.DataFrame:
    cement = patients.cement.map({1.0: "cement", 0.0: "no cement"})
    cage = patients.cage_type.map(lambda c: c if isinstance(c, str) else None)
    return pd.DataFrame({"study_id": patients.study_id, "cement_arm": cement, "cage_arm": cage})


def _endpoints(rep: TrialReport, data: TrialData, arms: pd.DataFrame) -> None:
    s = rep.settings
    rep.heading("Endpoints by arm")
    follow = data.visits[data.visits.timepoint.isin(FOLLOW_UPS)]
    per_patient = patient_loosening(data.screws, follow).merge(
        follow[["study_id", "timepoint", "fused"]], on=["study_id", "timepoint"], how="outer").merge(arms, how="left")
    screws = data.screws.merge(arms, how="left")
    rep.text("Per patient: rates with Wilson %.0f %% CIs; arms compared by chi-square, or Fisher's exact test "
             "when an expected count is below %g. Per screw: a patient's screws are clustered, so the arms are "
             "compared by a GEE (binomial, logit link, exchangeable working correlation within the patient, "
             "robust standard errors) and each rate's CI comes from an intercept-only GEE with robust standard "
             "errors (logit scale)." % (100 * s.ci_level, s.min_expected_count))
    panels: dict[str, dict] = {"loosened": {}, "fused": {}}
    for arm, label in ARMS.items():
        rep.heading(label, 3)
        if per_patient[arm].notna().sum() == 0:
            rep.too_small(f"no patient has a {label.split(':')[0]} arm recorded (import-clinical)")
            continue
        for outcome, what in (("loosened", "loosening per patient"), ("fused", "fusion per patient")):
            rates = rates_by_arm(per_patient, arm, outcome, s)
            _table_or_small(rep, rates, f"{what} ({label})")
            if len(rates):
                panels[outcome][f"{what}, {label}"] = rates
        _table_or_small(rep, screw_rates_by_arm(screws, arm, s), f"loosening per screw, GEE ({label})")
    for outcome, what in (("loosened", "Loosening"), ("fused", "Fusion (Bridwell I-II)")):
        if panels[outcome]:
            rep.figure(f"{outcome}_by_arm", over_time_figure(panels[outcome], "rate %", "CI low %", "CI high %",
                                                             FOLLOW_UPS),
                       f"{what} per patient (% with CI) by arm over the follow-up")


def _table_or_small(rep: TrialReport, frame: pd.DataFrame, caption: str) -> None:
    if frame.empty:
        rep.too_small(f"{caption}: no data")
    else:
        rep.table(frame, caption)


def _scores(rep: TrialReport, data: TrialData, arms: pd.DataFrame) -> None:
    s = rep.settings
    rep.heading("ODI and VAS over time")
    rep.text("ODI (%%) recomputed from the ten section scores: sum / (5 x answered sections) x 100, left empty "
             "when more than %d sections are unanswered. VAS 0-10. Mean with t-based %.0f %% CI; arms compared "
             "per visit by t-test or Mann-Whitney U (Shapiro-Wilk)." % (s.odi_max_missing_sections, 100 * s.ci_level))
    visits = data.visits.merge(arms, how="left")
    order = ("baseline", *FOLLOW_UPS)
    for arm, label in ARMS.items():
        panels = {}
        for score, name in (("odi", "ODI %"), ("vas_back", "VAS back"), ("vas_leg", "VAS leg")):
            frame = scores_by_arm(visits, arm, score, s)
            if frame.empty:
                rep.too_small(f"{name} by {label}: no visits with both recorded")
                continue
            rep.table(frame, f"{name} by {label}")
            panels[name] = frame
        if panels:
            rep.figure(f"scores_{arm}", over_time_figure(panels, "mean", "CI low", "CI high", order),
                       f"ODI and VAS by arm ({label}): mean with CI")


def _loosening_frame(patients: pd.DataFrame, arms: pd.DataFrame) -> pd.DataFrame:
    frame = patients.merge(arms, how="left").dropna(subset=["loosened"])
    numeric = {c: pd.to_numeric(frame[c], errors="coerce") for c in COVARIATES if c != "sex"}
    return frame.assign(**numeric, group=frame.loosened.map({1.0: "loosened", 0.0: "stable"}))


def _recorded(frame: pd.DataFrame, columns) -> list[str]:
    """The columns of ``frame`` with at least one value."""
    return [c for c in columns if frame[c].notna().any()]


def _vbmd_tables(rep: TrialReport, data: TrialData, arms: pd.DataFrame) -> None:
    s = rep.settings
    rep.heading("vBMD by region against loosening")
    frame = _loosening_frame(data.patients, arms).dropna(subset=list(REGIONS))
    n_pos, n_neg = int(frame.loosened.sum()), int((1 - frame.loosened).sum())
    rep.text(f"Baseline vBMD (mg/cm3) at {', '.join(s.vbmd_levels)} (mean of the sides) against loosening at "
             f"{s.primary_timepoint} (any screw loose on that CT, else the reader's call): {n_pos} loosened, "
             f"{n_neg} stable patients with all three regions measured.")
    if min(n_pos, n_neg) < s.min_per_group:
        rep.too_small(f"{n_pos} loosened and {n_neg} stable patients with vBMD; Tables 1-3 need at least "
                      f"{s.min_per_group} of each (stats.min_per_group)")
        return
    absent = [c for c in COVARIATES if c not in _recorded(frame, COVARIATES)]
    if absent:
        rep.text(f"Not recorded (import-clinical columns), so left out: {', '.join(absent)}.")
    variables = _recorded(frame, [*REGIONS, "qct_vbmd_a", *COVARIATES, "cement_arm", "cage_arm"])
    labels, rows = compare_groups(frame, "group", variables, normality_alpha=s.normality_alpha,
                                  min_expected_count=s.min_expected_count)
    rep.table(group_table(labels, rows), "Table 1. Patients with and without loosening (t-test or Mann-Whitney U "
              "by Shapiro-Wilk; chi-square or Fisher)")
    _odds_ratios(rep, frame)
    _roc(rep, frame)


def _odds_ratios(rep: TrialReport, frame: pd.DataFrame) -> None:
    per10 = {f"{REGIONS[r]} per 10 mg/cm3": frame[r] / 10 for r in REGIONS}
    coded = {"age per 10 years": frame.age_years / 10, "female": (frame.sex == "female").astype(float),
             "BMI (kg/m2)": frame.bmi_kg_m2, "DXA lumbar T-score": frame.tscore_lumbar,
             "DXA hip T-score": frame.tscore_hip, "cement": (frame.cement_arm == "cement").astype(float)}
    coded["female"] = coded["female"].where(frame.sex.notna())
    coded["cement"] = coded["cement"].where(frame.cement_arm.notna())
    table = frame.assign(**per10, **coded)
    univariate = _recorded(table, [*per10, *coded])
    adjusted = _recorded(table, [list(per10)[2], "DXA hip T-score", "cement"])
    try:
        ratios = logistic_odds_ratios(table, "loosened", univariate, multivariable=False,
                                      ci_level=rep.settings.ci_level)
        ratios += [r for r in logistic_odds_ratios(table, "loosened", adjusted, ci_level=rep.settings.ci_level)
                   if r.model == "multivariable"]
    except FitError as exc:
        rep.too_small(f"Table 2: {exc}")
        return
    rep.table(odds_ratio_table(ratios), "Table 2. Logistic regression of loosening: odds ratios with Wald CIs "
              f"(univariate; multivariable: {', '.join(adjusted)})")


def _roc_predictors(frame: pd.DataFrame, min_per_group: int) -> dict[str, str]:
    """Label -> column of the predictors with enough loosened and stable patients measured."""
    candidates = {**{REGIONS[r]: r for r in REGIONS}, "DXA hip T-score": "tscore_hip",
                  "DXA lumbar T-score": "tscore_lumbar"}
    out = {}
    for label, col in candidates.items():
        known = frame.loosened[frame[col].notna()]
        if min(known.sum(), (1 - known).sum()) >= min_per_group:
            out[label] = col
    return out


def _roc(rep: TrialReport, frame: pd.DataFrame) -> None:
    s = rep.settings
    predictors = _roc_predictors(frame, s.min_per_group)
    curves = {}
    for label, col in predictors.items():
        rows = frame.dropna(subset=[col])
        curves[label] = roc_analysis(rows.loosened, rows[col], direction=Direction.lower, ci_level=s.ci_level)
    table = pd.DataFrame([{"predictor": k, **r.summary()} for k, r in curves.items()])
    rep.table(table, f"Table 3. ROC for loosening: AUC with DeLong {100 * s.ci_level:.0f} % CI; Youden cut-off "
              "(loosening predicted at or below it; mg/cm3, T-score in SD) with its sensitivity and specificity")
    tests = []
    for label, col in predictors.items():
        if col == "vbmd_c":
            continue
        rows = frame.dropna(subset=[col])
        c = compare_aucs(rows.loosened, rows.vbmd_c, rows[col], direction=Direction.lower, ci_level=s.ci_level)
        tests.append({"comparison": f"C vs {label}", "n": len(rows), "AUC C": c.auc_1, "AUC other": c.auc_2,
                      "difference": c.difference, "CI low": c.ci_low, "CI high": c.ci_high, "z": c.z,
                      "p": c.p_value})
    rep.table(pd.DataFrame(tests), "DeLong test of correlated AUCs (same patients)")
    rep.figure("roc", roc_figure(curves), "ROC curves for loosening: baseline vBMD by region and DXA T-scores")


def _qct(rep: TrialReport, data: TrialData) -> None:
    s = rep.settings
    rep.heading("QCT categories")
    rep.text(f"Mean region-A vBMD of the vertebrae measured at baseline: > {s.qct_normal_min_mg_cm3:g} normal, "
             f"{s.qct_osteoporosis_below_mg_cm3:g}-{s.qct_normal_min_mg_cm3:g} low bone mass, "
             f"< {s.qct_osteoporosis_below_mg_cm3:g} mg/cm3 osteoporosis.")
    p = data.patients.dropna(subset=["qct_category"])
    if p.empty:
        rep.too_small("no patient has a baseline region-A vBMD")
        return
    rows = []
    for cat in QCT_CATEGORIES:
        g = p[p.qct_category == cat]
        known = g.loosened.dropna()
        rows.append({"category": cat, "patients": len(g), "with loosening known": len(known),
                     "loosened": int(known.sum()),
                     "loosened %": 100 * known.mean() if len(known) else np.nan})
    rep.table(pd.DataFrame(rows), f"Patients per QCT category and their loosening at {s.primary_timepoint}")


def trial_report(data: TrialData, settings: StatsSettings | None = None, *, source: str = "") -> TrialReport:
    """Build the report from the database's content (:func:`~bmdpipe.stats.data.load_trial`).

    Parameters
    ----------
    source : str
        Where the data came from (the database URL without its password), for the header.
    """
    rep = TrialReport(settings or StatsSettings())
    arms = _arms(data.patients)
    rep.text(f"Source: {source}. Generated {dt.datetime.now(dt.timezone.utc):%Y-%m-%d %H:%M} UTC by bmdpipe "
             f"stats report. {len(data.patients)} studies, {len(data.visits)} clinical visits, "
             f"{len(data.screws)} screw measurements.")
    _endpoints(rep, data, arms)
    _scores(rep, data, arms)
    _vbmd_tables(rep, data, arms)
    _qct(rep, data)
    return rep
