"""Vertebra labels: schemes, resampling through the affines, refusal of misaligned labels."""

from pathlib import Path

import numpy as np
import pytest

from _realdata import TS, TS_DICOM, dicom_volume, need, nifti_volume
from bmdpipe.anatomy import load_labels, read_label_table, resample_labels, vertebrae_from_labels
from bmdpipe.anatomy.labels import SCHEMES, level_from_class_name
from bmdpipe.config import AnatomySettings
from bmdpipe.errors import AnatomyError
from bmdpipe.results import VERSE_IDS
from bmdpipe.volume import Volume

nib = pytest.importorskip("nibabel")

LUMBAR5 = ["L1", "L2", "L3", "L4", "L5"]


def test_scheme_tables():
    """Published ids: VerSe L1=20, TotalSegmentator v1 L5=18/L1=22, v2 L5=27/L1=31/T12=32/C1=50."""
    assert SCHEMES["verse"][20] == "L1" and SCHEMES["verse"][24] == "L5"
    assert SCHEMES["totalseg_v1"][18] == "L5" and SCHEMES["totalseg_v1"][22] == "L1"
    assert SCHEMES["totalseg_v1"][23] == "T12" and SCHEMES["totalseg_v1"][41] == "C1"
    assert SCHEMES["totalseg_v2"][27] == "L5" and SCHEMES["totalseg_v2"][31] == "L1"
    assert SCHEMES["totalseg_v2"][32] == "T12" and SCHEMES["totalseg_v2"][50] == "C1"
    assert level_from_class_name("vertebrae_L4") == "L4"
    assert level_from_class_name("vertebrae_L4.nii.gz") == "L4"
    assert level_from_class_name("sacrum") is None and level_from_class_name("liver") is None


def test_read_caret_label_table():
    xml = (b'<CaretExtension><LabelTable><Label Key="27" Red="1"><![CDATA[vertebrae_L5]]></Label>'
           b'<Label Key="5" Red="0"><![CDATA[liver]]></Label></LabelTable></CaretExtension>')
    assert read_label_table([xml]) == {27: "vertebrae_L5", 5: "liver"}


def _vol_with_affine(arr_kji, affine_ras):
    """Volume whose geometry is the NIfTI affine (i, j, k) -> RAS."""
    a = np.diag([-1.0, -1.0, 1.0, 1.0]) @ affine_ras
    sp = np.linalg.norm(a[:3, :3], axis=0)
    return Volume(arr_kji.astype(np.float32), spacing=(sp[2], sp[1], sp[0]), origin=tuple(a[:3, 3]),
                  direction=a[:3, :3] / sp)


def test_resample_through_affines_flipped_axis():
    """A label image with a flipped y axis (and another origin) lands on the same physical voxels."""
    rng = np.random.default_rng(0)
    lab_ijk = (rng.random((6, 7, 5)) > 0.7).astype(np.uint8) * 3
    aff = np.diag([2.0, 2.0, 3.0, 1.0])
    aff[:3, 3] = (10.0, -20.0, 5.0)
    vol = _vol_with_affine(np.zeros((5, 7, 6)), aff)
    # same data stored with j reversed: affine column j negated, origin moved to the old last row
    flipped = lab_ijk[:, ::-1, :]
    aff2 = aff.copy()
    aff2[:3, 1] *= -1
    aff2[:3, 3] = aff[:3, 3] + aff[:3, 1] * 6
    res = resample_labels(flipped, np.diag([-1.0, -1.0, 1.0, 1.0]) @ aff2, vol)
    assert np.array_equal(res, np.transpose(lab_ijk, (2, 1, 0)))


@pytest.mark.parametrize("seed", range(6))
def test_resample_by_indexing_equals_affine_transform(seed):
    """Grids that differ by axis order, direction and a whole-voxel shift (partly outside each other) are
    resampled by indexing alone; the result equals scipy's nearest-neighbour affine_transform."""
    from scipy import ndimage as ndi

    from bmdpipe.anatomy.labels import _permuted_take

    rng = np.random.default_rng(seed)
    data = rng.integers(0, 30, (7, 9, 11)).astype(np.uint16)
    rot = np.eye(3, dtype=int)[rng.permutation(3)] * rng.choice([-1, 1], size=(3, 1))
    for _ in range(10):
        offset = rng.integers(-12, 14, 3)
        shape = tuple(int(n) for n in rng.integers(3, 14, 3))
        expected = ndi.affine_transform(data, rot.astype(float), offset=offset.astype(float), output_shape=shape,
                                        order=0, mode="constant", cval=0, prefilter=False)
        np.testing.assert_array_equal(_permuted_take(data, rot, offset, shape), expected)


