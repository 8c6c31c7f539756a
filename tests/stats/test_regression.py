"""Odds ratios from logistic regression and the GEE, against independent computations."""

import numpy as np
import pandas as pd
import pytest
from scipy.stats import norm

from bmdpipe.stats.regression import FitError, clustered_odds_ratio, clustered_proportion, logistic_odds_ratios


def _two_by_two(a, b, c, d):
    """Outcome 1/0 by exposure 1/0: a exposed cases, b exposed non-cases, c unexposed cases, d unexposed non-cases."""
    rows = [(1, 1)] * a + [(1, 0)] * b + [(0, 1)] * c + [(0, 0)] * d
    return pd.DataFrame(rows, columns=["exposed", "case"])


def test_binary_predictor_odds_ratio_is_the_cross_product_with_woolf_ci():
    """A single 0/1 predictor: OR = ad / bc, CI exp(log OR +- 1.96 sqrt(1/a + 1/b + 1/c + 1/d)) (Woolf 1955)."""
    a, b, c, d = 22, 69, 41, 54
    (r,) = logistic_odds_ratios(_two_by_two(a, b, c, d), "case", ["exposed"])
    se = np.sqrt(1 / a + 1 / b + 1 / c + 1 / d)
    assert r.odds_ratio == pytest.approx(a * d / (b * c), rel=1e-6)
    assert r.ci_low == pytest.approx(np.exp(np.log(a * d / (b * c)) - norm.ppf(0.975) * se), rel=1e-6)
    assert r.ci_high == pytest.approx(np.exp(np.log(a * d / (b * c)) + norm.ppf(0.975) * se), rel=1e-6)
    assert r.p_value == pytest.approx(2 * norm.sf(abs(np.log(a * d / (b * c))) / se), rel=1e-5)


def test_multivariable_odds_ratios_match_scikit_learn():
    """Unpenalised scikit-learn logistic regression gives the same coefficients (to 1e-3 in the OR)."""
    from sklearn.linear_model import LogisticRegression

    rng = np.random.default_rng(5)
    x = pd.DataFrame({"vbmd": rng.normal(120, 30, 300), "cement": (rng.random(300) < 0.5).astype(float)})
    logit = 4.0 - 0.035 * x.vbmd - 0.7 * x.cement
    x["loose"] = (rng.random(300) < 1 / (1 + np.exp(-logit))).astype(float)
    ratios = logistic_odds_ratios(x, "loose", ["vbmd", "cement"])
    multi = {r.predictor: r.odds_ratio for r in ratios if r.model == "multivariable"}
    sk = LogisticRegression(C=np.inf, tol=1e-10, max_iter=10000).fit(x[["vbmd", "cement"]], x.loose)
    assert multi["vbmd"] == pytest.approx(np.exp(sk.coef_[0][0]), abs=1e-3)
    assert multi["cement"] == pytest.approx(np.exp(sk.coef_[0][1]), abs=1e-3)
    uni = {r.predictor: r for r in ratios if r.model == "univariate"}
    sk1 = LogisticRegression(C=np.inf, tol=1e-10, max_iter=10000).fit(x[["vbmd"]], x.loose)
    assert uni["vbmd"].odds_ratio == pytest.approx(np.exp(sk1.coef_[0][0]), abs=1e-3)
    assert [r.model for r in ratios] == ["univariate", "univariate", "multivariable", "multivariable"]


def test_gee_respects_clustering():
    """Four screws per patient sharing the patient's outcome: the GEE OR is the patients' cross-product and its
    CI is wider than a logistic model that counts the screws as independent."""
    patients = _two_by_two(20, 30, 40, 20).assign(study_id=lambda f: [f"P{i}" for i in range(len(f))])
    screws = patients.loc[patients.index.repeat(4)].reset_index(drop=True)
    r = clustered_odds_ratio(screws, "case", "exposed", "study_id")
    assert r.model == "GEE" and r.n == 4 * len(patients)
    assert r.odds_ratio == pytest.approx(20 * 20 / (30 * 40), rel=1e-6)
    (naive,) = logistic_odds_ratios(screws, "case", ["exposed"])
    assert np.log(r.ci_high / r.ci_low) > 1.8 * np.log(naive.ci_high / naive.ci_low)


def test_perfect_separation_is_a_fit_error():
    """A predictor that separates the outcome perfectly: FitError naming the predictor."""
    frame = pd.DataFrame({"x": np.arange(20.0), "y": (np.arange(20) >= 10).astype(float)})
    with pytest.raises(FitError, match="x"):
        logistic_odds_ratios(frame, "y", ["x"])


def test_clustered_proportion_counts_patients_not_screws():
    """Four identical screws per patient: the rate is the plain share and its robust CI is the patients' logit
    Wald CI (the sandwich variance reduces to 1 / (N p (1 - p)) with N patients), not the screws'."""
    patients = _two_by_two(20, 30, 0, 0).assign(study_id=lambda f: [f"P{i}" for i in range(len(f))])
    screws = patients.loc[patients.index.repeat(4)].reset_index(drop=True)
    rate, low, high = clustered_proportion(screws, "case", "study_id")
    p, n = 20 / 50, 50
    half = norm.ppf(0.975) / np.sqrt(n * p * (1 - p))
    expit = lambda x: 1 / (1 + np.exp(-x))  # noqa: E731
    assert rate == pytest.approx(p, abs=1e-12)
    assert low == pytest.approx(expit(np.log(p / (1 - p)) - half), rel=1e-6)
    assert high == pytest.approx(expit(np.log(p / (1 - p)) + half), rel=1e-6)
    with pytest.raises(FitError, match="no unit has the outcome"):
        clustered_proportion(screws.assign(case=0), "case", "study_id")
