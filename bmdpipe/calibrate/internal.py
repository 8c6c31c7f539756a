"""Phantomless (internal) calibration from reference tissues and an effective-energy fit.

Reference tissues are found automatically: air outside the body, subcutaneous fat, the psoas
muscles beside the vertebral bodies (the paraspinal muscles when no psoas is found: older
patients' paraspinal muscles are fat-infiltrated) and blood in the aorta / vena cava
(prevertebral space). Their HU are fitted to the theoretical HU of the same tissues at an
effective energy E (``H_t = a + b * HU_t(E)``, :mod:`bmdpipe.calibrate.attenuation`). The fit
is regularised (maximum a posteriori): each tissue is weighted by its expected deviation from
the tables (``internal_tissue_sd_hu``, air ``internal_air_sd_hu``, blood ``internal_blood_sd_hu``:
unenhanced blood varies with the hematocrit), the scanner's offset a and
gain b get priors ~N(0, 5 HU) and ~N(1, 0.01) (scanners are calibrated to water 0 / air
-1000), and E a prior ~N(70 keV * kVp/120, 6 keV). The bone-mineral calibration then follows
from the same physics: ``HU = a + b * HU_mineral(E, density)``. ``Calibration.references``
lists the tissues used with their HU and fit residuals; ``details["density_uncertainty_fraction"]``
is the fit's own 1-SD uncertainty of a density (spread of the mineral slope under the posterior
over E), ``details["muscle_region"]`` where the muscle was sampled, and
``Calibration.outlines`` shows where the tissues were sampled (QC image).

Cortical bone, the fifth reference of Michalski et al., is not used: the lumbar cortex is
0.4-1.4 mm thick, so on CT its HU are partial-volume averages, and its mineral content varies
between patients (the synthetic cortex: 650-900 mg/cm3); a wrong "known" cortex would bias
every density through E.

Method: Michalski AS, Besler BA, Michalak GJ, Boyd SK. CT-based internal density
calibration for opportunistic skeletal assessment using abdominal CT scans. Med Eng Phys
78:55-63 (2020). Mass attenuation data: ICRU-44 compositions (muscle, blood), the ICRP adipose
tissue (fat) / NIST, see :mod:`bmdpipe.calibrate.attenuation`.

Measured accuracy (``scripts/bench/calibration_accuracy.py --seeds 30 --suites
internal-oracle,internal,internal-tables,internal-precalibrated``), density implied at
150 mg/cm3; synthetic cases with effective energy 64-76 keV, HU gain 0.985-1.015, offset
+-8 HU, noise 10-25 HU, PSF FWHM 0.9-1.3 mm:

- tissues as the tables predict (``internal-tables``): mean |error| 1.56 %, 95th percentile
  4.16 %, max 4.44 % (30 seeds); the residual error is the energy prior's pull at the ends of
  the 64-76 keV range, and blood's low weight (below).
- fat and muscle also deviating N(0, 3 HU) from the tables and blood N(0, 8 HU) (``internal``,
  the generator's default): mean 4.25 %, 95th percentile 10.8 %, max 16.3 %, 3 of 30 beyond
  10 %; the fit's own uncertainty (~5 %) matches: error / uncertainty RMS 1.05, 28 of 30
  within 2 SD. Seeds 200-299 (``--seeds 100 --first-seed 200``, never used in tuning): mean
  3.99 %, 95th percentile 10.2 %, max 20.4 %, 6 of 100 beyond 10 %; RMS 0.98, 96 of 100
  within 2 SD.
- the same cases' TRUE tissue HU through the same fit (``internal-oracle``: no image, no
  measurement): mean 4.24 %, max 16.2 %, 3 of 30 beyond 10 % (300 seeds: mean 4.48 %, 95th
  percentile 11.4 %, 25 of 300 beyond 10 %). The image-based figures match these within 0.1 %
  (mean and max): the error is the information the four tissues carry, which no better
  segmentation can raise. Blood weighted like fat and muscle (3 HU) on the same 300 cases:
  mean 6.46 %, 58 of 300 beyond 10 %, hence ``internal_blood_sd_hu`` 8 HU. 1000 seeds from
  200: mean 4.22 %, 61 beyond 10 %; with the generator's own spread of energies as the prior
  (``--oracle-kev-prior-sd 3.46``, close to the best estimator these tissues allow) still 32 of
  1000 beyond 10 %, max 19.6 %: no phantomless fit bounds every case to 10 %.
- pre-calibrated (``internal-precalibrated``, ``scanner_kev`` from a Mindways scan of the same
  scanner on another day): mean 1.68 %, 95th percentile 4.99 %, max 6.63 %, 0 of 30 beyond
  10 %, own uncertainty ~3 % (conservative: 30 of 30 within 2 SD). Applying that phantom fit
  as is (asynchronous) to the same cases: mean 2.94 %, max 8.67 % (the other day's offset and
  gain are not corrected).

The tissue HU are measured to within ~1 HU of the truth; the error is set by the tissues'
biological deviation: only fat is sensitive to E (~1 HU per keV near 70 keV, muscle 0.1,
blood 0.2 HU/keV) while the mineral slope changes ~2 % per keV, so a fat 3 HU off the
tables moves E ~3 keV and the density ~6 %. A fat 7 HU (2.4 SD) below the tables (seed 103)
cannot be detected by any choice of reference tissues (no other tissue carries information
on E). The unregularised 3-tissue fit gave mean 6.8 %, max 20.0 % on seeds 100-109. Real
patients deviate more (fat infiltration, hematocrit: unenhanced blood 20-50 HU vs ~56 HU in
the ICRU-44 table at 70 keV; contrast-enhanced blood is rejected by ``internal_plausible_hu``),
so expect 5-10 % or worse without pre-calibration (science.md). The energy prior carries part
of the information: a scanner far from ~70 keV at 120 kVp is pulled towards it. Pre-calibration
replaces that generic prior by the scanner's own energy: a phantom fit's slope fixes E
(:func:`precalibration_kev`), and the prior becomes N(E, ``internal_precalibrated_kev_sd_kev``),
while the tissues still fit the series' own offset, gain and (within that prior) energy.

On the real 3 mm CT (README, ``tests/calibrate/test_internal_real.py``) air -997, fat -103 and
psoas 41 HU fit the tables within 0.5 HU RMS at 70.8 keV (71.3 +- 4.0 keV without the energy
prior), offset -1.1 HU, gain 0.996: a Siemens 120 kVp scanner's typical energy. With the
ICRU-44 adipose tissue (-77 HU at 70 keV) and the paraspinal muscle (30 HU there:
fat-infiltrated) the same scan gave 58.5 keV at 2.2 HU RMS, a mineral slope 30 % steeper.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy import ndimage as ndi

from ..config import CalibrationSettings
from ..errors import CalibrationError
from ..morphology import dilate_mm, distance_mm, erode_mm, fill_holes, open_mm
from ..results import Calibration, Material, ReferenceMeasurement, ReferenceOutlines
from ..robust import robust_sd
from ..volume import Volume
from .attenuation import effective_energy_of_slope, hu_of, mineral_slope_hu_per_mg_cm3

__all__ = ["measure_reference_tissues", "point_inside", "EnergyFit", "fit_effective_energy", "slope_uncertainty",
           "energy_prior", "fit_tissues", "precalibration_kev", "calibrate_internal"]

#: a tissue sample (or a vessel search region) of fewer voxels on the sampling grid is not used: its
#: mean would carry ~2 HU of noise at 15 HU per voxel (15 / sqrt(50))
MIN_TISSUE_VOXELS = 50
#: the 12-bit CT scale: values beyond (padding, metal) are clipped before smoothing, HU
CT_RANGE_HU = (-1024, 3071)


def _major_components(mask: np.ndarray, min_fraction: float) -> np.ndarray:
    """Connected components of ``mask`` with at least ``min_fraction`` of the largest one's voxels."""
    lab, n = ndi.label(mask)
    if n <= 1:
        return mask
    sizes = np.bincount(lab.ravel())
    sizes[0] = 0
    return np.isin(lab, np.nonzero(sizes >= min_fraction * sizes.max())[0])


