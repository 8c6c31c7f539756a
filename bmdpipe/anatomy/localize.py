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
from ..results import VERSE_IDS, Vertebra
from ..volume import Volume
from .frame import CanonicalFrame
from .vertebra import vertebra_geometry

__all__ = ["localize_vertebrae", "find_canal", "body_runs", "tall_bodies"]


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
        out[k] = ndi.binary_fill_holes(m)
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
    ant_vox = int(round(12.0 / spacing[1]))
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
            if col.sum() * spacing[1] < 10.0:
                continue
            score = col.sum() - abs(x - x_mid) * spacing[2] * 0.1
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
    far = np.hypot((det[:, 0] - med[0]) * spacing[1], (det[:, 1] - med[1]) * spacing[2]) > 25.0
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
    step = np.array([1, max(1, int(round(1.5 / sp_full[1]))), max(1, int(round(1.5 / sp_full[2])))])
    sp = sp_full * step
    hu_full = frame.to_canonical(volume.array)
    hu = np.asarray(hu_full[:, ::step[1], ::step[2]], dtype=np.float32)
    sig = [settings.smoothing_sigma_mm / s for s in sp]
    sm = ndi.gaussian_filter(hu, sig, mode="nearest")
    bone = sm > settings.bone_threshold_hu
    filled = _fill_slices(bone, sp, settings.gap_close_mm)
    bone = bone | (filled & ~_fill_slices(bone))  # closed gaps count as bone
    body_mask = sm > -300.0
    xs = np.flatnonzero(body_mask.any(axis=(0, 1)))
    x_mid = float(np.median(np.nonzero(body_mask)[2])) if xs.size else bone.shape[2] / 2
    cy, cx, found = find_canal(sm, bone, filled, sp, x_mid, settings)
    # body probe: disk anterior to the canal
    nz, ny, nx = bone.shape
    r = settings.body_probe_radius_mm
    yy, xx = np.ogrid[:ny, :nx]
    fill = np.zeros(nz)
    off_y = (0.5 * settings.default_canal_depth_mm + 2.0 + r)
    for k in range(nz):
        py = cy[k] - off_y / sp[1]
        disk = ((yy - py) * sp[1]) ** 2 + ((xx - cx[k]) * sp[2]) ** 2 <= r * r
        if disk.any():
            # a body slice: the disk is enclosed bone (cortical ring filled, gaps closed); a disc is
            # not. Not its mean HU: on 3 mm slices a thin disc between two endplates averages
            # above bone_threshold_hu (the real CT's T12/L1 disc: 113-117 HU), as much as an
            # osteoporotic body's own cancellous core (90-100 HU), so only the fill tells them apart
            fill[k] = filled[k][disk].mean()
    runs = body_runs(fill, sp[0], settings)
    edge = int(np.ceil(settings.fov_edge_margin_mm / sp[0]))
    runs = [(a, b) for a, b in runs if a > edge - 1 and b < nz - edge + 1 and a > 0 and b < nz]
    # beyond the first and last canal detection the track is extrapolated and the probe no longer
    # follows the spine: a run there is not a located body (the sacrum below L5 on the real 3 mm CT)
    seen = np.flatnonzero(found)
    runs = [(a, b) for a, b in runs if b > seen[0] and a <= seen[-1]]
    if not runs:
        raise AnatomyError("no whole vertebral body found along the spinal canal (bone fill anterior to the "
                           "canal never forms a body-length run); pass --labels")
    runs = runs[::-1]  # superior first (canonical z increases superiorly)
    if levels is not None and len(levels) != len(runs):
        where = ", ".join(f"z {frame.canonical_to_lps(volume, [0.5 * (a + b), cy[(a + b) // 2] * step[1], cx[(a + b) // 2] * step[2]])[2]:.0f} mm"
                          for a, b in runs)
        raise AnatomyError(f"found {len(runs)} whole vertebral bodies ({where}, superior first) but --levels names "
                           f"{len(levels)} ({', '.join(levels)}); give as many levels as whole lumbar bodies in the scan "
                           "or pass --labels")
    names = list(levels) if levels is not None else [f"V{i + 1}" for i in range(len(runs))]
    out = []
    for name, (a, b) in zip(names, runs):
        kc = (a + b) // 2
        ycan, xcan = cy[kc] * step[1], cx[kc] * step[2]
        half = [int(np.ceil(60.0 / sp_full[1])), int(np.ceil(60.0 / sp_full[2]))]
        lo = np.array([a, max(0, int(ycan) - half[0] - int(20 / sp_full[1])), max(0, int(xcan) - half[1])])
        hi = np.array([b, min(hu_full.shape[1], int(ycan) + half[0]), min(hu_full.shape[2], int(xcan) + half[1])])
        sl = tuple(slice(int(p), int(q)) for p, q in zip(lo, hi))
        hb = np.asarray(hu_full[sl], dtype=np.float32)
        sig_f = [settings.smoothing_sigma_mm / s for s in sp_full]
        bb = ndi.gaussian_filter(hb, sig_f, mode="nearest") > settings.bone_threshold_hu
        # gaps of the cortical ring are closed in the body only (anterior to the canal), so that
        # the concavities between pedicle, processes and lamina stay out of the mask
        y_body = int(cy[kc] * step[1] - lo[1] - (0.5 * settings.default_canal_depth_mm - 2.0) / sp_full[1])
        fb = _fill_slices(bb)
        fb[:, :max(0, y_body)] |= _fill_slices(bb, sp_full, settings.gap_close_mm)[:, :max(0, y_body)]
        holes = fb & ~bb
        hl, nh = ndi.label(holes)
        if nh:
            # remove the canal: holes holding CSF / cord / fat, not low-density cancellous bone
            sm_b = ndi.gaussian_filter(hb, sig_f, mode="nearest")
            ids = np.arange(1, nh + 1)
            means = ndi.mean(sm_b, hl, ids)
            # only holes behind the body: an osteoporotic body's own core can be as low as the canal
            ycen = np.array([c[1] for c in ndi.center_of_mass(holes, hl, ids)])
            canal_ids = ids[(means < settings.canal_max_hu) & (ycen > y_body)]
            fb &= ~np.isin(hl, canal_ids)
        lab, n = ndi.label(fb)
        kb = fb.shape[0] // 2
        pyb = int(round((cy[kc] - off_y / sp[1]) * step[1] - lo[1]))
        pxb = int(round(xcan - lo[2]))
        pyb = int(np.clip(pyb, 0, fb.shape[1] - 1))
        seed_id = lab[kb, pyb, pxb]
        if seed_id == 0:
            ids, cnt = np.unique(lab[kb][max(0, pyb - 5):pyb + 6, max(0, pxb - 5):pxb + 6], return_counts=True)
            cnt = cnt[ids > 0]
            ids = ids[ids > 0]
            if ids.size == 0:
                raise AnatomyError(f"{name}: no bone at the body position found by the localiser; pass --labels")
            seed_id = ids[np.argmax(cnt)]
        mask = lab == seed_id
        vid = VERSE_IDS.get(name.upper())
        # the body ends at the canal's anterior edge (canal centre - half the typical depth + 2 mm)
        limit = cy[kc] * step[1] - lo[1] - (0.5 * settings.default_canal_depth_mm - 2.0) / sp_full[1]
        out.append(vertebra_geometry(volume, frame, hb, mask, tuple(int(v) for v in lo), name, vid, settings,
                                     source="localized", body_posterior_limit=limit))
    return out
