"""Titanium pedicle screws with halos, sclerotic rims, cement, rods, blooming and streaks (synthetic CT).

Screw frame: axis ``d`` from the entry point (t = 0) to the tip (t = length); around it the
angle ``phi`` is measured from ``e1`` = the component of +z (superior) perpendicular to ``d``
towards ``e2 = d x e1``. The lucent arc of a halo is centred at ``halo_angle_deg`` and spans
``halo_arc_fraction * 360`` degrees. Blooming is not painted: it arises from the PSF acting on
``metal_hu`` (~6500 HU) followed by clipping at 3071 HU; the metal is rendered on a finer grid
(:func:`render_screw_metal`) so that its edge is blurred as a continuous object.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from .grid import Grid, voxel_fraction
from .spec import loosened_rule
from .tissue import BONE_CODES, TISSUE

__all__ = ["ScrewTruth", "place_screw", "paint_screw", "screw_metal_mask", "render_screw_metal", "paint_fusion_rods",
           "paint_crosslink", "segment_distance2", "add_streaks", "screw_metal_fraction", "THREAD_DEPTH_MM", "THREAD_PITCH_MM",
           "HEAD_LENGTH_MM", "HEAD_RADIUS_MM", "RIM_THICKNESS_MM"]

THREAD_DEPTH_MM = 0.9
THREAD_PITCH_MM = 2.8
HEAD_LENGTH_MM = 13.0
HEAD_RADIUS_MM = 6.5
RIM_THICKNESS_MM = 1.0
TIP_TAPER_MM = 6.0
#: Sub-samples per voxel and axis with which screw metal is rendered (:func:`render_screw_metal`).
METAL_SUPERSAMPLE = 3


@dataclass(frozen=True)
class ScrewTruth:
    """Ground truth of one screw (LPS mm). ``loosened`` follows :func:`spec.loosened_rule`.

    ``halo_width_mm`` is the lucent band's width: from the thread crests, and on the cemented part of an
    ``augmented`` screw (``t >= length_mm / 2``) from the cement mantle's outer surface
    (``cement_mantle_mm`` beyond the crests). ``breach`` ('medial', 'lateral' or None) and ``breach_mm``: the
    side and depth by which the crests pass the pedicle's outer surface at the isthmus.
    """

    vertebra: str
    side: str
    entry_lps: tuple[float, float, float]
    tip_lps: tuple[float, float, float]
    diameter_mm: float
    length_mm: float
    halo_width_mm: float
    halo_arc_fraction: float
    halo_angle_deg: float
    sclerotic_rim: bool
    rim_mg_cm3: float
    loosened: bool
    head_length_mm: float = HEAD_LENGTH_MM
    core_diameter_mm: float = 0.0
    augmented: bool = False
    cement_mantle_mm: float = 0.0
    breach: str | None = None
    breach_mm: float = 0.0

    @property
    def direction(self) -> np.ndarray:
        d = np.subtract(self.tip_lps, self.entry_lps)
        return d / np.linalg.norm(d)


def place_screw(spec, pedicle_axis, rng: np.random.Generator, left_lps=(1.0, 0.0, 0.0)) -> ScrewTruth:
    """Screw from ``spec`` (ScrewSpec) along a pedicle axis (results.PedicleAxis, LPS).

    A breach (``spec.breach``) shifts the screw perpendicular to the axis, in the plane of the axis and the
    vertebra's left direction ``left_lps`` (unit vector, LPS), by ``isthmus_width / 2 - radius + breach_mm``
    medially or laterally, so that its crests pass the pedicle's outer surface by ``breach_mm`` at the isthmus.
    """
    angle = float(rng.uniform(0.0, 360.0))
    if spec.halo_angle_deg is not None:
        angle = float(spec.halo_angle_deg)
    entry = np.asarray(pedicle_axis.entry_lps, dtype=float)
    target = np.asarray(pedicle_axis.target_lps, dtype=float)
    d = target - entry
    full = float(np.linalg.norm(d))
    d /= full
    if spec.breach is not None:
        lateral = (1.0 if spec.side == "left" else -1.0) * np.asarray(left_lps, dtype=float)
        lateral -= (lateral @ d) * d
        lateral /= np.linalg.norm(lateral)
        shift = pedicle_axis.isthmus_width_mm / 2.0 - spec.diameter_mm / 2.0 + spec.breach_mm
        entry = entry + (shift if spec.breach == "lateral" else -shift) * lateral
    length = float(spec.length_mm) if spec.length_mm is not None else full
    tip = entry + length * d
    return ScrewTruth(
        vertebra=spec.vertebra, side=spec.side, entry_lps=tuple(float(x) for x in entry),
        tip_lps=tuple(float(x) for x in tip), diameter_mm=float(spec.diameter_mm), length_mm=length,
        halo_width_mm=float(spec.halo_width_mm), halo_arc_fraction=float(spec.halo_arc_fraction),
        halo_angle_deg=angle, sclerotic_rim=bool(spec.sclerotic_rim), rim_mg_cm3=float(spec.rim_mg_cm3),
        loosened=loosened_rule(spec.halo_width_mm, spec.halo_arc_fraction),
        core_diameter_mm=float(spec.diameter_mm - 2 * THREAD_DEPTH_MM), augmented=bool(spec.cement_mantle_mm > 0),
        cement_mantle_mm=float(spec.cement_mantle_mm), breach=spec.breach,
        breach_mm=float(spec.breach_mm) if spec.breach is not None else 0.0)


def _frame(d: np.ndarray):
    z = np.array([0.0, 0.0, 1.0])
    e1 = z - (z @ d) * d
    if np.linalg.norm(e1) < 1e-6:
        e1 = np.array([0.0, 1.0, 0.0]) - d[1] * d
    e1 /= np.linalg.norm(e1)
    e2 = np.cross(d, e1)
    return e1, e2


def _screw_geometry(s: ScrewTruth, Z, Y, X):
    """Axial position ``t``, distance ``r`` from the axis, angle ``phi`` (screw frame) and the
    metal indicator (threaded shaft with tapered tip, tulip head) at coordinates (Z, Y, X) mm."""
    e = np.asarray(s.entry_lps)
    d = s.direction
    R = s.diameter_mm / 2.0
    qx, qy, qz = X - e[0], Y - e[1], Z - e[2]
    t = qx * d[0] + qy * d[1] + qz * d[2]
    px, py, pz = qx - t * d[0], qy - t * d[1], qz - t * d[2]
    r = np.sqrt(px * px + py * py + pz * pz)
    e1, e2 = _frame(d)
    phi = np.arctan2(px * e2[0] + py * e2[1] + pz * e2[2], px * e1[0] + py * e1[1] + pz * e1[2])
    # threads: triangular helix profile between core and crest radius
    frac = np.mod(t / THREAD_PITCH_MM - phi / (2 * np.pi), 1.0)
    prof = 1.0 - 2.0 * np.abs(frac - 0.5)
    r_eff = (R - THREAD_DEPTH_MM) + THREAD_DEPTH_MM * prof
    r_eff = r_eff * np.clip((s.length_mm - t) / TIP_TAPER_MM + 0.25, 0.0, 1.0)
    shaft = (t >= 0) & (t <= s.length_mm) & (r <= r_eff)
    head = (t < 0) & (t >= -HEAD_LENGTH_MM) & (r <= HEAD_RADIUS_MM)
    return t, r, phi, shaft | head


def _metal_bounds(s: ScrewTruth, margin_mm: float):
    """LPS box (lo, hi) mm around the screw's metal plus ``margin_mm``."""
    e, tip, d = np.asarray(s.entry_lps), np.asarray(s.tip_lps), s.direction
    pts = np.array([e - HEAD_LENGTH_MM * d, tip])
    reach = max(s.diameter_mm / 2.0, HEAD_RADIUS_MM) + margin_mm
    return pts.min(0) - reach, pts.max(0) + reach


