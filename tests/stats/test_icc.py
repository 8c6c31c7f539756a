"""ICC(2,1) and ICC(2,k) against Shrout & Fleiss (1979) and the two-way ANOVA mean squares."""

import numpy as np
import pandas as pd
import pytest

from bmdpipe.stats.icc import intraclass_correlation

#: Shrout & Fleiss 1979, Table 2: 6 targets rated by 4 judges
SHROUT_FLEISS = np.array([[9, 2, 5, 8], [6, 1, 3, 2], [8, 4, 6, 8], [7, 1, 2, 6], [10, 5, 6, 9], [6, 2, 4, 7]])


def _long(ratings):
    n, k = ratings.shape
    return pd.DataFrame([(f"t{i}", f"judge{j}", float(ratings[i, j])) for i in range(n) for j in range(k)],
                        columns=["target", "reviewer", "vbmd"])


def _anova_icc(x):
    """ICC(2,1) and ICC(2,k) from the mean squares of the two-way ANOVA (McGraw & Wong 1996, case 2A)."""
    n, k = x.shape
    grand = x.mean()
    msr = k * ((x.mean(axis=1) - grand) ** 2).sum() / (n - 1)
    msc = n * ((x.mean(axis=0) - grand) ** 2).sum() / (k - 1)
    resid = x - x.mean(axis=1, keepdims=True) - x.mean(axis=0, keepdims=True) + grand
    mse = (resid**2).sum() / ((n - 1) * (k - 1))
    return (msr - mse) / (msr + (k - 1) * mse + k * (msc - mse) / n), (msr - mse) / (msr + (msc - mse) / n)


def test_shrout_fleiss_worked_example():
    """Table 2 data: ICC(2,1) = 0.29 and ICC(2,4) = 0.62 as published, equal to the ANOVA formula to 1e-9."""
    r = intraclass_correlation(_long(SHROUT_FLEISS), "target", "reviewer", "vbmd")
    single, average = _anova_icc(SHROUT_FLEISS.astype(float))
    assert r.single == pytest.approx(single, abs=1e-9) and r.average == pytest.approx(average, abs=1e-9)
    assert round(r.single, 2) == 0.29 and round(r.average, 2) == 0.62
    assert r.single_ci_low < r.single < r.single_ci_high
    assert (r.n_targets, r.n_readers, r.n_dropped) == (6, 4, 0)


def test_two_readers_and_incomplete_targets():
    """Two readers; a target only one reader rated is left out and counted."""
    rng = np.random.default_rng(1)
    truth = rng.normal(120, 30, 40)
    x = np.c_[truth + rng.normal(0, 8, 40), truth + 5 + rng.normal(0, 8, 40)]
    frame = pd.concat([_long(x), pd.DataFrame([{"target": "extra", "reviewer": "judge0", "vbmd": 100.0}])])
    r = intraclass_correlation(frame, "target", "reviewer", "vbmd")
    assert r.single == pytest.approx(_anova_icc(x)[0], abs=1e-9)
    assert (r.n_targets, r.n_readers, r.n_dropped) == (40, 2, 1)


def test_one_reader_is_refused():
    """A single reader: ValueError saying an ICC needs two."""
    with pytest.raises(ValueError, match="2 or more readers"):
        intraclass_correlation(_long(SHROUT_FLEISS[:, :1]), "target", "reviewer", "vbmd")
