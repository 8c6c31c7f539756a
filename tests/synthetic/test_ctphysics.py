"""The projection-domain CT simulator: its numbers against attenuation tables and photon statistics."""

from __future__ import annotations

import numpy as np
import pytest

from bmdpipe.synthetic import CaseSpec, ScrewSpec, make_case
from bmdpipe.synthetic.ctphysics import (XraySpec, mass_attenuation, reference_mu_per_mm, simulate_slices,
                                         spectrum)
from bmdpipe.synthetic.tissue import TISSUE

pytest.importorskip("astra")

PX = 0.8
SMALL = XraySpec(n_views=240)


def _grid(n: int = 160):
    y, x = (np.mgrid[:n, :n] - (n - 1) / 2.0) * PX
    return y, x


def _water_body(y, x, a: float = 55.0, b: float = 40.0) -> np.ndarray:
    return ((x / a) ** 2 + (y / b) ** 2 <= 1.0).astype(np.float32)


def _disc(y, x, cy, cx, r) -> np.ndarray:
    return (y - cy) ** 2 + (x - cx) ** 2 <= r * r


def _simulate(maps: dict, xray: XraySpec = SMALL, seed: int = 0, **kw) -> np.ndarray:
    return simulate_slices({m: d[None] for m, d in maps.items()}, (PX, PX), xray, np.random.default_rng(seed), **kw)[0]


def test_water_reads_zero_and_noise_falls_with_the_square_root_of_the_photons():
    y, x = _grid()
    water = _water_body(y, x)
    centre = _disc(y, x, 0.0, 0.0, 15.0)
    low = _simulate({"water": water}, XraySpec(n_views=240, incident_photons=2.5e4))
    high = _simulate({"water": water}, XraySpec(n_views=240, incident_photons=1.0e5))
    assert abs(float(low[centre].mean())) < 3.0 and abs(float(high[centre].mean())) < 3.0
    assert abs(float(high[_disc(y, x, 0.0, 40.0, 6.0)].mean())) < 5.0  # no cupping: the water correction
    ratio = float(low[centre].std() / high[centre].std())
    # 4 x the photons: half the quantum noise (measured 1.76 at 240 views: a floor from the views)
    assert 1.6 < ratio < 2.2


def test_bone_mineral_reads_as_the_attenuation_tables_predict():
    """200 mg/cm3 hydroxyapatite in water reads between its monochromatic HU at 60 and 80 keV (the spectrum's
    effective energy for water lies between), computed here from xraydb directly."""
    y, x = _grid()
    water = _water_body(y, x)
    insert = _disc(y, x, 0.0, 0.0, 12.0)
    ha = np.where(insert, 0.2, 0.0).astype(np.float32)
    water[insert] *= 1.0 - 0.2 / 3.16
    img = _simulate({"water": water, "hydroxyapatite": ha})
    read = float(img[_disc(y, x, 0.0, 0.0, 8.0)].mean())

    def mono_hu(kev: float) -> float:
        mw = mass_attenuation("water", np.array([kev]))[0]
        mha = mass_attenuation("hydroxyapatite", np.array([kev]))[0]
        return 1000.0 * ((1.0 - 0.2 / 3.16) * mw + 0.2 * mha - mw) / mw

    assert mono_hu(80.0) < read < mono_hu(60.0)
    spec = spectrum(120.0, 7.0, 24)
    assert 0.015 < reference_mu_per_mm(spec) < 0.022  # water at ~55-75 keV: 0.019-0.021 /mm


def test_metal_darkens_the_line_between_two_screws_by_physics_alone():
    """Two titanium shafts (6.5 mm) 30 mm apart: photon starvation and beam hardening along the rays through
    both leave a dark band between them; with one shaft the same place reads as water."""
    y, x = _grid()
    water = _water_body(y, x)
    shafts = _disc(y, x, 0.0, -15.0, 3.25) | _disc(y, x, 0.0, 15.0, 3.25)
    one = _disc(y, x, 0.0, -15.0, 3.25)
    between = (np.abs(y) < 1.0) & (np.abs(x) < 4.0)
    reads = []
    for metal in (shafts, one):
        w = water.copy()
        w[metal] = 0.0
        img = _simulate({"water": w, "titanium": np.where(metal, 4.43, 0.0).astype(np.float32)},
                        XraySpec(n_views=240, incident_photons=2e5))
        reads.append(float(img[between].mean()))
        assert float(img[_disc(y, x, 0.0, -15.0, 1.5)].mean()) > 4000.0  # titanium: thousands of HU, unclipped
    assert reads[0] < -60.0 and abs(reads[1]) < 40.0


