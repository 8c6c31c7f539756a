"""Calibration fits: the published Mindways worked example, the linear model and the R^2 gates."""

import numpy as np
import pytest

from bmdpipe.calibrate.models import fit_linear, fit_quality_warnings, fit_two_component
from bmdpipe.errors import CalibrationError

# science.md: certificate of one Mindways Model 3 CT phantom and the published worked example
K2HPO4 = [-51.83, -53.40, 58.88, 157.05, 375.83]
WATER = [1012.25, 1056.95, 1103.57, 1119.52, 923.20]
ROD_HU = [-69.549, -35.378, 176.712, 345.738, 462.936]


def _sig4(x):
    return float(f"{x:.4g}")


def test_worked_example_reproduced_to_4_significant_digits():
    """sigma_ref 1.46696, beta_ref -1009.750, sigma_CT 1.24956, beta_CT -10.150, r 0.999853."""
    f = fit_two_component(ROD_HU, K2HPO4, WATER)
    assert _sig4(f.details["sigma_ref"]) == _sig4(1.46696)
    assert _sig4(f.details["beta_ref"]) == _sig4(-1009.750)
    assert _sig4(f.slope_hu_per_mg_cm3) == _sig4(1.24956)
    assert _sig4(f.intercept_hu) == _sig4(-10.150)
    assert _sig4(f.details["r"]) == _sig4(0.999853)
    assert f.r2 == pytest.approx(0.999853**2, abs=1e-6)


def test_worked_example_order_does_not_matter():
    """Fitting is independent of rod order."""
    p = [4, 2, 0, 3, 1]
    f = fit_two_component(np.take(ROD_HU, p), np.take(K2HPO4, p), np.take(WATER, p))
    assert f.slope_hu_per_mg_cm3 == pytest.approx(1.24956, abs=2e-5)


def test_residuals_are_measured_minus_fitted():
    """Residuals sum to zero and equal HU - water - (sigma_ref K + beta_ref)."""
    f = fit_two_component(ROD_HU, K2HPO4, WATER)
    expect = np.array(ROD_HU) - np.array(WATER) - (f.details["sigma_ref"] * np.array(K2HPO4) + f.details["beta_ref"])
    np.testing.assert_allclose(f.residuals_hu, expect, atol=1e-9)
    assert abs(f.residuals_hu.sum()) < 1e-8


def test_linear_fit_recovers_exact_line():
    """A noise-free HA line gives slope/intercept exactly and R^2 = 1."""
    ha = np.array([0, 100, 200, 400, 600, 800.0])
    f = fit_linear(-12.0 + 1.07 * ha, ha)
    assert f.slope_hu_per_mg_cm3 == pytest.approx(1.07)
    assert f.intercept_hu == pytest.approx(-12.0)
    assert f.r2 == pytest.approx(1.0)


def test_gates_warn_and_refuse():
    """Warn below 0.98, refuse below 0.90 with a message naming R^2."""
    assert fit_quality_warnings(0.99) == []
    w = fit_quality_warnings(0.95)
    assert len(w) == 1 and "0.9500" in w[0]
    with pytest.raises(CalibrationError, match="R\\^2 = 0.8500"):
        fit_quality_warnings(0.85)


def test_negative_slope_refused():
    """Mis-assigned rods (HU falling with density) are refused, not silently fitted."""
    with pytest.raises(CalibrationError, match="non-positive slope"):
        fit_linear([300.0, 200.0, 100.0], [0.0, 100.0, 200.0])
