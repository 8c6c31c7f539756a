"""The trial report from a database: its numbers, its figures, and small databases."""

import base64
import io
import re

import numpy as np
import pytest

from bmdpipe.stats.data import load_trial
from bmdpipe.stats.report import trial_report
from bmdpipe.stats.roc import roc_analysis
from bmdpipe.store.db import open_db


def _decoded(png: bytes) -> np.ndarray:
    from matplotlib.image import imread

    return imread(io.BytesIO(png), format="png")


def _report(url):
    engine = open_db(url)
    try:
        return trial_report(load_trial(engine), source="test")
    finally:
        engine.dispose()


@pytest.fixture(scope="module")
def report(cohort_db):
    url, cohort = cohort_db
    return _report(url), cohort


def test_report_shows_the_cohorts_auc_and_methods(report):
    """Table 3 holds the AUC of region C computed directly on the cohort (near the paper's 0.736), and the report
    names its methods: GEE for screws, DeLong, Youden; the hip T-score has its own ROC row; every section is
    present."""
    rep, cohort = report
    page = rep.html("t")
    direct = roc_analysis(cohort.patients.loosened, cohort.patients.vbmd_c, direction="lower")
    assert abs(direct.auc - 0.732) < 4 * direct.auc_se
    row = re.search(r"<td>C \(screw trajectory\)</td>\s*<td>([0-9.]+)</td>", page)
    assert row and float(row.group(1)) == pytest.approx(direct.auc, abs=1e-3)
    hip = roc_analysis(cohort.patients.loosened, cohort.patients.tscore_hip, direction="lower")
    row = re.search(r"<td>DXA hip T-score</td>\s*<td>([0-9.]+)</td>", page)
    assert row and float(row.group(1)) == pytest.approx(hip.auc, abs=1e-3)
    for text in ("GEE (binomial, logit link, exchangeable", "DeLong", "Youden", "Table 1.", "Table 2.", "Table 3.",
                 "QCT categories", "ODI and VAS over time", "month_24", "titanium_3d"):
        assert text in page, text
    assert "n too small" not in page


def test_report_figures_render(report):
    """Every figure is a PNG that decodes, is not blank, and is inlined in the page as base64."""
    rep, _ = report
    page = rep.html("t")
    assert set(rep.figures) == {"loosened_by_arm", "fused_by_arm", "scores_cement_arm", "scores_cage_arm", "roc"}
    for name, png in rep.figures.items():
        pixels = _decoded(png)
        assert pixels.shape[0] > 200 and pixels.shape[1] > 200, name
        assert pixels[..., :3].std() > 0.05, name
        assert len(np.unique(pixels[..., :3].reshape(-1, 3), axis=0)) > 50, name
        assert base64.b64encode(png).decode() in page


def test_report_names_no_patient(report, cohort_db):
    """Only aggregates: no study pseudonym appears in the page."""
    rep, cohort = report
    page = rep.html("t")
    assert not any(sid in page for sid in cohort.patients.study_id)


def test_small_database_says_n_is_too_small(small_db):
    """Three patients: the report is written, the sections that need more say n is too small."""
    url, _ = small_db
    page = _report(url).html("t")
    assert "n too small" in page
    assert "Tables 1-3 need at least 5" in page


def test_measurements_without_clinical_data(small_db):
    """A database like the demo's (measurements, no import-clinical): no arms, no scores; the report says so
    and still shows the QCT categories."""
    import sqlalchemy as sa

    url, cohort = small_db
    engine = open_db(url)
    with engine.begin() as conn:
        conn.execute(sa.text("DELETE FROM clinical_visits"))
    engine.dispose()
    page = _report(url).html("t")
    assert "no patient has a cement vs none arm recorded" in page
    assert "ODI % by cement vs none: no visits" in page
    assert re.search(r"<td>(normal|low bone mass|osteoporosis)</td>\s*<td>[1-3]</td>", page)
