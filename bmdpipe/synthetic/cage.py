"""Interbody cages of a synthetic case: two PLIF box cages, titanium or PEEK with tantalum markers.

Each cage is a hollow box in the disc space (open above and below, where the bone graft inside meets the
endplates), long axis antero-posterior, one on each side of the midline. Its walls and marker pins are
thinner than a few voxels, so the projection simulator sees them as the share of each voxel they fill
(:class:`bmdpipe.synthetic.grid.VoxelFill`); the truth marks the voxels at least half filled.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .grid import Grid, VoxelFill, to_local
from .screws import METAL_SUPERSAMPLE, segment_distance2
from .tissue import BONE_CODES, TISSUE

__all__ = ["CageTruth", "place_cages", "paint_graft", "cage_fills", "mark_fills", "CAGE_TISSUE"]

#: Footprint of one PLIF cage, mm: 10 mm wide, 26 mm long (antero-posterior); its height is the disc space's.
CAGE_WIDTH_MM = 10.0
CAGE_LENGTH_MM = 26.0
#: Distance of each cage's long axis from the midline, mm (an 8 mm gap between the two cages).
CAGE_OFFSET_MM = 9.0
#: Wall thickness by material, mm: titanium cages 1-2 mm, PEEK ~2-3 mm.
CAGE_WALL_MM = {"titanium": 1.5, "peek": 2.5}
#: Tissue of the cage body by material (:data:`bmdpipe.synthetic.tissue.TISSUE`).
CAGE_TISSUE = {"titanium": "metal", "peek": "peek"}
#: Tantalum marker pins of PEEK cages (one in the anterior and one in the posterior wall, superior-inferior), mm.
MARKER_DIAMETER_MM = 1.0
MARKER_LENGTH_MM = 4.0
#: Mineral of the bone graft packed inside the cage, mg/cm3 (assumed: morselized cortico-cancellous chips,
#: ~600-1000 mg/cm3, filling about half the space, the rest blood).
GRAFT_MG_CM3 = 300.0


@dataclass(frozen=True)
class CageTruth:
    """One interbody cage (LPS mm): a hollow box ``width x length x height`` centred at ``centre_lps`` with
    edges along ``axes_lps`` (left, posterior, superior unit vectors), walls ``wall_mm`` thick; ``markers_lps``
    holds the end points of each tantalum pin."""

    material: str
    centre_lps: tuple[float, float, float]
    axes_lps: tuple[tuple[float, float, float], ...]
    width_mm: float
    length_mm: float
    height_mm: float
    wall_mm: float
    markers_lps: tuple[tuple[tuple[float, float, float], tuple[float, float, float]], ...] = ()
    marker_diameter_mm: float = MARKER_DIAMETER_MM

    @property
    def rotation(self) -> np.ndarray:
        """3x3 matrix whose columns are the cage's left, posterior and superior axes (LPS)."""
        return np.array(self.axes_lps, dtype=float).T


def _tuple3(a) -> tuple[float, float, float]:
    return tuple(float(x) for x in a)  # type: ignore[return-value]


def _unit(v) -> np.ndarray:
    v = np.asarray(v, dtype=float)
    return v / np.linalg.norm(v)


def place_cages(material: str, upper, lower) -> tuple[CageTruth, CageTruth]:
    """The left and right cage in the disc space between vertebrae ``upper`` and ``lower``
    (:class:`bmdpipe.synthetic.truth.VertebraTruth`): centred between the endplates' rims, as tall as the
    space between them, axes from the upper vertebra's made orthogonal to the line joining the endplates."""
    sup_up, sup_lo = np.asarray(upper.axes_lps[2]), np.asarray(lower.axes_lps[2])
    top = np.asarray(upper.body_center_lps) - upper.body_height_mm / 2.0 * sup_up
    bottom = np.asarray(lower.body_center_lps) + lower.body_height_mm / 2.0 * sup_lo
    w = _unit(top - bottom)
    u = _unit(np.asarray(upper.axes_lps[0]) - (np.asarray(upper.axes_lps[0]) @ w) * w)
    v = np.cross(w, u)
    height = float(np.linalg.norm(top - bottom))
    wall = CAGE_WALL_MM[material]
    cages = []
    for sgn in (+1.0, -1.0):
        c = (top + bottom) / 2.0 + sgn * CAGE_OFFSET_MM * u
        markers = ()
        if material == "peek":
            ends = [c + ap * (CAGE_LENGTH_MM / 2.0 - wall / 2.0) * v for ap in (-1.0, 1.0)]
            markers = tuple((_tuple3(p - MARKER_LENGTH_MM / 2.0 * w), _tuple3(p + MARKER_LENGTH_MM / 2.0 * w))
                            for p in ends)
        cages.append(CageTruth(material=material, centre_lps=_tuple3(c), axes_lps=(_tuple3(u), _tuple3(v), _tuple3(w)),
                               width_mm=CAGE_WIDTH_MM, length_mm=CAGE_LENGTH_MM, height_mm=height, wall_mm=wall,
                               markers_lps=markers))
    return cages[0], cages[1]


