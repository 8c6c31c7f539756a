"""Mass attenuation of body tissues and bone minerals, 25-150 keV, and the HU they imply.

Small shipped tables (no download at run time) of the total mass attenuation
coefficient mu/rho (cm2/g, coherent scattering included) for the reference materials of
phantomless calibration (Michalski et al. 2020) and of calibration phantoms.

Data source
-----------
- Elemental compositions (mass fractions) and densities of skeletal muscle, whole blood and
  cortical bone: ICRU Report 44 (1989), as tabulated by NIST (Hubbell & Seltzer, "Tables of
  X-Ray Mass Attenuation Coefficients and Mass Energy-Absorption Coefficients", NISTIR 5632,
  1995; https://physics.nist.gov/PhysRefData/XrayMassCoef/). Water and dry air (near sea level)
  compositions from the same tables. K2HPO4 and hydroxyapatite Ca10(PO4)6(OH)2 from their
  formulas.
- Adipose tissue (``fat``): the ICRP composition, 0.92 g/cm3 (NIST ESTAR material 123,
  "Adipose tissue (ICRP)": H 11.95, C 63.72, N 0.80, O 23.23 % and traces), -103 HU at 70 keV,
  the subcutaneous fat of clinical CT (science.md: fat ~ -100 HU; the real 3 mm CT of the
  README: -103 HU). ICRU-44 adipose tissue (0.95 g/cm3, more water) gives -77 HU at 70 keV,
  -100 HU only at ~52 keV: as the phantomless fit's only energy-sensitive tissue it put the real
  CT at 58.5 keV (fit RMS 2.2 HU, a mineral slope 30 % steeper) where the ICRP fat puts it at
  71 keV (RMS 0.5 HU).
- mu/rho of each material was computed once (offline) by the mixture rule from elemental
  cross sections (Elam, Ravel & Sieber, Radiat. Phys. Chem. 63, 121-128, 2002, as served by
  the ``xraydb`` package 4.5.8, total = photo + coherent + incoherent), which agree with
  NIST XCOM to better than 1 % from 25 to 150 keV (water: 0.3756 vs XCOM 0.3756 cm2/g at
  30 keV, 0.1707 vs 0.1707 at 100 keV; cortical bone 1.331 vs 1.331 at 30 keV, 0.6655 vs
  0.6655 at 40 keV).
- Method of phantomless calibration from these tables: Michalski AS, Besler BA, Michalak GJ,
  Boyd SK. "CT-based internal density calibration for opportunistic skeletal assessment
  using abdominal CT scans." Med Eng Phys 78:55-63 (2020).

HU convention: ``HU = 1000 * (mu - mu_water) / (mu_water - mu_air)`` at one (effective)
energy, so water is 0 HU and air -1000 HU exactly.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

__all__ = [
    "ENERGIES_KEV",
    "MATERIALS",
    "DENSITY_G_CM3",
    "WATER_DISPLACEMENT",
    "mass_attenuation",
    "linear_attenuation",
    "hu_of",
    "mixture_hu",
    "mineral_solution_hu",
    "mineral_slope_hu_per_mg_cm3",
    "effective_energy_of_slope",
]

#: Energies of the tables, keV.
ENERGIES_KEV = np.arange(25.0, 151.0, 5.0)

# mu/rho in cm2/g at ENERGIES_KEV (25, 30, ..., 150 keV). See the module docstring for the source.
_MU_RHO: dict[str, np.ndarray] = {
    "water": np.array([
        0.50824, 0.37559, 0.30747, 0.26828, 0.24362, 0.22694, 0.21494, 0.20587, 0.19871,
        0.19285, 0.18792, 0.18366, 0.17991, 0.17655, 0.17351, 0.17072, 0.16815, 0.16574,
        0.16348, 0.16135, 0.15933, 0.15741, 0.15558, 0.15383, 0.15214, 0.15052]),
    "air": np.array([
        0.48377, 0.35382, 0.28695, 0.24846, 0.22428, 0.20796, 0.19627, 0.18747, 0.18058,
        0.17497, 0.17028, 0.16625, 0.16271, 0.15956, 0.15671, 0.15411, 0.15172, 0.1495,
        0.14742, 0.14546, 0.14361, 0.14186, 0.14018, 0.13858, 0.13705, 0.13558]),
    "adipose": np.array([
        0.37988, 0.30281, 0.26245, 0.23861, 0.22313, 0.21225, 0.2041, 0.19769, 0.19242,
        0.18796, 0.18407, 0.18061, 0.17748, 0.17462, 0.17196, 0.16949, 0.16717, 0.16498,
        0.1629, 0.16092, 0.15902, 0.15721, 0.15547, 0.1538, 0.15219, 0.15063]),
    "muscle": np.array([
        0.51378, 0.37835, 0.30866, 0.26854, 0.24331, 0.22626, 0.21402, 0.20478, 0.19751,
        0.19157, 0.18658, 0.18229, 0.17852, 0.17515, 0.1721, 0.1693, 0.16672, 0.16432,
        0.16207, 0.15995, 0.15794, 0.15602, 0.1542, 0.15246, 0.15078, 0.14917]),
    "blood": np.array([
        0.52546, 0.3852, 0.31303, 0.27149, 0.2454, 0.22779, 0.21518, 0.20568, 0.19822,
        0.19215, 0.18705, 0.18268, 0.17884, 0.17543, 0.17234, 0.16951, 0.1669, 0.16448,
        0.16221, 0.16007, 0.15805, 0.15612, 0.15429, 0.15254, 0.15085, 0.14924]),
    "cortical_bone": np.array([
        2.1582, 1.3311, 0.9061, 0.6655, 0.51891, 0.42422, 0.36006, 0.31483, 0.28183,
        0.25705, 0.23795, 0.22289, 0.21077, 0.20083, 0.19255, 0.18554, 0.17952, 0.1743,
        0.16971, 0.16563, 0.16198, 0.15868, 0.15568, 0.15293, 0.15039, 0.14804]),
    "K2HPO4": np.array([
        3.2762, 1.9753, 1.3088, 0.93264, 0.70427, 0.55738, 0.45838, 0.38904, 0.33887,
        0.30152, 0.27301, 0.25077, 0.23308, 0.21875, 0.20697, 0.19715, 0.18884, 0.18173,
        0.17557, 0.17019, 0.16544, 0.16122, 0.15742, 0.15399, 0.15087, 0.14802]),
    "HA": np.array([
        3.4818, 2.0992, 1.3891, 0.98761, 0.74365, 0.58667, 0.48084, 0.40671, 0.35306,
        0.31312, 0.28266, 0.25894, 0.24008, 0.22484, 0.21232, 0.20189, 0.19309, 0.18557,
        0.17906, 0.17339, 0.16839, 0.16395, 0.15997, 0.15638, 0.15312, 0.15014]),
}

#: Mass densities in g/cm3 (ICRU-44 / NIST for tissues, ICRP for adipose; crystal densities for the minerals).
DENSITY_G_CM3: dict[str, float] = {
    "water": 1.0,
    "air": 0.001205,
    "adipose": 0.92,
    "muscle": 1.05,
    "blood": 1.06,
    "cortical_bone": 1.92,
    "K2HPO4": 2.44,
    "HA": 3.16,
}

#: Water displaced by one mg of mineral in a solution / mineralised tissue (mg water per mg).
#: K2HPO4: 0.2174, the Mindways tissue model (sigma_CT = sigma_ref - 0.2174, QCT Pro user
#: guide v5.0; science.md). HA: 1 / 3.16, the specific volume of the crystal.
WATER_DISPLACEMENT: dict[str, float] = {"K2HPO4": 0.2174, "HA": 1.0 / 3.16}

_ALIASES = {
    "fat": "adipose",
    "adipose_tissue": "adipose",
    "subcutaneous_fat": "adipose",
    "skeletal_muscle": "muscle",
    "paraspinal_muscle": "muscle",
    "aorta": "blood",
    "cortical": "cortical_bone",
    "bone": "cortical_bone",
    "k2hpo4": "K2HPO4",
    "ha": "HA",
    "hydroxyapatite": "HA",
}

#: Names accepted by the functions of this module (aliases such as ``fat`` also work).
MATERIALS: tuple[str, ...] = tuple(_MU_RHO)

_LOG_E = np.log(ENERGIES_KEV)
_LOG_MU = {k: np.log(v) for k, v in _MU_RHO.items()}


def _canonical(material: str) -> str:
    name = str(material)
    if name in _MU_RHO:
        return name
    key = _ALIASES.get(name.lower(), name.lower())
    if key in _MU_RHO:
        return key
    raise ValueError(
        f"unknown material {material!r}; expected one of {sorted(_MU_RHO)} or an alias {sorted(_ALIASES)}"
    )


def _check_kev(kev) -> np.ndarray:
    e = np.asarray(kev, dtype=float)
    if np.any(e < ENERGIES_KEV[0]) or np.any(e > ENERGIES_KEV[-1]) or not np.all(np.isfinite(e)):
        raise ValueError(
            f"energy {kev} keV outside the tabulated range {ENERGIES_KEV[0]:.0f}-{ENERGIES_KEV[-1]:.0f} keV"
        )
    return e


def mass_attenuation(material: str, kev) -> np.ndarray | float:
    """Mass attenuation coefficient mu/rho in cm2/g (log-log interpolation).

    Parameters
    ----------
    material : str
        One of :data:`MATERIALS` (or an alias: fat, aorta, hydroxyapatite, ...).
    kev : float or array_like
        Photon energy in keV, 25-150.
    """
    name = _canonical(material)
    e = _check_kev(kev)
    out = np.exp(np.interp(np.log(e), _LOG_E, _LOG_MU[name]))
    return float(out) if out.ndim == 0 else out


def linear_attenuation(material: str, kev, *, density_g_cm3: float | None = None):
    """Linear attenuation coefficient mu in 1/cm at the material's (or the given) density."""
    name = _canonical(material)
    rho = DENSITY_G_CM3[name] if density_g_cm3 is None else float(density_g_cm3)
    return mass_attenuation(name, kev) * rho


