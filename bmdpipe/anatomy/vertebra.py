"""Per-vertebra geometry: body (cortex + cancellous core), canal, pedicle axes and isthmi.

Works on a canonical box (axes superior, posterior, left; see :mod:`.frame`) holding the
CT values and the whole-vertebra mask, and returns a :class:`bmdpipe.results.Vertebra` on the
original grid. All lengths in mm.

Method
------
1. Body: morphological opening of the (hole-filled) vertebra mask with a ball of
   ``body_opening_radius_mm`` removes pedicles, laminae and processes (all thinner than
   the ball) and keeps the body; the largest remaining component is the body.
   Cancellous core = body eroded by ``cortex_thickness_mm``.
2. Canal: along the body midline, posterior to the posterior wall, the gap in the mask up
   to the lamina; its centre and AP depth; its width from the gap in the mask left-right.
3. Pedicles: the mask lateral to the canal, between the posterior wall and the lamina,
   in the body's height range, one connected part per side. Its coronal cross-sections give
   the axis (least-squares line through their centroids) and the isthmus (smallest section).
   The axis' medial convergence is that line's, combined with the level's typical angle
   (``pedicle_transverse_angle_deg``) by inverse-variance weights: the line's uncertainty
   follows from the voxel size and the length of pedicle it spans (:func:`combined_angle`),
   so a 1 mm scan keeps its own measurement and a 3 mm scan, whose few coarse sections
   barely resolve a 15 degree slant, leans on the typical angle. Sagittally the axis runs
   parallel to the body's endplates (:func:`body_sagittal_tilt`): the sections' own tilt is
   cut short by the body's height range they are taken from. Sections smaller than
   ``pedicle_partial_section_fraction`` of the median (slivers where the pedicle meets the
   body) are never the isthmus.
   Entry = where the axis leaves the bone posteriorly; target = ``trajectory_depth_fraction``
   of the body depth along the axis, from the posterior wall.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage as ndi

from ..config import AnatomySettings
from ..errors import AnatomyError
from ..morphology import erode_mm, fill_holes, open_mm
from ..results import VERSE_IDS, PedicleAxis, Side, Vertebra
from ..volume import Volume
from .frame import CanonicalFrame

__all__ = ["vertebra_geometry", "ball", "largest_component", "scan_edge_cut", "typical_transverse_angle",
           "combined_angle", "body_sagittal_tilt"]

#: a pedicle lies within this distance lateral of the canal's wall, mm (lumbar pedicle width 7-18 mm,
#: Zindrick 1987; farther out: transverse processes)
PEDICLE_REACH_MM = 25.0
#: the entry point is searched along the axis up to this far behind the isthmus, mm (pedicle + lamina)
ENTRY_SEARCH_MM = 60.0


def ball(radius_mm: float, spacing) -> np.ndarray:
    """Ellipsoidal structuring element of physical radius ``radius_mm`` on an anisotropic grid."""
    r = [max(0, int(np.floor(radius_mm / s + 1e-6))) for s in spacing]
    zz, yy, xx = np.ogrid[-r[0]:r[0] + 1, -r[1]:r[1] + 1, -r[2]:r[2] + 1]
    d2 = (zz * spacing[0]) ** 2 + (yy * spacing[1]) ** 2 + (xx * spacing[2]) ** 2
    return d2 <= radius_mm ** 2 + 1e-9


def largest_component(mask: np.ndarray) -> np.ndarray:
    lab, n = ndi.label(mask)
    if n <= 1:
        return mask.astype(bool)
    sizes = np.bincount(lab.ravel())
    sizes[0] = 0
    return lab == int(np.argmax(sizes))


def _ray(mask: np.ndarray, start_vox: np.ndarray, direction_mm: np.ndarray, spacing, max_mm: float,
         step_mm: float = 0.25) -> tuple[np.ndarray, np.ndarray]:
    """Sample ``mask`` (nearest voxel) along a ray; returns (t_mm, inside bool)."""
    t = np.arange(0.0, max_mm, step_mm)
    pts = start_vox[None, :] + t[:, None] * (direction_mm / np.asarray(spacing))[None, :]
    idx = np.rint(pts).astype(int)
    ok = np.all((idx >= 0) & (idx < np.array(mask.shape)), axis=1)
    inside = np.zeros(len(t), bool)
    inside[ok] = mask[idx[ok, 0], idx[ok, 1], idx[ok, 2]]
    return t, inside


def _last_run_end(t, inside) -> float:
    """Distance along the ray at which the first run of inside voxels (from t=0) ends."""
    if not inside[0]:
        first = np.flatnonzero(inside)
        if first.size == 0:
            return 0.0
        inside = inside[first[0]:]
        t = t[first[0]:]
    out = np.flatnonzero(~inside)
    return float(t[out[0] - 1]) if out.size else float(t[-1])


def typical_transverse_angle(level: str, settings: AnatomySettings) -> float:
    """Typical medial convergence (deg) of a level's pedicle axis (``pedicle_transverse_angle_deg``).

    A level not in the table takes the nearest listed level by VerSe id (T12 -> L1, S1 -> L5);
    an unnamed one (``V1``...) the median of the table.
    """
    table = settings.pedicle_transverse_angle_deg
    if level in table:
        return float(table[level])
    listed = [k for k in table if k in VERSE_IDS]
    if level not in VERSE_IDS or not listed:
        return float(np.median(list(table.values())))
    nearest = min(listed, key=lambda k: abs(VERSE_IDS[k] - VERSE_IDS[level]))
    return float(table[nearest])


def combined_angle(measured_deg: float | None, sd_measured_deg: float, typical_deg: float,
                   sd_typical_deg: float) -> float:
    """An angle (deg) from a measured and an expected value, inverse-variance weighted.

    ``measured_deg`` None (no line could be fitted) gives the expected value.
    """
    if measured_deg is None or not np.isfinite(measured_deg) or not sd_measured_deg > 0:
        return float(typical_deg)
    w_m, w_t = sd_measured_deg ** -2, sd_typical_deg ** -2
    return float((w_m * measured_deg + w_t * typical_deg) / (w_m + w_t))


def body_sagittal_tilt(body: np.ndarray, spacing, min_height_fraction: float = 0.8) -> float:
    """Sagittal tilt (deg) of a vertebral body in a canonical box, from its endplates.

    ``body`` is best the vertebra's mask within the body's axial footprint: the morphological
    opening that finds the body rounds its edges off.

    In the body's central third (left-right), each column at least ``min_height_fraction`` as
    high as the highest (not the front and back edges, rounded, and cut obliquely when the body is
    tilted) gives its mid-height, halfway between the superior and inferior endplate; a line
    through them along the posterior axis gives the tilt, positive when the body rises going
    posteriorly. Endplate concavity, the same front to back, does not tilt that line.
    """
    xs = np.flatnonzero(body.any(axis=(0, 1)))
    if xs.size < 3:
        return 0.0
    third = max(1, (xs.max() - xs.min() + 1) // 3)
    band = body[:, :, xs.min() + third:xs.max() + 1 - third]
    has = band.any(axis=0)  # (y, x) columns holding body
    nz = band.shape[0]
    top = np.where(has, nz - 1 - np.argmax(band[::-1], axis=0), 0)
    bottom = np.where(has, np.argmax(band, axis=0), 0)
    height = np.where(has, top - bottom, 0)
    full = height >= min_height_fraction * height.max()  # not the front and back edges, rounded and cut by the tilt
    yy = np.broadcast_to(np.arange(band.shape[1])[:, None], has.shape)
    if np.unique(yy[full]).size < 3:
        return 0.0
    mid = 0.5 * (top + bottom)[full] * spacing[0]
    return float(np.degrees(np.arctan(np.polyfit(yy[full] * spacing[1], mid, 1)[0])))


def _line_slope(t: np.ndarray, v: np.ndarray, voxel_mm: float) -> tuple[float, float]:
    """Least-squares slope of ``v`` (mm) against ``t`` (mm) and its standard error.

    The error is the larger of the residuals' (from 4 points on) and the one a voxel's
    quantisation of each point, ``voxel_mm / sqrt(12)``, implies.
    """
    slope, icpt = np.polyfit(t, v, 1)
    spread = np.sqrt(np.sum((t - t.mean()) ** 2))
    sd_point = voxel_mm / np.sqrt(12.0)
    if len(t) >= 4:
        sd_point = max(sd_point, float(np.sqrt(np.sum((v - (slope * t + icpt)) ** 2) / (len(t) - 2))))
    return float(slope), float(sd_point / spread)


def _pedicle(mask, body, side_sign, zc_rng, y_bp, y_lam, xc, canal_half_w, spacing, settings, body_depth_mm,
             typical_deg, tilt_deg):
    """One pedicle in canonical voxel coordinates: (entry, isthmus, target, width, height) or None."""
    nz, ny, nx = mask.shape
    sz, sy, sx = spacing
    zz, yy, xx = np.meshgrid(np.arange(nz), np.arange(ny), np.arange(nx), indexing="ij", sparse=True)
    lateral = (xx - xc) * sx * side_sign
    sel = (
        mask
        & ~ndi.binary_dilation(body, iterations=1)
        & (yy >= y_bp) & (yy <= max(y_lam, y_bp + 2))
        & (lateral > 0.5 * canal_half_w) & (lateral < canal_half_w + PEDICLE_REACH_MM)
        & (zz >= zc_rng[0]) & (zz <= zc_rng[1])
    )
    if sel.sum() < 2:
        # thin/low-resolution data: allow overlap with the body's dilation
        sel = mask & ~body & (yy >= y_bp - 1) & (yy <= max(y_lam, y_bp + 2)) & (lateral > 0.4 * canal_half_w) \
            & (lateral < canal_half_w + PEDICLE_REACH_MM) & (zz >= zc_rng[0]) & (zz <= zc_rng[1])
        if sel.sum() < 2:
            return None
    ped = largest_component(sel)
    ys = np.flatnonzero(ped.any(axis=(0, 2)))
    cents, areas = [], []
    for y in ys:
        sl = ped[:, y, :]
        zi, xi = np.nonzero(sl)
        cents.append((zi.mean(), y, xi.mean()))
        areas.append(sl.sum())
    cents = np.array(cents, float)
    areas = np.array(areas, float)
    # isolated pedicle sections: not widened by the transverse / articular processes or the body
    # (slivers, where the pedicle meets the body or the mask thins out, are not the isthmus)
    whole = areas >= settings.pedicle_partial_section_fraction * np.median(areas)
    interior = whole.copy()
    if len(ys) >= 3:
        interior[0] = interior[-1] = False
    k0 = int(np.flatnonzero(interior)[np.argmin(areas[interior])]) if interior.any() else int(np.argmax(areas))
    a_ref = areas[k0]
    ratio = settings.pedicle_isolated_area_ratio
    lo = k0
    while lo > 0 and whole[lo - 1] and areas[lo - 1] <= ratio * a_ref:
        lo -= 1
    hi = k0
    while hi < len(ys) - 1 and whole[hi + 1] and areas[hi + 1] <= ratio * a_ref:
        hi += 1
    run = np.arange(lo, hi + 1)
    k = int(run[len(run) // 2])
    isth = cents[k]
    sl = ped[:, ys[k], :]
    zi, xi = np.nonzero(sl)
    width = float((xi.max() - xi.min() + 1) * sx)
    height = float((zi.max() - zi.min() + 1) * sz)
    # axis: least-squares line x(y) through the isolated sections' centroids, in mm
    conv, sd_conv = None, np.inf  # measured medial convergence, deg
    if len(run) >= 3:
        slope, sd_slope = _line_slope(cents[run, 1] * sy, cents[run, 2] * sx, sx)
        conv, sd_conv = float(np.degrees(np.arctan(side_sign * slope))), float(np.degrees(sd_slope))  # + = medial
        if not 0.0 <= conv <= settings.max_pedicle_convergence_deg:
            conv = None  # the fit failed (processes in the sections): lumbar pedicles converge medially
    conv = combined_angle(conv, sd_conv, typical_deg, settings.pedicle_transverse_angle_sd_deg)
    # anterior direction (-y): medially by conv, down by the body's tilt (positive rises posteriorly)
    d = np.array([-np.tan(np.radians(tilt_deg)), -1.0, -side_sign * np.tan(np.radians(conv))])
    d /= np.linalg.norm(d)
    # entry: leave the bone posteriorly (mask filled), from the isthmus
    t_b, in_b = _ray(mask, isth, -d, spacing, ENTRY_SEARCH_MM)
    t_entry = _last_run_end(t_b, in_b)
    entry = isth - t_entry * d / np.asarray(spacing)
    # target: on the axis, at trajectory_depth_fraction of the body depth (AP) from the posterior wall
    y_target_mm = (y_bp + 0.5) * sy - settings.trajectory_depth_fraction * body_depth_mm
    t_target = (isth[1] * sy - y_target_mm) / max(-d[1], 1e-3)
    target = isth + t_target * d / np.asarray(spacing)
    return entry, isth, target, width, height


#: the lamina lies at least this far behind the posterior wall, mm (lumbar canal AP depth 15-20 mm,
#: Eisenstein 1977; closer bone is the wall's own irregularity)
MIN_CANAL_DEPTH_MM = 6.0
#: a measured lumbar canal width outside this range is a failed measurement, clipped to it, mm
#: (interpedicular distance 20-28 mm, Eisenstein 1977, with wide margins)
CANAL_WIDTH_RANGE_MM = (10.0, 40.0)


def _vertebral_body(mask: np.ndarray, sp, settings: AnatomySettings, name: str,
                    body_posterior_limit: float | None) -> np.ndarray:
    """The vertebral body in a (hole-filled) vertebra mask: opening by a ball that pedicles, laminae
    and processes do not hold; of several parts the largest (ties: the most anterior)."""
    body = open_mm(mask, settings.body_opening_radius_mm, sp)
    if not body.any():
        body = open_mm(mask, 0.5 * settings.body_opening_radius_mm, sp)
    if body_posterior_limit is not None:
        body[:, int(np.ceil(body_posterior_limit)) + 1:, :] = False
    if not body.any():
        raise AnatomyError(f"{name}: no vertebral body found in its mask ({int(mask.sum())} voxels); "
                           "check the labels or the localisation")
    lab, n = ndi.label(body)
    if n > 1:
        sizes = ndi.sum_labels(np.ones_like(lab), lab, index=np.arange(1, n + 1))
        ant = np.array([ndi.center_of_mass(lab == i)[1] for i in range(1, n + 1)])
        body = lab == (int(np.argmax(sizes - 1e-3 * ant)) + 1)
    return fill_holes(body)


@dataclass(frozen=True)
class _BodyExtent:
    """A body's centre (canonical voxel index), the slices of its central column, its size (mm),
    its posterior wall's row and its left-right middle at mid-height (canonical index)."""

    centre: tuple[float, float, float]
    z_lo: int
    z_hi: int
    height_mm: float
    width_mm: float
    depth_mm: float
    y_posterior: int
    x_mid: float