def _local_halves(cage: CageTruth, inset_mm: float) -> np.ndarray:
    return np.array([cage.width_mm / 2.0 - inset_mm, cage.length_mm / 2.0 - inset_mm, cage.height_mm / 2.0])


def _in_box(cage: CageTruth, coords, halves) -> np.ndarray:
    u, v, w = to_local(coords, cage.centre_lps, cage.rotation)
    return (np.abs(u) <= halves[0]) & (np.abs(v) <= halves[1]) & (np.abs(w) <= halves[2])


def _bounds(cage: CageTruth):
    reach = np.abs(cage.rotation) @ _local_halves(cage, 0.0) + 1.0
    return np.asarray(cage.centre_lps) - reach, np.asarray(cage.centre_lps) + reach


def paint_graft(grid: Grid, cage: CageTruth, tissue: np.ndarray, mineral: np.ndarray) -> None:
    """Bone graft (:data:`GRAFT_MG_CM3`) in the voxels whose centre lies inside the cage's walls, in place
    (bone the box reaches, e.g. at an endplate, is kept)."""
    bx = grid.box(*_bounds(cage))
    if bx is None:
        return
    sl, coords = bx
    inner = _in_box(cage, coords, _local_halves(cage, cage.wall_mm)) & ~np.isin(tissue[sl], BONE_CODES)
    tissue[sl][inner] = TISSUE["graft"]
    mineral[sl][inner] = GRAFT_MG_CM3


def cage_fills(grid: Grid, cage: CageTruth, supersample: int = METAL_SUPERSAMPLE) -> list[VoxelFill]:
    """The cage's walls and then its marker pins as the share of each voxel they fill (``supersample``^3
    sub-samples a voxel); pins after walls, so that they displace the wall they sit in."""
    def walls(Z, Y, X):
        coords = (Z, Y, X)
        return _in_box(cage, coords, _local_halves(cage, 0.0)) & ~_in_box(cage, coords, _local_halves(cage, cage.wall_mm))

    fills = []
    filled = grid.fill_fraction(*_bounds(cage), walls, supersample)
    if filled is not None:
        fills.append(VoxelFill(CAGE_TISSUE[cage.material], *filled))
    r = cage.marker_diameter_mm / 2.0
    for a, b in cage.markers_lps:
        lo, hi = np.minimum(a, b) - r - 1.0, np.maximum(a, b) + r + 1.0
        filled = grid.fill_fraction(lo, hi, lambda Z, Y, X, a=a, b=b: segment_distance2(a, b, Z, Y, X) <= r * r,
                                    supersample)
        if filled is not None:
            fills.append(VoxelFill("tantalum", *filled))
    return fills


def mark_fills(fills: list[VoxelFill], tissue: np.ndarray, mineral: np.ndarray, hu_fixed: np.ndarray,
               metal_hu: float) -> None:
    """Mark the voxels at least half filled by each fill as its tissue (mineral 0) in the truth, in place;
    titanium gets ``metal_hu`` in ``hu_fixed``, as the rods."""
    for f in fills:
        m = f.fraction >= 0.5
        tissue[f.slices][m] = TISSUE[f.tissue]
        mineral[f.slices][m] = 0.0
        hu_fixed[f.slices][m] = metal_hu