def test_the_image_does_not_depend_on_the_number_of_workers(monkeypatch):
    import bmdpipe.synthetic.ctphysics as ctphysics

    monkeypatch.setattr(ctphysics, "SLICES_PER_TASK", 1)
    y, x = _grid(64)
    water = np.stack([_water_body(y, x, 20.0, 15.0)] * 2)
    one = simulate_slices({"water": water}, (PX, PX), SMALL, np.random.default_rng(4), workers=1)
    two = simulate_slices({"water": water}, (PX, PX), SMALL, np.random.default_rng(4), workers=2)
    np.testing.assert_array_equal(one, two)
    assert not np.array_equal(one[0], one[1])  # each slice its own noise


def test_a_case_formed_by_projection_keeps_its_truth():
    """A coarse case with one screw: the screw's metal (marked in the truth) reads as metal, the vertebral body
    as bone above soft tissue; a phantom is refused, as no rods are modelled."""
    spec = CaseSpec(levels=("L4",), phantom=None, spacing_mm=(3.0, 1.6, 1.6), screws=(ScrewSpec("L4", "left"),),
                    xray=XraySpec(n_views=240), anatomy_jitter=False)
    case = make_case(3, spec)
    img, tis = case.volume.array, case.truth.tissue
    assert float(np.median(img[tis == TISSUE["metal"]])) >= 3000.0
    body = (case.truth.part == 1) & (tis == TISSUE["cancellous"])
    assert float(np.median(img[body])) > float(np.median(img[tis == TISSUE["soft_tissue"]])) + 50.0
    with pytest.raises(ValueError, match="phantom=None"):
        make_case(3, CaseSpec(levels=("L4",), spacing_mm=(3.0, 1.6, 1.6), xray=XraySpec(n_views=240)))


@pytest.mark.parametrize("kernel, fwhm_range", [("standard", (1.0, 1.4)), ("sharp", (0.75, 1.1))])
def test_kernels_blur_as_clinical_kernels_do(kernel, fwhm_range):
    """The edge of a 30 mm water disc in air (sub-voxel partial volume), fitted with an erfc edge here: the
    standard kernel blurs like a soft-tissue kernel (FWHM ~1.0-1.3 mm), the sharp one like a bone kernel."""
    from scipy import optimize, special

    px, n, ss = 0.7, 114, 5
    yy, xx = (np.mgrid[:n * ss, :n * ss] - (n * ss - 1) / 2.0) / ss * px
    disc = (np.hypot(yy, xx) <= 30.0).reshape(n, ss, n, ss).mean(axis=(1, 3)).astype(np.float32)
    img = simulate_slices({"water": disc[None]}, (px, px), XraySpec(kernel=kernel, incident_photons=1e8),
                          np.random.default_rng(0))[0]
    y, x = (np.mgrid[:n, :n] - (n - 1) / 2.0) * px
    r, v = np.hypot(y, x).ravel(), img.ravel()
    near = (r > 25.0) & (r < 35.0)
    (sigma, edge), _ = optimize.curve_fit(lambda rr, s, e: -1000.0 + 500.0 * special.erfc((rr - e) / (np.sqrt(2) * s)),
                                          r[near], v[near], p0=(0.5, 30.0))
    assert fwhm_range[0] < 2.3548 * sigma < fwhm_range[1]
    assert abs(edge - 30.0) < 0.05


def test_noise_off_gives_the_expected_image():
    """noise=False reconstructs the expected counts: the same image for any seed, and the noisy images scatter
    around it by the quantum noise (~10 HU at 1e5 photons; their mean over 2 seeds is closer to it than
    either)."""
    y, x = _grid()
    water = _water_body(y, x)
    clean = [_simulate({"water": water}, seed=s, noise=False) for s in (0, 1)]
    noisy = [_simulate({"water": water}, seed=s) for s in (0, 1)]
    centre = _disc(y, x, 0.0, 0.0, 15.0)
    assert np.array_equal(clean[0], clean[1]) and not np.array_equal(noisy[0], noisy[1])
    err = [float(np.sqrt(np.mean((im - clean[0])[centre] ** 2))) for im in noisy]
    assert 5.0 < min(err) and max(err) < 20.0
    assert float(np.sqrt(np.mean(((noisy[0] + noisy[1]) / 2 - clean[0])[centre] ** 2))) < 0.8 * min(err)
