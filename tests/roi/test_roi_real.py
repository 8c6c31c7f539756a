"""ROIs on the real 3 mm CT with TotalSegmentator labels: A inside each TotalSegmentator body."""

import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "anatomy"))
from _realdata import TS, need, nifti_volume  # noqa: E402

from bmdpipe.anatomy import load_labels, vertebrae_from_labels  # noqa: E402
from bmdpipe.config import Settings  # noqa: E402
from bmdpipe.measure import measure_roi, roi_label_map, roi_values  # noqa: E402
from bmdpipe.results import Region  # noqa: E402
from bmdpipe.roi import place_rois  # noqa: E402

pytestmark = pytest.mark.real_data


@pytest.fixture(scope="module")
def real():
    vol = nifti_volume(need(TS / "example_ct.nii.gz"))
    s = Settings()
    verts = vertebrae_from_labels(TS / "example_seg_fast_force_split.nii.gz", vol, s.anatomy)
    bodies, _, _ = load_labels(TS / "spine_report/totalseg_vertebrae_pp_refined.nii.gz", vol)
    return vol, verts, place_rois(vol, verts, s), bodies


def test_a_inside_each_totalsegmentator_body(real):
    """Every voxel of ROI A of L1..L5 lies in TotalSegmentator's body mask of the same level."""
    vol, verts, rois, bodies = real
    a = {r.vertebra: r for r in rois if r.region is Region.A}
    assert sorted(a) == ["L1", "L2", "L3", "L4", "L5"]
    for lvl, r in a.items():
        assert r.mask.sum() >= 5, lvl
        assert np.all(roi_values(bodies[lvl], r)), lvl
        m = measure_roi(vol, r, None)
        assert 60.0 < m.hu_mean < 250.0  # cancellous bone, not cortex or soft tissue


def test_label_map_codes_on_real_grid(real):
    vol, verts, rois, bodies = real
    lm = roi_label_map(vol.shape, rois, Region.A)
    assert set(np.unique(lm)) == {0, 200, 210, 220, 230, 240}
    assert np.all(bodies["L3"][lm == 220])
