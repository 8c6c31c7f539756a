"""Loading CT series into Volumes: HU, geometry, and refusals (synthetic series broken on purpose + real data)."""

from __future__ import annotations

import os
import tracemalloc
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.uid import JPEG2000Lossless, RLELossless

from bmdpipe.config import IngestSettings, PseudonymSettings
from bmdpipe.errors import SeriesError
from bmdpipe.ingest import discover, load_dicom_files, load_series
from conftest import set_pixels

S = IngestSettings()


def _lps_of_voxel(vol, k, j, i):
    return vol.index_to_lps(np.array([k, j, i], float))


def test_synthetic_series_hu_and_geometry(dicom_factory):
    """Slices with reversed InstanceNumbers and shuffled names load in position order with exact HU."""
    s = dicom_factory(n=12)
    vol = load_dicom_files(s.paths, S)
    assert vol.shape == (12, 16, 20)
    assert vol.array.dtype == np.float32
    np.testing.assert_array_equal(vol.array, s.hu)
    assert vol.spacing == pytest.approx((2.5, 0.8, 0.7))
    np.testing.assert_allclose(vol.origin, s.positions[0])
    np.testing.assert_allclose(vol.direction, np.eye(3), atol=1e-12)
    for k in (0, 5, 11):  # voxel (k, 0, 0) sits at slice k's ImagePositionPatient
        np.testing.assert_allclose(_lps_of_voxel(vol, k, 0, 0), s.positions[k], atol=1e-9)
    assert vol.meta.warnings == ()
    assert vol.meta.kernel == "B60S" and vol.meta.kvp == 120.0 and vol.meta.study_date == "20240102"


def test_feet_first_orientation_direction_and_order(dicom_factory):
    """FFS-like orientation (row axis to patient right): direction columns follow IOP, k along the normal."""
    ori = (-1, 0, 0, 0, 1, 0)
    s = dicom_factory(n=10, orientation=ori, origin=(50.0, -20.0, 300.0))
    vol = load_dicom_files(s.paths, S)
    np.testing.assert_allclose(vol.direction[:, 0], [-1, 0, 0])
    np.testing.assert_allclose(vol.direction[:, 1], [0, 1, 0])
    np.testing.assert_allclose(vol.direction[:, 2], [0, 0, -1])  # normal = row x col
    np.testing.assert_array_equal(vol.array, s.hu)
    # one pixel step in i moves 0.7 mm towards patient right (-x)
    d = _lps_of_voxel(vol, 3, 2, 5) - _lps_of_voxel(vol, 3, 2, 4)
    np.testing.assert_allclose(d, [-0.7, 0, 0], atol=1e-9)


def test_per_slice_rescale_applied(dicom_factory):
    """Each slice's own RescaleSlope/Intercept is applied (slopes 1 and 2, intercepts vary)."""
    n = 10
    slopes = [1.0 if k % 2 else 2.0 for k in range(n)]
    intercepts = [-1024.0 - 100 * k for k in range(n)]
    s = dicom_factory(n=n, slope=slopes, intercept=intercepts)
    vol = load_dicom_files(s.paths, S)
    np.testing.assert_array_equal(vol.array, s.hu)


def test_missing_slice_filled_with_warning(dicom_factory):
    """One missing slice: the gap is reported and filled by linear interpolation on the right grid."""
    s = dicom_factory(n=12, drop=(6,))
    vol = load_dicom_files(s.paths, S)
    assert vol.shape[0] == 12 and vol.spacing[0] == pytest.approx(2.5)
    assert any("gap" in w and "1 missing" in w for w in vol.meta.warnings)
    full = dicom_factory(n=12, write=False).hu
    np.testing.assert_allclose(vol.array[6], (full[5] + full[7]) / 2)
    np.testing.assert_array_equal(vol.array[7], full[7])


def test_too_large_gap_refused(dicom_factory):
    s = dicom_factory(n=14, drop=(5, 6, 7))
    with pytest.raises(SeriesError, match="3 missing slices"):
        load_dicom_files(s.paths, S)


