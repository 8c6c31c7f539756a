"""Write a synthetic case as files: DICOM series (+ localizer and stray files), NIfTI labels, truth JSON."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import (CTImageStorage, ExplicitVRLittleEndian, JPEG2000Lossless, PYDICOM_IMPLEMENTATION_UID,
                         RLELossless, generate_uid)

from .truth import SyntheticCase, truth_to_dict

__all__ = ["write_dicom_series", "write_labels_nifti", "write_truth", "write_sample_data", "demo_postop_spec",
           "patient_position", "labels_affine_ras"]

_COMPRESS = {"jpeg2000-lossless": JPEG2000Lossless, "rle": RLELossless}
_STORED_MAX = 65535


def patient_position(direction: np.ndarray) -> str:
    """DICOM PatientPosition (HFS/FFS/HFP/FFP) matching a signed-permutation direction matrix."""
    d = np.asarray(direction)
    prone = d[1, 1] < 0
    feet_first = (d[0, 0] < 0) != prone  # FFS: rows run to -x; HFP: rows run to -x too
    return ("FF" if feet_first else "HF") + ("P" if prone else "S")


def _uid(*parts) -> str:
    return generate_uid(entropy_srcs=["bmdpipe-synthetic", *[str(p) for p in parts]])


def _base_dataset(case: SyntheticCase, sop_uid: str, series_uid: str, phi: dict, study_uid: str,
                  frame_uid: str) -> Dataset:
    vol = case.volume
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = CTImageStorage
    meta.MediaStorageSOPInstanceUID = sop_uid
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
    ds = Dataset()
    ds.file_meta = meta
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.SOPClassUID = CTImageStorage
    ds.SOPInstanceUID = sop_uid
    ds.StudyInstanceUID = study_uid
    ds.SeriesInstanceUID = series_uid
    ds.FrameOfReferenceUID = frame_uid
    ds.PositionReferenceIndicator = ""
    study_date = vol.meta.study_date or "20240115"
    ds.StudyDate = ds.SeriesDate = ds.AcquisitionDate = ds.ContentDate = study_date
    ds.StudyTime = ds.SeriesTime = ds.AcquisitionTime = ds.ContentTime = "093012.000000"
    ds.AccessionNumber = f"ACC{case.truth.seed:07d}"
    ds.StudyID = f"{case.truth.seed % 100000}"
    ds.StudyDescription = "CT LUMBAR SPINE QCT"
    ds.Modality = "CT"
    ds.Manufacturer = "bmdpipe-synthetic"
    ds.ManufacturerModelName = "DigitalSpine"
    ds.InstitutionName = "Synthetic General Hospital"
    ds.ReferringPhysicianName = "Referrer^Synthetic"
    ds.StationName = "SYNCT01"
    ds.PatientName = phi["PatientName"]
    ds.PatientID = phi["PatientID"]
    ds.PatientBirthDate = phi["PatientBirthDate"]
    ds.PatientSex = "F" if case.truth.seed % 2 else "M"
    try:
        age = int(study_date[:4]) - int(phi["PatientBirthDate"][:4])
        ds.PatientAge = f"{age:03d}Y"
    except ValueError:
        pass
    ds.BodyPartExamined = "LSPINE"
    ds.PatientPosition = patient_position(vol.direction)
    ds.KVP = "120"
    ds.XRayTubeCurrent = 250
    ds.ExposureTime = 1000
    ds.ConvolutionKernel = vol.meta.kernel or "STANDARD"
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated = 16
    ds.BitsStored = 16
    ds.HighBit = 15
    ds.PixelRepresentation = 0
    ds.RescaleIntercept = "-1024"
    ds.RescaleSlope = "1"
    ds.RescaleType = "HU"
    ds.WindowCenter = "400"
    ds.WindowWidth = "1800"
    return ds


def _stored(hu: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(hu + 1024.0), 0, _STORED_MAX).astype(np.uint16)


def _save(ds: Dataset, path: Path, compress: str | None) -> None:
    if compress is not None:
        if compress not in _COMPRESS:
            raise ValueError(f"compress={compress!r} unknown; use None, 'jpeg2000-lossless' or 'rle'")
        ds.compress(_COMPRESS[compress], generate_instance_uid=False)  # keep the seeded UIDs: reproducible files
    ds.save_as(path, enforce_file_format=True)


def write_dicom_series(case: SyntheticCase, folder, *, compress: str | None = None, shuffle_names: bool = True,
                       add_localizer: bool = True, add_stray_files: bool = True, patient_name: str | None = None,
                       patient_id: str | None = None, birth_date: str | None = None,
                       series_description: str = "QCT LSPINE 1.0 STANDARD", series_number: int = 3) -> list[Path]:
    """Write the case as a DICOM CT series, one file per axial slice.

    Parameters
    ----------
    case : SyntheticCase
    folder : path
        Created if missing.
    compress : None, 'jpeg2000-lossless' or 'rle'
        Transfer syntax of the pixel data (None = explicit VR little endian).
    shuffle_names : bool
        Random file names (about a third without ``.dcm``); InstanceNumber is then a random
        permutation, NOT monotone with position. False gives ``IM00001.dcm ...`` in slice order.
    add_localizer : bool
        Add a one-image coronal localizer (ImageType ORIGINAL\\PRIMARY\\LOCALIZER, own series).
    add_stray_files : bool
        Add ``README.txt`` and a binary ``.DS_Store``.
    patient_name, patient_id, birth_date : str, optional
        PHI written to the headers; default the planted values ``case.truth.phi``.

    Returns
    -------
    list of Path
        The CT slice files (in slice order k = 0..K-1), then the localizer, then stray files.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    vol = case.volume
    phi = _phi_with_overrides(case.truth.phi, patient_name, patient_id, birth_date)
    seed = case.truth.seed
    rng = np.random.default_rng([seed, 7041])
    series_uid = vol.meta.series_uid
    study_uid = _uid(series_uid, "study")
    frame_uid = _uid(series_uid, "frame")
    inst, names = _instance_numbers_and_names(vol.shape[0], shuffle_names, rng)
    paths = []
    for k in range(vol.shape[0]):
        ds = _axial_slice_dataset(case, k, phi, study_uid, frame_uid)
        ds.SeriesDescription = series_description
        ds.SeriesNumber = series_number
        ds.AcquisitionNumber = 1
        ds.InstanceNumber = int(inst[k])
        path = folder / names[k]
        _save(ds, path, compress)
        paths.append(path)
    if add_localizer:
        paths.append(_write_localizer(case, folder, phi, study_uid, frame_uid, compress))
    if add_stray_files:
        paths += _write_stray_files(folder, rng)
    return paths


