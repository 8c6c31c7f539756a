"""Fixtures for ingestion tests: small synthetic DICOM series built with pydicom, broken on purpose.

``dicom_factory`` writes a series of ``n`` tiny (default 16 x 20) CT slices with known HU
(ground truth returned with the paths) and lets a test change any per-slice attribute.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

CT_IMAGE = "1.2.840.10008.5.1.4.1.1.2"
ENHANCED_CT = "1.2.840.10008.5.1.4.1.1.2.1"
SECONDARY_CAPTURE = "1.2.840.10008.5.1.4.1.1.7"
RT_DOSE = "1.2.840.10008.5.1.4.1.1.481.2"
XRAY_DOSE_SR = "1.2.840.10008.5.1.4.1.1.88.67"

REAL = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "real"

PHI_NAME = "Doe^Jane"
PHI_ID = "PID-777-SECRET"
PHI_BIRTH = "19411231"


@pytest.fixture
def real_dir() -> Path:
    if not REAL.is_dir():
        pytest.skip(f"real test data {REAL} absent")
    return REAL


def truth_hu(n: int, rows: int, cols: int) -> np.ndarray:
    """Ground-truth HU (k, j, i): air background with a 'bone' block, distinct per slice."""
    k, j, i = np.meshgrid(np.arange(n), np.arange(rows), np.arange(cols), indexing="ij")
    hu = -1000 + 40 * k + 6 * j + 2 * i
    hu[:, rows // 4: rows // 2, cols // 4: cols // 2] += 1400
    return hu.astype(np.int32)


def base_dataset(sop_class: str = CT_IMAGE, *, modality: str = "CT", series_uid: str = "",
                 study_uid: str = "", patient_id: str = PHI_ID) -> Dataset:
    sop_uid = generate_uid()
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = sop_class
    meta.MediaStorageSOPInstanceUID = sop_uid
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = sop_class
    ds.SOPInstanceUID = sop_uid
    ds.Modality = modality
    ds.PatientName = PHI_NAME
    ds.PatientID = patient_id
    ds.PatientBirthDate = PHI_BIRTH
    ds.StudyInstanceUID = study_uid or generate_uid()
    ds.SeriesInstanceUID = series_uid or generate_uid()
    ds.StudyDate = "20240102"
    ds.SeriesDescription = "Abdomen 1.0 B60s"
    ds.Manufacturer = "SIEMENS"
    ds.ConvolutionKernel = "B60s"
    ds.KVP = 120
    return ds


def set_pixels(ds: Dataset, stored: np.ndarray) -> None:
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows, ds.Columns = stored.shape[-2:]
    ds.BitsAllocated = 16
    ds.BitsStored = 16
    ds.HighBit = 15
    ds.PixelRepresentation = 1
    ds.PixelData = stored.astype("<i2").tobytes()


@dataclass
class Series:
    folder: Path
    paths: list[Path]
    hu: np.ndarray                     # ground truth (k, j, i) in position order
    positions: np.ndarray              # (n, 3) LPS positions in k order
    series_uid: str
    datasets: list[Dataset] = field(default_factory=list, repr=False)


@pytest.fixture
def dicom_factory(tmp_path: Path) -> Callable[..., Series]:
    counter = iter(range(10_000))

    def make(
        n: int = 12,
        rows: int = 16,
        cols: int = 20,
        *,
        spacing_zyx: tuple[float, float, float] = (2.5, 0.8, 0.7),
        origin: tuple[float, float, float] = (-10.0, -20.0, -100.0),
        orientation: tuple[float, ...] = (1, 0, 0, 0, 1, 0),
        folder: Path | None = None,
        slope: float | list[float] = 1.0,
        intercept: float | list[float] = -1024.0,
        modality: str = "CT",
        sop_class: str = CT_IMAGE,
        image_type: str = "ORIGINAL\\PRIMARY\\AXIAL",
        patient_id: str = PHI_ID,
        transfer_syntax: str | None = None,
        edit: Callable[[int, Dataset], None] | None = None,
        drop: tuple[int, ...] = (),
        write: bool = True,
    ) -> Series:
        folder = folder or tmp_path / f"series{next(counter)}"
        folder.mkdir(parents=True, exist_ok=True)
        hu = truth_hu(n, rows, cols)
        r = np.asarray(orientation[:3], float)
        c = np.asarray(orientation[3:], float)
        normal = np.cross(r, c)
        positions = np.array(origin, float) + np.arange(n)[:, None] * spacing_zyx[0] * normal
        series_uid = generate_uid()
        study_uid = generate_uid()
        slopes = slope if isinstance(slope, list) else [slope] * n
        intercepts = intercept if isinstance(intercept, list) else [intercept] * n
        paths, dsets = [], []
        names = [f"IM{random.Random(k).randrange(10**8):08d}" for k in range(n)]  # name order != z order
        for k in range(n):
            if k in drop:
                continue
            ds = base_dataset(sop_class, modality=modality, series_uid=series_uid, study_uid=study_uid,
                              patient_id=patient_id)
            ds.ImageType = image_type
            ds.InstanceNumber = n - k  # reversed on purpose
            ds.ImagePositionPatient = [float(v) for v in positions[k]]
            ds.ImageOrientationPatient = [float(v) for v in orientation]
            ds.PixelSpacing = [spacing_zyx[1], spacing_zyx[2]]
            ds.SliceThickness = spacing_zyx[0]
            ds.RescaleSlope = slopes[k]
            ds.RescaleIntercept = intercepts[k]
            stored = np.rint((hu[k] - intercepts[k]) / slopes[k]).astype(np.int16)
            set_pixels(ds, stored)
            if edit is not None:
                edit(k, ds)
            if transfer_syntax is not None:
                ds.compress(transfer_syntax, encoding_plugin="pylibjpeg" if "4.9" in transfer_syntax else "")
            path = folder / names[k]
            if write:
                ds.save_as(path, enforce_file_format=True)
            paths.append(path)
            dsets.append(ds)
        keep = [k for k in range(n) if k not in drop]
        return Series(folder, paths, hu[keep], positions[keep], series_uid, dsets)

    return make


@pytest.fixture
def phi() -> tuple[str, str, str]:
    """(PatientName, PatientID, BirthDate) written into every synthetic file."""
    return PHI_NAME, PHI_ID, PHI_BIRTH


@pytest.fixture
def enhanced_ct_writer() -> Callable[..., tuple[np.ndarray, np.ndarray]]:
    return write_enhanced_ct


def write_enhanced_ct(path: Path, n: int = 6, rows: int = 12, cols: int = 14, *, rescale_type: str = "HU",
                image_type: str = "ORIGINAL\\PRIMARY\\AXIAL\\NONE", spacing_z: float = 1.5,
                per_frame_rescale: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Write an Enhanced CT file whose frames are stored in reverse z order.

    Rescale lives only in the functional groups (shared, or per frame with a different
    intercept per frame). Returns (ground-truth HU in ascending z, positions).
    """
    ds = base_dataset(ENHANCED_CT)
    ds.ImageType = image_type
    ds.InstanceNumber = 1
    ds.NumberOfFrames = n
    hu = truth_hu(n, rows, cols)
    positions = np.array([[5.0, -7.0, 30.0 + spacing_z * k] for k in range(n)])
    shared = Dataset()
    po = Dataset()
    po.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
    shared.PlaneOrientationSequence = [po]
    pm = Dataset()
    pm.PixelSpacing = [0.5, 0.6]
    pm.SliceThickness = spacing_z
    shared.PixelMeasuresSequence = [pm]
    ft = Dataset()
    ft.FrameType = image_type
    shared.CTImageFrameTypeSequence = [ft]
    intercepts = [-1024.0 - (50.0 * f if per_frame_rescale else 0.0) for f in range(n)]
    if not per_frame_rescale:
        pvt = Dataset()
        pvt.RescaleIntercept = -1024
        pvt.RescaleSlope = 1
        pvt.RescaleType = rescale_type
        shared.PixelValueTransformationSequence = [pvt]
    ds.SharedFunctionalGroupsSequence = [shared]
    per_frame = []
    stored = []
    for f in range(n):
        k = n - 1 - f  # frame f holds slice k (reverse order)
        item = Dataset()
        pp = Dataset()
        pp.ImagePositionPatient = [float(v) for v in positions[k]]
        item.PlanePositionSequence = [pp]
        if per_frame_rescale:
            pvt = Dataset()
            pvt.RescaleIntercept = intercepts[f]
            pvt.RescaleSlope = 1
            pvt.RescaleType = rescale_type
            item.PixelValueTransformationSequence = [pvt]
        per_frame.append(item)
        stored.append(hu[k] - intercepts[f])
    ds.PerFrameFunctionalGroupsSequence = per_frame
    set_pixels(ds, np.array(stored))
    ds.save_as(path, enforce_file_format=True)
    return hu, positions
