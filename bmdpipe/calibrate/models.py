"""Calibration models: the Mindways two-component model and the linear (HA phantom) model.

Both reduce to ``HU = intercept + slope * density`` for tissue. Pure functions on arrays.

References
----------
Mindways QCT Pro user guide v5.0 (two-component K2HPO4 + water model, tissue offsets
0.2174 and 999.6); fit-quality gates R^2 0.98 (warn) and 0.90 (refuse), common practice
(science.md).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ..errors import CalibrationError

__all__ = ["FitResult", "fit_two_component", "fit_linear", "fit_quality_warnings"]


@dataclass(frozen=True)
class FitResult:
    """Outcome of a calibration fit.

    Attributes
    ----------
    model : str
        ``'two-component'`` or ``'linear'``.
    slope_hu_per_mg_cm3, intercept_hu : float
        Tissue calibration (sigma_CT / beta_CT for the two-component model).
    r2 : float
        Coefficient of determination of the fitted regression.
    residuals_hu : (N,) ndarray
        Measured minus fitted HU per reference, in input order.
    details : dict
        Model parameters (sigma_ref, beta_ref, r, ...).
    """

    model: str
    slope_hu_per_mg_cm3: float
    intercept_hu: float
    r2: float
    residuals_hu: np.ndarray
    details: dict = field(default_factory=dict)


def _ols(x: np.ndarray, y: np.ndarray) -> tuple[float, float, float, np.ndarray]:
    """Ordinary least squares ``y = a + b x``; returns (b, a, r2, residuals)."""
    xm, ym = x.mean(), y.mean()
    sxx = float(np.sum((x - xm) ** 2))
    if sxx <= 0:
        raise CalibrationError("calibration references all have the same nominal density; a fit needs at least two distinct densities")
    b = float(np.sum((x - xm) * (y - ym)) / sxx)
    a = float(ym - b * xm)
    res = y - (a + b * x)
    syy = float(np.sum((y - ym) ** 2))
    r2 = 1.0 - float(np.sum(res**2)) / syy if syy > 0 else 0.0
    return b, a, r2, res


def _validate(name: str, *arrays: np.ndarray) -> None:
    n = arrays[0].shape
    for a in arrays:
        if a.ndim != 1 or a.shape != n:
            raise ValueError(f"{name}: inputs must be 1-D arrays of equal length, got shapes {[x.shape for x in arrays]}")
        if not np.all(np.isfinite(a)):
            raise ValueError(f"{name}: inputs must be finite")
    if n[0] < 2:
        raise CalibrationError(f"{name}: a calibration fit needs at least 2 references, got {n[0]}")


def fit_two_component(
    hu,
    k2hpo4_mg_cm3,
    water_mg_cm3,
    *,
    sigma_offset: float = 0.2174,
    beta_offset: float = 999.6,
) -> FitResult:
    """Mindways two-component (K2HPO4 + water) calibration.

    Fits ``HU_rod - water_rod = sigma_ref * K2HPO4_rod + beta_ref`` over the rods, then
    ``sigma_CT = sigma_ref - sigma_offset`` and ``beta_CT = beta_ref + beta_offset``.

    Parameters
    ----------
    hu : (N,) array_like
        Mean HU of each rod.
    k2hpo4_mg_cm3, water_mg_cm3 : (N,) array_like
        Certificate K2HPO4 and water concentrations of each rod, mg/cm3.
    sigma_offset, beta_offset : float
        Tissue conversion offsets (QCT Pro user guide v5.0: 0.2174 and 999.6).

    Returns
    -------
    FitResult
        slope = sigma_CT (HU per mg/cm3 K2HPO4), intercept = beta_CT (HU); ``r2`` is the R^2
        of the reference regression; details hold sigma_ref, beta_ref and r.

    Examples
    --------
    The published worked example (science.md):

    >>> f = fit_two_component([-69.549, -35.378, 176.712, 345.738, 462.936],
    ...                       [-51.83, -53.40, 58.88, 157.05, 375.83],
    ...                       [1012.25, 1056.95, 1103.57, 1119.52, 923.20])
    >>> round(f.details["sigma_ref"], 5), round(f.intercept_hu, 3)
    (1.46696, -10.15)
    """
    h = np.asarray(hu, dtype=float)
    k = np.asarray(k2hpo4_mg_cm3, dtype=float)
    w = np.asarray(water_mg_cm3, dtype=float)
    _validate("two-component fit", h, k, w)
    sigma_ref, beta_ref, r2, res = _ols(k, h - w)
    r = float(np.sign(sigma_ref) * np.sqrt(max(r2, 0.0)))
    sigma_ct = sigma_ref - sigma_offset
    beta_ct = beta_ref + beta_offset
    if sigma_ct <= 0:
        raise CalibrationError(
            f"two-component fit gives a non-positive tissue slope sigma_CT = {sigma_ct:.4f} HU per mg/cm3; "
            "the rods were probably mis-assigned or not measured: check the phantom definition and the QC plot"
        )
    return FitResult(
        model="two-component",
        slope_hu_per_mg_cm3=float(sigma_ct),
        intercept_hu=float(beta_ct),
        r2=float(r2),
        residuals_hu=res,
        details={"sigma_ref": float(sigma_ref), "beta_ref": float(beta_ref), "r": r,
                 "sigma_CT": float(sigma_ct), "beta_CT": float(beta_ct)},
    )


def fit_linear(hu, mineral_mg_cm3) -> FitResult:
    """Linear calibration ``HU = intercept + slope * density`` (HA phantoms).

    Parameters
    ----------
    hu : (N,) array_like
        Mean HU of each rod / insert.
    mineral_mg_cm3 : (N,) array_like
        Nominal mineral density (mg HA/cm3) of each rod.
    """
    h = np.asarray(hu, dtype=float)
    m = np.asarray(mineral_mg_cm3, dtype=float)
    _validate("linear fit", h, m)
    slope, intercept, r2, res = _ols(m, h)
    if slope <= 0:
        raise CalibrationError(
            f"linear calibration fit gives a non-positive slope {slope:.4f} HU per mg/cm3; "
            "the rods were probably mis-assigned: check the phantom definition and the QC plot"
        )
    r = float(np.sqrt(max(r2, 0.0)))
    return FitResult(model="linear", slope_hu_per_mg_cm3=float(slope), intercept_hu=float(intercept),
                     r2=float(r2), residuals_hu=res, details={"r": r})


def fit_quality_warnings(r2: float, *, warn: float = 0.98, refuse: float = 0.90, what: str = "calibration") -> list[str]:
    """Apply the R^2 gates: raise below ``refuse``, return a warning below ``warn``.

    Raises
    ------
    CalibrationError
        When ``r2 < refuse``.
    """
    if not np.isfinite(r2) or r2 < refuse:
        raise CalibrationError(
            f"{what} fit R^2 = {r2:.4f} is below the refusal gate {refuse}: the rods do not follow a "
            "straight line. Check that the right phantom definition was given (--phantom), that no rod is "
            "hidden by metal or streaks, and look at the calibration QC plot"
        )
    if r2 < warn:
        return [f"{what} fit R^2 = {r2:.4f} is below {warn}; check the calibration QC plot"]
    return []
