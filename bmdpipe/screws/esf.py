"""Edge-spread model of a blurred metal cylinder (blooming) and its fit.

A screw of radius ``R`` and HU excess ``A`` over the surrounding bone, seen through a
Gaussian point-spread of SD ``sigma``, has at a voxel centre at distance ``r`` from the axis

    I(r) = min(bg + A * S(r; R, sigma), clip),   S(r; x, sigma) = erfc((r - x) / (sqrt(2) sigma)) / 2

(1-D edge approximation, good for R > 3 sigma), clipped at the scanner's saturation
(3071 HU on a 12-bit scale). The true metal surface is at ``R``, where the *unclipped*
profile is at half height; blooming is everything beyond it. The fit uses voxel centres
(exact radii, no interpolation across clipped voxels), so the visible tail pins ``R`` even
when the half-height point is saturated. The halo measurement subtracts the fitted model
from voxel centres for the same reason (:mod:`bmdpipe.screws.halo`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.optimize import least_squares
from scipy.special import chndtr, erfc

__all__ = ["step", "step_1d", "threaded_step", "metal_excess", "band", "EdgeFit", "fit_edge_spread", "voxels_near_axis"]

_SQRT2 = np.sqrt(2.0)


#: an axis refinement needs at least this many voxels around the metal's edge
MIN_AXIS_VOXELS = 50
#: the model is tabulated on a radial grid of this step, mm (interpolated between: < 0.01 HU error)
MODEL_GRID_MM = 0.01
#: an axis refinement moves each end by at most this, and the radius by at most MAX_RADIUS_CHANGE_MM:
#: the thresholded metal's line is a few tenths of a mm off, mm
MAX_AXIS_SHIFT_MM = 1.5
MAX_RADIUS_CHANGE_MM = 1.0
#: the background (the tissue around the metal) is the median of the outermost mm of the samples
BACKGROUND_RING_MM = 2.0
#: the metal radius the fit starts from when no sample stands half-way above the background, mm
#: (pedicle screws: 5.5-7.5 mm thread diameter, science.md)
START_RADIUS_MM = 3.0
#: the fit starts with these blurs (SD of the Gaussian PSF: sharp and standard body kernels), mm
SIGMA_STARTS_MM = (0.4, 0.9)
#: the blur is searched in this range, mm (PSF FWHM 0.25-6 mm: any clinical kernel)
SIGMA_BOUNDS_MM = (0.1, 2.5)
#: the metal's excess over its background is searched in this range, HU (titanium ~6500 HU, cobalt-chrome more)
AMPLITUDE_BOUNDS_HU = (100.0, 30000.0)
#: a sample at the clip level says only "at least the clip": it weighs this share of a free one
CLIPPED_SAMPLE_WEIGHT = 0.3
#: least-squares parameter scales: radius, blur (mm), amplitude, background (HU)
_X_SCALE = (0.5, 0.3, 1000.0, 100.0)


def step(r: np.ndarray, edge_mm, sigma_mm) -> np.ndarray:
    """Blurred inside-indicator of a disk of radius ``edge_mm`` at distance ``r`` from its centre.

    The 2-D Gaussian (SD ``sigma_mm``) blur of a disk: ``P(|X| <= R)`` for ``X ~ N(r, sigma^2 I)``,
    the Rice distribution's CDF, i.e. the non-central chi-square CDF with 2 degrees of freedom and
    non-centrality ``(r / sigma)^2`` at ``(R / sigma)^2`` (``scipy.special.chndtr``). Unlike the 1-D
    ``erfc`` edge it includes the curvature of the screw surface, which matters at metal contrast.
    ``r`` and ``edge_mm`` broadcast against each other (e.g. several disk radii at once).
    """
    r = np.asarray(r, dtype=float)
    R = np.maximum(np.asarray(edge_mm, dtype=float), 0.0)
    s = float(sigma_mm)
    return chndtr((R / s) ** 2, 2.0, (r / s) ** 2)


_TH_X, _TH_W = np.polynomial.legendre.leggauss(8)

#: Thread phases sampled over one pitch by :func:`_model` (enough for < 0.01 mm on the crest radius).
N_THREAD_PHASES = 16


def threaded_step(r: np.ndarray, crest_mm, thread_depth_mm, sigma_mm) -> np.ndarray:
    """Blurred metal fraction of a threaded shaft at distance ``r`` from the axis.

    Triangular threads make the metal fraction fall linearly from 1 at the core radius
    (``crest - thread_depth``) to 0 at the crest; the result is that ramp blurred by the 2-D
    Gaussian PSF (mean of disk steps over the ramp). ``thread_depth_mm = 0`` is a plain cylinder.
    """
    if thread_depth_mm <= 1e-6:
        return step(r, crest_mm, sigma_mm)
    xs = crest_mm - 0.5 * thread_depth_mm * (_TH_X + 1.0)
    out = np.zeros(np.shape(r), dtype=float)
    for x, w in zip(xs, _TH_W):
        out += 0.5 * w * step(r, x, sigma_mm)
    return out


def step_1d(r: np.ndarray, edge_mm, sigma_mm) -> np.ndarray:
    """Blurred 1-D inside-indicator ``erfc((r - edge) / (sqrt2 sigma)) / 2`` (along an axis)."""
    return 0.5 * erfc((np.asarray(r) - edge_mm) / (_SQRT2 * sigma_mm))


def band(r: np.ndarray, inner_mm, outer_mm, sigma_mm) -> np.ndarray:
    """Blurred indicator of the annulus ``inner <= r < outer`` (mm)."""
    return step(r, outer_mm, sigma_mm) - step(r, inner_mm, sigma_mm)


@dataclass(frozen=True)
class EdgeFit:
    """Fitted edge-spread model of one screw (mm, HU).

    Attributes
    ----------
    radius_mm : float
        Thread-crest (outer) radius of the metal, mm.
    sigma_mm : float
        Gaussian SD of the blur (PSF and voxel size; blooming follows from it) at voxel centres, mm.
    amplitude_hu : float
        Metal HU excess over the background (unclipped).
    background_hu : float
        HU of the surrounding bone.
    halo_depth_hu, halo_width_mm : float
        Mean lucent band in the fitted profile (depth below background, width beyond R).
    rms_hu : float
        Residual RMS of the fit over unclipped samples.
    clip_hu : float or None
        Saturation level used (None = extended scale).
    """

    radius_mm: float
    sigma_mm: float
    amplitude_hu: float
    background_hu: float
    halo_depth_hu: float = 0.0
    halo_width_mm: float = 0.0
    rms_hu: float = 0.0
    clip_hu: float | None = None
    thread_depth_mm: float = 0.0
    thread_pitch_mm: float = 2.8


def _thread_phase_radii(crest_mm: float, thread_depth_mm: float, pitch_mm: float) -> tuple[np.ndarray, np.ndarray]:
    """Positions along one thread pitch (mm) and the triangular thread's metal radius there (mm)."""
    t = (np.arange(N_THREAD_PHASES) + 0.5) / N_THREAD_PHASES * pitch_mm
    tooth = 1.0 - 2.0 * np.abs(t / pitch_mm - 0.5)  # 0 in the valley, 1 at the crest
    return t, crest_mm - thread_depth_mm + thread_depth_mm * tooth


