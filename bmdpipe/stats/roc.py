"""ROC analysis: AUC with its DeLong confidence interval, the Youden cut-off, and the DeLong
test of two correlated AUCs.

The curve and the AUC come from scikit-learn; the DeLong variance (which no maintained
Python library implements) is the fast midrank algorithm of Sun & Xu (2014).

References
----------
.. [1] DeLong ER, DeLong DM, Clarke-Pearson DL. Comparing the areas under two or more
       correlated receiver operating characteristic curves: a nonparametric approach.
       Biometrics 1988;44:837-845.
.. [2] Sun X, Xu W. Fast implementation of DeLong's algorithm for comparing the areas under
       correlated receiver operating characteristic curves. IEEE Signal Process Lett
       2014;21:1389-1393.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import stats

from .direction import Direction

__all__ = ["Direction", "RocResult", "AucComparison", "delong_covariance", "roc_analysis", "compare_aucs"]


@dataclass(frozen=True)
class RocResult:
    """ROC analysis of one predictor against a binary outcome.

    Attributes
    ----------
    auc, auc_ci_low, auc_ci_high : float
        Area under the curve and its DeLong confidence interval (clipped to [0, 1]).
    auc_se : float
        DeLong standard error of the AUC.
    cutoff : float
        Youden-optimal cut-off in the predictor's unit: the outcome is predicted for values
        ``<= cutoff`` (direction lower) or ``>= cutoff`` (higher).
    sensitivity, specificity : float
        At the cut-off.
    direction : Direction
        lower or higher (never auto: auto is resolved).
    n_positive, n_negative : int
    fpr, tpr : (K,) ndarray
        The curve (1 - specificity, sensitivity).
    """

    auc: float
    auc_ci_low: float
    auc_ci_high: float
    auc_se: float
    cutoff: float
    sensitivity: float
    specificity: float
    direction: Direction
    n_positive: int
    n_negative: int
    fpr: np.ndarray
    tpr: np.ndarray

    def summary(self) -> dict:
        """The JSON summary: auc, auc_ci_low, auc_ci_high, cutoff, sensitivity, specificity,
        direction, n_positive, n_negative."""
        return {
            "auc": self.auc, "auc_ci_low": self.auc_ci_low, "auc_ci_high": self.auc_ci_high,
            "cutoff": self.cutoff, "sensitivity": self.sensitivity, "specificity": self.specificity,
            "direction": self.direction.value, "n_positive": self.n_positive, "n_negative": self.n_negative,
        }


@dataclass(frozen=True)
class AucComparison:
    """DeLong test of two correlated AUCs measured on the same cases.

    ``difference = auc_1 - auc_2``; ``z`` and the two-sided ``p_value`` test it against 0;
    ``ci_low, ci_high``: its confidence interval.
    """

    auc_1: float
    auc_2: float
    difference: float
    ci_low: float
    ci_high: float
    z: float
    p_value: float


def _midranks(x: np.ndarray) -> np.ndarray:
    """Ranks 1..n of ``x`` along the last axis, ties sharing their mean rank."""
    return np.apply_along_axis(stats.rankdata, -1, x)


def delong_covariance(outcome, scores) -> tuple[np.ndarray, np.ndarray]:
    """AUCs of one or more scores and their DeLong covariance matrix (Sun & Xu 2014).

    Parameters
    ----------
    outcome : (N,) array_like of bool
        True for a positive case.
    scores : (K, N) or (N,) array_like of float
        Higher score = more likely positive.

    Returns
    -------
    auc : (K,) ndarray
    covariance : (K, K) ndarray
        ``S10 / m + S01 / n`` of the placement values (m positives, n negatives).
    """
    outcome = np.asarray(outcome, dtype=bool)
    scores = np.atleast_2d(np.asarray(scores, dtype=float))
    pos, neg = scores[:, outcome], scores[:, ~outcome]
    m, n = pos.shape[1], neg.shape[1]
    if m < 2 or n < 2:
        raise ValueError(f"DeLong needs at least 2 positive and 2 negative cases, got {m} and {n}")
    rank_all = _midranks(np.concatenate([pos, neg], axis=1))
    rank_pos, rank_neg = _midranks(pos), _midranks(neg)
    auc = rank_all[:, :m].sum(axis=1) / (m * n) - (m + 1) / (2.0 * n)
    v10 = (rank_all[:, :m] - rank_pos) / n  # per positive: share of negatives scored below it
    v01 = 1.0 - (rank_all[:, m:] - rank_neg) / m  # per negative: share of positives scored above it
    covariance = np.atleast_2d(np.cov(v10)) / m + np.atleast_2d(np.cov(v01)) / n
    return auc, covariance


def _resolve(direction: Direction, outcome: np.ndarray, values: np.ndarray) -> Direction:
    if direction is not Direction.auto:
        return direction
    lower = np.median(values[outcome]) < np.median(values[~outcome])
    return Direction.lower if lower else Direction.higher


def _signed(values: np.ndarray, direction: Direction) -> np.ndarray:
    return -values if direction is Direction.lower else values


def roc_analysis(outcome, values, *, direction: Direction | str = Direction.auto,
                 ci_level: float = 0.95) -> RocResult:
    """AUC with DeLong CI and the Youden-optimal cut-off of ``values`` for ``outcome``.

    Parameters
    ----------
    outcome : (N,) array_like of bool
    values : (N,) array_like of float
        The predictor in its own unit (e.g. vBMD in mg/cm3); no NaN.
    direction : Direction or str
        lower / higher / auto (from the group medians, as pROC does).
    ci_level : float
        Coverage of the confidence interval (normal approximation on the DeLong SE).

    Returns
    -------
    RocResult
        Youden's J = sensitivity + specificity - 1 is maximised over the observed values;
        ties go to the first cut-off on the curve (the strictest).
    """
    from sklearn.metrics import roc_curve

    outcome = np.asarray(outcome, dtype=bool)
    values = np.asarray(values, dtype=float)
    direction = _resolve(Direction(direction), outcome, values)
    score = _signed(values, direction)
    auc, cov = delong_covariance(outcome, score)
    se = float(np.sqrt(cov[0, 0]))
    half = float(stats.norm.ppf(0.5 + ci_level / 2)) * se
    fpr, tpr, thresholds = roc_curve(outcome, score, drop_intermediate=False)
    best = int(np.argmax(tpr - fpr))
    return RocResult(
        auc=float(auc[0]), auc_ci_low=float(max(0.0, auc[0] - half)), auc_ci_high=float(min(1.0, auc[0] + half)),
        auc_se=se, cutoff=float(_signed(np.array([thresholds[best]]), direction)[0]),
        sensitivity=float(tpr[best]), specificity=float(1.0 - fpr[best]), direction=direction,
        n_positive=int(outcome.sum()), n_negative=int((~outcome).sum()), fpr=fpr, tpr=tpr,
    )


def compare_aucs(outcome, values_1, values_2, *, direction: Direction | str = Direction.auto,
                 ci_level: float = 0.95) -> AucComparison:
    """DeLong test of the AUCs of two predictors measured on the same cases.

    Each predictor's direction is resolved on its own (``auto``) or fixed for both.
    """
    outcome = np.asarray(outcome, dtype=bool)
    signed = [_signed(v, _resolve(Direction(direction), outcome, v))
              for v in (np.asarray(values_1, float), np.asarray(values_2, float))]
    auc, cov = delong_covariance(outcome, np.vstack(signed))
    diff = float(auc[0] - auc[1])
    se = float(np.sqrt(max(cov[0, 0] + cov[1, 1] - 2 * cov[0, 1], 0.0)))
    z = diff / se if se > 0 else 0.0
    half = float(stats.norm.ppf(0.5 + ci_level / 2)) * se
    return AucComparison(auc_1=float(auc[0]), auc_2=float(auc[1]), difference=diff, ci_low=diff - half,
                         ci_high=diff + half, z=float(z), p_value=float(2 * stats.norm.sf(abs(z))))