def _body_extent(body: np.ndarray, sp) -> _BodyExtent:
    cz, cy, cx = ndi.center_of_mass(body)
    zs = np.flatnonzero(body.any(axis=(1, 2)))
    col = body[:, max(0, int(cy) - 1):int(cy) + 2, max(0, int(cx) - 1):int(cx) + 2].any(axis=(1, 2))
    zcol = np.flatnonzero(col)
    z_lo, z_hi = (zcol.min(), zcol.max()) if zcol.size else (zs.min(), zs.max())
    zmid = int(round(0.5 * (z_lo + z_hi)))
    slab = body[max(0, zmid - 1):zmid + 2].any(axis=0)
    xr = np.flatnonzero(slab[int(round(cy))])
    yr = np.flatnonzero(slab[:, int(round(cx))])
    return _BodyExtent(
        centre=(cz, cy, cx), z_lo=z_lo, z_hi=z_hi, height_mm=float((z_hi - z_lo + 1) * sp[0]),
        width_mm=float((xr.max() - xr.min() + 1) * sp[2]) if xr.size else float(slab.any(0).sum() * sp[2]),
        depth_mm=float((yr.max() - yr.min() + 1) * sp[1]) if yr.size else float(slab.any(1).sum() * sp[1]),
        y_posterior=int(yr.max()) if yr.size else int(round(cy)), x_mid=float(xr.mean()) if xr.size else cx)


