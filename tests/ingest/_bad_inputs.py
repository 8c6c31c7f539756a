"""A corpus of bad inputs for ingestion, written from synthetic data (and real files when present).

:func:`write_corpus` writes each case under a root folder, in a folder or file of its own, and
returns the cases with the status ``bmdpipe run`` must give them in ``series.csv`` and a piece
of their reason. The good series sits under a path with spaces and non-ASCII characters. The
cases that must be processed are copies of it (new UIDs) with one defect each, so that the
whole pipeline runs on them; the cases refused or skipped are small series (16 x 20 pixels),
stray files, links and real files from ``shared/data/real``.

What ingestion does with each (``bmdpipe/ingest/load.py`` docstring): per-slice rescale and a
missing file meta are repaired, a truncated file and a missing slice are filled like a gap, a
gantry tilt is resampled, an Enhanced CT is read frame by frame; larger gaps, duplicates that
differ, mixed orientations, larger tilts and unusable pixel data are refused; other objects
are skipped.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pydicom
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

from conftest import CT_IMAGE, ENHANCED_CT, SECONDARY_CAPTURE, XRAY_DOSE_SR, base_dataset

MR_IMAGE = "1.2.840.10008.5.1.4.1.1.4"
DICOMDIR_SOP_CLASS = "1.2.840.10008.1.3.10"
GOOD = "good séries ü/CT 1 lumbar"  # spaces and non-ASCII characters in the path


@dataclass(frozen=True)
class BadInput:
    """One case: where it is, and the status and a piece of the reason of its ``series.csv`` rows.

    ``path`` is a file or folder; every ``series.csv`` row whose path is it or lies under it
    belongs to the case. ``reason`` '' accepts any reason (a processed series without warnings).
    """

    name: str
    path: Path
    status: str
    reason: str

    def owns(self, row_path: str) -> bool:
        """True if a ``series.csv`` row with this ``path`` belongs to the case."""
        return row_path == str(self.path) or row_path.startswith(str(self.path) + os.sep)


def nearest_slice(paths: Sequence[Path], z_mm: float) -> int:
    """Index of the slice file whose ImagePositionPatient z is nearest ``z_mm``."""
    zs = [float(pydicom.dcmread(p, stop_before_pixels=True).ImagePositionPatient[2]) for p in paths]
    return int(np.argmin(np.abs(np.asarray(zs) - z_mm)))


def copy_series(src: Sequence[Path], folder: Path, edit: Callable[[int, Dataset], None] | None = None, *,
                drop: Sequence[int] = (), file_meta: bool = True) -> list[Path]:
    """Write the files of a series (in slice order) under ``folder`` as a new series.

    New SeriesInstanceUID and SOPInstanceUIDs; ``edit(k, ds)`` changes slice ``k``; slices in
    ``drop`` are left out; ``file_meta=False`` writes bare implicit-VR datasets (no preamble,
    no file meta). Returns the written paths.
    """
    folder.mkdir(parents=True, exist_ok=True)
    series_uid = generate_uid()
    out = []
    for k, p in enumerate(src):
        if k in drop:
            continue
        ds = pydicom.dcmread(p)
        ds.SeriesInstanceUID = series_uid
        ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
        if edit is not None:
            edit(k, ds)
        path = folder / p.name
        if file_meta:
            ds.save_as(path, enforce_file_format=True)
        else:
            del ds.file_meta
            ds.save_as(path, enforce_file_format=False, implicit_vr=True, little_endian=True)
        out.append(path)
    return out


def _halve_pixel_data(victim: int) -> Callable[[int, Dataset], None]:
    """An interrupted transfer: slice ``victim`` keeps the first half of its pixel data (issue 20)."""
    def edit(k: int, ds: Dataset) -> None:
        if k == victim:
            ds.PixelData = ds.PixelData[: len(ds.PixelData) // 2]
    return edit


def _per_slice_rescale(k: int, ds: Dataset) -> None:
    """The same HU stored with three different rescales, slice by slice (stored values unsigned 16 bit)."""
    stored = np.frombuffer(ds.PixelData, "<u2")
    if k % 3 == 1:
        ds.RescaleSlope, ds.PixelData = 0.5, (stored * 2).astype("<u2").tobytes()
    elif k % 3 == 2:
        ds.RescaleIntercept, ds.PixelData = -2048, (stored + 1024).astype("<u2").tobytes()


def _gantry_tilt(n: int) -> Callable[[int, Dataset], None]:
    """Axial images whose positions step one row (+y) per slice, as a tilted gantry's: slice k holds the
    good slice k at row offset n - 1 - k in an image n - 1 rows taller (air around it), so every voxel
    keeps its LPS position and the resampled volume holds the good one in its last rows."""
    def edit(k: int, ds: Dataset) -> None:
        rows, cols = int(ds.Rows), int(ds.Columns)
        sy = float(ds.PixelSpacing[0])
        image = np.zeros((rows + n - 1, cols), "<u2")  # stored 0 = -1024 HU
        image[n - 1 - k: n - 1 - k + rows] = np.frombuffer(ds.PixelData, "<u2").reshape(rows, cols)
        x, y, z = (float(v) for v in ds.ImagePositionPatient)
        ds.ImagePositionPatient = [x, y - (n - 1 - k) * sy, z]
        ds.Rows = rows + n - 1
        ds.PixelData = image.tobytes()
        ds.GantryDetectorTilt = round(float(np.degrees(np.arctan2(sy, float(ds.SpacingBetweenSlices)))), 2)
    return edit


def write_enhanced_ct(src: Sequence[Path], path: Path) -> Path:
    """The series ``src`` (single-frame CT, slice order) as one Enhanced CT multi-frame file.

    Geometry and rescale live only in the functional groups; frames are stored in reverse z order.
    """
    first = pydicom.dcmread(src[0])
    frames = [pydicom.dcmread(p) for p in src][::-1]
    ds = base_dataset(ENHANCED_CT)
    for keyword in ("PatientName", "PatientID", "PatientBirthDate", "StudyInstanceUID", "StudyDate",
                    "FrameOfReferenceUID", "KVP", "ConvolutionKernel", "SeriesDescription"):
        if keyword in first:
            setattr(ds, keyword, first.data_element(keyword).value)
    ds.ImageType = "ORIGINAL\\PRIMARY\\AXIAL\\NONE"
    ds.InstanceNumber = 1
    ds.NumberOfFrames = len(frames)
    shared = Dataset()
    shared.PlaneOrientationSequence = [Dataset()]
    shared.PlaneOrientationSequence[0].ImageOrientationPatient = first.ImageOrientationPatient
    shared.PixelMeasuresSequence = [Dataset()]
    shared.PixelMeasuresSequence[0].PixelSpacing = first.PixelSpacing
    shared.PixelMeasuresSequence[0].SliceThickness = first.SliceThickness
    shared.PixelValueTransformationSequence = [Dataset()]
    pvt = shared.PixelValueTransformationSequence[0]
    pvt.RescaleSlope, pvt.RescaleIntercept, pvt.RescaleType = first.RescaleSlope, first.RescaleIntercept, "HU"
    shared.CTImageFrameTypeSequence = [Dataset()]
    shared.CTImageFrameTypeSequence[0].FrameType = "ORIGINAL\\PRIMARY\\AXIAL\\NONE"
    ds.SharedFunctionalGroupsSequence = [shared]
    per_frame = []
    for f in frames:
        item = Dataset()
        item.PlanePositionSequence = [Dataset()]
        item.PlanePositionSequence[0].ImagePositionPatient = f.ImagePositionPatient
        per_frame.append(item)
    ds.PerFrameFunctionalGroupsSequence = per_frame
    for keyword in ("SamplesPerPixel", "PhotometricInterpretation", "Rows", "Columns", "BitsAllocated",
                    "BitsStored", "HighBit", "PixelRepresentation"):
        setattr(ds, keyword, first.data_element(keyword).value)
    ds.PixelData = b"".join(f.PixelData for f in frames)
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)
    return path


def _bare(sop_class: str, modality: str, path: Path) -> Path:
    """A header-only object (an SR dose report) at ``path``."""
    ds = base_dataset(sop_class, modality=modality)
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)
    return path


def _rgb_image(sop_class: str, path: Path) -> Path:
    """A 32 x 48 RGB image of modality CT (a dose screen or screenshot)."""
    ds = base_dataset(sop_class)
    ds.SamplesPerPixel, ds.PhotometricInterpretation, ds.PlanarConfiguration = 3, "RGB", 0
    ds.Rows, ds.Columns = 32, 48
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 8, 8, 7, 0
    ds.PixelData = np.random.default_rng(5).integers(0, 256, (32, 48, 3), dtype=np.uint8).tobytes()
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)
    return path


def _dicomdir_with_mr(folder: Path, make_series: Callable) -> tuple[Path, Path]:
    """A file set: one small MR image and a DICOMDIR listing it (patient, study, series and image
    records). Returns (the DICOMDIR, the folder of the MR image)."""
    mr = make_series(n=1, folder=folder / "IMAGES" / "MR1", modality="MR", sop_class=MR_IMAGE)
    image = pydicom.dcmread(mr.paths[0], stop_before_pixels=True)
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = DICOMDIR_SOP_CLASS
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.FileSetID = "BMDPIPE"
    ds.FileSetConsistencyFlag = 0
    records = []
    for kind, keyword in (("PATIENT", "PatientID"), ("STUDY", "StudyInstanceUID"), ("SERIES", "SeriesInstanceUID"),
                          ("IMAGE", "SOPInstanceUID")):
        record = Dataset()
        record.DirectoryRecordType = kind
        setattr(record, keyword, getattr(image, keyword))
        records.append(record)
    records[-1].ReferencedFileID = list(mr.paths[0].relative_to(folder).parts)
    records[-1].ReferencedSOPClassUIDInFile = MR_IMAGE
    ds.DirectoryRecordSequence = records
    ds.save_as(folder / "DICOMDIR", enforce_file_format=True)
    return folder / "DICOMDIR", mr.folder


def write_corpus(root: Path, good: Sequence[Path], l4_z_mm: float, make_series: Callable,
                 real: Path | None = None) -> list[BadInput]:
    """Write every bad input under ``root``; return the cases.

    Parameters
    ----------
    root : Path
        Folder to fill (created).
    good : sequence of Path
        The files of a good synthetic CT series, in slice order, under ``root / GOOD``.
    l4_z_mm : float
        z (LPS, mm) of L4's body centre: the truncated file is the slice nearest it.
    make_series : callable
        ``dicom_factory`` (tests/ingest/conftest.py): writes a small series.
    real : Path, optional
        ``shared/data/real``: its corrupt and non-HU files are added when given.
    """
    return ([BadInput("good series, non-ASCII path with spaces", root / GOOD, "processed", "")]
            + _processed_copies(root, good, l4_z_mm) + _refused_series(root, make_series)
            + _skipped_objects(root, make_series, real))


def _processed_copies(root: Path, good: Sequence[Path], l4_z_mm: float) -> list[BadInput]:
    """Copies of the good series with one defect each that ingestion repairs, fills or resamples."""
    n = len(good)
    cases: list[BadInput] = []

    victim = nearest_slice(good, l4_z_mm)
    copy_series(good, root / "truncated pixel data", _halve_pixel_data(victim))
    cases.append(BadInput("truncated pixel data (L4)", root / "truncated pixel data", "processed",
                          f"{good[victim].name}: pixel data holds"))
    copy_series(good, root / "missing slice", drop=(n // 3,))
    cases.append(BadInput("missing slice", root / "missing slice", "processed", "gap: 1 missing slice(s)"))
    copy_series(good, root / "per-slice rescale", _per_slice_rescale)
    cases.append(BadInput("per-slice rescale", root / "per-slice rescale", "processed", ""))
    copy_series(good, root / "no preamble or file meta", file_meta=False)
    cases.append(BadInput("no preamble or file meta", root / "no preamble or file meta", "processed", ""))
    copy_series(good, root / "gantry tilt", _gantry_tilt(n))
    cases.append(BadInput("gantry tilt 26.6 deg", root / "gantry tilt", "processed",
                          "gantry tilt 26.6 deg: slices resampled"))
    write_enhanced_ct(good, root / "enhanced CT" / "multiframe.dcm")
    cases.append(BadInput("Enhanced CT (multi-frame)", root / "enhanced CT", "processed", ""))
    return cases


def _refused_series(root: Path, make_series: Callable) -> list[BadInput]:
    """Small series that loading refuses."""
    cases: list[BadInput] = []

    make_series(n=14, folder=root / "gap too large", drop=(5, 6, 7))
    cases.append(BadInput("gap of 3 slices", root / "gap too large", "failed", "3 missing slices"))

    def same_position(k: int, ds: Dataset) -> None:
        if k == 4:
            ds.ImagePositionPatient = [-10.0, -20.0, -100.0 + 2.5 * 3]

    make_series(n=12, folder=root / "duplicates that differ", edit=same_position)
    cases.append(BadInput("duplicate positions, different content", root / "duplicates that differ", "failed",
                          "two different slices at the same position"))

    def tilted_plane(k: int, ds: Dataset) -> None:
        if k == 3:
            ds.ImageOrientationPatient = [1, 0, 0, 0, 0.995, 0.0998749]

    make_series(n=12, folder=root / "mixed orientations", edit=tilted_plane)
    cases.append(BadInput("mixed orientations", root / "mixed orientations", "failed", "different orientations"))

    def sheared_45(k: int, ds: Dataset) -> None:
        ds.ImagePositionPatient = [-10.0, -20.0 + 2.5 * k, -100.0 + 2.5 * k]

    make_series(n=12, folder=root / "tilt beyond 30 deg", edit=sheared_45)
    cases.append(BadInput("gantry tilt of 45 deg", root / "tilt beyond 30 deg", "failed", "gantry tilt of 45.0 deg"))
    for p in make_series(n=12, folder=root / "every file truncated").paths:
        p.write_bytes(p.read_bytes()[:-300])
    cases.append(BadInput("every file truncated", root / "every file truncated", "failed",
                          "the pixel data of none of its 12 file(s) can be used"))

    def claims_2000(k: int, ds: Dataset) -> None:
        ds.Rows = ds.Columns = 2000

    make_series(n=12, folder=root / "header claims 2000 x 2000", edit=claims_2000)
    cases.append(BadInput("header claims more pixels than the file holds", root / "header claims 2000 x 2000",
                          "failed", "pixel data holds 640 of the 8000000 bytes"))
    return cases


def _skipped_objects(root: Path, make_series: Callable, real: Path | None) -> list[BadInput]:
    """Objects discovery lists as skipped: not CT images, not DICOM, links around a loop, corrupt real files."""
    cases: list[BadInput] = []

    def claims_30000(k: int, ds: Dataset) -> None:
        ds.Rows = ds.Columns = 30000

    make_series(n=12, folder=root / "huge header", edit=claims_30000)
    cases.append(BadInput("header claims 30000 x 30000", root / "huge header", "skipped",
                          "refused before reading pixel data"))
    cases.append(BadInput("SR dose report", _bare(XRAY_DOSE_SR, "SR", root / "dose report" / "sr"), "skipped",
                          "dose report"))
    cases.append(BadInput("RGB secondary capture", _rgb_image(SECONDARY_CAPTURE, root / "rgb" / "screen.dcm"),
                          "skipped", "secondary capture"))
    cases.append(BadInput("RGB image with a CT SOP class", _rgb_image(CT_IMAGE, root / "rgb" / "ct_rgb.dcm"),
                          "skipped", "colour (RGB) images"))
    dicomdir, mr = _dicomdir_with_mr(root / "dicomdir", make_series)
    cases.append(BadInput("DICOMDIR", dicomdir, "skipped", "DICOMDIR index file"))
    cases.append(BadInput("MR image", mr, "skipped", "modality MR"))
    stray = root / "stray"
    stray.mkdir()
    (stray / "empty").write_bytes(b"")
    cases.append(BadInput("empty file", stray / "empty", "skipped", "not a DICOM file"))
    (stray / "random.bin").write_bytes(np.random.default_rng(20).integers(0, 256, 4096, dtype=np.uint8).tobytes())
    cases.append(BadInput("random bytes", stray / "random.bin", "skipped", "not a DICOM file"))
    (stray / "dicm_then_noise.dcm").write_bytes(
        bytes(128) + b"DICM" + np.random.default_rng(21).integers(0, 256, 4096, dtype=np.uint8).tobytes())
    cases.append(BadInput("DICM marker then noise", stray / "dicm_then_noise.dcm", "skipped", "not readable as DICOM"))
    loop = root / "symlink loop" / "inner"
    loop.mkdir(parents=True)
    (loop / "back").symlink_to("..", target_is_directory=True)
    (loop / "self").symlink_to("self")
    cases.append(BadInput("symbolic link back to its parent folder", loop / "back", "skipped",
                          "symbolic link to a folder already searched"))
    cases.append(BadInput("symbolic link to itself", loop / "self", "skipped", "Too many levels of symbolic links"))
    if real is not None:
        edge = real / "pydicom_ct_edge_cases"
        for name, reason in (("no_meta.dcm", "not a DICOM file"), ("eCT_Supplemental.dcm", "not in HU")):
            (root / "real").mkdir(exist_ok=True)
            shutil.copy(edge / name, root / "real" / name)
            cases.append(BadInput(f"real {name}", root / "real" / name, "skipped", reason))
    return cases
