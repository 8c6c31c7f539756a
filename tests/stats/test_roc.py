"""ROC analysis: DeLong AUC variance, Youden cut-off and the paired DeLong test, each against
an independent computation."""

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from bmdpipe.stats.cohort import binormal_auc, synthetic_cohort
from bmdpipe.stats.roc import Direction, compare_aucs, delong_covariance, roc_analysis


def _pairwise_placements(pos, neg):
    """DeLong 1988 placement values by all m x n comparisons (psi = 1, 1/2 on ties, 0)."""
    psi = (pos[:, None] > neg[None, :]) + 0.5 * (pos[:, None] == neg[None, :])
    return psi.mean(axis=1), psi.mean(axis=0)


def _brute_covariance(y, scores):
    v10, v01 = zip(*(_pairwise_placements(s[y], s[~y]) for s in scores))
    return np.cov(np.vstack(v10)) / y.sum() + np.cov(np.vstack(v01)) / (~y).sum()


@pytest.fixture
def tied_data():
    rng = np.random.default_rng(3)
    y = rng.random(150) < 0.35
    s1 = np.round(rng.normal(0, 1, 150) + 0.8 * y, 1)  # rounded: many ties
    s2 = np.round(0.6 * s1 + rng.normal(0, 1, 150) + 0.3 * y, 1)
    return y, s1, s2


def test_delong_matches_pairwise_placements_and_sklearn(tied_data):
    """The midrank (Sun & Xu) AUCs and covariance equal the O(mn) placement-value formulas; AUC = sklearn's."""
    y, s1, s2 = tied_data
    auc, cov = delong_covariance(y, np.vstack([s1, s2]))
    assert auc[0] == pytest.approx(roc_auc_score(y, s1), abs=1e-12)
    assert auc[1] == pytest.approx(roc_auc_score(y, s2), abs=1e-12)
    np.testing.assert_allclose(cov, _brute_covariance(y, [s1, s2]), rtol=1e-10)


def test_delong_se_agrees_with_bootstrap():
    """The DeLong SE is within 10 % of a 2000-resample stratified bootstrap SE (its own error ~2 %)."""
    p = synthetic_cohort(seed=11).patients
    y, x = p.loosened.to_numpy(), -p.vbmd_c.to_numpy()
    _, cov = delong_covariance(y, x)
    rng = np.random.default_rng(0)
    pos, neg = np.flatnonzero(y), np.flatnonzero(~y)
    boot = []
    for _ in range(2000):
        idx = np.r_[rng.choice(pos, pos.size), rng.choice(neg, neg.size)]
        boot.append(roc_auc_score(y[idx], x[idx]))
    assert np.sqrt(cov[0, 0]) == pytest.approx(np.std(boot, ddof=1), rel=0.10)


def test_youden_cutoff_matches_a_brute_force_scan(tied_data):
    """Sensitivity + specificity - 1 at the cut-off is the maximum over every observed value as cut-off."""
    y, s1, _ = tied_data
    density = 100 - 10 * s1  # lower density = outcome
    r = roc_analysis(y, density, direction="lower")
    best = max((np.mean(density[y] <= c) + np.mean(density[~y] > c) - 1, c) for c in np.unique(density))
    assert r.sensitivity + r.specificity - 1 == pytest.approx(best[0], abs=1e-12)
    assert r.sensitivity == pytest.approx(np.mean(density[y] <= r.cutoff), abs=1e-12)
    assert r.specificity == pytest.approx(np.mean(density[~y] > r.cutoff), abs=1e-12)
    assert r.auc == pytest.approx(roc_auc_score(y, -density), abs=1e-3)
    assert (r.n_positive, r.n_negative) == (int(y.sum()), int((~y).sum()))


def test_direction_auto_follows_the_medians_and_ci_brackets_auc(tied_data):
    """auto picks lower for a predictor lower in the positives; higher gives 1 - AUC; the CI is AUC +- 1.96 SE."""
    y, s1, _ = tied_data
    density = 100 - 10 * s1
    auto, higher = roc_analysis(y, density), roc_analysis(y, density, direction=Direction.higher)
    assert auto.direction is Direction.lower
    assert higher.auc == pytest.approx(1 - auto.auc, abs=1e-12)
    assert auto.auc_ci_low == pytest.approx(auto.auc - 1.959964 * auto.auc_se, abs=1e-6)
    assert auto.auc_ci_high == pytest.approx(auto.auc + 1.959964 * auto.auc_se, abs=1e-6)


def test_paired_delong_test_uses_the_covariance(tied_data):
    """z = (AUC1 - AUC2) / sqrt(V1 + V2 - 2 C) with V, C from the pairwise placement values."""
    y, s1, s2 = tied_data
    c = compare_aucs(y, s1, s2, direction="higher")
    cov = _brute_covariance(y, [s1, s2])
    z = (roc_auc_score(y, s1) - roc_auc_score(y, s2)) / np.sqrt(cov[0, 0] + cov[1, 1] - 2 * cov[0, 1])
    assert c.z == pytest.approx(z, rel=1e-9)
    from scipy.stats import norm

    assert c.p_value == pytest.approx(2 * norm.sf(abs(z)), rel=1e-9)


def test_one_class_is_refused():
    """Fewer than two cases in a class: a ValueError saying so."""
    with pytest.raises(ValueError, match="at least 2 positive"):
        delong_covariance(np.array([1, 0, 0, 0], bool), np.arange(4.0))


def test_table1_cohort_auc_near_the_paper():
    """On cohorts shaped like Xu 2025 Table 1 (63 loose, 123 not; C 107 vs 135 +- 32 mg/cm3), the AUC of C is
    near the binormal Phi(28 / (32 sqrt 2)) = 0.732: each seed within 4 DeLong SE (all 20 pass by chance with p ~ 0.999), the mean of 20 seeds within 3 SE / sqrt(20)."""
    truth = binormal_auc(28.0, 32.0)
    assert truth == pytest.approx(0.7319, abs=1e-4)
    aucs, ses = [], []
    for seed in range(20):
        p = synthetic_cohort(seed=seed).patients
        r = roc_analysis(p.loosened, p.vbmd_c, direction="lower")
        assert abs(r.auc - truth) < 4 * r.auc_se, seed
        aucs.append(r.auc)
        ses.append(r.auc_se)
    assert abs(np.mean(aucs) - truth) < 3 * np.mean(ses) / np.sqrt(20)


def test_hanley_mcneil_worked_example():
    """Hanley & McNeil (Radiology 1982) Table 1: CT ratings 1-5 of 58 normal and 51 abnormal cases; published
    AUC 0.893 and SE 0.032 (their exponential approximation; the DeLong SE agrees to within 10 %)."""
    normal = np.repeat([1, 2, 3, 4, 5], [33, 6, 6, 11, 2])
    abnormal = np.repeat([1, 2, 3, 4, 5], [3, 2, 2, 11, 33])
    y = np.r_[np.zeros(58, bool), np.ones(51, bool)]
    r = roc_analysis(y, np.r_[normal, abnormal], direction="higher")
    assert r.auc == pytest.approx(0.893, abs=1e-3)
    assert r.auc_se == pytest.approx(0.032, rel=0.10)
