"""Issue 18: rods told by the fit and the row's geometry, streaks, the pad's shading (calibrate/pad.py,
rods.py, phantom.assign_by_fit), on fabricated measurements and on generated pads."""

import numpy as np
import pytest

from bmdpipe.calibrate.attenuation import mineral_slope_hu_per_mg_cm3
from bmdpipe.calibrate.definitions import load_phantom
from bmdpipe.calibrate.pad import predicted_positions
from bmdpipe.calibrate.phantom import assign_by_fit, calibrate_with_phantom
from bmdpipe.calibrate.rods import RodMeasurement, streak_free_slices
from bmdpipe.config import CalibrationSettings
from bmdpipe.errors import CalibrationError
from bmdpipe.synthetic import CaseSpec, PadSpec, make_case

SPACING = (2.5, 0.8, 0.8)  # rods of 10-30 mm stay >= 12 px across


def _rod(hu: float, column_px: float, row_px: float = 100.0) -> RodMeasurement:
    return RodMeasurement(center_kji=(10.0, row_px, column_px), axis_ji_per_k=(0.0, 0.0), radius_mm=8.0,
                          core_radius_mm=4.8, hu_mean=hu, hu_sd=15.0, n_voxels=2000, n_slices=20, k_range=(0, 19))


def _error_at_150(cal, scanner) -> float:
    return float(cal.density(scanner.intercept_hu + scanner.slope_hu_per_mg_cm3 * 150.0) - 150.0) / 150.0


def test_a_streak_is_left_out_and_a_drift_kept():
    """Slice means with noise 1.5 HU: a streak of +30 HU on 4 of 48 slices is left out (and nothing else);
    the real Calgary rod's drift along z (25 to -3 HU over 9 slices) is kept whole: trimming it would
    move the rod's mean by several HU."""
    rng = np.random.default_rng(3)
    means = 112.0 + rng.normal(0.0, 1.5, 48)
    means[20:24] += 30.0
    ok = streak_free_slices(means, 3.5, 8.0)
    assert not ok[20:24].any() and ok[:20].all() and ok[24:].all()
    drift = np.array([25.2, 16.8, 11.2, 7.2, 5.2, -1.8, -1.4, -2.8, 2.3])
    assert streak_free_slices(drift, 3.5, 8.0).all()


def test_predicted_positions_keep_the_row_without_holes():
    """Rods at columns 100, 140 and 220 with the definition's pitch of 32 mm (40 px at 0.8 mm): one rod
    missing must fill the gap of two pitches (180); with two missing the second may extend the row one
    pitch beyond either end (60 or 260). Without the pitch the same follows from the gaps (a pitch of
    20 px would leave three empty places inside)."""
    rods = [_rod(0.0, 100.0), _rod(100.0, 140.0), _rod(300.0, 220.0)]

    def places(n_missing, pitch_mm=None):
        return sorted(round(p[2]) for p in predicted_positions(rods, n_missing, 0.8, pitch_mm=pitch_mm))

    assert places(1, 32.0) == [180] and places(1) == [180]
    assert places(2, 32.0) == [60, 180, 260] and places(2) == [60, 180, 260]


def test_assignment_by_fit_names_the_missing_rod():
    """B-MAS 200 (0-200 mg HA/cm3) with HA100 absent: the four rods found lie on the 70 keV line only when
    HA100 is the one left out; it is named and the fit is the line."""
    slope = mineral_slope_hu_per_mg_cm3("HA", 70.0)
    rods = [_rod(5.0 + slope * m, 100.0 + 30 * i) for i, m in enumerate((0, 50, 150, 200))]
    best, rivals = assign_by_fit(rods, [], load_phantom("b-mas-200"), CalibrationSettings())
    assert best.missing == ("HA100",) and not rivals
    assert best.fit.slope_hu_per_mg_cm3 == pytest.approx(slope, rel=1e-6)
    assert best.fit.intercept_hu == pytest.approx(5.0, abs=1e-6)