def metal_fraction(r: np.ndarray, radius_mm: float, sigma_mm: float, td: float = 0.0,
                   pitch: float = 2.8) -> np.ndarray:
    """Blurred metal fraction of a threaded shaft per thread phase, before the scanner clips.

    The shaft is approximated as axially symmetric threads (triangular, depth ``td``, pitch
    ``pitch``, mm): at axial position ``t`` the metal is a disk of radius ``x(t)``. The 3-D
    Gaussian PSF (SD ``sigma_mm``) is the 2-D blur of that disk (:func:`step`) convolved along the
    axis with the same SD, so the blur mixes neighbouring thread phases.

    Returns
    -------
    (phases, ...) ndarray
        Fraction 0..1 at distance ``r`` (mm) from the axis for each of :data:`N_THREAD_PHASES`
        phases (one row for a plain cylinder, ``td = 0``).
    """
    if td <= 1e-6:
        return step(r, radius_mm, sigma_mm)[None]
    t, xs = _thread_phase_radii(radius_mm, td, pitch)
    # a triangular tooth takes each radius twice per pitch: blur each distinct disk once
    radii, which = np.unique(xs, return_inverse=True)
    r = np.asarray(r, dtype=float)
    disks = step(r[None], radii.reshape((-1,) + (1,) * r.ndim), sigma_mm)[which]  # (phases, ...)
    d = np.mod(t[:, None] - t[None, :] + 0.5 * pitch, pitch) - 0.5 * pitch
    axial = np.exp(-0.5 * (d / sigma_mm) ** 2)
    axial /= axial.sum(axis=1, keepdims=True)
    return np.tensordot(axial, disks, axes=1)


