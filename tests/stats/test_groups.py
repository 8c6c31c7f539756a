"""The Table-1 comparison chooses its tests by the rules and reports scipy's p-values."""

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from bmdpipe.stats.groups import compare_groups


@pytest.fixture
def frame():
    rng = np.random.default_rng(2)
    n = 120
    group = np.r_[np.zeros(60, bool), np.ones(60, bool)]
    return pd.DataFrame({
        "loose": group,
        "normal": rng.normal(130, 30, n) - 25 * group,
        "skewed": rng.lognormal(0, 1.2, n) * (1 + group),
        "arm": np.where(rng.random(n) < 0.5, "cement", "none"),
        "rare": np.where(np.arange(n) % 30 == 0, "yes", "no"),
    })


def test_normal_data_get_the_t_test_skewed_data_mann_whitney(frame):
    """Shapiro-Wilk passes -> Student t (mean +- SD); fails -> Mann-Whitney U (median [IQR]); p as scipy's."""
    (l0, l1), rows = compare_groups(frame, "loose", ["normal", "skewed"])
    assert (l0, l1) == ("False", "True")
    a, b = (frame.loc[frame.loose == g] for g in (False, True))
    normal, skewed = rows
    assert normal.test == "t-test"
    assert normal.p_value == pytest.approx(stats.ttest_ind(a.normal, b.normal).pvalue, rel=1e-12)
    assert normal.summary_1 == f"{a.normal.mean():.1f} +- {a.normal.std():.1f}"
    assert skewed.test == "Mann-Whitney U"
    assert skewed.p_value == pytest.approx(stats.mannwhitneyu(a.skewed, b.skewed).pvalue, rel=1e-12)
    assert "[" in skewed.summary_1


def test_categories_get_chi_square_or_fisher(frame):
    """Expected counts >= 5: chi-square without correction; a rare category (expected < 5): Fisher's exact test."""
    _, (arm, rare) = compare_groups(frame, "loose", ["arm", "rare"])
    table = pd.crosstab(frame.loose, frame.arm).to_numpy()
    assert arm.test == "chi-square"
    assert arm.p_value == pytest.approx(stats.chi2_contingency(table, correction=False).pvalue, rel=1e-12)
    assert rare.test == "Fisher exact"
    assert rare.p_value == pytest.approx(stats.fisher_exact(pd.crosstab(frame.loose, frame.rare).to_numpy()).pvalue)


def test_three_groups_are_refused(frame):
    """The group column must hold exactly two values."""
    with pytest.raises(ValueError, match="exactly two groups"):
        compare_groups(frame.assign(g=np.arange(len(frame)) % 3), "g", ["normal"])
