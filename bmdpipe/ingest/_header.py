"""Header-only reading of DICOM files (no pixel data), shared by discovery and loading.

Every value is read defensively: a malformed element gives ``None`` / ``''``, never an
exception. PatientID is read from the raw bytes (no value validation, so no pydicom
warning can echo it) and kept in a private field that only the pseudonym step reads.
The free texts that reach the outputs (SeriesDescription, the contrast agent) are kept
cleaned of identifying words (:mod:`._descriptors`).
"""

from __future__ import annotations

import hashlib
import math
import re
import logging
import threading
import warnings
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pydicom
import pydicom.config
from pydicom.dataset import Dataset
from pydicom.uid import UID

from ._descriptors import clean_descriptor, header_identifiers

__all__ = [
    "FileHeader",
    "FrameHeader",
    "NotDicom",
    "read_file_header",
    "quiet_pydicom",
    "CT_IMAGE_SOP_CLASSES",
    "ENHANCED_CT_SOP_CLASSES",
    "DICOMDIR_SOP_CLASS",
]

CT_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.2"
ENHANCED_CT_SOP_CLASSES = frozenset({"1.2.840.10008.5.1.4.1.1.2.1", "1.2.840.10008.5.1.4.1.1.2.2"})
CT_IMAGE_SOP_CLASSES = frozenset({CT_IMAGE_STORAGE}) | ENHANCED_CT_SOP_CLASSES
DICOMDIR_SOP_CLASS = "1.2.840.10008.1.3.10"


@dataclass(frozen=True)
class NotDicom:
    """A file that is not a readable DICOM image file, with the reason."""

    path: Path
    reason: str
    is_dicomdir: bool = False


@dataclass(frozen=True)
class FrameHeader:
    """Geometry and rescale of one 2-D image (one file, or one frame of a multi-frame file).

    ``position`` is ImagePositionPatient (LPS, mm); ``orientation`` the six direction
    cosines of ImageOrientationPatient (row then column direction); ``pixel_spacing`` is
    (row spacing, column spacing) in mm. ``slope`` and ``intercept`` are 1 and 0 when the
    header has none, NaN when its value is not a finite number.
    """

    path: Path
    frame: int | None
    sop_instance_uid: str
    instance_number: int | None
    acquisition_number: int | None
    position: tuple[float, float, float] | None
    orientation: tuple[float, ...] | None
    pixel_spacing: tuple[float, float] | None
    slope: float
    intercept: float
    rescale_type: str
    frame_type: tuple[str, ...] = ()


@dataclass(frozen=True)
class FileHeader:
    """What discovery needs from one DICOM file (pixel data not read)."""

    path: Path
    series_uid: str
    study_uid: str
    sop_class_uid: str
    sop_instance_uid: str
    modality: str
    image_type: tuple[str, ...]
    description: str
    manufacturer: str
    kernel: str
    kvp: float | None
    slice_thickness_mm: float | None
    study_date: str
    rows: int | None
    columns: int | None
    n_frames: int
    samples_per_pixel: int
    bits_allocated: int | None
    transfer_syntax: str
    has_pixel_data: bool
    gantry_tilt_deg: float | None
    frames: tuple[FrameHeader, ...]
    series_uid_derived: bool = False
    contrast_agent: str = ""
    patient_id: str = field(default="", repr=False, compare=False)

    @property
    def is_enhanced(self) -> bool:
        return self.sop_class_uid in ENHANCED_CT_SOP_CLASSES


def _get(ds: Dataset, keyword: str, default: Any = None) -> Any:
    try:
        value = ds.get(keyword, default)
    except Exception:  # malformed element: treat as absent
        return default
    return default if value is None else value


_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_SAFE_UID = re.compile(r"[0-9A-Za-z._-]{1,64}")


def _clean(text: str, max_len: int = 64) -> str:
    """``text`` if it looks like a sane header string, else ''.

    A corrupt value length makes an element swallow the bytes of the elements after it
    (which may be the patient's name); those bytes contain tag/length binary, so a value
    with control characters or longer than the VR allows is dropped, never echoed.
    """
    text = text.strip()
    if len(text) > max_len or _CONTROL.search(text):
        return ""
    return text


def _str(ds: Dataset, keyword: str, max_len: int = 64) -> str:
    v = _get(ds, keyword, "")
    try:
        return _clean(str(v), max_len)
    except Exception:
        return ""


#: ContrastBolusAgent values that mean "no contrast" (some scanners fill the tag anyway).
_NO_CONTRAST = {"NONE", "NO", "N", "NON", "0", "-", "NO CONTRAST", "WITHOUT", "NATIVE", "NATIV"}


