"""Discovery: walk input folders, read DICOM headers only, group and classify series.

Every file found ends up either in a :class:`SeriesRef` (an axial CT image series or a
NIfTI volume to process) or in a skipped ``series.csv`` row with the reason it is not
processed. Symbolic links to folders are followed, except one leading back to a folder
already searched (a loop), which is listed with that reason like a folder that cannot be
listed. No pixel data is read here, and nothing returned holds PatientName,
PatientID or BirthDate: the pseudonym (``study_id``) is computed on the spot.
"""

from __future__ import annotations

import os
from collections import defaultdict
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from ..config import IngestSettings, PseudonymSettings
from ..errors import IngestError
from ..rows import SeriesRow
from ._header import CT_IMAGE_SOP_CLASSES, FileHeader, NotDicom, read_file_header, uid_name
from ._refs import Discovery, SeriesRef, Skip, skipped_item
from .pseudonym import study_id_for

__all__ = ["discover", "is_nifti_path", "classify_series", "group_dicom_files"]

ProgressCallback = Callable[[int, int], None]

_NIFTI_SUFFIXES = (".nii", ".nii.gz")
_SECONDARY_CAPTURE_PREFIX = "1.2.840.10008.5.1.4.1.1.7"
_SR_PREFIX = "1.2.840.10008.5.1.4.1.1.88."


def is_nifti_path(path: Path) -> bool:
    """True for ``*.nii`` and ``*.nii.gz`` file names."""
    return str(path).lower().endswith(_NIFTI_SUFFIXES)


def _files_under(folder: Path, skipped: list[SeriesRow]) -> list[Path]:
    """Files under ``folder``, sorted, following symbolic links to folders.

    A link to a folder already searched (a loop back to an ancestor, or a second path to the
    same files) is not followed; it, and any folder that cannot be listed, is appended to
    ``skipped`` with the reason.
    """
    files: list[Path] = []
    searched: set[str] = set()

    def unlistable(err: OSError) -> None:
        skipped.append(skipped_item("", str(err.filename), 0, "", "",
                                    f"cannot list this folder ({err.strerror}); check its permissions"))

    for root, dirs, names in os.walk(folder, onerror=unlistable, followlinks=True):
        searched.add(os.path.realpath(root))
        followed = []
        for d in sorted(dirs):
            sub = os.path.join(root, d)
            if os.path.islink(sub) and os.path.realpath(sub) in searched:
                skipped.append(skipped_item("", sub, 0, "", "", "symbolic link to a folder already searched (a "
                                            "loop, or a second path to the same files); not followed"))
            else:
                followed.append(d)
        dirs[:] = followed
        files.extend(Path(root) / f for f in sorted(names))
    return files


def _walk(paths: Sequence[Path]) -> tuple[list[Path], list[Path], list[SeriesRow]]:
    """(explicit files given as inputs, files found inside folders, links and folders not searched with
    the reason); the files sorted and de-duplicated by their real path."""
    explicit: list[Path] = []
    found: list[Path] = []
    skipped: list[SeriesRow] = []
    for p in paths:
        p = Path(p)
        if p.is_file():
            explicit.append(p)
        elif p.is_dir():
            found.extend(_files_under(p, skipped))
        else:
            raise IngestError(f"input {p} does not exist or is not a file or folder; check the path")
    seen: set[str] = set()
    out_e, out_f = [], []
    for lst, out in ((explicit, out_e), (found, out_f)):
        for f in lst:
            key = os.path.realpath(f)  # never raises, not even on a link to itself (read later: 'cannot open')
            if key not in seen:
                seen.add(key)
                out.append(f)
    return out_e, out_f, skipped


def _common_folder(paths: Sequence[Path]) -> str:
    if len(paths) == 1:
        return str(paths[0])
    return os.path.commonpath([str(p) for p in paths])


def _axial_angle_deg(orientation: tuple[float, ...]) -> float:
    r = np.asarray(orientation[:3])
    c = np.asarray(orientation[3:])
    n = np.cross(r, c)
    norm = np.linalg.norm(n)
    if norm == 0:
        return 90.0
    return float(np.degrees(np.arccos(min(1.0, abs(n[2]) / norm))))