def _hu_from_mu(mu, kev):
    mu_w = linear_attenuation("water", kev)
    mu_a = linear_attenuation("air", kev)
    return 1000.0 * (mu - mu_w) / (mu_w - mu_a)


def hu_of(material: str, kev, *, density_g_cm3: float | None = None):
    """CT number (HU) of a reference material at an effective energy.

    Parameters
    ----------
    material : str
        water, air, adipose (fat), muscle, blood, cortical_bone, K2HPO4 or HA (solid).
    kev : float or array_like
        Effective energy in keV (25-150).
    density_g_cm3 : float, optional
        Mass density; default the material's value in :data:`DENSITY_G_CM3`.

    Returns
    -------
    float or ndarray
        HU (one per energy), with water 0 and air -1000 by construction.

    Examples
    --------
    >>> round(hu_of("water", 70.0), 6)
    0.0
    >>> -120 < hu_of("fat", 70.0) < -80
    True
    """
    out = _hu_from_mu(linear_attenuation(material, kev, density_g_cm3=density_g_cm3), kev)
    return float(out) if np.ndim(out) == 0 else out


def mixture_hu(components_mg_cm3: Mapping[str, float], kev) -> float:
    """HU of a mixture given each component's partial density in mg/cm3.

    ``{"water": 923.20, "K2HPO4": 375.83}`` is Mindways rod E of the example certificate.
    """
    if not components_mg_cm3:
        raise ValueError("mixture_hu needs at least one component")
    mu = sum(mass_attenuation(m, kev) * (float(c) / 1000.0) for m, c in components_mg_cm3.items())
    out = _hu_from_mu(mu, kev)
    return float(out) if np.ndim(out) == 0 else out


