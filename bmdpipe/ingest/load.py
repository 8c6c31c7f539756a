"""Loading: a discovered CT series -> :class:`~bmdpipe.volume.Volume` in HU with LPS geometry.

Two passes: headers first (geometry checks, image size checked before any pixel array is
allocated), then pixel data file by file. Slices are ordered by ImagePositionPatient
projected on the slice normal (never by InstanceNumber or file name).

What is repaired, resampled or refused:

- Repaired: each slice's own RescaleSlope/Intercept (for Enhanced CT: the functional
  groups) is applied, so a series whose rescale changes from slice to slice loads as one
  HU volume; a second copy of the same image is dropped; a file without file meta
  information (no preamble, no transfer syntax) whose dataset reads has its native pixel
  data read in the encoding the dataset was found in.
- Filled: a gap of up to ``ingest.max_missing_slices`` missing slices (linear interpolation
  along the normal, with a warning). A file whose pixel data is not the image its header
  describes (fewer bytes than Rows x Columns x SamplesPerPixel x BitsAllocated / 8 x
  NumberOfFrames for a native transfer syntax, e.g. an interrupted transfer; a compressed
  image that no decoder reads, or that decodes to another shape) is never a slice: it
  counts as a missing slice under the same rule, and the warning names it. Such a file at
  either end of the series is dropped (the volume is shorter).
- Resampled: gantry tilt (slice positions stepping off the slice normal) above
  ``ingest.max_gantry_tilt_deg`` and up to ``ingest.max_resampled_gantry_tilt_deg``: each
  slice is shifted in its own plane onto an orthogonal grid (``scipy.ndimage.affine_transform``,
  linear interpolation), with a warning; off with ``ingest.gantry_tilt_resampling: false``.
- Refused (:class:`~bmdpipe.errors.SeriesError`, naming the series and the file): larger
  gaps, two different images at one position, mixed orientations or pixel spacings,
  irregular spacing, larger tilts, too few slices, images too large for the limits.
  Every decoder's output (pydicom's, and SimpleITK/GDCM's fallback, which pads short pixel
  data with air) is checked against what the header promises.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import pydicom
from pydicom.pixels.utils import get_expected_length
from pydicom.uid import UID, ExplicitVRBigEndian, ExplicitVRLittleEndian, ImplicitVRLittleEndian

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
    shear_mm : tuple of float
        Gantry tilt to resample: how far each slice's image lies from the one before it
        in the image plane, (along the rows' direction i, along the columns' direction j)
        in mm; (0, 0) for an orthogonal grid.
    """

    slots: tuple[FrameHeader | None, ...]
    rows: int
    columns: int
    spacing: tuple[float, float, float]
    origin: tuple[float, float, float]
    direction: np.ndarray
    warnings: tuple[str, ...]
    shear_mm: tuple[float, float] = (0.0, 0.0)

    def slice_position(self, k: float) -> np.ndarray:
        """LPS position (mm) of pixel (0, 0) of slot ``k``'s image as acquired (before resampling)."""
        d = self.direction
        step = self.spacing[0] * d[:, 2] + self.shear_mm[0] * d[:, 0] + self.shear_mm[1] * d[:, 1]
        return np.asarray(self.origin, dtype=float) + k * step


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


