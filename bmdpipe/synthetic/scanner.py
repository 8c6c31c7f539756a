"""Scanner response of a synthetic case: bone calibration line, soft-tissue HU, PSF and noise."""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
from scipy import ndimage

__all__ = ["ScannerResponse", "draw_scanner", "physical_slope", "tissue_hu", "apply_psf", "make_noise",
           "NOMINAL_TISSUE_HU"]

#: Nominal HU of reference tissues at ~70 keV (science.md typical values).
NOMINAL_TISSUE_HU: dict[str, float] = {
    "air": -1000.0, "fat": -100.0, "water": 0.0, "muscle": 50.0, "blood": 40.0,
    "csf": 8.0, "disc": 75.0, "fibrous": 30.0,
}


@dataclass(frozen=True)
class ScannerResponse:
    """How the synthetic scanner maps materials to HU.

    Bone: ``HU = intercept_hu + slope_hu_per_mg_cm3 * mineral`` (mineral in ``material`` units).
    Soft tissues: ``tissue_hu`` (HU), from :func:`tissue_hu`; ``tissue_hu_source`` says how.
    """

    material: str
    slope_hu_per_mg_cm3: float
    intercept_hu: float
    kev: float
    noise_sd_hu: float
    noise_corr_mm: float
    psf_fwhm_mm: float
    tissue_hu: dict
    tissue_hu_source: str
    metal_hu: float = 6500.0

    @property
    def hu_water(self) -> float:
        return float(self.tissue_hu["water"])

    @property
    def hu_fat(self) -> float:
        return float(self.tissue_hu["fat"])

    @property
    def hu_muscle(self) -> float:
        return float(self.tissue_hu["muscle"])

    @property
    def hu_blood(self) -> float:
        return float(self.tissue_hu["blood"])

    @property
    def hu_air(self) -> float:
        return float(self.tissue_hu["air"])

    def bone_hu(self, mineral_mg_cm3):
        """HU of bone with the given mineral density (material units)."""
        return self.intercept_hu + self.slope_hu_per_mg_cm3 * np.asarray(mineral_mg_cm3, dtype=float)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["tissue_hu"] = {k: float(v) for k, v in self.tissue_hu.items()}
        return d


def tissue_hu(kev: float, rng: np.random.Generator, *, gain: float = 1.0,
              offset_hu: float = 0.0, tissue_sd_hu: float = 3.0,
              blood_sd_hu: float = 8.0) -> tuple[dict[str, float], str]:
    """HU of the non-bone reference tissues for one case. The ONE place to change tissue HU.

    The scanner maps true attenuation to ``HU = offset_hu + gain * HU_physical(kev)``, where
    ``HU_physical`` comes from ``bmdpipe.calibrate.attenuation.hu_of(material, kev)`` (ICRU-44 / ICRP
    compositions) — the same response the bone mineral gets, so a case is physically
    consistent. On top, each soft tissue gets its own biological deviation ~ N(0, tissue_sd_hu)
    (fat and muscle composition vary between patients, a few HU), blood ~ N(0, blood_sd_hu)
    (hematocrit). Air and water get none.
    Materials not tabulated (csf, disc, fibrous) use :data:`NOMINAL_TISSUE_HU` through the
    same response.

    Returns
    -------
    hu : dict of str -> float
    source : str
        ``'attenuation.hu_of'``.
    """
    from bmdpipe.calibrate.attenuation import hu_of

    out = {}
    for name, nominal in NOMINAL_TISSUE_HU.items():
        try:
            physical = float(hu_of(name, kev))
        except (ValueError, KeyError):  # not tabulated: nominal value
            physical = nominal
        jitter = 0.0 if name in ("air", "water") else float(
            rng.normal(0.0, blood_sd_hu if name == "blood" else tissue_sd_hu))
        out[name] = offset_hu + gain * physical + jitter
    return out, "attenuation.hu_of"


