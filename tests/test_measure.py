"""measure_roi row values and ROI label maps (independent numpy computations)."""

from dataclasses import replace

import numpy as np
import pytest

from bmdpipe.measure import imprecise_roi_note, measure_roi, refused_roi_note, roi_label_map, roi_values
from bmdpipe.noise import NoiseLevel, NoiseModel
from bmdpipe.results import Calibration, Material, Region, Roi, Side
from bmdpipe.rows import VbmdRow
from bmdpipe.volume import Volume


def _roi(offset, mask, region=Region.A, side=Side.center, code=230, n_cand=None, n_exc=0):
    return Roi(vertebra="L4", verse_id=23, region=region, side=side, offset=offset, mask=mask,
               n_candidates=n_cand if n_cand is not None else int(mask.sum()), n_excluded=n_exc,
               label_code=code)


def _row(vertebra, region, side, n_voxels, se):
    """A vbmd.csv row with only what imprecise_roi_note reads."""
    nan = float("nan")
    return VbmdRow(study_id="", timepoint="", series_uid="", vertebra=vertebra, region=Region(region),
                   side=Side(side), vbmd_mg_cm3=nan, material=None, hu_mean=nan, hu_median=nan, hu_sd=nan,
                   n_voxels=n_voxels, volume_mm3=0.0, excluded_fraction=0.0, calibration="", roi_source="auto",
                   vbmd_se_mg_cm3=se)


def test_measure_values():
    rng = np.random.default_rng(0)
    arr = rng.normal(150, 20, (10, 12, 14)).astype(np.float32)
    vol = Volume(arr, spacing=(1.0, 0.5, 0.5))
    mask = rng.random((4, 5, 6)) > 0.4
    roi = _roi((2, 3, 4), mask, n_cand=int(mask.sum()) + 10, n_exc=10)
    cal = Calibration("phantom", "x", Material.K2HPO4, slope_hu_per_mg_cm3=1.25, intercept_hu=-10.0)
    m = measure_roi(vol, roi, cal, NoiseModel.white(20.0, vol.spacing), precision_cv_percent=1.6)
    vals = arr[2:6, 3:8, 4:10][mask]
    assert m.n_voxels == vals.size
    assert m.hu_mean == pytest.approx(vals.mean(), rel=1e-6)
    assert m.hu_median == pytest.approx(np.median(vals), rel=1e-6)
    assert m.hu_sd == pytest.approx(vals.std(ddof=1), rel=1e-5)
    assert m.vbmd_mg_cm3 == pytest.approx((vals.mean() + 10.0) / 1.25, rel=1e-6)
    assert m.vbmd_sd_mg_cm3 == pytest.approx(vals.std(ddof=1) / 1.25, rel=1e-5)
    assert m.vbmd_se_mg_cm3 == pytest.approx(20.0 / 1.25 / np.sqrt(vals.size), rel=1e-6)  # white noise
    assert m.n_effective == pytest.approx(vals.size) and m.noise_sd_hu == pytest.approx(20.0)
    assert m.vbmd_precision_sd_mg_cm3 == pytest.approx(0.016 * m.vbmd_mg_cm3, rel=1e-9)
    assert m.volume_mm3 == pytest.approx(vals.size * 0.25)
    assert m.excluded_fraction == pytest.approx(10 / (vals.size + 10))


def test_measure_without_calibration_and_empty():
    """No calibration: HU only, densities NaN; an empty ROI: NaN everywhere, 0 voxels, 0 mm3."""
    arr = np.zeros((3, 3, 3), np.float32)
    arr[0, 0, 0], arr[0, 0, 1] = 100.0, 200.0
    vol = Volume(arr, spacing=(2.0, 1.0, 1.0))
    m = measure_roi(vol, _roi((0, 0, 0), np.ones((1, 1, 2), bool)))
    assert m.hu_mean == pytest.approx(150.0) and m.hu_sd == pytest.approx(np.std([100, 200], ddof=1))
    assert m.volume_mm3 == pytest.approx(2 * 2.0)
    assert np.isnan(m.vbmd_mg_cm3) and np.isnan(m.vbmd_se_mg_cm3) and m.material is None
    cal = Calibration("phantom", "x", Material.K2HPO4, slope_hu_per_mg_cm3=1.25, intercept_hu=-10.0)
    assert np.isnan(measure_roi(vol, _roi((0, 0, 0), np.ones((1, 1, 2), bool)), cal).vbmd_se_mg_cm3)  # no noise model
    empty = measure_roi(vol, _roi((0, 0, 0), np.zeros((1, 1, 1), bool)), Calibration(
        "phantom", "x", Material.K2HPO4, slope_hu_per_mg_cm3=1.25, intercept_hu=-10.0))
    assert empty.n_voxels == 0 and empty.volume_mm3 == 0.0
    assert np.isnan(empty.hu_mean) and np.isnan(empty.vbmd_mg_cm3) and np.isnan(empty.vbmd_se_mg_cm3)


