"""Binary morphology with balls of a physical radius (mm) on anisotropic grids, and hole filling.

Each operation is a Euclidean distance transform (the ``edt`` package: exact, in float32, several
times faster than :func:`scipy.ndimage.distance_transform_edt`) and a threshold. That is
:mod:`scipy.ndimage`'s binary erosion or dilation with the ball of the same radius (every offset
within ``radius_mm``; the array's border counts as background), but its time does not grow with the
ball's volume (a 15 mm ball on a 1.5 mm grid has about 4000 offsets, each a pass over the array).
"""

from __future__ import annotations

import edt
import numpy as np
from scipy import ndimage as ndi

__all__ = ["dilate_mm", "erode_mm", "open_mm", "distance_mm", "fill_holes"]


def distance_mm(mask: np.ndarray, spacing, *, border_is_outside: bool = False) -> np.ndarray:
    """Distance (mm, float32) of each voxel of ``mask`` from the nearest voxel outside it; 0 outside.

    Parameters
    ----------
    mask : ndarray of bool
    spacing : sequence of float
        Voxel size per axis, mm.
    border_is_outside : bool
        Count the array's border as outside (True) or ignore it (False).
    """
    return edt.edt(np.asarray(mask, dtype=bool), anisotropy=tuple(float(s) for s in spacing),
                   black_border=border_is_outside)


def dilate_mm(mask: np.ndarray, radius_mm: float, spacing) -> np.ndarray:
    """Voxels within ``radius_mm`` of ``mask`` (``spacing``: voxel size per axis, mm)."""
    if radius_mm <= 0 or not mask.any():
        return mask.astype(bool, copy=True)
    return distance_mm(~mask, spacing) <= radius_mm


def erode_mm(mask: np.ndarray, radius_mm: float, spacing) -> np.ndarray:
    """Voxels of ``mask`` farther than ``radius_mm`` from its outside (the array's border counts as
    outside; ``spacing``: voxel size per axis, mm)."""
    if radius_mm <= 0:
        return mask.astype(bool, copy=True)
    return distance_mm(mask, spacing, border_is_outside=True) > radius_mm


def open_mm(mask: np.ndarray, radius_mm: float, spacing) -> np.ndarray:
    """Opening: the union of the balls of ``radius_mm`` that fit in ``mask``."""
    return dilate_mm(erode_mm(mask, radius_mm, spacing), radius_mm, spacing) & mask


def fill_holes(mask: np.ndarray) -> np.ndarray:
    """``mask`` with its holes filled: the background not connected (faces only) to the array's border.

    The same as :func:`scipy.ndimage.binary_fill_holes` with its default structure, which grows the
    border's background by one voxel per pass (as many passes as the widest region is deep); here the
    background is labelled once and the components touching the border are kept (~3 x faster on a
    vertebra's box).
    """
    mask = np.asarray(mask, dtype=bool)
    if mask.size == 0:
        return mask.copy()
    background, n = ndi.label(~mask)
    outside = np.zeros(n + 1, dtype=bool)
    for axis in range(mask.ndim):
        outside[np.take(background, 0, axis=axis)] = True
        outside[np.take(background, -1, axis=axis)] = True
    outside[0] = False  # label 0 is the mask itself
    return ~outside[background]
