"""Cement-augmented screws: found, placed and sized on their clean shaft, flagged ``augmented``.

On a projection-physics case (bmdpipe.synthetic.ctphysics, 12-bit scale: cement and titanium both
clip at 3071 HU) with one cemented and one plain screw, on an analytic block made independently of
bmdpipe.synthetic, and on point clouds; a painted case without cement flags nothing.
"""

import numpy as np
import pytest

from bmdpipe.anatomy.labels import vertebrae_from_label_map
from bmdpipe.config import HaloSettings, ScrewSettings
from bmdpipe.rows import ScrewRow, contract_columns
from bmdpipe.screws import detect_screws, measure_screws
from bmdpipe.screws.detect import find_metal_runs, find_sleeve

MANTLE_MM = 3.5


def _axis_errors(found, entry, tip):
    """Angle (deg) between the found and true axes and the true axis midpoint's distance from the found axis (mm)."""
    a = np.subtract(found.tip_lps, found.entry_lps)
    a /= np.linalg.norm(a)
    d = np.subtract(tip, entry)
    d /= np.linalg.norm(d)
    mid = 0.5 * np.add(entry, tip) - np.asarray(found.entry_lps)
    return float(np.degrees(np.arccos(min(1.0, abs(a @ d))))), float(np.linalg.norm(mid - (mid @ a) * a))


@pytest.fixture(scope="module")
def physics_case():
    """L4 with a cemented left screw (3.5 mm mantle) and a plain right one, 1 x 1 x 2 mm voxels, clipped at 3071 HU."""
    pytest.importorskip("astra")
    from bmdpipe.synthetic import CaseSpec, ScrewSpec, XraySpec, make_case

    screws = (ScrewSpec("L4", "left", cement_mantle_mm=MANTLE_MM, diameter_mm=6.5),
              ScrewSpec("L4", "right", diameter_mm=6.5))
    spec = CaseSpec(levels=("L4",), phantom=None, spacing_mm=(2.0, 1.0, 1.0), screws=screws,
                    xray=XraySpec(n_views=300), anatomy_jitter=False, metal_saturation=True)
    case = make_case(3, spec)
    found = detect_screws(case.volume, ScrewSettings(), vertebrae=vertebrae_from_label_map(case.labels, case.volume))
    return case, found


def test_cemented_and_plain_screws_are_found_on_their_axes(physics_case):
    """Both screws found on the right side; the cemented one's axis, diameter and length as close to the truth
    as the plain one's (1 mm, 2 deg, 0.5 mm, 2 mm)."""
    case, found = physics_case
    assert float(case.volume.array.max()) == pytest.approx(3071.0)
    assert len(found) == 2
    by_side = {s.side.value: s for s in found}
    for truth in case.truth.screws:
        s = by_side[truth.side]
        angle, offset = _axis_errors(s, truth.entry_lps, truth.tip_lps)
        assert angle < 2.0 and offset < 1.0, (truth.side, angle, offset)
        assert s.diameter_mm == pytest.approx(truth.diameter_mm, abs=0.5)
        assert s.length_mm == pytest.approx(truth.length_mm, abs=2.0)
        assert np.linalg.norm(np.subtract(s.tip_lps, truth.tip_lps)) < 2.0


def test_only_the_cemented_screw_is_augmented(physics_case):
    """The cemented screw is flagged with a mantle within 1 mm of the truth's (clipped cement reads it up to
    ~0.5 mm thick); the plain one is not flagged and has no mantle; screws.csv carries the flag."""
    case, found = physics_case
    by_side = {s.side.value: s for s in found}
    cemented, plain = by_side["left"], by_side["right"]
    assert cemented.augmented and not plain.augmented
    assert cemented.cement_mantle_mm == pytest.approx(MANTLE_MM, abs=1.0)
    assert plain.cement_mantle_mm is None
    rows = [ScrewRow.of(s, case.volume.meta) for s in (cemented, plain)]
    assert [r.augmented for r in rows] == [True, False]
    assert list(rows[0].as_dict())[len(contract_columns(ScrewRow))] == "augmented"


def test_the_cement_is_not_read_as_a_halo(physics_case):
    """Neither screw has a halo. The cemented one's sleeve planes are left out of its width map (the
    cement's bloom is not bone) and ``reason`` says its halo was read on the uncemented shaft; the plain
    screw's map keeps its planes in bone and has no reason."""
    case, found = physics_case
    by_side = {s.side.value: s for s in measure_screws(case.volume, found, HaloSettings(), ScrewSettings())}
    cemented, plain = by_side["left"].halo, by_side["right"].halo
    assert "cement-bone interface not measured" in cemented.reason and plain.reason == ""
    measured_planes = lambda h: int(np.isfinite(h.width_map_mm).any(axis=1).sum())  # noqa: E731
    assert measured_planes(cemented) < 0.75 * cemented.width_map_mm.shape[0]
    assert measured_planes(plain) > measured_planes(cemented)


