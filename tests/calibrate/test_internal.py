"""Phantomless calibration on synthetic cases whose tissue HU follow the attenuation tables."""

import numpy as np
import pytest

from bmdpipe.calibrate.attenuation import effective_energy_of_slope, hu_of, mineral_slope_hu_per_mg_cm3
from bmdpipe.calibrate import calibrate_with_phantom, load_phantom
from bmdpipe.calibrate.internal import (_tissue_masks, calibrate_internal, energy_prior, fit_effective_energy,
                                        fit_tissues, precalibration_kev, slope_uncertainty)
from bmdpipe.config import CalibrationSettings
from bmdpipe.errors import CalibrationError
from bmdpipe.results import Calibration, Material
from bmdpipe.synthetic import CaseSpec, make_case
from bmdpipe.synthetic.tissue import TISSUE


def _error_at_150(cal, scanner) -> float:
    return float(cal.density(scanner.intercept_hu + scanner.slope_hu_per_mg_cm3 * 150.0)) / 150.0 - 1.0


def test_effective_energy_recovered_from_exact_tissue_hu():
    """Ideal tissue HU at 67 keV with gain 1.01 and offset -3 HU give back E, a and b."""
    kev, a, b = 67.0, -3.0, 1.01
    hu = {t: a + b * hu_of(t, kev) for t in ("air", "fat", "muscle", "blood")}
    fit = fit_effective_energy(hu)
    assert fit.kev == pytest.approx(kev, abs=0.25)
    assert fit.a_hu == pytest.approx(a, abs=0.5) and fit.b == pytest.approx(b, abs=2e-3)
    assert fit.rms_hu < 0.5


def test_too_few_tissues_refused():
    with pytest.raises(CalibrationError, match="at least 3 reference tissues"):
        fit_effective_energy({"air": -1000.0, "fat": -90.0})


def test_regularised_fit_on_exact_tissue_hu_stays_near_truth():
    """With the default priors (E ~ N(70, 6) keV, a ~ N(0, 5) HU, b ~ N(1, 0.01)) exact table HU at 62
    and 76 keV are pulled towards 70 keV by less than 2.5 keV (cost of the energy prior)."""
    s = CalibrationSettings()
    sd = {"air": s.internal_air_sd_hu, "fat": s.internal_tissue_sd_hu, "muscle": s.internal_tissue_sd_hu,
          "blood": s.internal_blood_sd_hu}
    for kev in (62.0, 76.0):
        hu = {t: 2.0 + 0.995 * hu_of(t, kev) for t in sd}
        fit = fit_effective_energy(hu, tissue_sd_hu=sd, offset_prior_sd_hu=s.internal_offset_prior_sd_hu,
                                   gain_prior_sd=s.internal_gain_prior_sd, kev_prior=s.internal_kev_prior_kev,
                                   kev_prior_sd_kev=s.internal_kev_prior_sd_kev)
        e = fit.kev
        assert abs(e - kev) < 2.5 and (e - kev) * (70.0 - kev) >= 0  # pulled towards the prior, not away
        assert fit.a_hu == pytest.approx(2.0, abs=3.0) and fit.b == pytest.approx(0.995, abs=0.01)


def test_priors_damp_a_fat_deviation():
    """Fat 6 HU below the table at 70 keV: the exactly determined 3-tissue fit moves E ~5 keV (fat is the
    only tissue sensitive to E, ~1 HU/keV); blood plus the priors reduce that, but cannot remove it."""
    kev = 70.0
    hu = {t: hu_of(t, kev) for t in ("air", "fat", "muscle", "blood")}
    hu["fat"] -= 6.0
    sd = {"air": 1.0, "fat": 3.0, "muscle": 3.0, "blood": 3.0}
    e0 = fit_effective_energy({k: hu[k] for k in ("air", "fat", "muscle")}).kev
    e1 = fit_effective_energy(hu, tissue_sd_hu=sd, offset_prior_sd_hu=5.0, gain_prior_sd=0.01,
                              kev_prior=70.0, kev_prior_sd_kev=6.0).kev
    assert kev - e0 > 4.0
    assert e0 < e1 < kev


@pytest.mark.parametrize("seed", [21, 22])
def test_internal_calibration_on_generator_case(seed):
    """Generator-default case (random keV 64-76, gain, offset, tissue deviations N(0, 3 HU), blood
    N(0, 8 HU)): the tissues air/fat/muscle/blood are found with their true HU (within 2 HU), the
    calibration equals the fit of the TRUE tissue HU within 3 % (measurement error), and the density
    at 150 mg/cm3 is within 15 %."""
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
    kev_prior, kev_prior_sd = energy_prior(s, kvp=case.volume.meta.kvp)
    fit = fit_tissues({t: th[t] for t in refs}, s, kev_prior=kev_prior, kev_prior_sd_kev=kev_prior_sd)
    slope_true_hu = fit.b * mineral_slope_hu_per_mg_cm3("K2HPO4", fit.kev)
    assert cal.slope_hu_per_mg_cm3 == pytest.approx(slope_true_hu, rel=0.03)
    err = _error_at_150(cal, sc)
    assert abs(err) < 0.15


