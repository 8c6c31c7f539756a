"""HU -> mg/cm3 calibration: phantom rods (two-component Mindways, linear HA) or phantomless.

Public API::

    load_phantom(name_or_path) -> PhantomDefinition
    calibrate_with_phantom(volume, definition, settings) -> Calibration
    calibrate_internal(volume, settings, *, material=Material.K2HPO4, scanner_kev=None) -> Calibration
    phantom_hint(volume, settings) -> a warning when a phantomless scan seems to hold a phantom
    precalibration_kev(phantom_calibration) -> effective energy (keV) for scanner_kev
    to_ha_equivalent(cal, kvp) -> Calibration
    save_calibration(cal, path, *, kvp, kernel); load_calibration(path) -> (cal, kvp, kernel)
    check_compatible(saved_kvp, saved_kernel, kvp, kernel) -> list of warnings
"""

from .attenuation import hu_of, mineral_solution_hu
from .definitions import PhantomDefinition, RodDefinition, list_phantoms, load_phantom
from .ha_conversion import ha_factor, to_ha_equivalent
from .internal import calibrate_internal, precalibration_kev
from .models import FitResult, fit_linear, fit_two_component
from .persist import check_compatible, load_calibration, save_calibration
from .phantom import calibrate_with_phantom, find_rods, phantom_hint
from .rods import RodMeasurement

__all__ = [
    "hu_of", "mineral_solution_hu", "PhantomDefinition", "RodDefinition", "list_phantoms", "load_phantom",
    "ha_factor", "to_ha_equivalent", "calibrate_internal", "precalibration_kev", "FitResult", "fit_linear", "fit_two_component",
    "check_compatible", "load_calibration", "save_calibration", "RodMeasurement", "calibrate_with_phantom",
    "find_rods", "phantom_hint",
]
