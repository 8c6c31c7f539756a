"""The statistics' inputs: a CSV table or the trial database, as pandas frames; and a
synthetic cohort written into a database.

From the database (:func:`load_trial`) come three frames:

- ``patients``: one row per study: ``cement``, ``cage_type``, ``arm``, ``age_years``, ``sex``,
  ``bmi_kg_m2``, ``tscore_lumbar``, ``tscore_hip`` (the first value given at any visit), ``vbmd_a``, ``vbmd_b``, ``vbmd_c`` (baseline vBMD of each region, mean over the
  vertebrae of ``stats.vbmd_levels`` and both sides, mg/cm3), ``qct_vbmd_a`` (mean region-A
  vBMD over every vertebra measured at baseline, mg/cm3), ``qct_category``, and
  ``loosened`` (at ``stats.primary_timepoint``: any screw of the study's CT ``loosened``, or the
  reader's call when that visit has no screws measured);
- ``screws``: one row per screw and follow-up CT: study_id, timepoint, vertebra, side, loose;
- ``visits``: the clinical visits (``import-clinical``) with ``odi`` recomputed from the
  section scores (empty when more than ``stats.odi_max_missing_sections`` are missing),
  ``fused`` (Bridwell grade <= ``stats.fused_max_bridwell_grade``).
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session

from ..config import StatsSettings
from ..errors import StatsError

__all__ = ["TrialData", "load_trial", "read_table", "require_column", "numeric_column", "binary_column",
           "analysis_rows", "write_cohort", "qct_category", "QCT_CATEGORIES", "ARM_COLUMNS", "COVARIATES"]

#: QCT categories of the mean region-A vBMD, best first
QCT_CATEGORIES = ("normal", "low bone mass", "osteoporosis")

#: per-study columns of the clinical visits (the first value given at any visit)
ARM_COLUMNS = ("arm", "cement", "cage_type")
COVARIATES = ("age_years", "sex", "bmi_kg_m2", "tscore_lumbar", "tscore_hip")

_TRUE = {"1", "1.0", "true", "yes", "y", "t"}
_FALSE = {"0", "0.0", "false", "no", "n", "f"}


@dataclass(frozen=True)
class TrialData:
    """The database's content for the statistics (see the module docstring)."""

    patients: pd.DataFrame
    screws: pd.DataFrame
    visits: pd.DataFrame


def read_table(path: str | Path) -> pd.DataFrame:
    """A CSV file as a frame; a missing or unreadable file raises :class:`StatsError` naming it."""
    try:
        return pd.read_csv(path)
    except FileNotFoundError:
        raise StatsError(f"data file {path} does not exist") from None
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise StatsError(f"data file {path} is not a readable CSV table: {exc}") from None


def require_column(frame: pd.DataFrame, name: str, source: str) -> pd.Series:
    """Column ``name`` of ``frame``; :class:`StatsError` naming ``source`` and its columns when absent."""
    if name not in frame.columns:
        raise StatsError(f"{source} has no column {name!r}; its columns: {', '.join(map(str, frame.columns))}")
    return frame[name]


def numeric_column(frame: pd.DataFrame, name: str, source: str) -> pd.Series:
    """Column ``name`` as floats (empty cells NaN); text that is not a number raises
    :class:`StatsError` naming ``source``, the column and the first bad value."""
    col = require_column(frame, name, source)
    values = pd.to_numeric(col, errors="coerce")
    bad = col[values.isna() & col.notna()]
    if len(bad):
        raise StatsError(f"{source}, column {name!r}: {bad.iloc[0]!r} (row {bad.index[0] + 2}) is not a number")
    return values.astype(float)


def binary_column(frame: pd.DataFrame, name: str, source: str) -> pd.Series:
    """Column ``name`` as a 0/1 outcome (true/false, yes/no, 1/0; empty cells NaN).

    Raises
    ------
    StatsError
        For another value, naming ``source``, the column and the value.
    """
    col = require_column(frame, name, source)
    text = col.dropna().astype(str).str.strip().str.lower()
    bad = text[~text.isin(_TRUE | _FALSE)]
    if len(bad):
        raise StatsError(f"{source}, column {name!r}: {col[bad.index[0]]!r} (row {bad.index[0] + 2}) is not a binary "
                         "outcome (true/false, yes/no, 1/0)")
    return text.isin(_TRUE).astype(float).reindex(col.index)


