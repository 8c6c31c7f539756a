"""measure_roi row values and ROI label maps (independent numpy computations)."""

import numpy as np
import pytest

from bmdpipe.measure import measure_roi, roi_label_map, roi_values
from bmdpipe.results import Calibration, Material, Region, Roi, Side
from bmdpipe.volume import Volume


def _roi(offset, mask, region=Region.A, side=Side.center, code=230, n_cand=None, n_exc=0, weights=None):
    return Roi(vertebra="L4", verse_id=23, region=region, side=side, offset=offset, mask=mask,
               n_candidates=n_cand if n_cand is not None else int(mask.sum()), n_excluded=n_exc,
               label_code=code, weights=weights)


def test_measure_values():
    rng = np.random.default_rng(0)
    arr = rng.normal(150, 20, (10, 12, 14)).astype(np.float32)
    vol = Volume(arr, spacing=(1.0, 0.5, 0.5))
    mask = rng.random((4, 5, 6)) > 0.4
    roi = _roi((2, 3, 4), mask, n_cand=int(mask.sum()) + 10, n_exc=10)
    cal = Calibration("phantom", "x", Material.K2HPO4, slope_hu_per_mg_cm3=1.25, intercept_hu=-10.0)
    m = measure_roi(vol, roi, cal)
    vals = arr[2:6, 3:8, 4:10][mask]
    assert m["n_voxels"] == vals.size
    assert m["hu_mean"] == pytest.approx(vals.mean(), rel=1e-6)
    assert m["hu_median"] == pytest.approx(np.median(vals), rel=1e-6)
    assert m["hu_sd"] == pytest.approx(vals.std(ddof=1), rel=1e-5)
    assert m["vbmd_mg_cm3"] == pytest.approx((vals.mean() + 10.0) / 1.25, rel=1e-6)
    assert m["vbmd_sd_mg_cm3"] == pytest.approx(vals.std(ddof=1) / 1.25, rel=1e-5)
    assert m["volume_mm3"] == pytest.approx(vals.size * 0.25)
    assert m["excluded_fraction"] == pytest.approx(10 / (vals.size + 10))


def test_measure_weighted_and_empty():
    arr = np.zeros((3, 3, 3), np.float32)
    arr[0, 0, 0], arr[0, 0, 1] = 100.0, 200.0
    vol = Volume(arr, spacing=(2.0, 1.0, 1.0))
    mask = np.zeros((1, 1, 2), bool)
    mask[:] = True
    w = np.array([[[1.0, 0.25]]])
    m = measure_roi(vol, _roi((0, 0, 0), mask, weights=w))
    assert m["hu_mean"] == pytest.approx((100 + 0.25 * 200) / 1.25)
    assert m["volume_mm3"] == pytest.approx(1.25 * 2.0)
    assert np.isnan(m["vbmd_mg_cm3"])  # no calibration
    empty = measure_roi(vol, _roi((0, 0, 0), np.zeros((1, 1, 1), bool)))
    assert empty["n_voxels"] == 0 and np.isnan(empty["hu_mean"])


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
