"""Radiolucent halo (loosening) around a pedicle screw from radial profiles.

The image is sampled on rays perpendicular to the screw axis (``n_angles`` directions at
every ``position_step_mm`` along the part of the screw inside bone) with one vectorised
``scipy.ndimage.map_coordinates`` call on a cropped box. Each profile is explained by an
edge-spread model (see :mod:`bmdpipe.screws.esf`):

    I(r) = B + A S(r; R, s) + (H - B) band(r; R, R + w) + (Q - B) band(r; R + w, R + w + q)

with the true metal surface (thread crests) at ``diameter / 2``, not the bloom. The metal
term ``A S`` is the screw's fitted edge-spread model (mean metal radius of the threaded
shaft, blur, amplitude; fitted on voxel centres) rendered on the CT grid, clipped like the
scanner, and sampled by the very same interpolation as the data, so blooming, saturation
and interpolation cancel out. ``H`` is the lucent tissue level (``lucent_hu``); per ray the
halo width ``w`` (grid search, sub-grid refined), the bone level ``B`` and the rim level
``Q`` (linear least squares) are fitted. A lucent halo also fills the thread valleys, so for
``w > 0`` the band starts at the mean metal radius. A sclerotic rim ("double halo") is a rim
level well above bone. Rays whose outer part is far darker than the screw's typical bone are
photon-starvation streaks and are left out before averaging (they neither make nor hide a
halo).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Sequence

import numpy as np
from scipy import ndimage

from ..config import HaloSettings
from ..errors import ScrewError
from ..results import HaloMeasurement, Screw
from ..volume import Volume
from .esf import (EdgeFit, band, fit_edge_spread, interpolation_sigma_mm, metal_excess, step, threaded_step,
                  voxels_near_axis)

__all__ = ["RayProfiles", "sample_rays", "metal_template", "fit_ray_widths", "measure_halo",
           "measure_screws", "HaloDetail", "measure_halo_detail"]


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


def metal_template(radii_mm: np.ndarray, edge: EdgeFit, *, interp_sigma_mm: float = 0.0) -> np.ndarray:
    """Mean metal HU excess over background on interpolated rays at ``radii_mm``.

    The fitted edge-spread model (threads blurred and clipped per thread phase, see
    :func:`bmdpipe.screws.esf.metal_excess`), further averaged over the spread that linear
    interpolation of the clipped voxels adds (Gauss-Hermite over ``N(0, interp_sigma_mm)``).
    """
    r = np.asarray(radii_mm, dtype=float)
    if interp_sigma_mm <= 0:
        return metal_excess(r, edge)
    x, w = np.polynomial.hermite_e.hermegauss(7)
    w = w / w.sum()
    return sum(wk * metal_excess(r + interp_sigma_mm * xk, edge) for xk, wk in zip(x, w))


@dataclass(frozen=True)
class RayFit:
    """Per-ray fit results (arrays of the rays' shape)."""

    width_mm: np.ndarray
    bone_hu: np.ndarray
    rim_hu: np.ndarray
    sse: np.ndarray


def fit_ray_widths(profiles: np.ndarray, metal: np.ndarray, radii_mm: np.ndarray, *, crest_radius_mm: float,
                   thread_depth_mm: float, sigma_mm: float, settings: HaloSettings) -> RayFit:
    """Halo width, bone and rim level of every ray by a vectorised grid search.

    Parameters
    ----------
    profiles : (..., N) ndarray
        HU along each ray at ``radii_mm``.
    metal : (..., N) ndarray
        Metal HU excess along the same rays (:func:`metal_template`).
    radii_mm : (N,) ndarray
    crest_radius_mm : float
        Thread-crest radius (diameter / 2): the halo width is measured from here, mm.
    thread_depth_mm : float
        Thread depth; a halo also fills the thread valleys.
    sigma_mm : float
        Blur of the lucent band's edges on the rays, mm.
    settings : HaloSettings

    Returns
    -------
    RayFit
        ``width_mm``: lucent band beyond the thread crests (0 = none), refined below
        ``width_grid_step_mm`` by a parabola through the cost minimum.
    """
    r = np.asarray(radii_mm, dtype=float)
    shp = profiles.shape[:-1]
    y = profiles.reshape(-1, r.size).astype(float)
    mt = np.broadcast_to(metal, profiles.shape).reshape(-1, r.size).astype(float)
    # ignore the metal-dominated core: a few % modelling error of thousands of HU would swamp
    # a lucent band of ~100 HU
    w8 = np.clip((settings.max_metal_excess_hu - mt) / (0.8 * settings.max_metal_excess_hu), 0.0, 1.0)
    w8[:, r < crest_radius_mm - thread_depth_mm] = 0.0
    bad = ~np.isfinite(y)
    w8[bad] = 0.0
    y = np.where(bad, 0.0, y)
    H = settings.lucent_hu
    widths = np.arange(0.0, settings.max_width_mm + 1e-9, settings.width_grid_step_mm)
    q = settings.rim_width_mm
    sse = np.empty((y.shape[0], widths.size))
    bone = np.empty_like(sse)
    rim = np.empty_like(sse)
    valleys = threaded_step(r, crest_radius_mm, thread_depth_mm, sigma_mm)
    for n, w in enumerate(widths):
        outer = crest_radius_mm + w
        # lucent: everything inside crest + w that is not metal (thread valleys included)
        b = step(r, outer, sigma_mm) - valleys if w > 0 else np.zeros_like(r)
        rb = band(r, outer, outer + q, sigma_mm)
        f1 = 1.0 - b - rb
        f2 = rb
        tgt = y - mt - H * b
        a11 = (w8 * f1 * f1).sum(axis=1)
        a12 = (w8 * f1 * f2).sum(axis=1)
        a22 = (w8 * f2 * f2).sum(axis=1)
        c1 = (w8 * tgt * f1).sum(axis=1)
        c2 = (w8 * tgt * f2).sum(axis=1)
        det = a11 * a22 - a12 * a12
        det = np.where(np.abs(det) > 1e-9, det, 1e-9)
        B2 = (a22 * c1 - a12 * c2) / det
        Q2 = (a11 * c2 - a12 * c1) / det
        g = f1 + f2  # rim not darker than bone: otherwise bone only (Q = B)
        B1 = (w8 * tgt * g).sum(axis=1) / np.maximum((w8 * g * g).sum(axis=1), 1e-9)
        use1 = Q2 < B2
        Bn = np.where(use1, B1, B2)
        Qn = np.where(use1, B1, Q2)
        res = tgt - Bn[:, None] * f1 - Qn[:, None] * f2
        sse[:, n] = (w8 * res * res).sum(axis=1)
        bone[:, n] = Bn
        rim[:, n] = Qn
    k = np.argmin(sse, axis=1)
    rows = np.arange(y.shape[0])
    km = np.clip(k, 2, widths.size - 2)
    s0, s1, s2 = sse[rows, km - 1], sse[rows, km], sse[rows, km + 1]
    den = s0 - 2 * s1 + s2
    off = np.clip(np.where(den > 0, 0.5 * (s0 - s2) / np.where(den > 0, den, 1.0), 0.0), -1.0, 1.0)
    wbest = np.where((k >= 2) & (k < widths.size - 1), widths[km] + off * settings.width_grid_step_mm, widths[k])
    wbest = np.clip(wbest, 0.0, settings.max_width_mm)
    return RayFit(width_mm=wbest.reshape(shp), bone_hu=bone[rows, k].reshape(shp),
                  rim_hu=rim[rows, k].reshape(shp), sse=sse[rows, k].reshape(shp))


@dataclass(frozen=True)
class HaloDetail:
    """Everything measured around one screw (for QC and tests)."""

    halo: HaloMeasurement
    edge: EdgeFit
    rays: RayProfiles
    metal: np.ndarray  # (P, A, N) metal template on the rays
    in_bone: np.ndarray  # (P,) bool
    streak: np.ndarray  # (P, A) bool
    angle_width_mm: np.ndarray  # (A,) whole-length width per angle (NaN = invalid)
    angle_bone_hu: np.ndarray
    angle_rim_hu: np.ndarray
    valid_angles: np.ndarray  # (A,) bool
    clip_hu: float | None


def _clip_level(values: np.ndarray) -> float | None:
    top = float(np.nanmax(values))
    if top < 2000.0:
        return None
    n_top = np.count_nonzero(values >= top - 0.5)
    return top if n_top >= 5 and n_top >= 0.01 * np.count_nonzero(values > 2000.0) else None


def _weighted_mean(x: np.ndarray, w: np.ndarray, axis: int) -> np.ndarray:
    ws = w.sum(axis=axis)
    return np.where(ws > 0, (x * w).sum(axis=axis) / np.where(ws > 0, ws, 1.0), np.nan)


def measure_halo_detail(volume: Volume, screw: Screw, settings: HaloSettings) -> HaloDetail:
    """Measure the halo around one screw; see :func:`measure_halo` (this also returns the
    intermediate profiles and fits)."""
    e = np.asarray(screw.entry_lps, dtype=float)
    t = np.asarray(screw.tip_lps, dtype=float)
    length = float(np.linalg.norm(t - e))
    R = screw.diameter_mm / 2.0
    if not (length > 0 and R > 0):
        raise ScrewError(f"screw at {screw.entry_lps} has length {length:.1f} mm and diameter "
                         f"{screw.diameter_mm:.1f} mm; both must be positive (re-run detection)")
    td = min(settings.thread_depth_mm, 0.5 * R)
    p0, p1 = settings.skip_entry_mm, length - settings.skip_tip_mm
    if p1 - p0 < 3 * settings.position_step_mm:
        p0, p1 = 0.2 * length, 0.9 * length
    positions = np.arange(p0, p1 + 1e-9, settings.position_step_mm)
    radii = np.arange(0.0, R + settings.search_mm + 1e-9, settings.radial_step_mm)
    rays = sample_rays(volume, e, t, positions_mm=positions, radii_mm=radii, n_angles=settings.n_angles)
    vals = rays.values
    clip = _clip_level(vals)
    H = settings.lucent_hu
    far = radii > radii[-1] - 2.0
    far_ray = np.median(vals[:, :, far], axis=2)  # (P, A)
    ring = np.median(far_ray, axis=1)
    in_bone = ring >= settings.min_bone_hu
    if np.count_nonzero(in_bone) < 3:
        in_bone = np.ones(len(positions), dtype=bool)
    bone_ref = float(np.median(far_ray[in_bone]))
    streak = far_ray < bone_ref - settings.streak_drop_fraction * max(bone_ref - H, settings.min_contrast_hu)
    pos_in = positions[in_bone]
    _, rv, pv, hv = voxels_near_axis(volume, e, t, t_range_mm=(float(pos_in.min()), float(pos_in.max())),
                                     r_max_mm=float(radii[-1]))
    edge = fit_edge_spread(rv, hv, clip_hu=clip, fixed_radius_mm=R, metal_hu_prior=settings.metal_hu,
                           thread_depth_mm=td)
    # blur per angular sector: voxel size and PSF differ in-plane and along z
    th_v = np.mod(np.arctan2(pv @ rays.v, pv @ rays.u), 2 * np.pi)
    n_sec = settings.esf_sectors
    sec = np.minimum((th_v / (2 * np.pi) * n_sec).astype(int), n_sec - 1)
    sig_sec = np.full(n_sec, edge.sigma_mm)
    for k in range(n_sec if n_sec > 1 else 0):
        sel = sec == k
        if np.count_nonzero(sel) > 200:
            sig_sec[k] = fit_edge_spread(rv[sel], hv[sel], clip_hu=clip, fixed_radius_mm=R,
                                         metal_hu_prior=settings.metal_hu, thread_depth_mm=td).sigma_mm
    centres = (np.arange(n_sec) + 0.5) * 2 * np.pi / n_sec
    sig_a = np.interp(rays.angles_rad, centres, sig_sec, period=2 * np.pi)
    # linear interpolation blurs each ray by its own spread (anisotropic voxels): per angle
    dirs = np.cos(rays.angles_rad)[:, None] * rays.u + np.sin(rays.angles_rad)[:, None] * rays.v
    d_idx = dirs @ np.asarray(volume.direction, dtype=float)  # components along i, j, k
    h = np.asarray(volume.spacing, dtype=float)[::-1]
    s_int_a = np.sqrt((d_idx ** 2 * h ** 2 / 6.0).sum(axis=1))  # (A,)
    if not settings.per_angle_interpolation:
        s_int_a = np.full_like(s_int_a, interpolation_sigma_mm(volume.spacing, rays.axis, volume.direction))
    metal_a = np.stack([metal_template(radii, replace(edge, sigma_mm=float(sg)), interp_sigma_mm=float(si))
                        for sg, si in zip(sig_a, s_int_a)])
    metal = np.broadcast_to(metal_a, vals.shape)
    s_int = interpolation_sigma_mm(volume.spacing, rays.axis, volume.direction)
    s_band = float(np.hypot(edge.sigma_mm, s_int))
    ok = (in_bone[:, None] & ~streak).astype(float)  # (P, A)
    # whole-length profile per angle (streak rays left out), smoothed over neighbouring angles
    k_ang = settings.angle_smoothing
    wsum = ok.sum(axis=0)
    vsum = (vals * ok[:, :, None]).sum(axis=0)
    msum = (metal * ok[:, :, None]).sum(axis=0)
    if k_ang > 1:
        wsum_s = ndimage.uniform_filter1d(wsum, k_ang, mode="wrap")
        vsum = ndimage.uniform_filter1d(vsum, k_ang, axis=0, mode="wrap")
        msum = ndimage.uniform_filter1d(msum, k_ang, axis=0, mode="wrap")
    else:
        wsum_s = wsum
    valid = wsum >= max(2.0, settings.min_valid_fraction * np.count_nonzero(in_bone))
    denom = np.where(wsum_s > 0, wsum_s, 1.0)[:, None]
    prof_ang = np.where(valid[:, None], vsum / denom, np.nan)
    metal_ang = msum / denom
    geo = dict(crest_radius_mm=R, thread_depth_mm=td, sigma_mm=s_band, settings=settings)
    fit_a = fit_ray_widths(prof_ang, metal_ang, radii, **geo)
    if not valid.any():
        valid = np.ones_like(valid)
    w_ang = np.where(valid, fit_a.width_mm, np.nan)
    # local map: sliding window of block_length_mm along the screw (location and QC)
    nwin = max(1, int(round(settings.block_length_mm / settings.position_step_mm)))
    okw = ndimage.uniform_filter1d(ok, nwin, axis=0, mode="nearest")
    vloc = ndimage.uniform_filter1d(vals * ok[:, :, None], nwin, axis=0, mode="nearest")
    mloc = ndimage.uniform_filter1d(metal * ok[:, :, None], nwin, axis=0, mode="nearest")
    if k_ang > 1:
        okw = ndimage.uniform_filter1d(okw, k_ang, axis=1, mode="wrap")
        vloc = ndimage.uniform_filter1d(vloc, k_ang, axis=1, mode="wrap")
        mloc = ndimage.uniform_filter1d(mloc, k_ang, axis=1, mode="wrap")
    dl = np.where(okw > 0, okw, 1.0)[:, :, None]
    fit_l = fit_ray_widths(vloc / dl, mloc / dl, radii, **geo)
    wmap = np.where((okw > 0.3) & in_bone[:, None], fit_l.width_mm, np.nan)

    thr = settings.min_width_mm
    wv = w_ang[valid]
    w_s = np.where(valid, _circular_median(np.where(valid, fit_a.width_mm, 0.0), settings.max_smoothing), 0.0)
    # widest arc's plateau: median over the angles within half of the peak width, after a circular
    # median over ``max_smoothing`` angles (robust to the noise maximum of many angles and to short
    # arcs of spurious width where rays leave a narrow pedicle or cross a streak)
    peak = float(w_s.max())
    max_w = float(np.median(w_s[valid & (w_s >= 0.5 * peak)])) if peak > 0 else 0.0
    mean_w = float(np.mean(wv))
    frac = float(np.count_nonzero(wv >= thr) / wv.size)
    loc = ""
    fin = np.isfinite(wmap)
    if max_w > 0 and fin.any():
        cnt = fin.sum(axis=1)
        prof_pos = np.where(cnt > 0, np.where(fin, wmap, 0.0).sum(axis=1) / np.maximum(cnt, 1), -1.0)
        pk = positions[int(np.argmax(prof_pos))] / length
        loc = "entry" if pk < 1 / 3 else ("mid" if pk < 2 / 3 else "tip")
    rim_excess = fit_a.rim_hu - fit_a.bone_hu
    haloed = valid & (fit_a.width_mm >= 0.5 * thr)
    rim = bool(haloed.any() and np.count_nonzero(haloed & (rim_excess >= settings.rim_min_contrast_hu))
               >= settings.rim_min_fraction * np.count_nonzero(haloed))
    loosened = bool(max_w >= thr and frac >= settings.min_circumference_fraction)
    halo = HaloMeasurement(max_width_mm=round(max_w, 2), mean_width_mm=round(mean_w, 2),
                           circumference_fraction=round(frac, 3), loosened=loosened, sclerotic_rim=rim,
                           location=loc, width_map_mm=wmap.astype(np.float32))
    return HaloDetail(halo=halo, edge=edge, rays=rays, metal=metal, in_bone=in_bone, streak=streak,
                      angle_width_mm=w_ang, angle_bone_hu=fit_a.bone_hu, angle_rim_hu=fit_a.rim_hu,
                      valid_angles=valid, clip_hu=clip)


def _circular_median(x: np.ndarray, size: int) -> np.ndarray:
    if size <= 1:
        return x
    return ndimage.median_filter(x, size=size, mode="wrap")


def measure_halo(volume: Volume, screw: Screw, settings: HaloSettings) -> HaloMeasurement:
    """Measure the radiolucent zone (halo) around one screw.

    Parameters
    ----------
    volume : Volume
        CT in HU (saturated at 3071 HU or extended scale).
    screw : Screw
        Detected screw; ``diameter_mm`` is the thread-crest diameter (nominal or
        bloom-corrected measurement), so the halo is measured from ``diameter_mm / 2``.
    settings : HaloSettings

    Returns
    -------
    HaloMeasurement
        ``max_width_mm`` and ``mean_width_mm`` (mean over the valid circumference, halo-free
        angles counting 0), ``circumference_fraction`` (share of valid angles with a halo of at
        least ``min_width_mm``), ``loosened`` (``max_width_mm >= min_width_mm`` and that share
        ``>= min_circumference_fraction``), ``sclerotic_rim``, ``location`` (entry / mid / tip
        third with the widest halo) and ``width_map_mm`` (positions x angles, NaN outside bone or
        on streaks).
    """
    return measure_halo_detail(volume, screw, settings).halo


def measure_screws(volume: Volume, screws: Sequence[Screw], settings: HaloSettings) -> list[Screw]:
    """Copies of ``screws`` with ``halo`` filled in by :func:`measure_halo`."""
    return [replace(s, halo=measure_halo(volume, s, settings)) for s in screws]