def qct_category(vbmd_mg_cm3: np.ndarray, settings: StatsSettings) -> np.ndarray:
    """QCT category of each mean region-A vBMD (mg/cm3): normal above ``qct_normal_min_mg_cm3``,
    osteoporosis below ``qct_osteoporosis_below_mg_cm3``, low bone mass between; empty for NaN."""
    v = np.asarray(vbmd_mg_cm3, float)
    cat = np.where(v > settings.qct_normal_min_mg_cm3, QCT_CATEGORIES[0],
                   np.where(v < settings.qct_osteoporosis_below_mg_cm3, QCT_CATEGORIES[2], QCT_CATEGORIES[1]))
    return np.where(np.isnan(v), None, cat)


def _odi(visits: pd.DataFrame, settings: StatsSettings) -> pd.Series:
    from ..store.clinical import odi_index

    sections = visits[[f"odi_{i}" for i in range(1, 11)]]
    answered = sections.notna().sum(axis=1)
    index = [odi_index([None if pd.isna(s) else int(s) for s in row]) for row in sections.itertuples(index=False)]
    return pd.Series(index, index=visits.index, dtype=float).where(answered >= 10 - settings.odi_max_missing_sections)


def _visits(session: Session, settings: StatsSettings) -> pd.DataFrame:
    from ..store.db import CLINICAL_COLUMNS, query_clinical

    visits = pd.DataFrame(query_clinical(session), columns=list(CLINICAL_COLUMNS))
    visits["odi"] = _odi(visits, settings)
    grade = pd.to_numeric(visits.fusion_grade, errors="coerce")
    visits["fused"] = (grade <= settings.fused_max_bridwell_grade).where(grade.notna())
    return visits


def _vbmd(session: Session, settings: StatsSettings) -> pd.DataFrame:
    from ..store.db import query_vbmd

    rows = pd.DataFrame(query_vbmd(session))
    if rows.empty:
        return pd.DataFrame(columns=["vbmd_a", "vbmd_b", "vbmd_c", "qct_vbmd_a"])
    base = rows[(rows.timepoint == "baseline") & rows.vbmd_mg_cm3.notna()]
    base = base.assign(region=base.region.astype(str).str.lower())
    chosen = base[base.vertebra.isin(settings.vbmd_levels)]
    regions = chosen.pivot_table(index="study_id", columns="region", values="vbmd_mg_cm3", aggfunc="mean")
    regions = regions.reindex(columns=["a", "b", "c"]).add_prefix("vbmd_")
    qct = base[base.region == "a"].groupby("study_id").vbmd_mg_cm3.mean().rename("qct_vbmd_a")
    return regions.join(qct, how="outer")


def _screws(session: Session) -> pd.DataFrame:
    from ..store.db import query_screws

    rows = pd.DataFrame(query_screws(session))
    if rows.empty:
        return pd.DataFrame(columns=["study_id", "timepoint", "vertebra", "side", "loose"])
    return pd.DataFrame({"study_id": rows.study_id, "timepoint": rows.timepoint, "vertebra": rows.vertebra,
                         "side": rows.side.astype(str), "loose": rows.loosened.astype("boolean")})


def _first_given(visits: pd.DataFrame, column: str) -> pd.Series:
    return visits.dropna(subset=[column]).groupby("study_id")[column].first()


def _patients(session: Session, visits: pd.DataFrame, screws: pd.DataFrame, settings: StatsSettings) -> pd.DataFrame:
    import sqlalchemy as sa

    from ..store.db import Study

    ids = sorted(session.scalars(sa.select(Study.study_id)))
    patients = pd.DataFrame(index=pd.Index(ids, name="study_id"))
    for column in (*ARM_COLUMNS, *COVARIATES):
        patients[column] = _first_given(visits, column)
    patients = patients.join(_vbmd(session, settings))
    patients["qct_category"] = qct_category(patients.qct_vbmd_a.to_numpy(float), settings)
    at = settings.primary_timepoint
    by_screws = screws[screws.timepoint == at].dropna(subset=["loose"]).groupby("study_id").loose.any()
    reader = visits[visits.timepoint == at].dropna(subset=["loosening_reader"]).set_index("study_id").loosening_reader
    patients["loosened"] = by_screws.reindex(patients.index).astype(object)
    patients["loosened"] = patients.loosened.where(patients.loosened.notna(), reader.reindex(patients.index))
    patients["loosened"] = patients.loosened.map({True: 1.0, False: 0.0})
    patients["cement"] = patients.cement.map({True: 1.0, False: 0.0})
    return patients.reset_index()


def load_trial(engine: Engine, settings: StatsSettings | None = None) -> TrialData:
    """Read the patients, screws and clinical visits from the database (see module docstring)."""
    settings = settings or StatsSettings()
    with Session(engine) as session:
        visits = _visits(session, settings)
        screws = _screws(session)
        patients = _patients(session, visits, screws, settings)
    return TrialData(patients=patients, screws=screws, visits=visits)