def classify_series(headers: Sequence[FileHeader], settings: IngestSettings) -> str | None:
    """Reason why a series is not an axial CT image series in HU, or ``None`` if it is.

    Uses header values only (modality, SOP class, ImageType, RescaleType, image size,
    orientation, number of slices). Geometry consistency is checked when loading.
    """
    h0 = headers[0]
    modality = h0.modality or "?"
    sop = h0.sop_class_uid
    image_type = set().union(*(h.image_type for h in headers))
    desc = h0.description.upper()
    if sop.startswith(_SR_PREFIX):
        kind = "dose report" if "67" == sop.rsplit(".", 1)[-1] else "structured report"
        return f"{kind} ({uid_name(sop)}), not an image"
    if modality != "CT":
        what = uid_name(sop) if sop else "unknown SOP class"
        return f"modality {modality} ({what}), not CT"
    if sop.startswith(_SECONDARY_CAPTURE_PREFIX):
        return f"secondary capture ({uid_name(sop)}, e.g. a dose screen or screenshot), not a CT image"
    if sop and sop not in CT_IMAGE_SOP_CLASSES:
        return f"SOP class {uid_name(sop)} is not a CT image"
    if any(d in desc for d in settings.dose_report_descriptions) or {"DOSE_INFO", "SCREEN SAVE"} & image_type:
        return "dose report image (SeriesDescription/ImageType), not a CT image"
    if not all(h.has_pixel_data for h in headers):
        return "no pixel data (header-only objects)"
    if all(set(h.image_type) & set(settings.localizer_image_types) for h in headers):
        return "localizer (scout / topogram), not an axial CT series"
    if any(h.samples_per_pixel != 1 for h in headers):
        return "colour (RGB) images, not CT values"
    non_hu = set(settings.non_hu_image_types)
    frame_types = {t for h in headers for f in h.frames for t in f.frame_type}
    if (image_type | frame_types) & non_hu:
        bad = sorted((image_type | frame_types) & non_hu)
        return f"not in HU: ImageType {'/'.join(bad)} (derived map); only CT images in HU are measured"
    rtypes = {f.rescale_type for h in headers for f in h.frames} - {"", "HU"}
    if rtypes:
        return f"not in HU: RescaleType {'/'.join(sorted(rtypes))}; only CT images in HU are measured"
    if any(not h.rows or not h.columns for h in headers):
        bad = next(h for h in headers if not h.rows or not h.columns)
        return f"header has no valid Rows/Columns ({bad.path.name}); re-export the series"
    rows = max(h.rows for h in headers)
    cols = max(h.columns for h in headers)
    n = sum(h.n_frames for h in headers)
    if rows > settings.max_rows or cols > settings.max_columns:
        return (
            f"header claims {rows} x {cols} pixels, above ingest.max_rows x max_columns "
            f"({settings.max_rows} x {settings.max_columns}); refused before reading pixel data"
        )
    if n > settings.max_slices or float(rows) * cols * n > settings.max_voxels:
        return (
            f"{n} slices of {rows} x {cols} exceed ingest.max_slices ({settings.max_slices}) or "
            f"max_voxels ({settings.max_voxels:.0f}); refused before reading pixel data"
        )
    ori = next((f.orientation for h in headers for f in h.frames if f.orientation), None)
    if ori is not None:
        angle = _axial_angle_deg(ori)
        if angle > settings.max_axial_angle_deg:
            return (
                f"not axial: slice normal {angle:.0f} deg from the head-foot axis (sagittal/coronal "
                f"reformat); the axial series is processed"
            )
    if n < settings.min_slices:
        return f"{n} slice{'s' if n != 1 else ''}; need >= {settings.min_slices} (ingest.min_slices) for a lumbar volume"
    pids = {h.patient_id for h in headers}
    if len(pids) > 1:
        return f"files of this series carry {len(pids)} different PatientIDs; fix the export"
    return None


def _split_localizers(
    headers: list[FileHeader], settings: IngestSettings
) -> tuple[list[FileHeader], list[FileHeader]]:
    loc_types = set(settings.localizer_image_types)
    loc = [h for h in headers if set(h.image_type) & loc_types]
    if loc and len(loc) < len(headers):
        return [h for h in headers if h not in loc], loc
    return headers, []


def _series_ref(headers: list[FileHeader], pseudonym: PseudonymSettings, warnings: list[str]) -> SeriesRef:
    h0 = headers[0]
    return SeriesRef(
        series_uid=h0.series_uid,
        paths=tuple(h.path for h in headers),
        kind="dicom",
        modality=h0.modality,
        description=h0.description,
        n_files=len(headers),
        study_id=study_id_for(h0.patient_id, pseudonym, study_instance_uid=h0.study_uid),
        manufacturer=h0.manufacturer,
        kernel=h0.kernel,
        kvp=h0.kvp,
        slice_thickness_mm=h0.slice_thickness_mm,
        study_date=h0.study_date,
        rows=h0.rows or 0,
        columns=h0.columns or 0,
        n_slices=sum(h.n_frames for h in headers),
        transfer_syntax=h0.transfer_syntax,
        sop_class=h0.sop_class_uid,
        warnings=tuple(warnings),
    )


