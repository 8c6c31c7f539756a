"""NIfTI input: one file -> Volume in HU with LPS geometry.

NIfTI stores a RAS+ affine mapping (i, j, k) to world mm; DICOM/bmdpipe use LPS, so the
affine's first two rows change sign. The array is transposed from nibabel's (i, j, k)
to bmdpipe's (k, j, i). Header oddities are reported as warnings in ``Volume.meta``:
qform and sform disagreeing (sform wins, as in nibabel), neither set (pixdim only),
pixdim disagreeing with the affine, non-orthogonal axes. A NIfTI carries no modality or
rescale type, so HU are assumed; an implausible HU range is flagged.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np

from ..config import IngestSettings, PseudonymSettings
from ..errors import SeriesError
from ..volume import SeriesMeta, Volume
from ._refs import SeriesRef, Skip
from .pseudonym import study_id_for_name

__all__ = ["load_nifti", "nifti_series_ref", "nifti_series_uid", "ras_to_lps_affine"]

_RAS_TO_LPS = np.diag([-1.0, -1.0, 1.0, 1.0])


def _stem(path: Path) -> str:
    name = path.name
    for suffix in (".nii.gz", ".nii"):
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return path.stem


def nifti_series_uid(path: Path) -> str:
    """Deterministic series UID of a NIfTI file: ``'nifti-'`` + SHA-1 of its name and size."""
    path = Path(path)
    size = path.stat().st_size
    return "nifti-" + hashlib.sha1(f"{path.name}:{size}".encode()).hexdigest()[:24]


def ras_to_lps_affine(affine_ras: np.ndarray) -> np.ndarray:
    """(4, 4) RAS affine of (i, j, k) -> the same mapping in LPS coordinates."""
    return _RAS_TO_LPS @ np.asarray(affine_ras, dtype=float)


def _header_affine(img) -> tuple[np.ndarray, list[str]]:
    hdr = img.header
    warns: list[str] = []
    sform, scode = hdr.get_sform(coded=True)
    qform, qcode = hdr.get_qform(coded=True)
    if scode and qcode and not np.allclose(sform, qform, atol=1e-3):
        warns.append("NIfTI sform and qform disagree; the sform is used (as nibabel does)")
    if not scode and not qcode:
        warns.append("NIfTI has neither sform nor qform: geometry from pixdim only (nibabel's Analyze default: LAS axes, centred at 0); check the orientation")
    affine = np.asarray(img.affine, dtype=float)
    zooms = np.asarray(hdr.get_zooms()[:3], dtype=float)
    col_norms = np.linalg.norm(affine[:3, :3], axis=0)
    if scode and not np.allclose(zooms, col_norms, rtol=1e-3):
        warns.append(f"NIfTI pixdim {tuple(np.round(zooms, 4))} differs from the affine's voxel size "
                     f"{tuple(np.round(col_norms, 4))}; the affine is used")
    return affine, warns


def load_nifti(
    path: Path,
    *,
    pseudonym: PseudonymSettings | None = None,
    study_id: str | None = None,
    series_uid: str | None = None,
    settings: IngestSettings | None = None,
) -> Volume:
    """Load a 3-D NIfTI CT (values taken as HU) into a Volume with LPS geometry.

    Parameters
    ----------
    path : Path
        ``.nii`` or ``.nii.gz`` file.
    pseudonym : PseudonymSettings, optional
        Used for ``study_id`` (keyed hash of the file stem) when ``study_id`` is not given.
    study_id, series_uid : str, optional
        Override the derived values.
    settings : IngestSettings, optional
        Size limits checked on the header before the voxels are read.

    Returns
    -------
    Volume
        float32 (k, j, i) array; ``spacing`` from the affine's column norms; ``origin`` and
        ``direction`` from the affine converted to LPS.

    Raises
    ------
    SeriesError
        If the file cannot be read, or is not a single 3-D volume.
    """
    path = Path(path)
    uid = series_uid or nifti_series_uid(path)
    data, affine, warns = _read_nifti(path, uid, settings)
    a_lps = ras_to_lps_affine(affine)
    spacing_ijk = np.linalg.norm(a_lps[:3, :3], axis=0)
    if np.any(spacing_ijk <= 0):
        raise SeriesError(f"series {uid}: NIfTI {path} has a singular affine; fix its header")
    direction = a_lps[:3, :3] / spacing_ijk
    if np.abs(direction.T @ direction - np.eye(3)).max() > 1e-3:
        warns.append("NIfTI affine has sheared (non-orthogonal) axes; direction kept as is")
    array = np.ascontiguousarray(np.transpose(data, (2, 1, 0)), dtype=np.float32)
    warns += _value_warnings(array)
    if study_id is None:
        study_id = study_id_for_name(_stem(path), pseudonym or PseudonymSettings())
    meta = SeriesMeta(series_uid=uid, study_id=study_id, source=str(path), n_files=1, modality="CT", description="",
                      warnings=("NIfTI input: values taken as HU, modality assumed CT", *warns))
    spacing = (float(spacing_ijk[2]), float(spacing_ijk[1]), float(spacing_ijk[0]))
    return Volume(array=array, spacing=spacing, origin=tuple(a_lps[:3, 3]), direction=direction, meta=meta)


def _read_nifti(path: Path, uid: str, settings: IngestSettings | None) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """The voxels (i, j, k) and the RAS affine of a 3-D NIfTI, with the header's oddities as warnings;
    the size limits are checked on the header before the voxels are read."""
    import nibabel as nib

    try:
        img = nib.load(str(path))
        affine, warns = _header_affine(img)
        if settings is not None:
            reason = _size_problem(tuple(int(v) for v in img.shape), settings)
            if reason:
                raise SeriesError(f"series {uid}: NIfTI {path}: {reason}")
        data = np.asarray(img.dataobj)
    except SeriesError:
        raise
    except Exception as exc:
        raise SeriesError(f"series {uid}: cannot read NIfTI {path} ({type(exc).__name__}: {str(exc)[:150]}); "
                          f"check the file is a complete .nii/.nii.gz") from exc
    if data.ndim == 4 and data.shape[3] == 1:
        data = data[..., 0]
    if data.ndim != 3:
        raise SeriesError(f"series {uid}: NIfTI {path} has shape {data.shape}; need one 3-D volume "
                          f"(split 4-D series first)")
    if not np.issubdtype(data.dtype, np.number) or np.iscomplexobj(data):
        raise SeriesError(f"series {uid}: NIfTI {path} holds {data.dtype} values, not CT numbers")
    return data, affine, warns


def _value_warnings(array: np.ndarray) -> list[str]:
    """NaN/inf voxels (set to -1024 HU in place) and a value range unlike CT in HU."""
    warns = []
    if not np.isfinite(array).all():
        warns.append("NaN/inf voxels set to -1024 HU")
        array[~np.isfinite(array)] = -1024.0
    lo, hi = float(array.min()), float(array.max())
    if lo > -500.0 or hi < 100.0:
        warns.append(f"HU range {lo:.0f}..{hi:.0f} is unusual for CT; check that the NIfTI holds HU")
    return warns


def _size_problem(shape: tuple[int, ...], settings: IngestSettings) -> str:
    dims = shape[:3] + (1,) * max(0, 3 - len(shape))
    if dims[0] > settings.max_columns or dims[1] > settings.max_rows or dims[2] > settings.max_slices \
            or float(np.prod(dims)) > settings.max_voxels:
        return (f"shape {shape} exceeds ingest.max_columns/max_rows/max_slices/max_voxels; refused before "
                f"reading voxels")
    return ""


def nifti_series_ref(path: Path, pseudonym: PseudonymSettings, settings: IngestSettings | None = None) -> SeriesRef:
    """Header-only check of a NIfTI input: the series it holds.

    Raises
    ------
    Skip
        With the reason the file is not processed (unreadable, not one 3-D volume, too large
        or too short for ``settings``).
    """
    import nibabel as nib

    path = Path(path)
    try:
        img = nib.load(str(path))
        shape = tuple(int(s) for s in img.shape)
    except Exception as exc:
        raise Skip(f"not a readable NIfTI file ({type(exc).__name__}: {str(exc)[:120]})") from exc
    if len(shape) == 4 and shape[3] == 1:
        shape = shape[:3]
    if len(shape) != 3:
        raise Skip(f"NIfTI of shape {shape}; need one 3-D volume")
    if settings is not None:
        reason = _size_problem(shape, settings)
        if reason:
            raise Skip(reason)
        if shape[2] < settings.min_slices:
            raise Skip(f"{shape[2]} slices; need >= {settings.min_slices} (ingest.min_slices) for a lumbar volume")
    return SeriesRef(
        series_uid=nifti_series_uid(path),
        paths=(path,),
        kind="nifti",
        modality="CT",
        description="",
        n_files=1,
        study_id=study_id_for_name(_stem(path), pseudonym),
        rows=shape[1],
        columns=shape[0],
        n_slices=shape[2],
    )
