"""A synthetic trial cohort with known effects: for tests of the statistics and the example report.

Patients fall into two groups fixed in size (loosened at the primary follow-up or not), as
in a paper's Table 1; each group's pre-operative vBMD of regions A, B and C (mg/cm3, one
vertebra) and DXA hip T-score are drawn from normal distributions whose means and SDs are
chosen, so the true separation (the binormal AUC ``Phi(d / sqrt(2))``, ``d`` the mean
difference in SDs) is known. Arms, screws, fusion, ODI and VAS follow simple chosen rates.

The defaults are shaped like Xu et al. (Sci Rep 2025): 63 loosened and 123 stable patients;
C 107 +- 32 vs 135 +- 32 mg/cm3 (AUC 0.736), A 91 vs 109 and B 132 vs 162 (medians; the SDs
27 and 38 give the paper's AUCs 0.682 and 0.714), hip T-score AUC 0.596.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from ..store.db import TIMEPOINTS

__all__ = ["CohortSpec", "Cohort", "synthetic_cohort", "binormal_auc", "FOLLOW_UPS", "SCREW_SITES"]

#: the follow-up visits, in order (the trial's timepoints after baseline)
FOLLOW_UPS = TIMEPOINTS[1:]
#: pedicle screws of a one-level L4-L5 fusion: (vertebra, side)
SCREW_SITES = (("L4", "left"), ("L4", "right"), ("L5", "left"), ("L5", "right"))


def binormal_auc(mean_difference: float, sd: float) -> float:
    """AUC of a predictor normal with the same ``sd`` in both groups, means ``mean_difference`` apart."""
    from scipy.stats import norm

    return float(norm.cdf(abs(mean_difference) / (sd * np.sqrt(2.0))))


@dataclass(frozen=True)
class CohortSpec:
    """What the synthetic cohort looks like.

    Attributes
    ----------
    n_loose, n_stable : int
        Patients with and without screw loosening at the primary follow-up (month_12).
    vbmd_loose_mg_cm3, vbmd_stable_mg_cm3, vbmd_sd_mg_cm3 : dict
        Region (A, B, C) -> group mean and common SD of vBMD, mg/cm3.
    region_correlation : float
        Correlation of a patient's three regions around the group means.
    tscore_hip_loose, tscore_hip_stable, tscore_lumbar_loose, tscore_lumbar_stable, tscore_sd : float
        DXA T-scores (SD units): group means and their SD.
    cement_odds_ratio : float
        True odds ratio of loosening with cement vs without (cement assigned 1:1 among stable
        patients, at odds ``cement_odds_ratio`` among loosened ones).
    fusion_rate_peek, fusion_rate_titanium : tuple of float
        Probability a patient is fused at each of :data:`FOLLOW_UPS`, by cage.
    loose_by_visit : tuple of float
        Share of the loosened patients already loose at each follow-up (monotone; 1 at month_12).
    other_screw_loose : float
        Probability each further screw of a loosened patient is loose (clustering).
    odi_missing_section : float
        Probability an ODI section is left unanswered.
    """

    n_loose: int = 63
    n_stable: int = 123
    vbmd_loose_mg_cm3: dict = field(default_factory=lambda: {"A": 91.0, "B": 132.0, "C": 107.0})
    vbmd_stable_mg_cm3: dict = field(default_factory=lambda: {"A": 109.0, "B": 162.0, "C": 135.0})
    vbmd_sd_mg_cm3: dict = field(default_factory=lambda: {"A": 27.0, "B": 38.0, "C": 32.0})
    region_correlation: float = 0.8
    tscore_hip_loose: float = -2.14
    tscore_hip_stable: float = -1.80
    tscore_lumbar_loose: float = -1.90
    tscore_lumbar_stable: float = -1.60
    tscore_sd: float = 1.0
    cement_odds_ratio: float = 0.5
    fusion_rate_peek: tuple = (0.20, 0.50, 0.75, 0.85)
    fusion_rate_titanium: tuple = (0.30, 0.65, 0.88, 0.93)
    loose_by_visit: tuple = (0.3, 0.6, 1.0, 1.0)
    other_screw_loose: float = 0.4
    odi_missing_section: float = 0.03


@dataclass(frozen=True)
class Cohort:
    """A synthetic cohort.

    Attributes
    ----------
    patients : DataFrame
        One row per patient: study_id, cement (bool), cage_type, vbmd_a, vbmd_b, vbmd_c
        (mg/cm3), tscore_hip, tscore_lumbar, age_years, sex, bmi_kg_m2, loosened (bool, at
        month_12).
    visits : DataFrame
        One row per patient x timepoint (baseline and :data:`FOLLOW_UPS`): the clinical CSV's
        columns (arm, cement, cage_type, odi_1..odi_10, vas_back, vas_leg, fusion_grade,
        loosening_reader; the baseline covariates on the baseline row).
    screws : DataFrame
        One row per screw x follow-up: study_id, timepoint, vertebra, side, loose (bool).
    """

    patients: pd.DataFrame
    visits: pd.DataFrame
    screws: pd.DataFrame


def _regions(rng, spec: CohortSpec, loose: np.ndarray) -> dict[str, np.ndarray]:
    names = ("A", "B", "C")
    corr = np.full((3, 3), spec.region_correlation) + (1 - spec.region_correlation) * np.eye(3)
    z = rng.multivariate_normal(np.zeros(3), corr, size=loose.size)
    out = {}
    for i, r in enumerate(names):
        mean = np.where(loose, spec.vbmd_loose_mg_cm3[r], spec.vbmd_stable_mg_cm3[r])
        out[r] = mean + spec.vbmd_sd_mg_cm3[r] * z[:, i]
    return out


def _patients(rng, spec: CohortSpec) -> pd.DataFrame:
    loose = np.r_[np.ones(spec.n_loose, bool), np.zeros(spec.n_stable, bool)]
    rng.shuffle(loose)
    n = loose.size
    regions = _regions(rng, spec, loose)
    p_cement_loose = spec.cement_odds_ratio / (1 + spec.cement_odds_ratio)
    cement = rng.random(n) < np.where(loose, p_cement_loose, 0.5)
    def tscore(loose_mean, stable_mean):
        return np.round(np.where(loose, loose_mean, stable_mean) + spec.tscore_sd * rng.standard_normal(n), 1)

    return pd.DataFrame({
        "study_id": [f"SYN{i + 1:03d}" for i in range(n)],
        "cement": cement,
        "cage_type": np.where(rng.random(n) < 0.5, "titanium_3d", "peek"),
        "vbmd_a": regions["A"], "vbmd_b": regions["B"], "vbmd_c": regions["C"],
        "tscore_hip": tscore(spec.tscore_hip_loose, spec.tscore_hip_stable),
        "tscore_lumbar": tscore(spec.tscore_lumbar_loose, spec.tscore_lumbar_stable),
        "age_years": np.round(rng.normal(66.0, 8.0, n).clip(40, 90)),
        "sex": np.where(rng.random(n) < 0.7, "female", "male"),
        "bmi_kg_m2": np.round(rng.normal(25.5, 3.5, n).clip(16, 45), 1),
        "loosened": loose,
    })


def _screws(rng, spec: CohortSpec, patients: pd.DataFrame) -> pd.DataFrame:
    rows = []
    for p in patients.itertuples():
        first = rng.integers(len(SCREW_SITES))
        others = rng.random(len(SCREW_SITES)) < spec.other_screw_loose
        onset = rng.random()  # loose from the first visit whose share of loosened patients exceeds it
        for visit, share in zip(FOLLOW_UPS, spec.loose_by_visit):
            loose_now = p.loosened and onset < share
            for k, (vertebra, side) in enumerate(SCREW_SITES):
                rows.append((p.study_id, visit, vertebra, side, bool(loose_now and (k == first or others[k]))))
    return pd.DataFrame(rows, columns=["study_id", "timepoint", "vertebra", "side", "loose"])


def _odi_sections(rng, spec: CohortSpec, index_pct: float) -> list:
    scores = np.clip(np.rint(rng.normal(index_pct / 20.0, 0.8, 10)), 0, 5).astype(int)
    return [None if rng.random() < spec.odi_missing_section else int(s) for s in scores]


def _visits(rng, spec: CohortSpec, patients: pd.DataFrame, screws: pd.DataFrame) -> pd.DataFrame:
    loose_at = screws.groupby(["study_id", "timepoint"]).loose.any()
    odi_mean = {"baseline": 46.0, "month_3": 34.0, "month_6": 28.0, "month_12": 24.0, "month_24": 22.0}
    vas_mean = {"baseline": 6.5, "month_3": 4.0, "month_6": 3.3, "month_12": 3.0, "month_24": 2.8}
    rows = []
    for p in patients.itertuples():
        fused_u = rng.random()
        rates = spec.fusion_rate_titanium if p.cage_type == "titanium_3d" else spec.fusion_rate_peek
        for t in ("baseline", *FOLLOW_UPS):
            loose = bool(loose_at.get((p.study_id, t), False))
            worse = 6.0 if loose else 0.0
            row = {"study_id": p.study_id, "timepoint": t, "arm": "cement" if p.cement else "no_cement",
                   "cement": "yes" if p.cement else "no", "cage_type": p.cage_type}
            if t == "baseline":
                row.update(age_years=p.age_years, sex=p.sex, bmi_kg_m2=p.bmi_kg_m2, tscore_lumbar=p.tscore_lumbar,
                           tscore_hip=p.tscore_hip)
            sections = _odi_sections(rng, spec, odi_mean[t] + worse + rng.normal(0, 8))
            row.update({f"odi_{i + 1}": s for i, s in enumerate(sections)})
            row["vas_back"] = float(np.clip(round(vas_mean[t] + worse / 6 + rng.normal(0, 1.5), 1), 0, 10))
            row["vas_leg"] = float(np.clip(round(vas_mean[t] - 0.5 + rng.normal(0, 1.5), 1), 0, 10))
            if t != "baseline":
                fused = fused_u < rates[FOLLOW_UPS.index(t)]
                row["fusion_grade"] = int(rng.integers(1, 3) if fused else rng.integers(3, 5))
                row["loosening_reader"] = "yes" if loose else "no"
            rows.append(row)
    return pd.DataFrame(rows)


def synthetic_cohort(spec: CohortSpec | None = None, *, seed: int = 0) -> Cohort:
    """Draw a synthetic cohort (reproducible for a given ``seed``).

    Examples
    --------
    >>> cohort = synthetic_cohort(seed=1)
    >>> int(cohort.patients.loosened.sum()), len(cohort.patients)
    (63, 186)
    """
    spec = spec or CohortSpec()
    rng = np.random.default_rng(seed)
    patients = _patients(rng, spec)
    screws = _screws(rng, spec, patients)
    visits = _visits(rng, spec, patients, screws)
    return Cohort(patients=patients, visits=visits, screws=screws)
