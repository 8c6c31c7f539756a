"""Edge-spread model of a blurred (threaded, clipped) metal cylinder."""

import numpy as np
import pytest
from scipy import integrate

from bmdpipe.screws.esf import fit_edge_spread, step, threaded_step


@pytest.mark.parametrize("radius,sigma", [(3.25, 0.5), (2.5, 0.8), (1.0, 0.3)])
def test_disk_step_is_gaussian_mass_on_disk(radius, sigma):
    """The blurred disk is the mass of the 2-D Gaussian N(r, sigma^2 I) on the disk |x| <= R, integrated
    numerically over the disk in polar coordinates (independent of the closed form used)."""
    r = np.linspace(0.0, 8.0, 17)

    def mass(ri: float) -> float:
        density = lambda phi, rho: rho * np.exp(-(rho**2 + ri**2 - 2 * rho * ri * np.cos(phi)) / (2 * sigma**2))
        return integrate.dblquad(density, 0.0, radius, 0.0, 2 * np.pi, epsabs=1e-12)[0] / (2 * np.pi * sigma**2)

    np.testing.assert_allclose(step(r, radius, sigma), [mass(ri) for ri in r], atol=1e-8)
    # several disks at once broadcast like one at a time
    radii = np.array([[1.0], [radius]])
    np.testing.assert_array_equal(step(r[None], radii, sigma), [step(r, 1.0, sigma), step(r, radius, sigma)])


def test_threaded_step_without_threads_is_disk():
    r = np.linspace(0.0, 6.0, 25)
    np.testing.assert_allclose(threaded_step(r, 3.0, 0.0, 0.5), step(r, 3.0, 0.5))
    # mean metal fraction of a triangular thread of depth 0.9 is 1/2 at mid-depth (sharp blur)
    assert threaded_step(np.array([3.0 - 0.45]), 3.0, 0.9, 0.01)[0] == pytest.approx(0.5, abs=0.02)


def _voxels(radius, sigma, amp, bg, clip, n=20000, seed=0):
    rng = np.random.default_rng(seed)
    r = rng.uniform(0.0, 9.0, n)
    y = bg + amp * step(r, radius, sigma) + rng.normal(0.0, 15.0, n)
    if clip is not None:
        y = np.minimum(y, clip)
    return r, y


def test_fit_recovers_radius_extended_scale():
    """Extended HU scale: radius, blur and amplitude are all recovered."""
    r, y = _voxels(3.1, 0.55, 6300.0, 200.0, None)
    f = fit_edge_spread(r, y, clip_hu=None)
    assert f.radius_mm == pytest.approx(3.1, abs=0.05)
    assert f.sigma_mm == pytest.approx(0.55, abs=0.05)
    assert f.amplitude_hu == pytest.approx(6300.0, rel=0.03)


def test_fit_recovers_radius_through_saturation():
    """Clipped at 3071 HU the half-height point is hidden; the tail still pins the true radius,
    whereas a half-maximum of the clipped profile would say the screw is wider (blooming)."""
    r, y = _voxels(3.1, 0.55, 6300.0, 200.0, 3071.0)
    f = fit_edge_spread(r, y, clip_hu=3071.0, metal_hu_prior=6500.0)
    assert f.radius_mm == pytest.approx(3.1, abs=0.08)
    naive = r[y >= 0.5 * (3071.0 + 200.0)].max()
    assert naive > 3.1 + 0.3  # the bloom that the fit removes


def test_fitted_background_keeps_the_blur_next_to_a_halo():
    """A 1.5 mm lucent band (30 HU) around the metal in 200-HU bone, clipped at 3071 HU: taking the
    outer bone for the background makes the fitted blur too narrow; fitting the background
    between lucent tissue and bone recovers the true blur and the halo's level."""
    rng = np.random.default_rng(3)
    R, sigma, metal, bone, lucent = 3.25, 0.5, 6500.0, 200.0, 30.0
    r = rng.uniform(0.0, 9.0, 40000)
    # tissue: lucent out to R + 1.5, then bone; blurred metal on top (1-D band edge is enough here)
    tissue = bone + (lucent - bone) * step(r, R + 1.5, sigma)
    y = np.minimum(tissue + (metal - lucent) * step(r, R, sigma) + rng.normal(0.0, 15.0, r.size), 3071.0)
    fixed = fit_edge_spread(r, y, clip_hu=3071.0, fixed_radius_mm=R)
    free = fit_edge_spread(r, y, clip_hu=3071.0, fixed_radius_mm=R, background_bounds_hu=(0.0, 230.0))
    assert fixed.sigma_mm < sigma - 0.04
    assert free.sigma_mm == pytest.approx(sigma, abs=0.03)
    assert free.background_hu == pytest.approx(lucent, abs=40.0)
    # a known blur is kept
    assert fit_edge_spread(r, y, clip_hu=3071.0, fixed_radius_mm=R, fixed_sigma_mm=0.47).sigma_mm == pytest.approx(0.47, abs=1e-3)


def test_metal_fraction_is_the_axially_blurred_mean_of_phase_disks():
    """Independent computation: one disk per thread phase (16 over a pitch, triangular tooth),
    each phase the Gaussian-weighted mean (SD sigma, periodic over the pitch) of the phase disks."""
    from bmdpipe.screws.esf import N_THREAD_PHASES, metal_fraction

    r = np.linspace(0.0, 6.0, 61)
    crest, depth, pitch, sigma = 3.2, 0.8, 2.8, 0.45
    t = (np.arange(N_THREAD_PHASES) + 0.5) / N_THREAD_PHASES * pitch
    x = crest - depth + depth * (1.0 - 2.0 * np.abs(t / pitch - 0.5))
    disks = np.array([step(r, xi, sigma) for xi in x])
    expected = []
    for ti in t:
        d = (t - ti + 0.5 * pitch) % pitch - 0.5 * pitch
        w = np.exp(-0.5 * (d / sigma) ** 2)
        expected.append(w @ disks / w.sum())
    np.testing.assert_allclose(metal_fraction(r, crest, sigma, depth, pitch), np.array(expected), atol=1e-12)
    np.testing.assert_array_equal(metal_fraction(r, crest, sigma), step(r, crest, sigma)[None])


@pytest.mark.parametrize("td", [0.0, 0.8])
def test_cached_shaft_model_equals_the_model(td):
    """The fit's model reuses the metal blur while only amplitude/background change; after any change
    of radius or blur (also back to an earlier value) it must equal a fresh evaluation exactly."""
    from bmdpipe.screws.esf import _model, _ShaftModel

    r = np.linspace(0.0, 7.0, 141)
    model = _ShaftModel(r, 3071.0, td, 2.8)
    params = [(3.0, 0.5, 6000, 200, 0, 0), (3.0, 0.5, 6100, 180, 0, 0), (3.1, 0.5, 6100, 180, 0, 0),
              (3.1, 0.6, 6100, 180, 0, 0), (3.0, 0.5, 5900, 220, 0, 0), (3.0, 0.5, 5900, 220, 300, 0.8)]
    for p in params:
        np.testing.assert_array_equal(model(p), _model(p, r, 3071.0, td, 2.8))