def test_label_map_codes():
    m = np.ones((2, 2, 2), bool)
    rois = [_roi((0, 0, 0), m, Region.B, Side.left, 231), _roi((3, 3, 3), m, Region.B, Side.right, 232),
            _roi((1, 1, 1), m, Region.A, Side.center, 230)]
    lm = roi_label_map((6, 6, 6), rois, "B")
    assert lm.dtype == np.uint16
    assert set(np.unique(lm)) == {0, 231, 232}
    assert lm[0, 0, 0] == 231 and lm[4, 4, 4] == 232 and lm[1, 1, 1] == 231
    assert (roi_label_map((6, 6, 6), rois, Region.A) == 230).sum() == 8
    assert roi_values(lm, rois[1]).tolist() == [232] * 8


def test_standard_error_is_the_spread_of_the_mean_over_correlated_noise():
    """Independent check of vbmd_se_mg_cm3: the SD of one ROI's mean over 400 draws of noise correlated
    by a 3-tap filter along x, with the noise model the filter implies; SD / sqrt(n) would be 1.6 x too
    small. The precision column is left empty outside ROI A."""
    rng = np.random.default_rng(1)
    mask = np.ones((6, 6, 6), bool)
    cal = Calibration("phantom", "x", Material.K2HPO4, slope_hu_per_mg_cm3=1.4, intercept_hu=0.0)
    acov = np.zeros((1, 1, 5))
    acov[0, 0, :] = np.array([1.0, 2.0, 3.0, 2.0, 1.0]) * 25.0 ** 2 / 3.0  # filter [1, 1, 1] / sqrt(3)
    model = NoiseModel(acov, (1.0, 1.0, 1.0))
    roi = _roi((0, 0, 0), mask, region=Region.B, side=Side.left, code=231)
    means, ses = [], []
    for _ in range(400):
        white = rng.normal(0.0, 25.0, (6, 6, 8))
        noise = (white[..., :-2] + white[..., 1:-1] + white[..., 2:]) / np.sqrt(3.0)
        m = measure_roi(Volume((120.0 + noise).astype(np.float32), (1.0, 1.0, 1.0)), roi, cal, model,
                        precision_cv_percent=1.6)
        means.append(m.vbmd_mg_cm3)
        ses.append(m.vbmd_se_mg_cm3)
    assert np.std(means) == pytest.approx(ses[0], rel=0.1)
    assert ses[0] > 1.5 * 25 / 1.4 / np.sqrt(mask.sum())
    assert np.isnan(m.vbmd_precision_sd_mg_cm3)


def test_noise_level_map_scales_the_standard_error():
    """An ROI where the mapped noise variance is 1.5 x the uniform regions' mean gets sqrt(1.5) x the SE."""
    level = NoiseLevel(inplane=(0.0,) * 5, centre_mm=(0.0, 0.0), slab_z_mm=(0.0, 10.0),
                       slab_offsets=(0.0, 2 * np.log(1.5)), max_ratio=2.0)
    flat = NoiseModel.white(20.0, (1.0, 1.0, 1.0))
    mapped = NoiseModel(flat.autocovariance_hu2, flat.spacing, level=level)
    vol = Volume(np.full((12, 4, 4), 100.0, np.float32), (1.0, 1.0, 1.0))
    roi = _roi((4, 0, 0), np.ones((2, 4, 4), bool))  # centroid z = 4.5 mm: log ratio 0.45 x 2 ln 1.5
    cal = Calibration("phantom", "x", Material.K2HPO4, slope_hu_per_mg_cm3=1.0, intercept_hu=0.0)
    ratio = measure_roi(vol, roi, cal, mapped).vbmd_se_mg_cm3 / measure_roi(vol, roi, cal, flat).vbmd_se_mg_cm3
    assert ratio == pytest.approx(1.5 ** 0.45, rel=1e-9)
    assert level.ratio((100.0, 0.0, 0.0)) == pytest.approx(2.0)  # beyond the last slab: its level, capped


def test_imprecise_rois_are_named_in_one_note():
    rows = [_row("L4", "A", "center", 5000, 0.2), _row("L4", "B", "left", 40, 4.31),
            _row("L5", "B", "right", 0, float("nan"))]
    note = imprecise_roi_note(rows, 3.0)
    assert "L4 B left +-4.3 (40 voxels)" in note and "L5 B right empty" in note and "L4 A" not in note
    assert "roi.max_standard_error_mg_cm3" in note
    assert imprecise_roi_note(rows[:1], 3.0) == ""


