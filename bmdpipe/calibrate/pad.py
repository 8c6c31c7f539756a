"""The pad around a phantom's rods: its level, rods that show no edge, its shading along the row.

A rod whose material matches the pad (a 0 mg/cm3 "water" rod) has no edge, and a low rod may sit
within the noise; rod finding cannot see them, a person finds them from the row's geometry
(science.md "Calibration pads as scanned"). Here the positions such a rod may take are predicted
from the rods that were found (equally spaced without holes; the definition's pitch when it gives
one), and each is measured in a core that fits inside the pad:
the pad's extent around the position is measured in the scan's mean slice, not assumed (real
pads are only a few mm taller than their rods: the Calgary pad ~27 mm around ~19 mm rods).

The pad is one uniform material, so where its HU change along the row the scanner is shading it
(beam-hardening cupping, science.md "Calibration pads as scanned"; the rods' fit residuals do not
always show it: cupping that grows along a row laid out in density order tilts the line and leaves
no residual). :func:`shading_along_row`
fits that change (a quadratic in the lateral position) to the pad between the rods and beyond the
end rods, leaving out the slices a streak crosses; each rod is
then read as it would be at the scanner's isocentre (the centre of the field of view, where the
patient's midline is), where the scanner's own water calibration holds.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
from scipy import ndimage as ndi

from ..config import CalibrationSettings
from ..robust import robust_sd
from .rods import (AIR_HU, RodMeasurement, disc_values, mean_slice, measure_rod_at, raised_spread,
                   row_coordinates, segment_values, streak_free_slices)

__all__ = ["pad_level_hu", "predicted_positions", "centred_across_pad", "measure_missing_rod", "PadShading",
           "shading_along_row"]

#: rods of a pad are at least this many diameters apart, centre to centre (resin between them; the real
#: Calgary pad: ~1.8; the pads drawn by bmdpipe.synthetic: 1.3-2.2)
MIN_PITCH_DIAMETERS = 1.2
#: a gap within this share of a whole number m >= 2 of pitches holds m - 1 missing rods
GAP_TOLERANCE_PITCHES = 0.25
#: directions in which the pad's extent around a predicted rod is measured
EXTENT_DIRECTIONS = 16
#: a core smaller than this radius is not measured, mm (fewer than ~10 voxels a slice at 0.8 mm)
MIN_CORE_RADIUS_MM = 1.5
#: a rod without an edge lies in the pad up to this, mm (the blur of the pad's edge)
ROD_IN_PAD_TOLERANCE_MM = 1.5
#: the pad's edge (against air ~-1000 HU, fat ~-100 HU or the table) changes the HU faster than this, HU/mm:
#: a 100 HU step over a ~1 mm blur; smooth shading is slower (the Calgary pad: ~18 HU/mm)
PAD_EDGE_HU_PER_MM = 50.0
#: a pad's edges lie at most this far from a predicted rod centre across the row, mm (half the tallest pad
#: drawn, 60 mm, plus a curved pad's sagitta, up to ~15 mm)
CENTRING_REACH_MM = 45.0


def _centres_px(rods: list[RodMeasurement]) -> np.ndarray:
    """(k, row, column) of the rods, sorted along their row."""
    c = np.array([r.center_kji for r in rods], dtype=float)
    return c[np.argsort(row_coordinates(c[:, 1:])[0])]


def pad_level_hu(img: np.ndarray, rods: list[RodMeasurement], px_mm: float, s: CalibrationSettings) -> float:
    """The pad's HU on the scan's mean slice ``img``: the median between neighbouring rods' edges
    (``rod_edge_margin_mm`` beyond each, clear of their blur)."""
    c = _centres_px(rods)
    reach = (np.median([r.radius_mm for r in rods]) + s.rod_edge_margin_mm) / px_mm
    v = [segment_values(img, a[1:], b[1:], reach, reach) for a, b in zip(c[:-1], c[1:])]
    v = np.concatenate(v) if v else np.zeros(0)
    return float(np.median(v)) if v.size else float("nan")


def predicted_positions(rods: list[RodMeasurement], n_missing: int, px_mm: float,
                        pitch_mm: float | None = None) -> list[tuple[float, float, float]]:
    """Centres (k, j, i) where missing rods of the row may sit.

    The rods of a row are equally spaced with no empty place, so a pitch p (the definition's
    ``pitch_mm``, else each gap between found rods divided by 1 to ``n_missing + 1``) must divide
    every gap (within ``GAP_TOLERANCE_PITCHES``) and, unless given, be at least
    ``MIN_PITCH_DIAMETERS`` rod diameters; a gap of m pitches holds m - 1 missing rods, and
    the missing rods left over extend the row by up to that many pitches beyond either end. A pitch
    that would leave more places inside the gaps than rods are missing is not the row's. The fit
    decides which position holds which rod.
    """
    c = _centres_px(rods)
    gaps = np.linalg.norm(np.diff(c[:, 1:], axis=0), axis=1)
    pitches = [pitch_mm / px_mm] if pitch_mm else sorted({g / m for g in gaps for m in range(1, n_missing + 2)})
    diameter = 2.0 * float(np.median([r.radius_mm for r in rods])) / px_mm
    out = []
    for p in (q for q in pitches if pitch_mm or q >= MIN_PITCH_DIAMETERS * diameter):
        steps = np.round(gaps / p)
        if np.any(steps < 1) or np.any(np.abs(gaps - steps * p) > GAP_TOLERANCE_PITCHES * p):
            continue  # a gap that is not a whole number of pitches
        left = n_missing - int(np.sum(steps - 1))
        if left < 0:
            continue
        out += [tuple(a + (b - a) * j / m) for a, b, m in zip(c[:-1], c[1:], steps.astype(int)) for j in range(1, m)]
        for end, inner in ((c[0], c[1]), (c[-1], c[-2])):  # along the end rods' chord
            unit = (end - inner) / np.linalg.norm((end - inner)[1:])
            out += [tuple(end + unit * p * j) for j in range(1, left + 1)]
    distinct: list[tuple[float, float, float]] = []
    for q in out:  # nearly equal pitches give nearly equal positions: measure each place once
        if all(np.hypot(q[1] - d[1], q[2] - d[2]) > 1.0 for d in distinct):
            distinct.append(q)
    return distinct


def _edge_distance_px(img: np.ndarray, y: float, x: float, angles: np.ndarray, px_mm: float,
                      reach_px: float) -> np.ndarray:
    """Distance (px) from (y, x) to the pad's edge in each direction of ``angles`` (rad, 0 along the
    columns): where the mean slice, smoothed over a pixel, first changes faster than
    ``PAD_EDGE_HU_PER_MM`` (the pad against air, fat or the table) or the image ends, up to
    ``reach_px``. Smooth
    shading (the real Calgary pad: ~18 HU/mm top to bottom) and a rod without an edge are not edges."""
    t = np.arange(0.0, reach_px + 1.0, 0.5)
    yy, xx = y + np.sin(angles)[:, None] * t, x + np.cos(angles)[:, None] * t
    vals = ndi.map_coordinates(ndi.gaussian_filter(img, 1.0), [yy, xx], order=1, mode="constant", cval=AIR_HU)
    steep = np.abs(np.gradient(vals, 0.5 * px_mm, axis=1)) > PAD_EDGE_HU_PER_MM
    steep |= (yy < 0) | (yy > img.shape[0] - 1) | (xx < 0) | (xx > img.shape[1] - 1)  # the image ends
    return t[np.where(steep.any(axis=1), np.argmax(steep, axis=1), t.size - 1)]


def _pad_extent_px(img: np.ndarray, y: float, x: float, px_mm: float, reach_px: float) -> float:
    """Distance (px) from (y, x) to the pad's nearest edge over ``EXTENT_DIRECTIONS`` directions
    (:func:`_edge_distance_px`)."""
    ang = np.linspace(0.0, 2.0 * np.pi, EXTENT_DIRECTIONS, endpoint=False)
    return float(_edge_distance_px(img, y, x, ang, px_mm, reach_px).min())


def centred_across_pad(img: np.ndarray, centre_kji, rods: list[RodMeasurement],
                       px_mm: float) -> tuple[float, float, float] | None:
    """A predicted centre (k, j, i) moved across the row to mid-way between the pad's two edges.

    On a curved pad the rods follow the curve, so a place predicted along the end rods' chord lies
    off the pad's middle (by ~13 mm for a 29 mm rod two pitches along a pad with a 12 mm sagitta);
    the pad's edges on either side, across the row's overall direction, put it back. None when either
    edge is further than ``CENTRING_REACH_MM`` (no pad edge there to centre on).
    """
    c = _centres_px(rods)
    along = (c[-1] - c[0])[1:] / np.linalg.norm((c[-1] - c[0])[1:])
    across = np.arctan2(along[1], -along[0])  # angle (rad, 0 along the columns) of the row's normal
    k, y, x = centre_kji
    reach = CENTRING_REACH_MM / px_mm
    up, down = _edge_distance_px(img, y, x, np.array([across, across + np.pi]), px_mm, reach)
    if max(up, down) >= reach:
        return None
    shift = 0.5 * (up - down)
    return (k, y + shift * np.sin(across), x + shift * np.cos(across))


def measure_missing_rod(arr: np.ndarray, img: np.ndarray, centre_kji, radius_mm: float, level_hu: float,
                        px_mm: float, s: CalibrationSettings) -> RodMeasurement | None:
    """Measure a rod that rod finding did not see, at a predicted centre (k, j, i) of the row.

    Where the mean slice at the centre matches the pad (within ``rod_pad_tolerance_hu`` of
    ``level_hu``: a rod water-equivalent to it, or fainter than the noise), the whole rod must lie in
    the pad (its edges at least the rod's radius away, less ``ROD_IN_PAD_TOLERANCE_MM``: a pad's end
    beyond the last rod is pad, not a place for one more) and the core is the largest disc, up to
    the usual core, that stays ``rod_edge_margin_mm`` inside the pad's edges; where it does not, the
    rod has contrast and is measured like a found one. None when the position is outside the image
    or the pad, or the core would be smaller than ``MIN_CORE_RADIUS_MM``.
    """
    k, y, x = centre_kji
    r_px = radius_mm / px_mm
    if not (r_px <= y < img.shape[0] - r_px and r_px <= x < img.shape[1] - r_px):
        return None
    usual = max(1.0, min(s.rod_core_fraction * r_px, r_px - s.rod_edge_margin_mm / px_mm))
    centre_hu = float(np.median(disc_values(img, y, x, usual)))
    core = usual
    if abs(centre_hu - level_hu) <= s.rod_pad_tolerance_hu:  # no contrast: the rod must lie in the pad
        inside = _pad_extent_px(img, y, x, px_mm, r_px + s.rod_edge_margin_mm / px_mm)
        core = min(usual, inside - s.rod_edge_margin_mm / px_mm)
        if inside < r_px - ROD_IN_PAD_TOLERANCE_MM / px_mm or core * px_mm < MIN_CORE_RADIUS_MM:
            return None
    m = measure_rod_at(arr, img, centre_kji, r_px, px_mm, s, core_px=core)
    return None if m is None else replace(m, found_by="geometry")


#: the pad's HU along the row are taken in bins of this length, mm
SHADING_BIN_MM = 4.0
#: the pad beyond the end rods is sampled up to its end, at most this far from their edges, mm
END_REACH_MM = 40.0
#: a quadratic is fitted to at least this many bins (40 mm of pad; 7 bins between 11 mm rods once took a streak
#: along the row for shading)
MIN_SHADING_BINS = 10
#: bins further than this many robust SD off the quadratic are not the pad (refitted without them) ...
SHADING_OUTLIER_SDS = 3.5
#: ... at most this many times
SHADING_REFITS = 4


@dataclass(frozen=True)
class PadShading:
    """The pad's HU along the row, as a quadratic in the lateral position x (mm from the isocentre).

    Attributes
    ----------
    coefficients : (3,) ndarray
        ``HU(x) = c0 + c1 x + c2 x^2``.
    covariance : (3, 3) ndarray
        Their covariance (from the bins' scatter about the fit).
    x_range_mm : (lo, hi)
        Where the pad was sampled (the correction is not extrapolated beyond it).
    n_bins : int
    """

    coefficients: np.ndarray
    covariance: np.ndarray
    x_range_mm: tuple[float, float]
    n_bins: int

    def hu(self, x_mm) -> np.ndarray:
        x = np.clip(np.asarray(x_mm, dtype=float), *self.x_range_mm)
        return np.polyval(self.coefficients[::-1], x)

    def correction_hu(self, x_mm: float) -> tuple[float, float]:
        """What to subtract from a rod at ``x_mm`` to read it as at the isocentre (x = 0), and the
        standard error of that, HU."""
        x, x0 = (float(np.clip(v, *self.x_range_mm)) for v in (x_mm, 0.0))
        g = np.array([0.0, x - x0, x * x - x0 * x0])
        return float(self.hu(x_mm) - self.hu(0.0)), float(np.sqrt(max(g @ self.covariance @ g, 0.0)))


def _weighted_quadratic(x: np.ndarray, v: np.ndarray, n: np.ndarray):
    """Least-squares ``v = c0 + c1 x + c2 x^2`` weighted by ``n``: coefficients, their covariance (from the
    scatter about the fit) and the residuals."""
    design = np.column_stack([np.ones_like(x), x, x * x])
    a = design * np.sqrt(n)[:, None]
    coef, *_ = np.linalg.lstsq(a, v * np.sqrt(n), rcond=None)
    resid = v - design @ coef
    s2 = float(np.sum(n * resid ** 2) / max(np.sum(n), 1) * len(x) / (len(x) - 3))  # per-bin scatter
    return coef, s2 * np.linalg.pinv(a.T @ a) * float(np.mean(n)), resid


def shading_along_row(arr: np.ndarray, rods: list[RodMeasurement], lateral_mm, px_mm: float,
                      s: CalibrationSettings) -> PadShading | None:
    """Fit the pad's HU along the row of ``rods`` (found and inferred) in the volume ``arr`` (k, j, i; HU).

    The pad is sampled in a band half a rod radius to either side of the line through the rods'
    centres, between their edges (``rod_edge_margin_mm`` beyond each) and beyond the end rods up to
    the pad's end (:func:`_edge_distance_px`, at most ``END_REACH_MM``), in bins of
    ``SHADING_BIN_MM``. A bin's HU is the mean of its per-slice means over the slices a streak
    leaves alone: slices whose bins scatter more than the others' about their median over the scan
    (:func:`~bmdpipe.calibrate.rods.raised_spread`: a band along the row) are left out of every bin,
    and each bin's outlying slices (:func:`~bmdpipe.calibrate.rods.streak_free_slices`), as for
    the rods: a streak along the row would otherwise read as shading. A quadratic in the lateral position
    (``lateral_mm(row, column)``: mm from the isocentre) is fitted to the bins, weighted by their
    sizes, and refitted without the bins far off it (``SHADING_OUTLIER_SDS``: a rod cut by the field
    of view beyond the end rod once read as pad). None with fewer than ``MIN_SHADING_BINS`` bins.
    """
    c = _centres_px(rods)[:, 1:]
    r_px = np.median([r.radius_mm for r in rods]) / px_mm
    margin = s.rod_edge_margin_mm / px_mm
    reach = r_px + margin
    runs = []  # (start, unit vector along the row, from, to), px
    for a, b in zip(c[:-1], c[1:]):
        length = float(np.linalg.norm(b - a))
        runs.append((a, (b - a) / length, reach, length - reach))
    img = mean_slice(arr)
    for end, inner in ((c[0], c[1]), (c[-1], c[-2])):  # the pad beyond the end rods, up to its end
        u = (end - inner) / np.linalg.norm(end - inner)
        start = end + u * reach  # clear of the rod's own edge
        edge = _edge_distance_px(img, start[0], start[1], np.array([np.arctan2(u[0], u[1])]), px_mm,
                                 END_REACH_MM / px_mm)[0]
        runs.append((end, u, reach, reach + edge - margin))
    pts = []
    for a, u, t0, t1 in runs:
        if t1 - t0 < 1.0:
            continue
        nrm = np.array([-u[1], u[0]])
        t = np.arange(t0, t1, 1.0)
        w = np.arange(-0.5 * r_px, 0.5 * r_px + 1e-9, 1.0)
        grid = a[None, None, :] + u[None, None, :] * t[:, None, None] + nrm[None, None, :] * w[None, :, None]
        pts.append(grid.reshape(-1, 2))
    if not pts:
        return None
    p = np.concatenate(pts)
    ks = np.repeat(np.arange(arr.shape[0], dtype=float), p.shape[0])
    v = ndi.map_coordinates(arr, [ks, np.tile(p[:, 0], arr.shape[0]), np.tile(p[:, 1], arr.shape[0])],
                            order=1, mode="nearest").reshape(arr.shape[0], p.shape[0])
    x = lateral_mm(p[:, 0], p[:, 1])
    edges = np.arange(x.min(), x.max() + SHADING_BIN_MM, SHADING_BIN_MM)
    which = np.digitize(x, edges)
    labels = np.unique(which)
    per_slice = np.stack([v[:, which == i].mean(axis=1) for i in labels], axis=1)  # (slices, bins)
    banded = raised_spread((per_slice - np.median(per_slice, axis=0)).std(axis=1), s.rod_band_k)
    if banded.all():
        banded[:] = False
    bins = []
    for n, i in enumerate(labels):
        kept = streak_free_slices(per_slice[:, n], s.rod_streak_k, s.rod_streak_min_hu) & ~banded
        col = per_slice[kept, n] if kept.any() else per_slice[:, n]
        bins.append((float(np.median(x[which == i])), float(col.mean()), int(np.sum(which == i))))
    if len(bins) < MIN_SHADING_BINS:
        return None
    bx, bv, bn = (np.array(col) for col in zip(*bins))
    keep = np.ones(bx.size, dtype=bool)
    for _ in range(SHADING_REFITS):  # bins of something else (a rod cut by the field of view, a streak's remnant)
        coef, cov, resid = _weighted_quadratic(bx[keep], bv[keep], bn[keep])
        full = bv - np.polyval(coef[::-1], bx)
        new = np.abs(full) <= SHADING_OUTLIER_SDS * max(robust_sd(resid, 0.0), 1e-6)
        if np.array_equal(new, keep) or new.sum() < MIN_SHADING_BINS:
            break
        keep = new
    coef, cov, _ = _weighted_quadratic(bx[keep], bv[keep], bn[keep])
    bx = bx[keep]
    return PadShading(coefficients=coef, covariance=cov, x_range_mm=(float(bx.min()), float(bx.max())),
                      n_bins=int(keep.sum()))