def _canal(mask: np.ndarray, ext: _BodyExtent, sp, settings: AnatomySettings) -> tuple[int, float, float, float]:
    """The canal behind the body, in the body's upper half: the lamina's row, the canal's AP depth
    (mm), its centre row and its width (mm; the defaults when the lamina or the pedicles are not found)."""
    z0 = int(round(0.5 * (ext.z_lo + ext.z_hi))) - 1
    zr = (max(0, min(z0, ext.z_hi)), ext.z_hi)
    xi = int(round(ext.x_mid))
    y_bp = ext.y_posterior
    band = mask[zr[0]:zr[1] + 1, :, max(0, xi - 1):xi + 2].any(axis=(0, 2))
    post = np.flatnonzero(band[y_bp + 1:]) + y_bp + 1
    lam = [y for y in post if y > y_bp + 1 + max(1, int(round(MIN_CANAL_DEPTH_MM / sp[1])))]
    y_lam = int(lam[0]) if lam else int(round(y_bp + settings.default_canal_depth_mm / sp[1]))
    y_canal = 0.5 * (y_bp + y_lam)
    row = mask[zr[0]:zr[1] + 1, int(round(min(y_canal, mask.shape[1] - 1))), :].any(axis=0)
    left = np.flatnonzero(row[xi:])
    right = np.flatnonzero(row[:xi + 1][::-1])
    if left.size and right.size and left[0] > 0 and right[0] > 0:
        width = (left[0] + right[0] - 1) * sp[2]
    else:
        width = settings.default_canal_width_mm
    return y_lam, (y_lam - y_bp - 1) * sp[1], y_canal, float(np.clip(width, *CANAL_WIDTH_RANGE_MM))


