"""Robust statistics shared by the stages (medians and median absolute deviations)."""

from __future__ import annotations

import numpy as np

__all__ = ["MAD_TO_SD", "robust_sd"]

#: SD of a normal distribution per median absolute deviation, 1 / Phi^-1(0.75) (to 4 decimals)
MAD_TO_SD = 1.4826


def robust_sd(values: np.ndarray, center: float | None = None) -> float:
    """``MAD_TO_SD`` x the median absolute deviation of ``values`` from ``center`` (default: their
    median): the SD of normal data, unmoved by a minority of outliers (streaks, specks)."""
    v = np.asarray(values)
    c = float(np.median(v)) if center is None else center
    return MAD_TO_SD * float(np.median(np.abs(v - c)))
