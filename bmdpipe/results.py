"""Frozen result types that cross stage boundaries.

Stages produce these; ``measure`` turns them into rows; ``store`` maps rows to CSV and
the database. Coordinates are LPS mm (see :mod:`bmdpipe.volume`), densities mg/cm3.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum

import numpy as np

__all__ = [
    "Material",
    "Region",
    "Side",
    "ReferenceMeasurement",
    "ReferenceOutlines",
    "Calibration",
    "PedicleAxis",
    "Vertebra",
    "Roi",
    "Screw",
    "HaloMeasurement",
    "VERSE_IDS",
    "verse_id",
    "level_name",
]


class Material(str, Enum):
    K2HPO4 = "K2HPO4"
    HA = "HA"


class Region(str, Enum):
    A = "A"  # central cancellous vertebral body (QCT convention)
    B = "B"  # pedicle
    C = "C"  # pedicle-screw trajectory


class Side(str, Enum):
    center = "center"
    left = "left"  # patient's left = +x in LPS
    right = "right"

    @property
    def code(self) -> int:
        """ROI label side code of the output contract (0 center, 1 left, 2 right)."""
        return {"center": 0, "left": 1, "right": 2}[self.value]


#: VerSe level ids (output contract): C1..C7 = 1..7, T1..T12 = 8..19, L1..L5 = 20..24, L6 = 25, S1 = 26.
VERSE_IDS: dict[str, int] = {
    **{f"C{i}": i for i in range(1, 8)},
    **{f"T{i}": 7 + i for i in range(1, 13)},
    **{f"L{i}": 19 + i for i in range(1, 7)},
    "S1": 26,
}
_NAMES = {v: k for k, v in VERSE_IDS.items()}


def verse_id(name: str) -> int:
    """VerSe id of a level name (``'L4'`` -> 23). Raises ``KeyError`` for unknown names."""
    return VERSE_IDS[name.upper()]


def level_name(vid: int) -> str:
    """Level name of a VerSe id (23 -> ``'L4'``)."""
    return _NAMES[int(vid)]


@dataclass(frozen=True)
class ReferenceMeasurement:
    """One calibration reference: a phantom rod or an internal tissue.

    Attributes
    ----------
    name : str
        Rod name (A..E) or tissue (air, fat, muscle, blood, cortical_bone).
    hu_mean, hu_sd : float
        Measured HU in the eroded core.
    n_voxels : int
    nominal_mg_cm3 : float or None
        Certificate mineral density (rods); None for tissues.
    center_lps : tuple of float or None
        Centre of the rod / tissue sample in LPS mm (for QC).
    residual_hu : float or None
        Fit residual (measured - fitted), HU.
    """

    name: str
    hu_mean: float
    hu_sd: float = 0.0
    n_voxels: int = 0
    nominal_mg_cm3: float | None = None
    center_lps: tuple[float, float, float] | None = None
    radius_mm: float | None = None
    residual_hu: float | None = None


@dataclass(frozen=True)
class ReferenceOutlines:
    """Where reference tissues were sampled, on one axial slice (QC image only).

    Attributes
    ----------
    slice_index : int
        Slice (k) of the CT the labels belong to.
    labels : (rows, columns) ndarray of uint8
        0 = not sampled; ``i + 1`` = voxels of ``Calibration.references[i]`` on that slice.
    """

    slice_index: int
    labels: np.ndarray = field(repr=False)


@dataclass(frozen=True)
class Calibration:
    """Linear HU <-> density relation: ``HU = intercept_hu + slope_hu_per_mg_cm3 * density``.

    For a Mindways two-component phantom slope/intercept are sigma_CT / beta_CT.
    ``outlines`` (phantomless calibration) shows where the tissues were sampled; it is for
    the QC image and is not saved with the calibration.
    """

    method: str  # "phantom" | "internal" | "none"
    phantom: str  # phantom definition name, "internal" or ""
    material: Material
    slope_hu_per_mg_cm3: float
    intercept_hu: float
    r2: float | None = None
    n_references: int = 0
    references: tuple[ReferenceMeasurement, ...] = ()
    warnings: tuple[str, ...] = ()
    details: dict = field(default_factory=dict)  # model-specific (sigma_ref, beta_ref, kev, ...)
    outlines: ReferenceOutlines | None = field(default=None, repr=False, compare=False)

    def density(self, hu):
        """Density in mg/cm3 of ``material`` for HU value(s) ``hu``."""
        return (np.asarray(hu, dtype=float) - self.intercept_hu) / self.slope_hu_per_mg_cm3

    def hu(self, density_mg_cm3):
        """HU expected for a density in mg/cm3."""
        return self.intercept_hu + self.slope_hu_per_mg_cm3 * np.asarray(density_mg_cm3, dtype=float)


@dataclass(frozen=True)
class PedicleAxis:
    """A pedicle's axis: from the posterior entry point through the isthmus into the body (LPS mm)."""

    side: Side
    entry_lps: tuple[float, float, float]
    isthmus_lps: tuple[float, float, float]
    target_lps: tuple[float, float, float]  # end point in the body (e.g. 80 % depth)
    isthmus_width_mm: float | None = None
    isthmus_height_mm: float | None = None


