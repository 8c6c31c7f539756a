"""Volume: a CT image in HU with its geometry in DICOM patient coordinates (LPS).

Conventions (used everywhere in bmdpipe)
---------------------------------------
- ``array`` is indexed ``(k, j, i)`` = (slice, row, column), i.e. z/y/x order, as in
  scikit-image. It holds float32 HU.
- ``spacing`` is in mm in the same (z, y, x) order as the array axes.
- ``origin`` is the LPS position (x, y, z) in mm of the centre of voxel (0, 0, 0).
- ``direction`` is a 3x3 matrix whose *columns* are the LPS unit vectors of the
  column (i), row (j) and slice (k) index axes, as SimpleITK's direction matrix.
  +x is the patient's left, +y posterior, +z superior (head).

So a voxel index ``(k, j, i)`` maps to LPS ``origin + direction @ ([i, j, k] * [sx, sy, sz])``.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np

__all__ = ["SeriesMeta", "Volume"]


@dataclass(frozen=True)
class SeriesMeta:
    """Pseudonymised description of a series. Never holds PatientName, PatientID or BirthDate.

    Attributes
    ----------
    series_uid : str
        SeriesInstanceUID (or a derived UID for NIfTI input).
    study_id : str
        Pseudonym of the patient (manifest value or keyed hash of PatientID).
    source : str
        Folder or file the series was read from.
    n_files : int
        Number of files (or frames) that make up the series.
    modality, description, manufacturer, kernel : str
        Header values ('' when absent). ``description`` is SeriesDescription.
    kvp : float or None
        Tube voltage in kV.
    slice_thickness_mm : float or None
        Nominal reconstructed slice thickness in mm.
    study_date : str
        StudyDate (YYYYMMDD) or ''. Kept for timepoint matching; it is not PHI by itself.
    timepoint : str
        Trial timepoint (baseline, month_3, ...) or ''.
    contrast_agent : str
        Contrast agent of the acquisition (ContrastBolusAgent), '' for a non-contrast scan.
    warnings : tuple of str
        Non-fatal problems found while loading (gaps, tilt corrected, ...).
    """

    series_uid: str
    study_id: str = ""
    source: str = ""
    n_files: int = 0
    modality: str = "CT"
    description: str = ""
    manufacturer: str = ""
    kernel: str = ""
    kvp: float | None = None
    slice_thickness_mm: float | None = None
    study_date: str = ""
    timepoint: str = ""
    contrast_agent: str = ""
    warnings: tuple[str, ...] = ()


@dataclass(frozen=True, eq=False)
class Volume:
    """A CT volume in HU with LPS geometry.

    Parameters
    ----------
    array : (K, J, I) ndarray of float32
        HU values, slice/row/column (z/y/x) order.
    spacing : tuple of float, shape (3,)
        Voxel size in mm, (z, y, x) order.
    origin : tuple of float, shape (3,)
        LPS (x, y, z) position in mm of the centre of voxel (0, 0, 0).
    direction : (3, 3) ndarray
        Columns are the LPS unit vectors of the i (column), j (row), k (slice) axes.
    meta : SeriesMeta
        Pseudonymised series description.
    """

    array: np.ndarray
    spacing: tuple[float, float, float]
    origin: tuple[float, float, float] = (0.0, 0.0, 0.0)
    direction: np.ndarray = field(default_factory=lambda: np.eye(3))
    meta: SeriesMeta = field(default_factory=lambda: SeriesMeta(series_uid=""))

    def __post_init__(self) -> None:
        if self.array.ndim != 3:
            raise ValueError(f"Volume array must be 3-D (z, y, x), got shape {self.array.shape}")
        if len(self.spacing) != 3 or min(self.spacing) <= 0:
            raise ValueError(f"spacing must be 3 positive mm values (z, y, x), got {self.spacing}")
        d = np.asarray(self.direction, dtype=float)
        if d.shape != (3, 3):
            raise ValueError(f"direction must be 3x3, got shape {d.shape}")
        object.__setattr__(self, "direction", d)
        object.__setattr__(self, "spacing", tuple(float(s) for s in self.spacing))
        object.__setattr__(self, "origin", tuple(float(o) for o in self.origin))

    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(self.array.shape)  # type: ignore[return-value]

    @property
    def affine(self) -> np.ndarray:
        """(4, 4) matrix mapping homogeneous index ``(k, j, i, 1)`` to LPS ``(x, y, z, 1)`` in mm."""
        sz, sy, sx = self.spacing
        m = np.eye(4)
        # columns for k, j, i in that order
        m[:3, 0] = self.direction[:, 2] * sz
        m[:3, 1] = self.direction[:, 1] * sy
        m[:3, 2] = self.direction[:, 0] * sx
        m[:3, 3] = self.origin
        return m

    @property
    def affine_ras(self) -> np.ndarray:
        """(4, 4) NIfTI-convention affine: homogeneous index ``(i, j, k, 1)`` to RAS mm.

        The LPS affine with its index columns reversed and x, y negated (RAS = LPS with the
        x and y axes flipped), as nibabel and 3D Slicer expect.
        """
        a = self.affine
        ijk = np.column_stack([a[:, 2], a[:, 1], a[:, 0], a[:, 3]])
        return np.diag([-1.0, -1.0, 1.0, 1.0]) @ ijk

    def nifti_image(self, array: np.ndarray | None = None):
        """A ``nibabel.Nifti1Image`` of ``array`` (default: the HU) on this volume's grid.

        ``array`` is (k, j, i) like :attr:`array`; it is stored (i, j, k) with
        :attr:`affine_ras` as qform and sform (code 1, scanner), units mm.
        """
        import nibabel as nib

        data = self.array if array is None else array
        if data.shape != self.array.shape:
            raise ValueError(f"shape {data.shape} != volume shape {self.array.shape}")
        # (k, j, i) C order transposed is (i, j, k) Fortran order: NIfTI's own layout, written without a copy
        img = nib.Nifti1Image(data.transpose(2, 1, 0), self.affine_ras)
        img.set_qform(self.affine_ras, code=1)
        img.set_sform(self.affine_ras, code=1)
        img.header.set_xyzt_units("mm")
        return img

    @property
    def voxel_volume_mm3(self) -> float:
        return float(np.prod(self.spacing))

    def index_to_lps(self, index_kji: np.ndarray) -> np.ndarray:
        """Map (..., 3) voxel indices (k, j, i) (may be fractional) to LPS (x, y, z) in mm."""
        idx = np.asarray(index_kji, dtype=float)
        a = self.affine
        return idx @ a[:3, :3].T + a[:3, 3]

    def lps_to_index(self, points_lps: np.ndarray) -> np.ndarray:
        """Map (..., 3) LPS points in mm to fractional voxel indices (k, j, i)."""
        p = np.asarray(points_lps, dtype=float)
        a = self.affine
        return (p - a[:3, 3]) @ np.linalg.inv(a[:3, :3]).T

    def axis_lps(self, axis: int) -> np.ndarray:
        """LPS unit vector of array axis ``axis`` (0 = k/z, 1 = j/y, 2 = i/x)."""
        return self.direction[:, 2 - axis].copy()

    def with_array(self, array: np.ndarray) -> "Volume":
        """Same geometry and metadata, new voxel values (e.g. a mask or a density map)."""
        if array.shape != self.array.shape:
            raise ValueError(f"shape {array.shape} != volume shape {self.array.shape}")
        return replace(self, array=array)

    def with_meta(self, **changes) -> "Volume":
        return replace(self, meta=replace(self.meta, **changes))