def clipped_profile(fraction: np.ndarray, r: np.ndarray, p, clip) -> np.ndarray:
    """Mean HU over the thread phases of ``bg + amp * fraction`` clipped at ``clip`` (None: not
    clipped), minus the lucent band of ``p = (radius, sigma, amp, bg, depth, width)`` (mm, HU)."""
    radius, sigma, amp, bg, depth, width = p
    y = bg + amp * fraction
    if clip is not None:
        y = np.minimum(y, clip)
    lucent = depth * (step_1d(r, radius + width, sigma) - step_1d(r, radius, sigma))
    return y.mean(axis=0) - lucent


#: blurred metal fractions a :class:`_ShaftModel` keeps (one Jacobian's points and the next step)
_CACHED_FRACTIONS = 4


class _ShaftModel:
    """:func:`_model` at fixed sample radii ``r``, remembering the last blur of the metal.

    A least-squares fit differentiates numerically, so most of its evaluations change only the
    amplitude, background or axis offsets; the blurred metal fraction depends on the radius and
    blur alone and is reused for them (same numbers, a fraction of the time).
    """

    def __init__(self, r: np.ndarray, clip, td: float, pitch: float):
        self.r, self.clip, self.td, self.pitch = r, clip, td, pitch
        self._fractions: dict[tuple[float, float], np.ndarray] = {}

    def __call__(self, p) -> np.ndarray:
        key = (float(p[0]), float(p[1]))
        fraction = self._fractions.get(key)
        if fraction is None:
            # a finite-difference Jacobian steps the radius, then the blur, then the other parameters
            # about the same point: keep the few fractions one iteration visits
            if len(self._fractions) >= _CACHED_FRACTIONS:
                self._fractions.pop(next(iter(self._fractions)))
            fraction = self._fractions[key] = metal_fraction(self.r, key[0], key[1], self.td, self.pitch)
        return clipped_profile(fraction, self.r, p, self.clip)


def _model(p, r, clip, td=0.0, pitch=2.8):
    """Mean HU at distance ``r`` from the axis of a blurred, clipped, threaded shaft.

    ``p = (radius, sigma, amp, bg, depth, width)``: :func:`metal_fraction` per thread phase, then
    ``bg + amp * fraction`` clipped and averaged over one pitch (:func:`clipped_profile`). The
    blur mixes thread phases *before* the scanner clips; clipping each phase alone assumes
    resolved threads and biases the crest radius by 0.15-0.25 mm on 3071-HU images; mixing them
    brings this below 0.02 mm on continuously blurred test objects.
    """
    return clipped_profile(metal_fraction(r, p[0], p[1], td, pitch), r, p, clip)


