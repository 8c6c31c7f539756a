"""Rods of an in-scan calibration phantom: found, measured and grouped into the pad's row.

No hints about where the phantom lies: rods are found as round, uniform, z-parallel
cylinders of similar size lying in one row (straight or gently curved, below or beside the
patient). Circles come from a Hough transform on edges of slab-averaged axial images;
circles are linked across slabs into 3-D rods; a row is a group of rods of one size on a
smooth line whose neighbours are joined by one uniform pad (vertebrae, bowel gas and the
table do not form such a row of uniform discs). The pixel-quantised Hough circle is refined
from the rod's edge (:func:`refine_rod_edge`: sub-pixel centre and radius, not pulled by
shading). Each rod is measured in an eroded core, slice by slice, over every slice where it
is visible; slices hit by streaks are dropped by a robust outlier test; the HU change across
the core (:func:`core_gradient_hu`) is kept for the shading warning.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from itertools import combinations

import numpy as np
from scipy import ndimage as ndi

from ..config import CalibrationSettings
from ..robust import MAD_TO_SD, robust_sd
from ..volume import Volume

__all__ = ["RodMeasurement", "find_rows", "refine_rod_edge", "core_gradient_hu", "disc_values", "measure_rod_at",
           "mean_slice", "row_coordinates", "segment_values", "streak_free_slices", "banded_slices",
           "raised_spread"]

# Geometry of a row of rods, in rod radii (r) or in the row's pitch (the median gap between rods).
# The shipped phantoms' rods are 10-30 mm wide at a pitch of 1.5-2.5 diameters (science.md).
SURROUND_RING_R = (1.25, 1.6)  # a circle's surround: clear of its edge blur, short of the next rod


MIN_ROD_GAP_R = 1.8  # rods of a phantom never overlap (touching rods: 2 r); closer circles are one rod


LINK_CENTRE_R = 0.5  # circles of two slabs with centres closer than this (+1 px) are one rod ...


LINK_RADIUS_FRACTION = 0.25  # ... and radii within this share (+1 px)


ROW_MAX_SAGITTA = 0.25  # a row bends by at most this share of its half-length (a curved pad, not a ring)


ROW_TOLERANCE_SLOPE = 0.1  # a row's tolerance across grows by this share of the distance from its seeds


MAX_END_GAP_PITCHES = 2.6  # an end rod further out than this is not of the row (a phantom corner, a bowel loop)


VISIBLE_DISC_R = 1.05  # a slice counts only when the disc just past the rod's edge is in the field of view


VISIBLE_RELATIVE_TOLERANCE = 0.25  # ... and its core median is within this share of the rod's HU (or rod_visible_tolerance_hu)


BAND_REACH_R = 1.5  # a streak's band is looked for over the rod and the pad around it, to this many radii
CORE_OUTLIER_SDS = 4.0  # core voxels beyond this many robust SD of the slice's median: a speck or a streak


MIN_RING_VOXELS = 5  # fewer core or surround voxels: a circle too small to judge


HOUGH_RADII = 30  # about this many radii tried between rod_min and rod_max_diameter_mm


AIR_HU = -1000.0  # padding below air (-2000, -3024 outside the field of view) is set to air before slab means


# refine_rod_edge: rays from the centre, the inside and surround levels, and the largest correction
EDGE_RAY_R = (0.4, 1.6)


EDGE_RAY_SAMPLES = 49  # 0.025 r apart


EDGE_INSIDE_R = 0.6  # inside level: median up to here (the measured core)


EDGE_SURROUND_R = 1.3  # surround level: median beyond here (past the blurred edge)


EDGE_RAY_OUTLIER_PX = 1.0  # a ray's edge further than this from the fitted circle is another structure


EDGE_MAX_CHANGE_R = 0.3  # a refined centre or radius further than this from the detected one is refused


CIRCLE_REFITS = 3  # circle fits with the outlying rays dropped
MIN_PAD_SAMPLES = 4  # fewer pixels than this between two rods' edges do not tell whether one pad joins them


ROW_REFITS = 3  # quadratic refits of a row's members


@dataclass(frozen=True)
class RodMeasurement:
    """One rod found in the image.

    Attributes
    ----------
    center_kji : (3,) tuple of float
        Rod centre (voxel index) at the middle of its visible z range.
    axis_ji_per_k : (2,) tuple of float
        Drift of the centre (rows, columns) per slice (tilted rods).
    radius_mm : float
        Outer radius of the rod.
    core_radius_mm : float
        Radius of the eroded core that was measured.
    hu_mean, hu_sd : float
        Mean and SD (over voxels) of the core HU over the slices used.
    n_voxels, n_slices : int
        Voxels and slices used.
    k_range : (2,) tuple of int
        First and last slice index where the rod is visible.
    slice_means : (S,) ndarray
        Core mean per used slice (QC).
    score : float
        Detection strength (normalised Hough accumulator, 0-1).
    core_gradient_hu : float
        HU change across the core's diameter along its steepest in-plane direction (a plane fitted
        to the core voxels of all slices used), HU. A uniform rod shows noise only (a few HU);
        beam hardening or scatter shading makes it tens of HU.
    n_outlier_slices : int
        Slices where the rod was visible but left out: their core mean was an outlier among the
        rod's slices (a streak across the rod, ``rod_streak_k``).
    warnings : tuple of str
    found_by : {'edge', 'geometry'}
        Found by its edge, or measured where the row's geometry puts a rod that shows no edge.
    """

    center_kji: tuple[float, float, float]
    axis_ji_per_k: tuple[float, float]
    radius_mm: float
    core_radius_mm: float
    hu_mean: float
    hu_sd: float
    n_voxels: int
    n_slices: int
    k_range: tuple[int, int]
    slice_means: np.ndarray = field(repr=False, default_factory=lambda: np.zeros(0))
    score: float = 0.0
    core_gradient_hu: float = 0.0
    n_outlier_slices: int = 0
    warnings: tuple[str, ...] = ()
    found_by: str = "edge"


@dataclass
class _Circle:
    slab: int
    k_center: float
    y: float  # row, px
    x: float  # column, px
    r_px: float
    score: float


def _slab_bounds(nk: int, dz: float, slab_mm: float) -> list[tuple[int, int]]:
    per = max(1, int(round(slab_mm / dz)))
    n = max(1, int(round(nk / per)))
    edges = np.linspace(0, nk, n + 1).round().astype(int)
    return [(int(a), int(b)) for a, b in zip(edges[:-1], edges[1:]) if b > a]


def _circles_in_image(img: np.ndarray, px_mm: float, s: CalibrationSettings, k_center: float, slab: int) -> list[_Circle]:
    from skimage import feature, transform

    rmin = max(2, int(np.floor(s.rod_min_diameter_mm / 2 / px_mm)))
    rmax = max(rmin + 1, int(np.ceil(s.rod_max_diameter_mm / 2 / px_mm)))
    step = max(1, (rmax - rmin) // HOUGH_RADII)
    radii = np.arange(rmin, rmax + 1, step)
    sigma_px = max(1.0, s.rod_edge_sigma_mm / px_mm)
    edges = feature.canny(img, sigma=sigma_px, low_threshold=s.rod_edge_low_hu, high_threshold=s.rod_edge_high_hu)
    if not edges.any():
        return []
    acc = transform.hough_circle(edges, radii)
    peaks = transform.hough_circle_peaks(
        acc, radii, min_xdistance=rmin, min_ydistance=rmin, threshold=s.rod_hough_threshold,
        total_num_peaks=s.rod_max_candidates,
    )
    out: list[_Circle] = []
    seen: set[tuple[int, int, int]] = set()
    for _, cx, cy, _ in zip(*peaks):
        # every radius that is a local maximum of the votes at this centre is a candidate
        # (a rod's inner shading can out-vote its true edge; the group step picks the size)
        y0, x0 = max(0, cy - 1), max(0, cx - 1)
        prof = acc[:, y0:cy + 2, x0:cx + 2].reshape(len(radii), -1).max(1)
        for i in range(len(radii)):
            lo = prof[i - 1] if i > 0 else -1.0
            hi = prof[i + 1] if i + 1 < len(radii) else -1.0
            if prof[i] >= s.rod_hough_threshold and prof[i] >= lo and prof[i] >= hi:
                key = (int(cy), int(cx), int(radii[i]))
                if key not in seen:
                    seen.add(key)
                    out.append(_Circle(slab, k_center, float(cy), float(cx), float(radii[i]), float(prof[i])))
    return out


def disc_values(img: np.ndarray, y: float, x: float, r_in: float, r_out: float | None = None,
                offsets: bool = False):
    """Values of ``img`` inside a disc (or annulus r_in..r_out) around (y, x), px; with
    ``offsets`` also each value's (row, column) offset from (y, x), px."""
    rr = int(np.ceil(r_out if r_out is not None else r_in)) + 1
    y0, y1 = max(0, int(y) - rr), min(img.shape[0], int(y) + rr + 2)
    x0, x1 = max(0, int(x) - rr), min(img.shape[1], int(x) + rr + 2)
    yy, xx = np.mgrid[y0:y1, x0:x1]
    d = np.hypot(yy - y, xx - x)
    m = d <= r_in if r_out is None else (d >= r_in) & (d <= r_out)
    if offsets:
        return img[y0:y1, x0:x1][m], yy[m] - y, xx[m] - x
    return img[y0:y1, x0:x1][m]