def physical_slope(material: str, kev: float) -> float:
    """HU per mg/cm3 of ``material`` dispersed in water at ``kev`` from
    ``bmdpipe.calibrate.attenuation.mineral_slope_hu_per_mg_cm3`` (raises ImportError without it)."""
    from bmdpipe.calibrate.attenuation import mineral_slope_hu_per_mg_cm3  # type: ignore

    return float(mineral_slope_hu_per_mg_cm3(material, kev))


def draw_scanner(spec, rng: np.random.Generator) -> ScannerResponse:
    """Draw the scanner response of a case from ``spec`` (None fields random).

    A scanner is an effective energy ``kev`` (random 64-76 keV) plus a small calibration
    error of the HU scale: gain ``b`` ~ U(0.985, 1.015) and offset ``a`` ~ U(-8, 8) HU applied
    to every material, and each soft tissue's biological deviation N(0, ``spec.tissue_sd_hu``;
    blood ``spec.blood_sd_hu``).
    Bone: ``slope = b * mineral_slope(material, kev)``, ``intercept = a``
    (water is 0 HU physically), unless ``spec`` pins them; ``spec.slope_from_kev=False`` draws
    the slope independently of kev instead (physically inconsistent; phantom tests only).
    """
    material = spec.resolved_material
    u = rng.uniform(size=7)  # always draw the same number of values -> reproducible
    gain = 0.985 + 0.03 * u[5]
    offset = -8.0 + 16.0 * u[1]
    kev = spec.kev if spec.kev is not None else 64.0 + 12.0 * u[2]
    noise = spec.noise_sd_hu if spec.noise_sd_hu is not None else 10.0 + 15.0 * u[3]
    psf = spec.psf_fwhm_mm if spec.psf_fwhm_mm is not None else 0.9 + 0.4 * u[4]
    if spec.slope_hu_per_mg_cm3 is not None:
        slope = spec.slope_hu_per_mg_cm3
    elif spec.slope_from_kev:
        slope = gain * physical_slope(material, kev)
    else:
        slope = (0.85 if material == "HA" else 1.10) + 0.3 * u[0]
    intercept = spec.intercept_hu if spec.intercept_hu is not None else offset
    hu, source = tissue_hu(kev, rng, gain=gain, offset_hu=offset, tissue_sd_hu=spec.tissue_sd_hu,
                           blood_sd_hu=spec.blood_sd_hu)
    return ScannerResponse(
        material=material, slope_hu_per_mg_cm3=float(slope), intercept_hu=float(intercept),
        kev=float(kev), noise_sd_hu=float(noise), noise_corr_mm=float(spec.noise_corr_mm),
        psf_fwhm_mm=float(psf), tissue_hu=hu, tissue_hu_source=source, metal_hu=float(spec.metal_hu),
    )


def apply_psf(hu: np.ndarray, spacing_zyx_mm, fwhm_mm: float) -> np.ndarray:
    """Blur with an isotropic Gaussian PSF of FWHM ``fwhm_mm`` (mm), float32 out."""
    if fwhm_mm <= 0:
        return hu.astype(np.float32, copy=True)
    sigma_vox = [fwhm_mm / 2.3548 / s for s in spacing_zyx_mm]
    return ndimage.gaussian_filter(hu.astype(np.float32), sigma=sigma_vox, mode="nearest")


def make_noise(shape, spacing_zyx_mm, sd_hu: float, corr_mm: float, rng: np.random.Generator) -> np.ndarray:
    """Gaussian noise of SD ``sd_hu`` (HU), optionally correlated (Gaussian kernel sigma ``corr_mm``)."""
    n = rng.standard_normal(size=shape, dtype=np.float32)
    if corr_mm > 0:
        sig = [corr_mm / s for s in spacing_zyx_mm]
        n = ndimage.gaussian_filter(n, sigma=sig, mode="wrap")
        n /= np.float32(n.std())
    n *= np.float32(sd_hu)
    return n