def contrast_agent(ds: Dataset, identifiers: tuple[str, ...] = ()) -> str:
    """The contrast agent a CT was acquired with, '' for a non-contrast scan.

    ContrastBolusAgent (0018,0010), or the code meaning of ContrastBolusAgentSequence
    (0018,0012) of an Enhanced CT; values such as NONE or NO count as no contrast. The
    text is cleaned of ``identifiers`` and of dates, names and long numbers
    (:func:`~._descriptors.clean_descriptor`).
    """
    agent = _str(ds, "ContrastBolusAgent")
    if not agent:
        seq = _get(ds, "ContrastBolusAgentSequence")
        try:
            agent = _str(seq[0], "CodeMeaning") if seq else ""
        except Exception:  # malformed sequence item: treat as absent
            agent = ""
    return "" if agent.upper() in _NO_CONTRAST else clean_descriptor(agent, identifiers)


def _float(v: Any) -> float | None:
    try:
        f = float(v)
    except (TypeError, ValueError):
        return None
    return f if math.isfinite(f) else None  # NaN/inf -> None


def _rescale(ds: Dataset | None, keyword: str) -> float | None:
    """RescaleSlope / RescaleIntercept: None when absent, NaN when present but not a finite number
    (load refuses such a file: taking it for the default would shift every HU)."""
    if ds is None or keyword not in ds:
        return None
    value = _float(_get(ds, keyword))
    return math.nan if value is None else value


def _int(v: Any) -> int | None:
    try:
        return int(v)
    except (TypeError, ValueError):
        return None


def _floats(v: Any, n: int) -> tuple[float, ...] | None:
    try:
        out = tuple(float(x) for x in v)
    except (TypeError, ValueError):
        return None
    return out if len(out) == n and all(math.isfinite(x) for x in out) else None


def _tokens(v: Any) -> tuple[str, ...]:
    if v is None or v == "":
        return ()
    if isinstance(v, str):
        raw = v.split("\\")
    else:
        try:
            raw = [str(t) for t in v]
        except TypeError:
            raw = [str(v)]
    return tuple(t for t in (_clean(x, 16).upper() for x in raw) if t)


def _raw_text(ds: Dataset, tag: int) -> str:
    """Element value as text without pydicom value conversion (no validation warnings)."""
    try:
        if tag not in ds:
            return ""
        elem = ds.get_item(tag)
    except Exception:
        return ""
    value = getattr(elem, "value", None)
    if value is None:
        return ""
    if isinstance(value, bytes):
        return value.decode("latin-1", errors="replace").strip(" \x00")
    return str(value).strip()


def _fg_item(ds: Dataset, frame: int, seq_keyword: str) -> Dataset | None:
    """Functional-group macro item for ``frame``: per-frame first, then shared."""
    for container, index in (("PerFrameFunctionalGroupsSequence", frame), ("SharedFunctionalGroupsSequence", 0)):
        groups = _get(ds, container)
        if not groups:
            continue
        try:
            item = groups[index]
            seq = item.get(seq_keyword)
            if seq:
                return seq[0]
        except Exception:
            continue
    return None


def _frame_headers(ds: Dataset, path: Path, n_frames: int, enhanced: bool) -> tuple[FrameHeader, ...]:
    sop_uid = _str(ds, "SOPInstanceUID")
    inst = _int(_get(ds, "InstanceNumber"))
    acq = _int(_get(ds, "AcquisitionNumber"))
    if not enhanced:
        slope = _rescale(ds, "RescaleSlope")
        intercept = _rescale(ds, "RescaleIntercept")
        return (
            FrameHeader(
                path=path,
                frame=None if n_frames <= 1 else 0,
                sop_instance_uid=sop_uid,
                instance_number=inst,
                acquisition_number=acq,
                position=_floats(_get(ds, "ImagePositionPatient"), 3),
                orientation=_floats(_get(ds, "ImageOrientationPatient"), 6),
                pixel_spacing=_floats(_get(ds, "PixelSpacing"), 2),
                slope=1.0 if slope is None or slope == 0 else slope,
                intercept=0.0 if intercept is None else intercept,
                rescale_type=_str(ds, "RescaleType").upper(),
            ),
        ) + tuple(
            # classic multi-frame (rare for CT): frames share one geometry; load refuses it
            FrameHeader(path, k, sop_uid, inst, acq, None, None, None, 1.0, 0.0, "")
            for k in range(1, n_frames)
        )
    frames = []
    for k in range(n_frames):
        pos_item = _fg_item(ds, k, "PlanePositionSequence")
        ori_item = _fg_item(ds, k, "PlaneOrientationSequence")
        meas_item = _fg_item(ds, k, "PixelMeasuresSequence")
        pvt_item = _fg_item(ds, k, "PixelValueTransformationSequence")
        type_item = _fg_item(ds, k, "CTImageFrameTypeSequence")
        slope = _rescale(pvt_item, "RescaleSlope")
        intercept = _rescale(pvt_item, "RescaleIntercept")
        if slope is None:  # fall back to top level (not standard, but seen)
            slope = _rescale(ds, "RescaleSlope")
        if intercept is None:
            intercept = _rescale(ds, "RescaleIntercept")
        rtype = _str(pvt_item, "RescaleType") if pvt_item is not None else ""
        frames.append(
            FrameHeader(
                path=path,
                frame=k,
                sop_instance_uid=sop_uid,
                instance_number=inst,
                acquisition_number=acq,
                position=_floats(_get(pos_item, "ImagePositionPatient"), 3) if pos_item is not None else None,
                orientation=_floats(_get(ori_item, "ImageOrientationPatient"), 6) if ori_item is not None else None,
                pixel_spacing=_floats(_get(meas_item, "PixelSpacing"), 2) if meas_item is not None else None,
                slope=1.0 if slope is None or slope == 0 else slope,
                intercept=0.0 if intercept is None else intercept,
                rescale_type=(rtype or _str(ds, "RescaleType")).upper(),
                frame_type=_tokens(_get(type_item, "FrameType")) if type_item is not None else (),
            )
        )
    return tuple(frames)