def screw_metal_mask(grid: Grid, s: ScrewTruth):
    """Voxels whose centre lies in the screw's metal: ``(slices, bool mask)`` or None off the grid."""
    bx = grid.box(*_metal_bounds(s, 1.0))
    if bx is None:
        return None
    sl, (Z, Y, X) = bx
    return sl, _screw_geometry(s, Z, Y, X)[3]


def _fine_occupancy(grid: Grid, s: ScrewTruth, margin_mm: float, n: int):
    """The screw's metal on a grid ``n`` times finer than the voxels, over its box plus ``margin_mm``:
    ``(slices, bool occupancy)`` with each voxel's n^3 sub-samples (the middle one at its centre) in a
    row along each axis; None off the grid."""
    fb = grid.fine_box(*_metal_bounds(s, margin_mm), n)
    if fb is None:
        return None
    sl, (Zf, Yf, Xf) = fb
    return sl, _screw_geometry(s, Zf, Yf, Xf)[3]


def screw_metal_fraction(grid: Grid, s: ScrewTruth, supersample: int = METAL_SUPERSAMPLE):
    """The share of each voxel's volume that the screw's metal fills (0..1), from ``supersample``^3
    sub-samples: ``(slices, float32 fraction)`` or None off the grid (the partial volume a projector sees)."""
    fine = _fine_occupancy(grid, s, 1.0, supersample)
    if fine is None:
        return None
    sl, occ = fine
    return sl, voxel_fraction(occ, supersample)


