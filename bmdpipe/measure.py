"""ROI masks + calibration -> the ``vbmd.csv`` row of each ROI; ROI label maps.

Partial volume at ROI borders: ROIs are binary sets of voxel centres. The masking step
(:mod:`bmdpipe.roi.masking`) keeps every ROI voxel at least ``masking.margin_mm`` (3 PSF
sigma) from cortex, sclerosis, metal and the bone surface, so border voxels hold cancellous
bone only and need no partial-volume weight; ``volume_mm3`` = voxel count x voxel volume.

Every row passes one plausibility gate (:func:`implausible_reason`, ``plausibility``
settings): an ROI holding a share of air-valued or metal-valued voxels, or whose vBMD lies
outside a physical range, is not a measurement of bone; its HU and density columns are left
empty and ``reason`` says why.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable
from dataclasses import replace

import numpy as np

from .config import PlausibilitySettings, Settings
from .noise import NoiseModel
from .results import Calibration, Region, Roi, Side
from .rows import UNCALIBRATED, VbmdRow
from .volume import Volume

__all__ = ["roi_values", "measure_roi", "measure_rois", "implausible_reason", "roi_label_map", "imprecise_roi_note",
           "refused_roi_note"]


def _slices(roi: Roi) -> tuple[slice, ...]:
    return tuple(slice(o, o + n) for o, n in zip(roi.offset, roi.mask.shape))


def roi_values(array: np.ndarray, roi: Roi) -> np.ndarray:
    """Values of a full-grid ``array`` (HU, truth ...) at the ROI's voxels, 1-D."""
    return np.asarray(array[_slices(roi)][roi.mask], dtype=np.float64)


def implausible_reason(hu: np.ndarray, vbmd_mg_cm3: float, settings: PlausibilitySettings) -> str:
    """Why an ROI's values are not a measurement of bone, or ``''``.

    Parameters
    ----------
    hu : (n,) ndarray
        The ROI's voxel values, HU (n > 0).
    vbmd_mg_cm3 : float
        Its calibrated mean, mg/cm3 (NaN when uncalibrated: the range is not checked).
    settings : PlausibilitySettings
        ``air_hu`` / ``max_air_fraction``, ``metal_hu`` / ``max_metal_fraction`` (HU, share of
        the voxels) and ``min_vbmd_mg_cm3`` / ``max_vbmd_mg_cm3``.
    """
    problems = []
    air = float(np.mean(hu < settings.air_hu))
    if air > settings.max_air_fraction:
        problems.append(f"{100 * air:.0f} % of its voxels below {settings.air_hu:g} HU (air or gas: a missing or "
                        "truncated slice, the scan's edge, gas in the vertebra)")
    metal = float(np.mean(hu > settings.metal_hu))
    if metal > settings.max_metal_fraction:
        problems.append(f"{100 * metal:.0f} % of its voxels above {settings.metal_hu:g} HU (metal or cement)")
    if np.isfinite(vbmd_mg_cm3) and not settings.min_vbmd_mg_cm3 <= vbmd_mg_cm3 <= settings.max_vbmd_mg_cm3:
        problems.append(f"vBMD {vbmd_mg_cm3:.1f} mg/cm3 outside the physical range {settings.min_vbmd_mg_cm3:g}.."
                        f"{settings.max_vbmd_mg_cm3:g}")
    if not problems:
        return ""
    return "implausible, values left empty: " + ", ".join(problems) + " (plausibility settings)"