def test_irregular_spacing_refused(dicom_factory):
    def edit(k, ds):
        if k >= 6:
            ds.ImagePositionPatient = [-10.0, -20.0, -100.0 + 2.5 * k + 1.0]

    s = dicom_factory(n=12, edit=edit)
    with pytest.raises(SeriesError, match="non-uniform slice spacing"):
        load_dicom_files(s.paths, S)


def test_duplicate_position_refused_and_copy_ignored(dicom_factory, tmp_path):
    """Two different instances at one position refuse the series; a copied file is just ignored."""
    def edit(k, ds):
        if k == 4:
            ds.ImagePositionPatient = [-10.0, -20.0, -100.0 + 2.5 * 3]

    s = dicom_factory(n=12, edit=edit)
    with pytest.raises(SeriesError, match="same position"):
        load_dicom_files(s.paths, S)
    ok = dicom_factory(n=12)
    copy = ok.folder / "copy_of_first"
    copy.write_bytes(ok.paths[0].read_bytes())
    vol = load_dicom_files([*ok.paths, copy], S)
    assert vol.shape[0] == 12
    assert any("duplicate" in w for w in vol.meta.warnings)
    # discover drops the copy too and says so
    d = discover([ok.folder], S, PseudonymSettings(key="k"))
    assert len(d.series) == 1 and d.series[0].n_files == 12
    assert any("duplicate" in w for w in d.series[0].warnings)


def test_mixed_orientation_refused(dicom_factory):
    def edit(k, ds):
        if k == 3:
            ds.ImageOrientationPatient = [1, 0, 0, 0, 0.995, 0.0998749]

    s = dicom_factory(n=12, edit=edit)
    with pytest.raises(SeriesError, match="different orientations"):
        load_dicom_files(s.paths, S)


def test_mixed_pixel_spacing_refused(dicom_factory):
    def edit(k, ds):
        if k == 8:
            ds.PixelSpacing = [0.9, 0.7]

    s = dicom_factory(n=12, edit=edit)
    with pytest.raises(SeriesError, match="different PixelSpacing"):
        load_dicom_files(s.paths, S)


def _tilted_series(dicom_factory, tilt_deg: float, convention: str):
    """12 slices acquired with a gantry tilt, each holding a linear HU field of its pixels' LPS positions.

    ``convention``: 'sheared positions' (axial image planes, positions stepping off the normal)
    or 'tilted orientation' (image planes tilted about x, the table stepping along z).
    Returns (series, field(lps) -> HU, orientation, first position, step between slices).
    """
    t = np.radians(tilt_deg)
    if convention == "sheared positions":
        ori, step = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0), np.array([0.0, 2.0 * np.tan(t), 2.0])
    else:
        ori, step = (1.0, 0.0, 0.0, 0.0, np.cos(t), np.sin(t)), np.array([0.0, 0.0, 2.0])
    r, c = np.array(ori[:3]), np.array(ori[3:])
    p0, sy, sx, rows, cols = np.array([-10.0, -20.0, -100.0]), 0.8, 0.7, 16, 20
    jj, ii = np.meshgrid(np.arange(rows), np.arange(cols), indexing="ij")

    def field(lps):
        return 0.5 * lps[..., 0] + 1.0 * lps[..., 1] + 0.25 * lps[..., 2]

    def edit(k, ds):
        pos = p0 + k * step
        ds.ImagePositionPatient = [float(v) for v in pos]
        ds.ImageOrientationPatient = [float(v) for v in ori]
        ds.GantryDetectorTilt = tilt_deg
        ds.RescaleSlope, ds.RescaleIntercept = 0.01, 0.0
        lps = pos + jj[..., None] * sy * c + ii[..., None] * sx * r
        set_pixels(ds, np.rint(field(lps) / 0.01))

    s = dicom_factory(n=12, rows=rows, cols=cols, spacing_zyx=(2.0, sy, sx), edit=edit)
    return s, field, ori, p0, step


