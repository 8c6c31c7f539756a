"""Phantomless calibration on synthetic cases whose tissue HU follow the attenuation tables."""

import numpy as np
import pytest

from bmdpipe.calibrate.attenuation import hu_of, mineral_slope_hu_per_mg_cm3
from bmdpipe.calibrate.internal import calibrate_internal, fit_effective_energy
from bmdpipe.errors import CalibrationError
from bmdpipe.synthetic import CaseSpec, make_case


def test_effective_energy_recovered_from_exact_tissue_hu():
    """Ideal tissue HU at 67 keV with gain 1.01 and offset -3 HU give back E, a and b."""
    kev, a, b = 67.0, -3.0, 1.01
    hu = {t: a + b * hu_of(t, kev) for t in ("air", "fat", "muscle", "blood")}
    e, a2, b2, rms = fit_effective_energy(hu)
    assert e == pytest.approx(kev, abs=0.25)
    assert a2 == pytest.approx(a, abs=0.5) and b2 == pytest.approx(b, abs=2e-3)
    assert rms < 0.5


def test_too_few_tissues_refused():
    with pytest.raises(CalibrationError, match="at least 3 reference tissues"):
        fit_effective_energy({"air": -1000.0, "fat": -90.0})


@pytest.mark.parametrize("seed,kev", [(21, 62.0), (22, 76.0)])
def test_internal_calibration_on_consistent_synthetic_case(seed, kev):
    """Scanner physically consistent (bone slope = the K2HPO4 slope at the case's keV, intercept = water):
    tissues air/fat/muscle are found with their true HU and the density at 150 mg/cm3 is within 5 %."""
    slope = mineral_slope_hu_per_mg_cm3("K2HPO4", kev)
    case = make_case(seed, CaseSpec(phantom=None, spacing_mm=(2.5, 1.0, 1.0), kev=kev,
                                    slope_hu_per_mg_cm3=slope, intercept_hu=0.0))
    cal = calibrate_internal(case.volume)
    th = case.truth.scanner.tissue_hu
    refs = {r.name: r.hu_mean for r in cal.references}
    assert set(refs) >= {"air", "fat", "muscle"}
    assert refs["fat"] == pytest.approx(th["fat"], abs=2.0)
    assert refs["muscle"] == pytest.approx(th["muscle"], abs=2.0)
    assert refs["air"] == pytest.approx(th["air"], abs=3.0)
    assert cal.method == "internal" and cal.phantom == "internal"
    assert cal.details["kev"] == pytest.approx(kev, abs=2.0)
    err = float(cal.density(0.0 + slope * 150.0) - 150.0) / 150.0
    assert abs(err) < 0.05
