"""Radiolucent halo (loosening) around a pedicle screw from radial tissue profiles.

The screw's metal is explained by its fitted edge-spread model (see :mod:`bmdpipe.screws.esf`:
thread-crest radius ``diameter / 2``, blur, amplitude, clipping like the scanner, and the level
of the tissue it touches), optionally one per sector of orientation around the screw
(``blur_sectors``, :func:`fit_metal`): across the axial plane the metal spreads by the kernel's
blur and the bloom of its long paths within the section, towards the sections above and below by
the slice profile. The blur is the scanner's, so :func:`measure_screws` gives all screws of a scan
the median of their separate fits (per sector): alone, one screw's fit can trade blur against the
tissue next to it (a halo on part of the circumference, cortex close by). That model is
subtracted from every voxel centre near the screw at the voxel's exact distance from the axis,
which leaves the tissue around the metal: ``lucent_hu`` inside a halo (thread valleys included),
bone beyond it. Interpolating rays across the metal edge instead would err by hundreds of HU at
~3000 HU/mm, more than a halo's contrast. The voxels are binned by position along the screw,
angle around it and distance from the axis; a sliding window (``block_length_mm`` along,
``angle_smoothing`` angles around) gives one tissue profile per cell, smoothed along the ray by
kernel regression.

On each profile the halo's outer edge is where the tissue first rises half-way from
``lucent_hu`` to the bone beyond it and stays there (:func:`edge_widths`): a blurred step is at
half height at the step itself, so the width is read from the thread crests to that point. Only
the edge is used, not a model of what lies further out: a pedicle's cortex, the canal or a
streak beyond the halo does not move it. A sclerotic rim ("double halo") is tissue well above
bone just beyond the edge. Per angle the width is the median over the positions along the
screw; ray planes outside bone and rays whose outer part is far darker than the screw's typical
bone (photon-starvation streaks) are left out, so a streak neither makes nor hides a halo, and so
are cells whose tissue beyond the edge reads far brighter than that bone (``bright_artefact_hu``:
the bloom of the screw's metal in the sections above and below it, or a pedicle's cortex).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Sequence

import numpy as np
from scipy import ndimage
from scipy.special import ndtri

from ..config import HaloSettings, ScrewSettings
from ..errors import ScrewError
from ..results import HaloMeasurement, Screw
from ..volume import Volume
from .detect import saturation_level
from .esf import MODEL_GRID_MM, EdgeFit, fit_edge_spread, metal_excess, voxels_near_axis

__all__ = ["RayProfiles", "sample_rays", "ScrewSamples", "sample_screw", "fit_metal", "binned_tissue", "edge_widths",
           "measure_halo", "measure_screws",
           "reduce_metal_artefacts", "HaloDetail", "cemented_planes", "measure_halo_detail", "measure_halo_details",
           "orientation_sector"]

#: a ray plane is in bone when the median of its rays' outermost mm is at least ``min_bone_hu``
OUTER_RING_MM = 2.0
#: fewer ray planes in bone than this: all are used (a screw in soft tissue still gets a reading)
MIN_PLANES_IN_BONE = 3
#: a screw too short for the entry and tip margins is sampled over this share of its length
SHORT_SCREW_RANGE = (0.2, 0.9)
#: a cell of the width map needs more than this share of its rays usable (in bone, off streaks)
MIN_USABLE_SHARE = 0.3


@dataclass(frozen=True)
class RayProfiles:
    """HU sampled around a screw.

    Attributes
    ----------
    values : (P, A, N) ndarray
        HU at position ``positions_mm[p]`` (mm from the entry along the axis), angle
        ``angles_rad[a]`` (from ``u`` towards ``v``) and radius ``radii_mm[n]``.
    u, v, axis : (3,) ndarray
        LPS unit vectors of the screw frame.
    box_lo, box_hi : (3,) ndarray of int
        The cropped box (k, j, i) that was sampled.
    coords : (3, P*A*N) ndarray
        Fractional indices into that box (to sample a model image the same way).
    """

    values: np.ndarray
    positions_mm: np.ndarray
    angles_rad: np.ndarray
    radii_mm: np.ndarray
    entry_lps: np.ndarray
    axis: np.ndarray
    u: np.ndarray
    v: np.ndarray
    box_lo: np.ndarray
    box_hi: np.ndarray
    coords: np.ndarray


def sample_rays(volume: Volume, entry_lps, tip_lps, *, positions_mm: np.ndarray, radii_mm: np.ndarray,
                n_angles: int, order: int = 1) -> RayProfiles:
    """Sample the volume on rays perpendicular to the axis entry -> tip, all at once.

    Parameters
    ----------
    volume : Volume
    entry_lps, tip_lps : (3,) array_like
        Screw ends, LPS mm.
    positions_mm : (P,) ndarray
        Distances from the entry along the axis, mm.
    radii_mm : (N,) ndarray
        Distances from the axis, mm.
    n_angles : int
        Number of equally spaced ray directions.
    order : int
        Spline order of ``map_coordinates`` (1 = linear).
    """
    from .detect import screw_frame

    e = np.asarray(entry_lps, dtype=float)
    t = np.asarray(tip_lps, dtype=float)
    length = float(np.linalg.norm(t - e))
    if length <= 0:
        raise ScrewError("screw has zero length (entry == tip); check the detection")
    a = (t - e) / length
    u, v = screw_frame(a)
    ang = np.linspace(0.0, 2.0 * np.pi, n_angles, endpoint=False)
    dirs = np.cos(ang)[:, None] * u + np.sin(ang)[:, None] * v
    pts = (e + positions_mm[:, None, None, None] * a
           + radii_mm[None, None, :, None] * dirs[None, :, None, :])
    idx = volume.lps_to_index(pts.reshape(-1, 3))
    shape = np.array(volume.array.shape)
    lo = np.clip(np.floor(idx.min(axis=0)).astype(int) - 2, 0, shape - 1)
    hi = np.clip(np.ceil(idx.max(axis=0)).astype(int) + 3, lo + 1, shape)
    box = np.asarray(volume.array[lo[0]:hi[0], lo[1]:hi[1], lo[2]:hi[2]], dtype=np.float32)
    coords = (idx - lo).T
    vals = ndimage.map_coordinates(box, coords, order=order, mode="nearest")
    return RayProfiles(values=vals.reshape(pts.shape[:-1]), positions_mm=positions_mm, angles_rad=ang,
                       radii_mm=radii_mm, entry_lps=e, axis=a, u=u, v=v, box_lo=lo, box_hi=hi, coords=coords)


@dataclass(frozen=True)
class RayFit:
    """Per-ray results (arrays of the rays' shape), HU after the metal model is subtracted."""

    width_mm: np.ndarray
    bone_hu: np.ndarray
    rim_hu: np.ndarray


def _first_crossing(d: np.ndarray, r: np.ndarray, start: np.ndarray, level: np.ndarray) -> np.ndarray:
    """Radius (mm) where each row of ``d`` first rises to ``level`` at or beyond ``start``.

    Linear interpolation between samples; ``start`` if the row is already at the level there,
    ``inf`` if it never gets there.
    """
    above = (r[None, :] >= start[:, None]) & (d >= level[:, None])
    k = np.argmax(above, axis=1)
    rows = np.arange(d.shape[0])
    km = np.maximum(k - 1, 0)
    d0, d1 = d[rows, km], d[rows, k]
    frac = np.clip(np.where(d1 > d0, (level - d0) / np.where(d1 > d0, d1 - d0, 1.0), 1.0), 0.0, 1.0)
    rc = np.maximum(r[km] + frac * (r[k] - r[km]), start)
    return np.where(above.any(axis=1), rc, np.inf)


def _row_nanquantiles(x: np.ndarray, qs) -> list[np.ndarray]:
    """``np.nanquantile(x, q, axis=1)`` for each ``q`` of ``qs`` (linear method, same numbers) for
    rows with a finite value, on one sort of the whole array instead of a Python loop over the rows."""
    srt = np.sort(x, axis=1)  # NaN last
    n = np.count_nonzero(~np.isnan(x), axis=1)
    rows = np.arange(x.shape[0])
    out = []
    for q in qs:
        virtual = (n - 1) * q
        top = virtual >= n - 1
        prev = np.where(top, n - 1, np.floor(virtual)).astype(np.intp)
        nxt = np.where(top, n - 1, prev + 1).astype(np.intp)
        a, b = srt[rows, prev], srt[rows, nxt]
        gamma = virtual - prev
        diff = b - a
        out.append(np.where(gamma >= 0.5, b - diff * (1 - gamma), a + diff * gamma))
    return out


def _quantiles_between(d: np.ndarray, r: np.ndarray, lo: np.ndarray, hi: np.ndarray, qs) -> list[np.ndarray]:
    """Quantiles ``qs`` of each row of ``d`` over ``lo <= r < hi`` (NaN where empty), one sort for all."""
    inside = (r[None, :] >= lo[:, None]) & (r[None, :] < hi[:, None]) & np.isfinite(d)
    out = [np.full(d.shape[0], np.nan) for _ in qs]
    rows = inside.any(axis=1)
    if rows.any():
        for o, v in zip(out, _row_nanquantiles(np.where(inside[rows], d[rows], np.nan), qs)):
            o[rows] = v
    return out


def _quantile_between(d: np.ndarray, r: np.ndarray, lo: np.ndarray, hi: np.ndarray, q: float = 0.5) -> np.ndarray:
    """Quantile ``q`` of each row of ``d`` over ``lo <= r < hi`` (NaN where empty)."""
    return _quantiles_between(d, r, lo, hi, (q,))[0]


def _accepted_edge(d: np.ndarray, r: np.ndarray, start: np.ndarray, level: np.ndarray, *, gap: float,
                   plateau_mm: float, tries: int, stay_level: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """First rise of each row of ``d`` to ``level`` beyond ``start`` after which it stays up.

    A rise counts when the profile stays at or above ``stay_level`` (default ``level``) over
    ``[edge + gap, edge + gap + plateau_mm)`` (its lower quartile there: a noise spike or a streak
    crossing the halo does not end it); otherwise the search goes on beyond it, at most ``tries``
    times.

    Returns
    -------
    edge, plateau : (M,) ndarray
        Edge radius (mm; ``inf`` = never rises, NaN = no accepted rise within ``tries``) and the
        median beyond it (HU).
    """
    n = d.shape[0]
    edge = np.full(n, np.nan)
    plateau = np.full(n, np.nan)
    active = np.ones(n, dtype=bool)
    s = start.astype(float).copy()
    dz = np.nan_to_num(d, nan=-1e4)
    for _ in range(tries):
        e = _first_crossing(dz, r, s, level)
        fin = np.isfinite(e)
        lo = np.where(fin, e + gap, np.inf)
        p, low = _quantiles_between(d, r, lo, e + gap + plateau_mm, (0.5, 0.25))
        done = active & (~fin | (low >= (level if stay_level is None else stay_level)))
        edge[done], plateau[done] = e[done], p[done]
        active &= ~done
        if not active.any():
            break
        s = np.where(active, e + gap, s)
    return edge, plateau


def _edge_inside_start(d: np.ndarray, r: np.ndarray, start: np.ndarray, edge: np.ndarray, plateau: np.ndarray,
                       lucent_hu: float, sigma_mm: np.ndarray) -> np.ndarray:
    """Edges found at the search start moved to where a blurred step would put them.

    A ray whose tissue is already above half-way at ``start`` has its edge somewhere inside; read as
    ``start`` it would give every screw without a halo a width of ``edge_start_mm``. A step from
    ``lucent_hu`` to the bone beyond (``plateau``) blurred by a Gaussian of SD ``sigma_mm`` reaches the
    tissue's share ``f`` of the way at ``edge + sigma * Phi^-1(f)``; that puts the edge at
    ``start - sigma * Phi^-1(f)`` (``f`` clipped to [0.5, 0.999]: at most 3.1 sigma further in).
    """
    at_start = np.isfinite(edge) & (edge <= start + 1e-9) & np.isfinite(plateau) & (plateau > lucent_hu)
    if not at_start.any():
        return edge
    k = np.clip(np.searchsorted(r, start[at_start]), 0, r.size - 1)
    share = (d[at_start, :][np.arange(k.size), k] - lucent_hu) / (plateau[at_start] - lucent_hu)
    share = np.clip(np.nan_to_num(share, nan=0.5), 0.5, 0.999)
    out = edge.copy()
    out[at_start] = start[at_start] - sigma_mm[at_start] * ndtri(share)
    return out


def edge_widths(tissue_sum: np.ndarray, count: np.ndarray, radii_mm: np.ndarray, *, crest_radius_mm: float,
                bone_hu: float, sigma_mm, settings: HaloSettings) -> RayFit:
    """Halo width of every ray: where the tissue beyond the metal rises half-way to bone.

    The metal model is subtracted from each profile, which leaves the tissue around the screw:
    ``lucent_hu`` inside a halo (thread valleys included), bone beyond it. The halo's outer
    edge is where this tissue profile (smoothed over ``profile_smoothing_mm``) first reaches
    half-way between ``lucent_hu`` and the bone level, searched from ``edge_start_mm`` beyond
    the thread crests (closer in, the bloom model's error exceeds a halo's contrast). The bone
    level starts as the screw's ``bone_hu`` and is then, ``refine_iterations`` times, the median
    just beyond the edge found, so a sclerotic rim or a pedicle's denser bone sets its own
    half-way level. Only the edge is used, not a model of what lies further out: cortex, canal
    or streaks beyond the halo do not move it. For a blurred step the half-way point is the
    edge itself; a band narrower than the blur reads somewhat narrow.

    Parameters
    ----------
    tissue_sum, count : (..., N) ndarray
        Per ray and radius bin: sum of (voxel HU - modelled metal HU excess) and the number (or
        weight) of voxels; the bins' mean is the tissue profile.
    radii_mm : (N,) ndarray
        Equally spaced bin centres (distance from the axis), mm.
    crest_radius_mm : float
        Thread-crest radius (diameter / 2): widths are measured from here, mm.
    bone_hu : float
        Typical bone HU around this screw (first guess of the level beyond the halo).
    sigma_mm : float or (...) ndarray
        Blur of the image (edge-spread fit), mm, for all rays or per ray: the plateau beyond an
        edge starts ``2 sigma`` out.
    settings : HaloSettings

    Returns
    -------
    RayFit
        ``width_mm`` (0 = no halo; ``max_width_mm`` = lucent all the way out), ``rim_hu`` (median
        within ``rim_width_mm`` beyond the edge) and ``bone_hu`` (median over the following
        ``bone_window_mm``), NaN where a ray has no samples there.
    """
    r = np.asarray(radii_mm, dtype=float)
    shp = count.shape[:-1]
    # kernel regression along the ray: Gaussian-weighted mean of the binned voxels
    sig = settings.profile_smoothing_mm / float(r[1] - r[0])
    num = ndimage.gaussian_filter1d(tissue_sum.reshape(-1, r.size).astype(float), sig, axis=1, mode="constant")
    den = ndimage.gaussian_filter1d(count.reshape(-1, r.size).astype(float), sig, axis=1, mode="constant")
    ds = np.where(den > 1e-3, num / np.maximum(den, 1e-9), np.nan)
    H = settings.lucent_hu
    start = np.full(ds.shape[0], crest_radius_mm + settings.edge_start_mm)
    gap = np.broadcast_to(2.0 * np.asarray(sigma_mm, dtype=float), shp).reshape(-1)
    level = np.full(ds.shape[0], H + 0.5 * max(float(bone_hu) - H, settings.min_contrast_hu))
    edge, plateau = _accepted_edge(ds, r, start, level, gap=gap, plateau_mm=settings.rim_width_mm,
                                   tries=settings.edge_tries)
    base = level
    for _ in range(settings.refine_iterations):
        # half-way to the bone actually found beyond this ray's edge (a sclerotic rim, denser bone);
        # what follows the edge need only stay above the screw's own half-way level (a rim is
        # brighter than the bone after it)
        level = np.where(np.isfinite(plateau), H + 0.5 * np.maximum(plateau - H, settings.min_contrast_hu), base)
        edge, plateau = _accepted_edge(ds, r, start, level, gap=gap, plateau_mm=settings.rim_width_mm,
                                       tries=settings.edge_tries, stay_level=np.minimum(level, base))
    inner = _edge_inside_start(ds, r, start, edge, plateau, H, 0.5 * gap)
    width = np.where(np.isnan(inner), np.nan, np.clip(inner - crest_radius_mm, 0.0, settings.max_width_mm))
    # rim and bone are read beyond the edge as searched (no closer to the metal than the search start)
    outer = np.where(np.isfinite(edge), edge, np.inf)
    rim = _quantile_between(ds, r, outer + 0.5 * gap, outer + settings.rim_width_mm)
    bone = _quantile_between(ds, r, outer + settings.rim_width_mm + 0.5 * gap,
                           outer + settings.rim_width_mm + settings.bone_window_mm)
    return RayFit(width_mm=width.reshape(shp), bone_hu=bone.reshape(shp), rim_hu=rim.reshape(shp))


@dataclass(frozen=True)
class HaloDetail:
    """Everything measured around one screw (for QC and tests)."""

    halo: HaloMeasurement
    edges: tuple[EdgeFit, ...]  # metal model per orientation sector (:func:`fit_metal`)
    rays: RayProfiles
    in_bone: np.ndarray  # (P,) bool
    streak: np.ndarray  # (P, A) bool
    angle_width_mm: np.ndarray  # (A,) width per angle: median along the screw (NaN = invalid)
    angle_bone_hu: np.ndarray  # (A,) tissue HU beyond the rim band, median along the screw
    angle_rim_hu: np.ndarray  # (A,) tissue HU just beyond the edge, median along the screw
    valid_angles: np.ndarray  # (A,) bool
    clip_hu: float | None


@dataclass(frozen=True)
class ScrewSamples:
    """What the halo measurement reads around one screw (before any model is fitted).

    Attributes
    ----------
    rays : RayProfiles
        Interpolated rays (bone/streak rings, QC images).
    crest_radius_mm, thread_depth_mm : float
    clip_hu : float or None
        Saturation level seen on the rays (None = extended HU scale).
    in_bone : (P,) bool
        Ray planes whose outer ring is bone.
    streak : (P, A) bool
        Rays whose outer part is far darker than the screw's bone (photon starvation).
    usable_rays : (P, A) bool
        Rays in a ray plane in bone and off streaks.
    bone_hu : float
        Median HU of the outer ring over the ray planes in bone.
    r_mm, hu : (M,) ndarray
        Voxel centres near the axis (in the ray planes' span): distance from it, and HU.
    plane, angle : (M,) ndarray of int
        Ray plane and angle bin of each voxel.
    usable : (M,) bool
        Voxels in a ray plane in bone and off streaks.
    """

    rays: RayProfiles
    crest_radius_mm: float
    thread_depth_mm: float
    clip_hu: float | None
    in_bone: np.ndarray
    streak: np.ndarray
    usable_rays: np.ndarray
    bone_hu: float
    r_mm: np.ndarray
    hu: np.ndarray
    plane: np.ndarray
    angle: np.ndarray
    usable: np.ndarray


def sample_screw(volume: Volume, screw: Screw, settings: HaloSettings, hardware: ScrewSettings) -> ScrewSamples:
    """Rays and voxel centres around a screw, with the ray planes in bone and the streaks marked.

    ``hardware`` gives the screws' thread depth and how a clipped HU scale is recognised
    (:func:`~bmdpipe.screws.detect.saturation_level`, applied to the rays).
    """
    e = np.asarray(screw.entry_lps, dtype=float)
    t = np.asarray(screw.tip_lps, dtype=float)
    length = float(np.linalg.norm(t - e))
    R = screw.diameter_mm / 2.0
    if not (length > 0 and R > 0):
        raise ScrewError(f"screw at {screw.entry_lps} has length {length:.1f} mm and diameter "
                         f"{screw.diameter_mm:.1f} mm; both must be positive (re-run detection)")
    p0, p1 = settings.skip_entry_mm, length - settings.skip_tip_mm
    if p1 - p0 < 3 * settings.position_step_mm:
        p0, p1 = SHORT_SCREW_RANGE[0] * length, SHORT_SCREW_RANGE[1] * length
    positions = np.arange(p0, p1 + 1e-9, settings.position_step_mm)
    mantle = float(screw.cement_mantle_mm or 0.0) if screw.augmented else 0.0
    radii = np.arange(0.0, R + mantle + settings.search_mm + 1e-9, settings.radial_step_mm)
    rays = sample_rays(volume, e, t, positions_mm=positions, radii_mm=radii, n_angles=settings.n_angles)
    far = radii > radii[-1] - OUTER_RING_MM
    far_ray = np.median(rays.values[:, :, far], axis=2)  # (P, A)
    in_bone = np.median(far_ray, axis=1) >= settings.min_bone_hu
    if np.count_nonzero(in_bone) < MIN_PLANES_IN_BONE:
        in_bone = np.ones(len(positions), dtype=bool)
    bone = float(np.median(far_ray[in_bone]))
    streak = far_ray < bone - settings.streak_drop_fraction * max(bone - settings.lucent_hu, settings.min_contrast_hu)
    pos_in = positions[in_bone]
    half = 0.5 * settings.position_step_mm
    tv, rv, pv, hv = voxels_near_axis(volume, e, t, t_range_mm=(float(pos_in.min()) - half, float(pos_in.max()) + half),
                                      r_max_mm=float(radii[-1]))
    plane = np.clip(np.rint((tv - positions[0]) / settings.position_step_mm).astype(int), 0, len(positions) - 1)
    th = np.mod(np.arctan2(pv @ rays.v, pv @ rays.u), 2 * np.pi)
    angle = np.minimum((th / (2 * np.pi) * settings.n_angles).astype(int), settings.n_angles - 1)
    usable_rays = in_bone[:, None] & ~streak
    clip = saturation_level(rays.values, metal_threshold_hu=hardware.metal_threshold_hu,
                            min_fraction=hardware.saturation_min_fraction, min_voxels=hardware.saturation_min_voxels)
    return ScrewSamples(rays=rays, crest_radius_mm=R, thread_depth_mm=min(hardware.thread_depth_mm, 0.5 * R),
                        clip_hu=clip, in_bone=in_bone, streak=streak, usable_rays=usable_rays,
                        bone_hu=bone,
                        r_mm=rv, hu=hv, plane=plane, angle=angle, usable=usable_rays[plane, angle])


def orientation_sector(angle_rad: np.ndarray, n_sectors: int) -> np.ndarray:
    """Sector (0 ... ``n_sectors`` - 1) of each direction's orientation around the screw.

    Opposite directions share a sector (the orientation is the angle modulo 180 deg); sector 0 is
    centred on ``u`` (in the axial plane), sector ``n_sectors / 2`` on ``v`` (towards the sections
    above and below the screw).
    """
    o = np.mod(np.asarray(angle_rad, dtype=float), np.pi) / np.pi * n_sectors
    return np.mod(np.floor(o + 0.5).astype(int), n_sectors)


def fit_metal(samples: ScrewSamples, settings: HaloSettings, hardware: ScrewSettings, *,
              blur_sigma_mm: Sequence[float] | None = None) -> tuple[EdgeFit, ...]:
    """The screw's edge-spread model (crest radius fixed) from the voxels off streaks, one per
    orientation sector (``settings.blur_sectors``).

    The metal's spread is not the same all around: across the axial plane it is the kernel's
    blur plus the bloom of the long metal paths within the section (beam hardening), towards the
    sections above and below the slice profile's; one Gaussian blur for all directions over-
    subtracts where the edge is sharp and reads a halo there. So blur, amplitude and background
    are fitted per sector of orientation. A dark band would pull the model's background and
    blur, so streak voxels are left out. The background, the tissue the metal's blur spreads
    into, is fitted between lucent tissue and the bone: a halo's level taken for the bone's would
    make the blur too narrow and leave bloom where the halo is. ``blur_sigma_mm`` (one per sector)
    fixes the blur (one scanner PSF for all screws of a scan: with it fixed, the blur can no
    longer trade off against the background).
    """
    s = samples
    H = settings.lucent_hu
    n = settings.blur_sectors
    sector = orientation_sector(s.rays.angles_rad, n)[s.angle]
    fits = []
    for k in range(n):
        mine = sector == k
        use = s.usable & mine
        if np.count_nonzero(use) < 0.25 * np.count_nonzero(mine):
            use = mine
        fits.append(fit_edge_spread(s.r_mm[use], s.hu[use], clip_hu=s.clip_hu, fixed_radius_mm=s.crest_radius_mm,
                                    fixed_sigma_mm=None if blur_sigma_mm is None else float(blur_sigma_mm[k]),
                                    metal_hu_prior=hardware.metal_hu, thread_depth_mm=s.thread_depth_mm,
                                    thread_pitch_mm=hardware.thread_pitch_mm,
                                    background_bounds_hu=(H - settings.min_contrast_hu,
                                                          s.bone_hu + settings.min_contrast_hu)))
    return tuple(fits)


def measure_halo_detail(volume: Volume, screw: Screw, settings: HaloSettings, hardware: ScrewSettings, *,
                        blur_sigma_mm: Sequence[float] | None = None) -> HaloDetail:
    """Measure the halo around one screw; see :func:`measure_halo` (this also returns the
    intermediate profiles and fits). With ``metal_artefact_reduction: nmar`` it is measured on the
    volume after :func:`reduce_metal_artefacts`, as by :func:`measure_halo_details`."""
    samples = sample_screw(_halo_volume(volume, settings), screw, settings, hardware)
    return _measure_samples(samples, screw, settings, hardware, blur_sigma_mm)


def binned_tissue(samples: ScrewSamples, edges: Sequence[EdgeFit], settings: HaloSettings) -> tuple[np.ndarray, np.ndarray]:
    """Tissue around the screw, binned by (ray plane, angle, distance from the axis).

    Tissue = voxel HU minus the metal model of the voxel's orientation sector (``edges``, see
    :func:`fit_metal`) at the voxel centre's exact distance from the axis (tabulated once per
    sector on a 0.01-mm grid: it depends on the radius only). Voxels closer to the crests than
    ``edge_start_mm - profile_smoothing_mm``, outside bone or on streaks get no weight.

    Returns
    -------
    count, tissue_sum : (P, A, N) ndarray
        Voxels per bin and the sum of their tissue HU; N bins of ``radial_step_mm``.
    """
    s = samples
    radii = s.rays.radii_mm
    r_fine = np.arange(0.0, radii[-1] + settings.radial_step_mm + MODEL_GRID_MM, MODEL_GRID_MM)
    sector = orientation_sector(s.rays.angles_rad, len(edges))[s.angle]
    metal = np.empty_like(s.hu)
    for k, e in enumerate(edges):
        mine = sector == k
        metal[mine] = np.interp(s.r_mm[mine], r_fine, metal_excess(r_fine, e))
    tissue = s.hu - metal
    weight = s.usable * (s.r_mm >= s.crest_radius_mm + settings.edge_start_mm - settings.profile_smoothing_mm)
    shape = (len(s.rays.positions_mm), settings.n_angles, radii.size)
    n_idx = np.minimum((s.r_mm / settings.radial_step_mm).astype(int), radii.size - 1)
    flat = np.ravel_multi_index((s.plane, s.angle, n_idx), shape)
    count = np.bincount(flat, weights=weight, minlength=int(np.prod(shape))).reshape(shape)
    tissue_sum = np.bincount(flat, weights=weight * tissue, minlength=int(np.prod(shape))).reshape(shape)
    return count, tissue_sum


def cemented_planes(count: np.ndarray, tissue_sum: np.ndarray, radii_mm: np.ndarray, *, crest_radius_mm: float,
                    mantle_mm: float, cement_min_hu: float, settings: HaloSettings) -> np.ndarray:
    """Ray planes inside a cement mantle: their tissue within ``mantle_mm`` beyond the thread crests
    (metal model subtracted, median over the angles) reads at least ``cement_min_hu``.

    Parameters
    ----------
    count, tissue_sum : (P, A, N) ndarray
        Width-map cells: voxel weight and summed tissue HU per radius bin.
    radii_mm : (N,) ndarray
        Radius bin centres, mm from the axis.

    Returns
    -------
    (P,) bool
    """
    inside = (radii_mm >= crest_radius_mm + settings.edge_start_mm) & (radii_mm <= crest_radius_mm + max(mantle_mm, 1.0))
    if not inside.any():
        return np.zeros(count.shape[0], dtype=bool)
    c, t = count[..., inside].sum(axis=-1), tissue_sum[..., inside].sum(axis=-1)
    level = np.where(c > 1e-3, t / np.maximum(c, 1e-9), np.nan)
    measured = np.isfinite(level).any(axis=1)  # a plane with no cell measured is not in cement (and no warning)
    out = np.zeros(count.shape[0], dtype=bool)
    out[measured] = np.nanmedian(level[measured], axis=1) >= cement_min_hu
    return out


def _column_medians(x: np.ndarray, columns: np.ndarray) -> np.ndarray:
    """NaN-ignoring median of each selected column of ``x`` (NaN where a column has no value)."""
    out = np.full(x.shape[1], np.nan)
    have = columns & np.isfinite(x).any(axis=0)
    if have.any():
        out[have] = np.nanmedian(x[:, have], axis=0)
    return out


def _measure_samples(samples: ScrewSamples, screw: Screw, settings: HaloSettings, hardware: ScrewSettings,
                     blur_sigma_mm: Sequence[float] | None) -> HaloDetail:
    edges = fit_metal(samples, settings, hardware, blur_sigma_mm=blur_sigma_mm)
    rays, in_bone = samples.rays, samples.in_bone
    count, tissue_sum = binned_tissue(samples, edges, settings)
    # width map: cells of block_length_mm along the screw and angle_smoothing angles around it
    k_ang = settings.angle_smoothing
    nwin = max(1, int(round(settings.block_length_mm / settings.position_step_mm)))

    def pooled(x):
        return ndimage.uniform_filter1d(ndimage.uniform_filter1d(x, nwin, axis=0, mode="nearest"), k_ang, axis=1,
                                        mode="wrap")

    c_l, t_l = pooled(count), pooled(tissue_sum)
    sigma = np.array([e.sigma_mm for e in edges])[orientation_sector(rays.angles_rad, len(edges))]
    r_bins = (np.arange(rays.radii_mm.size) + 0.5) * settings.radial_step_mm
    in_cement = np.zeros(c_l.shape[0], dtype=bool)
    if screw.augmented and screw.cement_mantle_mm:
        in_cement = cemented_planes(c_l, t_l, r_bins, crest_radius_mm=samples.crest_radius_mm,
                                    mantle_mm=float(screw.cement_mantle_mm), cement_min_hu=hardware.cement_min_hu,
                                    settings=settings)
    fit = edge_widths(t_l, c_l, r_bins, crest_radius_mm=samples.crest_radius_mm, bone_hu=samples.bone_hu,
                      sigma_mm=np.broadcast_to(sigma, c_l.shape[:-1]),
                      settings=settings)
    usable_share = pooled(samples.usable_rays.astype(float))
    # tissue beyond the edge far brighter than the screw's bone is metal's streak or bloom (the screw's own
    # sliver in the sections above and below it) or cortex, not bone: such a cell cannot show a halo
    bright = fit.bone_hu > samples.bone_hu + settings.bright_artefact_hu
    # the cement-bone interface of an augmented screw is not measured (the cement's bloom): its uncemented shaft is
    cell = ((usable_share > MIN_USABLE_SHARE) & in_bone[:, None] & ~in_cement[:, None] & (c_l.sum(axis=-1) > 0)
            & np.isfinite(fit.width_mm) & ~bright)
    wmap = np.where(cell, fit.width_mm, np.nan)
    # per angle: median over the positions along the screw (the vertebral body's many positions
    # outvote the few in a narrow pedicle, where cortex and canal lie within the rays)
    n_cells = cell.sum(axis=0)
    valid = n_cells >= max(2.0, settings.min_valid_fraction * np.count_nonzero(in_bone & ~in_cement))
    if not valid.any():
        valid = n_cells > 0
    w_ang = _column_medians(wmap, valid)
    bone_ang = _column_medians(np.where(cell, fit.bone_hu, np.nan), valid)
    rim_ang = _column_medians(np.where(cell, fit.rim_hu, np.nan), valid)
    halo = _summarise(w_ang, bone_ang, rim_ang, valid, wmap, rays.positions_mm, screw, settings, blur_sigma_mm)
    if in_cement.any():
        note = (f"cement-bone interface not measured: halo read on the uncemented "
                f"{np.count_nonzero(in_bone & ~in_cement) * settings.position_step_mm:.0f} mm of the shaft")
        halo = replace(halo, reason="; ".join(x for x in (halo.reason, note) if x))
    return HaloDetail(halo=halo, edges=edges, rays=rays, in_bone=in_bone, streak=samples.streak,
                      angle_width_mm=w_ang, angle_bone_hu=bone_ang, angle_rim_hu=rim_ang,
                      valid_angles=valid, clip_hu=samples.clip_hu)


def _summarise(w_ang: np.ndarray, bone_ang: np.ndarray, rim_ang: np.ndarray, valid: np.ndarray, wmap: np.ndarray,
               positions_mm: np.ndarray, screw: Screw, settings: HaloSettings,
               blur_sigma_mm: Sequence[float] | None) -> HaloMeasurement:
    """Per-screw figures and the loosening call from the per-angle widths and the width map."""
    thr = settings.min_width_mm
    wv = w_ang[valid]
    w_s = np.where(valid, _circular_median(np.where(valid, w_ang, 0.0), settings.max_smoothing), 0.0)
    # widest arc's plateau: median over the angles within half of the peak width, after a circular
    # median over ``max_smoothing`` angles (robust to the noise maximum of many angles and to short
    # arcs of spurious width where rays leave a narrow pedicle or cross a streak)
    peak = float(w_s.max())
    max_w = float(np.median(w_s[valid & (w_s >= 0.5 * peak)])) if peak > 0 else 0.0
    mean_w = float(np.mean(wv)) if wv.size else 0.0
    # share of the circumference on the same circular-median profile: single angles scattering
    # around the threshold neither add nor remove arc
    frac = float(np.count_nonzero(w_s[valid] >= thr) / max(wv.size, 1))
    loc = ""
    fin = np.isfinite(wmap)
    if max_w > 0 and fin.any():
        n = fin.sum(axis=1)
        prof_pos = np.where(n > 0, np.where(fin, wmap, 0.0).sum(axis=1) / np.maximum(n, 1), -1.0)
        length = float(np.linalg.norm(np.subtract(screw.tip_lps, screw.entry_lps)))
        pk = positions_mm[int(np.argmax(prof_pos))] / length
        loc = "entry" if pk < 1 / 3 else ("mid" if pk < 2 / 3 else "tip")
    rim_excess = np.nan_to_num(rim_ang - bone_ang, nan=0.0)
    # over all measured angles: a rim lies just beyond the edge however narrow the halo (those of 0.5-0.7 mm
    # with a rim read 0.4-0.5 mm, below any width cut-off)
    rim = bool(valid.any() and np.count_nonzero(valid & (rim_excess >= settings.rim_min_contrast_hu))
               >= settings.rim_min_fraction * np.count_nonzero(valid))
    loosened: bool | None = bool(max_w >= thr and frac >= settings.min_circumference_fraction)
    measured = float(np.count_nonzero(valid) / valid.size)
    reason = ""
    if measured < settings.min_measured_fraction:
        loosened = None
        reason = (f"halo measurable on {100 * measured:.0f} % of the circumference (bone off metal streaks); "
                  f"a call needs {100 * settings.min_measured_fraction:.0f} %")
    arc = valid & (w_s >= 0.5 * peak) if peak > 0 else valid
    se = _widest_arc_se(wmap[:, arc], positions_mm, settings)
    return HaloMeasurement(widest_arc_mm=round(max_w, 2), mean_width_mm=round(mean_w, 2),
                           circumference_fraction=round(frac, 3), loosened=loosened, sclerotic_rim=rim,
                           location=loc, width_map_mm=wmap.astype(np.float32),
                           blur_sigma_mm=None if blur_sigma_mm is None else tuple(float(b) for b in blur_sigma_mm),
                           widest_arc_se_mm=None if se is None else round(se, 2), measured_fraction=round(measured, 3),
                           reason=reason)


def _widest_arc_se(arc_widths: np.ndarray, positions_mm: np.ndarray, settings: HaloSettings) -> float | None:
    """Standard error (mm) of the widest arc's width, a median along the screw: 1.2533 SD / sqrt(n) of
    the arc's mean width per ray plane, with n the planes over ``block_length_mm`` (the cells pool that
    length, so neighbouring planes are not independent). None with fewer than two planes."""
    fin = np.isfinite(arc_widths)
    per_plane = np.where(fin, arc_widths, 0.0).sum(axis=1) / np.maximum(fin.sum(axis=1), 1)
    per_plane = per_plane[fin.any(axis=1)]
    if per_plane.size < 2:
        return None
    step = float(positions_mm[1] - positions_mm[0]) if positions_mm.size > 1 else settings.block_length_mm
    n = max(1.0, per_plane.size * step / settings.block_length_mm)
    return float(1.2533 * np.std(per_plane, ddof=1) / np.sqrt(n))


def _circular_median(x: np.ndarray, size: int) -> np.ndarray:
    if size <= 1:
        return x
    return ndimage.median_filter(x, size=size, mode="wrap")


def measure_halo(volume: Volume, screw: Screw, settings: HaloSettings, hardware: ScrewSettings, *,
                 blur_sigma_mm: Sequence[float] | None = None) -> HaloMeasurement:
    """Measure the radiolucent zone (halo) around one screw.

    Parameters
    ----------
    volume : Volume
        CT in HU (saturated at 3071 HU or extended scale).
    screw : Screw
        Detected screw; ``diameter_mm`` is the thread-crest diameter (nominal or
        bloom-corrected measurement), so the halo is measured from ``diameter_mm / 2``.
    settings : HaloSettings
    hardware : ScrewSettings
        The screws' thread geometry, metal HU and the clipped-scale test.
    blur_sigma_mm : sequence of float or None
        The scanner's blur (SD of the Gaussian PSF, mm) per orientation sector if known, e.g.
        shared by all screws of the scan (:func:`measure_screws`); None = fitted to this screw alone.

    Returns
    -------
    HaloMeasurement
        ``widest_arc_mm`` (the widest arc's width after a circular median over
        ``max_smoothing`` angles, see :class:`~bmdpipe.results.HaloMeasurement`), ``mean_width_mm``
        (mean over the valid circumference, halo-free angles counting 0),
        ``circumference_fraction`` (share of valid angles whose circular-median width is at least
        ``min_width_mm``), ``loosened`` (``widest_arc_mm >= min_width_mm`` and that share
        ``>= min_circumference_fraction``), ``sclerotic_rim``, ``location`` (entry / mid / tip
        third with the widest halo) and ``width_map_mm`` (positions x angles, NaN outside bone or
        on streaks).
    """
    return measure_halo_detail(volume, screw, settings, hardware, blur_sigma_mm=blur_sigma_mm).halo


def measure_halo_details(volume: Volume, screws: Sequence[Screw], settings: HaloSettings,
                         hardware: ScrewSettings) -> list[HaloDetail]:
    """The halo of each screw of a scan, with the profiles and fits behind it (:func:`measure_halo_detail`).

    The scan's blur is one PSF for all its screws: with at least ``shared_blur_min_screws``
    screws it is, per orientation sector, the median of their separate edge-spread fits (one
    screw's fit can trade blur against the tissue next to it, e.g. with a halo on part of the
    circumference or cortex close by), and every halo is then measured with it
    (``HaloMeasurement.blur_sigma_mm``). With ``metal_artefact_reduction: nmar`` the halos are measured
    on the volume after :func:`reduce_metal_artefacts`.
    """
    volume = _halo_volume(volume, settings) if screws else volume
    samples = [sample_screw(volume, s, settings, hardware) for s in screws]
    blur = None
    if len(screws) >= settings.shared_blur_min_screws:
        blur = tuple(np.median([[e.sigma_mm for e in fit_metal(x, settings, hardware)] for x in samples], axis=0))
    return [_measure_samples(x, s, settings, hardware, blur) for s, x in zip(screws, samples)]


def _halo_volume(volume: Volume, settings: HaloSettings) -> Volume:
    """The volume the halos are read on: after :func:`reduce_metal_artefacts` when the settings ask for it."""
    return reduce_metal_artefacts(volume, settings) if settings.metal_artefact_reduction == "nmar" else volume


def reduce_metal_artefacts(volume: Volume, settings: HaloSettings) -> Volume:
    """The volume with NMAR (:mod:`bmdpipe.screws.mar`) applied to each slice that holds metal; the
    others, and the metal's own voxels, unchanged."""
    from .mar import MarParameters, nmar_array

    return replace(volume, array=nmar_array(volume.array, volume.spacing[1:], MarParameters.of(settings)))


def measure_screws(volume: Volume, screws: Sequence[Screw], settings: HaloSettings,
                   hardware: ScrewSettings) -> list[Screw]:
    """Copies of ``screws`` with ``halo`` filled in, measured with the scan's shared blur
    (:func:`measure_halo_details`)."""
    return [replace(s, halo=d.halo) for s, d in zip(screws, measure_halo_details(volume, screws, settings, hardware))]