def _pedicle_axes(mask: np.ndarray, body: np.ndarray, ext: _BodyExtent, y_lam: int, canal_width_mm: float,
                  name: str, sp, settings: AnatomySettings, to_lps) -> tuple[PedicleAxis, ...]:
    """Both pedicles' axes (LPS, through ``to_lps``); sagittally parallel to the endplates: the mask's
    endplates within the body's footprint, not the opened (rounded) body's; a tilt beyond
    ``max_pedicle_sagittal_deg`` is a failed measurement (0 used)."""
    typical = typical_transverse_angle(name, settings)
    tilt = body_sagittal_tilt(mask & body.any(axis=0)[None], sp, settings.body_tilt_min_column_height_fraction)
    tilt = tilt if abs(tilt) <= settings.max_pedicle_sagittal_deg else 0.0
    z_rng = (max(0, ext.z_lo - 1), min(mask.shape[0] - 1, ext.z_hi + 1))
    out = []
    for side, sign in ((Side.left, 1.0), (Side.right, -1.0)):
        res = _pedicle(mask, body, sign, z_rng, ext.y_posterior, y_lam, ext.x_mid, 0.5 * canal_width_mm, sp,
                       settings, ext.depth_mm, typical, tilt)
        if res is not None:
            entry, isth, target, w, h = res
            out.append(PedicleAxis(side=side, entry_lps=to_lps(entry), isthmus_lps=to_lps(isth),
                                   target_lps=to_lps(target), isthmus_width_mm=w, isthmus_height_mm=h))
    return tuple(out)