def test_the_sleeve_starts_at_the_shaft_half_way(physics_case):
    """The sleeve found along the cemented screw begins within 2.5 mm of half its length (where the
    generator's cement begins) and runs past its tip."""
    case, found = physics_case
    truth = case.truth.screws[0]
    s = next(f for f in found if f.side.value == "left")
    sleeve = find_sleeve(case.volume, np.asarray(s.entry_lps), np.asarray(s.tip_lps) + 6.0 * truth.direction,
                         ScrewSettings())
    assert sleeve is not None
    assert sleeve[0] == pytest.approx(truth.length_mm / 2.0, abs=2.5)
    assert sleeve[1] > truth.length_mm


@pytest.mark.parametrize("clip", [True, False])
def test_cemented_smooth_screw_in_an_analytic_block(screw_block, clip):
    """A smooth screw of another generator (no head, its own blur and noise) wrapped in 4500-HU cement over
    its distal half: found and flagged on both HU scales, diameter within 0.3 mm, axis within 1 deg, mantle
    within 0.7 mm; the same screw without cement is not flagged."""
    smooth = ScrewSettings(thread_depth_mm=0.0)
    for mantle in (3.0, 0.0):
        vol, tr = screw_block(width_mm=0.0, clip=clip, seed=4, mantle_mm=mantle)
        (s,) = detect_screws(vol, smooth)
        assert s.augmented is (mantle > 0)
        angle, offset = _axis_errors(s, tr["entry"], tr["tip"])
        assert angle < 1.0 and offset < 0.5
        assert s.diameter_mm == pytest.approx(tr["diameter_mm"], abs=0.3)
        if mantle > 0:
            assert s.cement_mantle_mm == pytest.approx(mantle, abs=0.7)
            assert np.linalg.norm(np.subtract(s.tip_lps, tr["tip"])) < 1.5


def _tube_points(c, a, t_range, r_range, step=0.7):
    """Points on a grid filling the tube ``r_range[0] <= r <= r_range[1]`` around the line c + t a, t in t_range."""
    a = np.asarray(a, float) / np.linalg.norm(a)
    u = np.cross(a, [0.0, 0.0, 1.0])
    u /= np.linalg.norm(u)
    v = np.cross(a, u)
    g = np.arange(-r_range[1], r_range[1] + 1e-9, step)
    T, X, Y = np.meshgrid(np.arange(*t_range, step), g, g, indexing="ij")
    rr = np.hypot(X, Y)
    keep = (rr >= r_range[0]) & (rr <= r_range[1])
    return np.asarray(c) + T[keep, None] * a + X[keep, None] * u + Y[keep, None] * v


@pytest.mark.parametrize("sleeve,kind", [("round", "screw"), ("everywhere", "bulky")])
def test_a_bulky_run_is_a_screw_only_with_a_clean_shaft_and_a_distal_sleeve(sleeve, kind):
    """Metal masks: a 6.5 mm shaft (posterior end first) whose distal 31 mm are wrapped in a 4 mm sleeve is a screw;
    a sleeve along the whole shaft (no clean shaft) leaves it bulky."""
    a = np.array([0.2, -1.0, 0.05])  # towards anterior: the head end is at t = 0
    shaft = _tube_points([0.0, 0.0, 0.0], a, (0.0, 45.0), (0.0, 3.6))
    extra = _tube_points([0.0, 0.0, 0.0], a, (14.0 if sleeve == "round" else 0.0, 49.0), (3.6, 7.6))
    settings = ScrewSettings()
    runs = find_metal_runs(np.vstack([shaft, extra]), settings, rng=np.random.default_rng(0))
    assert runs[0].bulk_fraction > settings.max_bulk_fraction  # bulky by the median over the run's slabs
    assert runs[0].kind == kind


def test_a_painted_case_without_cement_flags_no_screw():
    """The painted image model (no cement, fusion rods, clipped titanium): all four screws found, none augmented."""
    from bmdpipe.synthetic import CaseSpec, ScrewSpec, make_case

    screws = tuple(ScrewSpec(lv, sd, halo_width_mm=w, halo_arc_fraction=1.0)
                   for (lv, sd), w in zip([("L4", "left"), ("L4", "right"), ("L5", "left"), ("L5", "right")],
                                          (0.0, 1.5, 2.5, 0.0)))
    case = make_case(7, CaseSpec(levels=("L4", "L5"), phantom=None, spacing_mm=(1.5, 0.8, 0.8), screws=screws,
                                 fusion_rods=True))
    found = detect_screws(case.volume, ScrewSettings(), vertebrae=vertebrae_from_label_map(case.labels, case.volume))
    assert len(found) == 4
    assert not any(s.augmented for s in found)
    assert all(s.cement_mantle_mm is None for s in found)
