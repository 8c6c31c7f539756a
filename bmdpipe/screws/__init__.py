"""Pedicle screws on CT: detection (metal, axis, ends, diameter, level, side) and the
radiolucent halo around each screw (loosening)."""

from .assign import assign_screws
from .detect import detect_screws, metal_mask, saturation_level
from .halo import measure_halo, measure_halo_detail, measure_screws

__all__ = ["detect_screws", "metal_mask", "saturation_level", "assign_screws", "measure_halo",
           "measure_halo_detail", "measure_screws", "screw_row"]


def screw_row(screw) -> dict:
    """The screws.csv columns of one screw (output contract), after ``vertebra`` and ``side``.

    The caller prepends ``study_id, timepoint, series_uid``.
    """
    h = screw.halo
    return {
        "vertebra": screw.vertebra,
        "side": screw.side.value,
        "length_mm": round(screw.length_mm, 1),
        "diameter_mm": round(screw.diameter_mm, 2),
        "entry_x_mm": round(screw.entry_lps[0], 2),
        "entry_y_mm": round(screw.entry_lps[1], 2),
        "entry_z_mm": round(screw.entry_lps[2], 2),
        "tip_x_mm": round(screw.tip_lps[0], 2),
        "tip_y_mm": round(screw.tip_lps[1], 2),
        "tip_z_mm": round(screw.tip_lps[2], 2),
        "halo_max_mm": None if h is None else h.max_width_mm,
        "halo_mean_mm": None if h is None else h.mean_width_mm,
        "halo_circumference_fraction": None if h is None else h.circumference_fraction,
        "loosened": None if h is None else bool(h.loosened),
    }
