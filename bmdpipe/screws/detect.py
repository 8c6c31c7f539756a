"""Metal segmentation and pedicle-screw detection on CT.

A screw is found as a straight run of metal voxels: the metal mask (HU above
``metal_threshold_hu``; saturated 3071 HU scanners and extended-HU scanners alike) is split
into connected components, and each component into straight cylinders by sequential RANSAC
line fitting, so that screws touching a rod or each other become separate objects. Each run
is classified: screws are straight, cylindrical and run within ``max_axis_tilt_deg`` of the
axial plane; rods run cranio-caudally; cages and cement are bulky, not cylindrical.

A cement-augmented screw is a clean cylinder over its proximal shaft and wrapped in a wider
sleeve of cement over its distal part. On a 3071-clipped scale cement and titanium read alike
(and on an extended scale they differ by little: 4000-5500 HU cement against 5000-7000 HU
titanium on the physics suite), so the sleeve is found by geometry: a bulky run whose head end
is a clean shaft is a screw, and along every screw the sleeve is where the bright material
reaches ``cement_min_thickness_mm`` farther from the axis than on its clean shaft, all round
(:func:`find_sleeve`). Its axis and thread diameter then come from the clean shaft alone.

All geometry is LPS mm (see :mod:`bmdpipe.volume`); the side of a screw comes from LPS x
(+x = patient's left), never from array index order.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace
from typing import Sequence

import numpy as np
from scipy import ndimage

from ..config import ScrewSettings
from ..results import Screw, Vertebra
from ..volume import Volume
from .assign import assign_screws, pedicle_path_problem

__all__ = ["metal_mask", "saturation_level", "MetalRun", "find_metal_runs", "detect_screws",
           "screw_frame", "find_sleeve", "mantle_thickness"]

logger = logging.getLogger(__name__)


def saturation_level(values: np.ndarray, *, metal_threshold_hu: float, min_fraction: float,
                     min_voxels: int) -> float | None:
    """HU at which the scanner clipped metal, or None for an extended-HU (unclipped) image.

    A clipped image holds many metal voxels at exactly its maximum value (3071 HU on a
    12-bit scale); an extended scale's metal values spread.

    Parameters
    ----------
    values : ndarray of float
        HU values (an image, or rays sampled around a screw).
    metal_threshold_hu : float
        Values above this are metal candidates (HU).
    min_fraction, min_voxels : float, int
        The scale is clipped when at least this share of the metal values, and this many, sit
        at the maximum (within 0.5 HU).
    """
    metal = values[values > metal_threshold_hu]
    if metal.size == 0:
        return None
    top = float(metal.max())
    if np.count_nonzero(metal >= top - 0.5) >= max(min_voxels, min_fraction * metal.size):
        return top
    return None


def metal_mask(image: np.ndarray, threshold_hu: float) -> np.ndarray:
    """Boolean mask of metal voxels (HU > ``threshold_hu``); works on clipped and extended scales."""
    return np.asarray(image) > threshold_hu


@dataclass(frozen=True)
class MetalRun:
    """One straight metal run found in a component (LPS mm).

    Attributes
    ----------
    start_lps, end_lps : (3,) ndarray
        Ends of the run along its axis (outer ends of the metal mask, bloom included).
    axis : (3,) ndarray
        Unit vector from start to end.
    n_points : int
        Metal voxels assigned to the run.
    radius_mm : float
        RMS-based radius of the voxels around the axis (bloomed metal), mm.
    bulk_fraction : float
        Median over 2-mm slabs along the run of the metal voxels in a shell just outside the
        run's cylinder relative to the run's own (large for cages, cement and blocks).
    kind : str
        ``'screw'`` (cement-augmented ones included), ``'rod'``, ``'bulky'`` (cage/cement/other)
        or ``'short'``.
    """

    start_lps: np.ndarray
    end_lps: np.ndarray
    axis: np.ndarray
    n_points: int
    radius_mm: float
    bulk_fraction: float
    kind: str

    @property
    def length_mm(self) -> float:
        return float(np.linalg.norm(self.end_lps - self.start_lps))


def _pca_axis(points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    c = points.mean(axis=0)
    _, _, vt = np.linalg.svd(points - c, full_matrices=False)
    return c, vt[0]


def _line_dist2(points: np.ndarray, c: np.ndarray, a: np.ndarray) -> np.ndarray:
    d = points - c
    t = d @ a
    return np.einsum("ij,ij->i", d, d) - t * t


def _longest_run(t: np.ndarray, gap_mm: float) -> tuple[float, float]:
    ts = np.sort(t)
    breaks = np.flatnonzero(np.diff(ts) > gap_mm)
    starts = np.r_[0, breaks + 1]
    ends = np.r_[breaks, ts.size - 1]
    counts = ends - starts + 1
    k = int(np.argmax(counts))
    return float(ts[starts[k]]), float(ts[ends[k]])


#: the metal's edge is fitted on the shaft's middle (shares of the run from head to tip): away from
#: the tulip head (~10-13 mm, science.md) and the tapered tip
SHAFT_FIT_RANGE = (0.45, 0.8)
#: ends are searched up to this far beyond the run's thresholded ends (bloom, partial volume), mm
END_SEARCH_MM = 4.0
#: the tip is searched beyond this share of the run, an entry without a head before ENTRY_SEARCH_TO
TIP_SEARCH_FROM = 0.7
ENTRY_SEARCH_TO = 0.3
#: a tulip head is searched in the run's first share (heads sit at the posterior end)
HEAD_SEARCH_TO = 0.6
#: a head is metal in a ring this far outside the shaft's radius, mm (tulip ~10-13 mm wide vs a
#: 5.5-7.5 mm shaft), searched in slabs of HEAD_SLAB_MM
HEAD_RING_MM = (1.0, 2.5)
HEAD_SLAB_MM = 1.0
#: the axis is refined from voxels up to this far beyond the fitted metal radius, mm
AXIS_RING_MM = 1.5
#: the axis refinement is repeated, each pass re-selecting the edge voxels about the axis it left,
#: until neither shaft end moves by this much: a tenth of the 0.3-0.5 mm residual offsets left by a
#: single pass behind rod-pulled RANSAC lines (3-4 deg off on the README demo with fusion rods), mm
AXIS_CONVERGED_MM = 0.03
#: ... or at most this many passes (the demo's fusion-rod screws converge in 2-3, the rest in 1-2)
AXIS_MAX_PASSES = 6
#: the axis fit starts this far past the tulip head's end: the head's blur (SD <= 0.7 mm, clinical
#: body kernels; 3 SD) and a fusion rod through the head stay out of the shaft's edge zone, mm
HEAD_CLEARANCE_MM = 2.0
#: the shaft left for the axis fit is at least this long, else the configured range is used, mm
#: (two thread pitches of 2.5-3.0 mm: the tilt of the axis stays determined)
MIN_AXIS_SPAN_MM = 6.0
#: the grid step of the end search, mm
END_STEP_MM = 0.05
#: RANSAC hypotheses scored together (memory: chunk x points x 3 doubles)
_HYPOTHESIS_CHUNK = 64
#: principal-axis refits of a line's inliers before its run is cut
LINE_REFITS = 3
#: a run's members reach this far beyond its first run of inliers along the axis, mm
RUN_END_SLACK_MM = 1.0
#: the bulk test compares shell and run voxels in slabs of this length along the run: a screw's
#: tulip head (~10-13 mm, science.md) at one end does not make a screw bulky, mm
BULK_SLAB_MM = 2.0
#: sectors around the axis in which a sleeve's cover is counted (30 degrees each)
SLEEVE_SECTORS = 12
#: a sector of a metal run's shell counts as covered with at least this share of the mean voxels per sector
SLEEVE_SECTOR_MIN_SHARE = 0.25
#: the sleeve is searched in slabs of this length along the axis and radial bins of this width, mm
SLEEVE_SLAB_MM = 1.0
SLEEVE_RADIAL_STEP_MM = 0.5
#: the clean shaft a sleeve is compared with lies in this first share of the run (the tapered tip,
#: thinner than the shaft, stays out), from head to tip
SLEEVE_REFERENCE_TO = 0.75
#: a mantle's outer surface is where its radial profile falls half-way from the cement to the bone;
#: the cement's level is read from this far beyond the thread crests (past the metal's blur), mm, in
#: radial bins of MANTLE_RADIAL_STEP_MM
MANTLE_PLATEAU_FROM_MM = 1.0
MANTLE_RADIAL_STEP_MM = 0.25


def _best_line(p: np.ndarray, settings: ScrewSettings, rng: np.random.Generator):
    """Of ``ransac_hypotheses`` random lines through two points at least half a run apart, the one with
    the most points within ``inlier_radius_mm``, refitted to its inliers: (centre, unit axis), or None."""
    r2 = settings.inlier_radius_mm * settings.inlier_radius_mm
    n_h = settings.ransac_hypotheses
    i1 = rng.integers(0, len(p), n_h)
    i2 = rng.integers(0, len(p), n_h)
    d = p[i2] - p[i1]
    norm = np.linalg.norm(d, axis=1)
    ok = norm > settings.min_run_length_mm / 2
    if not np.any(ok):
        return None
    c = p[i1[ok]]
    a = d[ok] / norm[ok, None]
    best_count, best = -1, None
    for s in range(0, len(c), _HYPOTHESIS_CHUNK):  # (H, N) squared distances of every point to every line
        cc, aa = c[s:s + _HYPOTHESIS_CHUNK], a[s:s + _HYPOTHESIS_CHUNK]
        diff = p[None, :, :] - cc[:, None, :]
        t = np.einsum("hnk,hk->hn", diff, aa)
        d2 = np.einsum("hnk,hnk->hn", diff, diff) - t * t
        cnt = np.count_nonzero(d2 < r2, axis=1)
        k = int(np.argmax(cnt))
        if cnt[k] > best_count:
            best_count, best = int(cnt[k]), (cc[k], aa[k])
    c0, a0 = best
    for _refine in range(LINE_REFITS):
        inl = _line_dist2(p, c0, a0) < r2
        if np.count_nonzero(inl) < 3:
            break
        c0, a0 = _pca_axis(p[inl])
    return c0, a0


def _run_members(p: np.ndarray, c0: np.ndarray, a0: np.ndarray, settings: ScrewSettings):
    """The line's longest run of inliers without a gap of ``max_gap_mm``, its axis refitted: members,
    axis (centre, unit vector), their positions along it, their squared distances and its ends (mm)."""
    r2 = settings.inlier_radius_mm * settings.inlier_radius_mm
    inl = _line_dist2(p, c0, a0) < r2
    t = (p - c0) @ a0
    t0, t1 = _longest_run(t[inl], settings.max_gap_mm)
    member = inl & (t >= t0) & (t <= t1)
    if np.count_nonzero(member) >= 3:
        c0, a0 = _pca_axis(p[member])
        t = (p - c0) @ a0
        d2 = _line_dist2(p, c0, a0)
        tm = t[member]
        member = (d2 < r2) & (t >= tm.min() - RUN_END_SLACK_MM) & (t <= tm.max() + RUN_END_SLACK_MM)
        t0, t1 = float(t[member].min()), float(t[member].max())
    else:
        d2 = _line_dist2(p, c0, a0)
    return member, c0, a0, t, d2, t0, t1


def _slab_bulk(pts: np.ndarray, c0, a0, t_member: np.ndarray, t0: float, t1: float, settings: ScrewSettings):
    """Per slab of ``BULK_SLAB_MM`` along the run: (metal voxels in a shell around the run) / (run voxels).

    The shell counts ALL the component's voxels (also those already assigned to other runs), so
    that the remnants of a block, a cage or cement are not mistaken for screws.

    Returns
    -------
    ratios : (S,) ndarray
        Shell / run voxels of each slab, from ``t0`` to ``t1``.
    shell_t, shell_offsets : (K,) and (K, 3) ndarray
        Positions along the run (mm) and perpendicular offsets (LPS mm) of the shell's voxels.
    """
    r_in = settings.inlier_radius_mm
    t_all = (pts - c0) @ a0
    d2_all = _line_dist2(pts, c0, a0)
    shell = (d2_all >= r_in * r_in) & (d2_all < (r_in + settings.bulk_shell_mm) ** 2) & (t_all >= t0) & (t_all <= t1)
    slab_edges = np.arange(t0, t1 + BULK_SLAB_MM, BULK_SLAB_MM)
    n_sh = np.histogram(t_all[shell], slab_edges)[0]
    n_in = np.histogram(t_member, slab_edges)[0]
    offsets = pts[shell] - c0 - np.outer(t_all[shell], a0)
    return n_sh / np.maximum(n_in, 1), t_all[shell], offsets


def _longest_true(flags: np.ndarray) -> tuple[int, int]:
    """First index and length of the longest stretch of True in ``flags`` ((0, 0) when none)."""
    padded = np.r_[False, np.asarray(flags, dtype=bool), False].astype(np.int8)
    d = np.diff(padded)
    starts, ends = np.flatnonzero(d == 1), np.flatnonzero(d == -1)
    if starts.size == 0:
        return 0, 0
    k = int(np.argmax(ends - starts))
    return int(starts[k]), int(ends[k] - starts[k])


def _sleeve_sector(offsets: np.ndarray, axis: np.ndarray) -> np.ndarray:
    """Sector (0 ... ``SLEEVE_SECTORS`` - 1) around ``axis`` of each perpendicular offset (LPS mm)."""
    u, v = screw_frame(axis)
    theta = np.arctan2(offsets @ v, offsets @ u)
    return ((theta + np.pi) / (2 * np.pi) * SLEEVE_SECTORS).astype(int) % SLEEVE_SECTORS


def _sector_cover(offsets: np.ndarray, axis: np.ndarray) -> float:
    """Share of ``SLEEVE_SECTORS`` sectors around ``axis`` holding at least ``SLEEVE_SECTOR_MIN_SHARE`` of the
    mean number of the offsets per sector (a line pulled towards a plate beside a shaft puts a few of the
    shaft's own voxels into the far sectors: they do not make a sleeve)."""
    if len(offsets) == 0:
        return 0.0
    counts = np.bincount(_sleeve_sector(offsets, axis), minlength=SLEEVE_SECTORS)
    return float(np.mean(counts >= SLEEVE_SECTOR_MIN_SHARE * counts.mean()))


def _sleeved_screw_run(ratios: np.ndarray, shell_t: np.ndarray, shell_offsets: np.ndarray, a0: np.ndarray,
                       t0: float, settings: ScrewSettings) -> bool:
    """A bulky run that is a cement-augmented screw: from the head end (posterior, larger LPS y) a clean
    shaft of at least ``cement_min_clean_shaft_mm`` (slabs not bulky), then, to the tip end, a mostly bulky
    stretch of at least ``cement_min_sleeve_mm`` whose shell voxels cover ``cement_min_circumference`` of the
    sectors around the axis (a sleeve, not a plate or a cage's wall beside a line)."""
    head_first = a0[1] < 0  # t grows towards the head when the axis points posteriorly
    order = np.arange(ratios.size) if head_first else np.arange(ratios.size)[::-1]
    clean = ratios[order] <= settings.max_bulk_fraction
    first, n_clean = _longest_true(clean)
    n_sleeve = ratios.size - (first + n_clean)
    if (n_clean * BULK_SLAB_MM < settings.cement_min_clean_shaft_mm
            or n_sleeve * BULK_SLAB_MM < settings.cement_min_sleeve_mm):
        return False
    distal = order[first + n_clean:]
    if np.median(ratios[distal]) <= settings.max_bulk_fraction:
        return False
    lo, hi = t0 + distal.min() * BULK_SLAB_MM, t0 + (distal.max() + 1) * BULK_SLAB_MM
    inside = (shell_t >= lo) & (shell_t <= hi)
    return _sector_cover(shell_offsets[inside], a0) >= settings.cement_min_circumference


def _run_kind(length: float, n_member: int, bulk: float, tilt_deg: float, min_pts: int,
              settings: ScrewSettings) -> str:
    """``short``, ``bulky`` (cage, cement, block), ``rod`` (too long or cranio-caudal) or ``screw``."""
    if length < settings.min_run_length_mm or n_member < min_pts:
        return "short"
    if bulk > settings.max_bulk_fraction:
        return "bulky"
    if tilt_deg > settings.max_axis_tilt_deg or length > settings.max_length_mm:
        return "rod"
    return "screw"


def find_metal_runs(points_lps: np.ndarray, settings: ScrewSettings, *, rng: np.random.Generator) -> list[MetalRun]:
    """Split one metal component into straight runs by sequential RANSAC line fitting.

    Parameters
    ----------
    points_lps : (N, 3) ndarray
        LPS positions (mm) of the component's metal voxels.
    settings : ScrewSettings
    rng : numpy.random.Generator
        Seeded generator (results are reproducible for a given seed).

    Returns
    -------
    list of MetalRun
        Every run of at least ``min_run_length_mm`` (any kind); voxels of one run are removed
        before the next is searched.
    """
    pts = np.asarray(points_lps, dtype=float)
    remaining = np.ones(len(pts), dtype=bool)
    runs: list[MetalRun] = []
    min_pts = max(10, int(settings.min_run_voxels))
    for _ in range(settings.max_runs_per_component):
        idx = np.flatnonzero(remaining)
        if idx.size < min_pts:
            break
        p = pts[idx]
        line = _best_line(p, settings, rng)
        if line is None:
            break
        member, c0, a0, t, d2, t0, t1 = _run_members(p, *line, settings)
        n_member = int(np.count_nonzero(member))
        ratios, shell_t, shell_offsets = _slab_bulk(pts, c0, a0, t[member], t0, t1, settings)
        bulk = float(np.median(ratios)) if ratios.size else 0.0
        radius = float(np.sqrt(2.0 * d2[member].mean())) if n_member else 0.0
        tilt = float(np.degrees(np.arcsin(min(1.0, abs(a0[2])))))  # angle to the axial plane
        kind = _run_kind(t1 - t0, n_member, bulk, tilt, min_pts, settings)
        if kind == "bulky" and _sleeved_screw_run(ratios, shell_t, shell_offsets, a0, t0, settings):
            kind = _run_kind(t1 - t0, n_member, 0.0, tilt, min_pts, settings)  # a screw in its cement mantle
        runs.append(MetalRun(start_lps=c0 + t0 * a0, end_lps=c0 + t1 * a0, axis=a0.copy(),
                             n_points=n_member, radius_mm=radius, bulk_fraction=bulk, kind=kind))
        if n_member == 0:
            break
        remaining[idx[member]] = False
        if kind == "short" and n_member < min_pts:
            break  # nothing straight left worth a line: stop searching this component
    return runs


def screw_frame(axis: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Two unit vectors ``(u, v)`` perpendicular to ``axis`` (LPS); ``u`` lies in the axial plane.

    Angle ``theta`` around the screw is measured from ``u`` towards ``v``.
    """
    a = np.asarray(axis, dtype=float) / np.linalg.norm(axis)
    ref = np.array([0.0, 0.0, 1.0]) if abs(a[2]) < 0.9 else np.array([1.0, 0.0, 0.0])
    u = np.cross(a, ref)
    u /= np.linalg.norm(u)
    v = np.cross(a, u)
    return u, v


def find_sleeve(volume: Volume, start: np.ndarray, end: np.ndarray,
                settings: ScrewSettings) -> tuple[float, float] | None:
    """The stretch of a screw wrapped in a sleeve of cement (or other dense material), from the image.

    In slabs of ``SLEEVE_SLAB_MM`` along the axis and ``SLEEVE_SECTORS`` sectors around it, the bright
    material's reach is the distance from the axis out to the first radial bin whose mean falls below
    ``cement_min_hu``. The clean shaft is the stretch of ``cement_min_clean_shaft_mm`` (within the run's first
    ``SLEEVE_REFERENCE_TO``) where the median reach is least: the metal and its blur alone. A slab is
    sleeved when at least ``cement_min_circumference`` of its sectors reach ``cement_min_thickness_mm``
    farther; the sleeve is the longest stretch of sleeved slabs beyond the clean shaft's start, at least
    ``cement_min_sleeve_mm`` long.

    Parameters
    ----------
    volume : Volume
    start, end : (3,) ndarray
        Axis ends, head end first, LPS mm.
    settings : ScrewSettings

    Returns
    -------
    (from_mm, to_mm) or None
        Positions of the sleeve's ends along ``start`` -> ``end``, mm; None without a sleeve.
    """
    from .esf import voxels_near_axis

    length = float(np.linalg.norm(end - start))
    axis = (end - start) / length
    r_max = settings.cement_search_radius_mm
    t, r, offsets, vals = voxels_near_axis(volume, start, end, t_range_mm=(0.0, length), r_max_mm=r_max)
    n_slab = max(int(np.ceil(length / SLEEVE_SLAB_MM)), 1)
    n_rad = int(np.ceil(r_max / SLEEVE_RADIAL_STEP_MM)) + 1
    sector = _sleeve_sector(offsets, axis)
    slab = np.clip((t / SLEEVE_SLAB_MM).astype(int), 0, n_slab - 1)
    cell = (slab * SLEEVE_SECTORS + sector) * n_rad + np.clip((r / SLEEVE_RADIAL_STEP_MM).astype(int), 0, n_rad - 1)
    size = n_slab * SLEEVE_SECTORS * n_rad
    count = np.bincount(cell, minlength=size)
    total = np.bincount(cell, weights=vals, minlength=size)
    dim = (count > 0) & (total < settings.cement_min_hu * count)  # empty bins neither end nor extend the reach
    dim = dim.reshape(n_slab, SLEEVE_SECTORS, n_rad)
    reach = np.where(dim.any(axis=2), dim.argmax(axis=2), n_rad) * SLEEVE_RADIAL_STEP_MM  # (slab, sector) mm
    window = int(np.ceil(settings.cement_min_clean_shaft_mm / SLEEVE_SLAB_MM))
    last = int(SLEEVE_REFERENCE_TO * n_slab) - window
    if last < 0:
        return None
    slab_reach = np.median(reach, axis=1)
    window_reach = [np.median(slab_reach[k:k + window]) for k in range(last + 1)]
    ref = int(np.argmin(window_reach))
    cover = np.mean(reach >= window_reach[ref] + settings.cement_min_thickness_mm, axis=1)
    sleeved = cover >= settings.cement_min_circumference
    sleeved[:ref] = False
    first, n = _longest_true(sleeved)
    if n * SLEEVE_SLAB_MM < settings.cement_min_sleeve_mm:
        return None
    return first * SLEEVE_SLAB_MM, min((first + n) * SLEEVE_SLAB_MM, length)


def mantle_thickness(volume: Volume, start: np.ndarray, end: np.ndarray, sleeve: tuple[float, float],
                     crest_radius_mm: float, settings: ScrewSettings) -> float | None:
    """Thickness of a cement mantle beyond the thread crests, mm, from the sleeve's radial profile.

    Over the sleeve (its ends' ``cement_margin_mm`` left out) the median HU at each distance from the axis
    is taken; the cement's level is the median from ``MANTLE_PLATEAU_FROM_MM`` beyond the crests out to where
    the profile first falls below ``cement_min_hu``, the bone's that of the outermost 2 mm searched. The
    mantle's surface is the outermost radius where the profile stands half-way between them.

    Returns None when the profile shows no such fall (the sleeve reaches the search radius).

    Notes
    -----
    On a 3071-clipped scale the cement's level is the clip, below its true HU, so the half-way level sits
    lower and the surface reads up to about half the blur's SD (~0.3-0.5 mm) outwards.
    """
    from .esf import voxels_near_axis

    lo, hi = sleeve[0] + settings.cement_margin_mm, sleeve[1] - settings.cement_margin_mm
    if hi <= lo:
        lo, hi = sleeve
    r_max = settings.cement_search_radius_mm
    _, r, _, vals = voxels_near_axis(volume, start, end, t_range_mm=(lo, hi), r_max_mm=r_max)
    if r.size == 0:
        return None
    bone = float(np.median(vals[r > r_max - 2.0]))
    k = (r / MANTLE_RADIAL_STEP_MM).astype(int)
    bins = np.unique(k)
    profile = ndimage.median(vals, labels=k, index=bins)
    radii = (bins + 0.5) * MANTLE_RADIAL_STEP_MM
    beyond = radii >= crest_radius_mm + MANTLE_PLATEAU_FROM_MM
    fall = np.flatnonzero(beyond & (profile < settings.cement_min_hu))
    if fall.size == 0:
        return None
    inner = beyond & (radii < radii[fall[0]])
    cement = float(np.median(profile[inner])) if inner.any() else float(profile[fall[0]])
    level = 0.5 * (cement + bone)
    above = np.flatnonzero(profile >= level)
    if above.size == 0 or above[-1] + 1 >= profile.size:
        return None
    i = above[-1]  # the outermost bin still half-way up; the surface lies between it and the next
    r_surface = radii[i] + (profile[i] - level) / (profile[i] - profile[i + 1]) * (radii[i + 1] - radii[i])
    return float(r_surface - crest_radius_mm)


def _fit_end(t: np.ndarray, vals: np.ndarray, edge, lo: float, hi: float, sign: float) -> float:
    """Position of one metal end along the axis by a grid search of the blurred-step model.

    ``sign`` +1: metal for ``t < end`` (far end); -1: metal for ``t > end`` (near end).
    """
    from .esf import step_1d as step

    cand = np.arange(lo, hi + 1e-9, END_STEP_MM)
    if cand.size == 0 or t.size == 0:
        return float("nan")
    model = edge.background_hu + edge.amplitude_hu * step(sign * (t[None, :] - cand[:, None]), 0.0, edge.sigma_mm)
    if edge.clip_hu is not None:
        model = np.minimum(model, edge.clip_hu)
    sse = ((model - vals[None, :]) ** 2).sum(axis=1)
    return float(cand[int(np.argmin(sse))])


def _head_end(t: np.ndarray, r: np.ndarray, vals: np.ndarray, radius: float, settings: ScrewSettings,
              lo: float, hi: float, from_low: bool) -> float | None:
    """End of a screw head (tulip) along the axis: metal in a ring just outside the shaft.

    Scans 1-mm slabs from the head end (``from_low``: from ``lo`` upwards) and returns the
    axis position where the ring stops being mostly metal, or None when there is no head.
    """
    ring = (r > radius + HEAD_RING_MM[0]) & (r < radius + HEAD_RING_MM[1])
    edges = np.arange(lo, hi + HEAD_SLAB_MM, HEAD_SLAB_MM)
    if edges.size < 3 or not ring.any():
        return None
    which = np.digitize(t[ring], edges) - 1
    n = np.bincount(which[(which >= 0) & (which < edges.size - 1)], minlength=edges.size - 1)
    m_ = np.bincount(which[(which >= 0) & (which < edges.size - 1)],
                     weights=(vals[ring] > settings.metal_threshold_hu)[(which >= 0) & (which < edges.size - 1)],
                     minlength=edges.size - 1)
    frac = np.where(n > 0, m_ / np.maximum(n, 1), 0.0)
    head = frac > 0.5
    order = np.arange(head.size) if from_low else np.arange(head.size)[::-1]
    if not head[order[0]] and not (head.size > 1 and head[order[1]]):
        return None
    k_last = None
    for k in order:
        if head[k]:
            k_last = k
        elif k_last is not None:
            break
    if k_last is None:
        return None
    return float(edges[k_last + 1]) if from_low else float(edges[k_last])


def _shaft_edge(volume: Volume, start: np.ndarray, end: np.ndarray, settings: ScrewSettings,
                clip_hu: float | None, shaft_to: float | None = None):
    """Edge-spread fit of the shaft's middle (``SHAFT_FIT_RANGE``) about the axis ``start`` -> ``end``.

    With ``shaft_to`` (mm along the axis: where a cement sleeve's margin begins) the fit covers the clean
    shaft before it instead: from the configured ``axis_fit_range`` start (or ``MIN_AXIS_SPAN_MM`` before
    ``shaft_to``, when that is earlier) to ``shaft_to``.

    Parameters
    ----------
    volume : Volume
    start, end : (3,) ndarray
        Axis ends (head end first), LPS mm.
    settings : ScrewSettings
    clip_hu : float or None
        Saturation level of the image, HU (None = extended scale).
    shaft_to : float or None
        End of the clean shaft along the axis, mm (None: no sleeve).

    Returns
    -------
    EdgeFit
        Crest radius (mm; the nominal one when ``nominal_diameter_mm`` is set), blur (mm), HU.
    """
    from .esf import fit_edge_spread, voxels_near_axis

    length = float(np.linalg.norm(end - start))
    shaft = (SHAFT_FIT_RANGE[0] * length, SHAFT_FIT_RANGE[1] * length)
    if shaft_to is not None:
        shaft = _clean_shaft_span(length, shaft_to, settings)
    _, r, _, vals = voxels_near_axis(volume, start, end, t_range_mm=shaft, r_max_mm=settings.esf_max_radius_mm)
    fixed = settings.nominal_diameter_mm / 2.0 if settings.nominal_diameter_mm is not None else None
    return fit_edge_spread(r, vals, clip_hu=clip_hu, metal_hu_prior=settings.metal_hu, fixed_radius_mm=fixed,
                           thread_depth_mm=settings.thread_depth_mm, thread_pitch_mm=settings.thread_pitch_mm)


def _clean_shaft_span(length: float, shaft_to: float, settings: ScrewSettings) -> tuple[float, float]:
    """The clean shaft before a cement sleeve, mm along the axis: from the configured ``axis_fit_range``
    start (or ``MIN_AXIS_SPAN_MM`` before ``shaft_to``, when that is earlier) to ``shaft_to``."""
    return max(min(settings.axis_fit_range[0] * length, shaft_to - MIN_AXIS_SPAN_MM), 0.0), shaft_to


def _axis_fit_span(volume: Volume, start: np.ndarray, end: np.ndarray, radius: float,
                   settings: ScrewSettings, shaft_to: float | None = None) -> tuple[float, float]:
    """The shaft's stretch whose edge refines the axis: positions along ``start`` -> ``end``, mm.

    The configured ``axis_fit_range`` (shares of the run, head to tip), ended at ``shaft_to`` (the
    clean shaft's end before a cement sleeve, mm) when given and begun no earlier than
    ``HEAD_CLEARANCE_MM`` past the tulip head found about this axis, so neither the head nor a
    fusion rod through it enters the fit; unchanged when that would leave less than
    ``MIN_AXIS_SPAN_MM`` of shaft.
    """
    from .esf import voxels_near_axis

    length = float(np.linalg.norm(end - start))
    t0, t1 = settings.axis_fit_range[0] * length, settings.axis_fit_range[1] * length
    if shaft_to is not None:
        t0, t1 = _clean_shaft_span(length, shaft_to, settings)
    t2, r2, _, v2 = voxels_near_axis(volume, start, end, t_range_mm=(0.0, HEAD_SEARCH_TO * length),
                                     r_max_mm=radius + HEAD_RING_MM[1])
    head = _head_end(t2, r2, v2, radius, settings, 0.0, HEAD_SEARCH_TO * length, True)
    if head is not None and t1 - (head + HEAD_CLEARANCE_MM) >= MIN_AXIS_SPAN_MM:
        t0 = max(t0, head + HEAD_CLEARANCE_MM)
    return t0, t1


def _axis_pass(volume: Volume, start: np.ndarray, end: np.ndarray, edge, settings: ScrewSettings,
               shaft_to: float | None = None):
    """One axis refinement: the edge voxels of the shaft re-selected about the current axis and fitted.

    Returns
    -------
    o_start, o_end : (3,) ndarray
        Perpendicular LPS offsets (mm) of the metal's axis at ``start`` and ``end`` (extrapolated
        linearly from the fitted shaft stretch).
    shift_mm : float
        The larger of the offsets at the two ends of the fitted shaft stretch, mm.
    """
    from .esf import refine_axis, voxels_near_axis

    length = float(np.linalg.norm(end - start))
    t0, t1 = _axis_fit_span(volume, start, end, edge.radius_mm, settings, shaft_to)
    ta, _, pa, va = voxels_near_axis(volume, start, end, t_range_mm=(t0, t1), r_max_mm=edge.radius_mm + AXIS_RING_MM)
    o0, o1, _ = refine_axis(ta, pa, va, edge, t_ref_mm=(t0, t1), fit_radius=False)
    slope = (o1 - o0) / (t1 - t0)
    shift = max(float(np.linalg.norm(o0)), float(np.linalg.norm(o1)))
    return o0 - t0 * slope, o0 + (length - t0) * slope, shift


def _converged_axis(volume: Volume, start: np.ndarray, end: np.ndarray, settings: ScrewSettings,
                    clip_hu: float | None, shaft_to: float | None = None):
    """Move a run's axis onto the screw's shaft, pass after pass, until it stops moving.

    The line through the thresholded mask can be a few tenths of a mm and, where a fusion rod or the
    tulip head pulled the line fit, 3-4 degrees off the metal's axis. One refinement fits the edge
    voxels selected about that wrong axis and corrects it only partly (0.9-1.6 deg were left on the
    demo case); each pass here re-selects them about the axis the previous pass left and refits the
    shaft's edge, until both shaft ends move less than ``AXIS_CONVERGED_MM`` (at most
    ``AXIS_MAX_PASSES`` passes).

    Parameters
    ----------
    volume : Volume
    start, end : (3,) ndarray
        The run's ends (head end first), LPS mm.
    settings : ScrewSettings
    clip_hu : float or None
        Saturation level of the image, HU (None = extended scale).
    shaft_to : float or None
        End of the clean shaft before a cement sleeve along the axis, mm (None: no sleeve).

    Returns
    -------
    start, end : (3,) ndarray
        Ends of the refined axis, LPS mm.
    edge : EdgeFit
        Edge fit of the shaft about it.
    """
    edge = _shaft_edge(volume, start, end, settings, clip_hu, shaft_to)
    for _ in range(AXIS_MAX_PASSES):
        o_start, o_end, shift = _axis_pass(volume, start, end, edge, settings, shaft_to)
        start, end = start + o_start, end + o_end
        edge = _shaft_edge(volume, start, end, settings, clip_hu, shaft_to)  # radius about the new axis
        if shift < AXIS_CONVERGED_MM:
            break
    return start, end, edge


@dataclass(frozen=True)
class _FoundScrew:
    """A refined screw run (LPS mm): ends, thread-crest diameter, voxels, cement sleeve."""

    entry: np.ndarray
    tip: np.ndarray
    diameter_mm: float
    n_voxels: int
    augmented: bool
    cement_mantle_mm: float | None


def _refine_run(volume: Volume, run: MetalRun, settings: ScrewSettings, clip_hu: float | None) -> _FoundScrew:
    """True metal ends and (thread-crest) diameter of one screw run, corrected for blooming.

    The run is oriented head (posterior, larger LPS y) to tip. Its axis is moved onto the shaft
    (:func:`_converged_axis`), whose voxels are fitted with the edge-spread model of a blurred,
    clipped, threaded cylinder (:func:`bmdpipe.screws.esf.fit_edge_spread`); its radius is the
    thread crest. The tip comes from the voxels on the axis with the same blur; the entry is where
    the head (tulip) ends, or the metal end when there is no head.

    A screw in a cement sleeve (:func:`find_sleeve`) has its axis and radius fitted on the clean shaft
    before the sleeve (``cement_margin_mm`` short of it). The metal's tip cannot be told from the cement
    around it (both clip, or differ by less than the noise of a thin tapered tip): it is placed the
    mantle's thickness (:func:`mantle_thickness`) short of the sleeve's end, i.e. the cement is taken to
    wrap the tip as thickly as the shaft.
    """
    from .esf import voxels_near_axis

    start, end = run.start_lps, run.end_lps
    if start[1] < end[1]:  # head = posterior end = larger y
        start, end = end, start
    sleeve = find_sleeve(volume, start, end, settings)
    shaft_to = None if sleeve is None else sleeve[0] - settings.cement_margin_mm
    start, end, edge = _converged_axis(volume, start, end, settings, clip_hu, shaft_to)
    length = float(np.linalg.norm(end - start))
    a = (end - start) / length
    radius = edge.radius_mm
    ext = END_SEARCH_MM
    t, r, _, vals = voxels_near_axis(volume, start - ext * a, end + ext * a,
                                     t_range_mm=(0.0, length + 2 * ext), r_max_mm=max(0.5 * radius, 0.6))  # the core
    t = t - ext
    far = t > TIP_SEARCH_FROM * length
    end_pos = _fit_end(t[far], vals[far], edge, TIP_SEARCH_FROM * length, length + ext, 1.0)
    if not np.isfinite(end_pos):
        end_pos = length
    t2, r2, _, v2 = voxels_near_axis(volume, start, end, t_range_mm=(0.0, HEAD_SEARCH_TO * length),
                                     r_max_mm=radius + 3.0)  # the head ring and a margin
    head = _head_end(t2, r2, v2, radius, settings, 0.0, HEAD_SEARCH_TO * length, True)
    if head is not None:
        start_pos = head
    else:
        near = t < ENTRY_SEARCH_TO * length
        start_pos = _fit_end(t[near], vals[near], edge, -ext, ENTRY_SEARCH_TO * length, -1.0)
        if not np.isfinite(start_pos):
            start_pos = 0.0
    mantle = None
    if sleeve is not None:
        sleeve = find_sleeve(volume, start, end, settings) or sleeve  # about the refined axis
        mantle = mantle_thickness(volume, start, end, sleeve, radius, settings)
        if mantle is not None:
            end_pos -= mantle
    return _FoundScrew(entry=start + start_pos * a, tip=start + end_pos * a, diameter_mm=2.0 * radius,
                       n_voxels=run.n_points, augmented=sleeve is not None, cement_mantle_mm=mantle)


def _point_segment_distance(p: np.ndarray, a: np.ndarray, b: np.ndarray) -> float:
    ab = b - a
    u = float(np.clip((p - a) @ ab / max(ab @ ab, 1e-12), 0.0, 1.0))
    return float(np.linalg.norm(p - (a + u * ab)))


def _drop_duplicates(found: list[_FoundScrew]) -> list[_FoundScrew]:
    """Drop runs lying on a larger screw's axis (a screw split in two by the line search)."""
    kept: list[_FoundScrew] = []
    for f in sorted(found, key=lambda f: -f.n_voxels):
        mid = 0.5 * (f.entry + f.tip)
        if any(_point_segment_distance(mid, k.entry, k.tip) < 0.5 * k.diameter_mm for k in kept):
            continue
        kept.append(f)
    return kept


def _unless_pedicle_screw(screw: Screw, vertebrae: Sequence[Vertebra], settings: ScrewSettings) -> Screw:
    """``screw`` with its vertebra cleared (and the reason logged) when its path is not a pedicle screw's
    (:func:`pedicle_path_problem`)."""
    vertebra = next((v for v in vertebrae if v.name == screw.vertebra), None) if screw.vertebra else None
    problem = "" if vertebra is None else pedicle_path_problem(
        screw, vertebra, max_ap_angle_deg=settings.max_ap_angle_deg, max_head_depth_mm=settings.max_head_depth_mm)
    if not problem:
        return screw
    logger.info("straight metal run from LPS (%s) to (%s) mm is not a pedicle screw of %s: %s",
                ", ".join(f"{c:.0f}" for c in screw.entry_lps), ", ".join(f"{c:.0f}" for c in screw.tip_lps),
                vertebra.name, problem)
    return replace(screw, vertebra="")


def detect_screws(volume: Volume, settings: ScrewSettings, *, vertebrae: Sequence[Vertebra] = ()) -> list[Screw]:
    """Find pedicle screws in a CT volume.

    Parameters
    ----------
    volume : Volume
        CT in HU (clipped at 3071 HU or extended scale).
    settings : ScrewSettings
        Section ``screws`` of the settings.
    vertebrae : sequence of Vertebra, optional
        Labelled or localised vertebrae; used to name each screw's level and side.
        Without them ``vertebra`` is ``''`` and the side is relative to the midline of all
        screws found. A straight metal run farther than ``max_distance_from_vertebra_mm`` from
        all of them keeps ``vertebra`` '' too (other metal, or a screw of another level), and so
        does one whose path is not a pedicle screw's (a crosslink, an interbody cage's wall:
        :func:`~bmdpipe.screws.assign.pedicle_path_problem`, ``max_ap_angle_deg``,
        ``max_head_depth_mm``).

    Returns
    -------
    list of Screw
        One per screw (entry = posterior end at the head, tip = anterior end), ordered
        superior to inferior, then right to left. ``halo`` is None (see
        :func:`bmdpipe.screws.halo.measure_screws`). ``augmented`` where a cement sleeve wraps
        the distal shaft (:func:`find_sleeve`), with its ``cement_mantle_mm``. An empty list when
        there is no metal.

    Notes
    -----
    Rods (axis steeper than ``max_axis_tilt_deg`` from the axial plane, or longer than
    ``max_length_mm``), cages and cement (bulky, not cylindrical) and short fragments are
    not returned.
    """
    img = volume.array
    mask = metal_mask(img, settings.metal_threshold_hu)
    if not mask.any():
        return []
    clip = saturation_level(img, metal_threshold_hu=settings.metal_threshold_hu,
                            min_fraction=settings.saturation_min_fraction, min_voxels=settings.saturation_min_voxels)
    labels, n = ndimage.label(mask, structure=np.ones((3, 3, 3), dtype=bool))
    if n == 0:
        return []
    slices = ndimage.find_objects(labels)
    rng = np.random.default_rng(settings.ransac_seed)
    vox_mm3 = volume.voxel_volume_mm3
    found: list[_FoundScrew] = []
    for lab, sl in enumerate(slices, start=1):
        if sl is None:
            continue
        comp = labels[sl] == lab
        nvox = int(comp.sum())
        if nvox * vox_mm3 < settings.min_metal_volume_mm3:
            continue
        kji = np.argwhere(comp) + np.array([s.start for s in sl])
        pts = volume.index_to_lps(kji)
        for run in find_metal_runs(pts, settings, rng=rng):
            if run.kind != "screw":
                continue
            found.append(_refine_run(volume, run, settings, clip))
    screws = [Screw(entry_lps=tuple(float(x) for x in f.entry), tip_lps=tuple(float(x) for x in f.tip),
                    length_mm=float(np.linalg.norm(f.tip - f.entry)), diameter_mm=float(f.diameter_mm),
                    n_voxels=f.n_voxels, augmented=f.augmented, cement_mantle_mm=f.cement_mantle_mm)
              for f in _drop_duplicates(found)]
    screws = [_unless_pedicle_screw(s, vertebrae, settings)
              for s in assign_screws(screws, vertebrae, volume=volume,
                                     max_distance_mm=settings.max_distance_from_vertebra_mm)]
    screws.sort(key=lambda s: (-0.5 * (s.entry_lps[2] + s.tip_lps[2]), s.entry_lps[0]))
    return screws
