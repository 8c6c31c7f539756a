"""Construct hardware of the synthetic generator: cement mantles, breaches, crosslinks, CoCr rods, cages.

One coarse case formed by projection physics carries all of it (a cemented screw with a halo, a medial breach,
CoCr rods with a crosslink, PEEK cages); breaches and the crosslink's joining are checked on painted cases.
"""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from bmdpipe.synthetic import CaseSpec, ScrewSpec, XraySpec, make_case
from bmdpipe.synthetic.case import _material_densities
from bmdpipe.synthetic.ctphysics import mass_attenuation, spectrum
from bmdpipe.synthetic.tissue import BONE_CODES, TISSUE

MANTLE_MM, HALO_MM = 4.0, 1.5


def _axial_frame(screw, volume):
    """Distance along (t) and from (r) the screw axis of every voxel centre, mm."""
    kji = np.indices(volume.array.shape).reshape(3, -1).T
    q = volume.index_to_lps(kji) - np.asarray(screw.entry_lps)
    d = screw.direction
    t = q @ d
    r = np.linalg.norm(q - np.outer(t, d), axis=1)
    return t.reshape(volume.array.shape), r.reshape(volume.array.shape)


def _mono_hu(parts, kev: float) -> float:
    mu_w = mass_attenuation("water", np.array([kev]))[0]
    mu = sum(rho * mass_attenuation(m, np.array([kev]))[0] for m, rho in parts)
    return float(1000.0 * (mu - mu_w) / mu_w)


@pytest.fixture(scope="module")
def construct():
    pytest.importorskip("astra")
    screws = (ScrewSpec("L4", "left", cement_mantle_mm=MANTLE_MM, halo_width_mm=HALO_MM, halo_arc_fraction=1.0),
              ScrewSpec("L4", "right", breach="medial"), ScrewSpec("L5", "left"), ScrewSpec("L5", "right"))
    spec = CaseSpec(levels=("L4", "L5"), phantom=None, spacing_mm=(3.0, 1.6, 1.6), screws=screws, fusion_rods=True,
                    rod_material="cobalt_chrome", crosslink=True, cage="peek", xray=XraySpec(n_views=240),
                    anatomy_jitter=False, metal_saturation=False)
    return make_case(3, spec)


def test_cement_mantle_holds_cement_and_no_mineral_and_the_halo_lies_outside_it(construct):
    """The mantle's voxels carry PMMA and BaSO4 at 70/30 % by mass of a pore-free mix (1.18 and 4.5 g/cm3) and
    no mineral, within the mantle along the distal half; the halo there lies beyond the mantle's surface."""
    truth = construct.truth
    screw = truth.screws[0]
    assert screw.augmented and screw.cement_mantle_mm == MANTLE_MM and not truth.screws[2].augmented
    cement = truth.tissue == TISSUE["cement"]
    assert cement.sum() > 100
    rho = 1.0 / (0.7 / 1.18 + 0.3 / 4.5)
    dens = _material_densities(truth.tissue, truth.mineral_mg_cm3)
    np.testing.assert_allclose(dens["pmma_baso4"][cement], 0.7 * rho, rtol=1e-5)
    np.testing.assert_allclose(dens["barium_sulfate"][cement], 0.3 * rho, rtol=1e-5)
    assert not dens["hydroxyapatite"][cement].any() and not truth.mineral_mg_cm3[cement].any()
    t, r = _axial_frame(screw, construct.volume)
    R, L = screw.diameter_mm / 2.0, screw.length_mm
    assert np.all(r[cement] <= R + MANTLE_MM + 1e-3)
    assert np.all((t[cement] >= L / 2.0 - 1e-3) & (t[cement] <= L + MANTLE_MM + 1e-3))
    halo = (truth.tissue == TISSUE["halo"]) & (r < R + MANTLE_MM + HALO_MM + 3.0)
    distal = halo & (t > L / 2.0) & (t < L)
    proximal = halo & (t > 0) & (t < L / 2.0)
    assert distal.sum() > 20 and proximal.sum() > 5
    assert np.all((r[distal] > R + MANTLE_MM - 1e-3) & (r[distal] <= R + MANTLE_MM + HALO_MM + 1e-3))
    assert np.all(r[proximal] <= R + HALO_MM + 1e-3)