def _gantry_tilt(pos: np.ndarray, direction: np.ndarray, n_slots: int, label: str,
                 settings: IngestSettings) -> tuple[tuple[float, float], list[str]]:
    """Gantry tilt (the slice positions step off the normal): the in-plane shear to resample (mm per
    slot along the row and column directions) and a warning. Up to ``max_gantry_tilt_deg`` the tilt is
    ignored; beyond ``max_resampled_gantry_tilt_deg`` (or with resampling off) the series is refused."""
    step = (pos[-1] - pos[0]) / (n_slots - 1)
    along = float(step @ direction[:, 2])
    shear = step - along * direction[:, 2]
    tilt = float(np.degrees(np.arctan2(float(np.linalg.norm(shear)), abs(along))))
    if tilt <= settings.max_gantry_tilt_deg:
        ignored = [f"gantry tilt {tilt:.2f} deg ignored (below ingest.max_gantry_tilt_deg)"] if tilt > 0.01 else []
        return (0.0, 0.0), ignored
    limit = settings.max_resampled_gantry_tilt_deg if settings.gantry_tilt_resampling else settings.max_gantry_tilt_deg
    if tilt > limit:
        setting = ("ingest.max_resampled_gantry_tilt_deg" if settings.gantry_tilt_resampling
                   else "ingest.max_gantry_tilt_deg, ingest.gantry_tilt_resampling off")
        raise _refuse(label, f"gantry tilt of {tilt:.1f} deg (slices are sheared; more than {setting} {limit:g})",
                      "resample the series to an orthogonal grid (e.g. a tilt-corrected reconstruction)")
    shear_mm = (float(shear @ direction[:, 0]), float(shear @ direction[:, 1]))
    return shear_mm, [f"gantry tilt {tilt:.1f} deg: slices resampled onto an orthogonal grid (each shifted in its "
                      f"plane by {float(np.linalg.norm(shear)):.2f} mm per slice, linear interpolation)"]


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
        Tolerances (orientation, pixel spacing, slice spacing, tilt and its resampling, gaps).
    label : str
        Series name used in error messages.
    slice_thickness_mm : float, optional
        Used as the z spacing of a single-slice series.

    Returns
    -------
    SlicePlan
        With ``shear_mm`` set when a gantry tilt is to be resampled.

    Raises
    ------
    SeriesError
        Missing or inconsistent orientation / pixel spacing, duplicate positions,
        gantry tilt that is not resampled, irregular spacing or too large gaps.
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
    slots, gap_warnings = _slots_with_gaps(frames, proj, label, settings)
    shear_mm, tilt_warnings = _gantry_tilt(pos, direction, len(slots), label, settings)
    dz = float((proj[-1] - proj[0]) / (len(slots) - 1))
    return SlicePlan(tuple(slots), rows, columns, (dz, sy, sx), tuple(pos[0]), direction,
                     tuple(warn + tilt_warnings + gap_warnings), shear_mm)


class _Unreadable(Exception):
    """A file whose pixel data gives no slice; ``str(exc)`` names the file and says why."""


def _short_pixel_data(ds: pydicom.Dataset) -> str:
    """Why the native (uncompressed) pixel data of ``ds`` cannot be the image its header describes, or ''.

    Compressed (encapsulated) pixel data is checked by decoding it instead: a truncated
    codestream fails to decode.
    """
    elem = ds["PixelData"]
    ts = getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", None)
    if elem.is_undefined_length or (ts is not None and UID(str(ts)).is_encapsulated):
        return ""
    try:
        expected = get_expected_length(ds, "bytes")
    except Exception:  # header values missing or invalid: the decoder says what is wrong
        return ""
    held = len(elem.value or b"")
    if held >= expected:
        return ""
    return (f"pixel data holds {held} of the {expected} bytes its header describes (Rows x Columns x "
            f"SamplesPerPixel x BitsAllocated / 8 x NumberOfFrames): the file is truncated (an interrupted transfer?)")


def _native_syntax(ds: pydicom.Dataset) -> UID:
    """The native transfer syntax of the encoding ``ds`` was read in (for a file without file meta)."""
    implicit, little = ds.original_encoding
    return ImplicitVRLittleEndian if implicit else ExplicitVRLittleEndian if little else ExplicitVRBigEndian


def _decode(path: Path, settings: IngestSettings, *, fallback: bool = True) -> tuple[np.ndarray, bool]:
    """Pixel data of one file as (frames, rows, columns); second value True if already in HU.

    Native pixel data shorter than the header describes is refused before any decoder runs.
    The SimpleITK fallback (which applies the rescale itself, and would pad short pixel data
    with air) runs only on a file pydicom read and checked, and for single-frame files only:
    GDCM's handling of per-frame rescale in Enhanced CT is not relied on. The caller checks
    the decoded shape.

    Raises
    ------
    _Unreadable
        The pixel data is missing, too short, or no decoder reads it.
    """
    try:
        with quiet_pydicom():
            ds = pydicom.dcmread(path, force=True)
            problem = "no pixel data" if "PixelData" not in ds else _short_pixel_data(ds)
    except Exception as exc:  # the exception text may quote element values (PHI): only its type is reported
        raise _Unreadable(f"{path.name}: unreadable DICOM file ({type(exc).__name__}); it is corrupt or "
                          "truncated") from exc
    if problem:
        raise _Unreadable(f"{path.name}: {problem}")
    if "TransferSyntaxUID" not in ds.file_meta and not ds["PixelData"].is_undefined_length:
        ds.file_meta.TransferSyntaxUID = _native_syntax(ds)  # no file meta: the encoding it was read in
    try:
        with quiet_pydicom():
            arr = ds.pixel_array
        return (arr[None] if arr.ndim == 2 else arr), False
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
    ts = getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", None)
    raise _Unreadable(
        f"cannot decode the pixel data of {path.name} ({uid_name(str(ts)) if ts else 'unknown transfer syntax'}): "
        f"{type(first).__name__}: {str(first)[:200]}; the file may be truncated, or install a decoder "
        f"(pylibjpeg plugins, gdcm) / re-export it uncompressed"
    ) from first


