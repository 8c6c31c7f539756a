"""Automatic localisation of the lumbar vertebrae on the CT itself (no labels).

Method (canonical frame: superior, posterior, left; see :mod:`.frame`), on a copy
subsampled to about 1.5 mm in-plane:

1. Bone: Gaussian-smoothed HU above ``bone_threshold_hu``; each axial slice's holes filled
   (the cortical ring encloses the cancellous bone, whatever its density).
2. Spinal canal: in each axial slice, a hole of the bone mask (soft tissue enclosed by the
   neural arch) of ``canal_min_area_mm2``-``canal_max_area_mm2`` within
   ``spine_search_halfwidth_mm`` of the patient's midline, with bone just anterior to it.
   Detections far from the median track are dropped, the rest smoothed by a running median
   over ``canal_smoothing_mm`` along z; missing slices are interpolated.
3. Bodies vs discs: the filled-bone share of an axial disk (``body_probe_radius_mm``) placed
   anterior to the canal is high in a body and ~0 in a disc; runs above
   ``body_fill_fraction`` are bodies (too short: dropped; too long: split at the weakest
   slice; touching the first/last slice: cut by the scan, dropped; wholly beyond the first or
   last canal detection, where the track is extrapolated: dropped).
4. Each body's vertebra: the connected bone (full resolution) containing the body, limited
   to the body's height and a box around the canal, without the canal; then
   :func:`~bmdpipe.anatomy.vertebra.vertebra_geometry` separates body and posterior
   elements and finds the pedicles.

Naming: ``levels`` (superior to inferior) when given; their number must equal the number
of whole bodies found, else :class:`AnatomyError` lists what was found (a wrong level name
is worse than no result in a trial). Without ``levels`` the bodies are V1..Vn.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy import ndimage as ndi

from ..config import AnatomySettings
from ..errors import AnatomyError
from ..morphology import fill_holes
from ..results import VERSE_IDS, Vertebra
from ..volume import Volume
from .frame import CanonicalFrame
from .vertebra import vertebra_geometry

__all__ = ["localize_vertebrae", "find_canal", "body_runs", "tall_bodies"]

#: a canal candidate needs at least MIN_BONE_BEFORE_CANAL_MM of filled bone (the body) within 3 x this
#: in front of it, mm (a lumbar body is ~30-35 mm deep)
CANAL_BONE_PROBE_MM = 12.0
MIN_BONE_BEFORE_CANAL_MM = 10.0
#: of several candidates in a slice, the one with the most bone in front wins, less this per mm off the
#: patient's midline (a tie-break; bone counts in voxels)
MIDLINE_PENALTY_PER_MM = 0.1
#: a detection this far from the median track (mm, in-plane) is something else (bowel, a cyst)
MAX_CANAL_OFF_TRACK_MM = 25.0


def _fill_slices(mask: np.ndarray, spacing=None, close_mm: float = 0.0) -> np.ndarray:
    """Fill the holes of each axial slice, after closing gaps up to ``close_mm`` (2-D disk)."""
    out = np.empty_like(mask)
    st = None
    if close_mm > 0 and spacing is not None:
        ry, rx = (max(1, int(round(close_mm / s))) for s in spacing[1:])
        yy, xx = np.ogrid[-ry:ry + 1, -rx:rx + 1]
        st = ((yy * spacing[1]) ** 2 + (xx * spacing[2]) ** 2) <= close_mm ** 2 + 1e-6
    for k in range(mask.shape[0]):
        m = mask[k]
        if st is not None:
            m = m | ndi.binary_closing(np.pad(m, st.shape[0]), structure=st)[st.shape[0]:-st.shape[0],
                                                                              st.shape[0]:-st.shape[0]] \
                if st.shape[0] == st.shape[1] else m | ndi.binary_closing(m, structure=st)
        out[k] = fill_holes(m)
    return out


def find_canal(hu: np.ndarray, bone: np.ndarray, filled: np.ndarray, spacing, x_mid: float,
               settings: AnatomySettings) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Canal centre (y, x voxel) per axial slice.

    A canal candidate is a hole of the bone mask whose mean (smoothed) HU is below
    ``canal_max_hu`` (CSF, cord and epidural fat; a body's low-density cancellous interior,
    also a hole of the mask, is denser), with bone just anterior to it.

    Returns
    -------
    cy, cx : (Z,) ndarray of float
        Interpolated canal centre per slice (voxels).
    found : (Z,) ndarray of bool
        Slices where a closed canal was detected.
    """
    nz = bone.shape[0]
    px_area = spacing[1] * spacing[2]
    det = np.full((nz, 2), np.nan)
    ant_vox = int(round(CANAL_BONE_PROBE_MM / spacing[1]))
    for k in range(nz):
        holes = filled[k] & ~bone[k]
        lab, n = ndi.label(holes)
        if n == 0:
            continue
        idx = np.arange(1, n + 1)
        areas = ndi.sum_labels(np.ones_like(lab), lab, idx) * px_area
        means = ndi.mean(hu[k], lab, idx)
        cents = np.array(ndi.center_of_mass(holes, lab, idx))
        best, best_score = None, -np.inf
        for a, mu, (y, x) in zip(areas, means, cents):
            if not settings.canal_min_area_mm2 <= a <= settings.canal_max_area_mm2:
                continue
            if mu > settings.canal_max_hu:
                continue
            if abs(x - x_mid) * spacing[2] > settings.spine_search_halfwidth_mm:
                continue
            # bone (the body) must lie just anterior to the canal
            yi, xi = int(round(y)), int(round(x))
            col = filled[k, max(0, yi - 3 * ant_vox):yi, xi]
            if col.sum() * spacing[1] < MIN_BONE_BEFORE_CANAL_MM:
                continue
            score = col.sum() - abs(x - x_mid) * spacing[2] * MIDLINE_PENALTY_PER_MM
            if score > best_score:
                best, best_score = (y, x), score
        if best is not None:
            det[k] = best
    found = np.isfinite(det[:, 0])
    if found.sum() < 2:
        raise AnatomyError("spinal canal not found in the CT (no bone-enclosed canal of "
                           f"{settings.canal_min_area_mm2:.0f}-{settings.canal_max_area_mm2:.0f} mm2 near the midline); "
                           "is the lumbar spine in the field of view? Otherwise pass --labels")
    med = np.nanmedian(det, axis=0)
    far = np.hypot((det[:, 0] - med[0]) * spacing[1], (det[:, 1] - med[1]) * spacing[2]) > MAX_CANAL_OFF_TRACK_MM
    found &= ~far
    ks = np.flatnonzero(found)
    if ks.size < 2:
        raise AnatomyError("spinal canal track too fragmented to follow; pass --labels")
    track = _running_median(ks * spacing[0], det[ks], settings.canal_smoothing_mm)
    cy = np.interp(np.arange(nz), ks, track[:, 0])
    cx = np.interp(np.arange(nz), ks, track[:, 1])
    return cy, cx, found