def _largest_component(mask: np.ndarray) -> np.ndarray:
    return _major_components(mask, 1.0)


def _components_reaching(mask: np.ndarray, seed: np.ndarray) -> np.ndarray:
    """Connected components of ``mask`` that overlap ``seed``."""
    lab, _ = ndi.label(mask)
    ids = np.unique(lab[seed & (lab > 0)])
    return np.isin(lab, ids)


def _stats(values: np.ndarray, robust: bool = False) -> tuple[float, float, int]:
    v = values.astype(float)
    if v.size == 0:
        return float("nan"), float("nan"), 0
    if robust:
        return float(np.median(v)), robust_sd(v), int(v.size)
    return float(v.mean()), float(v.std()), int(v.size)


def _plane_lps(volume: Volume, step: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """LPS x and y (mm) of the (j, i) pixels of the middle slice on the sampling grid ``step``."""
    nk, nj, ni = volume.shape
    jj, ii = np.mgrid[0:nj:step[1], 0:ni:step[2]]
    plane = volume.index_to_lps(np.stack([np.full(jj.shape, (nk - 1) / 2.0), jj, ii], axis=-1))
    return plane[..., 0], plane[..., 1]


@dataclass(frozen=True)
class _SpineAxis:
    """Where the spine is on every sampled slice: LPS x / y (mm) of the sampled (j, i) pixels of the
    middle slice, the spine's midline x per slice, the vertebral bodies' anterior edge y per slice
    (LPS y, posterior +) and whether the slice shows the spine (``seen``; the others are
    interpolated or extended from the nearest slice that does)."""

    x: np.ndarray
    y: np.ndarray
    midline_x: np.ndarray
    anterior_y: np.ndarray
    seen: np.ndarray

    def lateral_mm(self) -> np.ndarray:
        """Signed distance (LPS x, left +) of every sampled voxel from the midline, mm."""
        return self.x[None] - self.midline_x[:, None, None]

    def behind_anterior_edge_mm(self) -> np.ndarray:
        """Distance of every sampled voxel behind (+) or in front of (-) the bodies' anterior edge, mm."""
        return self.y[None] - self.anterior_y[:, None, None]


def _spine_axis(spine: np.ndarray, volume: Volume, step: np.ndarray, s: CalibrationSettings) -> _SpineAxis | None:
    """Midline and anterior edge of the spine (``spine``: bone mask on the sampled grid, ``step``
    the sampling step) per slice; the edge is the most anterior bone within
    ``internal_blood_body_halfwidth_mm`` of the midline. None when fewer than 2 slices show the
    spine."""
    x, y = _plane_lps(volume, step)
    nks = spine.shape[0]
    xs, ya = np.full(nks, np.nan), np.full(nks, np.nan)
    for k in range(nks):
        if spine[k].any():
            xs[k] = float(np.median(x[spine[k]]))
            central = spine[k] & (np.abs(x - xs[k]) <= s.internal_blood_body_halfwidth_mm)
            if central.any():
                ya[k] = float(y[central].min())
    ok = ~np.isnan(xs) & ~np.isnan(ya)
    if ok.sum() < 2:
        return None
    kk = np.arange(nks)
    return _SpineAxis(x, y, np.interp(kk, kk[ok], xs[ok]), np.interp(kk, kk[ok], ya[ok]), ok)


def _find_psoas(soft: np.ndarray, near_spine: np.ndarray, blood: np.ndarray, axis: _SpineAxis, ssp: np.ndarray,
                s: CalibrationSettings) -> np.ndarray:
    """The psoas muscles: eroded muscle-range soft tissue beside the vertebral bodies.

    Search space: on the slices that show the spine, ``internal_psoas_min_lateral_mm`` to
    ``internal_psoas_max_lateral_mm`` left and right of the midline, from
    ``internal_psoas_anterior_mm`` in front of the bodies' anterior edge to
    ``internal_psoas_posterior_mm`` behind it, and not within 2 x ``internal_erosion_mm`` of the
    blood found in the great vessels (``blood``, may be empty). On each side the regions that
    reach ``near_spine`` (within ``internal_muscle_near_spine_mm`` of the spine: the psoas arises
    from the bodies and transverse processes; kidney and bowel do not touch them) and hold at least
    ``internal_psoas_min_component_fraction`` of the side's largest such region are kept (one
    muscle per side: small pieces are vessels or bowel). Empty when together they hold less than
    ``internal_psoas_min_mm3``.

    The psoas is the muscle reference because the paraspinal muscles of older patients are
    fat-infiltrated: on the real 3 mm CT (README) the autochthon muscles measure a median 20 HU,
    the psoas 48 HU (TotalSegmentator labels; 41 HU where sampled here), and 10 HU of muscle moves
    the fitted energy ~5 keV.
    """
    lateral, behind = axis.lateral_mm(), axis.behind_anterior_edge_mm()
    box = ((np.abs(lateral) >= s.internal_psoas_min_lateral_mm) & (np.abs(lateral) <= s.internal_psoas_max_lateral_mm)
           & (behind >= -s.internal_psoas_anterior_mm) & (behind <= s.internal_psoas_posterior_mm)
           & axis.seen[:, None, None])
    if blood.any():
        box &= ~dilate_mm(blood, 2.0 * s.internal_erosion_mm, ssp)
    psoas = np.zeros_like(soft)
    for side in (1.0, -1.0):
        reaching = _components_reaching(soft & box & (side * lateral > 0), near_spine)
        psoas |= _major_components(reaching, s.internal_psoas_min_component_fraction)
    if psoas.sum() * float(np.prod(ssp)) < s.internal_psoas_min_mm3:
        return np.zeros_like(soft)
    return psoas


def _find_paraspinal(soft: np.ndarray, spine: np.ndarray, near_spine: np.ndarray, y_lps: np.ndarray,
                     s: CalibrationSettings) -> np.ndarray:
    """Paraspinal muscles (the fallback when no psoas is found): eroded muscle-range soft tissue at
    least ``internal_muscle_posterior_mm`` behind the spine's centre (``y_lps``: LPS y of the
    sampled pixels, mm), in regions reaching ``near_spine`` (within
    ``internal_muscle_near_spine_mm`` of the spine; not a phantom or table touching the back: the
    fat layer and the erosion separate those)."""
    spine_y = float(np.median(y_lps[np.any(spine, axis=0)]))
    return _components_reaching(soft & (y_lps > spine_y + s.internal_muscle_posterior_mm)[None], near_spine)


def _find_blood(sub: np.ndarray, smooth: np.ndarray, spine: np.ndarray, body: np.ndarray, axis: _SpineAxis,
                ssp: np.ndarray, s: CalibrationSettings) -> np.ndarray:
    """Blood in the great vessels (aorta anterior-left, IVC anterior-right of the vertebral bodies).

    Search space: per slice, within ``internal_blood_lateral_mm`` of the spine's midline and up to
    ``internal_blood_anterior_mm`` in front of the vertebral bodies' anterior edge. There the
    vessels are compact soft-tissue regions whose HU (on an image smoothed with
    ``internal_blood_smooth_mm``) differ from the median soft tissue of the search space by at
    least ``internal_blood_contrast_hu`` (either sign: unenhanced blood is a few HU below or above
    muscle) and are shaped like a great vessel (:func:`_vessel_like`: size, length along z,
    centre near the midline); the sign with the larger volume of such outlying tissue is taken,
    its vessel-shaped regions regrown to half their contrast (only within
    ``internal_blood_smooth_mm`` where the regrown region loses the vessel shape) and eroded by
    ``internal_erosion_mm``. Returns an empty mask when nothing qualifies: no blood is better
    than a psoas muscle taken for it.
    """
    empty = np.zeros_like(spine)
    lateral, behind = axis.lateral_mm(), axis.behind_anterior_edge_mm()
    box = (np.abs(lateral) <= s.internal_blood_lateral_mm) & (behind < 0) & (behind >= -s.internal_blood_anterior_mm)
    heavy = ndi.gaussian_filter(np.clip(sub, *CT_RANGE_HU).astype(np.float32), sigma=s.internal_blood_smooth_mm / ssp)
    region = box & body & (smooth >= s.internal_muscle_min_hu) & (smooth <= s.internal_muscle_max_hu)
    # away from bone, whose blur on the smoothed image would look like a vessel
    keep_off = 2.0 * s.internal_blood_smooth_mm + s.internal_erosion_mm
    region &= ~dilate_mm(smooth > s.internal_bone_hu, keep_off, ssp)
    if region.sum() < MIN_TISSUE_VOXELS:
        return empty
    m0 = float(np.median(heavy[region]))
    min_vox = s.internal_blood_min_mm3 / float(np.prod(ssp))
    # the sign with more outlying soft tissue is the vessels' (the tissue between them differs from the
    # median only because they pull it); of its regions, only the vessel-shaped ones are kept
    best, best_size, best_sign = empty, 0.0, 1.0
    for sign in (1.0, -1.0):
        lab, n = ndi.label(region & (sign * (heavy - m0) >= s.internal_blood_contrast_hu))
        sizes = np.bincount(lab.ravel(), minlength=n + 1)[1:]
        if sizes[sizes >= min_vox].sum() > best_size:
            best_size, best_sign = float(sizes[sizes >= min_vox].sum()), sign
            best = np.isin(lab, _vessel_like(lab, n, lateral, min_vox, ssp[0], s))
    if not best.any():
        return empty
    # regrow to half the contrast (selecting at the full threshold would bias the HU towards the tail);
    # a regrown region that is no longer vessel-shaped (it reached a neighbour of similar HU) grows
    # only within internal_blood_smooth_mm of its vessel
    mid = m0 + 0.5 * (float(np.median(heavy[best])) - m0)
    lab, n = ndi.label(region & (best_sign * (heavy - mid) >= 0))
    ids = np.unique(lab[best & (lab > 0)])
    shaped = np.intersect1d(ids, _vessel_like(lab, n, lateral, min_vox, ssp[0], s))
    near = dilate_mm(best, s.internal_blood_smooth_mm, ssp)
    vessel = np.isin(lab, shaped) | (np.isin(lab, ids) & near)  # ids: labels > 0 only
    return erode_mm(vessel, s.internal_erosion_mm, ssp)


def _vessel_like(lab: np.ndarray, n: int, lateral_mm: np.ndarray, min_vox: float, dz_mm: float,
                 s: CalibrationSettings) -> np.ndarray:
    """Labels (1..n) of components shaped like the aorta or vena cava: at least ``min_vox`` voxels,
    a tube running at least ``internal_blood_min_length_mm`` along z whose centre stays within
    ``internal_blood_centre_lateral_mm`` of the spine's midline on every slice (``lateral_mm``:
    signed distance of each voxel from it, mm). The psoas muscles and iliac vessels, which
    diverge laterally, fail the last test; scattered pieces of soft tissue the first two."""
    ids = np.arange(1, n + 1)
    sizes = np.bincount(lab.ravel(), minlength=n + 1)[1:]
    boxes = ndi.find_objects(lab)
    length = np.array([(b[0].stop - b[0].start) * dz_mm for b in boxes])
    out = []
    for i in ids[(sizes >= min_vox) & (length >= s.internal_blood_min_length_mm)]:
        b = boxes[i - 1]
        m = lab[b] == i
        per_slice = (lateral_mm[b] * m).sum(axis=(1, 2)) / np.maximum(m.sum(axis=(1, 2)), 1)
        if np.abs(per_slice[m.any(axis=(1, 2))]).max() <= s.internal_blood_centre_lateral_mm:
            out.append(i)
    return np.array(out, dtype=int)


def point_inside(mask: np.ndarray) -> np.ndarray:
    """Index of the mask voxel nearest to the mask's centroid: inside the mask even for a ring
    such as subcutaneous fat, unlike the centroid itself. Works for 2-D and 3-D masks."""
    idx = np.argwhere(mask)
    c = idx.mean(0)
    return idx[int(np.argmin(((idx - c) ** 2).sum(1)))].astype(float)


def _tissue_masks(volume: Volume, s: CalibrationSettings) -> tuple[np.ndarray, dict[str, np.ndarray], np.ndarray, str]:
    """Masks of the reference tissues on a sampling grid of about ``internal_grid_mm``.

    Returns the sampled HU ``sub``, the boolean masks (same shape; a tissue not found is absent),
    the sampling step (k, j, i) in voxels and where the muscle was sampled (``psoas``,
    ``paraspinal`` or, without a spine, ``soft tissue``).
    """
    arr = np.asarray(volume.array, dtype=np.float32)
    sp = np.array(volume.spacing, dtype=float)
    step = np.maximum(1, np.round(s.internal_grid_mm / sp)).astype(int)
    sub = arr[:: step[0], :: step[1], :: step[2]]
    ssp = sp * step
    smooth = ndi.gaussian_filter(np.clip(sub, *CT_RANGE_HU), sigma=s.internal_smooth_mm / ssp)
    fov = sub > s.rod_padding_hu
    objects = smooth > s.internal_object_hu
    # body: largest object after an opening that detaches the table and the phantom
    opened = open_mm(objects, s.internal_body_opening_mm, ssp)
    body = _largest_component(opened)
    body = fill_holes(body) if body.any() else body
    for k in range(body.shape[0]):
        body[k] = fill_holes(body[k])
    if body.sum() < 1000:
        raise CalibrationError("phantomless calibration: no patient body found in the image")
    masks: dict[str, np.ndarray] = {}

    # air: inside the field of view, far from any object
    dist_obj = distance_mm(~objects, ssp)
    masks["air"] = fov & (dist_obj >= s.internal_air_margin_mm)

    # subcutaneous fat: fat-range band under the skin, eroded; one continuous layer, so small
    # separate pieces (a fat-like phantom rod when the phantom touches the back) are dropped
    depth = distance_mm(body, ssp)
    fat = body & (smooth >= s.internal_fat_min_hu) & (smooth <= s.internal_fat_max_hu) & (depth <= s.internal_fat_max_depth_mm)
    masks["fat"] = _major_components(erode_mm(fat, s.internal_erosion_mm, ssp),
                                     s.internal_fat_min_component_fraction)

    # muscle: the psoas beside the vertebral bodies, else the paraspinal muscles behind the spine
    bone = body & (smooth > s.internal_bone_hu)
    spine = _largest_component(bone) if bone.any() else bone
    soft = body & (smooth >= s.internal_muscle_min_hu) & (smooth <= s.internal_muscle_max_hu)
    soft = erode_mm(soft, s.internal_erosion_mm, ssp)
    axis = _spine_axis(spine, volume, step, s) if spine.any() else None
    near_spine = dilate_mm(spine, s.internal_muscle_near_spine_mm, ssp)
    if axis is not None:
        if s.internal_use_blood:
            masks["blood"] = _find_blood(sub, smooth, spine, body, axis, ssp, s)
        masks["muscle"] = _find_psoas(soft, near_spine, masks.get("blood", np.zeros_like(soft)), axis, ssp, s)
    region = "psoas"
    if spine.any() and masks.get("muscle", np.zeros(0)).sum() < MIN_TISSUE_VOXELS:
        y_lps = axis.y if axis is not None else _plane_lps(volume, step)[1]
        masks["muscle"], region = _find_paraspinal(soft, spine, near_spine, y_lps, s), "paraspinal"
    if masks.get("muscle") is None or masks["muscle"].sum() < MIN_TISSUE_VOXELS:
        masks["muscle"], region = soft, "soft tissue"  # no spine found: any soft tissue
    return sub, {k: m for k, m in masks.items() if m.sum() >= MIN_TISSUE_VOXELS}, step, region


def _measure(volume: Volume, sub: np.ndarray, masks: dict[str, np.ndarray], step: np.ndarray) -> dict[str, ReferenceMeasurement]:
    """HU of each tissue on the original voxels: mean, or for air and blood the median (robust to
    clipping at -1024 HU and to a vessel wall at the mask's edge)."""
    out = {}
    for name, m in masks.items():
        mean, sd, n = _stats(sub[m], robust=name in ("air", "blood"))
        point = tuple(float(v) for v in volume.index_to_lps(point_inside(m) * step))
        out[name] = ReferenceMeasurement(name, mean, sd, n, center_lps=point)
    return out


def _outlines(volume: Volume, masks: dict[str, np.ndarray], names: list[str], step: np.ndarray) -> ReferenceOutlines:
    """Label image of the tissues used on the sampled slice that shows most of them (nearest the middle)."""
    present = np.stack([masks[n].any(axis=(1, 2)) for n in names]).sum(0)
    ks = np.arange(present.size)
    k = int(ks[np.lexsort((np.abs(ks - (present.size - 1) / 2), -present))][0])
    lab = np.zeros(masks[names[0]].shape[1:], dtype=np.uint8)
    for i, n in enumerate(names):
        lab[masks[n][k]] = i + 1
    nj, ni = volume.shape[1:]
    full = np.repeat(np.repeat(lab, step[1], axis=0), step[2], axis=1)[:nj, :ni]
    return ReferenceOutlines(slice_index=int(min(k * step[0], volume.shape[0] - 1)), labels=full)


def measure_reference_tissues(volume: Volume, settings: CalibrationSettings | None = None) -> dict[str, ReferenceMeasurement]:
    """Find and measure the reference tissues of phantomless calibration.

    Tissue masks are chosen on a smoothed image and eroded away from every boundary;
    HU are measured on the original voxels (so selection does not bias the mean). Air and blood
    use the median (robust to clipping at -1024 HU, and to a vessel wall at the mask's edge).

    Returns
    -------
    dict of str -> ReferenceMeasurement
        Keys among ``air``, ``fat``, ``muscle``, ``blood``; a tissue that could not be found
        is absent. ``center_lps`` is a voxel inside the sampled region (LPS mm).
    """
    s = settings or CalibrationSettings()
    sub, masks, step, _ = _tissue_masks(volume, s)
    return _measure(volume, sub, masks, step)


@dataclass(frozen=True)
class EnergyFit:
    """Result of :func:`fit_effective_energy`.

    Attributes
    ----------
    kev : float
        Effective energy (keV) of the maximum a posteriori fit.
    a_hu, b : float
        Offset (HU) and gain of ``H = a + b * HU_theory(E)`` at ``kev``.
    rms_hu : float
        RMS residual of the tissues at ``kev``, HU.
    energies_kev, posterior : (N,) ndarray
        Energy grid (keV) and the normalised posterior weight of each energy
        (``exp(-chi2 / 2)``, a and b at their best values for that energy).
    gains : (N,) ndarray
        Best gain b at each energy of the grid.
    """

    kev: float
    a_hu: float
    b: float
    rms_hu: float
    energies_kev: np.ndarray = field(repr=False)
    posterior: np.ndarray = field(repr=False)
    gains: np.ndarray = field(repr=False)

    def posterior_mean_sd(self, values: np.ndarray) -> tuple[float, float]:
        """Posterior mean and SD of a quantity given at every energy of the grid."""
        mean = float((self.posterior * values).sum())
        return mean, float(np.sqrt((self.posterior * (values - mean) ** 2).sum()))

    @property
    def kev_sd(self) -> float:
        """Posterior SD of the effective energy, keV."""
        return self.posterior_mean_sd(self.energies_kev)[1]


def fit_effective_energy(measured_hu: dict[str, float], *, kev_range=(40.0, 120.0), kev_step: float = 0.25,
                         tissue_sd_hu: dict[str, float] | None = None, offset_prior_sd_hu: float | None = None,
                         gain_prior_sd: float | None = None, kev_prior: float | None = None,
                         kev_prior_sd_kev: float | None = None) -> EnergyFit:
    """Effective energy and linear scanner response from tissue HU.

    For every energy E of the search grid the scanner response ``H = a + b * HU_theory(E)`` is a
    weighted (ridge) least-squares fit: tissue t weighted by ``1 / tissue_sd_hu[t]**2``, with
    optional Gaussian priors ``a ~ N(0, offset_prior_sd_hu)`` (HU) and ``b ~ N(1, gain_prior_sd)``
    (scanners are calibrated to water 0 HU and air -1000 HU). E is the energy minimising the
    penalised chi-square, plus ``((E - kev_prior) / kev_prior_sd_kev)**2`` when an energy prior is
    given (maximum a posteriori). Without priors and weights this is the plain minimum-residual
    fit of Michalski et al.

    Parameters
    ----------
    measured_hu : dict of str -> float
        Mean HU per tissue (names understood by :func:`attenuation.hu_of`); at least 3.
    kev_range : (2,) tuple of float
        Energies searched, keV.
    kev_step : float
        Grid step, keV.
    tissue_sd_hu : dict of str -> float, optional
        Expected deviation of each tissue's HU from the tables (biological + measurement), HU;
        missing tissues 1 HU.
    offset_prior_sd_hu, gain_prior_sd, kev_prior, kev_prior_sd_kev : float, optional
        Prior SDs (HU, unitless, keV) and prior mean energy (keV); None = no prior.

    Returns
    -------
    EnergyFit
        The MAP energy, offset, gain and RMS residual, and the posterior over the energy grid
        (its spread is the calibration's uncertainty).
    """
    names = list(measured_hu)
    if len(names) < 3:
        raise CalibrationError(f"phantomless calibration needs at least 3 reference tissues, found {names}")
    h = np.array([measured_hu[n] for n in names], dtype=float)
    sd = tissue_sd_hu or {}
    w = np.array([1.0 / float(sd.get(n, 1.0)) ** 2 for n in names])
    pa = 0.0 if offset_prior_sd_hu is None else 1.0 / offset_prior_sd_hu ** 2
    pb = 0.0 if gain_prior_sd is None else 1.0 / gain_prior_sd ** 2
    energies = np.arange(kev_range[0], kev_range[1] + 1e-9, kev_step)
    t = np.stack([hu_of(n, energies) for n in names], axis=1)  # (N energies, tissues)
    # normal equations of the weighted ridge fit of (a, b), solved for every energy at once
    m = np.empty((len(energies), 2, 2))
    m[:, 0, 0] = w.sum() + pa
    m[:, 0, 1] = m[:, 1, 0] = (w * t).sum(1)
    m[:, 1, 1] = (w * t * t).sum(1) + pb
    rhs = np.stack([np.full(len(energies), (w * h).sum()), (w * t * h).sum(1) + pb], axis=1)
    a, b = np.linalg.solve(m, rhs[..., None])[..., 0].T
    res = h[None] - a[:, None] - b[:, None] * t
    chi2 = (w * res ** 2).sum(1) + pa * a ** 2 + pb * (b - 1.0) ** 2
    if kev_prior is not None and kev_prior_sd_kev:
        chi2 = chi2 + ((energies - kev_prior) / kev_prior_sd_kev) ** 2
    i = int(np.argmin(chi2))
    post = np.exp(-0.5 * (chi2 - chi2[i]))
    return EnergyFit(kev=float(energies[i]), a_hu=float(a[i]), b=float(b[i]),
                     rms_hu=float(np.sqrt(np.mean(res[i] ** 2))), energies_kev=energies,
                     posterior=post / post.sum(), gains=b)


def slope_uncertainty(fit: EnergyFit, material: str) -> float:
    """Relative SD of the mineral slope ``b * slope_mineral(E)`` under the energy posterior.

    Because density = (HU - intercept) / slope, this is also the relative uncertainty of a
    density far above the intercept (e.g. 150 mg/cm3). Fraction (0.05 = 5 %).
    """
    mean, sd = fit.posterior_mean_sd(fit.gains * mineral_slope_hu_per_mg_cm3(material, fit.energies_kev))
    return sd / mean


def energy_prior(settings: CalibrationSettings, *, kvp: float | None = None,
                 scanner_kev: float | None = None) -> tuple[float | None, float | None]:
    """Prior mean and SD (keV) of the effective energy of a series.

    ``N(scanner_kev, internal_precalibrated_kev_sd_kev)`` when a phantom scan measured the
    scanner's energy; otherwise ``internal_kev_prior_kev`` scaled by ``kvp /
    internal_kev_prior_kvp`` (the effective energy is roughly proportional to the tube voltage)
    with SD ``internal_kev_prior_sd_kev``. (None, None) when the settings disable the prior.
    """
    s = settings
    if scanner_kev is not None:
        return float(scanner_kev), s.internal_precalibrated_kev_sd_kev
    if s.internal_kev_prior_kev is None:
        return None, None
    mean = s.internal_kev_prior_kev * (float(kvp) / s.internal_kev_prior_kvp if kvp else 1.0)
    return mean, s.internal_kev_prior_sd_kev


def fit_tissues(measured_hu: dict[str, float], settings: CalibrationSettings, *, kev_prior: float | None,
                kev_prior_sd_kev: float | None) -> EnergyFit:
    """:func:`fit_effective_energy` with the tissue weights, scanner priors and search range of the
    settings (``internal_*``): the fit :func:`calibrate_internal` makes from the tissues' HU."""
    s = settings
    return fit_effective_energy(
        measured_hu, kev_range=(s.internal_kev_min, s.internal_kev_max),
        tissue_sd_hu={k: {"air": s.internal_air_sd_hu, "blood": s.internal_blood_sd_hu}.get(k, s.internal_tissue_sd_hu)
                      for k in measured_hu},
        offset_prior_sd_hu=s.internal_offset_prior_sd_hu, gain_prior_sd=s.internal_gain_prior_sd,
        kev_prior=kev_prior, kev_prior_sd_kev=kev_prior_sd_kev)


def precalibration_kev(cal: Calibration) -> float:
    """Effective energy (keV) of the scanner a saved phantom calibration was made on.

    It is the energy at which the fitted slope equals the physical mineral slope
    (:func:`attenuation.effective_energy_of_slope`, gain 1), stored by
    :func:`calibrate_with_phantom` as ``details["kev"]``; computed here for files saved before
    that (an HA-equivalent conversion is undone first).

    Raises
    ------
    CalibrationError
        When ``cal`` is not a phantom calibration or its slope implies no energy of the tables.
    """
    if cal.method != "phantom":
        raise CalibrationError(f"pre-calibration needs a phantom calibration (bmdpipe calibrate --save), "
                               f"got a {cal.method!r} one")
    kev = cal.details.get("kev")
    if kev is not None:
        return float(kev)
    slope, mat = cal.slope_hu_per_mg_cm3, cal.material.value
    conversion = cal.details.get("ha_conversion")
    if conversion:
        slope, mat = slope / float(conversion["factor_k2hpo4_per_ha"]), conversion["from"]
    try:
        return effective_energy_of_slope(mat, slope)
    except ValueError as exc:
        raise CalibrationError(f"pre-calibration with phantom {cal.phantom!r}: {exc}") from exc


def calibrate_internal(volume: Volume, settings: CalibrationSettings | None = None, *,
                       material: Material | str = Material.K2HPO4,
                       scanner_kev: float | None = None) -> Calibration:
    """Phantomless calibration of one series.

    Parameters
    ----------
    volume : Volume
    settings : CalibrationSettings
    material : Material
        Mineral the calibration is expressed in (K2HPO4 default, or HA).
    scanner_kev : float, optional
        Effective energy of this scanner and protocol measured on a phantom scan
        (:func:`precalibration_kev`), keV. The energy prior then becomes
        ``N(scanner_kev, internal_precalibrated_kev_sd_kev)`` instead of the generic one from the
        kVp ("pre-calibrated" phantomless calibration); the tissues still fit E, offset and gain.

    Returns
    -------
    Calibration
        method ``internal``, phantom ``internal``; ``references`` are the tissues used with
        their HU and fit residuals; ``details`` hold kev, a, b, rms.

    Raises
    ------
    CalibrationError
        When fewer than 3 tissues are found or a tissue HU is implausible.
    """
    s = settings or CalibrationSettings()
    mat = Material(material)
    sid = volume.meta.series_uid or "this series"
    sub, masks, step, muscle_region = _tissue_masks(volume, s)
    tissues = _measure(volume, sub, masks, step)
    warnings: list[str] = []
    for name, (lo, hi) in s.internal_plausible_hu.items():
        if name in tissues and not (lo <= tissues[name].hu_mean <= hi):
            warnings.append(f"{name} HU {tissues[name].hu_mean:.0f} outside {lo:.0f}..{hi:.0f}, not used")
            del tissues[name]
    if "air" not in tissues or "fat" not in tissues or len(tissues) < 3:
        raise CalibrationError(
            f"phantomless calibration of {sid} failed: found reference tissues {sorted(tissues)}, need air, fat and "
            "muscle (or blood). Is the whole body cross-section in the field of view? Use a phantom (--phantom NAME)"
        )
    kev_prior, kev_prior_sd = energy_prior(s, kvp=getattr(volume.meta, "kvp", None), scanner_kev=scanner_kev)
    fit = fit_tissues({k: v.hu_mean for k, v in tissues.items()}, s,
                      kev_prior=kev_prior, kev_prior_sd_kev=kev_prior_sd)
    kev, a, b = fit.kev, fit.a_hu, fit.b
    if kev <= s.internal_kev_min + 0.5 or kev >= s.internal_kev_max - 0.5:
        warnings.append(f"effective energy {kev:.1f} keV at the edge of the search range: calibration unreliable")
    slope = b * mineral_slope_hu_per_mg_cm3(mat.value, kev)
    intercept = a  # mineral in a water-equivalent matrix: 0 HU at zero density (ideal), times gain, plus offset
    uncertainty = slope_uncertainty(fit, mat.value)
    refs = []
    for name, r in tissues.items():
        fitted = a + b * hu_of(name, kev)
        refs.append(ReferenceMeasurement(name=name, hu_mean=r.hu_mean, hu_sd=r.hu_sd, n_voxels=r.n_voxels,
                                         nominal_mg_cm3=None, center_lps=r.center_lps,
                                         residual_hu=float(r.hu_mean - fitted)))
    if fit.rms_hu > s.internal_max_rms_hu:
        warnings.append(f"tissue HU fit RMS {fit.rms_hu:.1f} HU > {s.internal_max_rms_hu} HU: tissues do not match "
                        "the attenuation model")
    if 100.0 * uncertainty > s.internal_max_uncertainty_percent:
        warnings.append(f"phantomless calibration uncertain: densities +-{100 * uncertainty:.0f} % (1 SD, "
                        f"{sorted(tissues)} used): use a phantom for absolute density")
    return Calibration(
        method="internal", phantom="internal", material=mat, slope_hu_per_mg_cm3=float(slope),
        intercept_hu=float(intercept), r2=None, n_references=len(refs), references=tuple(refs),
        warnings=tuple(warnings),
        details={"kev": kev, "kev_sd": fit.kev_sd, "a_hu": a, "b": b, "rms_hu": fit.rms_hu,
                 "kev_prior": kev_prior, "kev_prior_sd": kev_prior_sd, "precalibrated_kev": scanner_kev,
                 "density_uncertainty_fraction": uncertainty,
                 "tissues_hu": {k: v.hu_mean for k, v in tissues.items()}, "muscle_region": muscle_region,
                 "source": "effective-energy method, Michalski et al. Med Eng Phys 2020; ICRU-44 / ICRP (adipose) compositions, NIST attenuation"},
        outlines=_outlines(volume, masks, [r.name for r in refs], step),
    )