def _phi_with_overrides(planted: dict, patient_name: str | None, patient_id: str | None,
                        birth_date: str | None) -> dict:
    """The planted PHI with each given value in its place."""
    phi = dict(planted)
    if patient_name is not None:
        phi["PatientName"] = patient_name
    if patient_id is not None:
        phi["PatientID"] = patient_id
    if birth_date is not None:
        phi["PatientBirthDate"] = birth_date
    return phi


def _instance_numbers_and_names(n: int, shuffle: bool, rng: np.random.Generator) -> tuple[np.ndarray, list[str]]:
    """InstanceNumber and file name of each slice: a random permutation and random names (about a
    third without ``.dcm``) when shuffled, else ``1..n`` and ``IM00001.dcm ...``."""
    inst = rng.permutation(n) + 1 if shuffle else np.arange(1, n + 1)
    if shuffle:
        names = []
        for k in range(n):
            stem = "".join(rng.choice(list("0123456789ABCDEF"), size=12))
            names.append(stem + (".dcm" if rng.uniform() < 0.65 else ""))
    else:
        names = [f"IM{k + 1:05d}.dcm" for k in range(n)]
    return inst, names


def _axial_slice_dataset(case: SyntheticCase, k: int, phi: dict, study_uid: str, frame_uid: str) -> Dataset:
    """The CT image of axial slice ``k``: geometry (LPS mm) and stored pixels; the series
    description and numbers are left to the caller."""
    vol = case.volume
    series_uid = vol.meta.series_uid
    sop = _uid(series_uid, "slice", k)
    ds = _base_dataset(case, sop, series_uid, phi, study_uid, frame_uid)
    ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
    sz, sy, sx = vol.spacing
    pos = vol.index_to_lps(np.array([k, 0, 0], dtype=float))
    ds.ImagePositionPatient = [round(float(v), 4) for v in pos]
    ds.ImageOrientationPatient = [float(v) for v in (*vol.direction[:, 0], *vol.direction[:, 1])]
    ds.SliceLocation = round(float(pos[2]), 4)
    ds.PixelSpacing = [round(sy, 6), round(sx, 6)]
    ds.SliceThickness = round(float(vol.meta.slice_thickness_mm or sz), 4)
    ds.SpacingBetweenSlices = round(sz, 6)
    ds.Rows, ds.Columns = vol.shape[1], vol.shape[2]
    ds.PixelData = _stored(vol.array[k]).tobytes()
    return ds