def _running_median(z_mm: np.ndarray, values: np.ndarray, halfwidth_mm: float) -> np.ndarray:
    """Median of ``values`` (one row, or one column each, per detection) over the detections
    within ``halfwidth_mm`` (mm, along z) of each one.

    A window in mm, not in detections: on thick slices the canal is closed (detected) only in a
    few sections per vertebra, and a window of five detections there reaches into the next level
    (on the real 3 mm CT it pulled L5's canal 17 mm posterior, to the sacral canal's position).
    """
    near = np.abs(z_mm[:, None] - z_mm[None, :]) <= halfwidth_mm
    return np.array([np.median(values[row], axis=0) for row in near])


def body_runs(fill: np.ndarray, spacing_z: float, settings: AnatomySettings) -> list[tuple[int, int]]:
    """Runs of body slices ``[start, stop)`` from the per-slice fill fraction, inferior to superior."""
    on = fill >= settings.body_fill_fraction
    lab, n = ndi.label(on)
    runs = []
    min_n = settings.min_body_height_mm / spacing_z
    max_n = settings.max_body_height_mm / spacing_z
    queue = [tuple(np.flatnonzero(lab == i)[[0, -1]] + [0, 1]) for i in range(1, n + 1)]
    while queue:
        a, b = queue.pop(0)
        if b - a < min_n:
            continue
        if b - a > max_n:
            inner = np.arange(a + int(min_n), b - int(min_n))
            if inner.size == 0:
                continue
            cut = int(inner[np.argmin(fill[inner])])
            queue += [(a, cut), (cut + 1, b)]
            continue
        runs.append((int(a), int(b)))
    return sorted(runs)


