"""ROI B: the cancellous core of a pedicle over its isthmus.

Candidates: voxels of the vertebra within ``b_half_length_mm`` of the isthmus along the
pedicle axis and within the isthmus' half-diagonal of the axis; cortex and the bone surface
are then removed with their PSF clearance by :func:`~bmdpipe.roi.masking.mask_roi`, which
leaves the cancellous core.
"""

from __future__ import annotations

import numpy as np

from ..config import MaskingSettings, RoiSettings
from ..results import PedicleAxis, Region, Roi
from ._box import VertebraBox, make_roi
from .masking import mask_roi

__all__ = ["pedicle_roi_candidates", "roi_b"]

#: a lumbar pedicle's isthmus, width x height, when not measured, mm (L3-L4: ~10 x 14, Zindrick 1987)
TYPICAL_ISTHMUS_MM = (10.0, 14.0)


def pedicle_roi_candidates(box: VertebraBox, axis: PedicleAxis, settings: RoiSettings) -> np.ndarray:
    """Geometric ROI B (before masking) in ``box``, boolean array."""
    sp = np.asarray(box.spacing)
    p_e = box.lps_to_box(axis.entry_lps) * sp
    p_i = box.lps_to_box(axis.isthmus_lps) * sp
    p_t = box.lps_to_box(axis.target_lps) * sp
    u = p_t - p_e
    u /= np.linalg.norm(u)
    w = axis.isthmus_width_mm or TYPICAL_ISTHMUS_MM[0]
    h = axis.isthmus_height_mm or TYPICAL_ISTHMUS_MM[1]
    r = 0.5 * max(w, h) + 1.0
    z, y, x = box.grid_mm()
    rz, ry, rx = z - p_i[0], y - p_i[1], x - p_i[2]
    t = rz * u[0] + ry * u[1] + rx * u[2]
    d2 = (rz - t * u[0]) ** 2 + (ry - t * u[1]) ** 2 + (rx - t * u[2]) ** 2
    return (np.abs(t) <= settings.b_half_length_mm) & (d2 <= r * r) & box.mask


def roi_b(box: VertebraBox, axis: PedicleAxis, settings: RoiSettings, masking: MaskingSettings, *,
         reference_cap_hu: float | None = None) -> Roi:
    """ROI B of one pedicle, cortex-masked."""
    cand = pedicle_roi_candidates(box, axis, settings)
    kept, n_exc = mask_roi(box.hu, cand, box.mask, box.spacing, masking, reference_cap_hu=reference_cap_hu)
    return make_roi(box, kept, int(cand.sum()), n_exc, Region.B, axis.side)