def render_screw_metal(grid: Grid, s: ScrewTruth, base_hu: np.ndarray, metal_hu: float, psf_fwhm_mm: float,
                       supersample: int = METAL_SUPERSAMPLE):
    """Blurred HU excess of one screw's metal over ``base_hu`` (the image without the screw).

    The metal is evaluated on a grid ``supersample`` times finer than the voxels, its excess
    ``metal_hu - base`` blurred there by the Gaussian PSF and sampled at the voxel centres: the
    image of a continuous object seen through the PSF, as a scanner forms it. (Painting metal
    at voxel centres and blurring on the voxel grid would alias its 6000-HU edge into a voxel
    staircase that no real scanner produces.) Add the result to the blurred base image.

    Returns
    -------
    (slices, excess) or None
        Index slices (k, j, i) of the box and the float32 excess (HU) there.
    """
    sig = psf_fwhm_mm / 2.3548
    fine = _fine_occupancy(grid, s, 4.0 * sig + 1.0, supersample)
    if fine is None:
        return None
    sl, occ = fine
    n = supersample
    sp = grid.spacing_zyx
    base = base_hu[sl]
    base_f = np.repeat(np.repeat(np.repeat(base, n, axis=0), n, axis=1), n, axis=2)
    excess = np.where(occ, np.float32(metal_hu) - base_f, np.float32(0.0))
    if sig > 0:
        excess = ndimage.gaussian_filter(excess, sigma=[sig / (h / n) for h in sp], mode="constant")
    mid = (n - 1) // 2
    return sl, np.ascontiguousarray(excess[mid::n, mid::n, mid::n])