def tall_bodies(vertebrae: Sequence[Vertebra], max_ratio: float) -> list[str]:
    """Warnings for localised bodies much taller than the others: two bodies run together.

    A body whose height exceeds ``max_ratio`` times the median height of the other bodies
    (at least two others) probably holds a disc that the body probe did not see (the tilted
    lumbosacral junction on thick slices); its ROI A is then not at a body's mid-height.
    """
    if len(vertebrae) < 3:
        return []
    heights = np.array([v.body_height_mm for v in vertebrae], dtype=float)
    out = []
    for i, v in enumerate(vertebrae):
        others = float(np.median(np.delete(heights, i)))
        if heights[i] > max_ratio * others:
            out.append(f"{v.name} is {heights[i]:.0f} mm tall, {100 * (heights[i] / others - 1):.0f} % more than the "
                       f"other bodies (median {others:.0f} mm): two bodies may have run together, check its QC "
                       "image or pass --labels")
    return out


#: the spine is found on a copy subsampled in-plane to about this spacing, mm (vertebrae are tens of mm)
COARSE_GRID_MM = 1.5
#: the patient's body (soft tissue, fat ~-100 HU) against air, on the smoothed image, HU
BODY_HU = -300.0
#: the body probe starts this far in front of the canal's anterior edge (the posterior wall's cortex), mm
POSTERIOR_WALL_MM = 2.0
#: a vertebra's box reaches this far from the canal's centre, left-right and AP (a lumbar vertebra
#: with its transverse processes is ~80-90 mm wide), mm ...
BOX_HALF_WIDTH_MM = 60.0
#: ... and this much further anteriorly (the body lies in front of the canal), mm
BOX_EXTRA_ANTERIOR_MM = 20.0
#: when the probe's centre misses bone, the most common bone component within this many voxels is taken
SEED_SEARCH_VOXELS = 5


def _coarse_bone(hu: np.ndarray, sp: np.ndarray, settings: AnatomySettings):
    """Smoothed HU, bone, bone with each slice's holes filled (gaps closed) and the patient's
    left-right midline (column), on the coarse grid."""
    sm = ndi.gaussian_filter(hu, [settings.smoothing_sigma_mm / s for s in sp], mode="nearest")
    bone = sm > settings.bone_threshold_hu
    filled = _fill_slices(bone, sp, settings.gap_close_mm)
    bone = bone | (filled & ~_fill_slices(bone))  # closed gaps count as bone
    body_mask = sm > BODY_HU
    xs = np.flatnonzero(body_mask.any(axis=(0, 1)))
    x_mid = float(np.median(np.nonzero(body_mask)[2])) if xs.size else bone.shape[2] / 2
    return sm, bone, filled, x_mid


def _probe_offset_mm(settings: AnatomySettings) -> float:
    """Distance of the body probe's centre in front of the canal's centre, mm."""
    return 0.5 * settings.default_canal_depth_mm + POSTERIOR_WALL_MM + settings.body_probe_radius_mm