def test_assignment_that_fits_two_ways_is_ambiguous():
    """Four evenly spaced rods at 20-200 HU: with HA200 left out the intercept is 20 HU, with HA0 left out
    it is -40 HU; both are physical lines, 50 mg/cm3 apart. Both pairings are returned and an end rod
    measured where the geometry puts it settles it (the one that reads the fit's prediction)."""
    slope = mineral_slope_hu_per_mg_cm3("HA", 70.0)
    hu = [20.0 + slope * m for m in (0, 50, 100, 150)]
    rods = [_rod(h, 100.0 + 30 * i) for i, h in enumerate(hu)]
    d, s = load_phantom("b-mas-200"), CalibrationSettings()
    best, rivals = assign_by_fit(rods, [], d, s)
    names = {best.missing} | {r.missing for r in rivals}
    assert names == {("HA0",), ("HA200",)}
    beyond = _rod(20.0 + slope * 200.0, 220.0)  # the fifth rod, HA200, measured beyond the row's end
    best, rivals = assign_by_fit(rods, [beyond], d, s)
    assert best.inferred == ("HA200",) and best.missing == () and not rivals


def _pad_case(seed: int, **pad) -> tuple:
    spec = PadSpec("qrm-bdc-6", streak=False, fov_cut_mm=0.0, **pad)
    case = make_case(seed, CaseSpec(pad=spec, levels=("L4",), spacing_mm=SPACING))
    return case, load_phantom("qrm-bdc-6")


def test_cupped_pad_rods_read_as_at_the_isocentre():
    """A flat pad 60 mm off the midline, its low rods furthest out, cupping 6 HU at 150 mm: every rod reads
    the cupping at its own place (HA0 +5 HU); the correction measured on the pad matches the truth within
    0.6 HU for each rod, and the calibration is within 0.5 % at 150 mg/cm3. Without the correction the
    same scan is more than 0.5 % off (the low rods carry the density at 150 mg/cm3)."""
    case, d = _pad_case(31, cupping_hu=6.0, offset_mm=60.0, sagitta_mm=0.0, hidden_rod="", faint_rod="",
                        order="reversed", rod_diameter_mm=20.0, pitch_ratio=1.6, height_mm=40.0)
    cal = calibrate_with_phantom(case.volume, d)
    truth = {r.name: 6.0 * (r.centre_lps[0] / 150.0) ** 2 for r in case.truth.phantom.rods}
    for ref, corr in zip(cal.references, cal.details["rod_shading_correction_hu"]):
        assert corr == pytest.approx(truth[ref.name], abs=0.6), ref.name
    assert max(truth.values()) > 5.0  # the far rods read several HU high
    err = _error_at_150(cal, case.truth.scanner)
    raw = calibrate_with_phantom(case.volume, d, CalibrationSettings(rod_pad_shading_correction=False))
    assert abs(err) < 0.005
    assert abs(_error_at_150(raw, case.truth.scanner)) > 0.005


def test_hidden_rod_is_measured_where_the_row_puts_it_and_marked_on_the_qc_figure():
    """HA0 water-equivalent to the pad (no edge) in the middle of a shuffled row: all six rods calibrate,
    HA0 measured within 1 mm of its true centre and found by 'geometry'; the QC figure draws it cyan and
    dotted and names it '(geometry)'; accurate within 0.5 % at 150 mg/cm3."""
    from bmdpipe.report.calibration_plot import plot_calibration

    case, d = _pad_case(32, hidden_rod="HA0", order="shuffled", cupping_hu=0.0, height_mm=30.0,
                        rod_diameter_mm=18.0)
    cal = calibrate_with_phantom(case.volume, d)
    assert len(cal.references) == 6 and cal.details["missing_rods"] == []
    how = dict(zip((r.name for r in cal.references), cal.details["rod_found_by"]))
    assert how.pop("HA0") == "geometry" and set(how.values()) == {"edge"}
    ha0 = next(r for r in cal.references if r.name == "HA0")
    truth = next(r for r in case.truth.phantom.rods if r.name == "HA0")
    assert np.linalg.norm(np.subtract(ha0.center_lps[:2], truth.centre_lps[:2])) < 1.0
    assert abs(_error_at_150(cal, case.truth.scanner)) < 0.005
    ax3 = plot_calibration(cal, case.volume).axes[2]
    dotted = [p for p in ax3.patches if p.get_linestyle() == ":"]
    assert len(dotted) == 1 and dotted[0].get_edgecolor()[:3] == pytest.approx((0.0, 1.0, 1.0))
    assert "HA0 (geometry)" in [t.get_text() for t in ax3.texts]