def paint_screw(grid: Grid, s: ScrewTruth, tissue, mineral, hu_fixed, fibrous_hu: float) -> dict[int, tuple[float, float]]:
    """Paint the cement mantle, halo and sclerotic rim of one screw, in place (the metal itself is added to
    the blurred image by :func:`render_screw_metal` and to the truth by :func:`screw_metal_mask`).

    The cement (augmented screws) fills the bone within ``cement_mantle_mm`` of the crests along the distal
    half of the shaft and as far beyond the tip; the halo then lies outside it (at the cement-bone interface)
    there and at the crests along the proximal half, the rim outside the halo.

    Returns ``{k: (x, y)}``: the in-plane centroid (LPS mm) of this screw's metal in every
    axial slice ``k`` of the canonical grid that it crosses (used for streaks).
    """
    R = s.diameter_mm / 2.0
    m = s.cement_mantle_mm
    reach = R + m + s.halo_width_mm + RIM_THICKNESS_MM + 2.0
    reach = max(reach, HEAD_RADIUS_MM + 1.0)
    e, d, tip = np.asarray(s.entry_lps), s.direction, np.asarray(s.tip_lps)
    pts = np.array([e - HEAD_LENGTH_MM * d, tip + (m + s.halo_width_mm) * d])
    bx = grid.box(pts.min(0) - reach, pts.max(0) + reach)
    if bx is None:
        return {}
    sl, (Z, Y, X) = bx
    t, r, phi, metal = _screw_geometry(s, Z, Y, X)
    tis, mn, hf = tissue[sl], mineral[sl], hu_fixed[sl]
    bone = np.isin(tis, BONE_CODES)
    cemented = t >= s.length_mm / 2.0 if m > 0 else np.zeros_like(t, dtype=bool)
    if m > 0:
        mantle = bone & cemented & (t <= s.length_mm + m) & (r <= R + m)
        tis[mantle] = TISSUE["cement"]
        mn[mantle] = 0.0
        bone &= ~mantle
    r_interface = np.where(cemented, R + m, R)  # where the implant meets bone: crests or the mantle's surface
    t_end = s.length_mm + m
    along = (t >= 0) & (t <= t_end + s.halo_width_mm)
    dphi = np.abs(np.angle(np.exp(1j * (phi - np.deg2rad(s.halo_angle_deg)))))
    in_arc = dphi <= np.pi * s.halo_arc_fraction + 1e-9
    if s.halo_width_mm > 0 and s.halo_arc_fraction > 0:
        # everything within the interface + width: the thread valleys, and under the metal (the base image
        # that the rendered metal replaces, see render_screw_metal); the truth marks metal later
        halo = bone & along & in_arc & (r <= r_interface + s.halo_width_mm)
        tis[halo] = TISSUE["halo"]
        mn[halo] = 0.0
        hf[halo] = fibrous_hu
    if s.sclerotic_rim:
        r0 = r_interface + s.halo_width_mm
        along_r = (t >= 0) & (t <= t_end + s.halo_width_mm + RIM_THICKNESS_MM)
        rim = np.isin(tis, BONE_CODES) & along_r & in_arc & (r > r0) & (r <= r0 + RIM_THICKNESS_MM)
        tis[rim] = TISSUE["sclerotic_rim"]
        mn[rim] = s.rim_mg_cm3
    n = metal.sum(axis=(1, 2))
    sx = (metal * X).sum(axis=(1, 2))
    sy = (metal * Y).sum(axis=(1, 2))
    return {int(sl[0].start + kk): (float(sx[kk] / n[kk]), float(sy[kk] / n[kk]))
            for kk in np.flatnonzero(n >= 3)}


FUSION_ROD_DIAMETER_MM = 5.5
CROSSLINK_DIAMETER_MM = 5.0
#: Tissue code of each rod alloy (:attr:`spec.CaseSpec.rod_material`).
ROD_TISSUE = {"titanium": TISSUE["metal"], "cobalt_chrome": TISSUE["cobalt_chrome"]}


def segment_distance2(a, b, Z, Y, X) -> np.ndarray:
    """Squared distance (mm2) of points (ogrid Z, Y, X mm) from the segment a-b (LPS mm)."""
    a = np.asarray(a, dtype=float)
    d = np.asarray(b, dtype=float) - a
    L = float(np.linalg.norm(d))
    d = d / L
    qx, qy, qz = X - a[0], Y - a[1], Z - a[2]
    t = np.clip(qx * d[0] + qy * d[1] + qz * d[2], 0.0, L)
    return (qx - t * d[0]) ** 2 + (qy - t * d[1]) ** 2 + (qz - t * d[2]) ** 2


def _paint_rod(grid: Grid, a, b, diameter_mm: float, code: int, tissue, mineral, hu_fixed, hu: float) -> None:
    """A rod of ``diameter_mm`` along the segment a-b (LPS mm; round ends) painted as tissue ``code``, in place."""
    r = diameter_mm / 2.0
    bx = grid.box(np.minimum(a, b) - r - 1, np.maximum(a, b) + r + 1)
    if bx is None:
        return
    sl, (Z, Y, X) = bx
    m = segment_distance2(a, b, Z, Y, X) <= r * r
    tissue[sl][m] = code
    mineral[sl][m] = 0.0
    hu_fixed[sl][m] = hu