def _body_fill(filled: np.ndarray, cy: np.ndarray, cx: np.ndarray, sp: np.ndarray,
               settings: AnatomySettings) -> np.ndarray:
    """Per slice, the filled-bone share of an axial disk in front of the canal.

    A body slice's disk is enclosed bone (cortical ring filled, gaps closed); a disc's is not. Not
    its mean HU: on 3 mm slices a thin disc between two endplates averages above
    ``bone_threshold_hu`` (the real CT's T12/L1 disc: 113-117 HU), as much as an osteoporotic
    body's own cancellous core (90-100 HU), so only the fill tells them apart.
    """
    nz, ny, nx = filled.shape
    r = settings.body_probe_radius_mm
    yy, xx = np.ogrid[:ny, :nx]
    fill = np.zeros(nz)
    for k in range(nz):
        py = cy[k] - _probe_offset_mm(settings) / sp[1]
        disk = ((yy - py) * sp[1]) ** 2 + ((xx - cx[k]) * sp[2]) ** 2 <= r * r
        if disk.any():
            fill[k] = filled[k][disk].mean()
    return fill


def _whole_body_runs(fill: np.ndarray, found: np.ndarray, dz: float, settings: AnatomySettings) -> list:
    """Runs of body slices, superior first, that neither touch the scan's ends nor lie wholly beyond
    the first or last canal detection (where the track is extrapolated and the probe no longer follows
    the spine: the sacrum below L5 on the real 3 mm CT)."""
    nz = fill.size
    edge = int(np.ceil(settings.fov_edge_margin_mm / dz))
    runs = [(a, b) for a, b in body_runs(fill, dz, settings) if a > edge - 1 and b < nz - edge + 1 and a > 0 and b < nz]
    seen = np.flatnonzero(found)
    runs = [(a, b) for a, b in runs if b > seen[0] and a <= seen[-1]]
    if not runs:
        raise AnatomyError("no whole vertebral body found along the spinal canal (bone fill anterior to the "
                           "canal never forms a body-length run); pass --labels")
    return runs[::-1]  # canonical z increases superiorly


def _vertebra_mask(hb: np.ndarray, sp_full: np.ndarray, y_body: int, seed: tuple[int, int],
                   settings: AnatomySettings, name: str) -> np.ndarray:
    """The connected bone of a vertebra in its box (full resolution), the canal left out.

    Gaps of the cortical ring are closed in the body only (rows before ``y_body``), so that the
    concavities between pedicle, processes and lamina stay out of the mask. ``seed``: the body
    probe's (row, column) on the box's middle slice.
    """
    sig_f = [settings.smoothing_sigma_mm / s for s in sp_full]
    sm_b = ndi.gaussian_filter(hb, sig_f, mode="nearest")
    bb = sm_b > settings.bone_threshold_hu
    fb = _fill_slices(bb)
    fb[:, :max(0, y_body)] |= _fill_slices(bb, sp_full, settings.gap_close_mm)[:, :max(0, y_body)]
    holes = fb & ~bb
    hl, nh = ndi.label(holes)
    if nh:
        # the canal: holes holding CSF / cord / fat behind the body (an osteoporotic body's own core
        # can be as low as the canal), not low-density cancellous bone
        ids = np.arange(1, nh + 1)
        means = ndi.mean(sm_b, hl, ids)
        ycen = np.array([c[1] for c in ndi.center_of_mass(holes, hl, ids)])
        fb &= ~np.isin(hl, ids[(means < settings.canal_max_hu) & (ycen > y_body)])
    lab, _ = ndi.label(fb)
    kb, (pyb, pxb) = fb.shape[0] // 2, seed
    seed_id = lab[kb, pyb, pxb]
    if seed_id == 0:
        n = SEED_SEARCH_VOXELS
        ids, cnt = np.unique(lab[kb][max(0, pyb - n):pyb + n + 1, max(0, pxb - n):pxb + n + 1], return_counts=True)
        cnt, ids = cnt[ids > 0], ids[ids > 0]
        if ids.size == 0:
            raise AnatomyError(f"{name}: no bone at the body position found by the localiser; pass --labels")
        seed_id = ids[np.argmax(cnt)]
    return lab == seed_id


