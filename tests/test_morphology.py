"""Morphology in mm (bmdpipe.morphology) against scipy's binary morphology with an explicit ball."""

import numpy as np
import pytest
from scipy import ndimage as ndi

from bmdpipe.morphology import dilate_mm, distance_mm, erode_mm, open_mm


def _ball(radius_mm: float, spacing) -> np.ndarray:
    """Every voxel offset within ``radius_mm`` (the structuring element scipy needs)."""
    n = [int(np.ceil(radius_mm / s)) for s in spacing]
    grid = np.meshgrid(*[np.arange(-k, k + 1) * s for k, s in zip(n, spacing)], indexing="ij")
    return sum(g**2 for g in grid) <= radius_mm**2


def _blobs(seed: int, shape=(24, 40, 36)) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return ndi.gaussian_filter(rng.random(shape), 2.0) > 0.5


# radii off the lattice distances, so that no voxel sits at exactly the radius (float32 ties)
@pytest.mark.parametrize("spacing,radius", [((1.0, 1.0, 1.0), 2.3), ((2.0, 0.7, 0.9), 3.1), ((0.5, 1.3, 2.2), 4.05)])
@pytest.mark.parametrize("seed", [0, 1])
def test_dilate_erode_open_equal_scipy_with_a_ball(spacing, radius, seed):
    mask = _blobs(seed)
    ball = _ball(radius, spacing)
    np.testing.assert_array_equal(dilate_mm(mask, radius, spacing), ndi.binary_dilation(mask, ball))
    # scipy's erosion counts the border as background by default, as erode_mm does
    np.testing.assert_array_equal(erode_mm(mask, radius, spacing), ndi.binary_erosion(mask, ball))
    np.testing.assert_array_equal(open_mm(mask, radius, spacing), ndi.binary_opening(mask, ball))


def test_distance_equals_scipy_and_edge_cases():
    mask = _blobs(3)
    spacing = (1.7, 0.6, 1.1)
    np.testing.assert_allclose(distance_mm(mask, spacing), ndi.distance_transform_edt(mask, sampling=spacing),
                               atol=1e-5)
    empty = np.zeros((5, 6, 7), bool)
    assert not dilate_mm(empty, 3.0, spacing).any()
    np.testing.assert_array_equal(erode_mm(mask, 0.0, spacing), mask)
    full = np.ones((5, 6, 7), bool)
    assert erode_mm(full, 1.0, (1.0, 1.0, 1.0)).sum() == 3 * 4 * 5  # one voxel off every face


def test_fill_holes_is_scipys_binary_fill_holes():
    """Random masks in 2-D and 3-D (opened noise, a hollow ellipsoid with speckle, holes touching the
    border, empty and full arrays): the same voxels as scipy.ndimage.binary_fill_holes."""
    from scipy import ndimage as ndi

    from bmdpipe.morphology import fill_holes

    rng = np.random.default_rng(7)
    cases = [np.zeros((5, 6, 7), bool), np.ones((5, 6, 7), bool), np.zeros((0, 4), bool)]
    for shape in [(30, 40), (12, 30, 40), (1, 20, 20)]:
        cases.append(ndi.binary_opening(rng.random(shape) < 0.55))
        grid = np.ogrid[tuple(slice(0, n) for n in shape)]
        r = sum(((g - n / 2) / (n / 2.5)) ** 2 for g, n in zip(grid, shape))
        cases.append(((r < 1) & (r > 0.3)) | ((r <= 0.3) & (rng.random(shape) < 0.2)))
        cases.append(rng.random(shape) < 0.7)
    for m in cases:
        assert np.array_equal(fill_holes(m), ndi.binary_fill_holes(m)), m.shape