@pytest.mark.parametrize("seed", [21, 22])
def test_internal_calibration_when_tissues_follow_the_tables(seed):
    """Random effective energy, gain, offset, noise and blur, but fat, muscle and blood exactly as the
    attenuation tables predict (tissue_sd_hu = blood_sd_hu = 0): the effective energy is recovered within 2.5 keV and the
    density at 150 mg/cm3 within 4 % (the energy prior costs up to ~3 % at the ends of 64-76 keV).
    The fit's own uncertainty is reported (1-10 %: it assumes 3 HU tissue deviations)."""
    case = make_case(seed, CaseSpec(phantom=None, spacing_mm=(2.5, 1.0, 1.0), tissue_sd_hu=0.0, blood_sd_hu=0.0))
    sc = case.truth.scanner
    cal = calibrate_internal(case.volume)
    assert cal.details["kev"] == pytest.approx(sc.kev, abs=2.5)
    err = _error_at_150(cal, sc)
    assert abs(err) < 0.04
    assert 0.01 < cal.details["density_uncertainty_fraction"] < 0.10


def test_posterior_widens_without_the_energy_sensitive_tissue():
    """Fat carries the information on the energy: without it (air, muscle, blood only) the posterior
    over E is the prior's (~6 keV); with it, clearly narrower; the slope uncertainty follows."""
    s = CalibrationSettings()
    kw = dict(offset_prior_sd_hu=5.0, gain_prior_sd=0.01, kev_prior=70.0, kev_prior_sd_kev=6.0)
    hu = {t: hu_of(t, 68.0) for t in ("air", "fat", "muscle", "blood")}
    sd = {"air": 1.0, "fat": 3.0, "muscle": 3.0, "blood": 3.0}
    with_fat = fit_effective_energy(hu, tissue_sd_hu=sd, **kw)
    without = fit_effective_energy({k: v for k, v in hu.items() if k != "fat"}, tissue_sd_hu=sd, **kw)
    assert without.kev_sd > 5.0 and with_fat.kev_sd < 0.7 * without.kev_sd
    assert slope_uncertainty(with_fat, "K2HPO4") < slope_uncertainty(without, "K2HPO4")
    assert s.internal_max_uncertainty_percent > 100 * slope_uncertainty(with_fat, "K2HPO4")


def test_sampled_regions_lie_in_their_tissue():
    """The QC outlines (one slice) fall in the tissue they are named after (generator truth), and no fat
    is sampled in the phantom under the back (a rod there has fat-like HU)."""
    case = make_case(23, CaseSpec(phantom="mindways", spacing_mm=(2.5, 1.0, 1.0)))
    cal = calibrate_internal(case.volume)
    o = cal.outlines
    truth = case.truth.tissue[o.slice_index]
    code = {"air": TISSUE["air"], "fat": TISSUE["fat"], "muscle": TISSUE["soft_tissue"], "blood": TISSUE["blood"]}
    for i, r in enumerate(cal.references):
        m = o.labels == i + 1
        assert m.sum() > 20, r.name
        assert np.mean(truth[m] == code[r.name]) > 0.97, r.name
    phantom = np.isin(case.truth.tissue, [TISSUE["phantom_rod"], TISSUE["phantom_body"]])[o.slice_index]
    assert not (phantom & (o.labels > 0)).any()


@pytest.mark.parametrize("psoas_min_mm3,region", [(2000.0, "psoas"), (1e12, "paraspinal")])
def test_muscle_is_the_psoas_else_the_paraspinal_muscles(psoas_min_mm3, region):
    """Over the whole volume (not one QC slice), >= 97 % of the muscle mask is generator soft tissue. By
    default it is the psoas: >= 99 % of it 20-55 mm left or right of the true spine's midline on its
    slice, mostly in front of the spine's centre; when no psoas qualifies (here: a minimum volume no
    case reaches) the paraspinal muscles: >= 99 % behind the spine's centre."""
    case = make_case(24, CaseSpec(phantom=None, spacing_mm=(2.5, 1.0, 1.0)))
    s = CalibrationSettings(internal_psoas_min_mm3=psoas_min_mm3)
    _, masks, step, found = _tissue_masks(case.volume, s)
    assert found == region
    m = masks["muscle"]
    truth = case.truth.tissue[::step[0], ::step[1], ::step[2]]
    assert np.mean(truth[m] == TISSUE["soft_tissue"]) >= 0.97
    bone = np.isin(truth, [TISSUE["cancellous"], TISSUE["cortex"]])
    kji = np.argwhere(m)
    lps = case.volume.index_to_lps((kji * step).astype(float))
    lateral, behind = np.full(len(kji), np.nan), np.full(len(kji), np.nan)
    for k in np.unique(kji[:, 0]):  # against the true spine (bone voxels) on the same slice
        ji = np.argwhere(bone[k]) * step[1:]
        if len(ji):
            spine = case.volume.index_to_lps(np.column_stack([np.full(len(ji), k * step[0]), ji]).astype(float))
            on = kji[:, 0] == k
            lateral[on] = np.abs(lps[on, 0] - np.median(spine[:, 0]))
            behind[on] = lps[on, 1] - np.median(spine[:, 1])
    seen = ~np.isnan(lateral)
    if region == "psoas":  # beside the bodies: 25-50 mm out (5 mm for the midline's estimate), not behind the spine
        assert np.mean((lateral[seen] >= 20.0) & (lateral[seen] <= 55.0)) >= 0.99
        assert np.median(behind[seen]) < 0.0
    else:
        assert np.mean(behind[seen] > 0.0) >= 0.99