def _check_decoded_shape(data: np.ndarray, path: Path, frames: Sequence[FrameHeader], rows: int, columns: int) -> None:
    """The decoded array holds the frames and the image size the header promises (any decoder)."""
    need = 1 if frames[0].frame is None else max(f.frame for f in frames) + 1
    single = frames[0].frame is None
    if (data.shape[0] != need if single else data.shape[0] < need) or data.shape[1:] != (rows, columns):
        raise _Unreadable(f"{path.name}: decoded pixel data {data.shape} does not match the header "
                          f"({need} frame(s) of {rows} x {columns}); the file is corrupt")


def _resample_shear(array: np.ndarray, shear_mm: tuple[float, float],
                    spacing: tuple[float, float, float]) -> np.ndarray:
    """A gantry-tilted stack resampled onto the orthogonal grid of its first slice.

    Slice ``k``'s image lies ``k * shear_mm`` (mm along i, j) from the first one in its
    plane; each slice is shifted back by that much (linear interpolation in its plane).
    Voxels whose source lies outside the acquired image take the stack's minimum (the
    scanner's padding or air).

    Parameters
    ----------
    array : (K, J, I) ndarray
        Slices in HU, in slot order.
    shear_mm : tuple of float
        In-plane step of the images per slice, (along i, along j), mm.
    spacing : tuple of float, shape (3,)
        (z, y, x) voxel size, mm.

    Returns
    -------
    (K, J, I) float32 ndarray
    """
    from scipy.ndimage import affine_transform

    _, sy, sx = spacing
    matrix = np.array([[1.0, 0.0, 0.0], [-shear_mm[1] / sy, 1.0, 0.0], [-shear_mm[0] / sx, 0.0, 1.0]])
    return affine_transform(array, matrix, order=1, mode="constant", cval=float(array.min()), output=np.float32)


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


def _read_slices(plan: SlicePlan, label: str,
                 settings: IngestSettings) -> tuple[np.ndarray, np.ndarray, dict[Path, str], int]:
    """The planned slices in HU (each file decoded once, its own rescale applied), not yet gap-filled.

    Returns the array, the mask of the slots that hold a slice, the problem of each file
    that gave none, and the number of files SimpleITK decoded.
    """
    shape = (len(plan.slots), plan.rows, plan.columns)
    if float(np.prod(shape)) > settings.max_voxels:
        raise _refuse(label, f"volume {shape} exceeds ingest.max_voxels", "crop or downsample the series")
    array = np.empty(shape, dtype=np.float32)
    present = np.array([s is not None for s in plan.slots])
    by_file: dict[Path, list[tuple[int, FrameHeader]]] = defaultdict(list)
    for k, s in enumerate(plan.slots):
        if s is not None:
            by_file[s.path].append((k, s))
    unreadable: dict[Path, str] = {}
    n_sitk = 0
    for path, items in by_file.items():
        try:
            data, is_hu = _decode(path, settings, fallback=items[0][1].frame is None)
            _check_decoded_shape(data, path, [fh for _, fh in items], plan.rows, plan.columns)
        except _Unreadable as exc:
            unreadable[path] = str(exc)
            present[[k for k, _ in items]] = False
            continue
        for k, fh in items:
            fi = fh.frame or 0
            with np.errstate(over="ignore", invalid="ignore"):  # beyond float32: refused just below
                array[k] = data[fi] if is_hu else data[fi].astype(np.float64) * fh.slope + fh.intercept
            if not np.isfinite(array[k]).all():
                raise _refuse(label, f"{path.name}: HU values beyond any CT range (RescaleSlope/Intercept "
                                     f"{fh.slope:g}/{fh.intercept:g})", "the header is corrupt; re-export the series")
        n_sitk += is_hu
    return array, present, unreadable, n_sitk


def _list_problems(problems: Sequence[str], most: int = 3) -> str:
    shown = "; ".join(problems[:most])
    return shown + (f"; and {len(problems) - most} more" if len(problems) > most else "")


