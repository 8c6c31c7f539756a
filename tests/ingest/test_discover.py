"""Discovery: recursive walk, header-only grouping by SeriesInstanceUID, classification with reasons."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from bmdpipe.config import IngestSettings, PseudonymSettings
from bmdpipe.errors import IngestError
from bmdpipe.ingest import discover, study_id_for

S = IngestSettings()
P = PseudonymSettings(key="trial-secret")

SECONDARY_CAPTURE = "1.2.840.10008.5.1.4.1.1.7"
RT_DOSE = "1.2.840.10008.5.1.4.1.1.481.2"
XRAY_DOSE_SR = "1.2.840.10008.5.1.4.1.1.88.67"
DICOMDIR_SOP = "1.2.840.10008.1.3.10"


@pytest.fixture
def messy_tree(tmp_path, dicom_factory):
    """A folder like a PACS export: one good CT, a CT with a localizer inside, and junk around it."""
    root = tmp_path / "export"
    made = {}
    made["good"] = dicom_factory(n=12, folder=root / "p1" / "study" / "ct")

    def loc(k, ds):
        if k == 12:
            ds.ImageType = "ORIGINAL\\PRIMARY\\LOCALIZER"

    made["mixed"] = dicom_factory(n=13, folder=root / "p1" / "study" / "mixed", edit=loc)
    made["localizer"] = dicom_factory(n=2, folder=root / "p1" / "study" / "scout",
                                      image_type="ORIGINAL\\PRIMARY\\LOCALIZER")
    made["sc"] = dicom_factory(n=1, folder=root / "p1" / "sc", sop_class=SECONDARY_CAPTURE)
    made["rtdose"] = dicom_factory(n=1, folder=root / "p1" / "rt", modality="RTDOSE", sop_class=RT_DOSE)

    def dose_desc(k, ds):
        ds.SeriesDescription = "Dose Report"

    made["dose_img"] = dicom_factory(n=1, folder=root / "p1" / "dose", edit=dose_desc)
    made["sagittal"] = dicom_factory(n=12, folder=root / "p1" / "sag", orientation=(0, 1, 0, 0, 0, -1))
    made["few"] = dicom_factory(n=4, folder=root / "p1" / "few")
    made["perf"] = dicom_factory(n=12, folder=root / "p1" / "perf", image_type="DERIVED\\PRIMARY\\PERFUSION\\RCBV")

    def other_patient(k, ds):
        if k == 0:
            ds.PatientID = "SOMEONE-ELSE"

    made["two_pids"] = dicom_factory(n=12, folder=root / "p1" / "pids", edit=other_patient)
    # SR dose report without pixel data
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    def bare(sop, modality, path):
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = sop
        meta.MediaStorageSOPInstanceUID = generate_uid()
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds = Dataset()
        ds.file_meta = meta
        ds.SOPClassUID = sop
        ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
        ds.Modality = modality
        ds.SeriesInstanceUID = generate_uid()
        ds.PatientID = "PID-777-SECRET"
        path.parent.mkdir(parents=True, exist_ok=True)
        ds.save_as(path, enforce_file_format=True)

    bare(XRAY_DOSE_SR, "SR", root / "p1" / "sr" / "dose_sr")
    bare(DICOMDIR_SOP, "", root / "DICOMDIR")
    (root / "notes.txt").write_text("scanned 2024, patient Doe")
    (root / "empty").write_bytes(b"")
    (root / "p1" / ".DS_Store").write_bytes(b"\x00\x00\x00\x01Bud1" + bytes(200))
    (root / "p1" / "labels.nii.gz").write_bytes(b"not really")
    return root, made


def test_messy_tree_classification(messy_tree):
    root, made = messy_tree
    d = discover([root], S, P)
    uids = {r.series_uid for r in d.series}
    assert uids == {made["good"].series_uid, made["mixed"].series_uid}
    mixed = next(r for r in d.series if r.series_uid == made["mixed"].series_uid)
    assert mixed.n_files == 12 and any("localizer" in w for w in mixed.warnings)
    by_uid = {}
    for s in d.skipped:
        by_uid.setdefault(s.series_uid, []).append(s)
    assert "localizer images inside" in by_uid[made["mixed"].series_uid][0].reason
    expect = {
        "localizer": "localizer",
        "sc": "secondary capture",
        "rtdose": "modality RTDOSE",
        "dose_img": "dose report",
        "sagittal": "not axial",
        "few": "4 slices; need >= 10",
        "perf": "not in HU",
        "two_pids": "different PatientIDs",
    }
    for key, text in expect.items():
        (item,) = by_uid[made[key].series_uid]
        assert text in item.reason, (key, item.reason)
        assert item.status == "skipped" and item.n_files == len(made[key].paths)
    stray = {Path(s.path).name: s.reason for s in d.skipped if s.series_uid == ""}
    assert "DICOMDIR" in stray["DICOMDIR"]
    assert "not a DICOM file" in stray["notes.txt"]
    assert "not a DICOM file" in stray["empty"]
    assert "not a DICOM file" in stray[".DS_Store"]
    assert "NIfTI file inside an input folder" in stray["labels.nii.gz"]
    sr = [s for s in d.skipped if "dose report" in s.reason and s.modality == "SR"]
    assert len(sr) == 1 and "not an image" in sr[0].reason
    # every file is accounted for exactly once
    n_files = sum(1 for p in root.rglob("*") if p.is_file())
    assert sum(r.n_files for r in d.series) + sum(s.n_files for s in d.skipped) == n_files


def test_no_phi_in_discovery(messy_tree, phi):
    root, _ = messy_tree
    d = discover([root], S, P)
    text = repr(d)
    for value in (*phi, "SOMEONE-ELSE"):
        assert value not in text
    good = d.series[0]
    assert good.study_id == study_id_for(phi[1], P)


def test_progress_callback(messy_tree):
    root, _ = messy_tree
    calls = []
    discover([root], S, P, progress=lambda done, total: calls.append((done, total)))
    total = sum(1 for p in root.rglob("*") if p.is_file())
    assert calls[-1] == (total, total)
    assert [c[0] for c in calls] == list(range(1, total + 1))


def test_series_ref_header_summary(dicom_factory):
    s = dicom_factory(n=12)
    (ref,) = discover([s.folder], S, P).series
    assert ref.kind == "dicom" and ref.modality == "CT" and ref.n_files == 12 and ref.n_slices == 12
    assert (ref.rows, ref.columns) == (16, 20)
    assert ref.kernel == "B60S" and ref.kvp == 120.0 and ref.slice_thickness_mm == 2.5
    assert ref.description == "Abdomen 1.0 B60s" and ref.study_date == "20240102"
    assert set(ref.paths) == set(s.paths)
    assert ref.source == str(s.folder)


def test_same_files_given_twice_counted_once(dicom_factory):
    s = dicom_factory(n=12)
    d = discover([s.folder, s.folder, s.paths[0]], S, P)
    assert len(d.series) == 1 and d.series[0].n_files == 12 and d.skipped == ()


def test_symbolic_links_followed_once_and_loops_listed(tmp_path, dicom_factory):
    """A link to a series folder elsewhere is followed; a link back to an ancestor (a loop), a link to itself
    and a folder that cannot be listed are each a skipped row with the reason; discovery ends."""
    elsewhere = dicom_factory(n=12, folder=tmp_path / "elsewhere" / "ct")
    root = tmp_path / "export"
    (root / "a" / "b").mkdir(parents=True)
    (root / "a" / "ct link").symlink_to(elsewhere.folder, target_is_directory=True)
    (root / "a" / "b" / "up").symlink_to(root / "a", target_is_directory=True)
    (root / "a" / "self").symlink_to("self")
    locked = root / "locked"
    locked.mkdir()
    locked.chmod(0)
    try:
        d = discover([root], S, P)
    finally:
        locked.chmod(0o755)
    (ref,) = d.series
    assert ref.series_uid == elsewhere.series_uid and ref.n_files == 12
    reasons = {Path(s.path).name: s.reason for s in d.skipped}
    assert "symbolic link to a folder already searched" in reasons["up"]
    assert "Too many levels of symbolic links" in reasons["self"]
    if os.geteuid() != 0:  # root lists any folder
        assert "cannot list this folder (Permission denied)" in reasons["locked"]


def test_missing_input_raises(tmp_path):
    with pytest.raises(IngestError, match="does not exist"):
        discover([tmp_path / "nope"], S, P)


def test_explicit_nifti_inputs(tmp_path):
    import nibabel as nib

    good = tmp_path / "case_ct.nii.gz"
    nib.save(nib.Nifti1Image(np.zeros((8, 9, 12), np.int16), np.diag([1.0, 1.0, 2.0, 1.0])), good)
    thin = tmp_path / "thin.nii"
    nib.save(nib.Nifti1Image(np.zeros((8, 9, 3), np.int16), np.eye(4)), thin)
    broken = tmp_path / "broken.nii.gz"
    broken.write_bytes(b"\x1f\x8b garbage")
    d = discover([good, thin, broken], S, P)
    (ref,) = d.series
    assert ref.kind == "nifti" and ref.paths == (good,) and ref.series_uid.startswith("nifti-")
    assert (ref.columns, ref.rows, ref.n_slices) == (8, 9, 12)
    reasons = {Path(s.path).name: s.reason for s in d.skipped}
    assert "3 slices; need >= 10" in reasons["thin.nii"]
    assert "not a readable NIfTI" in reasons["broken.nii.gz"]
    # pseudonym of a NIfTI is a keyed hash of its stem, not the stem itself
    assert "case_ct" not in ref.study_id


@pytest.mark.real_data
def test_real_tree_one_series(real_dir):
    d = discover([real_dir], S, P)
    assert [r.n_files for r in d.series] == [20]
    assert d.series[0].transfer_syntax == "1.2.840.10008.1.2.4.90"
    assert any("SeriesInstanceUID empty" in w for w in d.series[0].warnings)
    reasons = {Path(s.path).name: s.reason for s in d.skipped}
    assert "2 slices" in reasons["pydicom_ct_edge_cases"]  # the four 693_* files share one series
    assert "1 slice" in reasons["bad_sequence.dcm"] and "1 slice" in reasons["explicit_VR-UN.dcm"]