@pytest.mark.parametrize("convention", ["sheared positions", "tilted orientation"])
def test_gantry_tilt_resampled_onto_orthogonal_grid(dicom_factory, convention):
    """A 14 deg gantry tilt is resampled: each voxel of the orthogonal grid holds the HU field at its own
    LPS position (exact for a linear field under linear interpolation) wherever its source lies inside the
    acquired images; elsewhere the stack's minimum; the warning gives the angle."""
    s, field, ori, p0, step = _tilted_series(dicom_factory, 14.0, convention)
    vol = load_dicom_files(s.paths, S)
    r, c = np.array(ori[:3]), np.array(ori[3:])
    n = np.cross(r, c)
    np.testing.assert_allclose(vol.direction, np.column_stack([r, c, n]), atol=1e-9)
    np.testing.assert_allclose(vol.origin, p0)
    assert vol.spacing == pytest.approx((float(step @ n), 0.8, 0.7))
    assert any("gantry tilt 14.0 deg: slices resampled" in w for w in vol.meta.warnings)
    k, j, i = np.meshgrid(*(np.arange(m) for m in vol.shape), indexing="ij")
    lps = p0 + (k[..., None] * vol.spacing[0] * n + j[..., None] * 0.8 * c + i[..., None] * 0.7 * r)
    shear = step - (step @ n) * n  # in-plane step of the images per slice
    j_src, i_src = j - k * (shear @ c) / 0.8, i - k * (shear @ r) / 0.7
    inside = (j_src >= 0) & (j_src <= vol.shape[1] - 1) & (i_src >= 0) & (i_src <= vol.shape[2] - 1)
    assert 0.5 < inside.mean() < 1.0
    np.testing.assert_allclose(vol.array[inside], field(lps)[inside], atol=0.01)
    assert np.all(vol.array[~inside & (j_src < -1)] == vol.array.min())


def test_gantry_tilt_beyond_limit_or_without_resampling_refused(dicom_factory):
    """A 35 deg shear is no gantry tilt: refused; with resampling off a 10 deg tilt is refused with the angle."""
    s, *_ = _tilted_series(dicom_factory, 35.0, "sheared positions")
    with pytest.raises(SeriesError, match=r"gantry tilt of 35\.0 deg .*max_resampled_gantry_tilt_deg 30"):
        load_dicom_files(s.paths, S)
    s, *_ = _tilted_series(dicom_factory, 10.0, "tilted orientation")
    with pytest.raises(SeriesError, match=r"gantry tilt of 10\.0 deg .*gantry_tilt_resampling off"):
        load_dicom_files(s.paths, IngestSettings(gantry_tilt_resampling=False))


def test_huge_header_refused_before_allocation(dicom_factory):
    """A header claiming 30000 x 30000 pixels is refused from the header; nothing big is allocated."""
    def edit(k, ds):
        ds.Rows = 30000
        ds.Columns = 30000

    s = dicom_factory(n=12, edit=edit)
    assert all(p.stat().st_size < 10_000 for p in s.paths)
    tracemalloc.start()
    try:
        with pytest.raises(SeriesError, match="30000 x 30000"):
            load_dicom_files(s.paths, S)
        d = discover([s.folder], S, PseudonymSettings(key="k"))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 20e6
    assert d.series == () and "30000 x 30000" in d.skipped[0].reason


def test_truncated_file_is_a_missing_slice(dicom_factory):
    """A file cut inside its pixel data (an interrupted transfer) gives no slice: its slot is filled from its
    neighbours (the truth is linear along k, so exactly) and the warning names the file; with
    ingest.max_missing_slices 0 the series is refused naming it."""
    s = dicom_factory(n=12)
    victim = s.paths[4]
    data = victim.read_bytes()
    victim.write_bytes(data[: len(data) - 300])
    vol = load_dicom_files(s.paths, S)
    np.testing.assert_array_equal(vol.array, s.hu)
    (warning,) = [w for w in vol.meta.warnings if victim.name in w]
    assert "pixel data holds 340 of the 640 bytes" in warning and "filled by linear interpolation" in warning
    with pytest.raises(SeriesError, match=f"1 consecutive slices missing .*{victim.name}: pixel data holds"):
        load_dicom_files(s.paths, IngestSettings(max_missing_slices=0))


