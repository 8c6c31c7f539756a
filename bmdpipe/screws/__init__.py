"""Pedicle screws on CT: detection (metal, axis, ends, diameter, level, side) and the
radiolucent halo around each screw (loosening)."""

from .assign import assign_screws
from .detect import detect_screws, metal_mask, saturation_level
from .halo import measure_halo, measure_halo_detail, measure_halo_details, measure_screws

__all__ = ["detect_screws", "metal_mask", "saturation_level", "assign_screws", "measure_halo",
           "measure_halo_detail", "measure_halo_details", "measure_screws"]