def metal_excess(r: np.ndarray, edge: "EdgeFit") -> np.ndarray:
    """Mean metal HU excess over background at distance ``r`` under the fitted model."""
    p = [edge.radius_mm, edge.sigma_mm, edge.amplitude_hu, edge.background_hu, 0.0, 0.0]
    return _model(p, np.asarray(r, dtype=float), edge.clip_hu, edge.thread_depth_mm,
                  edge.thread_pitch_mm) - edge.background_hu


def voxels_near_axis(volume, entry_lps, tip_lps, *, t_range_mm: tuple[float, float], r_max_mm: float):
    """Voxel centres near a screw axis, from a cropped box.

    Returns
    -------
    t, r, theta_u_v, values : (M,) ndarrays
        Distance along the axis from the entry (mm), from the axis (mm), the LPS offset
        vector's components (M, 3) and HU of each voxel with ``t`` in ``t_range_mm`` and
        ``r <= r_max_mm``.
    """
    e = np.asarray(entry_lps, dtype=float)
    tip = np.asarray(tip_lps, dtype=float)
    L = np.linalg.norm(tip - e)
    a = (tip - e) / L
    ends = np.array([e + t_range_mm[0] * a, e + t_range_mm[1] * a])
    idx_ends = volume.lps_to_index(ends)
    pad = r_max_mm / np.asarray(volume.spacing) + 2
    shape = np.array(volume.array.shape)
    lo = np.clip(np.floor(idx_ends.min(axis=0) - pad).astype(int), 0, shape - 1)
    hi = np.clip(np.ceil(idx_ends.max(axis=0) + pad).astype(int) + 1, lo + 1, shape)
    box = volume.array[lo[0]:hi[0], lo[1]:hi[1], lo[2]:hi[2]]
    kk, jj, ii = np.meshgrid(*[np.arange(l, h) for l, h in zip(lo, hi)], indexing="ij")
    idx = np.stack([kk.ravel(), jj.ravel(), ii.ravel()], axis=1)
    p = volume.index_to_lps(idx) - e
    t = p @ a
    perp = p - t[:, None] * a
    r = np.linalg.norm(perp, axis=1)
    keep = (t >= t_range_mm[0]) & (t <= t_range_mm[1]) & (r <= r_max_mm)
    return t[keep], r[keep], perp[keep], np.asarray(box, dtype=float).ravel()[keep]


