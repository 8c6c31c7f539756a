"""DICOM / NIfTI / truth-file writers of the synthetic generator: round trips with pydicom and nibabel."""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pydicom
import pytest
from pydicom.errors import InvalidDicomError

from bmdpipe.synthetic import CaseSpec, make_case
from bmdpipe.synthetic.dicom import write_dicom_series, write_labels_nifti, write_sample_data, write_truth


@pytest.fixture(scope="module")
def small_case():
    return make_case(41, CaseSpec(spacing_mm=(2.0, 1.5, 1.5), levels=("L4", "L5"), orientation="FFS"))


def _read_folder(folder):
    series, other = {}, []
    for p in sorted(folder.iterdir()):
        try:
            ds = pydicom.dcmread(p)
        except InvalidDicomError:
            other.append(p.name)
            continue
        series.setdefault(ds.SeriesInstanceUID, []).append(ds)
    return series, other


@pytest.mark.parametrize("compress", [None, "rle", "jpeg2000-lossless"])
def test_dicom_round_trip(small_case, tmp_path, compress):
    case = small_case
    vol = case.volume
    paths = write_dicom_series(case, tmp_path, compress=compress)
    assert len(paths) == vol.shape[0] + 3
    names = [p.name for p in paths[: vol.shape[0]]]
    assert any(not n.endswith(".dcm") for n in names) and any(n.endswith(".dcm") for n in names)
    series, other = _read_folder(tmp_path)
    assert sorted(other) == [".DS_Store", "README.txt"]
    assert len(series) == 2
    ct = series[vol.meta.series_uid]
    (loc,) = [s for uid, s in series.items() if uid != vol.meta.series_uid]
    assert list(loc[0].ImageType) == ["ORIGINAL", "PRIMARY", "LOCALIZER"]
    assert len(ct) == vol.shape[0]
    iop = np.array(ct[0].ImageOrientationPatient, dtype=float)
    normal = np.cross(iop[:3], iop[3:])
    assert np.allclose(iop[:3], vol.direction[:, 0]) and np.allclose(iop[3:], vol.direction[:, 1])
    ct.sort(key=lambda d: float(np.dot(normal, np.array(d.ImagePositionPatient, dtype=float))))
    # our k axis may run against the normal (FFS: k -> -z, normal = +z): compare either way
    pos = np.array([np.array(d.ImagePositionPatient, dtype=float) for d in ct])
    expect = vol.index_to_lps(np.stack([np.arange(vol.shape[0]), np.zeros(vol.shape[0]), np.zeros(vol.shape[0])], 1))
    if not np.allclose(pos[0], expect[0], atol=1e-3):
        ct = ct[::-1]
        pos = pos[::-1]
    assert np.allclose(pos, expect, atol=1e-3)
    inst = [int(d.InstanceNumber) for d in ct]
    assert inst != sorted(inst) and inst != sorted(inst, reverse=True)  # not monotone with position
    assert [float(x) for x in ct[0].PixelSpacing] == pytest.approx([vol.spacing[1], vol.spacing[2]])
    hu = np.stack([d.pixel_array.astype(np.float32) * float(d.RescaleSlope) + float(d.RescaleIntercept)
                   for d in ct])
    assert hu.shape == vol.shape
    assert np.max(np.abs(hu - vol.array)) <= 0.5 + 1e-4
    phi = case.truth.phi
    for d in (ct[0], loc[0]):
        assert str(d.PatientName) == phi["PatientName"]
        assert d.PatientID == phi["PatientID"] and d.PatientBirthDate == phi["PatientBirthDate"]
        assert d.Modality == "CT" and d.Manufacturer == "bmdpipe-synthetic"
    assert ct[0].PatientPosition == "FFS"
    # the planted PHI strings are greppable in the raw bytes of an uncompressed file
    if compress is None:
        raw = paths[0].read_bytes()
        assert phi["PatientID"].encode() in raw


def test_override_phi(small_case, tmp_path):
    paths = write_dicom_series(small_case, tmp_path, patient_name="Other^Name", patient_id="X1",
                               birth_date="19500101", add_localizer=False, add_stray_files=False,
                               shuffle_names=False)
    d = pydicom.dcmread(paths[0])
    assert str(d.PatientName) == "Other^Name" and d.PatientID == "X1" and d.PatientBirthDate == "19500101"
    assert [p.name for p in paths[:2]] == ["IM00001.dcm", "IM00002.dcm"]


def test_labels_nifti_aligned(small_case, tmp_path):
    case = small_case
    path = write_labels_nifti(case, tmp_path / "labels.nii.gz")
    img = nib.load(path)
    data = np.asarray(img.dataobj)
    assert data.shape == case.labels.shape[::-1]
    for v in case.truth.vertebrae:
        ijk = np.argwhere(data == v.verse_id).mean(0)
        ras = img.affine[:3, :3] @ ijk + img.affine[:3, 3]
        lps = ras * np.array([-1, -1, 1])
        expect = case.volume.index_to_lps(np.argwhere(case.labels == v.verse_id).mean(0))
        assert np.allclose(lps, expect, atol=1e-6)


def test_truth_json(small_case, tmp_path):
    path = write_truth(small_case, tmp_path / "truth.json", arrays=True)
    d = json.loads(path.read_text())
    assert [v["name"] for v in d["vertebrae"]] == ["L4", "L5"]
    assert d["vertebrae"][0]["pedicles"][0]["side"] == "left"
    assert d["phantom"]["rods"][0]["name"] == "A"
    assert d["geometry"]["series_uid"] == small_case.volume.meta.series_uid
    assert d["scanner"]["slope_hu_per_mg_cm3"] == small_case.truth.scanner.slope_hu_per_mg_cm3
    arr = np.load(path.with_suffix(".npz"))
    assert np.array_equal(arr["labels"], small_case.labels)


@pytest.mark.slow
def test_write_sample_data(tmp_path):
    out = write_sample_data(tmp_path, spacing_mm=(2.5, 2.0, 2.0), levels=("L4", "L5"))
    assert set(out) == {"preop_mindways", "preop_ha", "postop_screws"}
    t = json.loads(out["postop_screws"]["truth"].read_text())
    assert len(t["screws"]) == 4 and any(s["loosened"] for s in t["screws"])
    assert json.loads(out["preop_ha"]["truth"].read_text())["phantom"]["material"] == "HA"


@pytest.mark.parametrize("compress", [None, "rle"])
def test_written_files_are_reproducible(small_case, tmp_path, compress):
    """The same case written twice gives byte-identical files, compressed ones included (their
    SOPInstanceUIDs are the case's seeded ones, not new random UIDs)."""
    import hashlib

    def digests(folder):
        write_dicom_series(small_case, folder, compress=compress)
        return {p.relative_to(folder): hashlib.sha256(p.read_bytes()).hexdigest()
                for p in sorted(folder.rglob("*")) if p.is_file()}

    assert digests(tmp_path / "a") == digests(tmp_path / "b")
