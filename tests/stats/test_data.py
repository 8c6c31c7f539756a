"""The statistics' inputs: the database read back into frames, ODI and QCT rules, CSV checks."""

import numpy as np
import pandas as pd
import pytest

from bmdpipe.config import StatsSettings
from bmdpipe.errors import StatsError
from bmdpipe.stats.data import analysis_rows, load_trial, qct_category, read_table
from bmdpipe.store.db import open_db


@pytest.fixture(scope="module")
def trial(cohort_db):
    url, cohort = cohort_db
    engine = open_db(url)
    yield load_trial(engine), cohort
    engine.dispose()


def test_patients_read_back_from_the_database(trial):
    """vBMD of L5 by region, arms, covariates and month-12 loosening come back as the cohort wrote them."""
    data, cohort = trial
    got = data.patients.set_index("study_id").sort_index()
    want = cohort.patients.set_index("study_id").sort_index()
    for region in ("vbmd_a", "vbmd_b", "vbmd_c"):
        np.testing.assert_allclose(got[region], want[region], rtol=1e-12)
    np.testing.assert_array_equal(got.loosened.to_numpy(), want.loosened.to_numpy(float))
    np.testing.assert_array_equal(got.cement.to_numpy(), want.cement.to_numpy(float))
    assert (got.cage_type == want.cage_type).all()
    for covariate in ("age_years", "bmi_kg_m2", "tscore_lumbar", "tscore_hip"):
        np.testing.assert_allclose(got[covariate].astype(float), want[covariate], rtol=1e-12)
    assert (got.sex == want.sex).all()
    # the QCT value is the mean region-A vBMD of L3-L5, written at +6, +3, 0 mg/cm3 around L5's
    np.testing.assert_allclose(got.qct_vbmd_a, want.vbmd_a + 3.0, rtol=1e-12)
    assert len(data.screws) == 4 * 4 * len(want)


def test_odi_follows_the_missing_section_rule(small_db, tmp_path):
    """ODI = sum / (5 x answered) x 100 with up to stats.odi_max_missing_sections (2) unanswered, else empty."""
    from bmdpipe.store.clinical import import_clinical

    url, _ = small_db
    path = tmp_path / "odi.csv"
    sections = {"month_3": [5, 4, 3, 2, 1, 0, 1, 2, 3, 4], "month_6": [5, 4, "", 2, 1, 0, "", 2, 3, 4],
                "month_12": [5, "", "", 2, 1, 0, "", 2, 3, 4]}
    path.write_text("study_id,timepoint," + ",".join(f"odi_{i}" for i in range(1, 11)) + "\n" + "".join(
        f"ODI1,{t}," + ",".join(map(str, s)) + "\n" for t, s in sections.items()))
    engine = open_db(url)
    import_clinical(engine, path)
    visits = load_trial(engine).visits.set_index(["study_id", "timepoint"])
    engine.dispose()
    assert visits.odi["ODI1", "month_3"] == pytest.approx(25 / 50 * 100)
    assert visits.odi["ODI1", "month_6"] == pytest.approx(21 / 40 * 100)  # 2 missing: 8 answered
    assert np.isnan(visits.odi["ODI1", "month_12"])  # 3 missing: left empty


def test_fused_is_bridwell_one_or_two(trial):
    """fused is true for grades I-II, false for III-IV, empty without a grade."""
    data, _ = trial
    v = data.visits
    assert (v.fused[v.fusion_grade <= 2] == True).all()  # noqa: E712
    assert (v.fused[v.fusion_grade >= 3] == False).all()  # noqa: E712
    assert v.fused[v.fusion_grade.isna()].isna().all()


def test_qct_category_thresholds():
    """> 120 normal, 80-120 low bone mass, < 80 osteoporosis, empty when not measured."""
    got = qct_category(np.array([120.01, 120.0, 80.0, 79.99, np.nan]), StatsSettings())
    assert got.tolist() == ["normal", "low bone mass", "low bone mass", "osteoporosis", None]


def test_bad_tables_are_named(tmp_path):
    """A missing column, a non-number and a one-class outcome: StatsError naming the source and column."""
    path = tmp_path / "cohort.csv"
    pd.DataFrame({"vbmd_c": ["101.5", "oops", "90"], "loose": ["yes", "no", "no"]}).to_csv(path, index=False)
    frame = read_table(path)
    with pytest.raises(StatsError, match=r"cohort\.csv has no column 'vbmd_a'"):
        analysis_rows(frame, "loose", ["vbmd_a"], f"data file {path}")
    with pytest.raises(StatsError, match=r"cohort\.csv, column 'vbmd_c': 'oops' \(row 3\) is not a number"):
        analysis_rows(frame, "loose", ["vbmd_c"], f"data file {path}")
    with pytest.raises(StatsError, match="one outcome class"):
        analysis_rows(frame.assign(loose="no"), "loose", [], f"data file {path}")
    with pytest.raises(StatsError, match="does not exist"):
        read_table(tmp_path / "absent.csv")