def _usable_slots(plan: SlicePlan, present: np.ndarray, unreadable: dict[Path, str], label: str,
                  settings: IngestSettings) -> tuple[int, int, list[str]]:
    """The slots ``lo:hi`` to keep and a warning per file that gave no slice.

    Such a file is a missing slice: at either end of the series it is dropped (the volume
    is shorter); inside, it is filled like a gap, and a run of more than
    ``ingest.max_missing_slices`` missing slices (with any gap beside it) refuses the series.
    """
    if not unreadable:
        return 0, len(present), []
    if not present.any():
        raise _refuse(label, f"the pixel data of none of its {len(unreadable)} file(s) can be used: "
                             + _list_problems(list(unreadable.values())), "re-export the series")
    kept = np.flatnonzero(present)
    lo, hi = int(kept[0]), int(kept[-1]) + 1
    edges = np.diff(np.concatenate([[0], (~present[lo:hi]).astype(int), [0]]))
    starts, ends = lo + np.flatnonzero(edges == 1), lo + np.flatnonzero(edges == -1)  # runs of missing slots
    proj0, dz = float(np.asarray(plan.origin) @ plan.direction[:, 2]), plan.spacing[0]
    run = int((ends - starts).max()) if starts.size else 0
    if run > settings.max_missing_slices:
        i = int(np.argmax(ends - starts))
        a, b = proj0 + starts[i] * dz, proj0 + (ends[i] - 1) * dz
        raise _refuse(label, f"{run} consecutive slices missing at {a:.2f}..{b:.2f} mm along the normal (more than "
                             f"ingest.max_missing_slices {settings.max_missing_slices}), where files give no slice: "
                             + _list_problems(list(unreadable.values())), "re-export the complete series")
    slots_of: dict[Path, list[int]] = defaultdict(list)
    for k, s in enumerate(plan.slots):
        if s is not None and s.path in unreadable:
            slots_of[s.path].append(k)
    warn = []
    for path, problem in unreadable.items():
        ks = slots_of[path]
        where = (f"its slice at {proj0 + ks[0] * dz:.2f} mm along the normal" if len(ks) == 1
                 else f"its {len(ks)} slices at {proj0 + ks[0] * dz:.2f}..{proj0 + ks[-1] * dz:.2f} mm along the normal")
        inside = lo <= ks[0] < hi
        warn.append(f"{problem}: {where} " + ("filled by linear interpolation like a gap" if inside
                                               else "left out (an end of the series: the volume is shorter)"))
    return lo, hi, warn


def _volume_array(plan: SlicePlan, label: str, settings: IngestSettings) -> tuple[np.ndarray, SlicePlan, list[str]]:
    """The series' HU array on an orthogonal grid, the plan it now follows (shorter when a file at an end
    gave no slice) and the warnings: files that give no slice are missing slices, gaps are filled, a
    gantry tilt is resampled."""
    array, present, unreadable, n_sitk = _read_slices(plan, label, settings)
    lo, hi, warn = _usable_slots(plan, present, unreadable, label, settings)
    if (lo, hi) != (0, len(plan.slots)):
        array, present = array[lo:hi], present[lo:hi]
        plan = replace(plan, slots=plan.slots[lo:hi], origin=tuple(plan.slice_position(lo)))
    if not present.all():
        _fill_gaps(array, present)
    if plan.shear_mm != (0.0, 0.0):
        array = _resample_shear(array, plan.shear_mm, plan.spacing)
    if n_sitk:
        warn.append(f"{n_sitk} file(s) decoded with SimpleITK/GDCM (pydicom had no working decoder)")
    return array, plan, warn


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
        lists gaps filled, files whose pixel data gave no slice (each named), duplicates
        dropped, gantry tilts ignored or resampled, odd HU ranges.

    Raises
    ------
    SeriesError
        Not a CT series in HU, too few slices, image too large (checked before any pixel
        data is read), inconsistent geometry, or more missing or unusable slices in a row
        than ``ingest.max_missing_slices``.
    """
    paths = [Path(p) for p in paths]
    if not paths:
        raise SeriesError("series (empty): no files given; nothing to load")
    headers, label = _series_headers(paths, settings, series_uid, min_slices)
    h0 = headers[0]
    plan = plan_slices([f for h in headers for f in h.frames], int(h0.rows), int(h0.columns), settings, label=label,
                       slice_thickness_mm=h0.slice_thickness_mm)
    array, plan, decode_warnings = _volume_array(plan, label, settings)
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

