"""Optional conversion of K2HPO4 calibrations to hydroxyapatite (HA) equivalent.

``BMD_K2HPO4 / BMD_HA`` is about 0.86 at 80 kVp and 0.81 at 140 kVp (Goodsitt MM,
"Conversion relations for quantitative CT bone mineral densities measured with solid and
liquid calibration standards", Bone Miner 19:145-158, 1992; science.md). Between and
beyond these points the factor is interpolated / extrapolated linearly in kVp (clamped to
70-150 kVp). Off by default (``calibration.convert_to_ha``); a converted calibration has
``material`` HA and says so in ``details['ha_conversion']``.
"""

from __future__ import annotations

from dataclasses import replace

from ..results import Calibration, Material

__all__ = ["ha_factor", "to_ha_equivalent", "DEFAULT_KVP"]

#: kVp assumed when the series does not say (typical QCT protocol).
DEFAULT_KVP = 120.0
_K1, _F1, _K2, _F2 = 80.0, 0.86, 140.0, 0.81


def ha_factor(kvp: float) -> float:
    """``BMD_K2HPO4 / BMD_HA`` at tube voltage ``kvp`` (kV); linear in kVp (Goodsitt 1992).

    >>> round(ha_factor(80), 3), round(ha_factor(140), 3), round(ha_factor(120), 4)
    (0.86, 0.81, 0.8267)
    """
    k = min(max(float(kvp), 70.0), 150.0)
    return _F1 + (_F2 - _F1) * (k - _K1) / (_K2 - _K1)


def to_ha_equivalent(cal: Calibration, kvp: float | None) -> Calibration:
    """Express a K2HPO4 calibration in mg HA/cm3 (HA-equivalent).

    With ``K2HPO4 = f * HA`` the line ``HU = intercept + slope * K2HPO4`` becomes
    ``HU = intercept + (slope * f) * HA``. A calibration already in HA is returned unchanged.

    Parameters
    ----------
    cal : Calibration
    kvp : float or None
        Tube voltage of the series in kV; None uses :data:`DEFAULT_KVP` and adds a warning.
    """
    if cal.material == Material.HA:
        return cal
    warnings = list(cal.warnings)
    if kvp is None:
        warnings.append(f"kVp unknown: K2HPO4->HA factor taken at {DEFAULT_KVP:.0f} kVp")
        kvp = DEFAULT_KVP
    f = ha_factor(kvp)
    details = dict(cal.details)
    details["ha_conversion"] = {"from": "K2HPO4", "factor_k2hpo4_per_ha": f, "kvp": float(kvp),
                                "source": "Goodsitt 1992, linear in kVp (0.86 at 80, 0.81 at 140 kVp)"}
    refs = tuple(replace(r, nominal_mg_cm3=None if r.nominal_mg_cm3 is None else r.nominal_mg_cm3 / f)
                 for r in cal.references)
    return replace(cal, material=Material.HA, slope_hu_per_mg_cm3=cal.slope_hu_per_mg_cm3 * f,
                   references=refs, warnings=tuple(warnings), details=details)