def test_qc_plot_outlines_every_tissue():
    """The phantomless QC figure: tissue HU against the tables at the fitted energy (panel 1) and one
    outline per sampled tissue on the slice of ``cal.outlines`` (panel 3)."""
    from bmdpipe.report.calibration_plot import plot_calibration

    case = make_case(24, CaseSpec(phantom=None, spacing_mm=(2.5, 1.0, 1.0)))
    cal = calibrate_internal(case.volume)
    fig = plot_calibration(cal, case.volume)
    ax1, _, ax3 = fig.axes[:3]
    assert f"{cal.details['kev']:.1f} keV" in ax1.get_title()
    assert len(ax1.lines[0].get_xdata()) == cal.n_references
    assert len(ax3.collections) == cal.n_references  # one contour set per tissue
    assert str(cal.outlines.slice_index) in ax3.get_title()


def test_precalibration_with_a_phantom_scan_of_the_same_scanner():
    """Seed 103 has fat 7 HU below the tables: alone, the phantomless fit is >10 % off at 150 mg/cm3 (the
    tissues cannot tell; see the internal-oracle bench suite). A Mindways scan of the same scanner (same
    effective energy, another day's gain/offset/noise) gives the energy within 1 keV; anchored by it, the
    same series is within 8 %, less than half the error, and reports a smaller own uncertainty."""
    spacing = (2.0, 0.8, 0.8)
    case = make_case(103, CaseSpec(phantom=None, spacing_mm=spacing))
    sc = case.truth.scanner
    scan = make_case(10_103, CaseSpec(phantom="mindways", levels=("L4",), spacing_mm=spacing, kev=sc.kev))
    phantom_cal = calibrate_with_phantom(scan.volume, load_phantom("mindways-model3-ct"))
    kev = precalibration_kev(phantom_cal)
    assert kev == pytest.approx(sc.kev, abs=1.0)

    plain = calibrate_internal(case.volume)
    anchored = calibrate_internal(case.volume, scanner_kev=kev)
    assert abs(_error_at_150(plain, sc)) > 0.10
    assert abs(_error_at_150(anchored, sc)) < min(0.08, 0.5 * abs(_error_at_150(plain, sc)))
    assert anchored.details["precalibrated_kev"] == kev and anchored.details["kev_prior"] == kev
    assert anchored.details["density_uncertainty_fraction"] < plain.details["density_uncertainty_fraction"]


def test_precalibration_energy_of_older_or_converted_files():
    """Without a stored energy the slope gives it, an HA-equivalent conversion undone first; a phantomless
    calibration cannot pre-calibrate."""
    slope = 1.1 * mineral_slope_hu_per_mg_cm3("K2HPO4", 72.0)
    cal = Calibration(method="phantom", phantom="mindways-model3-ct", material=Material.HA,
                      slope_hu_per_mg_cm3=slope * 0.83, intercept_hu=0.0, r2=1.0, n_references=5,
                      details={"ha_conversion": {"from": "K2HPO4", "factor_k2hpo4_per_ha": 0.83}})
    # gain 1 assumed: a 10 % steeper slope reads as a lower energy (the slope falls ~2 %/keV)
    assert precalibration_kev(cal) == pytest.approx(effective_energy_of_slope("K2HPO4", slope))
    assert 66.0 < precalibration_kev(cal) < 69.5
    stored = Calibration(method="phantom", phantom="x", material=Material.K2HPO4, slope_hu_per_mg_cm3=slope,
                         intercept_hu=0.0, r2=1.0, n_references=5, details={"kev": 71.5})
    assert precalibration_kev(stored) == 71.5
    with pytest.raises(CalibrationError, match="needs a phantom calibration"):
        precalibration_kev(Calibration(method="internal", phantom="internal", material=Material.K2HPO4,
                                       slope_hu_per_mg_cm3=1.3, intercept_hu=0.0, r2=None, n_references=4))