def vertebra_geometry(volume: Volume, frame: CanonicalFrame, mask_c: np.ndarray, offset_c, name: str,
                      verse: int | None, settings: AnatomySettings, *, source: str = "labels",
                      body_posterior_limit: float | None = None) -> Vertebra:
    """Measure one vertebra from its canonical box.

    Parameters
    ----------
    volume : Volume
        The CT (for the LPS mapping only).
    frame : CanonicalFrame
        Canonical frame of ``volume``.
    mask_c : (Z, Y, X) ndarray of bool
        Whole-vertebra mask in the canonical box.
    offset_c : tuple of int
        Canonical index of the box's first voxel.
    name, verse : str, int or None
        Level name and VerSe id.
    settings : AnatomySettings
    source : str
        ``labels`` or ``localized`` (stored on the result).
    body_posterior_limit : float, optional
        Canonical box row (y) that the body may not extend beyond (e.g. the canal's anterior
        edge found by the localiser), for masks where the canal could not be kept open.

    Returns
    -------
    Vertebra
        Masks on the original grid (box), centres in LPS mm, sizes in mm.

    Raises
    ------
    AnatomyError
        When no vertebral body can be found in the mask.
    """
    sp = frame.spacing
    mask = fill_holes(mask_c)
    body = _vertebral_body(mask, sp, settings, name, body_posterior_limit)
    ext = _body_extent(body, sp)
    y_lam, canal_depth, y_canal, canal_w = _canal(mask, ext, sp, settings)
    off = np.asarray(offset_c, float)

    def lps(p) -> tuple[float, float, float]:
        return tuple(float(v) for v in frame.canonical_to_lps(volume, np.asarray(p, float) + off))

    pedicles = _pedicle_axes(mask, body, ext, y_lam, canal_w, name, sp, settings, lps)
    cancellous = erode_mm(body, settings.cortex_thickness_mm, sp)
    o_off, o_mask = frame.box_to_original(offset_c, mask)
    _, o_body = frame.box_to_original(offset_c, body)
    _, o_canc = frame.box_to_original(offset_c, cancellous)
    cz, cy, cx = ext.centre
    return Vertebra(
        name=name, verse_id=verse, offset=o_off, mask=o_mask, centroid_lps=lps(ndi.center_of_mass(mask)),
        body_mask=o_body, cancellous_mask=o_canc,
        canal_center_lps=lps((cz, y_canal, ext.x_mid)), body_center_lps=lps((cz, cy, cx)),
        body_width_mm=ext.width_mm, body_depth_mm=ext.depth_mm, body_height_mm=ext.height_mm,
        pedicles=pedicles, source=source, canal_width_mm=canal_w, canal_depth_mm=float(canal_depth),
    )