def measure_roi(volume: Volume, roi: Roi, calibration: Calibration | None = None, noise: NoiseModel | None = None,
                *, precision_cv_percent: float | None = None,
                plausibility: PlausibilitySettings | None = None) -> VbmdRow:
    """The ``vbmd.csv`` row of one ROI: its HU statistics and calibrated density.

    Parameters
    ----------
    volume : Volume
        CT in HU; its ``meta`` gives the row's study_id, timepoint and series_uid.
    roi : Roi
        Masked ROI on ``volume``'s grid.
    calibration : Calibration or None
        HU -> mg/cm3; None leaves the density columns NaN.
    noise : NoiseModel or None
        The series' noise model (:func:`bmdpipe.noise.estimate_noise`); None leaves the
        standard error and the noise columns NaN.
    precision_cv_percent : float or None
        Short-term precision of spine QCT as a coefficient of variation, %: gives
        ``vbmd_precision_sd_mg_cm3`` of a phantom-calibrated ROI A (the ROI and calibration the
        figure was measured on); None or another ROI leaves it NaN.
    plausibility : PlausibilitySettings, optional
        The gate's thresholds (default: ``configs/default.yaml``).

    Returns
    -------
    VbmdRow
        ``hu_mean, hu_median, hu_sd`` (HU), ``vbmd_mg_cm3`` (calibrated mean),
        ``vbmd_median_mg_cm3``, ``vbmd_sd_mg_cm3`` (mg/cm3), ``vbmd_se_mg_cm3`` (standard
        error of the mean from image noise, mg/cm3: ``sqrt(var(mean)) / |slope|``, the variance
        summed over the ROI's voxel pairs from the noise autocovariance at the ROI's noise level,
        :meth:`NoiseModel.variance_of_mean`), ``n_effective`` (independent samples the ROI's
        voxels are worth), ``noise_sd_hu`` (noise SD at the ROI) and ``noise_correlation_mm``
        (the series' in-plane correlation length),
        ``vbmd_precision_sd_mg_cm3`` (the literature's repeat-scan SD at this density),
        ``n_voxels``, ``volume_mm3``, ``excluded_fraction`` (share of candidates removed as
        cortex/sclerosis). NaN for an empty ROI. An ROI the plausibility gate refuses has NaN
        HU and density columns and the reason in ``reason``.

    Notes
    -----
    The standard error covers the image noise only: not the calibration's error (its own
    uncertainty is in ``calibration.csv``), nor repositioning and segmentation between scans
    (what ``vbmd_precision_sd_mg_cm3`` quotes). ``hu_sd`` is not used for it: in bone it holds the
    trabecular texture and density gradients as well as the noise, and a small ROI's own SD is too
    uncertain (a pedicle ROI is worth a few independent samples).
    """
    hu = roi_values(volume.array, roi)
    n = int(hu.size)
    nan = float("nan")
    mean = median = sd = nan
    if n:
        mean, median = float(hu.mean()), float(np.median(hu))
        sd = float(hu.std(ddof=1)) if n > 1 else 0.0
    noise_sd, n_effective, noise_corr = _roi_noise(noise, roi) if noise is not None else (nan, nan, nan)
    var_mean = noise_sd ** 2 / n_effective
    vbmd = vbmd_median = vbmd_sd = vbmd_se = precision_sd = nan
    if calibration is not None and n:
        vbmd, vbmd_median = float(calibration.density(mean)), float(calibration.density(median))
        vbmd_sd = sd / abs(calibration.slope_hu_per_mg_cm3)
        vbmd_se = float(np.sqrt(var_mean) / abs(calibration.slope_hu_per_mg_cm3))
        if (precision_cv_percent is not None and Region(roi.region) is Region.A
                and calibration.method == "phantom"):
            precision_sd = abs(vbmd) * precision_cv_percent / 100.0
    meta = volume.meta
    row = VbmdRow(
        study_id=meta.study_id, timepoint=meta.timepoint, series_uid=meta.series_uid,
        vertebra=roi.vertebra, region=roi.region, side=roi.side, vbmd_mg_cm3=vbmd,
        material=None if calibration is None else calibration.material,
        hu_mean=mean, hu_median=median, hu_sd=sd, n_voxels=n,
        volume_mm3=float(n * volume.voxel_volume_mm3), excluded_fraction=float(roi.excluded_fraction),
        calibration="" if calibration is None else calibration.method, roi_source=roi.source,
        vbmd_median_mg_cm3=vbmd_median, vbmd_sd_mg_cm3=vbmd_sd, vbmd_se_mg_cm3=vbmd_se,
        label_code=roi.label_code, n_effective=n_effective, noise_sd_hu=noise_sd,
        noise_correlation_mm=noise_corr, vbmd_precision_sd_mg_cm3=precision_sd,
    )
    reason = implausible_reason(hu, vbmd, plausibility or PlausibilitySettings()) if n else ""
    if not reason:
        return row
    return replace(row, reason=reason, vbmd_mg_cm3=nan, hu_mean=nan, hu_median=nan, hu_sd=nan,
                   vbmd_median_mg_cm3=nan, vbmd_sd_mg_cm3=nan, vbmd_se_mg_cm3=nan, vbmd_precision_sd_mg_cm3=nan)


