"""Issue 18: the calibration pad drawn from the range of real pads (synthetic/pad.py)."""

import numpy as np
import pytest

from bmdpipe.synthetic import CaseSpec, PadSpec, case_scanner, make_case
from bmdpipe.synthetic.pad import draw_pad
from bmdpipe.synthetic.spec import pad_definition

DEFINITIONS = ("mindways-model3-ct", "qrm-bdc-6", "qrm-bdc-3", "b-mas-200", "image-analysis-qct-3d-plus")
FOV_HALF_MM = 180.0  # CaseSpec.fov_mm[0] / 2


def _layouts(n: int = 300):
    for seed in range(n):
        definition = DEFINITIONS[seed % len(DEFINITIONS)]
        material = pad_definition(definition)["material"]
        scanner = case_scanner(seed, CaseSpec(phantom="ha" if material == "HA" else "mindways"))
        yield draw_pad(PadSpec(definition), scanner, 15.0, FOV_HALF_MM, np.random.default_rng(seed)), scanner


def test_drawn_pads_span_the_ranges_of_real_pads():
    """Over 300 draws: rods 10-30 mm, pitch 1.3-2.2 diameters, pads 20-60 mm tall and at least 4 mm taller
    than their rods, flat and curved, every rod order, hidden and faint rods, cupping 0-6 HU, streaks and
    pads cut by the field of view each in at least 5 % of draws; the row holds every rod of its definition."""
    seen = {"curved": 0, "hidden": 0, "faint": 0, "streak": 0, "cut": 0}
    orders, widths, heights = set(), [], []
    for lay, _ in _layouts():
        d = 2.0 * lay.rod_radius_mm
        x = sorted(r[3] for r in lay.rods)
        pitch = np.diff(x)
        assert 10.0 <= d <= 30.0 and lay.height_mm <= 60.0 and lay.height_mm >= max(20.0, d + 4.0) - 1e-9
        assert np.allclose(pitch, pitch[0]) and 1.3 * d - 1e-9 <= pitch[0] <= 2.2 * d + 1e-9
        assert len(lay.rods) == len(pad_definition(lay.definition)["rods"])
        assert 0.0 <= lay.cupping_hu <= 6.0
        widths.append(d)
        heights.append(lay.height_mm)
        orders.add(lay.order)
        seen["curved"] += lay.sagitta_mm > 0
        seen["hidden"] += bool(lay.hidden_rod)
        seen["faint"] += bool(lay.faint_rod)
        seen["streak"] += lay.streak is not None
        seen["cut"] += lay.fov_cut_mm > 0
    assert orders == {"file", "reversed", "shuffled"}
    assert min(widths) < 13.0 and max(widths) > 27.0 and min(heights) < 25.0 and max(heights) > 55.0
    assert all(n >= 15 for n in seen.values()), seen


def test_hidden_rod_has_the_pads_hu_and_a_faint_one_is_below_the_noise():
    """A hidden rod's HU is the pad's within 2 HU (no edge); a faint rod differs from the pad by 0.3-1 noise
    SD (15 HU here); both are rods near water (within 150 HU: 0 mg/cm3 rods, Mindways A and B)."""
    for lay, scanner in _layouts():
        hu = {r[0]: r[4] for r in lay.rods}
        if lay.hidden_rod:
            assert abs(hu[lay.hidden_rod] - lay.pad_hu) <= 2.0
        if lay.faint_rod:
            assert 0.3 * 15.0 - 1e-9 <= abs(hu[lay.faint_rod] - lay.pad_hu) <= 15.0 + 1e-9
        for name in filter(None, (lay.hidden_rod, lay.faint_rod)):
            assert abs(hu[name] - scanner.tissue_hu["water"]) <= 150.0


def test_painted_pad_matches_its_truth():
    """A painted pad: the image reads each rod's true HU plus its cupping at the rod's centre (within
    2 HU over the scan), and the FOV-cut pad's end lies outside the field of
    view while its rods are inside."""
    spec = PadSpec("b-mas-200", cupping_hu=6.0, streak=False, hidden_rod="", faint_rod="", sagitta_mm=0.0,
                   rod_diameter_mm=26.0, pitch_ratio=2.0, fov_cut_mm=10.0, end_margin_mm=20.0)
    case = make_case(5, CaseSpec(pad=spec, levels=("L4",), spacing_mm=(2.5, 0.8, 0.8)))
    v, ph = case.volume, case.truth.phantom
    half_fov = 0.5 * v.shape[2] * v.spacing[2]
    assert ph.pad["fov_cut_mm"] == 10.0
    assert max(abs(ph.x_range_mm[0]), abs(ph.x_range_mm[1])) == pytest.approx(half_fov + 10.0, abs=1.0)  # its end out
    jj, ii = np.mgrid[: v.shape[1], : v.shape[2]]
    for r in ph.rods:
        idx = v.lps_to_index(np.array(r.centre_lps))
        assert r.radius_mm < half_fov - abs(r.centre_lps[0])  # the rods inside
        core = np.hypot((jj - idx[1]) * v.spacing[1], (ii - idx[2]) * v.spacing[2]) <= 0.5 * r.radius_mm
        expected = r.hu + 6.0 * (r.centre_lps[0] / 150.0) ** 2
        assert float(v.array[:, core].mean()) == pytest.approx(expected, abs=2.0), r.name