def mineral_solution_hu(material: str, mg_cm3, kev, *, water_mg_cm3=None):
    """HU of a mineral (K2HPO4 or HA) dissolved / dispersed in water.

    Parameters
    ----------
    material : {'K2HPO4', 'HA'}
    mg_cm3 : float or array_like
        Mineral concentration in mg/cm3.
    kev : float
        Effective energy in keV.
    water_mg_cm3 : float or array_like, optional
        Water concentration in mg/cm3 (a Mindways certificate value). Default:
        ``1000 - WATER_DISPLACEMENT[material] * mg_cm3`` (the mineral displaces water).

    Returns
    -------
    float or ndarray
        HU. Linear in ``mg_cm3`` at a fixed energy.
    """
    name = _canonical(material)
    if name not in WATER_DISPLACEMENT:
        raise ValueError(f"mineral must be 'K2HPO4' or 'HA', got {material!r}")
    c = np.asarray(mg_cm3, dtype=float)
    w = 1000.0 - WATER_DISPLACEMENT[name] * c if water_mg_cm3 is None else np.asarray(water_mg_cm3, float)
    mu = (mass_attenuation(name, kev) * c + mass_attenuation("water", kev) * w) / 1000.0
    out = _hu_from_mu(mu, kev)
    return float(out) if np.ndim(out) == 0 else out


def mineral_slope_hu_per_mg_cm3(material: str, kev):
    """HU per mg/cm3 of mineral in water at an effective energy (slope of :func:`mineral_solution_hu`);
    float for a scalar ``kev`` (keV), an array for an array of energies."""
    return mineral_solution_hu(material, 1.0, kev) - mineral_solution_hu(material, 0.0, kev)


def effective_energy_of_slope(material: str, slope_hu_per_mg_cm3: float, *, gain: float = 1.0) -> float:
    """Effective energy (keV) at which ``gain * mineral_slope_hu_per_mg_cm3(material, E)`` equals a
    measured slope: the inverse of :func:`mineral_slope_hu_per_mg_cm3` (the slope falls steadily
    with energy over 25-150 keV).

    Parameters
    ----------
    material : {'K2HPO4', 'HA'}
    slope_hu_per_mg_cm3 : float
        A phantom fit's slope, HU per mg/cm3 of ``material``.
    gain : float
        HU-scale gain of the scanner (1 = calibrated to water 0 / air -1000 HU).

    Raises
    ------
    ValueError
        When no energy of the tables gives that slope.

    Examples
    --------
    >>> round(effective_energy_of_slope("K2HPO4", mineral_slope_hu_per_mg_cm3("K2HPO4", 68.0)), 3)
    68.0
    """
    grid = np.linspace(ENERGIES_KEV[0], ENERGIES_KEV[-1], 2501)  # 0.05 keV steps
    slopes = gain * mineral_slope_hu_per_mg_cm3(material, grid)  # decreasing in energy
    s = float(slope_hu_per_mg_cm3)
    if not slopes[-1] <= s <= slopes[0]:
        raise ValueError(f"slope {s:.4f} HU per mg/cm3 of {material} is outside {slopes[-1]:.4f}-{slopes[0]:.4f}, "
                         f"the range of {ENERGIES_KEV[0]:.0f}-{ENERGIES_KEV[-1]:.0f} keV")
    return float(np.interp(s, slopes[::-1], grid[::-1]))