def test_totalseg_v2_multilabel_header_names():
    """v2 multilabel (class names in the header): L1-L5 found, in order, on bone."""
    ct = need(TS / "example_ct.nii.gz")
    vol = nifti_volume(ct)
    masks, inside, scheme = load_labels(TS / "example_seg_fast_force_split.nii.gz", vol)
    assert scheme == "header"
    assert set(LUMBAR5) <= set(masks)
    assert all(inside[k] == pytest.approx(1.0) for k in LUMBAR5)
    verts = vertebrae_from_labels(TS / "example_seg_fast_force_split.nii.gz", vol, AnatomySettings())
    assert [v.name for v in verts] == LUMBAR5
    assert [v.verse_id for v in verts] == [20, 21, 22, 23, 24]
    z = [v.body_center_lps[2] for v in verts]
    assert all(a > b for a, b in zip(z, z[1:]))  # superior to inferior


def test_ids_without_header_detected_by_anatomy(tmp_path):
    """The same v2 ids without a header table: 'auto' picks totalseg_v2 from bone + order."""
    ct = need(TS / "example_ct.nii.gz")
    vol = nifti_volume(ct)
    img = nib.load(str(TS / "spine_report/totalseg.nii.gz"))
    plain = nib.Nifti1Image(np.asarray(img.dataobj), img.affine)
    p = tmp_path / "plain.nii.gz"
    nib.save(plain, str(p))
    masks, _, scheme = load_labels(p, vol)
    assert scheme == "totalseg_v2"
    # relabel as VerSe ids: auto must now say verse
    data = np.asarray(img.dataobj).astype(np.int16)
    verse = np.zeros_like(data)
    for v2, lvl in SCHEMES["totalseg_v2"].items():
        if lvl in LUMBAR5:
            verse[data == v2] = VERSE_IDS[lvl]
    nib.save(nib.Nifti1Image(verse, img.affine), str(tmp_path / "verse.nii.gz"))
    _, _, scheme = load_labels(tmp_path / "verse.nii.gz", vol)
    assert scheme == "verse"


def test_totalseg_folder(tmp_path):
    """A TotalSegmentator output folder (vertebrae_L4.nii.gz ...) gives the same levels and voxels."""
    ct = need(TS / "example_ct.nii.gz")
    vol = nifti_volume(ct)
    img = nib.load(str(TS / "spine_report/totalseg.nii.gz"))
    data = np.asarray(img.dataobj)
    for vid, lvl in SCHEMES["totalseg_v2"].items():
        if (data == vid).any():
            nib.save(nib.Nifti1Image((data == vid).astype(np.uint8), img.affine),
                     str(tmp_path / f"vertebrae_{lvl}.nii.gz"))
    masks_f, _, scheme = load_labels(tmp_path, vol)
    masks_h, _, _ = load_labels(TS / "spine_report/totalseg.nii.gz", vol)
    assert scheme == "folder"
    for lvl in LUMBAR5:
        assert np.array_equal(masks_f[lvl], masks_h[lvl])


def test_body_only_labels_get_posterior_elements():
    """pp_refined (CaretExtension, VerSe numbering, bodies only): pedicles still found from the CT."""
    ct = need(TS / "example_ct.nii.gz")
    vol = nifti_volume(ct)
    verts = vertebrae_from_labels(TS / "spine_report/totalseg_vertebrae_pp_refined.nii.gz", vol)
    assert [v.name for v in verts] == LUMBAR5
    assert all(len(v.pedicles) == 2 for v in verts)


def test_crop_with_wrong_origin_is_refused():
    """example_seg (a crop of slices 82..111 saved with the full volume's origin) is refused on example_ct."""
    ct = need(TS / "example_ct.nii.gz")
    vol = nifti_volume(ct)
    with pytest.raises(AnatomyError, match=r"example_seg\.nii\.gz.*(misaligned|outside)"):
        vertebrae_from_labels(TS / "example_seg.nii.gz", vol)


def test_crop_on_its_own_crop_is_accepted():
    """The same labels on the cropped CT they were made on (same wrong origin on both) are consistent."""
    vol = nifti_volume(need(TS / "example_ct_sm.nii.gz"))
    verts = vertebrae_from_labels(TS / "example_seg.nii.gz", vol)
    assert [v.name for v in verts][:2] == ["L1", "L2"]