def disc_values_by_slice(arr: np.ndarray, ks: np.ndarray, ys: np.ndarray, xs: np.ndarray, r: float,
                         offsets: bool = False) -> list:
    """:func:`disc_values` of the disc of radius ``r`` (px) around (``ys[i]``, ``xs[i]``) on slice ``ks[i]``
    of ``arr``, for every ``i`` at once (the same values in the same order; the box's grid is built
    once for all slices). Centres must not be negative."""
    n = int(np.ceil(r)) + 1
    box = np.arange(-n, n + 2)  # disc_values' box: int(c) - n .. int(c) + n + 1
    rows = ys.astype(int)[:, None] + box[None, :]  # (K, B)
    cols = xs.astype(int)[:, None] + box[None, :]
    inside = ((rows >= 0) & (rows < arr.shape[1]))[:, :, None] & ((cols >= 0) & (cols < arr.shape[2]))[:, None, :]
    dy = rows[:, :, None] - ys[:, None, None]
    dx = cols[:, None, :] - xs[:, None, None]
    take = (np.hypot(dy, dx) <= r) & inside  # (K, B, B)
    values = arr[ks[:, None, None], np.clip(rows, 0, arr.shape[1] - 1)[:, :, None],
                 np.clip(cols, 0, arr.shape[2] - 1)[:, None, :]]
    if not offsets:
        return [values[i][take[i]] for i in range(len(ks))]
    dy, dx = np.broadcast_to(dy, take.shape), np.broadcast_to(dx, take.shape)
    return [(values[i][take[i]], dy[i][take[i]], dx[i][take[i]]) for i in range(len(ks))]


