"""Inter-reader agreement: the intraclass correlation of two or more readers, from pingouin.

Two-way model, absolute agreement (McGraw & Wong ICC(A,1) and ICC(A,k); Shrout & Fleiss
ICC(2,1) and ICC(2,k)): every reader rates every target, readers a random sample.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import pandas as pd

__all__ = ["Icc", "intraclass_correlation"]


@dataclass(frozen=True)
class Icc:
    """ICC, two-way random effects, absolute agreement.

    ``single``: one reader's measurement (ICC(2,1)); ``average``: the mean of ``n_readers``
    readers (ICC(2,k)). CIs as pingouin gives them (two decimals).
    """

    single: float
    single_ci_low: float
    single_ci_high: float
    average: float
    average_ci_low: float
    average_ci_high: float
    n_targets: int
    n_readers: int
    n_dropped: int


def intraclass_correlation(frame: pd.DataFrame, target: str, reader: str, value: str) -> Icc:
    """ICC of ``value`` between readers, from a long table (one row per target x reader).

    Targets not rated by every reader are left out (``n_dropped``).

    Raises
    ------
    ValueError
        Fewer than two readers or targets, or a target rated twice by one reader.
    """
    import pingouin as pg

    rows = frame[[target, reader, value]].dropna()
    if rows.duplicated([target, reader]).any():
        dup = rows[rows.duplicated([target, reader], keep=False)].iloc[0]
        raise ValueError(f"target {dup[target]} is rated more than once by reader {dup[reader]}")
    n_readers = rows[reader].nunique()
    complete = rows.groupby(target)[reader].transform("nunique") == n_readers
    n_all = rows[target].nunique()
    rows = rows[complete]
    n_targets = rows[target].nunique()
    if n_readers < 2 or n_targets < 2:
        raise ValueError(f"an ICC needs 2 or more readers and targets rated by all; got {n_readers} reader(s), "
                         f"{n_targets} complete target(s)")
    with warnings.catch_warnings():  # pingouin 0.7 calls a pandas method pandas 3 deprecates
        warnings.filterwarnings("ignore", message="The inplace keyword", module="pingouin")
        warnings.filterwarnings("ignore", message="The inplace keyword")
        res = pg.intraclass_corr(rows, targets=target, raters=reader, ratings=value).set_index("Type")
    single, average = res.loc["ICC(A,1)"], res.loc["ICC(A,k)"]
    return Icc(float(single.ICC), float(single.CI95[0]), float(single.CI95[1]), float(average.ICC),
               float(average.CI95[0]), float(average.CI95[1]), n_targets, n_readers, n_all - n_targets)
