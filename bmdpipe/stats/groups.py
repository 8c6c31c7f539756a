"""Two-group comparison table, like a paper's "Table 1".

Continuous variables: Shapiro-Wilk in each group decides between Student's t-test (both
normal: mean +- SD) and the Mann-Whitney U test (median [IQR]). Categorical variables:
chi-square, or Fisher's exact test for a 2 x 2 table with a small expected count.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import stats

__all__ = ["GroupRow", "compare_groups", "group_table", "two_by_two_test"]


@dataclass(frozen=True)
class GroupRow:
    """One variable of the table: a summary per group, the test and its p-value."""

    variable: str
    summary_1: str
    summary_2: str
    test: str
    p_value: float | None
    n_1: int
    n_2: int


def _continuous(name, a: np.ndarray, b: np.ndarray, normality_alpha: float) -> GroupRow:
    if min(a.size, b.size) < 3:
        return GroupRow(name, "", "", "n too small", None, a.size, b.size)
    normal = all(stats.shapiro(x).pvalue >= normality_alpha for x in (a, b))
    if normal:
        return GroupRow(name, f"{a.mean():.1f} +- {a.std(ddof=1):.1f}", f"{b.mean():.1f} +- {b.std(ddof=1):.1f}",
                        "t-test", float(stats.ttest_ind(a, b).pvalue), a.size, b.size)

    def med(x):
        q1, q2, q3 = np.percentile(x, [25, 50, 75])
        return f"{q2:.1f} [{q1:.1f}, {q3:.1f}]"

    return GroupRow(name, med(a), med(b), "Mann-Whitney U",
                    float(stats.mannwhitneyu(a, b, alternative="two-sided").pvalue), a.size, b.size)


def _categorical(name, a: pd.Series, b: pd.Series, min_expected: float) -> GroupRow:
    table = pd.crosstab(np.r_[np.zeros(len(a)), np.ones(len(b))], pd.concat([a, b]).astype(str).to_numpy())
    counts = table.to_numpy()

    def share(row):
        return ", ".join(f"{c}: {k} ({100 * k / row.sum():.0f} %)" for c, k in zip(table.columns, row))

    s1, s2 = share(counts[0]), share(counts[1])
    if counts.shape[1] < 2:
        return GroupRow(name, s1, s2, "one category only", None, len(a), len(b))
    test, p = two_by_two_test(counts, min_expected)
    return GroupRow(name, s1, s2, test, p, len(a), len(b))


def two_by_two_test(counts: np.ndarray, min_expected: float) -> tuple[str, float]:
    """Test of independence of a contingency table: ``("Fisher exact", p)`` for a 2 x 2 table
    with an expected count below ``min_expected``, else ``("chi-square", p)`` (no continuity
    correction)."""
    _, p, _, expected = stats.chi2_contingency(counts, correction=False)
    if counts.shape == (2, 2) and expected.min() < min_expected:
        return "Fisher exact", float(stats.fisher_exact(counts).pvalue)
    return "chi-square", float(p)


def compare_groups(frame: pd.DataFrame, group: str, variables: list[str], *, normality_alpha: float = 0.05,
                   min_expected_count: float = 5.0) -> tuple[tuple[str, str], list[GroupRow]]:
    """Compare ``variables`` between the two groups of column ``group``.

    A numeric column (not bool) is continuous; bool and text columns are categorical.
    Missing values are left out per variable.

    Returns
    -------
    (label_1, label_2), rows : tuple of str, list of GroupRow
        The two groups' labels (sorted: False before True) and one row per variable.

    Raises
    ------
    ValueError
        When ``group`` does not hold exactly two values.
    """
    labels = sorted(frame[group].dropna().unique().tolist())
    if len(labels) != 2:
        raise ValueError(f"column {group} must hold exactly two groups, found {len(labels)}: {labels[:5]}")
    rows = []
    for var in variables:
        col = frame[[group, var]].dropna()
        a, b = (col.loc[col[group] == g, var] for g in labels)
        continuous = pd.api.types.is_numeric_dtype(col[var]) and not pd.api.types.is_bool_dtype(col[var])
        rows.append(_continuous(var, a.to_numpy(float), b.to_numpy(float), normality_alpha) if continuous
                    else _categorical(var, a, b, min_expected_count))
    return (str(labels[0]), str(labels[1])), rows


def group_table(labels: tuple[str, str], rows: list[GroupRow]) -> pd.DataFrame:
    """The comparison as a table: variable, one column per group (with n), test, p."""
    return pd.DataFrame([{"variable": r.variable, f"{labels[0]} (n={r.n_1})": r.summary_1,
                          f"{labels[1]} (n={r.n_2})": r.summary_2, "test": r.test, "p": r.p_value} for r in rows])