def scan_edge_cut(vertebra: Vertebra, volume: Volume, margin_mm: float) -> str:
    """Which end of the scan cuts a vertebral body: ``'superior'``, ``'inferior'`` or ``''`` (whole).

    The body is cut when the vertebra's mask, within the body's axial footprint (so that its
    posterior elements, which reach beyond the endplates, do not count), comes closer than
    ``margin_mm`` (mm; at least one slice) to the first or last slice. A cut body has no
    mid-height for ROI A; the morphological body estimate is also unreliable at the edge.
    """
    if vertebra.body_mask is None or not vertebra.body_mask.any():
        return ""
    footprint = vertebra.body_mask.any(axis=0)
    ks = np.flatnonzero((vertebra.mask & footprint[None]).any(axis=(1, 2))) + vertebra.offset[0]
    if ks.size == 0:
        return ""
    edge = max(1, int(np.ceil(margin_mm / volume.spacing[0])))
    nk = volume.shape[0]
    z_first, z_last = (float(volume.index_to_lps(np.array([k, 0.0, 0.0]))[2]) for k in (0, nk - 1))
    first, last = ("inferior", "superior") if z_last > z_first else ("superior", "inferior")
    if ks.min() < edge:
        return first
    if ks.max() > nk - 1 - edge:
        return last
    return ""