def _looks_like_dicom(path: Path) -> tuple[bool, bool]:
    """(has 'DICM' preamble, starts like a raw little-endian dataset)."""
    with open(path, "rb") as fh:
        head = fh.read(132)
    if len(head) == 132 and head[128:132] == b"DICM":
        return True, False
    return False, len(head) >= 8 and head[:2] in (b"\x08\x00", b"\x02\x00")


_quiet_lock = threading.Lock()
_quiet_depth = 0
_saved_mode = 0


class _DropWhileQuiet(logging.Filter):
    """Drops pydicom's log records while ingest reads files (they can quote element values)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return _quiet_depth == 0


_PYDICOM_LOGGER = logging.getLogger("pydicom")
if not any(isinstance(f, _DropWhileQuiet) for f in _PYDICOM_LOGGER.filters):
    _PYDICOM_LOGGER.addFilter(_DropWhileQuiet())


@contextmanager
def quiet_pydicom():
    """Silence pydicom's value-validation warnings and log lines while reading.

    Those messages can quote element values (names, IDs); none may reach a log.
    """
    global _quiet_depth, _saved_mode
    cfg = pydicom.config.settings
    with _quiet_lock:  # reference-counted: safe with several threads reading at once
        if _quiet_depth == 0:
            _saved_mode = cfg.reading_validation_mode
            cfg.reading_validation_mode = pydicom.config.IGNORE
        _quiet_depth += 1
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        with _quiet_lock:
            _quiet_depth -= 1
            if _quiet_depth == 0:
                cfg.reading_validation_mode = _saved_mode


def read_file_header(path: Path, *, max_frames: int = 100_000) -> FileHeader | NotDicom:
    """Read one file's DICOM header without its pixel data.

    Parameters
    ----------
    path : Path
        Any file.
    max_frames : int
        Per-frame headers are not expanded beyond this many frames (a header claiming
        more is refused later on its NumberOfFrames alone).

    Returns
    -------
    FileHeader or NotDicom
        ``NotDicom`` carries the reason (not DICOM, DICOMDIR, unreadable header ...).
    """
    with quiet_pydicom():
        try:
            return _read_file_header(Path(path), max_frames)
        except Exception as exc:  # a corrupt header must never stop discovery
            # the exception text may quote element values (PHI): only its type is reported
            return NotDicom(Path(path), f"unreadable DICOM header ({type(exc).__name__}); the file is corrupt")


def _read_file_header(path: Path, max_frames: int) -> FileHeader | NotDicom:
    try:
        preamble, raw_start = _looks_like_dicom(path)
    except OSError as exc:
        return NotDicom(path, f"cannot open file: {exc.strerror or exc}")
    if path.name.upper() == "DICOMDIR" and not preamble:
        return NotDicom(path, "DICOMDIR without a DICOM header", is_dicomdir=True)
    if not preamble and not raw_start:
        return NotDicom(path, "not a DICOM file (no 'DICM' marker at byte 128 and no DICOM tag at the start)")
    try:
        ds = pydicom.dcmread(path, stop_before_pixels=True, force=True, defer_size="64 KB")
    except Exception as exc:
        return NotDicom(path, f"unreadable DICOM header ({type(exc).__name__}); the file is corrupt or not DICOM")
    meta = getattr(ds, "file_meta", None)
    media_sop = _str(meta, "MediaStorageSOPClassUID") if meta is not None else ""
    if media_sop == DICOMDIR_SOP_CLASS or path.name.upper() == "DICOMDIR" or "DirectoryRecordSequence" in ds:
        return NotDicom(path, "DICOMDIR index file (not an image); the files it lists are read directly",
                        is_dicomdir=True)
    series_uid = _str(ds, "SeriesInstanceUID")
    sop_uid = _str(ds, "SOPInstanceUID") or (_str(meta, "MediaStorageSOPInstanceUID") if meta is not None else "")
    sop_class = _str(ds, "SOPClassUID") or media_sop
    derived = False
    if series_uid and not _SAFE_UID.fullmatch(series_uid):
        series_uid = ""  # unusable as a file name / key: derive one
    if not series_uid:
        if not sop_uid and not sop_class and not _str(ds, "Modality"):
            return NotDicom(path, "not readable as DICOM: no file meta / preamble and no DICOM dataset "
                                  "could be parsed (re-export the file from the PACS)")
        series_uid = _derived_series_uid(ds, path)
        derived = True
    ts = _str(meta, "TransferSyntaxUID") if meta is not None else ""
    n_frames = _int(_get(ds, "NumberOfFrames")) or 1
    enhanced = sop_class in ENHANCED_CT_SOP_CLASSES
    has_pixels = "PixelData" in ds or "FloatPixelData" in ds or "DoubleFloatPixelData" in ds
    # stop_before_pixels drops PixelData itself: infer from the image pixel module
    has_pixels = has_pixels or _int(_get(ds, "Rows")) is not None
    frames = _frame_headers(ds, path, n_frames, enhanced) if has_pixels and n_frames <= max_frames else ()
    thickness = _float(_get(ds, "SliceThickness"))
    if thickness is None and enhanced:
        meas = _fg_item(ds, 0, "PixelMeasuresSequence")
        thickness = _float(_get(meas, "SliceThickness")) if meas is not None else None
    image_type = _tokens(_get(ds, "ImageType"))
    identifiers = header_identifiers(ds)
    return FileHeader(
        path=path,
        series_uid=series_uid,
        study_uid=_str(ds, "StudyInstanceUID"),
        sop_class_uid=sop_class,
        sop_instance_uid=sop_uid,
        modality=_str(ds, "Modality").upper(),
        image_type=image_type,
        description=clean_descriptor(_str(ds, "SeriesDescription"), identifiers),
        manufacturer=_str(ds, "Manufacturer"),
        kernel=" ".join(_tokens(_get(ds, "ConvolutionKernel"))),
        kvp=_float(_get(ds, "KVP")),
        slice_thickness_mm=thickness,
        study_date=_str(ds, "StudyDate"),
        rows=_int(_get(ds, "Rows")),
        columns=_int(_get(ds, "Columns")),
        n_frames=n_frames,
        samples_per_pixel=_int(_get(ds, "SamplesPerPixel")) or 1,
        bits_allocated=_int(_get(ds, "BitsAllocated")),
        transfer_syntax=ts,
        has_pixel_data=has_pixels,
        gantry_tilt_deg=_float(_get(ds, "GantryDetectorTilt")),
        frames=frames,
        series_uid_derived=derived,
        contrast_agent=contrast_agent(ds, identifiers),
        patient_id=_raw_text(ds, 0x00100020),
    )


def _derived_series_uid(ds: Dataset, path: Path) -> str:
    """A stable stand-in UID (``2.25.<decimal>``) for files whose SeriesInstanceUID is empty.

    Built from the folder, FrameOfReferenceUID, SeriesNumber, SeriesDescription, image
    size, orientation, pixel spacing, kernel and slice thickness, so that the slices of
    one reconstruction in one folder share it.
    """
    ori = _floats(_get(ds, "ImageOrientationPatient"), 6)
    key = "|".join(
        str(v)
        for v in (
            path.parent.resolve(),
            _str(ds, "FrameOfReferenceUID"),
            _str(ds, "SeriesNumber"),
            _str(ds, "SeriesDescription"),
            _str(ds, "Modality"),
            _get(ds, "Rows"),
            _get(ds, "Columns"),
            None if ori is None else tuple(round(x, 3) for x in ori),
            _floats(_get(ds, "PixelSpacing"), 2),
            " ".join(_tokens(_get(ds, "ConvolutionKernel"))),
            _float(_get(ds, "SliceThickness")),
        )
    )
    digest = hashlib.sha1(key.encode("utf-8", errors="replace")).hexdigest()[:32]
    return "2.25." + str(int(digest, 16))


def uid_name(uid: str) -> str:
    """Readable name of a UID ('CT Image Storage'), or the UID itself."""
    try:
        name = UID(uid, validation_mode=pydicom.config.IGNORE).name
    except Exception:
        return uid
    return name or uid
