"""Volume geometry: index <-> LPS mapping and the affine."""

import numpy as np
import pytest

from bmdpipe.volume import Volume


def _oblique_volume():
    theta = np.deg2rad(20)
    # columns: i axis, j axis, k axis in LPS
    direction = np.array(
        [[np.cos(theta), 0, np.sin(theta)], [0, 1, 0], [-np.sin(theta), 0, np.cos(theta)]]
    )
    return Volume(np.zeros((4, 5, 6), np.float32), spacing=(2.5, 0.7, 0.8),
                  origin=(-10.0, 20.0, -300.0), direction=direction)


def test_index_to_lps_matches_dicom_formula():
    """LPS = origin + i*dx*col_dir + j*dy*row_dir + k*dz*slice_dir (DICOM PS3.3 C.7.6.2.1.1)."""
    v = _oblique_volume()
    k, j, i = 3, 2, 5
    d = v.direction
    expected = np.array(v.origin) + i * 0.8 * d[:, 0] + j * 0.7 * d[:, 1] + k * 2.5 * d[:, 2]
    np.testing.assert_allclose(v.index_to_lps([k, j, i]), expected)


def test_lps_to_index_inverts_index_to_lps():
    """Round trip over random fractional indices."""
    v = _oblique_volume()
    idx = np.random.default_rng(0).uniform(0, 5, size=(20, 3))
    np.testing.assert_allclose(v.lps_to_index(v.index_to_lps(idx)), idx, atol=1e-9)


def test_axis_lps_is_direction_column():
    v = _oblique_volume()
    np.testing.assert_allclose(v.axis_lps(2), v.direction[:, 0])
    np.testing.assert_allclose(v.axis_lps(0), v.direction[:, 2])


@pytest.mark.parametrize("spacing", [(1, 1), (1, 0, 1), (1, -1, 1)])
def test_invalid_spacing_rejected(spacing):
    with pytest.raises(ValueError, match="spacing"):
        Volume(np.zeros((2, 2, 2), np.float32), spacing=spacing)


def test_with_array_keeps_geometry_and_checks_shape():
    v = _oblique_volume()
    m = v.with_array(np.ones(v.shape, bool))
    assert m.origin == v.origin and m.spacing == v.spacing
    with pytest.raises(ValueError, match="shape"):
        v.with_array(np.ones((1, 2, 3)))


def test_affine_ras_maps_like_lps_with_xy_negated():
    """NIfTI affine: (i, j, k) -> RAS equals index_to_lps((k, j, i)) with x, y negated."""
    v = _oblique_volume()
    for k, j, i in [(0, 0, 0), (3, 2, 5), (1, 4, 2)]:
        ras = v.affine_ras @ [i, j, k, 1]
        np.testing.assert_allclose(ras[:3] * [-1, -1, 1], v.index_to_lps([k, j, i]))


def test_nifti_image_round_trip_through_nibabel():
    """nibabel reads back the (k, j, i) array transposed to (i, j, k) with the RAS affine."""
    import nibabel as nib

    v = _oblique_volume()
    labels = np.arange(np.prod(v.shape), dtype=np.int16).reshape(v.shape)
    img = nib.Nifti1Image.from_bytes(v.nifti_image(labels).to_bytes())
    np.testing.assert_array_equal(np.asarray(img.dataobj).transpose(2, 1, 0), labels)
    np.testing.assert_allclose(img.affine, v.affine_ras)
