"""Vertebrae: labels (VerSe / TotalSegmentator) or automatic localisation, and their geometry."""

from .frame import CanonicalFrame
from .labels import (
    load_labels,
    read_label_table,
    resample_labels,
    vertebrae_from_label_map,
    vertebrae_from_labels,
    vertebrae_from_masks,
)
from .localize import localize_vertebrae, tall_bodies
from .vertebra import scan_edge_cut, vertebra_geometry

__all__ = [
    "CanonicalFrame",
    "load_labels",
    "read_label_table",
    "resample_labels",
    "vertebrae_from_labels",
    "vertebrae_from_label_map",
    "vertebrae_from_masks",
    "localize_vertebrae",
    "tall_bodies",
    "vertebra_geometry",
    "scan_edge_cut",
]
