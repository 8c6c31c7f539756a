"""Per-vertebra geometry from labels against the synthetic generator's truth."""

import numpy as np
import pytest

from _synth_cases import case
from bmdpipe.anatomy import vertebrae_from_label_map
from bmdpipe.config import AnatomySettings
from bmdpipe.results import Side


@pytest.mark.parametrize("seed,orientation", [(11, "FFS"), (12, "HFP")])
def test_geometry_matches_truth(seed, orientation):
    """Body centre within 1.5 mm, width/depth within 4 mm, pedicle isthmus within 4 mm, target within 6 mm."""
    c = case(seed, orientation)
    verts = vertebrae_from_label_map(c.labels, c.volume, AnatomySettings())
    assert [v.name for v in verts] == list(c.truth.spec.levels)
    for v in verts:
        t = c.truth.vertebra(v.name)
        assert np.linalg.norm(np.subtract(v.body_center_lps, t.body_center_lps)) < 1.5
        assert v.body_width_mm == pytest.approx(t.body_width_mm, abs=4.0)
        assert v.body_depth_mm == pytest.approx(t.body_depth_mm, abs=4.0)
        assert v.body_height_mm == pytest.approx(t.body_height_mm, abs=4.0)
        assert {p.side for p in v.pedicles} == {Side.left, Side.right}
        for p in v.pedicles:
            tp = t.pedicle(p.side)
            assert np.linalg.norm(np.subtract(p.isthmus_lps, tp.isthmus_lps)) < 4.0, (v.name, p.side)
            assert np.linalg.norm(np.subtract(p.target_lps, tp.target_lps)) < 6.0, (v.name, p.side)
            # the left pedicle lies at +x (patient's left) of the body centre, whatever the orientation
            sign = 1 if p.side is Side.left else -1
            assert sign * (p.isthmus_lps[0] - v.body_center_lps[0]) > 5.0
        # canal posterior to the body (+y in LPS)
        assert v.canal_center_lps[1] > v.body_center_lps[1] + 10.0


@pytest.mark.parametrize("orientation", ["HFS", "FFS"])
def test_scan_edge_cut_names_the_cut_end(orientation):
    """The scan cropped through the middle of the superior body (L3): L3 is cut at the superior end,
    L4 and L5 are whole; with the crop at the inferior body (L5) it is the inferior end. Slice order
    (head or feet first) does not matter: the end is named from the LPS z of the slices."""
    from bmdpipe.anatomy import scan_edge_cut
    from bmdpipe.volume import Volume

    c = case(11, orientation)
    vol = c.volume
    z = vol.index_to_lps(np.stack([np.arange(vol.shape[0]), np.zeros(vol.shape[0]), np.zeros(vol.shape[0])], 1))[:, 2]
    for level, end in (("L3", "superior"), ("L5", "inferior")):
        zc = c.truth.vertebra(level).body_center_lps[2]
        keep = z <= zc if end == "superior" else z >= zc  # drop the slices beyond the body centre
        ks = np.flatnonzero(keep)
        crop = Volume(array=vol.array[ks[0]:ks[-1] + 1], spacing=vol.spacing,
                      origin=tuple(vol.index_to_lps(np.array([ks[0], 0.0, 0.0]))), direction=vol.direction,
                      meta=vol.meta)
        verts = vertebrae_from_label_map(c.labels[ks[0]:ks[-1] + 1], crop, AnatomySettings())
        cut = {v.name: scan_edge_cut(v, crop, 2.0) for v in verts}
        assert cut == {lv: (end if lv == level else "") for lv in ("L3", "L4", "L5")}
    # the whole case: nothing cut
    assert {scan_edge_cut(v, vol, 2.0) for v in vertebrae_from_label_map(c.labels, vol, AnatomySettings())} == {""}