def core_gradient_hu(values: np.ndarray, dy_px: np.ndarray, dx_px: np.ndarray, core_radius_px: float) -> float:
    """HU change across a rod core's diameter from a least-squares plane ``HU = c + gy*dy + gx*dx``
    over its voxels (offsets from the centre in px): ``2 * core_radius_px * |(gy, gx)|``, HU."""
    a = np.column_stack([np.ones(values.size), dy_px, dx_px])
    (_, gy, gx), *_ = np.linalg.lstsq(a, values.astype(float), rcond=None)
    return float(2.0 * core_radius_px * np.hypot(gy, gx))


def _candidate_ok(img: np.ndarray, c: _Circle, s: CalibrationSettings) -> bool:
    """A circle is a rod candidate when its core is uniform, in range and differs from its surround."""
    core_r = c.r_px * s.rod_core_fraction
    core = disc_values(img, c.y, c.x, core_r)
    ring = disc_values(img, c.y, c.x, c.r_px * SURROUND_RING_R[0], c.r_px * SURROUND_RING_R[1])
    if core.size < MIN_RING_VOXELS or ring.size < MIN_RING_VOXELS:
        return False
    m = float(np.median(core))
    if not (s.rod_min_hu <= m <= s.rod_max_hu):
        return False
    contrast = abs(m - float(np.median(ring)))
    spread = float(np.percentile(core, 90) - np.percentile(core, 10))
    return contrast >= s.rod_min_contrast_hu and spread <= max(s.rod_max_core_spread_hu, 0.5 * contrast)


def _link(circles: list[_Circle]) -> list[list[_Circle]]:
    """Group circles of different slabs that describe the same rod (centre within half a radius)."""
    tracks: list[list[_Circle]] = []
    for c in sorted(circles, key=lambda c: -c.score):
        for t in tracks:
            ref = t[0]
            if (c.slab not in {q.slab for q in t}
                    and np.hypot(c.y - ref.y, c.x - ref.x) <= LINK_CENTRE_R * ref.r_px + 1
                    and abs(c.r_px - ref.r_px) <= LINK_RADIUS_FRACTION * ref.r_px + 1):
                t.append(c)
                break
        else:
            tracks.append([c])
    return tracks