def paint_fusion_rods(grid: Grid, screws, tissue, mineral, hu_fixed, metal_hu: float,
                      material: str = "titanium") -> list[dict]:
    """Rods (5.5 mm, titanium or cobalt-chrome) joining the screw heads of each side (>= 2 screws), in place.

    The rod runs through the head centres (``entry - HEAD_LENGTH_MM / 2 * d``) and 8 mm beyond
    the end screws. Returns one dict per rod (side, polyline points LPS mm, diameter, material).
    """
    out = []
    for side in ("left", "right"):
        ss = [s for s in screws if s.side == side]
        if len(ss) < 2:
            continue
        pts = np.array([np.asarray(s.entry_lps) - HEAD_LENGTH_MM / 2.0 * s.direction for s in ss])
        pts = pts[np.argsort(-pts[:, 2])]
        ext0 = pts[0] + 8.0 * (pts[0] - pts[1]) / np.linalg.norm(pts[0] - pts[1])
        ext1 = pts[-1] + 8.0 * (pts[-1] - pts[-2]) / np.linalg.norm(pts[-1] - pts[-2])
        poly = np.vstack([ext0, pts, ext1])
        for a, b in zip(poly[:-1], poly[1:]):
            _paint_rod(grid, a, b, FUSION_ROD_DIAMETER_MM, ROD_TISSUE[material], tissue, mineral, hu_fixed, metal_hu)
        out.append({"side": side, "points_lps": poly.tolist(), "diameter_mm": FUSION_ROD_DIAMETER_MM,
                    "material": material})
    return out


def paint_crosslink(grid: Grid, rods: list[dict], tissue, mineral, hu_fixed, metal_hu: float) -> dict | None:
    """A titanium transverse rod (5 mm) joining the left and right fusion rods (:func:`paint_fusion_rods`)
    midway along the construct (between its two middle screw heads on each side), in place.

    Returns its truth (end points on the rods' axes LPS mm, diameter, material), or None without two rods.
    """
    if len(rods) < 2:
        return None

    def middle(rod):
        heads = np.asarray(rod["points_lps"])[1:-1]  # the polyline without its two end extensions
        i = (len(heads) - 1) // 2
        return (heads[i] + heads[i + 1]) / 2.0

    a, b = (middle(rod) for rod in rods)
    _paint_rod(grid, a, b, CROSSLINK_DIAMETER_MM, TISSUE["metal"], tissue, mineral, hu_fixed, metal_hu)
    return {"points_lps": [a.tolist(), b.tolist()], "diameter_mm": CROSSLINK_DIAMETER_MM, "material": "titanium"}


def add_streaks(grid: Grid, img: np.ndarray, centroids, amplitude_hu: float, width_mm: float) -> int:
    """Photon-starvation streaks between screws, in place on canonical-grid ``img``.

    In each axial slice crossed by two or more screws (``centroids``: one ``{k: (x, y)}`` per
    screw, from :func:`paint_screw`), a dark band of depth ``amplitude_hu`` (Gaussian
    profile, sigma ``width_mm``) runs along the line joining the two metal centroids, fading
    beyond them (e-folding 40 mm) and flanked by weaker bright bands. These are artefacts,
    not halos. Returns the number of (slice, pair) streaks drawn.
    """
    Y = grid.ys[:, None].astype(np.float32)
    X = grid.xs[None, :].astype(np.float32)
    n = 0
    ks = sorted(set().union(*[set(c) for c in centroids])) if centroids else []
    for k in ks:
        cents = [np.array(c[k]) for c in centroids if k in c]
        for i in range(len(cents)):
            for j in range(i + 1, len(cents)):
                c1, c2 = cents[i], cents[j]
                v = c2 - c1
                ln = float(np.hypot(*v))
                if ln < 5.0:
                    continue
                v = v / ln
                s_al = (X - c1[0]) * v[0] + (Y - c1[1]) * v[1]
                s_pp = -(X - c1[0]) * v[1] + (Y - c1[1]) * v[0]
                beyond = np.maximum(np.maximum(-s_al, s_al - ln), 0.0)
                fade = np.exp(-beyond / 40.0)
                g0 = np.exp(-0.5 * (s_pp / width_mm) ** 2)
                g1 = np.exp(-0.5 * ((np.abs(s_pp) - 3.0 * width_mm) / width_mm) ** 2)
                img[k] += (amplitude_hu * fade * (-g0 + 0.35 * g1)).astype(np.float32)
                n += 1
    return n
