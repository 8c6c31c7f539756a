"""Canonical (superior, posterior, left) frame: exact round trips for every scan orientation."""

import numpy as np
import pytest

from bmdpipe.anatomy.frame import CanonicalFrame
from bmdpipe.volume import Volume

ORIENTS = {
    "HFS": np.eye(3),
    "FFS": np.array([[-1, 0, 0], [0, 1, 0], [0, 0, -1]], float),
    "HFP": np.array([[-1, 0, 0], [0, -1, 0], [0, 0, 1]], float),
    "transposed": np.array([[0, 0, 1], [1, 0, 0], [0, -1, 0]], float),
}


@pytest.mark.parametrize("name", sorted(ORIENTS))
def test_canonical_axes_point_superior_posterior_left(name):
    """Moving +1 along a canonical axis moves +spacing along LPS z, y, x respectively."""
    rng = np.random.default_rng(0)
    vol = Volume(rng.normal(size=(7, 9, 11)).astype(np.float32), spacing=(2.0, 0.5, 0.7),
                 origin=(3.0, -4.0, 10.0), direction=ORIENTS[name])
    fr = CanonicalFrame.of(vol)
    p0 = fr.canonical_to_lps(vol, [1.0, 2.0, 3.0])
    for c, lps_comp in ((0, 2), (1, 1), (2, 0)):
        step = np.zeros(3)
        step[c] = 1.0
        d = fr.canonical_to_lps(vol, np.array([1.0, 2.0, 3.0]) + step) - p0
        assert d[lps_comp] == pytest.approx(fr.spacing[c])
        assert np.abs(np.delete(d, lps_comp)).max() < 1e-9
    # the canonical view holds the same voxel values
    can = fr.to_canonical(vol.array)
    idx = fr.canonical_to_index(np.array([1, 2, 3]))
    assert can[1, 2, 3] == vol.array[tuple(int(v) for v in idx)]


@pytest.mark.parametrize("name", sorted(ORIENTS))
def test_box_round_trip(name):
    """A box mapped to the original grid and back is unchanged, and lands on the same voxels."""
    rng = np.random.default_rng(1)
    vol = Volume(np.zeros((12, 13, 14), np.float32), spacing=(1, 1, 1), direction=ORIENTS[name])
    fr = CanonicalFrame.of(vol)
    m = rng.random((3, 4, 5)) > 0.5
    off = (2, 3, 4)
    oo, om = fr.box_to_original(off, m)
    full_o = np.zeros(vol.shape, bool)
    full_o[tuple(slice(o, o + n) for o, n in zip(oo, om.shape))] = om
    full_c = np.zeros(fr.shape, bool)
    full_c[2:5, 3:7, 4:9] = m
    assert np.array_equal(fr.to_canonical(full_o), full_c)
    off2, m2 = fr.box_to_canonical(oo, om)
    assert off2 == off and np.array_equal(m2, m)
