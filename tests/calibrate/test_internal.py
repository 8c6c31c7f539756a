"""Phantomless calibration on synthetic cases whose tissue HU follow the attenuation tables."""

import pytest

from bmdpipe.calibrate.attenuation import hu_of, mineral_slope_hu_per_mg_cm3
from bmdpipe.calibrate.internal import calibrate_internal, fit_effective_energy
from bmdpipe.config import CalibrationSettings
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


def test_regularised_fit_on_exact_tissue_hu_stays_near_truth():
    """With the default priors (E ~ N(70, 6) keV, a ~ N(0, 5) HU, b ~ N(1, 0.01)) exact table HU at 62
    and 76 keV are pulled towards 70 keV by less than 2.5 keV (cost of the energy prior)."""
    s = CalibrationSettings()
    sd = {"air": s.internal_air_sd_hu, "fat": s.internal_tissue_sd_hu, "muscle": s.internal_tissue_sd_hu,
          "blood": s.internal_tissue_sd_hu}
    for kev in (62.0, 76.0):
        hu = {t: 2.0 + 0.995 * hu_of(t, kev) for t in sd}
        e, a, b, rms = fit_effective_energy(hu, tissue_sd_hu=sd, offset_prior_sd_hu=s.internal_offset_prior_sd_hu,
                                            gain_prior_sd=s.internal_gain_prior_sd, kev_prior=s.internal_kev_prior_kev,
                                            kev_prior_sd_kev=s.internal_kev_prior_sd_kev)
        assert abs(e - kev) < 2.5 and (e - kev) * (70.0 - kev) >= 0  # pulled towards the prior, not away
        assert a == pytest.approx(2.0, abs=3.0) and b == pytest.approx(0.995, abs=0.01)


def test_priors_damp_a_fat_deviation():
    """Fat 6 HU below the table at 70 keV: the exactly determined 3-tissue fit moves E ~5 keV (fat is the
    only tissue sensitive to E, ~1 HU/keV); blood plus the priors reduce that, but cannot remove it."""
    kev = 70.0
    hu = {t: hu_of(t, kev) for t in ("air", "fat", "muscle", "blood")}
    hu["fat"] -= 6.0
    sd = {"air": 1.0, "fat": 3.0, "muscle": 3.0, "blood": 3.0}
    e0 = fit_effective_energy({k: hu[k] for k in ("air", "fat", "muscle")})[0]
    e1 = fit_effective_energy(hu, tissue_sd_hu=sd, offset_prior_sd_hu=5.0, gain_prior_sd=0.01,
                              kev_prior=70.0, kev_prior_sd_kev=6.0)[0]
    assert kev - e0 > 4.0
    assert e0 < e1 < kev


@pytest.mark.parametrize("seed", [21, 22])
def test_internal_calibration_on_generator_case(seed):
    """Generator-default case (random keV 64-76, gain, offset, tissue deviations N(0, 3 HU)): the tissues
    air/fat/muscle/blood are found with their true HU (within 2 HU), the calibration equals the fit of the
    TRUE tissue HU within 3 % (measurement error), and the density at 150 mg/cm3 is within 15 %."""
    case = make_case(seed, CaseSpec(phantom=None, spacing_mm=(2.5, 1.0, 1.0)))
    sc = case.truth.scanner
    cal = calibrate_internal(case.volume)
    th = sc.tissue_hu
    refs = {r.name: r.hu_mean for r in cal.references}
    assert set(refs) == {"air", "fat", "muscle", "blood"}
    for name in ("fat", "muscle", "blood"):
        assert refs[name] == pytest.approx(th[name], abs=2.0), name
    assert refs["air"] == pytest.approx(th["air"], abs=3.0)
    assert cal.method == "internal" and cal.phantom == "internal"
    s = CalibrationSettings()
    sd = {t: (s.internal_air_sd_hu if t == "air" else s.internal_tissue_sd_hu) for t in refs}
    e, a, b, _ = fit_effective_energy({t: th[t] for t in refs}, kev_range=(s.internal_kev_min, s.internal_kev_max),
                                      tissue_sd_hu=sd, offset_prior_sd_hu=s.internal_offset_prior_sd_hu,
                                      gain_prior_sd=s.internal_gain_prior_sd, kev_prior=s.internal_kev_prior_kev,
                                      kev_prior_sd_kev=s.internal_kev_prior_sd_kev)
    slope_true_hu = b * mineral_slope_hu_per_mg_cm3("K2HPO4", e)
    assert cal.slope_hu_per_mg_cm3 == pytest.approx(slope_true_hu, rel=0.03)
    err = float(cal.density(sc.intercept_hu + sc.slope_hu_per_mg_cm3 * 150.0) - 150.0) / 150.0
    assert abs(err) < 0.15
