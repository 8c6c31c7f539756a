"""Binary morphology with balls of a physical radius (mm) on anisotropic grids.

Each operation is a Euclidean distance transform and a threshold: exactly the result of
:mod:`scipy.ndimage`'s binary erosion or dilation with the ball of the same radius (every offset
within ``radius_mm``, border counted as background), but its time does not grow with the ball's
volume (a 15 mm ball on a 1.5 mm grid has about 4000 offsets, each a pass over the array).
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi

__all__ = ["dilate_mm", "erode_mm", "open_mm"]


def dilate_mm(mask: np.ndarray, radius_mm: float, spacing) -> np.ndarray:
    """Voxels within ``radius_mm`` of ``mask`` (``spacing``: voxel size per axis, mm)."""
    if radius_mm <= 0 or not mask.any():
        return mask.astype(bool, copy=True)
    return ndi.distance_transform_edt(~mask, sampling=spacing) <= radius_mm


def erode_mm(mask: np.ndarray, radius_mm: float, spacing) -> np.ndarray:
    """Voxels of ``mask`` farther than ``radius_mm`` from its outside (the array's border counts as
    outside; ``spacing``: voxel size per axis, mm)."""
    if radius_mm <= 0:
        return mask.astype(bool, copy=True)
    inner = (slice(1, -1),) * mask.ndim
    return ndi.distance_transform_edt(np.pad(mask, 1), sampling=spacing)[inner] > radius_mm


def open_mm(mask: np.ndarray, radius_mm: float, spacing) -> np.ndarray:
    """Opening: the union of the balls of ``radius_mm`` that fit in ``mask``."""
    return dilate_mm(erode_mm(mask, radius_mm, spacing), radius_mm, spacing) & mask
