"""Scanner response of a synthetic case: bone calibration line, soft-tissue HU, PSF and noise."""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
from scipy import ndimage

__all__ = ["ScannerResponse", "draw_scanner", "physical_slope", "tissue_hu", "apply_psf", "make_noise",
           "NOISE_TEXTURES", "NOMINAL_TISSUE_HU"]

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
    Noise: SD ``noise_sd_hu`` (HU), correlation length ``noise_corr_mm`` (mm) and ``noise_texture``
    (:func:`make_noise`); ``noise`` False marks a noise-free twin (no noise added).
    """

    material: str
    slope_hu_per_mg_cm3: float
    intercept_hu: float
    kev: float
    noise_sd_hu: float
    noise_corr_mm: float
    psf_fwhm_mm: float
    noise_texture: str
    noise: bool
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
    blood ``spec.blood_sd_hu``); noise SD ~ U(10, 25) HU, PSF FWHM ~ U(0.9, 1.3) mm and, when
    ``spec.noise_corr_mm`` is None, the noise's correlation length ~ U(0.5, 1.2) mm.
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
    corr = spec.noise_corr_mm if spec.noise_corr_mm is not None else 0.5 + 0.7 * u[6]
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
        kev=float(kev), noise_sd_hu=float(noise), noise_corr_mm=float(corr),
        psf_fwhm_mm=float(psf), noise_texture=spec.noise_texture, noise=bool(spec.noise), tissue_hu=hu,
        tissue_hu_source=source, metal_hu=float(spec.metal_hu),
    )


def apply_psf(hu: np.ndarray, spacing_zyx_mm, fwhm_mm: float) -> np.ndarray:
    """Blur with an isotropic Gaussian PSF of FWHM ``fwhm_mm`` (mm), float32 out."""
    if fwhm_mm <= 0:
        return hu.astype(np.float32, copy=True)
    sigma_vox = [fwhm_mm / 2.3548 / s for s in spacing_zyx_mm]
    return ndimage.gaussian_filter(hu.astype(np.float32), sigma=sigma_vox, mode="nearest")


#: noise textures of :func:`make_noise`
NOISE_TEXTURES = ("gaussian", "kernel")


def make_noise(shape, spacing_zyx_mm, sd_hu: float, corr_mm: float, rng: np.random.Generator,
               texture: str = "gaussian") -> np.ndarray:
    """Noise of SD ``sd_hu`` (HU) correlated over ``corr_mm`` (mm), float32.

    ``texture``: ``'gaussian'``: white noise low-passed by a Gaussian of sigma ``corr_mm`` (every
    correlation positive; ``corr_mm`` 0 = white). ``'kernel'``: the texture of filtered
    back-projection: in-plane the noise power grows with the spatial frequency ``f`` as the ramp
    filter makes it and the kernel's apodisation cuts it off, ``NPS(f) ~ |f| exp(-(2 pi corr_mm f)^2)``
    (a Gaussian kernel of sigma ``corr_mm``; its autocorrelation has a positive core and a negative
    ring, and the noise power at zero frequency is zero), through-plane a Gaussian slice profile of
    sigma ``corr_mm``. Both are periodic over the array.
    """
    if texture not in NOISE_TEXTURES:
        raise ValueError(f"noise texture {texture!r} unknown; use one of {NOISE_TEXTURES}")
    n = rng.standard_normal(size=shape, dtype=np.float32)
    if texture == "kernel" and corr_mm > 0:
        from scipy import fft

        fy = np.fft.fftfreq(shape[1], spacing_zyx_mm[1])[:, None]
        fx = np.fft.rfftfreq(shape[2], spacing_zyx_mm[2])[None, :]
        f2 = fy ** 2 + fx ** 2
        amplitude = (f2 ** 0.25 * np.exp(-2.0 * (np.pi * corr_mm) ** 2 * f2)).astype(np.float32)
        n = fft.irfft2(fft.rfft2(n) * amplitude, s=shape[1:]).astype(np.float32)
        n = ndimage.gaussian_filter1d(n, corr_mm / spacing_zyx_mm[0], axis=0, mode="wrap")
        n /= np.float32(n.std())
    elif corr_mm > 0:
        sig = [corr_mm / s for s in spacing_zyx_mm]
        n = ndimage.gaussian_filter(n, sigma=sig, mode="wrap")
        n /= np.float32(n.std())
    n *= np.float32(sd_hu)
    return n