def test_missing_rod_is_in_the_qc_title_and_a_wrong_definition_is_refused():
    """The pad cut by the field of view at its HA800 end loses that rod: the QC title names it missing.
    The 3-rod definition on the 6-rod pad is refused, as no pairing of 3 of its rods is this phantom."""
    from bmdpipe.report.calibration_plot import plot_calibration

    case, d = _pad_case(33, order="file", cupping_hu=0.0, hidden_rod="", faint_rod="", sagitta_mm=0.0,
                        rod_diameter_mm=16.0, pitch_ratio=1.5)
    v = case.volume
    x_cut = next(r for r in case.truth.phantom.rods if r.name == "HA800").centre_lps[0]
    i = int(round(v.lps_to_index(np.array([x_cut, 0.0, 0.0]))[2]))
    a = v.array.copy()
    if v.direction[0, 0] > 0:
        a[:, :, i:] = -1024.0
    else:
        a[:, :, : i + 1] = -1024.0
    cal = calibrate_with_phantom(v.with_array(a), d)
    assert cal.details["missing_rods"] == ["HA800"]
    assert "missing: HA800" in plot_calibration(cal, v).axes[2].get_title()
    with pytest.raises(CalibrationError):
        calibrate_with_phantom(case.volume, load_phantom("qrm-bdc-3"))


def _bench_pad_case(seed: int):
    """A case of the ``pads`` bench suite (scripts/bench/calibration_accuracy.py) on its grid."""
    definitions = ("mindways-model3-ct", "qrm-bdc-6", "qrm-bdc-3", "b-mas-200", "image-analysis-qct-3d-plus")
    d = definitions[seed % len(definitions)]
    case = make_case(seed, CaseSpec(pad=PadSpec(d), levels=("L3", "L4"), spacing_mm=(2.0, 0.8, 0.8)))
    return case, load_phantom(d)


def test_a_row_of_anatomy_does_not_pass_for_the_pad():
    """Bench seed 1034: the pad's middle rod is fainter than the noise, so the pad shows 2 of its 3 rods,
    while three round structures in the abdomen (3, 68 and 151 HU, one seen in half the slices) once
    fitted the 3-rod certificate (+61 % at 150 mg/cm3, no warning). The pad's row, completed from its
    geometry, is taken: within 0.5 %, its rods within 2 mm of their true centres."""
    case, d = _bench_pad_case(1034)
    cal = calibrate_with_phantom(case.volume, d)
    assert abs(_error_at_150(cal, case.truth.scanner)) < 0.005
    assert cal.details["rod_found_by"].count("geometry") == 1
    truth = {r.name: r.centre_lps for r in case.truth.phantom.rods}
    for ref in cal.references:
        assert np.linalg.norm(np.subtract(ref.center_lps[:2], truth[ref.name][:2])) < 2.0, ref.name


def test_of_two_partial_rows_the_one_accounting_for_every_rod_is_taken():
    """Bench seed 2077: a 3-rod pad with its HA100 rod faint. A circle of pad resin next to HA400 pairs
    with it as HA100 + HA400 (HA800 then missing: -2.9 %); the row of HA800 and HA400, two pitches apart,
    takes HA100 from the geometry between them and accounts for all three: within 0.5 %."""
    case, d = _bench_pad_case(2077)
    cal = calibrate_with_phantom(case.volume, d)
    assert cal.details["missing_rods"] == [] and len(cal.references) == 3
    assert abs(_error_at_150(cal, case.truth.scanner)) < 0.005