def test_short_pixel_data_never_reaches_the_simpleitk_fallback(dicom_factory):
    """Pixel data of half the size its header describes, in a well-formed file: SimpleITK/GDCM reads it as a
    whole image, making up the missing half (air in the issue's case, other bytes here); here it gives no
    slice and is named."""
    import SimpleITK as sitk

    s = dicom_factory(n=12)
    victim = s.paths[6]
    ds = pydicom.dcmread(victim)
    ds.PixelData = ds.PixelData[: len(ds.PixelData) // 2]
    ds.save_as(victim)
    padded = sitk.GetArrayFromImage(sitk.ReadImage(str(victim)))[0]
    assert padded.shape == s.hu[6].shape and (padded[8:] != s.hu[6][8:]).mean() > 0.5  # the hazard
    vol = load_dicom_files(s.paths, S)
    np.testing.assert_array_equal(vol.array, s.hu)
    assert any(victim.name in w and "holds 320 of the 640 bytes" in w for w in vol.meta.warnings)
    assert not any("SimpleITK" in w for w in vol.meta.warnings)


def test_truncated_compressed_file_is_a_missing_slice(dicom_factory):
    """An RLE image whose codestream lost its second half fails to decode: a missing slice, named."""
    from pydicom.encaps import encapsulate, generate_frames

    s = dicom_factory(n=12, rows=64, cols=64, transfer_syntax=RLELossless)
    victim = s.paths[5]
    ds = pydicom.dcmread(victim)
    (frame,) = generate_frames(ds.PixelData, number_of_frames=1)
    ds.PixelData = encapsulate([frame[: len(frame) // 2 // 2 * 2]])
    ds.save_as(victim)
    vol = load_dicom_files(s.paths, S)
    np.testing.assert_array_equal(vol.array, s.hu)
    assert any(f"cannot decode the pixel data of {victim.name}" in w for w in vol.meta.warnings)


def test_unusable_files_beside_a_gap_or_at_the_ends(dicom_factory):
    """A truncated file next to a missing slice makes a 2-slice run (refused when only 1 is allowed); a
    truncated first file is left out: the volume starts one slice later."""
    s = dicom_factory(n=12, drop=(5,))
    victim = s.paths[4]  # slice k = 4, beside the gap at k = 5
    victim.write_bytes(victim.read_bytes()[:-300])
    with pytest.raises(SeriesError, match=f"2 consecutive slices missing .*max_missing_slices 1.*{victim.name}"):
        load_dicom_files(s.paths, IngestSettings(max_missing_slices=1))
    s = dicom_factory(n=12)
    first = s.paths[0]
    first.write_bytes(first.read_bytes()[:-300])
    vol = load_dicom_files(s.paths, S)
    assert vol.shape[0] == 11
    np.testing.assert_allclose(vol.origin, s.positions[1])
    np.testing.assert_array_equal(vol.array, s.hu[1:])
    assert any(first.name in w and "left out (an end of the series" in w for w in vol.meta.warnings)


def test_truncated_header_is_stray_or_refused(dicom_factory):
    """A file cut inside its header never raises anything but a SeriesError / skipped row."""
    s = dicom_factory(n=12)
    s.paths[2].write_bytes(s.paths[2].read_bytes()[:200])
    d = discover([s.folder], S, PseudonymSettings(key="k"))
    for ref in d.series:
        try:
            load_series(ref, S)
        except SeriesError:
            pass
    assert sum(x.n_files for x in d.skipped) + sum(r.n_files for r in d.series) == 12


def test_files_without_file_meta_read_in_their_encoding(dicom_factory):
    """Bare implicit-VR datasets (no preamble, no file meta, so no transfer syntax) load as HU with pydicom
    (the encoding they were read in), not through the SimpleITK fallback."""
    s = dicom_factory(n=12, write=False)
    for path, ds in zip(s.paths, s.datasets):
        del ds.file_meta
        ds.save_as(path, enforce_file_format=False, implicit_vr=True, little_endian=True)
    assert s.paths[0].read_bytes()[:2] == b"\x08\x00"  # no preamble
    vol = load_dicom_files(s.paths, S)
    np.testing.assert_array_equal(vol.array, s.hu)
    assert vol.meta.warnings == ()


@pytest.mark.parametrize("syntax", [RLELossless, JPEG2000Lossless], ids=["rle", "j2k"])
def test_compressed_series_decode(dicom_factory, syntax):
    s = dicom_factory(n=10, rows=64, cols=64, transfer_syntax=syntax)
    assert pydicom.dcmread(s.paths[0]).file_meta.TransferSyntaxUID == syntax
    vol = load_dicom_files(s.paths, S)
    np.testing.assert_array_equal(vol.array, s.hu)


def test_enhanced_ct_shared_rescale(tmp_path, enhanced_ct_writer):
    """Enhanced CT: frames in reverse z, rescale only in the shared functional groups."""
    path = tmp_path / "enh.dcm"
    hu, pos = enhanced_ct_writer(path, n=6)
    vol = load_dicom_files([path], S, min_slices=1)
    np.testing.assert_array_equal(vol.array, hu)
    assert vol.spacing == pytest.approx((1.5, 0.5, 0.6))
    np.testing.assert_allclose(vol.origin, pos[0])


def test_enhanced_ct_per_frame_rescale(tmp_path, enhanced_ct_writer):
    path = tmp_path / "enh.dcm"
    hu, _ = enhanced_ct_writer(path, n=6, per_frame_rescale=True)
    vol = load_dicom_files([path], S, min_slices=1)
    np.testing.assert_array_equal(vol.array, hu)


def test_enhanced_ct_not_hu_refused(tmp_path, enhanced_ct_writer):
    path = tmp_path / "enh.dcm"
    enhanced_ct_writer(path, n=6, rescale_type="US")
    with pytest.raises(SeriesError, match="RescaleType US"):
        load_dicom_files([path], S, min_slices=1)


def test_perfusion_image_type_refused(dicom_factory):
    s = dicom_factory(n=12, image_type="DERIVED\\PRIMARY\\PERFUSION\\MTT")
    with pytest.raises(SeriesError, match="not in HU"):
        load_dicom_files(s.paths, S)


def test_min_slices(dicom_factory):
    s = dicom_factory(n=3)
    with pytest.raises(SeriesError, match=r"3 slices; need >= 10"):
        load_dicom_files(s.paths, S)
    vol = load_dicom_files(s.paths, S, min_slices=1)
    np.testing.assert_array_equal(vol.array, s.hu)


def test_load_series_carries_pseudonym_not_phi(dicom_factory, phi):
    s = dicom_factory(n=12)
    d = discover([s.folder], S, PseudonymSettings(key="trial-key"))
    vol = load_series(d.series[0], S)
    assert vol.meta.study_id == d.series[0].study_id and vol.meta.study_id.startswith("S")
    text = repr(vol.meta) + repr(d)
    for value in (*phi, "Doe"):
        assert value not in text


# ---------------------------------------------------------------- real data

EDGE_HU = {  # README ranges (pydicom_ct_edge_cases/README.md)
    "CT_small.dcm": (-896, 1167),
    "693_UNCR.dcm": (-3024, 1468),
    "693_J2KR.dcm": (-3024, 1468),
    "693_UNCI.dcm": (-3995, 1812),
    "693_J2KI.dcm": (-3995, 1812),
    "J2K_pixelrep_mismatch.dcm": (-2000, 1896),
}


@pytest.mark.real_data
@pytest.mark.parametrize("name", sorted(EDGE_HU))
def test_real_single_slices_hu_range(real_dir, name):
    vol = load_dicom_files([real_dir / "pydicom_ct_edge_cases" / name], S, min_slices=1)
    assert (vol.array.min(), vol.array.max()) == EDGE_HU[name]
    assert vol.shape[0] == 1


@pytest.mark.real_data
def test_real_j2k_equals_uncompressed(real_dir):
    """Lossless J2K decodes identically to its uncompressed twin; lossy J2K (bit-depth mismatch) likewise."""
    d = real_dir / "pydicom_ct_edge_cases"
    for a, b in (("693_J2KR.dcm", "693_UNCR.dcm"), ("693_J2KI.dcm", "693_UNCI.dcm")):
        va = load_dicom_files([d / a], S, min_slices=1)
        vb = load_dicom_files([d / b], S, min_slices=1)
        np.testing.assert_array_equal(va.array, vb.array)
        assert va.spacing == vb.spacing == pytest.approx((5.0, 0.478516, 0.478516), rel=1e-4)


@pytest.mark.real_data
def test_real_geometry_of_single_slices(real_dir):
    d = real_dir / "pydicom_ct_edge_cases"
    v = load_dicom_files([d / "CT_small.dcm"], S, min_slices=1)
    assert v.shape == (1, 128, 128)
    np.testing.assert_allclose(v.origin, (-158.135803, -179.035797, -75.699997))
    # oblique (tilted) head CT: the direction matrix is the IOP rotation, right-handed
    v = load_dicom_files([d / "J2K_pixelrep_mismatch.dcm"], S, min_slices=1)
    ds = pydicom.dcmread(d / "J2K_pixelrep_mismatch.dcm", stop_before_pixels=True)
    np.testing.assert_allclose(v.direction[:, 0], [float(x) for x in ds.ImageOrientationPatient[:3]], atol=1e-4)
    np.testing.assert_allclose(v.direction[:, 1], [float(x) for x in ds.ImageOrientationPatient[3:]], atol=1e-4)
    np.testing.assert_allclose(v.direction.T @ v.direction, np.eye(3), atol=1e-12)  # orthonormal
    assert np.linalg.det(v.direction) == pytest.approx(1.0)


@pytest.mark.real_data
@pytest.mark.parametrize("name,lo,hi,spacing", [
    ("bad_sequence.dcm", -1011, 1243, 0.287109),   # JPEG lossless SV1, uint16 + intercept
    ("explicit_VR-UN.dcm", -1024, 1186, 0.859375),  # J2K lossless with VR UN elements
])
def test_real_other_syntaxes(real_dir, name, lo, hi, spacing):
    path = real_dir / "pydicom_ct_edge_cases" / name
    vol = load_dicom_files([path], S, min_slices=1)
    assert (vol.array.min(), vol.array.max()) == (lo, hi)
    assert vol.spacing[1:] == pytest.approx((spacing, spacing), rel=1e-5)


@pytest.mark.real_data
def test_real_enhanced_perfusion_refused(real_dir):
    with pytest.raises(SeriesError, match="not in HU"):
        load_dicom_files([real_dir / "pydicom_ct_edge_cases" / "eCT_Supplemental.dcm"], S, min_slices=1)


@pytest.mark.real_data
def test_real_no_meta_refused(real_dir):
    with pytest.raises(SeriesError, match="not a DICOM file"):
        load_dicom_files([real_dir / "pydicom_ct_edge_cases" / "no_meta.dcm"], S, min_slices=1)


@pytest.mark.real_data
def test_real_totalseg_j2k_series(real_dir):
    """20-slice J2K series, empty SOPClassUID/SeriesInstanceUID, InstanceNumbers reversed vs z."""
    import SimpleITK as sitk

    folder = real_dir / "totalseg_example_ct_dicom" / "dicom"
    d = discover([folder], S, PseudonymSettings(key="k"))
    assert len(d.series) == 1 and d.skipped == ()
    vol = load_series(d.series[0], S)
    assert vol.shape == (20, 512, 512)
    assert vol.spacing == pytest.approx((2.0, 0.9765625, 0.9765625))
    assert (vol.array.min(), vol.array.max()) == (-1024.0, 1839.0)
    np.testing.assert_allclose(vol.origin, (-249.51171875, -437.51171875, -804.5))
    np.testing.assert_allclose(vol.direction, np.eye(3))
    # slice k sits at z = -804.5 + 2 k: check every file's own pixels landed at its position
    for p in sorted(folder.iterdir())[::7]:
        ds = pydicom.dcmread(p)
        k = int(round((float(ds.ImagePositionPatient[2]) + 804.5) / 2.0))
        hu = ds.pixel_array.astype(float) * float(ds.RescaleSlope) + float(ds.RescaleIntercept)
        np.testing.assert_array_equal(vol.array[k], hu)
    # independent reader (GDCM via SimpleITK, sorts by position too)
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(reader.GetGDCMSeriesFileNames(str(folder)))
    img = reader.Execute()
    np.testing.assert_array_equal(vol.array, sitk.GetArrayFromImage(img).astype(np.float32))
    np.testing.assert_allclose(vol.origin, img.GetOrigin(), atol=1e-4)


@pytest.mark.real_data
@pytest.mark.parametrize("name,agent", [
    ("CT_small.dcm", "ISOVUE300/100"),           # ContrastBolusAgent
    ("eCT_Supplemental.dcm", "Iohexol"),         # Enhanced CT: ContrastBolusAgentSequence code meaning
    ("explicit_VR-UN.dcm", ""),                  # tag present, empty
    ("693_UNCR.dcm", ""),                        # tag absent
])
def test_real_contrast_agent_read(real_dir, name, agent):
    from bmdpipe.ingest._header import contrast_agent

    ds = pydicom.dcmread(real_dir / "pydicom_ct_edge_cases" / name, stop_before_pixels=True)
    assert contrast_agent(ds) == agent


@pytest.mark.real_data
def test_real_contrast_enhanced_series_warned(real_dir):
    """The TotalSegmentator series is a contrast-enhanced PET/CT (ContrastBolusAgent APPLIED): its vBMD is
    not comparable with a non-contrast QCT, and the series' warnings say so."""
    d = discover([real_dir / "totalseg_example_ct_dicom" / "dicom"], S, PseudonymSettings(key="k"))
    vol = load_series(d.series[0], S)
    assert vol.meta.contrast_agent == "APPLIED"
    assert [w for w in vol.meta.warnings if w.startswith("contrast-enhanced scan (ContrastBolusAgent 'APPLIED')")]


@pytest.mark.parametrize("value,warned", [("NONE", False), ("", False), ("OMNIPAQUE 350", True)])
def test_contrast_agent_tag_values(dicom_factory, value, warned):
    def edit(i, ds):
        ds.ContrastBolusAgent = value

    vol = load_dicom_files(dicom_factory(edit=edit).paths, S)
    assert vol.meta.contrast_agent == ("OMNIPAQUE 350" if warned else "")
    assert any("contrast-enhanced" in w for w in vol.meta.warnings) == warned


@pytest.mark.real_data
def test_real_ankle_phantom_series(real_dir):
    import SimpleITK as sitk

    folder = real_dir / "ucalgary_ankle_calib_phantom_ct" / "dicom"
    d = discover([folder], S, PseudonymSettings(key="k"))
    assert d.series == () and "9 slices; need >= 10" in d.skipped[0].reason
    vol = load_dicom_files(sorted(folder.iterdir()), S, min_slices=1)
    assert vol.shape == (9, 512, 512)
    assert vol.spacing == pytest.approx((0.625, 0.671875, 0.671875))
    assert (vol.array.min(), vol.array.max()) == (-3024.0, 3071.0)
    np.testing.assert_allclose(vol.origin, (-164.5, -161.9, 34.375))
    img = sitk.ReadImage([str(p) for p in sorted(folder.iterdir(), key=lambda p: -int(p.stem))])
    np.testing.assert_array_equal(vol.array, sitk.GetArrayFromImage(img).astype(np.float32))


@pytest.mark.real_data
def test_every_real_file_loaded_or_refused(real_dir):
    """Done criterion: each real file is in a loadable series or skipped with a reason; nothing raises."""
    d = discover([real_dir], S, PseudonymSettings(key="k"))
    all_files = [p for p in real_dir.rglob("*") if p.is_file()]
    accounted = sum(r.n_files for r in d.series) + sum(s.n_files for s in d.skipped)
    assert accounted == len(all_files)
    assert all(s.reason for s in d.skipped)
    for ref in d.series:
        try:
            vol = load_series(ref, S)
            assert np.isfinite(vol.array).all()
        except SeriesError as exc:
            assert str(exc)
    reasons = {Path(s.path).name: s.reason for s in d.skipped}
    assert "not a DICOM file" in reasons["no_meta.dcm"]
    assert "not in HU" in reasons["eCT_Supplemental.dcm"]
    assert "1 slice; need >= 10" in reasons["CT_small.dcm"]


# ------------------------------------------------------- synthetic generator round trip


@pytest.mark.parametrize("orientation", ["HFS", "FFS", "HFP"])
def test_synthetic_case_round_trip(tmp_path, orientation):
    """bmdpipe.synthetic writes a case as DICOM (RLE, shuffled names, localizer, strays); we read it back.

    HU agree to the generator's storage rounding (0.5 HU) and the geometry (origin,
    direction, spacing) is the generator's ground truth; no planted PHI leaks.
    """
    synthetic = pytest.importorskip("bmdpipe.synthetic.dicom")
    from bmdpipe.synthetic.case import make_case
    from bmdpipe.synthetic.spec import CaseSpec

    case = make_case(3, CaseSpec(levels=("L4",), spacing_mm=(2.5, 2.0, 2.0), phantom=None,
                                 orientation=orientation, streaks=False))
    synthetic.write_dicom_series(case, tmp_path / "dicom", compress="rle")
    d = discover([tmp_path], S, PseudonymSettings(key="k"))
    assert len(d.series) == 1
    assert any("localizer" in s.reason for s in d.skipped)
    vol = load_series(d.series[0], S)
    truth = case.volume
    assert vol.shape == truth.shape
    assert np.abs(vol.array - truth.array).max() <= 0.51
    np.testing.assert_allclose(vol.direction, truth.direction, atol=1e-9)
    np.testing.assert_allclose(vol.origin, truth.origin, atol=1e-3)
    np.testing.assert_allclose(vol.spacing, truth.spacing, rtol=1e-6)
    text = repr(d) + repr(vol.meta)
    for value in case.truth.phi.values():
        assert str(value) not in text


def test_simpleitk_fallback_when_pydicom_cannot_decode(dicom_factory, monkeypatch):
    """If pydicom has no decoder, GDCM (SimpleITK) decodes and rescales; without fallback: a clear refusal."""
    def no_decoder(self):
        raise NotImplementedError("no pixel data handler available")

    s = dicom_factory(n=10, rows=32, cols=32, intercept=[-1024.0 - 10 * k for k in range(10)])
    monkeypatch.setattr(pydicom.dataset.Dataset, "pixel_array", property(no_decoder))
    vol = load_dicom_files(s.paths, S)
    np.testing.assert_array_equal(vol.array, s.hu)
    assert any("SimpleITK" in w for w in vol.meta.warnings)
    with pytest.raises(SeriesError, match="cannot decode the pixel data"):
        load_dicom_files(s.paths, IngestSettings(simpleitk_fallback=False))


def test_corrupted_bytes_never_raise_anything_but_series_error(dicom_factory, caplog, phi):
    """Random byte damage in headers and pixel data: discovery never raises, loading raises only SeriesError.

    No log record, skip reason or error message quotes the planted PHI.
    """
    import logging

    caplog.set_level(logging.DEBUG)
    rng = np.random.default_rng(7)
    texts = []
    s = dicom_factory(n=12)
    originals = [p.read_bytes() for p in s.paths]
    for trial in range(int(os.environ.get("BMDPIPE_FUZZ_TRIALS", "25"))):
        for p, data in zip(s.paths, originals):
            p.write_bytes(data)
        for p in rng.choice(s.paths, size=3, replace=False):
            b = bytearray(p.read_bytes())
            pos = rng.integers(0, len(b), size=int(rng.integers(1, 20)))
            b_arr = np.frombuffer(bytes(b), np.uint8).copy()
            b_arr[pos] = rng.integers(0, 256, size=len(pos))
            cut = len(b_arr) if rng.random() < 0.7 else int(rng.integers(0, len(b_arr)))
            p.write_bytes(b_arr[:cut].tobytes())
        d = discover([s.folder], S, PseudonymSettings(key="k"))
        assert sum(r.n_files for r in d.series) + sum(x.n_files for x in d.skipped) == 12
        texts.append(repr(d))
        for ref in d.series:
            try:
                texts.append(repr(load_series(ref, S).meta))
            except SeriesError as exc:
                texts.append(str(exc))
    texts.append(caplog.text)
    blob = "\n".join(texts)
    for value in (*phi, "Doe"):
        assert value not in blob
