"""Ground-truth consistency of the synthetic lumbar CT generator."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from scipy import ndimage

from bmdpipe.results import Side
from bmdpipe.synthetic import (MINDWAYS_RODS, TISSUE, CaseSpec, ScrewSpec, case_scanner, make_case)

COARSE = (2.0, 1.5, 1.5)


@pytest.fixture(scope="module")
def case():
    return make_case(11, CaseSpec(spacing_mm=COARSE, sclerosis=True))


@pytest.mark.parametrize("orientation", ["HFS", "FFS", "HFP", "HFS_zdown"])
def test_geometry_centres_levels_and_left_right(orientation):
    c = make_case(4, CaseSpec(spacing_mm=COARSE, orientation=orientation))
    vol, t = c.volume, c.truth
    max_vox = max(vol.spacing)
    zs = []
    for v in t.vertebrae:
        body = (c.labels == v.verse_id) & (t.part == 1)
        cen = vol.index_to_lps(np.argwhere(body).mean(0))
        assert np.linalg.norm(cen - v.body_center_lps) < max_vox, (orientation, v.name)
        whole = vol.index_to_lps(np.argwhere(c.labels == v.verse_id).mean(0))
        zs.append(whole[2])
        # left pedicle: patient's left = +x in LPS, in truth and in the voxels
        left, right = v.pedicle(Side.left), v.pedicle(Side.right)
        assert left.isthmus_lps[0] > v.body_center_lps[0] > right.isthmus_lps[0]
        pl = vol.index_to_lps(np.argwhere((c.labels == v.verse_id) & (t.part == 2)).mean(0))
        pr = vol.index_to_lps(np.argwhere((c.labels == v.verse_id) & (t.part == 3)).mean(0))
        assert pl[0] > v.body_center_lps[0] + 8 and pr[0] < v.body_center_lps[0] - 8
        # target at 80 % body depth: anterior to the centre, entry posterior to the body
        assert left.target_lps[1] < v.body_center_lps[1] < left.entry_lps[1]
    assert [v.verse_id for v in t.vertebrae] == [22, 23, 24]
    assert zs[0] > zs[1] > zs[2]  # L3 above L4 above L5 (superior = +z)
    assert set(np.unique(c.labels)) == {0, 22, 23, 24}


def test_orientations_share_anatomy():
    a = make_case(4, CaseSpec(spacing_mm=COARSE, orientation="HFS"))
    b = make_case(4, CaseSpec(spacing_mm=COARSE, orientation="FFS"))
    assert np.allclose(b.volume.direction, np.diag([-1.0, 1.0, -1.0]))
    # same voxel LPS -> same truth tissue
    idx_a = np.array([[10, 50, 60], [30, 100, 120]])
    lps = a.volume.index_to_lps(idx_a)
    idx_b = np.rint(b.volume.lps_to_index(lps)).astype(int)
    for ia, ib in zip(idx_a, idx_b):
        assert a.truth.tissue[tuple(ia)] == b.truth.tissue[tuple(ib)]
        assert a.labels[tuple(ia)] == b.labels[tuple(ib)]


def test_cancellous_density_and_bone_hu(case):
    t, spec = case.truth, case.truth.spec
    lo, hi = spec.cancellous_mg_cm3
    for v in t.vertebrae:
        assert lo <= v.cancellous_central_mg_cm3 <= hi
        canc = (case.labels == v.verse_id) & (t.part == 1) & (t.tissue == TISSUE["cancellous"])
        m = t.mineral_mg_cm3[canc]
        assert m.min() >= v.cancellous_central_mg_cm3 - 1e-3
        assert m.max() <= v.cancellous_central_mg_cm3 * (1 + v.cancellous_rim_gain) + 1e-3
        assert m.max() > v.cancellous_central_mg_cm3 * (1 + 0.5 * v.cancellous_rim_gain)  # rim is denser
    bone = np.isin(t.tissue, [4, 5, 6, 14])
    s = t.scanner
    assert np.allclose(t.hu_clean[bone], s.intercept_hu + s.slope_hu_per_mg_cm3 * t.mineral_mg_cm3[bone], atol=1e-3)
    assert np.all(t.mineral_mg_cm3[~bone] == 0)
    # cortex bright, sclerosis present and dense
    assert np.all(t.mineral_mg_cm3[t.tissue == TISSUE["cortex"]] >= 600)
    assert len(t.sclerosis) >= 1 and (t.tissue == TISSUE["sclerosis"]).sum() > 0
    assert np.all(t.mineral_mg_cm3[t.tissue == TISSUE["sclerosis"]] >= 400)


def test_mindways_rods_follow_two_component_model(case):
    t = case.truth
    s = t.scanner
    # independent check of the formula against the science.md worked example
    sigma_ref, beta_ref = 1.46696, -1009.750
    published = {"E": 462.936, "D": 345.738, "C": 176.712, "B": -35.378, "A": -69.549}
    k2 = np.array([r[1] for r in MINDWAYS_RODS])
    water = np.array([r[2] for r in MINDWAYS_RODS])
    hu_pub = np.array([published[r[0]] for r in MINDWAYS_RODS])
    fit_slope, fit_icpt = np.polyfit(k2, hu_pub - water, 1)
    assert fit_slope == pytest.approx(sigma_ref, abs=2e-4) and fit_icpt == pytest.approx(beta_ref, abs=0.05)
    assert np.max(np.abs(water + sigma_ref * k2 + beta_ref - hu_pub)) < 6.0  # published fit residuals
    assert abs((sigma_ref - 0.2174) - 1.24956) < 1e-4 and abs((beta_ref + 999.6) - (-10.150)) < 1e-3
    vol = case.volume
    for rod in t.phantom.rods:
        expect = rod.water_mg_cm3 + (s.slope_hu_per_mg_cm3 + 0.2174) * rod.mineral_mg_cm3 + s.intercept_hu - 999.6
        assert rod.hu == pytest.approx(expect, abs=1e-6)
        # clean image and noisy image inside the rod core (radius - 2 mm), all slices
        ii, jj = np.meshgrid(np.arange(vol.shape[2]), np.arange(vol.shape[1]))
        k = np.arange(vol.shape[0])
        pts = vol.index_to_lps(np.stack([np.zeros_like(ii), jj, ii], -1).astype(float))
        core2d = np.hypot(pts[..., 0] - rod.centre_lps[0], pts[..., 1] - rod.centre_lps[1]) < rod.radius_mm - 2.0
        core = np.broadcast_to(core2d, vol.shape)
        assert np.allclose(t.hu_clean[core], expect, atol=1e-3)
        assert k.size > 0
        noisy = vol.array[core].mean()
        assert abs(noisy - expect) < 3.0, rod.name


def test_ha_rods_linear():
    c = make_case(12, CaseSpec(spacing_mm=COARSE, phantom="ha"))
    s = c.truth.scanner
    assert s.material == "HA" and c.truth.phantom.material == "HA"
    assert [r.mineral_mg_cm3 for r in c.truth.phantom.rods] == [0, 100, 200, 400, 600, 800]
    for r in c.truth.phantom.rods:
        assert r.hu == pytest.approx(s.intercept_hu + s.slope_hu_per_mg_cm3 * r.mineral_mg_cm3)


def test_noise_sd_in_uniform_region():
    c = make_case(13, CaseSpec(spacing_mm=COARSE, noise_sd_hu=18.0))
    t = c.truth
    uniform = ndimage.binary_erosion(t.tissue == TISSUE["soft_tissue"], iterations=4)
    sd = c.volume.array[uniform].std()
    assert c.truth.scanner.noise_sd_hu == 18.0
    assert abs(sd - 18.0) < 0.9, sd
    # clean image is constant there
    assert np.ptp(t.hu_clean[uniform]) < 1e-3


def test_resolution_independence():
    a = make_case(21, CaseSpec(spacing_mm=(1.0, 0.8, 0.8), phantom="mindways"))
    b = make_case(21, CaseSpec(spacing_mm=(2.0, 1.6, 1.6), phantom="mindways"))
    for va, vb in zip(a.truth.vertebrae, b.truth.vertebrae):
        assert np.allclose(va.body_center_lps, vb.body_center_lps)
        assert np.allclose(va.pedicles[0].entry_lps, vb.pedicles[0].entry_lps)
        assert va.cancellous_central_mg_cm3 == vb.cancellous_central_mg_cm3
        ca = a.volume.index_to_lps(np.argwhere(a.labels == va.verse_id).mean(0))
        cb = b.volume.index_to_lps(np.argwhere(b.labels == vb.verse_id).mean(0))
        assert np.linalg.norm(ca - cb) < 1.0
    for ra, rb in zip(a.truth.phantom.rods, b.truth.phantom.rods):
        assert ra.centre_lps == rb.centre_lps and ra.hu == rb.hu
    assert a.truth.scanner == b.truth.scanner


def test_seed_reproducible_and_varies():
    spec = CaseSpec(spacing_mm=COARSE)
    a, b, c = make_case(5, spec), make_case(5, spec), make_case(6, spec)
    assert np.array_equal(a.volume.array, b.volume.array)
    assert a.volume.meta.series_uid == b.volume.meta.series_uid != c.volume.meta.series_uid
    assert a.truth.scanner.slope_hu_per_mg_cm3 != c.truth.scanner.slope_hu_per_mg_cm3


def test_screws_halo_rim_metal():
    screws = (ScrewSpec("L4", "left", halo_width_mm=2.0, halo_arc_fraction=0.5, halo_angle_deg=0.0,
                        sclerotic_rim=True),
              ScrewSpec("L4", "right"))
    c = make_case(31, CaseSpec(spacing_mm=(1.0, 0.6, 0.6), screws=screws, levels=("L4", "L5"), noise_sd_hu=10.0))
    t, vol = c.truth, c.volume
    s0, s1 = t.screws
    assert s0.loosened and not s1.loosened
    v = t.vertebra("L4")
    assert np.allclose(s0.entry_lps, v.pedicle("left").entry_lps)
    assert s0.length_mm == pytest.approx(np.linalg.norm(np.subtract(v.pedicle("left").target_lps, s0.entry_lps)))
    assert vol.array.max() == pytest.approx(3071.0)  # saturated
    metal = t.tissue == TISSUE["metal"]
    assert np.all(vol.array[metal & ndimage.binary_erosion(metal, iterations=2)] >= 3000)
    # distances of halo / rim voxels from the screw axis
    kji = np.argwhere(t.tissue == TISSUE["halo"])
    p = vol.index_to_lps(kji)
    e, d = np.array(s0.entry_lps), s0.direction
    q = p - e
    tt = q @ d
    r = np.linalg.norm(q - np.outer(tt, d), axis=1)
    mine = tt <= s0.length_mm
    R = s0.diameter_mm / 2
    assert mine.sum() > 100
    assert r[mine].max() <= R + 2.0 + 1e-6 and np.percentile(r[mine], 90) > R + 1.0
    # arc centred at 0 deg (the superior side): halo voxels lie on the +e1 half
    e1 = np.array([0, 0, 1.0]) - d[2] * d
    e1 /= np.linalg.norm(e1)
    assert np.all((q[mine] - np.outer(tt[mine], d)) @ e1 >= -1e-6)
    rim = vol.index_to_lps(np.argwhere(t.tissue == TISSUE["sclerotic_rim"]))
    qr = rim - e
    rr = np.linalg.norm(qr - np.outer(qr @ d, d), axis=1)
    assert rim.shape[0] > 50 and rr.min() > R + 2.0 - 1e-6 and rr.max() <= R + 3.0 + 1e-6
    assert np.all(t.mineral_mg_cm3[t.tissue == TISSUE["sclerotic_rim"]] == 600.0)
    # the right screw has no halo: no halo voxels near its axis
    q1 = p - np.array(s1.entry_lps)
    r1 = np.linalg.norm(q1 - np.outer(q1 @ s1.direction, s1.direction), axis=1)
    assert np.all(r1 > s1.diameter_mm / 2 + 0.5)
    assert t.artefacts["n_streaks"] > 0


def test_no_saturation_option():
    c = make_case(32, CaseSpec(spacing_mm=COARSE, screws=(ScrewSpec("L4", "left"),), metal_saturation=False))
    assert c.volume.array.max() > 3071.0


def test_case_scanner_is_the_case_truth_scanner():
    """case_scanner draws exactly what make_case puts in truth.scanner (same seed, same spec)."""
    spec = CaseSpec(levels=("L4",), phantom=None, spacing_mm=(3.0, 2.0, 2.0))
    assert case_scanner(17, spec) == make_case(17, spec).truth.scanner
    assert case_scanner(17, spec) != case_scanner(18, spec)


def test_noise_free_twin_differs_by_the_noise_only():
    """noise=False: the same case without noise; the difference is the noise (SD as drawn), elsewhere equal."""
    spec = CaseSpec(spacing_mm=COARSE, noise_sd_hu=15.0, noise_corr_mm=None, noise_texture="kernel")
    noisy, twin = make_case(14, spec), make_case(14, dataclasses.replace(spec, noise=False))
    assert noisy.truth.scanner == dataclasses.replace(twin.truth.scanner, noise=True)
    assert np.array_equal(noisy.truth.mineral_mg_cm3, twin.truth.mineral_mg_cm3)
    uniform = ndimage.binary_erosion(twin.truth.tissue == TISSUE["soft_tissue"], iterations=4)
    assert np.ptp(twin.volume.array[uniform]) < 1e-3
    assert (noisy.volume.array - twin.volume.array)[uniform].std() == pytest.approx(15.0, rel=0.05)


def test_noise_correlation_length_is_drawn_kernel_like():
    """noise_corr_mm=None draws 0.5-1.2 mm per seed; the default stays 0.3 mm."""
    drawn = [case_scanner(s, CaseSpec(noise_corr_mm=None)).noise_corr_mm for s in range(20)]
    assert 0.5 <= min(drawn) and max(drawn) <= 1.2 and np.ptp(drawn) > 0.4
    assert case_scanner(0, CaseSpec()).noise_corr_mm == 0.3


def test_noise_textures():
    """Both textures have the SD asked for and correlate neighbours; only the filtered back-projection
    texture has a negative ring (around 2-3 sigma) and little power at low frequencies: the means of
    16 mm blocks vary half as much as for the Gaussian texture of the same SD and length."""
    from bmdpipe.synthetic.scanner import make_noise

    out = {}
    for texture in ("gaussian", "kernel"):
        n = make_noise((32, 128, 128), (1.0, 0.5, 0.5), 20.0, 1.0, np.random.default_rng(0), texture)
        assert n.std() == pytest.approx(20.0, rel=1e-3)
        rho = [float(np.mean(n * np.roll(n, k, axis=2)) / n.var()) for k in range(8)]  # lags of 0.5 mm
        out[texture] = (rho, float(n.reshape(2, 16, 4, 32, 4, 32).mean(axis=(1, 3, 5)).std()))
    assert out["gaussian"][0][1] > 0.5 and out["kernel"][0][1] > 0.5
    assert min(out["gaussian"][0]) > 0.0 and min(out["kernel"][0][4:]) < -0.05
    assert out["kernel"][1] < 0.6 * out["gaussian"][1]