def test_empty_pedicle_roi_beside_a_screw_names_the_screw():
    """Post-operative scan: a B left empty on a side holding a screw says so; elsewhere the generic cause."""
    rows = [_row(v, "B", sd, 0, float("nan")) for v, sd in (("L4", "left"), ("L4", "right"), ("L5", "left"))]
    rows.append(_row("L5", "C", "right", 0, float("nan")))
    note = imprecise_roi_note(rows, 3.0, screw_sides={("L4", "left"), ("L5", "right")})
    assert "L4 B left empty (the screw fills the pedicle)" in note
    assert "L4 B right empty (every voxel excluded)" in note
    assert "L5 B left empty (every voxel excluded)" in note
    assert "L5 C right empty (every voxel excluded)" in note


def _cancellous_roi_volume(n_air=0, n_metal=0):
    """A 1 x 10 x 10 ROI of cancellous bone (150 +- 20 HU) with ``n_air`` voxels of air and ``n_metal`` of titanium."""
    arr = np.random.default_rng(3).normal(150, 20, (1, 10, 10)).astype(np.float32)
    flat = arr.reshape(-1)
    flat[:n_air] = -1024.0
    flat[n_air:n_air + n_metal] = 3071.0
    return Volume(arr, spacing=(1.0, 1.0, 1.0)), _roi((0, 0, 0), np.ones((1, 10, 10), bool))


CAL = Calibration("phantom", "x", Material.K2HPO4, slope_hu_per_mg_cm3=1.25, intercept_hu=-10.0)


@pytest.mark.parametrize("n_air, n_metal, refused, fragment", [
    (2, 0, False, ""),                                      # 2 % of air: at plausibility.max_air_fraction
    (3, 0, True, "3 % of its voxels below -500 HU (air or gas"),
    (0, 2, False, ""),
    (0, 3, True, "3 % of its voxels above 2000 HU (metal or cement)"),
    (20, 0, True, "20 % of its voxels below -500 HU"),      # one slice of air in five (issue 20)
])
def test_plausibility_gate_on_air_and_metal(n_air, n_metal, refused, fragment):
    """An ROI holding more than 2 % air-valued or metal-valued voxels keeps its voxel count and volume, but
    its HU and density columns are empty and ``reason`` says why; at 2 % it is measured as usual."""
    vol, roi = _cancellous_roi_volume(n_air, n_metal)
    m = measure_roi(vol, roi, CAL)
    vals = vol.array.reshape(-1).astype(np.float64)
    assert m.n_voxels == 100 and m.volume_mm3 == pytest.approx(100.0)
    if refused:
        assert fragment in m.reason and m.reason.startswith("implausible, values left empty")
        for column in ("vbmd_mg_cm3", "hu_mean", "hu_median", "hu_sd", "vbmd_median_mg_cm3", "vbmd_sd_mg_cm3",
                       "vbmd_se_mg_cm3"):
            assert np.isnan(getattr(m, column)), column
    else:
        assert m.reason == ""
        assert m.hu_mean == pytest.approx(vals.mean(), rel=1e-6)
        assert m.vbmd_mg_cm3 == pytest.approx((vals.mean() + 10.0) / 1.25, rel=1e-6)


def test_plausibility_gate_on_the_vbmd_range():
    """A calibrated mean outside plausibility.min/max_vbmd_mg_cm3 is refused; uncalibrated, only HU is gated."""
    vol, roi = _cancellous_roi_volume()
    mean_hu = float(vol.array.mean())
    below = Calibration("phantom", "x", Material.K2HPO4, slope_hu_per_mg_cm3=1.25, intercept_hu=mean_hu + 1.25 * 51)
    m = measure_roi(vol, roi, below)
    assert np.isnan(m.vbmd_mg_cm3) and "vBMD -51.0 mg/cm3 outside the physical range -50..1500" in m.reason
    inside = Calibration("phantom", "x", Material.K2HPO4, slope_hu_per_mg_cm3=1.25, intercept_hu=mean_hu + 1.25 * 49)
    assert measure_roi(vol, roi, inside).vbmd_mg_cm3 == pytest.approx(-49.0, abs=1e-4)
    from bmdpipe.config import PlausibilitySettings

    strict = PlausibilitySettings(max_vbmd_mg_cm3=100.0)
    assert "outside the physical range -50..100" in measure_roi(vol, roi, CAL, plausibility=strict).reason
    assert measure_roi(vol, roi, None, plausibility=strict).reason == ""


def test_refused_rois_are_named_in_one_note():
    rows = [replace(_row("L4", "A", "center", 100, 0.2), reason="implausible, values left empty: ..."),
            _row("L5", "A", "center", 100, 0.2)]
    assert refused_roi_note(rows) == "implausible ROIs left empty, see vbmd.csv reason: L4 A center"
    assert refused_roi_note(rows[1:]) == ""
