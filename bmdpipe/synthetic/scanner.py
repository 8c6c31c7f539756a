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


def tissue_hu(kev: float, rng: np.random.Generator) -> tuple[dict[str, float], str]:
    """HU of the non-bone reference tissues for one case. The ONE place to change tissue HU.

    Uses ``bmdpipe.calibrate.attenuation.hu_of(material, kev)`` when that module exists;
    otherwise the nominal values of :data:`NOMINAL_TISSUE_HU` with a small per-case linear
    distortion ``HU = a + b * nominal`` (a ~ U(-4, 4) HU, b ~ U(0.97, 1.03); air stays within
    a few HU of -1000).

    Returns
    -------
    hu : dict of str -> float
    source : str
        ``'attenuation.hu_of'`` or ``'nominal+linear-distortion'``.
    """
    a = float(rng.uniform(-4.0, 4.0))
    b = float(rng.uniform(0.97, 1.03))
    try:  # pragma: no cover - depends on the calibration engineer's module
        from bmdpipe.calibrate.attenuation import hu_of  # type: ignore
    except ImportError:
        hu_of = None
    if hu_of is not None:
        out = {}
        for name, nominal in NOMINAL_TISSUE_HU.items():
            try:
                out[name] = float(hu_of(name, kev))
            except (ValueError, KeyError):  # material not tabulated (csf, disc, fibrous): nominal value
                out[name] = nominal + a + (b - 1.0) * nominal
        return out, "attenuation.hu_of"
    out = {name: nominal + a + (b - 1.0) * nominal for name, nominal in NOMINAL_TISSUE_HU.items()}
    out["air"] = -1000.0 + a
    out["water"] = a
    return out, "nominal+linear-distortion"


def physical_slope(material: str, kev: float) -> float:
    """HU per mg/cm3 of ``material`` dispersed in water at ``kev`` from
    ``bmdpipe.calibrate.attenuation.mineral_slope_hu_per_mg_cm3`` (raises ImportError without it)."""
    from bmdpipe.calibrate.attenuation import mineral_slope_hu_per_mg_cm3  # type: ignore

    return float(mineral_slope_hu_per_mg_cm3(material, kev))


def draw_scanner(spec, rng: np.random.Generator) -> ScannerResponse:
    """Draw the scanner response of a case from ``spec`` (None fields random)."""
    material = spec.resolved_material
    u = rng.uniform(size=6)  # always draw the same number of values -> reproducible
    if material == "HA":
        slope = 0.85 + 0.3 * u[0]
    else:
        slope = 1.10 + 0.30 * u[0]
    intercept = -20.0 + 30.0 * u[1]
    kev = 62.0 + 10.0 * u[2]
    noise = 10.0 + 15.0 * u[3]
    psf = 0.9 + 0.4 * u[4]
    kev_final = spec.kev if spec.kev is not None else kev
    if spec.slope_hu_per_mg_cm3 is None and spec.slope_from_kev:
        slope = physical_slope(material, kev_final)
    slope = spec.slope_hu_per_mg_cm3 if spec.slope_hu_per_mg_cm3 is not None else slope
    intercept = spec.intercept_hu if spec.intercept_hu is not None else intercept
    kev = spec.kev if spec.kev is not None else kev
    noise = spec.noise_sd_hu if spec.noise_sd_hu is not None else noise
    psf = spec.psf_fwhm_mm if spec.psf_fwhm_mm is not None else psf
    hu, source = tissue_hu(kev, rng)
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