def test_cement_reads_far_above_bone_and_below_titanium(construct):
    """The mantle's core reads within a loose band around its monochromatic HU at the spectrum's mean energy
    (xraydb here; beam hardening behind the body lowers it, as it lowers titanium's), thousands of HU above
    cancellous bone and below the screws' titanium core."""
    img, truth = construct.volume.array, construct.truth
    xray = truth.artefacts["xray"]
    spec = spectrum(xray.kvp, xray.filtration_mm_al, xray.energy_bins)
    kev = float(spec.energies_kev @ spec.weights)
    rho = 1.0 / (0.7 / 1.18 + 0.3 / 4.5)
    expected = _mono_hu((("pmma_baso4", 0.7 * rho), ("barium_sulfate", 0.3 * rho)), kev)
    screw = truth.screws[0]
    t, r = _axial_frame(screw, construct.volume)
    R, L = screw.diameter_mm / 2.0, screw.length_mm
    core = (truth.tissue == TISSUE["cement"]) & (r > R + 1.0) & (r < R + MANTLE_MM - 1.0) & (t > L / 2 + 2) & (t < L - 2)
    cement = float(np.median(img[core]))
    assert 0.4 * expected < cement < 1.1 * expected
    bone = float(np.median(img[(truth.tissue == TISSUE["cancellous"]) & (truth.part == 1)]))
    assert cement > bone + 2000.0
    t2, r2 = _axial_frame(truth.screws[2], construct.volume)
    titanium = float(np.median(img[(r2 < 1.2) & (t2 > 5.0) & (t2 < truth.screws[2].length_mm - 5.0)]))
    assert cement < titanium


def test_peek_cage_reads_like_soft_tissue_and_its_tantalum_markers_saturate(construct):
    """PEEK (1.32 g/cm3, mostly carbon) reads a few hundred HU; the 1 mm tantalum pins, though smaller than a
    voxel, read far above the 3071 HU of the 12-bit scale; the graft inside reads as bone."""
    img, truth = construct.volume.array, construct.truth
    cages = truth.artefacts["cages"]
    assert len(cages) == 2 and all(c.material == "peek" for c in cages)
    peek = truth.tissue == TISSUE["peek"]
    assert peek.sum() > 50
    assert 150.0 < float(np.median(img[peek])) < 450.0
    for cage in cages:
        assert 9.0 < cage.height_mm < 13.0 and len(cage.markers_lps) == 2
        for a, b in cage.markers_lps:
            k, j, i = np.round(construct.volume.lps_to_index((np.add(a, b)) / 2.0)).astype(int)
            assert float(img[k, j - 1:j + 2, i - 1:i + 2].max()) > 3071.0
    graft = truth.tissue == TISSUE["graft"]
    assert graft.sum() > 20 and TISSUE["graft"] in BONE_CODES
    assert float(np.median(img[graft])) > float(np.median(img[truth.tissue == TISSUE["disc"]])) + 100.0


def test_crosslink_joins_the_cobalt_chrome_rods(construct):
    """The rods (CoCr) and the crosslink (Ti) form one connected piece of metal from left to right, and the
    crosslink reads as metal in the image."""
    truth, vol = construct.truth, construct.volume
    rods = truth.artefacts["fusion_rods"]
    assert [r["material"] for r in rods] == ["cobalt_chrome", "cobalt_chrome"]
    metal = np.isin(truth.tissue, [TISSUE["metal"], TISSUE["cobalt_chrome"]])
    comp, _ = ndimage.label(metal)
    ends = [np.round(vol.lps_to_index(p)).astype(int) for p in (rods[0]["points_lps"][0], rods[1]["points_lps"][0])]
    left, right = (comp[tuple(e)] for e in ends)
    assert left > 0 and left == right
    a, b = np.asarray(truth.artefacts["crosslink"]["points_lps"])
    k, j, i = np.round(vol.lps_to_index((a + b) / 2.0)).astype(int)
    assert float(vol.array[k, j, i]) > 2000.0