@dataclass(frozen=True)
class Vertebra:
    """One vertebra on the CT grid.

    ``mask`` (and the other masks) are boolean arrays over the box
    ``[offset[0]:offset[0]+mask.shape[0], ...]`` of the CT array (k, j, i).
    """

    name: str  # L1..L5, T12, S1, or V1..Vn
    verse_id: int | None  # None for V1..Vn
    offset: tuple[int, int, int]
    mask: np.ndarray  # whole vertebra in the box
    centroid_lps: tuple[float, float, float]
    body_mask: np.ndarray | None = None  # vertebral body (cortex + cancellous)
    cancellous_mask: np.ndarray | None = None  # body core without cortex
    canal_center_lps: tuple[float, float, float] | None = None
    body_center_lps: tuple[float, float, float] | None = None
    body_width_mm: float | None = None  # left-right
    body_depth_mm: float | None = None  # anterior-posterior
    body_height_mm: float | None = None  # superior-inferior
    pedicles: tuple[PedicleAxis, ...] = ()
    source: str = "labels"  # labels | localized
    canal_width_mm: float | None = None  # left-right, at the pedicles (anatomy)
    canal_depth_mm: float | None = None  # anterior-posterior (anatomy)

    @property
    def label_code_base(self) -> int:
        """10 x VerSe id, or 10 x ordinal for V-names (V1 -> 10) when the level is unknown."""
        if self.verse_id is not None:
            return 10 * self.verse_id
        return 10 * int(self.name.lstrip("V"))


@dataclass(frozen=True)
class Roi:
    """One region of interest (already cortex/sclerosis-masked) on a box of the CT grid.

    Attributes
    ----------
    mask : (K, J, I) ndarray of bool
        Final ROI voxels inside the box starting at ``offset``.
    n_candidates : int
        Voxels of the geometric ROI before masking.
    n_excluded : int
        Candidates removed as cortex or sclerosis (``excluded_fraction = n_excluded / n_candidates``).
    """

    vertebra: str
    verse_id: int | None
    region: Region
    side: Side
    offset: tuple[int, int, int]
    mask: np.ndarray
    n_candidates: int
    n_excluded: int
    source: str = "auto"  # auto | manual
    label_code: int = 0  # 10 x VerSe id + side code

    @property
    def excluded_fraction(self) -> float:
        return self.n_excluded / self.n_candidates if self.n_candidates else 0.0


@dataclass(frozen=True)
class HaloMeasurement:
    """Radiolucent zone around one screw (mm).

    Attributes
    ----------
    widest_arc_mm : float
        Width of the halo's widest arc: the per-angle widths are median-smoothed over
        ``halo.max_smoothing`` neighbouring angles (a halo spans ~35 deg or more; shorter spikes are
        ray exits or streaks), and the widest arc's plateau is the median of the smoothed widths
        within half of their peak. Not the largest single width. ``screws.csv`` ``halo_max_mm``.
    mean_width_mm : float
        Mean width over the valid angles (halo-free angles count 0).
    circumference_fraction : float
        Share of the valid angles whose smoothed width reaches ``halo.min_width_mm``.
    loosened : bool or None
        ``widest_arc_mm >= min_width_mm`` and ``circumference_fraction >= min_circumference_fraction``;
        None (indeterminate, ``reason`` says why) when too little of the circumference could be
        measured for a call (``halo.min_measured_fraction``).
    widest_arc_se_mm : float or None
        Standard error of ``widest_arc_mm`` from the spread of the widest arc's width along the screw
        (its cells of ``halo.block_length_mm`` taken as independent), mm.
    measured_fraction : float
        Share of the circumference whose width could be measured (in bone, off metal streaks).
    reason : str
        Why ``loosened`` is None; empty otherwise.
    """

    widest_arc_mm: float
    mean_width_mm: float
    circumference_fraction: float
    loosened: bool | None
    sclerotic_rim: bool = False
    location: str = ""  # e.g. "tip", "mid", "entry"
    width_map_mm: np.ndarray | None = None  # (n_positions, n_angles) for QC
    blur_sigma_mm: tuple[float, ...] | None = None  # scanner blur per orientation sector the halo was measured with (None = fitted per screw)
    widest_arc_se_mm: float | None = None
    measured_fraction: float = 1.0
    reason: str = ""


@dataclass(frozen=True)
class Screw:
    """A pedicle screw detected on CT (LPS mm).

    ``augmented``: a sleeve of cement (or other dense material) wraps the distal shaft
    (:func:`bmdpipe.screws.detect.detect_screws`); ``cement_mantle_mm`` is the sleeve's
    thickness beyond the thread crests, mm (None when not augmented).
    """

    entry_lps: tuple[float, float, float]
    tip_lps: tuple[float, float, float]
    length_mm: float
    diameter_mm: float
    vertebra: str = ""
    side: Side = Side.center
    halo: HaloMeasurement | None = None
    n_voxels: int = 0
    augmented: bool = False
    cement_mantle_mm: float | None = None