def _binned(r: np.ndarray, y: np.ndarray, bin_mm: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Mean distance and HU, and the sample count, of the non-empty bins of ``bin_mm`` in ``r``."""
    edges = np.arange(r.min(), r.max() + bin_mm, bin_mm)
    which = np.clip(np.digitize(r, edges) - 1, 0, max(len(edges) - 2, 0))
    cnt = np.bincount(which, minlength=len(edges))
    sm = np.bincount(which, weights=y, minlength=len(edges))
    sr = np.bincount(which, weights=r, minlength=len(edges))
    ok = cnt > 0
    return sr[ok] / cnt[ok], sm[ok] / cnt[ok], cnt[ok]


def _start_radius(rb: np.ndarray, yb: np.ndarray, bg: float, amp_guess: float,
                  radius_bounds_mm: tuple[float, float]) -> float:
    """Where the binned profile last stands half-way above the background: a first metal radius, mm."""
    top = float(yb.max())
    above = np.flatnonzero(yb >= bg + 0.5 * min(amp_guess, top - bg))
    r0 = float(rb[above].max()) if above.size else START_RADIUS_MM
    return float(np.clip(r0, *radius_bounds_mm))


def _bounds(radius_bounds_mm, r0: float, fixed_radius_mm: float | None, fixed_sigma_mm: float | None,
            background_bounds_hu: tuple[float, float] | None):
    """Lower and upper bounds of (radius, blur, amplitude[, background]), the start radius and the
    start blurs; a fixed radius or blur is held within 1e-4 mm."""
    fit_bg = background_bounds_hu is not None
    lo = [radius_bounds_mm[0], SIGMA_BOUNDS_MM[0], AMPLITUDE_BOUNDS_HU[0]] + ([background_bounds_hu[0]] if fit_bg else [])
    hi = [radius_bounds_mm[1], SIGMA_BOUNDS_MM[1], AMPLITUDE_BOUNDS_HU[1]] + (
        [background_bounds_hu[1] + 1e-3] if fit_bg else [])
    if fixed_radius_mm is not None:
        r0 = float(fixed_radius_mm)
        lo[0], hi[0] = r0 - 1e-4, r0 + 1e-4
    starts = SIGMA_STARTS_MM
    if fixed_sigma_mm is not None:
        starts = (float(fixed_sigma_mm),)
        lo[1], hi[1] = starts[0] - 1e-4, starts[0] + 1e-4
    return lo, hi, r0, starts


def _metal_samples(rb: np.ndarray, yb: np.ndarray, nb: np.ndarray, bg: float, min_excess_hu: float,
                   clip: float | None):
    """The bins dominated by metal (a halo, a rim or nearby cortex change the profile by a few hundred
    HU, small against the metal's thousands where the excess is large) and their fit weights."""
    use = (yb - bg) >= min_excess_hu
    if np.count_nonzero(use) < 4:
        use = yb >= np.percentile(yb, 50)
    rb, yb, nb = rb[use], yb[use], nb[use]
    weight = np.sqrt(nb)
    if clip is not None:
        weight = np.where(yb >= clip - 1.0, CLIPPED_SAMPLE_WEIGHT * weight, weight)
    return rb, yb, nb, weight


def fit_edge_spread(r_mm: np.ndarray, profile_hu: np.ndarray, *, clip_hu: float | None = None,
                    metal_hu_prior: float = 6500.0, radius_bounds_mm: tuple[float, float] = (1.0, 6.0),
                    fixed_radius_mm: float | None = None, fixed_sigma_mm: float | None = None,
                    bin_mm: float = 0.05,
                    min_excess_hu: float = 1000.0, thread_depth_mm: float = 0.0,
                    thread_pitch_mm: float = 2.8,
                    background_bounds_hu: tuple[float, float] | None = None) -> EdgeFit:
    """Fit the edge-spread model to HU against distance from the axis (metal-dominated part).

    Parameters
    ----------
    r_mm : (N,) ndarray
        Distances of voxel centres from the screw axis, mm (any order).
    profile_hu : (N,) ndarray
        HU of those voxels.
    clip_hu : float or None
        Saturation level of the image (None = extended HU scale).
    metal_hu_prior : float
        Metal HU (titanium ~6500 HU, science.md). When saturation hides the plateau the
        amplitude cannot be separated from the blur by the visible tail alone, so it is held
        at ``metal_hu_prior - background``; on an extended HU scale it is fitted.
    radius_bounds_mm : (lo, hi)
        Allowed metal radius, mm.
    fixed_radius_mm : float or None
        Known metal radius (nominal or measured); only blur, amplitude, background and the
        band are fitted then.
    fixed_sigma_mm : float or None
        Known blur (SD of the Gaussian PSF, mm), e.g. shared by all screws of a scan.
    bin_mm : float
        Samples are averaged in bins of this width in ``r`` before fitting.
    thread_depth_mm : float
        Depth of triangular threads (0 = smooth cylinder); ``radius_mm`` is then the crest.
    thread_pitch_mm : float
        Thread pitch, mm (the blur along the axis mixes thread phases over one pitch).
    min_excess_hu : float
        Only bins at least this far above the background (the outer 2 mm) are fitted, so
        halos, sclerotic rims and nearby cortex (a few hundred HU) barely move the fit.
    background_bounds_hu : (lo, hi) or None
        Fit the background (the tissue the metal's blur spreads into) within these HU, e.g. from
        a lucent halo's to the bone's level. None: the median of the outer 2 mm; with a halo
        touching the metal that misstates it and the fitted blur comes out too narrow.
    """
    r = np.asarray(r_mm, dtype=float)
    y = np.asarray(profile_hu, dtype=float)
    rb, yb, nb = _binned(r, y, bin_mm)
    bg = float(np.median(y[r > r.max() - BACKGROUND_RING_MM]))
    clipped = clip_hu is not None and float(y.max()) >= clip_hu - 1.0
    clip = float(clip_hu) if clipped else None
    amp_guess = (metal_hu_prior - bg) if clipped else max(float(yb.max()) - bg, AMPLITUDE_BOUNDS_HU[0])
    r0 = _start_radius(rb, yb, bg, amp_guess, radius_bounds_mm)
    rb, yb, nb, weight = _metal_samples(rb, yb, nb, bg, min_excess_hu, clip)
    # the background may be fitted too (within bounds): the tissue touching the metal, into which
    # its blur spreads, may be a halo's rather than the bone's further out
    fit_bg = background_bounds_hu is not None
    b_lo, b_hi = (float(background_bounds_hu[0]), float(background_bounds_hu[1])) if fit_bg else (bg, bg)

    def full(p):
        radius, sigma, amp = p[:3]
        b = p[3] if fit_bg else bg
        if clipped:  # metal HU is known, not fitted: saturation hides the plateau
            amp = metal_hu_prior - b
        return np.array([radius, sigma, amp, b, 0.0, 0.0])

    model = _ShaftModel(rb, clip, thread_depth_mm, thread_pitch_mm)
    lo, hi, r0, starts = _bounds(radius_bounds_mm, r0, fixed_radius_mm, fixed_sigma_mm, (b_lo, b_hi) if fit_bg else None)
    best = None
    for s0 in starts:
        p0 = np.array([r0, s0, amp_guess] + ([min(max(bg, b_lo), b_hi)] if fit_bg else []))
        p0 = np.minimum(np.maximum(p0, np.array(lo) + 1e-6), np.array(hi) - 1e-6)
        sol = least_squares(lambda p: (model(full(p)) - yb) * weight, p0, bounds=(lo, hi),
                            x_scale=list(_X_SCALE[:len(p0)]))
        if best is None or sol.cost < best.cost:
            best = sol
    p = full(best.x)
    valid = (yb < clip - 1.0) if clip is not None else np.ones_like(yb, dtype=bool)
    rms = float(np.sqrt(np.average((model(p) - yb)[valid] ** 2, weights=nb[valid]))) if valid.any() else 0.0
    return EdgeFit(radius_mm=float(p[0]), sigma_mm=float(p[1]), amplitude_hu=float(p[2]),
                   background_hu=float(p[3]), rms_hu=rms, clip_hu=clip, thread_depth_mm=float(thread_depth_mm),
                   thread_pitch_mm=float(thread_pitch_mm))



def refine_axis(t_mm: np.ndarray, offset_lps: np.ndarray, values_hu: np.ndarray, edge: EdgeFit, *,
                t_ref_mm: tuple[float, float], inner_mm: float = 1.5, outer_mm: float = 1.0,
                fit_radius: bool = True) -> tuple[np.ndarray, np.ndarray, EdgeFit]:
    """Move a screw axis onto the metal: least-squares fit of the edge-spread model with a shifted,
    tilted axis.

    A line found from a thresholded metal mask can sit 0.1-0.5 mm off the true axis; the metal
    edge then lies closer to the axis on one side, and a halo measured from the crest radius
    would be too wide there and too narrow opposite (the edge falls by ~3000 HU/mm). Here the
    axis is displaced by ``o(t) = o0 + (o1 - o0) (t - t0) / (t1 - t0)`` (perpendicular offsets at
    ``t_ref_mm``), and ``o0``, ``o1`` (and the radius and blur, unless fixed) are fitted to the
    voxels of the metal edge zone (within ``inner_mm`` inside and ``outer_mm`` outside the crest),
    with the model of :func:`fit_edge_spread` interpolated from a 0.01-mm radial grid.

    Parameters
    ----------
    t_mm : (M,) ndarray
        Voxel positions along the current axis, mm.
    offset_lps : (M, 3) ndarray
        Voxel offsets from the current axis (perpendicular), LPS mm.
    values_hu : (M,) ndarray
    edge : EdgeFit
        Edge fit on the current axis (start values; its clip, amplitude and threads are used).
    t_ref_mm : (t0, t1)
        Axial positions at which the offsets are reported, mm.
    fit_radius : bool
        Fit the radius too (False: keep ``edge.radius_mm``, e.g. a nominal diameter).

    Returns
    -------
    o0, o1 : (3,) ndarray
        Perpendicular LPS offsets (mm) of the metal's axis from the current axis at t0 and t1.
    edge : EdgeFit
        Edge fit about the refined axis.
    """
    t = np.asarray(t_mm, dtype=float)
    p = np.asarray(offset_lps, dtype=float)
    y = np.asarray(values_hu, dtype=float)
    r0 = np.linalg.norm(p, axis=1)
    R = edge.radius_mm
    sel = (r0 >= R - inner_mm) & (r0 <= R + outer_mm)
    if np.count_nonzero(sel) < MIN_AXIS_VOXELS:
        return np.zeros(3), np.zeros(3), edge
    t, p, y = t[sel], p[sel], y[sel]
    # perpendicular frame of the axis (the offsets lie in the plane of p)
    _, _, vt = np.linalg.svd(p - p.mean(axis=0), full_matrices=False)
    e1, e2 = vt[0], vt[1]
    pu, pv = p @ e1, p @ e2
    t0, t1 = t_ref_mm
    f = np.clip((t - t0) / (t1 - t0), -0.5, 1.5)
    clip = edge.clip_hu
    weight = np.where(y >= clip - 1.0, CLIPPED_SAMPLE_WEIGHT, 1.0) if clip is not None else np.ones_like(y)
    r_grid = np.arange(0.0, R + outer_mm + 2.0, MODEL_GRID_MM)
    model = _ShaftModel(r_grid, clip, edge.thread_depth_mm, edge.thread_pitch_mm)

    def unpack(q):
        radius = q[4] if fit_radius else R
        return q[:4], radius, q[5]

    def resid(q):
        (a0, b0, a1, b1), radius, sigma = unpack(q)
        du = a0 + (a1 - a0) * f
        dv = b0 + (b1 - b0) * f
        r = np.hypot(pu - du, pv - dv)
        prm = [radius, sigma, edge.amplitude_hu, edge.background_hu, 0.0, 0.0]
        m = np.interp(r, r_grid, model(prm))
        return (m - y) * weight

    q0 = np.array([0.0, 0.0, 0.0, 0.0, R, edge.sigma_mm])
    m, dr = MAX_AXIS_SHIFT_MM, MAX_RADIUS_CHANGE_MM
    lo = [-m, -m, -m, -m, R - dr if fit_radius else R - 1e-4, SIGMA_BOUNDS_MM[0]]
    hi = [m, m, m, m, R + dr if fit_radius else R + 1e-4, SIGMA_BOUNDS_MM[1]]
    sol = least_squares(resid, q0, bounds=(lo, hi), x_scale=[0.1] * 6)
    (a0, b0, a1, b1), radius, sigma = unpack(sol.x)
    refined = EdgeFit(radius_mm=float(radius), sigma_mm=float(sigma), amplitude_hu=edge.amplitude_hu,
                      background_hu=edge.background_hu, rms_hu=float(np.sqrt(np.mean(sol.fun ** 2))),
                      clip_hu=clip, thread_depth_mm=edge.thread_depth_mm, thread_pitch_mm=edge.thread_pitch_mm)
    return a0 * e1 + b0 * e2, a1 * e1 + b1 * e2, refined