def _write_stray_files(folder: Path, rng: np.random.Generator) -> list[Path]:
    """A ``README.txt`` and a binary ``.DS_Store`` beside the series, as exports often hold."""
    readme = folder / "README.txt"
    readme.write_text("Exported by bmdpipe-synthetic. Not a DICOM file.\n")
    junk = folder / ".DS_Store"
    junk.write_bytes(b"\x00\x00\x00\x01Bud1" + rng.integers(0, 256, size=2048, dtype=np.uint8).tobytes())
    return [readme, junk]


def _write_localizer(case, folder: Path, phi, study_uid, frame_uid, compress) -> Path:
    """One coronal projection image (mean HU along y, rows = -z) as a LOCALIZER series."""
    vol = case.volume
    arr = vol.array
    # canonical axes: put x along columns (+x) and z along rows (top = superior)
    d = vol.direction
    a = arr
    if d[0, 0] < 0:
        a = a[:, :, ::-1]
    if d[2, 2] < 0:
        a = a[::-1]
    proj = a.mean(axis=1)[::-1]  # rows: superior -> inferior
    series_uid = _uid(vol.meta.series_uid, "localizer")
    sop = _uid(vol.meta.series_uid, "localizer-image")
    ds = _base_dataset(case, sop, series_uid, phi, study_uid, frame_uid)
    ds.ImageType = ["ORIGINAL", "PRIMARY", "LOCALIZER"]
    ds.SeriesDescription = "Topogram 0.6 T20s"
    ds.SeriesNumber = 1
    ds.InstanceNumber = 1
    sz, sy, sx = vol.spacing
    corners = vol.index_to_lps(np.array([[0, 0, 0], [vol.shape[0] - 1, vol.shape[1] - 1, vol.shape[2] - 1]],
                                        dtype=float))
    x0, z1 = corners[:, 0].min(), corners[:, 2].max()
    ds.ImagePositionPatient = [round(float(x0), 4), 0.0, round(float(z1), 4)]
    ds.ImageOrientationPatient = [1.0, 0.0, 0.0, 0.0, 0.0, -1.0]
    ds.PixelSpacing = [round(sz, 6), round(sx, 6)]
    ds.SliceThickness = round(float(vol.spacing[1] * vol.shape[1]), 3)
    ds.Rows, ds.Columns = proj.shape
    ds.PixelData = _stored(np.ascontiguousarray(proj)).tobytes()
    path = folder / ("LOC" + series_uid[-8:].replace(".", "") )
    # openjpeg refuses images smaller than its default 6 resolution levels (< 32 px); a
    # small localizer is stored uncompressed, as many scanners do anyway.
    _save(ds, path, compress if min(proj.shape) >= 64 else None)
    return path