def test_without_a_crosslink_the_rods_stay_apart():
    """Control on a painted case: the titanium rods of each side are separate pieces unless crosslinked."""
    screws = tuple(ScrewSpec(lv, sd) for lv in ("L4", "L5") for sd in ("left", "right"))
    joined = []
    for crosslink in (False, True):
        case = make_case(5, CaseSpec(levels=("L4", "L5"), spacing_mm=(2.0, 1.2, 1.2), screws=screws, fusion_rods=True,
                                     crosslink=crosslink, noise=False))
        comp, _ = ndimage.label(case.truth.tissue == TISSUE["metal"])
        rods = case.truth.artefacts["fusion_rods"]
        ends = [tuple(np.round(case.volume.lps_to_index(r["points_lps"][0])).astype(int)) for r in rods]
        joined.append(comp[ends[0]] == comp[ends[1]])
    assert joined == [False, True]


@pytest.mark.parametrize("breach", ["medial", "lateral"])
def test_a_breaching_screw_leaves_the_pedicle_on_its_side(breach):
    """At the isthmus, part of the breaching screw's crest circle lies outside the vertebra (the label map, which
    screws do not change), on the medial or lateral side as asked; a screw along the pedicle axis stays inside."""
    screws = (ScrewSpec("L4", "left", breach=breach, breach_mm=3.0), ScrewSpec("L4", "right"))
    case = make_case(9, CaseSpec(levels=("L4",), spacing_mm=(1.0, 0.6, 0.6), screws=screws, noise=False))
    vol, labels = case.volume, case.labels
    vid = case.truth.vertebrae[0].verse_id
    shares = []
    for s in case.truth.screws:
        d = s.direction
        e1 = np.cross(d, [1.0, 0.0, 0.0])
        e1 /= np.linalg.norm(e1)
        e2 = np.cross(d, e1)
        ang = np.linspace(0.0, 2 * np.pi, 72, endpoint=False)
        pts = np.array([np.asarray(s.entry_lps) + t * d + s.diameter_mm / 2.0 * (np.cos(a) * e1 + np.sin(a) * e2)
                        for t in (10.0, 12.0, 14.0) for a in ang])
        idx = np.round(vol.lps_to_index(pts)).astype(int)
        outside = labels[tuple(idx.T)] != vid
        shares.append(float(outside.mean()))
        if s.breach is not None:
            assert s.breach == breach and s.breach_mm == 3.0
            # the outside points lie nearer the midline than the axis for a medial breach
            mid_x = case.truth.vertebrae[0].body_center_lps[0]
            axis_x = (np.asarray(s.entry_lps) + 12.0 * d)[0]
            medial = np.abs(pts[outside, 0] - mid_x) < abs(axis_x - mid_x)
            assert medial.mean() > 0.8 if breach == "medial" else medial.mean() < 0.2
    assert shares[0] > 0.1 and shares[1] == 0.0


def test_the_painted_model_refuses_hardware_it_has_no_hu_for():
    with pytest.raises(ValueError, match="xray"):
        CaseSpec(screws=(ScrewSpec("L4", "left", cement_mantle_mm=3.0),))
    with pytest.raises(ValueError, match="xray"):
        CaseSpec(cage="peek")
    with pytest.raises(ValueError, match="fusion_rods"):
        CaseSpec(crosslink=True)
    with pytest.raises(ValueError, match="breach"):
        ScrewSpec(breach="anterior")