# ---------------------------------------------------------------- a synthetic cohort into a database

#: vBMD offsets of the levels written around the cohort's value (density rises cranially), mg/cm3
_LEVEL_OFFSET_MG_CM3 = {"L3": 6.0, "L4": 3.0, "L5": 0.0}


def _series_row(uid: str):
    from ..rows import SeriesRow, SeriesStatus

    return SeriesRow(series_uid=uid, path="", n_files=0, modality="CT", description="synthetic cohort",
                     status=SeriesStatus.processed, reason="")


def _baseline_result(patient, level_offsets: dict):
    from ..pipeline import SeriesResult
    from ..results import Region, Side
    from ..rows import VbmdRow

    uid = f"synthetic.{patient.study_id}.baseline"
    sides = {Region.A: (Side.center,), Region.B: (Side.left, Side.right), Region.C: (Side.left, Side.right)}
    values = {Region.A: patient.vbmd_a, Region.B: patient.vbmd_b, Region.C: patient.vbmd_c}
    rows = tuple(
        VbmdRow(study_id=patient.study_id, timepoint="baseline", series_uid=uid, vertebra=level, region=region,
                side=side, vbmd_mg_cm3=float(values[region] + offset), material=None, hu_mean=None, hu_median=None,
                hu_sd=None, n_voxels=None, volume_mm3=None, excluded_fraction=None, calibration="phantom",
                roi_source="auto")
        for level, offset in level_offsets.items() for region, region_sides in sides.items() for side in region_sides)
    return SeriesResult(series=_series_row(uid), study_id=patient.study_id, timepoint="baseline", vbmd_rows=rows)


def _follow_up_result(study_id: str, timepoint: str, screws: pd.DataFrame):
    from ..pipeline import SeriesResult
    from ..rows import ScrewRow

    uid = f"synthetic.{study_id}.{timepoint}"
    rows = tuple(ScrewRow(study_id=study_id, timepoint=timepoint, series_uid=uid, vertebra=s.vertebra, side=s.side,
                          length_mm=None, diameter_mm=None, entry_x_mm=None, entry_y_mm=None, entry_z_mm=None,
                          tip_x_mm=None, tip_y_mm=None, tip_z_mm=None, halo_max_mm=None, halo_mean_mm=None,
                          halo_circumference_fraction=None, loosened=bool(s.loose))
                 for s in screws.itertuples())
    return SeriesResult(series=_series_row(uid), study_id=study_id, timepoint=timepoint, screw_rows=rows)


def write_cohort(engine: Engine, cohort) -> int:
    """Write a :class:`~bmdpipe.stats.cohort.Cohort` into the database: per patient a baseline
    series (vBMD of L3-L5, regions A, B, C), a follow-up series per visit with its screws, and
    the clinical visits through :func:`~bmdpipe.store.clinical.import_clinical`.

    Returns
    -------
    int
        Patients written.
    """
    from ..store.clinical import import_clinical
    from ..store.db import save_series_result, start_run

    with Session(engine) as session:
        run_id = start_run(session, command="bmdpipe stats cohort")
        for patient in cohort.patients.itertuples():
            save_series_result(session, _baseline_result(patient, _LEVEL_OFFSET_MG_CM3), run_id)
        for (study_id, timepoint), screws in cohort.screws.groupby(["study_id", "timepoint"]):
            save_series_result(session, _follow_up_result(study_id, timepoint, screws), run_id)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "synthetic_clinical.csv"
        visits = cohort.visits.copy()
        visits["fusion_grade"] = visits.fusion_grade.astype("Int64")
        visits.to_csv(path, index=False)
        import_clinical(engine, path)
    return len(cohort.patients)


def analysis_rows(frame: pd.DataFrame, outcome: str, predictors: list[str], source: str, *,
                  complete: bool = True) -> pd.DataFrame:
    """``outcome`` (as 0/1) and the numeric ``predictors`` of ``frame``: the rows complete in all
    (``complete``), or every row with its empty cells NaN.

    Raises
    ------
    StatsError
        Naming ``source`` and the column: a column missing or not numeric, or an outcome that
        holds one class only among the complete rows.
    """
    rows = pd.DataFrame({outcome: binary_column(frame, outcome, source)})
    for p in predictors:
        rows[p] = numeric_column(frame, p, source)
    known = rows.dropna() if complete else rows.dropna(subset=[outcome])
    if known[outcome].nunique() < 2:
        held = "no rows" if known.empty else f"only {outcome} = {int(known[outcome].iloc[0])}"
        raise StatsError(f"{source}, column {outcome!r}: the {len(known)} usable rows hold one outcome class ({held}); "
                         "a ROC or logistic analysis needs both")
    return known if complete else rows
