"""Loading: a discovered CT series -> :class:`~bmdpipe.volume.Volume` in HU with LPS geometry.

Two passes: headers first (geometry checks, image size checked before any pixel array is
allocated), then pixel data file by file. Slices are ordered by ImagePositionPatient
projected on the slice normal (never by InstanceNumber or file name), and each slice's
own RescaleSlope/Intercept (for Enhanced CT: the functional groups) is applied.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pydicom

from ..config import IngestSettings
from ..errors import SeriesError
from ..volume import SeriesMeta, Volume
from ._header import FileHeader, FrameHeader, NotDicom, quiet_pydicom, read_file_header, uid_name
from ._refs import SeriesRef
from .discover import classify_series

__all__ = ["load_series", "load_dicom_files", "SlicePlan", "plan_slices"]


@dataclass(frozen=True)
class SlicePlan:
    """Where each 2-D image goes in the volume.

    Attributes
    ----------
    slots : tuple of (FrameHeader or None)
        One entry per output slice, in k order; ``None`` marks a missing slice (gap) that
        is filled by linear interpolation.
    rows, columns : int
        In-plane size in pixels.
    spacing : tuple of float
        (z, y, x) voxel size in mm.
    origin : tuple of float
        LPS position (mm) of voxel (0, 0, 0).
    direction : (3, 3) ndarray
        Columns: LPS unit vectors of the i, j, k axes.
    warnings : tuple of str
    """

    slots: tuple[FrameHeader | None, ...]
    rows: int
    columns: int
    spacing: tuple[float, float, float]
    origin: tuple[float, float, float]
    direction: np.ndarray
    warnings: tuple[str, ...]


def _refuse(label: str, problem: str, todo: str) -> SeriesError:
    return SeriesError(f"series {label}: {problem}; {todo}")


def _check_frame_geometry(frames: Sequence[FrameHeader], label: str, settings: IngestSettings) -> None:
    """Every image has a position, an orientation and a pixel spacing, the same for all of them."""
    missing = [f for f in frames if f.position is None or f.orientation is None]
    if missing:
        f = missing[0]
        where = f"{f.path.name}" + (f" frame {f.frame}" if f.frame is not None else "")
        raise _refuse(label, f"ImagePositionPatient/ImageOrientationPatient missing in {where} "
                             f"({len(missing)} image(s))", "cannot place the slices in space; re-export the series")
    no_spacing = [f for f in frames if f.pixel_spacing is None or min(f.pixel_spacing) <= 0]
    if no_spacing:
        raise _refuse(label, f"PixelSpacing missing or invalid in {no_spacing[0].path.name}",
                      "cannot measure in mm; re-export the series with PixelSpacing")
    ori = np.array([f.orientation for f in frames], dtype=float)
    dev = np.abs(ori - ori[0]).max()
    if dev > settings.orientation_tolerance:
        raise _refuse(label, f"slices have different orientations (direction cosines differ by {dev:.3g} > "
                             f"ingest.orientation_tolerance {settings.orientation_tolerance})",
                      "the series mixes image planes; export the axial series alone")
    ps = np.array([f.pixel_spacing for f in frames], dtype=float)
    if np.abs(ps - ps[0]).max() > settings.pixel_spacing_tolerance_mm:
        raise _refuse(label, f"slices have different PixelSpacing ({ps.min():.4g}..{ps.max():.4g} mm)",
                      "the series mixes reconstructions; export one reconstruction per series")


def _image_axes(orientation, label: str) -> np.ndarray:
    """(3, 3) LPS unit vectors of the rows, the columns and the slice normal (ImageOrientationPatient,
    often written with 4-6 digits, re-orthonormalised)."""
    ori = np.asarray(orientation, dtype=float)
    r = ori[:3] / np.linalg.norm(ori[:3])
    c = ori[3:] / np.linalg.norm(ori[3:])
    if np.linalg.norm(np.cross(r, c)) < 0.99 or abs(float(r @ c)) > 1e-3:
        raise _refuse(label, "ImageOrientationPatient is not two orthogonal unit vectors",
                      "the header is corrupt; re-export the series")
    c = c - (c @ r) * r
    c /= np.linalg.norm(c)
    return np.column_stack([r, c, np.cross(r, c)])


def _drop_duplicate_copies(frames: list[FrameHeader], proj: np.ndarray, label: str,
                           settings: IngestSettings) -> tuple[list[int], list[str]]:
    """Indices of the frames (sorted along the normal) to keep: a second copy of the same image is
    dropped with a warning, two different images at one position refuse the series."""
    keep = [0]
    dup_groups = 0
    for i in range(1, len(frames)):
        if proj[i] - proj[keep[-1]] <= settings.duplicate_position_tolerance_mm:
            a, b = frames[keep[-1]], frames[i]
            if a.sop_instance_uid and a.sop_instance_uid == b.sop_instance_uid and a.frame == b.frame:
                dup_groups += 1
                continue
            raise _refuse(label, f"two different slices at the same position ({proj[i]:.2f} mm along the normal: "
                                 f"{a.path.name}, {b.path.name}; AcquisitionNumber {a.acquisition_number}/"
                                 f"{b.acquisition_number})",
                          "the series holds more than one acquisition or reconstruction; split it")
        keep.append(i)
    return keep, [f"{dup_groups} duplicate copy(ies) of the same slice ignored"] if dup_groups else []


def _tilt_warnings(pos: np.ndarray, normal: np.ndarray, label: str, settings: IngestSettings) -> list[str]:
    """Gantry tilt (the slice positions step off the normal): refused above ``max_gantry_tilt_deg``."""
    step = pos[-1] - pos[0]
    cosang = abs(float(step @ normal)) / float(np.linalg.norm(step))
    tilt = float(np.degrees(np.arccos(min(1.0, cosang))))
    if tilt > settings.max_gantry_tilt_deg:
        raise _refuse(label, f"gantry tilt of {tilt:.1f} deg (slices are sheared; ingest.max_gantry_tilt_deg "
                             f"{settings.max_gantry_tilt_deg})",
                      "resample the series to an orthogonal grid (e.g. a tilt-corrected reconstruction)")
    return [f"gantry tilt {tilt:.2f} deg ignored (below ingest.max_gantry_tilt_deg)"] if tilt > 0.01 else []


def _slots_with_gaps(frames: list[FrameHeader], proj: np.ndarray, label: str,
                     settings: IngestSettings) -> tuple[list[FrameHeader | None], list[str]]:
    """One slot per output slice: the frames, with ``None`` for each missing slice of a gap (up to
    ``max_missing_slices``); irregular spacing refuses the series."""
    gaps = np.diff(proj)
    dz0 = float(np.median(gaps))
    ratio = gaps / dz0
    steps = np.rint(ratio).astype(int)
    tol = settings.slice_spacing_tolerance
    irregular = np.abs(ratio - steps) > tol * np.maximum(steps, 1)
    if irregular.any() or (steps < 1).any():
        i = int(np.flatnonzero(irregular | (steps < 1))[0])
        raise _refuse(label, f"non-uniform slice spacing: {gaps[i]:.3f} mm between slices at {proj[i]:.2f} and "
                             f"{proj[i + 1]:.2f} mm, median {dz0:.3f} mm (tolerance "
                             f"{100 * tol:.0f} %, ingest.slice_spacing_tolerance)",
                      "resample the series to uniform spacing or export it without the odd slices")
    slots: list[FrameHeader | None] = [frames[0]]
    warn = []
    for i in range(1, len(frames)):
        m = int(steps[i - 1]) - 1
        if m > 0:
            if m > settings.max_missing_slices:
                raise _refuse(label, f"{m} missing slices between {proj[i - 1]:.2f} and {proj[i]:.2f} mm "
                                     f"(more than ingest.max_missing_slices {settings.max_missing_slices})",
                              "re-export the complete series")
            warn.append(f"gap: {m} missing slice(s) between {proj[i - 1]:.2f} and {proj[i]:.2f} mm along the "
                        f"normal, filled by linear interpolation")
            slots.extend([None] * m)
        slots.append(frames[i])
    return slots, warn


def plan_slices(
    frames: Sequence[FrameHeader],
    rows: int,
    columns: int,
    settings: IngestSettings,
    *,
    label: str = "",
    slice_thickness_mm: float | None = None,
) -> SlicePlan:
    """Check slice geometry and order the slices (header values only, no pixel data).

    Parameters
    ----------
    frames : sequence of FrameHeader
        All 2-D images of the series, in any order.
    rows, columns : int
        Image size in pixels (already checked against the size limits).
    settings : IngestSettings
        Tolerances (orientation, pixel spacing, slice spacing, tilt, gaps).
    label : str
        Series name used in error messages.
    slice_thickness_mm : float, optional
        Used as the z spacing of a single-slice series.

    Returns
    -------
    SlicePlan

    Raises
    ------
    SeriesError
        Missing or inconsistent orientation / pixel spacing, duplicate positions,
        gantry tilt above ``max_gantry_tilt_deg``, irregular spacing or too large gaps.
    """
    _check_frame_geometry(frames, label, settings)
    sy, sx = (float(v) for v in frames[0].pixel_spacing)
    direction = _image_axes(frames[0].orientation, label)
    normal = direction[:, 2]
    pos = np.array([f.position for f in frames], dtype=float)
    proj = pos @ normal
    order = np.argsort(proj, kind="stable")
    keep, warn = _drop_duplicate_copies([frames[i] for i in order], proj[order], label, settings)
    frames = [frames[order[i]] for i in keep]
    pos, proj = pos[order][keep], proj[order][keep]
    if len(frames) == 1:
        dz = float(slice_thickness_mm) if slice_thickness_mm and slice_thickness_mm > 0 else 1.0
        warn.append(f"single slice: z spacing set to {dz:g} mm (SliceThickness)")
        return SlicePlan((frames[0],), rows, columns, (dz, sy, sx), tuple(pos[0]), direction, tuple(warn))
    warn += _tilt_warnings(pos, normal, label, settings)
    slots, gap_warnings = _slots_with_gaps(frames, proj, label, settings)
    dz = float((proj[-1] - proj[0]) / (len(slots) - 1))
    return SlicePlan(tuple(slots), rows, columns, (dz, sy, sx), tuple(pos[0]), direction, tuple(warn + gap_warnings))


def _decode(path: Path, label: str, settings: IngestSettings, *, fallback: bool = True) -> tuple[np.ndarray, bool]:
    """Pixel data of one file as (frames, rows, columns); second value True if already in HU.

    The SimpleITK fallback (which applies the rescale itself) is used for single-frame
    files only: GDCM's handling of per-frame rescale in Enhanced CT is not relied on.
    """
    try:
        with quiet_pydicom():
            ds = pydicom.dcmread(path, force=True)
            if "PixelData" not in ds:
                raise SeriesError(f"series {label}: {path} has no pixel data (truncated file?); re-export it")
            arr = ds.pixel_array
        return (arr[None] if arr.ndim == 2 else arr), False
    except SeriesError:
        raise
    except Exception as exc:
        first = exc
    if settings.simpleitk_fallback and fallback:
        try:
            import SimpleITK as sitk

            shown = sitk.ProcessObject.GetGlobalWarningDisplay()
            sitk.ProcessObject.SetGlobalWarningDisplay(False)  # ITK would print to stderr
            try:
                img = sitk.ReadImage(str(path))
            finally:
                sitk.ProcessObject.SetGlobalWarningDisplay(shown)
            arr = sitk.GetArrayFromImage(img)
            return (arr[None] if arr.ndim == 2 else arr), True
        except Exception:
            pass
    ts = ""
    try:
        with quiet_pydicom():
            ts = uid_name(str(pydicom.dcmread(path, stop_before_pixels=True, force=True).file_meta.TransferSyntaxUID))
    except Exception:
        pass
    raise SeriesError(
        f"series {label}: cannot decode the pixel data of {path} ({ts or 'unknown transfer syntax'}): "
        f"{type(first).__name__}: {str(first)[:200]}; the file may be truncated, or install a decoder "
        f"(pylibjpeg plugins, gdcm) / re-export it uncompressed"
    ) from first


def _fill_gaps(array: np.ndarray, present: np.ndarray) -> None:
    """Linear interpolation along k of the slices where ``present`` is False (in place)."""
    idx = np.flatnonzero(present)
    for k in np.flatnonzero(~present):
        hi = idx[np.searchsorted(idx, k)]
        lo = idx[np.searchsorted(idx, k) - 1]
        w = (k - lo) / (hi - lo)
        array[k] = (1 - w) * array[lo] + w * array[hi]


def _read_headers(paths: Sequence[Path], label: str, settings: IngestSettings) -> list[FileHeader]:
    headers = []
    for p in paths:
        h = read_file_header(Path(p), max_frames=settings.max_slices)
        if isinstance(h, NotDicom):
            raise _refuse(label, f"{p}: {h.reason}", "remove the file or re-export the series")
        headers.append(h)
    return headers


def _series_headers(paths: list[Path], settings: IngestSettings, series_uid: str | None,
                    min_slices: int | None) -> tuple[list[FileHeader], str]:
    """The files' headers and the series' label, after the checks done before any pixel is read:
    one series, an axial CT series in HU (``min_slices`` overrides the setting), one image size."""
    label = series_uid or paths[0].parent.name
    headers = _read_headers(paths, label, settings)
    uids = {h.series_uid for h in headers}
    if series_uid is not None and uids != {series_uid}:
        raise _refuse(label, f"files belong to {len(uids)} series", "pass the files of one SeriesInstanceUID")
    label = series_uid or headers[0].series_uid
    if min_slices is not None:
        settings = settings.model_copy(update={"min_slices": min_slices})
    reason = classify_series(headers, settings)
    if reason is not None:
        raise _refuse(label, reason, "this series is not loaded")
    sizes = {(h.rows, h.columns) for h in headers}
    if len(sizes) > 1:
        raise _refuse(label, f"images of different sizes {sorted(sizes)}", "export one reconstruction per series")
    bad = next((f for h in headers for f in h.frames if not np.isfinite([f.slope, f.intercept]).all()), None)
    if bad is not None:
        raise _refuse(label, f"RescaleSlope/RescaleIntercept of {bad.path.name} is not a number",
                      "the pixel values cannot be converted to HU; re-export the series")
    return headers, label


def _read_slices(plan: SlicePlan, label: str, settings: IngestSettings) -> tuple[np.ndarray, list[str]]:
    """The planned slices in HU (each file decoded once, its own rescale applied), gaps interpolated."""
    shape = (len(plan.slots), plan.rows, plan.columns)
    if float(np.prod(shape)) > settings.max_voxels:
        raise _refuse(label, f"volume {shape} exceeds ingest.max_voxels", "crop or downsample the series")
    array = np.empty(shape, dtype=np.float32)
    present = np.array([s is not None for s in plan.slots])
    by_file: dict[Path, list[tuple[int, FrameHeader]]] = defaultdict(list)
    for k, s in enumerate(plan.slots):
        if s is not None:
            by_file[s.path].append((k, s))
    n_sitk = 0
    for path, items in by_file.items():
        data, is_hu = _decode(path, label, settings, fallback=items[0][1].frame is None)
        for k, fh in items:
            fi = fh.frame or 0
            if fi >= data.shape[0] or data.shape[1:] != (plan.rows, plan.columns):
                raise _refuse(label, f"{path.name}: decoded pixel data {data.shape} does not match the header "
                                     f"({plan.rows} x {plan.columns}, frame {fi})", "the file is corrupt; re-export it")
            with np.errstate(over="ignore", invalid="ignore"):  # beyond float32: refused just below
                array[k] = data[fi] if is_hu else data[fi].astype(np.float64) * fh.slope + fh.intercept
            if not np.isfinite(array[k]).all():
                raise _refuse(label, f"{path.name}: HU values beyond any CT range (RescaleSlope/Intercept "
                                     f"{fh.slope:g}/{fh.intercept:g})", "the header is corrupt; re-export the series")
        n_sitk += is_hu
    if not present.all():
        _fill_gaps(array, present)
    return array, [f"{n_sitk} file(s) decoded with SimpleITK/GDCM (pydicom had no working decoder)"] if n_sitk else []


def _content_warnings(array: np.ndarray, h0: FileHeader) -> list[str]:
    """Warnings on what the volume holds: contrast agent, an HU range unlike CT."""
    warn = []
    if h0.contrast_agent:
        warn.append(f"contrast-enhanced scan (ContrastBolusAgent {h0.contrast_agent!r}): iodine raises the HU of "
                    "bone marrow and muscle, so vBMD reads higher than on a non-contrast QCT and is not comparable "
                    "with one; measure bone density on the non-contrast series")
    lo, hi = float(array.min()), float(array.max())
    if lo > -500.0 or hi < 100.0:
        warn.append(f"HU range {lo:.0f}..{hi:.0f} is unusual for CT (no air below -500 or no tissue above 100 HU); "
                    f"check that the series holds HU")
    return warn


def load_dicom_files(
    paths: Sequence[Path],
    settings: IngestSettings,
    *,
    min_slices: int | None = None,
    series_uid: str | None = None,
    study_id: str = "",
    source: str = "",
) -> Volume:
    """Load DICOM files of one CT series into a Volume in HU (LPS geometry).

    Parameters
    ----------
    paths : sequence of Path
        The files of the series (any order, any names).
    settings : IngestSettings
        Size limits and geometry tolerances.
    min_slices : int, optional
        Overrides ``settings.min_slices`` (e.g. 1 to read a single slice in a test).
    series_uid : str, optional
        Expected SeriesInstanceUID; files of another series are refused.
    study_id : str
        Pseudonym written into ``Volume.meta``.
    source : str
        Folder or file named in ``Volume.meta.source``.

    Returns
    -------
    Volume
        float32 HU, (z, y, x), spacing in mm, origin and direction in LPS. ``meta.warnings``
        lists gaps filled, duplicates dropped, small tilts ignored, odd HU ranges.

    Raises
    ------
    SeriesError
        Not a CT series in HU, too few slices, image too large (checked before any pixel
        data is read), inconsistent geometry, or undecodable pixel data.
    """
    paths = [Path(p) for p in paths]
    if not paths:
        raise SeriesError("series (empty): no files given; nothing to load")
    headers, label = _series_headers(paths, settings, series_uid, min_slices)
    h0 = headers[0]
    plan = plan_slices([f for h in headers for f in h.frames], int(h0.rows), int(h0.columns), settings, label=label,
                       slice_thickness_mm=h0.slice_thickness_mm)
    array, decode_warnings = _read_slices(plan, label, settings)
    meta = SeriesMeta(
        series_uid=label, study_id=study_id, source=source or str(paths[0].parent), n_files=len(paths),
        modality=h0.modality, description=h0.description, manufacturer=h0.manufacturer, kernel=h0.kernel,
        kvp=h0.kvp, slice_thickness_mm=h0.slice_thickness_mm, study_date=h0.study_date,
        contrast_agent=h0.contrast_agent,
        warnings=tuple(list(plan.warnings) + decode_warnings + _content_warnings(array, h0)),
    )
    return Volume(array=array, spacing=plan.spacing, origin=plan.origin, direction=plan.direction, meta=meta)


def load_series(ref: SeriesRef, settings: IngestSettings, *, min_slices: int | None = None) -> Volume:
    """Load a discovered series (DICOM or NIfTI) into a Volume in HU.

    Parameters
    ----------
    ref : SeriesRef
        From :func:`~bmdpipe.ingest.discover`.
    settings : IngestSettings
    min_slices : int, optional
        Overrides ``settings.min_slices``.

    Raises
    ------
    SeriesError
        The series cannot be used as an axial CT volume in HU; the message says why and
        what to do.
    """
    if ref.kind == "nifti":
        from .nifti import load_nifti

        vol = load_nifti(ref.paths[0], study_id=ref.study_id, series_uid=ref.series_uid, settings=settings)
        need = settings.min_slices if min_slices is None else min_slices
        if vol.shape[0] < need:
            raise _refuse(ref.series_uid, f"{vol.shape[0]} slices; need >= {need} (ingest.min_slices)",
                          "give a volume covering the lumbar spine")
        return vol
    vol = load_dicom_files(ref.paths, settings, min_slices=min_slices, series_uid=ref.series_uid,
                           study_id=ref.study_id, source=ref.source)
    if ref.warnings:
        vol = vol.with_meta(warnings=tuple(ref.warnings) + vol.meta.warnings)
    return vol