def localize_vertebrae(volume: Volume, settings: AnatomySettings | None = None, *,
                       levels: Sequence[str] | None = None) -> list[Vertebra]:
    """Find the vertebral bodies on the CT and measure each vertebra.

    Parameters
    ----------
    volume : Volume
        CT in HU covering the lumbar spine.
    settings : AnatomySettings, optional
    levels : sequence of str, optional
        Names superior to inferior (e.g. ``['L3', 'L4', 'L5']``); must match the number of
        whole bodies found.

    Returns
    -------
    list of Vertebra
        Superior to inferior, ``source='localized'``, named by ``levels`` or V1..Vn
        (``verse_id`` None for V-names).

    Raises
    ------
    AnatomyError
        No canal or no body found, or a count different from ``levels`` (the message lists
        the bodies found with their positions).
    """
    settings = settings or AnatomySettings()
    frame = CanonicalFrame.of(volume)
    sp_full = np.asarray(frame.spacing)
    step = np.array([1, max(1, int(round(COARSE_GRID_MM / sp_full[1]))), max(1, int(round(COARSE_GRID_MM / sp_full[2])))])
    sp = sp_full * step
    hu_full = frame.to_canonical(volume.array)
    sm, bone, filled, x_mid = _coarse_bone(np.asarray(hu_full[:, ::step[1], ::step[2]], dtype=np.float32), sp, settings)
    cy, cx, found = find_canal(sm, bone, filled, sp, x_mid, settings)
    runs = _whole_body_runs(_body_fill(filled, cy, cx, sp, settings), found, sp[0], settings)
    if levels is not None and len(levels) != len(runs):
        where = ", ".join(f"z {frame.canonical_to_lps(volume, [0.5 * (a + b), cy[(a + b) // 2] * step[1], cx[(a + b) // 2] * step[2]])[2]:.0f} mm"
                          for a, b in runs)
        raise AnatomyError(f"found {len(runs)} whole vertebral bodies ({where}, superior first) but --levels names "
                           f"{len(levels)} ({', '.join(levels)}); give as many levels as whole lumbar bodies in the scan "
                           "or pass --labels")
    names = list(levels) if levels is not None else [f"V{i + 1}" for i in range(len(runs))]
    half = [int(np.ceil(BOX_HALF_WIDTH_MM / sp_full[1])), int(np.ceil(BOX_HALF_WIDTH_MM / sp_full[2]))]
    out = []
    for name, (a, b) in zip(names, runs):
        kc = (a + b) // 2
        ycan, xcan = cy[kc] * step[1], cx[kc] * step[2]
        lo = np.array([a, max(0, int(ycan) - half[0] - int(BOX_EXTRA_ANTERIOR_MM / sp_full[1])), max(0, int(xcan) - half[1])])
        hi = np.array([b, min(hu_full.shape[1], int(ycan) + half[0]), min(hu_full.shape[2], int(xcan) + half[1])])
        hb = np.asarray(hu_full[tuple(slice(int(p), int(q)) for p, q in zip(lo, hi))], dtype=np.float32)
        # the body ends at the canal's anterior edge (canal centre - half the typical depth + 2 mm)
        limit = cy[kc] * step[1] - lo[1] - (0.5 * settings.default_canal_depth_mm - POSTERIOR_WALL_MM) / sp_full[1]
        pyb = int(round((cy[kc] - _probe_offset_mm(settings) / sp[1]) * step[1] - lo[1]))
        seed = (int(np.clip(pyb, 0, hb.shape[1] - 1)), int(round(xcan - lo[2])))
        mask = _vertebra_mask(hb, sp_full, int(limit), seed, settings, name)
        out.append(vertebra_geometry(volume, frame, mask, tuple(int(v) for v in lo), name, VERSE_IDS.get(name.upper()),
                                     settings, source="localized", body_posterior_limit=limit))
    return out