def labels_affine_ras(case: SyntheticCase) -> np.ndarray:
    """(4, 4) affine of the label NIfTI: (i, j, k) index -> RAS mm (LPS affine with x, y negated)."""
    return case.volume.affine_ras


def write_labels_nifti(case: SyntheticCase, path) -> Path:
    """Write ``case.labels`` (VerSe ids, int16) as NIfTI aligned to the CT through its RAS affine.

    The NIfTI data array is indexed (i, j, k) (column, row, slice) like a DICOM-derived NIfTI.
    """
    import nibabel as nib

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(case.volume.nifti_image(case.labels.astype(np.int16)), str(path))
    return path


def write_truth(case: SyntheticCase, path, *, arrays: bool = False) -> Path:
    """Write the truth as JSON (everything except voxel arrays) plus the CT geometry.

    With ``arrays=True`` also writes ``<stem>.npz`` next to it with ``mineral_mg_cm3``,
    ``tissue``, ``part`` and ``labels`` (same (k, j, i) grid as the DICOM series).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    d = truth_to_dict(case.truth)
    vol = case.volume
    d["geometry"] = {"shape_kji": list(vol.shape), "spacing_zyx_mm": list(vol.spacing),
                     "origin_lps": list(vol.origin), "direction": vol.direction.tolist(),
                     "series_uid": vol.meta.series_uid}
    path.write_text(json.dumps(d, indent=2))
    if arrays:
        np.savez_compressed(path.with_suffix(".npz"), mineral_mg_cm3=case.truth.mineral_mg_cm3,
                            tissue=case.truth.tissue, part=case.truth.part, labels=case.labels)
    return path


def demo_postop_spec(levels=("L3", "L4", "L5"), spacing_mm=(1.0, 0.8, 0.8)):
    """The demo's post-operative case: screws in the two lowest levels joined by rods; the upper left screw
    has a 1.5 mm halo over 70 % of its circumference with a sclerotic rim (loose), the lower left none, the
    right ones 0.5 mm over 40 % (not loose)."""
    from .spec import CaseSpec, ScrewSpec

    post_levels = levels[-2:] if len(levels) >= 2 else levels
    screws = []
    for i, lev in enumerate(post_levels):
        screws.append(ScrewSpec(lev, "left", halo_width_mm=1.5 if i == 0 else 0.0, halo_arc_fraction=0.7,
                                sclerotic_rim=i == 0))
        screws.append(ScrewSpec(lev, "right", halo_width_mm=0.5, halo_arc_fraction=0.4))
    return CaseSpec(levels=tuple(levels), spacing_mm=spacing_mm, phantom="mindways", screws=tuple(screws),
                    fusion_rods=True)


def write_sample_data(folder, seeds=(101, 102, 103), *, spacing_mm=(1.0, 0.8, 0.8), compress: str | None = None,
                      levels=("L3", "L4", "L5")) -> dict[str, dict[str, Path]]:
    """Write three demo cases: pre-op with a Mindways phantom, pre-op with an HA phantom, post-op with screws.

    Each case goes to ``folder/<name>/`` with ``dicom/`` (series + localizer + stray files),
    ``labels.nii.gz`` and ``truth.json``. Returns ``{name: {"dicom": dir, "labels": path, "truth": path}}``.
    """
    from .case import make_case
    from .spec import CaseSpec

    folder = Path(folder)
    cases = {
        "preop_mindways": CaseSpec(levels=tuple(levels), spacing_mm=spacing_mm, phantom="mindways"),
        "preop_ha": CaseSpec(levels=tuple(levels), spacing_mm=spacing_mm, phantom="ha"),
        "postop_screws": demo_postop_spec(levels, spacing_mm),
    }
    out = {}
    for (name, spec), seed in zip(cases.items(), seeds):
        case = make_case(seed, spec)
        d = folder / name
        write_dicom_series(case, d / "dicom", compress=compress)
        out[name] = {"dicom": d / "dicom", "labels": write_labels_nifti(case, d / "labels.nii.gz"),
                     "truth": write_truth(case, d / "truth.json")}
    return out