def test_mislabelled_levels_give_a_clear_message(tmp_path):
    """Swapping two level ids (L2 <-> L4) is caught by the superior-inferior order check."""
    vol = nifti_volume(need(TS / "example_ct.nii.gz"))
    img = nib.load(str(TS / "spine_report/totalseg.nii.gz"))
    data = np.asarray(img.dataobj).copy()
    l2, l4 = 30, 28
    swapped = data.copy()
    swapped[data == l2] = l4
    swapped[data == l4] = l2
    p = tmp_path / "swapped.nii.gz"
    nib.save(nib.Nifti1Image(swapped, img.affine, img.header), str(p))
    with pytest.raises(AnatomyError, match="not superior"):
        vertebrae_from_labels(p, vol)


def test_missing_requested_level(tmp_path):
    vol = nifti_volume(need(TS / "example_ct.nii.gz"))
    with pytest.raises(AnatomyError, match="L6"):
        vertebrae_from_labels(TS / "spine_report/totalseg.nii.gz", vol, levels=["L4", "L5", "L6"])


def test_no_lumbar_level_is_refused():
    """The DICOM series' labels hold T11/T12 only: a clear 'no lumbar vertebra' error."""
    vol = dicom_volume(need(TS_DICOM / "dicom"))
    with pytest.raises(AnatomyError, match="no lumbar vertebra.*levels present: T11, T12; .*--levels T11,T12"):
        vertebrae_from_labels(TS_DICOM / "example_seg_dicom.nii.gz", vol)


def test_thoracic_level_measured_when_named():
    """Named in ``levels``, the T12 of the DICOM series' labels is measured: VerSe id 19, its body centre
    inside the T12 label."""
    vol = dicom_volume(need(TS_DICOM / "dicom"))
    (v,) = vertebrae_from_labels(TS_DICOM / "example_seg_dicom.nii.gz", vol, levels=["T12"])
    assert (v.name, v.verse_id, v.source) == ("T12", 19, "labels")
    masks, _, _ = load_labels(TS_DICOM / "example_seg_dicom.nii.gz", vol)
    k, j, i = np.rint(vol.lps_to_index(v.body_center_lps)).astype(int)
    assert masks["T12"][k, j, i]


def test_named_levels_ordered_superior_to_inferior_across_t12_l1():
    """T12 and L1 of the 3 mm CT, asked for in any order, come back superior to inferior with their
    own ids; without ``levels`` only the lumbar ones are measured."""
    vol = nifti_volume(need(TS / "example_ct.nii.gz"))
    seg = TS / "example_seg_fast_force_split.nii.gz"
    verts = vertebrae_from_labels(seg, vol, levels=["L1", "T12"])
    assert [(v.name, v.verse_id) for v in verts] == [("T12", 19), ("L1", 20)]
    assert verts[0].body_center_lps[2] > verts[1].body_center_lps[2] + 15.0  # one body height apart
    assert [v.name for v in vertebrae_from_labels(seg, vol)] == LUMBAR5


def test_dicom_labels_with_flipped_y_align():
    """The LAS seg with y flipped vs the DICOM rows lands on bone once resampled via the affines."""
    vol = dicom_volume(need(TS_DICOM / "dicom"))
    masks, inside, _ = load_labels(TS_DICOM / "example_seg_dicom.nii.gz", vol)
    m = masks["T12"]
    assert inside["T12"] > 0.95
    assert vol.array[m].mean() > 150.0  # bone
    # the naive array-index reading (no flip) puts the label off the bone
    img = nib.load(str(TS_DICOM / "example_seg_dicom.nii.gz"))
    naive = np.transpose(np.asarray(img.dataobj) == 32, (2, 1, 0))
    assert naive.shape == vol.shape
    assert vol.array[naive].mean() < vol.array[m].mean() - 100.0


def test_unreadable_file(tmp_path):
    p = tmp_path / "junk.nii.gz"
    p.write_bytes(b"not a nifti")
    vol = Volume(np.zeros((4, 4, 4), np.float32), spacing=(1, 1, 1))
    with pytest.raises(AnatomyError, match="junk.nii.gz"):
        vertebrae_from_labels(p, vol)
    with pytest.raises(AnatomyError, match="do not exist"):
        vertebrae_from_labels(Path(tmp_path / "absent.nii.gz"), vol)