def group_dicom_files(
    files: Sequence[Path],
    settings: IngestSettings,
    pseudonym: PseudonymSettings,
    *,
    progress: ProgressCallback | None = None,
    done: int = 0,
    total: int | None = None,
) -> tuple[list[SeriesRef], list[SeriesRow]]:
    """Header pass over ``files``: group by SeriesInstanceUID and classify."""
    total = len(files) if total is None else total
    groups: dict[str, list[FileHeader]] = defaultdict(list)
    skipped: list[SeriesRow] = []
    for i, f in enumerate(files):
        h = read_file_header(f, max_frames=settings.max_slices)
        if isinstance(h, NotDicom):
            skipped.append(skipped_item("", str(f), 1, "", "DICOMDIR" if h.is_dicomdir else "", h.reason))
        else:
            groups[h.series_uid].append(h)
        if progress is not None:
            progress(done + i + 1, total)
    series: list[SeriesRef] = []
    for uid, headers in groups.items():
        warnings: list[str] = []
        # the same instance reached twice (copied folders): keep one
        unique: dict[str, FileHeader] = {}
        for h in headers:
            unique.setdefault(h.sop_instance_uid or str(h.path), h)
        if len(unique) < len(headers):
            warnings.append(f"{len(headers) - len(unique)} duplicate file(s) of the same SOPInstanceUID ignored")
        n_found = len(headers)
        headers = list(unique.values())
        if any(h.series_uid_derived for h in headers):
            warnings.append("SeriesInstanceUID empty: files grouped by folder, frame of reference and geometry")
        headers, localizers = _split_localizers(headers, settings)
        h0 = headers[0]
        if localizers:
            skipped.append(skipped_item(uid, _common_folder([h.path for h in localizers]), len(localizers),
                                       h0.modality, h0.description,
                                       "localizer images inside the CT series; excluded from the volume"))
            warnings.append(f"{len(localizers)} localizer image(s) in the series excluded")
        reason = classify_series(headers, settings)
        if reason is not None:
            n_other = n_found - len(localizers)
            skipped.append(skipped_item(uid, _common_folder([h.path for h in headers]), n_other,
                                       h0.modality, h0.description, reason))
        else:
            series.append(_series_ref(headers, pseudonym, warnings))
    return series, skipped


def discover(
    paths: Sequence[Path],
    settings: IngestSettings,
    pseudonym: PseudonymSettings | None = None,
    *,
    progress: ProgressCallback | None = None,
) -> Discovery:
    """Find the CT series (and NIfTI volumes) under ``paths``.

    Parameters
    ----------
    paths : sequence of Path
        Folders (searched recursively, following symbolic links but never around a loop;
        any file names) and/or files (DICOM or NIfTI).
    settings : IngestSettings
        Classification thresholds (``min_slices``, ``max_rows`` ...).
    pseudonym : PseudonymSettings, optional
        Key for ``study_id``; default settings (unkeyed, with a logged warning) if omitted.
    progress : callable, optional
        Called as ``progress(done, total)`` after each file.

    Returns
    -------
    Discovery
        ``series``: what to load, ordered by first path; ``skipped``: each series or
        stray file not processed, with its reason.

    Raises
    ------
    IngestError
        If an input path does not exist.
    """
    from .nifti import nifti_series_ref  # here: nibabel is imported only when needed

    pseudonym = pseudonym or PseudonymSettings()
    explicit, found, skipped = _walk(paths)
    total = len(explicit) + len(found)
    series: list[SeriesRef] = []
    dicom_files: list[Path] = []
    done = 0
    for f, is_explicit in [(f, True) for f in explicit] + [(f, False) for f in found]:
        if is_nifti_path(f):
            if is_explicit or settings.accept_nifti_in_folders:
                try:
                    series.append(nifti_series_ref(f, pseudonym, settings))
                except Skip as skip:
                    skipped.append(skipped_item("", str(f), 1, "", "NIfTI", str(skip)))
            else:
                skipped.append(skipped_item("", str(f), 1, "", "NIfTI",
                                           "NIfTI file inside an input folder (labels?); give it as an input "
                                           "file to process it as CT"))
            done += 1
            if progress is not None:
                progress(done, total)
        else:
            dicom_files.append(f)
    d_series, d_skipped = group_dicom_files(dicom_files, settings, pseudonym, progress=progress,
                                            done=done, total=total)
    series.extend(d_series)
    skipped.extend(d_skipped)
    series.sort(key=lambda r: str(r.paths[0]))
    skipped.sort(key=lambda s: (s.path, s.series_uid))
    return Discovery(series=tuple(series), skipped=tuple(skipped))
