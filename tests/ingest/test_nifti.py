"""NIfTI input: RAS affine -> LPS geometry, odd headers, real TotalSegmentator CTs."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest

from bmdpipe.config import IngestSettings, PseudonymSettings
from bmdpipe.errors import SeriesError
from bmdpipe.ingest import discover, load_nifti, load_series, nifti_series_uid

RNG = np.random.default_rng(0)


def _check_against_affine(vol, affine_ras, n=20):
    """Voxel (k, j, i) of the Volume is at nibabel's world point of (i, j, k), with x, y negated."""
    shape_kji = vol.shape
    idx = np.column_stack([RNG.integers(0, s, n) for s in shape_kji])
    ras = nib.affines.apply_affine(affine_ras, idx[:, ::-1])
    np.testing.assert_allclose(vol.index_to_lps(idx), ras * [-1, -1, 1], atol=1e-4)


def _save(tmp_path, data, affine, name="x.nii.gz", qform=1, sform=1, **hdr):
    img = nib.Nifti1Image(data, affine)
    img.set_qform(affine if qform else None, code=qform)
    img.set_sform(affine if sform else None, code=sform)
    for k, v in hdr.items():
        img.header[k] = v
    path = tmp_path / name
    nib.save(img, path)
    return path


def _oblique_affine():
    a = np.eye(4)
    t = np.radians(20)
    rot = np.array([[np.cos(t), -np.sin(t), 0], [np.sin(t), np.cos(t), 0], [0, 0, 1]])
    a[:3, :3] = rot @ np.diag([0.8, 0.9, 2.5])
    a[:3, 3] = [-40.0, 12.0, -300.0]
    return a


def test_synthetic_geometry_and_values(tmp_path):
    data = RNG.integers(-1000, 2000, (10, 11, 12)).astype(np.int16)
    aff = _oblique_affine()
    vol = load_nifti(_save(tmp_path, data, aff))
    assert vol.shape == (12, 11, 10) and vol.array.dtype == np.float32
    np.testing.assert_array_equal(vol.array, data.transpose(2, 1, 0))
    assert vol.spacing == pytest.approx((2.5, 0.9, 0.8))
    _check_against_affine(vol, aff)


def test_scl_slope_applied_and_missing_scl(tmp_path):
    data = np.arange(2 * 3 * 12, dtype=np.int16).reshape(2, 3, 12)
    p = _save(tmp_path, data, np.eye(4), scl_slope=2.0, scl_inter=-1024.0)
    np.testing.assert_allclose(load_nifti(p).array, data.transpose(2, 1, 0) * 2.0 - 1024.0)
    p = _save(tmp_path, data, np.eye(4), name="noscl.nii", scl_slope=np.nan, scl_inter=np.nan)
    np.testing.assert_allclose(load_nifti(p).array, data.transpose(2, 1, 0))


def test_qform_only_sform_only_neither(tmp_path):
    data = np.zeros((4, 5, 12), np.int16)
    aff = _oblique_affine()
    for q, s in ((1, 0), (0, 2)):
        vol = load_nifti(_save(tmp_path, data, aff, name=f"q{q}s{s}.nii", qform=q, sform=s))
        _check_against_affine(vol, aff)
    vol = load_nifti(_save(tmp_path, data, aff, name="none.nii", qform=0, sform=0))
    assert any("neither sform nor qform" in w for w in vol.meta.warnings)
    np.testing.assert_allclose(vol.direction, np.diag([1.0, -1.0, 1.0]))  # Analyze LAS default
    assert vol.spacing == pytest.approx((2.5, 0.9, 0.8))


def test_qform_sform_disagree_uses_sform(tmp_path):
    data = np.zeros((4, 5, 12), np.int16)
    s_aff = _oblique_affine()
    q_aff = np.diag([1.0, 1.0, 1.0, 1.0])
    img = nib.Nifti1Image(data, s_aff)
    img.set_qform(q_aff, code=1)
    img.set_sform(s_aff, code=2)
    path = tmp_path / "disagree.nii.gz"
    nib.save(img, path)
    vol = load_nifti(path)
    _check_against_affine(vol, s_aff)
    assert any("disagree" in w for w in vol.meta.warnings)


def test_shapes_refused_or_squeezed(tmp_path):
    vol = load_nifti(_save(tmp_path, np.zeros((4, 5, 12, 1), np.int16), np.eye(4), name="a.nii"))
    assert vol.shape == (12, 5, 4)
    with pytest.raises(SeriesError, match="one 3-D volume"):
        load_nifti(_save(tmp_path, np.zeros((4, 5, 12, 3), np.int16), np.eye(4), name="b.nii"))
    bad = tmp_path / "bad.nii.gz"
    bad.write_bytes(b"\x1f\x8b\x08junk")
    with pytest.raises(SeriesError, match="cannot read NIfTI"):
        load_nifti(bad)


def test_size_limit_before_reading(tmp_path):
    p = _save(tmp_path, np.zeros((4, 5, 12), np.int16), np.eye(4), name="big.nii")
    with pytest.raises(SeriesError, match="exceeds"):
        load_nifti(p, settings=IngestSettings(max_slices=10))


def test_series_uid_deterministic(tmp_path):
    p = _save(tmp_path, np.zeros((4, 5, 12), np.int16), np.eye(4), name="c.nii")
    assert nifti_series_uid(p) == nifti_series_uid(p) and nifti_series_uid(p).startswith("nifti-")
    assert load_nifti(p).meta.series_uid == nifti_series_uid(p)


@pytest.mark.real_data
def test_real_example_ct(real_dir):
    path = real_dir / "totalseg_example_ct" / "example_ct.nii.gz"
    img = nib.load(path)
    d = discover([path], IngestSettings(), PseudonymSettings(key="k"))
    vol = load_series(d.series[0], IngestSettings())
    assert vol.shape == (112, 101, 122)
    assert vol.spacing == pytest.approx((3.0, 3.0, 3.0))
    assert (vol.array.min(), vol.array.max()) == (-1207.0, 3382.0)
    # RAS on disk -> LPS: i runs to patient right (-x), j anterior (-y), k superior (+z)
    np.testing.assert_allclose(vol.direction, np.diag([-1.0, -1.0, 1.0]), atol=1e-6)
    np.testing.assert_allclose(vol.origin, img.affine[:3, 3] * [-1, -1, 1], atol=1e-4)
    _check_against_affine(vol, img.affine)


@pytest.mark.real_data
def test_real_example_ct_sm_wrong_origin_loads(real_dir):
    """The small crop loads; its header origin equals the full volume's (the known quirk)."""
    full = load_nifti(real_dir / "totalseg_example_ct" / "example_ct.nii.gz")
    sm = load_nifti(real_dir / "totalseg_example_ct" / "example_ct_sm.nii.gz")
    assert sm.shape == (30, 101, 122)
    np.testing.assert_array_equal(sm.array, full.array[82:112])
    np.testing.assert_allclose(sm.origin, full.origin, atol=1e-4)
    _check_against_affine(sm, nib.load(real_dir / "totalseg_example_ct" / "example_ct_sm.nii.gz").affine)
