"""Helpers for tests on ../shared/data/real: NIfTI -> Volume without bmdpipe.ingest."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from bmdpipe.volume import SeriesMeta, Volume

REAL = Path(__file__).resolve().parents[2].parent / "shared/data/real"
TS = REAL / "totalseg_example_ct"
TS_DICOM = REAL / "totalseg_example_ct_dicom"
ANKLE = REAL / "ucalgary_ankle_calib_phantom_ct" / "dicom"


def need(path: Path) -> Path:
    if not path.exists():
        pytest.skip(f"real test data {path} absent")
    return path


def nifti_volume(path: Path) -> Volume:
    """Load a NIfTI CT as a Volume (RAS affine -> LPS geometry, array k/j/i)."""
    import nibabel as nib

    img = nib.load(str(path))
    a = np.diag([-1.0, -1.0, 1.0, 1.0]) @ img.affine  # (i, j, k) -> LPS
    data = np.asarray(img.dataobj, dtype=np.float32)  # (I, J, K)
    spacing_ijk = np.linalg.norm(a[:3, :3], axis=0)
    direction = a[:3, :3] / spacing_ijk
    return Volume(array=np.ascontiguousarray(np.transpose(data, (2, 1, 0))),
                  spacing=(spacing_ijk[2], spacing_ijk[1], spacing_ijk[0]),
                  origin=tuple(a[:3, 3]), direction=direction, meta=SeriesMeta(series_uid=path.name))


def dicom_volume(folder: Path) -> Volume:
    """Load the DICOM series with SimpleITK (LPS natively)."""
    import SimpleITK as sitk

    r = sitk.ImageSeriesReader()
    r.SetFileNames(r.GetGDCMSeriesFileNames(str(folder)))
    img = r.Execute()
    arr = sitk.GetArrayFromImage(img).astype(np.float32)
    sx, sy, sz = img.GetSpacing()
    return Volume(array=arr, spacing=(sz, sy, sx), origin=img.GetOrigin(),
                  direction=np.array(img.GetDirection()).reshape(3, 3), meta=SeriesMeta(series_uid="dicom"))