def test_rows_whose_rods_run_through_the_scan_are_tried_first():
    """A row with a member seen in 23 of 47 slices (a vessel, bowel) does not span the scan; a rod with
    slices left out as streaked still does (seen, not used)."""
    from dataclasses import replace

    from bmdpipe.calibrate.phantom import _spans_scan

    s = CalibrationSettings()
    rods = [replace(_rod(100.0, c), n_slices=47) for c in (100.0, 140.0)]
    assert _spans_scan(rods, 47, s)
    assert not _spans_scan(rods + [replace(_rod(150.0, 180.0), n_slices=23)], 47, s)
    assert _spans_scan(rods + [replace(_rod(150.0, 180.0), n_slices=31, n_outlier_slices=16)], 47, s)



def test_a_stray_object_off_the_end_of_a_straight_row_is_not_a_rod():
    """Bench seed 8033: a 5-rod pad whose water-like rod shows no edge; a 17 HU object in the pad 14 mm off the
    straight row of the other three took its place (and the HA200 rod then counted missing: +0.84 %). The
    quadratic through the other three misses it: dropped, HA0 placed by geometry, all five within 0.5 %."""
    case, d = _bench_pad_case(8033)
    cal = calibrate_with_phantom(case.volume, d)
    assert cal.details["missing_rods"] == [] and len(cal.references) == 5
    assert cal.details["rod_found_by"].count("geometry") == 1
    assert abs(_error_at_150(cal, case.truth.scanner)) < 0.005


def test_an_end_rod_on_a_curved_pad_is_placed_between_its_edges():
    """Bench seed 6189: a curved 3-rod pad (29 mm rods, 40 mm tall, 12 mm sagitta) whose 0 mg/cm3 end rod
    has no edge. Along the other two rods' chord its place lies ~13 mm off the pad's middle, where the rod
    does not fit; mid-way between the pad's edges it does: all three rods, within 0.5 % at 150 mg/cm3."""
    case, d = _bench_pad_case(6189)
    cal = calibrate_with_phantom(case.volume, d)
    assert cal.details["rod_found_by"].count("geometry") == 1 and cal.details["missing_rods"] == []
    assert abs(_error_at_150(cal, case.truth.scanner)) < 0.005
    truth = {r.name: r.centre_lps for r in case.truth.phantom.rods}
    for ref in cal.references:
        assert np.linalg.norm(np.subtract(ref.center_lps[:2], truth[ref.name][:2])) < 2.0, ref.name


def test_two_rods_left_are_refused():
    """The same pad cut by the field of view through its water rod: two rods fix a line with no residual
    to check it; refused, naming the rod (with phantom_min_rods 2 it calibrates, from two rods)."""
    case, d = _bench_pad_case(6189)
    truth = {r.name: case.volume.lps_to_index(np.array(r.centre_lps)) for r in case.truth.phantom.rods}
    cut = int(round(0.5 * (truth["R1"][2] + truth["R2"][2])))
    rows = slice(int(truth["R1"][1]) - 40, int(truth["R1"][1]) + 40)  # the pad's rows, +-32 mm
    cols = slice(cut, None) if truth["R1"][2] > truth["R2"][2] else slice(None, cut)
    arr = case.volume.array.copy()
    arr[:, rows, cols] = -1000.0
    cut_case = case.volume.with_array(arr)
    with pytest.raises(CalibrationError, match=r"R1 not found, and 2 rods leave no residual"):
        calibrate_with_phantom(cut_case, d)
    two = calibrate_with_phantom(cut_case, d, CalibrationSettings(phantom_min_rods=2))
    assert sorted(r.name for r in two.references) == ["R2", "R3"]