def row_coordinates(pts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Position of points along (t) and across (n) their principal axis through the centroid."""
    p = pts - pts.mean(0)
    _, _, vt = np.linalg.svd(p)
    return p @ vt[0], p @ vt[1]


def _on_row(pts_mm: np.ndarray, tol_mm: float) -> bool:
    """True when points lie on a straight or gently curved row (quadratic through >= 4 points)."""
    if len(pts_mm) <= 2:
        return True
    t, n = row_coordinates(pts_mm)
    deg = 2 if len(pts_mm) >= 4 else 1
    coef = np.polyfit(t, n, deg)
    res = n - np.polyval(coef, t)
    if deg == 2 and abs(coef[0]) * (np.ptp(t) / 2) ** 2 > ROW_MAX_SAGITTA * np.ptp(t):
        return False  # too curved to be a row of rods
    return bool(np.max(np.abs(res)) <= tol_mm)


def _row_members(pts: np.ndarray, cand: list[int], i: int, j: int, tol: float) -> list[int]:
    """Candidates on the row through seeds i and j: a line first, then a quadratic refit."""
    u = pts[j] - pts[i]
    u = u / np.linalg.norm(u)
    nrm = np.array([-u[1], u[0]])
    mid = 0.5 * (pts[i] + pts[j])
    c = np.array(cand)
    t = (pts[c] - mid) @ u
    n = (pts[c] - mid) @ nrm
    # allow a gentle curve: tolerance grows with the distance from the seeds' midpoint
    keep = np.abs(n) <= tol + ROW_TOLERANCE_SLOPE * np.abs(t)
    for _ in range(ROW_REFITS):
        if keep.sum() < 4:
            break
        coef = np.polyfit(t[keep], n[keep], 2)
        new = np.abs(n - np.polyval(coef, t)) <= tol
        new[list(c).index(i)] = new[list(c).index(j)] = True
        if np.array_equal(new, keep):
            break
        keep = new
    return [int(m) for m in c[keep]]


def _drop_stray_ends(pts: np.ndarray, group: list[int], tol: float) -> list[int]:
    """Drop end members of a row of >= 4 that the quadratic through the others misses by more than
    ``tol`` (mm): a quadratic through all of them bends to absorb one stray point at an end (a
    phantom's corner taken for a rod: bench seed 8033, 14 mm off a straight row of three), a truly
    curved row is predicted by its other rods (through three, exactly)."""
    g = list(group)
    while len(g) >= 4:
        t, n = row_coordinates(pts[g])
        ends = (int(np.argmin(t)), int(np.argmax(t)))
        miss = [abs(n[e] - np.polyval(np.polyfit(np.delete(t, e), np.delete(n, e), 2), t[e])) for e in ends]
        if max(miss) <= tol:
            break
        del g[ends[int(np.argmax(miss))]]  # the end the others miss most (a stray bends their quadratic too)
    return g


def _trim_far_ends(pts: np.ndarray, group: list[int]) -> list[int]:
    """Drop rods at the ends of a row that sit much further out than the row's pitch."""
    g = list(group)
    while len(g) >= 4:
        order = np.argsort(row_coordinates(pts[g])[0])
        g = [g[o] for o in order]
        gaps = np.linalg.norm(np.diff(pts[g], axis=0), axis=1)
        med = float(np.median(gaps))
        if gaps[0] > MAX_END_GAP_PITCHES * med:
            g = g[1:]
        elif gaps[-1] > MAX_END_GAP_PITCHES * med:
            g = g[:-1]
        else:
            break
    return g


def segment_values(img: np.ndarray, a: np.ndarray, b: np.ndarray, skip_a: float, skip_b: float) -> np.ndarray:
    """Values of ``img`` every pixel along the segment from ``a`` to ``b`` (row, column px), leaving out
    ``skip_a`` px at its start and ``skip_b`` at its end."""
    length = float(np.linalg.norm(b - a))
    t = np.arange(skip_a, length - skip_b, 1.0) / max(length, 1e-9)
    if t.size == 0:
        return np.zeros(0)
    pts = a[:, None] + (b - a)[:, None] * t[None, :]
    return ndi.map_coordinates(img, pts, order=1, mode="nearest")


def _pad_runs(img: np.ndarray, group: list[int], pts_px: np.ndarray, radii_px: np.ndarray, px_mm: float,
              s: CalibrationSettings) -> list[list[int]]:
    """Split a row of round objects (sorted along it) where two neighbours are not joined by one
    uniform material: a phantom's rods sit in one pad, a row of anatomy (canal, aorta, bodies, bowel)
    crosses fat, muscle and bone. Two neighbours are joined when at least ``rod_pad_min_share`` of
    the mean slice between their edges (``rod_edge_margin_mm`` beyond each, clear of the blur) lies
    within ``rod_pad_tolerance_hu`` of its median, or when fewer than ``MIN_PAD_SAMPLES`` px lie
    between them."""
    order = np.argsort(row_coordinates(pts_px[group])[0])
    g = [group[o] for o in order]
    runs, run = [], [g[0]]
    edge_px = s.rod_edge_margin_mm / px_mm  # the rods' blurred edges stay out
    for a, b in zip(g[:-1], g[1:]):
        v = segment_values(img, pts_px[a], pts_px[b], radii_px[a] + edge_px, radii_px[b] + edge_px)
        # rods almost touching each other leave too little between them to tell
        joined = v.size < MIN_PAD_SAMPLES or np.mean(np.abs(v - np.median(v)) <= s.rod_pad_tolerance_hu) >= \
            s.rod_pad_min_share
        if joined:
            run.append(b)
        else:
            runs.append(run)
            run = [b]
    runs.append(run)
    return [r for r in runs if len(r) >= 2]


def _candidate_groups(tracks: list[dict], s: CalibrationSettings, px_mm: float,
                      img: np.ndarray | None = None) -> list[list[int]]:
    """Sets of similar-size rods on a row (indices into ``tracks``), best first: more rods, then
    higher detection score. With ``img`` (the scan's mean slice) a row is cut where its neighbours
    are not joined by one pad (:func:`_pad_runs`)."""
    if not tracks:
        return []
    found: dict[tuple[int, ...], tuple] = {}
    pts = np.array([[t["y"] * px_mm, t["x"] * px_mm] for t in tracks])
    for i, j in combinations(range(len(tracks)), 2):
        ri, rj = tracks[i]["r_mm"], tracks[j]["r_mm"]
        if abs(ri - rj) > s.rod_radius_tolerance * max(ri, rj):
            continue
        r = 0.5 * (ri + rj)
        d = np.linalg.norm(pts[i] - pts[j])
        if d < 2 * r:
            continue
        members = [m for m in range(len(tracks)) if abs(tracks[m]["r_mm"] - r) <= s.rod_radius_tolerance * r]
        # keep candidates not overlapping a stronger one
        members.sort(key=lambda m: -tracks[m]["score"])
        chosen: list[int] = []
        for m in members:
            if all(np.linalg.norm(pts[m] - pts[q]) >= MIN_ROD_GAP_R * r for q in chosen):
                chosen.append(m)
        if i not in chosen or j not in chosen:
            continue
        tol = s.rod_row_tolerance_fraction * r + 1.0
        group = _drop_stray_ends(pts, _row_members(pts, chosen, i, j, tol), tol)
        if len(group) < 2 or not _on_row(pts[group], tol):
            continue
        runs = [group] if img is None else _pad_runs(img, group, pts / px_mm,
                                                     np.array([t["r_mm"] / px_mm for t in tracks]), px_mm, s)
        for run in runs:
            run = _trim_far_ends(pts, run)
            key = tuple(sorted(run))
            if key not in found:
                found[key] = (len(run), float(sum(tracks[g]["score"] for g in run)))
    if not found:
        best = int(np.argmax([t["score"] for t in tracks]))
        return [[best]]
    return [list(g) for g, _ in sorted(found.items(), key=lambda kv: kv[1], reverse=True)]


def _core_samples(arr: np.ndarray, axis: tuple[float, float, float, float], r_px: float, core_px: float,
                  ref: float, pad_hu: float, s: CalibrationSettings) -> list[tuple[int, np.ndarray, np.ndarray, np.ndarray]]:
    """Core voxels of a rod on every slice where it is visible: (k, HU, row offset, column offset).

    ``axis`` = (ay, by, ax, bx): the centre on slice k is (ay * k + by, ax * k + bx) px. A slice
    counts when the disc reaching just past the edge is inside the reconstructed field of view and
    its core median is within ``rod_visible_tolerance_hu`` (or 25 %) of ``ref``; voxels beyond
    ``CORE_OUTLIER_SDS`` robust SD of the slice's core median (a streak, a speck) are left out.
    """
    ay, by, ax, bx = axis
    ks = np.arange(arr.shape[0])
    ys, xs = ay * ks + by, ax * ks + bx
    seen = (r_px <= ys) & (ys < arr.shape[1] - r_px) & (r_px <= xs) & (xs < arr.shape[2] - r_px)
    ks, ys, xs = ks[seen], ys[seen], xs[seen]
    cores = disc_values_by_slice(arr, ks, ys, xs, core_px, offsets=True)
    discs = disc_values_by_slice(arr, ks, ys, xs, r_px * VISIBLE_DISC_R)
    out = []
    for k, (vals, dy, dx), outside in zip(ks.tolist(), cores, discs):
        if vals.size < 3 or np.any(outside <= pad_hu):
            continue
        med = float(np.median(vals))
        if abs(med - ref) > max(s.rod_visible_tolerance_hu, VISIBLE_RELATIVE_TOLERANCE * abs(ref)):
            continue  # rod not visible in this slice (ends, cut off)
        sd = robust_sd(vals, med) + 1e-6
        keep = np.abs(vals - med) <= CORE_OUTLIER_SDS * sd
        out.append((k, vals[keep], dy[keep], dx[keep]))
    return out


def _fit_circle(y: np.ndarray, x: np.ndarray) -> tuple[float, float, float]:
    """Least-squares circle through points (algebraic fit, Kasa): centre (y, x) and radius."""
    a = np.column_stack([2.0 * y, 2.0 * x, np.ones(y.size)])
    (cy, cx, c), *_ = np.linalg.lstsq(a, y * y + x * x, rcond=None)
    return float(cy), float(cx), float(np.sqrt(max(c + cy * cy + cx * cx, 0.0)))


def refine_rod_edge(arr: np.ndarray, ks, axis: tuple[float, float, float, float], r_px: float,
                    min_contrast_hu: float, n_rays: int = 64) -> tuple[tuple[float, float, float, float], float]:
    """Sub-pixel centre and radius of a rod from its edge.

    Ray profiles from the centre (0.4-1.6 radii) are sampled on each slice ``ks`` around that
    slice's centre and averaged over the slices; on each ray the edge is where the profile
    crosses half-way between the ray's own inside level (median up to 0.6 radius) and its
    surround (median beyond 1.3 radii), so shading across the rod does not move it. A circle is
    fitted to the edges; rays more than 1 px off it (a neighbouring structure, the phantom's own
    edge) are dropped and the circle refitted.

    Parameters
    ----------
    arr : (K, J, I) ndarray
        HU.
    ks : sequence of int
        Slices where the rod is visible.
    axis : (ay, by, ax, bx)
        Rod centre on slice k: (ay * k + by, ax * k + bx), px.
    r_px : float
        Radius estimate, px.
    min_contrast_hu : float
        Rays whose inside and surround differ by less are not used, HU.

    Returns
    -------
    axis, r_px
        Refined (the centre shifted, the tilt kept); the input unchanged when fewer than half
        the rays give an edge or the shift or radius change exceeds 30 % of the radius.
    """
    ay, by, ax, bx = axis
    ang = np.linspace(0.0, 2.0 * np.pi, n_rays, endpoint=False)
    rho = np.linspace(*EDGE_RAY_R, EDGE_RAY_SAMPLES) * r_px
    dy, dx = np.sin(ang)[:, None] * rho[None], np.cos(ang)[:, None] * rho[None]
    prof = np.mean([ndi.map_coordinates(arr[k], [ay * k + by + dy, ax * k + bx + dx], order=1, mode="nearest")
                    for k in ks], axis=0)
    inner = np.median(prof[:, rho <= EDGE_INSIDE_R * r_px], axis=1)
    outer = np.median(prof[:, rho >= EDGE_SURROUND_R * r_px], axis=1)
    half = 0.5 * (inner + outer)
    inside = np.sign(inner - outer)[:, None] * (prof - half[:, None]) > 0
    i = np.argmax(~inside, axis=1)  # first sample outside, going outwards
    ok = (np.abs(inner - outer) >= min_contrast_hu) & (i > 0) & (~inside).any(axis=1)
    rows = np.arange(n_rays)
    i = np.clip(i, 1, rho.size - 1)
    p0, p1 = prof[rows, i - 1], prof[rows, i]
    edge = rho[i - 1] + (p0 - half) / np.where(p0 == p1, 1.0, p0 - p1) * (rho[i] - rho[i - 1])
    ey, ex = edge * np.sin(ang), edge * np.cos(ang)
    for _ in range(CIRCLE_REFITS):
        if ok.sum() < n_rays // 2:
            return axis, r_px
        cy, cx, r = _fit_circle(ey[ok], ex[ok])
        ok &= np.abs(np.hypot(ey - cy, ex - cx) - r) <= EDGE_RAY_OUTLIER_PX
    if (ok.sum() < n_rays // 2 or np.hypot(cy, cx) > EDGE_MAX_CHANGE_R * r_px
            or abs(r - r_px) > EDGE_MAX_CHANGE_R * r_px):
        return axis, r_px
    return (ay, by + cy, ax, bx + cx), r


def streak_free_slices(means: np.ndarray, k: float, min_hu: float) -> np.ndarray:
    """Which of a rod's slice means (HU) a streak leaves alone: those within ``max(k * robust SD,
    min_hu)`` of their median.

    The robust SD (:func:`~bmdpipe.robust.robust_sd`) takes a smooth drift along the rod (the real
    Calgary rods drift by up to 27 HU over 9 slices) as spread and keeps it. A streak shifting a run
    of more than a third of the slices by less than about ``k`` robust SDs stays in: it widens the
    spread it is judged by (see the README's calibration accuracy figures).
    """
    m = np.asarray(means, dtype=float)
    med = float(np.median(m))
    return np.abs(m - med) <= max(k * robust_sd(m, med), min_hu)


def banded_slices(arr: np.ndarray, ks: np.ndarray, centres: np.ndarray, reach_px: float, k: float) -> np.ndarray:
    """Which slices a streak crosses the rod's core in, told by the band it leaves, not by the mean.

    A streak (metal, photon starvation) is a band across the image in a run of slices; a drift of
    the rod's HU along z (the real Calgary rods: up to 27 HU over 9 slices) or shading fixed in the
    scan is not. Each slice's square of half-side ``reach_px`` around the rod's centre (the rod and
    the pad around it: what does not change from slice to slice, its edge included, cancels) minus
    the per-pixel median over all slices (robust while the streak takes fewer than half of them) is
    smoothed over a pixel; its spread is the noise alone, the same on every slice, unless a band
    crosses it (:func:`raised_spread`).

    Parameters
    ----------
    arr : ndarray (K, J, I)
        CT, HU.
    ks, centres : ndarray (S,), (S, 2)
        Slices measured and the rod's centre (row, column; px) on each.
    reach_px : float
        Half-side of the square, px.
    k : float

    Returns
    -------
    ndarray of bool (S,)
    """
    half = int(np.floor(reach_px))
    if len(ks) < 5 or half < 2:
        return np.zeros(len(ks), dtype=bool)
    g = np.arange(-half, half + 1, dtype=float)
    yy, xx = np.meshgrid(g, g, indexing="ij")
    patches = np.stack([ndi.map_coordinates(arr[int(kk)], [c[0] + yy, c[1] + xx], order=1, mode="nearest")
                        for kk, c in zip(ks, centres)])
    residual = ndi.gaussian_filter(patches - np.median(patches, axis=0), (0.0, 1.0, 1.0))
    return raised_spread(residual[:, 1:-1, 1:-1].reshape(len(ks), -1).std(axis=1), k)  # clear of the border


def raised_spread(spread: np.ndarray, k: float) -> np.ndarray:
    """Which slices' spread (HU; of a residual that is noise alone unless a band crosses it) exceeds
    the median by more than ``k`` robust SD, read from the spreads below the median (a band only
    raises a spread, so those are clean while fewer than half the slices are crossed)."""
    spread = np.asarray(spread, dtype=float)
    med = float(np.median(spread))
    below = med - spread[spread <= med]
    return spread > med + k * max(MAD_TO_SD * float(np.median(below)), 1e-6)


def _measure_rod(arr: np.ndarray, t: dict, px_mm: float, s: CalibrationSettings, pad_hu: float, *,
                 core_px: float | None = None, refine: bool = True) -> RodMeasurement | None:
    """A rod track measured on every slice where it is visible (``core_px``: a fixed core radius;
    ``refine``: take centre and radius from the rod's edge first)."""
    ks = np.array([c.k_center for c in t["circles"]])
    ys = np.array([c.y for c in t["circles"]])
    xs = np.array([c.x for c in t["circles"]])
    if len(ks) >= 2 and np.ptp(ks) > 0:
        ay, by = np.polyfit(ks, ys, 1)
        ax, bx = np.polyfit(ks, xs, 1)
    else:
        ay, by, ax, bx = 0.0, float(ys.mean()), 0.0, float(xs.mean())
    axis, r_px = (float(ay), float(by), float(ax), float(bx)), t["r_mm"] / px_mm
    margin_px = s.rod_edge_margin_mm / px_mm
    ref = t["hu_ref"]

    def core_radius(r: float) -> float:
        return core_px if core_px is not None else max(1.0, min(s.rod_core_fraction * r, r - margin_px))

    samples = _core_samples(arr, axis, r_px, core_radius(r_px), ref, pad_hu, s)
    if samples and refine:  # the detected circle is pixel-quantised: take centre and radius from the edge
        axis2, r2 = refine_rod_edge(arr, [k for k, *_ in samples], axis, r_px, s.rod_min_contrast_hu)
        refined = _core_samples(arr, axis2, r2, core_radius(r2), ref, pad_hu, s)
        if refined:
            axis, r_px, samples = axis2, r2, refined
    core_px = core_radius(r_px)
    ay, by, ax, bx = axis
    used_k = [k for k, *_ in samples]
    cores = [(v, dy, dx) for _, v, dy, dx in samples]
    means = [float(v.mean()) for v, _, _ in cores]
    sds = [float(v.std()) for v, _, _ in cores]
    counts = [int(v.size) for v, _, _ in cores]
    if not means:
        return None  # seen in slab averages but in no single slice: not a rod
    means_a = np.array(means)
    ks_a = np.array(used_k, dtype=float)
    banded = banded_slices(arr, ks_a, np.column_stack([ay * ks_a + by, ax * ks_a + bx]), BAND_REACH_R * r_px,
                           s.rod_band_k)
    ok = streak_free_slices(means_a, s.rod_streak_k, s.rod_streak_min_hu) & ~banded
    if not ok.any():  # the two tests disagree on every slice: the band test keeps at least half
        ok = ~banded
    w = np.array(counts)[ok]
    mean = float(np.average(means_a[ok], weights=w))
    sd = float(np.sqrt(np.average(np.array(sds)[ok] ** 2, weights=w)))
    kk = np.array(used_k)[ok]
    kc = 0.5 * (kk.min() + kk.max())
    v, dy, dx = (np.concatenate(c) for c in zip(*(c for c, use in zip(cores, ok) if use)))  # slices used
    return RodMeasurement(
        center_kji=(float(kc), float(ay * kc + by), float(ax * kc + bx)),
        axis_ji_per_k=(float(ay), float(ax)),
        radius_mm=float(r_px * px_mm),
        core_radius_mm=float(core_px * px_mm),
        hu_mean=mean,
        hu_sd=sd,
        n_voxels=int(w.sum()),
        n_slices=int(ok.sum()),
        k_range=(int(kk.min()), int(kk.max())),
        slice_means=means_a[ok],
        score=float(t["score"]),
        core_gradient_hu=core_gradient_hu(v, dy, dx, core_px),
        n_outlier_slices=int((~ok).sum()),
    )


def _rod_tracks(arr: np.ndarray, dz: float, px: float, s: CalibrationSettings) -> list[dict]:
    """Round uniform objects seen in enough slabs: their circles linked across slabs, mean position
    (px), radius (mm), detection score and core HU in the first slab's mean image."""
    slabs = _slab_bounds(arr.shape[0], dz, s.rod_slab_mm)
    slab_imgs = [np.clip(arr[a:b], AIR_HU, None).mean(0) for a, b in slabs]
    circles = [c for si, (a, b) in enumerate(slabs)
               for c in _circles_in_image(slab_imgs[si], px, s, 0.5 * (a + b - 1), si)
               if _candidate_ok(slab_imgs[si], c, s)]
    tracks = []
    for t in _link(circles):
        if len(t) < max(1, int(np.ceil(s.rod_min_slab_fraction * len(slabs)))) and len(slabs) > 2:
            continue
        ref = float(np.median(disc_values(slab_imgs[t[0].slab], t[0].y, t[0].x, t[0].r_px * s.rod_core_fraction)))
        tracks.append({
            "circles": t,
            "y": float(np.mean([c.y for c in t])),
            "x": float(np.mean([c.x for c in t])),
            "r_mm": float(np.median([c.r_px for c in t])) * px,
            "score": float(np.mean([c.score for c in t])),
            "hu_ref": ref,
        })
    return tracks


def _measured_tracks(arr: np.ndarray, tracks: list[dict], px: float, s: CalibrationSettings) -> list[dict]:
    """The tracks whose rod is measured in enough slices (a rod runs through the scan), each with
    its ``rod`` and a score weighted by the share of slices it is seen in."""
    kept = []
    min_slices = max(1, min(s.rod_min_slices, arr.shape[0]), int(np.ceil(s.rod_min_z_fraction * arr.shape[0])))
    for t in tracks:
        m = _measure_rod(arr, t, px, s, s.rod_padding_hu)
        if m is None or m.n_slices < min_slices:
            continue
        kept.append({**t, "rod": m, "score": t["score"] * m.n_slices / arr.shape[0]})
    return kept


def mean_slice(arr: np.ndarray) -> np.ndarray:
    """The scan's mean axial slice (HU), padding below ``AIR_HU`` counted as air."""
    return np.clip(arr, AIR_HU, None).mean(0)


def measure_rod_at(arr: np.ndarray, img: np.ndarray, centre_kji, radius_px: float, px_mm: float,
                   s: CalibrationSettings, *, core_px: float | None = None) -> RodMeasurement | None:
    """Measure a rod of known centre (k, j, i) and radius (px) that shows no edge, on every slice where
    its core (``core_px``, default the usual core) matches the core of the scan's mean slice ``img``
    (:func:`mean_slice`)."""
    k, y, x = centre_kji
    core = disc_values(img, y, x, core_px if core_px is not None else radius_px * s.rod_core_fraction)
    track = {"circles": [_Circle(0, float(k), float(y), float(x), float(radius_px), 0.0)],
             "r_mm": radius_px * px_mm, "score": 0.0, "hu_ref": float(np.median(core))}
    return _measure_rod(arr, track, px_mm, s, s.rod_padding_hu, core_px=core_px, refine=False)


def find_rows(volume: Volume, settings: CalibrationSettings | None = None) -> list[list[RodMeasurement]]:
    """Rows of rods found in a volume, best first (more rods, then stronger detections).

    Parameters
    ----------
    volume : Volume
        CT in HU. In-plane pixels are assumed square (the mean of the two is used).
    settings : CalibrationSettings
        Rod-finding thresholds (``rod_*``).

    Returns
    -------
    list of list of RodMeasurement
        At most ``rod_max_groups`` rows of at least two rods each, each sorted by column index
        (display order only); empty when none.
    """
    s = settings or CalibrationSettings()
    arr = np.asarray(volume.array, dtype=np.float32)
    dz, dy, dx = volume.spacing
    px = 0.5 * (dy + dx)
    kept = _measured_tracks(arr, _rod_tracks(arr, dz, px, s), px, s)
    groups = _candidate_groups(kept, s, px, mean_slice(arr))
    rows = [sorted((kept[i]["rod"] for i in g), key=lambda r: r.center_kji[2]) for g in groups[: s.rod_max_groups]]
    return [r for r in rows if len(r) >= 2]
