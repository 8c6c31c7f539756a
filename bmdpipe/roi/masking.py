"""Removing cortical bone and sclerotic foci from an ROI, adapted to each vertebra.

Rule (no global HU threshold):

1. The decision is made on a smoothed copy of the CT (Gaussian, ``smoothing_sigma_mm``), so
   that a voxel is judged by its neighbourhood, not by its own noise (cutting single noisy
   bright voxels would bias the mean downwards).
2. Reference = mode of the smoothed HU over the ROI's candidate voxels (this vertebra,
   this region; the deep ones when there are enough), robust to the share of cortex in
   them; spread = robust SD of the values at or below the mode
   (:func:`robust_reference`).
3. Dense = smoothed HU > reference + max(``dense_k_sd`` x spread, ``dense_min_delta_hu``):
   cortex (650-900 mg/cm3), sclerosis (400-800 mg/cm3) and metal all exceed it, cancellous
   bone with its slow rim-to-centre gradient does not.
4. Clearance: a candidate is kept only if it is at least ``margin_mm`` (3 sigma of the PSF,
   :meth:`MaskingSettings.margin_mm`) away from every dense voxel and from the outside of
   the bone (``support``), because the PSF spreads cortex into its neighbours.

Partial volume: the ROI is binary (voxel centres); step 4 keeps every voxel far enough from
cortex that partial-volume mixing with it is below 0.2 % of the cortex-cancellous contrast.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi

from ..config import MaskingSettings
from ..morphology import distance_mm
from ..robust import MAD_TO_SD, robust_sd

__all__ = ["dense_mask", "mask_roi", "robust_reference"]

#: the cancellous reference comes from the candidates deep inside the bone when at least this many
#: are (the mode of fewer is noise)
MIN_DEEP_VOXELS = 20


def robust_reference(values: np.ndarray, bin_hu: float = 5.0) -> tuple[float, float]:
    """Cancellous reference (HU) and spread of ROI values that may hold cortex.

    The reference is the mode of the (smoothed) values, so a large share of blurred cortex
    in the candidates (a pedicle's walls) does not pull it up as it would a median; the
    spread is the robust SD (1.4826 x MAD) of the values at or below the mode, the side
    cortex and sclerosis cannot reach.
    """
    v = np.asarray(values, dtype=np.float64)
    lo, hi = np.percentile(v, [1, 99])
    if hi - lo < 2 * bin_hu:
        ref = float(np.median(v))
    else:
        hist, edges = np.histogram(v, bins=max(3, int(np.ceil((hi - lo) / bin_hu))), range=(lo, hi))
        hist = ndi.gaussian_filter1d(hist.astype(float), 2.0)
        k = int(np.argmax(hist))
        ref = float(0.5 * (edges[k] + edges[k + 1]))
    below = v[v <= ref]
    spread = MAD_TO_SD * float(np.median(ref - below)) if below.size >= 10 else robust_sd(v, ref)
    return ref, spread


def dense_mask(hu: np.ndarray, candidates: np.ndarray, spacing, settings: MaskingSettings,
               reference: np.ndarray | None = None, reference_cap_hu: float | None = None
               ) -> tuple[np.ndarray, float, float]:
    """Dense (cortex / sclerosis / metal) voxels of a box.

    Parameters
    ----------
    hu : (Z, Y, X) ndarray of float
        CT values, HU.
    candidates : (Z, Y, X) ndarray of bool
        Candidate ROI voxels.
    spacing : tuple of float, shape (3,)
        Voxel size, mm.
    settings : MaskingSettings
    reference : ndarray of bool, optional
        Voxels that define the cancellous reference (default: the candidates).
    reference_cap_hu : float, optional
        Upper bound of the reference (e.g. the vertebral body's cancellous HU + a margin),
        for ROIs made mostly of cortex (a pedicle on a 3 mm scan).

    Returns
    -------
    dense : ndarray of bool
    threshold_hu : float
    reference_hu : float
    """
    sig = [settings.smoothing_sigma_mm / s for s in spacing]
    sm = ndi.gaussian_filter(hu.astype(np.float32), sig, mode="nearest") if settings.smoothing_sigma_mm > 0 else hu
    ref_mask = candidates if reference is None or not reference.any() else reference
    vals = sm[ref_mask]
    if vals.size == 0:
        return np.zeros(hu.shape, bool), float("nan"), float("nan")
    ref, spread = robust_reference(vals)
    if reference_cap_hu is not None and np.isfinite(reference_cap_hu) and ref > reference_cap_hu:
        # the ROI's own values are mostly dense: their spread is cortex, not cancellous noise
        ref, spread = float(reference_cap_hu), 0.0
    thr = ref + max(settings.dense_k_sd * spread, settings.dense_min_delta_hu)
    if reference_cap_hu is not None and np.isfinite(reference_cap_hu):
        thr = min(thr, float(reference_cap_hu) + settings.dense_min_delta_hu)
    return sm > thr, thr, ref


def mask_roi(hu: np.ndarray, candidates: np.ndarray, support: np.ndarray, spacing,
             settings: MaskingSettings, *, reference_cap_hu: float | None = None) -> tuple[np.ndarray, int]:
    """Keep the candidates that are clear of dense bone and of the bone surface.

    Parameters
    ----------
    hu : (Z, Y, X) ndarray of float
        CT values in the box, HU.
    candidates : (Z, Y, X) ndarray of bool
        Geometric ROI (only voxels inside ``support`` count).
    support : (Z, Y, X) ndarray of bool
        The bone the ROI must stay inside (vertebra or body mask).
    spacing : tuple of float
        Voxel size, mm.
    settings : MaskingSettings
    reference_cap_hu : float, optional
        See :func:`dense_mask`.

    Returns
    -------
    kept : ndarray of bool
    n_excluded : int
        Candidates removed as cortex or sclerosis (or too close to them / to the surface).

    Notes
    -----
    The cancellous reference is taken from the candidates lying deeper than twice the
    clearance inside the bone (so a pedicle's cortex does not raise it), or from all
    candidates when too few are that deep. Work is done on the candidates' bounding box
    grown by the clearance and the smoothing reach, so it is cheap for small ROIs.
    """
    candidates = candidates & support
    n_cand = int(candidates.sum())
    if n_cand == 0:
        return candidates, 0
    margin = settings.margin_mm
    reach = margin + 3.0 * settings.smoothing_sigma_mm
    idx = np.argwhere(candidates)
    pad = np.ceil(reach / np.asarray(spacing)).astype(int) + 2
    lo = np.maximum(idx.min(0) - pad, 0)
    hi = np.minimum(idx.max(0) + 1 + pad, candidates.shape)
    sl = tuple(slice(int(a), int(b)) for a, b in zip(lo, hi))
    cand, sup, h = candidates[sl], support[sl], hu[sl]
    inner = distance_mm(sup, spacing)
    deep = cand & (inner > 2.0 * margin)
    dense, _, _ = dense_mask(h, cand, spacing, settings, reference=deep if deep.sum() >= MIN_DEEP_VOXELS else None,
                             reference_cap_hu=reference_cap_hu)
    ok = cand & (inner > margin)
    if dense.any():
        ok &= distance_mm(~dense, spacing) > margin
    kept = np.zeros_like(candidates)
    kept[sl] = ok
    return kept, n_cand - int(ok.sum())