def measure_rois(volume: Volume, rois: Iterable[Roi], calibration: Calibration | None, noise: NoiseModel | None,
                 settings: Settings) -> tuple[VbmdRow, ...]:
    """The ``vbmd.csv`` rows of a series' ROIs, as ``bmdpipe run`` and the review step measure them.

    :func:`measure_roi` of each ROI with the ``roi.precision_cv_percent`` and ``plausibility``
    settings; without a calibration (it failed) each row's ``calibration`` is ``failed``
    (:data:`~bmdpipe.rows.UNCALIBRATED`) and its densities are empty.
    """
    rows = tuple(measure_roi(volume, roi, calibration, noise, precision_cv_percent=settings.roi.precision_cv_percent,
                             plausibility=settings.plausibility) for roi in rois)
    if calibration is None:
        rows = tuple(replace(r, calibration=UNCALIBRATED) for r in rows)
    return rows


def _roi_noise(noise: NoiseModel, roi: Roi) -> tuple[float, float, float]:
    """Noise SD at the ROI (HU), the independent samples its voxels are worth, and the series'
    noise correlation length (mm); the first two NaN for an empty ROI."""
    if not roi.mask.any():
        return float("nan"), float("nan"), noise.correlation_mm
    return noise.local_sd_hu(roi.mask, roi.offset), noise.effective_samples(roi.mask), noise.correlation_mm


def imprecise_roi_note(rows: Iterable[VbmdRow], max_standard_error_mg_cm3: float,
                       screw_sides: Collection[tuple[str, str]] = ()) -> str:
    """One warning naming the ROIs (``vbmd.csv`` rows) whose mean is imprecise, else ``''``.

    An ROI is imprecise when it is empty or the standard error of its mean
    (``vbmd_se_mg_cm3``) exceeds ``max_standard_error_mg_cm3`` (mg/cm3). ``screw_sides``:
    the (vertebra, side) pairs holding a detected screw; an ROI B left empty there is named with
    that cause (on a post-operative scan the screw fills the pedicle's isthmus).
    """
    items = []
    screw_sides = set(screw_sides)
    for r in rows:
        se, n = r.vbmd_se_mg_cm3, int(r.n_voxels)
        region, side = Region(r.region), Side(r.side)
        name = f"{r.vertebra} {region.value} {side.value}"
        if n == 0:
            screw = region is Region.B and (r.vertebra, side.value) in screw_sides
            items.append(f"{name} empty ({'the screw fills the pedicle' if screw else 'every voxel excluded'})")
        elif se is not None and np.isfinite(se) and se > max_standard_error_mg_cm3:
            items.append(f"{name} +-{se:.1f} ({n} voxels)")
    if not items:
        return ""
    return (f"imprecise ROIs, check their QC images (standard error of the mean above {max_standard_error_mg_cm3:g} "
            "mg/cm3, roi.max_standard_error_mg_cm3): " + ", ".join(items))


def refused_roi_note(rows: Iterable[VbmdRow]) -> str:
    """One warning naming the ROIs (``vbmd.csv`` rows) the plausibility gate refused, else ``''``."""
    items = [f"{r.vertebra} {Region(r.region).value} {Side(r.side).value}" for r in rows if r.reason]
    if not items:
        return ""
    return f"implausible ROIs left empty, see vbmd.csv reason: {', '.join(items)}"


def roi_label_map(shape, rois: Iterable[Roi], region: Region | str) -> np.ndarray:
    """Label map (uint16, CT grid) of the ROIs of one region: voxel = ``roi.label_code``.

    Where ROIs of the same region overlap the later one wins (does not happen for A/B; C
    of neighbouring levels cannot overlap since each is inside its own vertebra).
    """
    region = Region(region)
    out = np.zeros(tuple(shape), np.uint16)
    for roi in rois:
        if Region(roi.region) is not region:
            continue
        sl = _slices(roi)
        out[sl][roi.mask] = roi.label_code
    return out
