"""ROI A: elliptical cylinder in the mid-height of the vertebral body (QCT convention).

The ellipse spans ``a_width_fraction`` of the body width (left-right) and
``a_depth_fraction`` of its depth (anterior-posterior), ``a_height_mm`` high, centred at the
body's mid-height on its centre, moved anteriorly when needed so that its posterior edge
stays ``a_posterior_clearance_mm`` in front of the posterior wall (basivertebral vein).
Candidates are the cylinder's voxels inside the body; :func:`~bmdpipe.roi.masking.mask_roi`
then removes cortex, endplates and sclerotic foci with their PSF clearance.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi

from ..config import MaskingSettings, RoiSettings
from ..errors import RoiError
from ..results import Region, Roi, Side
from ._box import VertebraBox, make_roi
from .masking import mask_roi

__all__ = ["body_roi_candidates", "roi_a"]


def body_roi_candidates(box: VertebraBox, settings: RoiSettings) -> np.ndarray:
    """Geometric ROI A (before masking) in ``box``, boolean array."""
    v = box.vertebra
    body = box.body if box.body.any() else box.mask
    sp = box.spacing
    cz, cy, cx = ndi.center_of_mass(body)
    col = body[:, max(0, int(cy) - 1):int(cy) + 2, max(0, int(cx) - 1):int(cx) + 2].any(axis=(1, 2))
    zc = np.flatnonzero(col)
    if zc.size == 0:
        raise RoiError(f"{v.name}: the body mask has no central column; cannot place ROI A")
    zmid = 0.5 * (zc.min() + zc.max())
    k = int(round(zmid))
    slab = body[max(0, k - 1):k + 2].any(axis=0)
    ys, xs = np.nonzero(slab)
    cy, cx = ys.mean(), xs.mean()
    width = v.body_width_mm or (np.ptp(xs) + 1) * sp[2]
    depth = v.body_depth_mm or (np.ptp(ys) + 1) * sp[1]
    colx = slab[:, int(round(cx))]
    y_post = (np.flatnonzero(colx).max() if colx.any() else ys.max()) * sp[1]
    a = 0.5 * settings.a_width_fraction * width
    b = 0.5 * settings.a_depth_fraction * depth
    cy_mm = min(cy * sp[1], y_post - settings.a_posterior_clearance_mm - b)
    z, y, x = box.grid_mm()
    ell = ((x - cx * sp[2]) / a) ** 2 + ((y - cy_mm) / b) ** 2 <= 1.0
    slab_z = np.abs(z - zmid * sp[0]) <= 0.5 * settings.a_height_mm + 1e-6
    return ell & slab_z & body


def roi_a(box: VertebraBox, settings: RoiSettings, masking: MaskingSettings) -> Roi:
    """ROI A of one vertebra, cortex/sclerosis-masked (see module docs)."""
    cand = body_roi_candidates(box, settings)
    support = box.body if box.body.any() else box.mask
    kept, n_exc = mask_roi(box.hu, cand, support, box.spacing, masking)
    return make_roi(box, kept, int(cand.sum()), n_exc, Region.A, Side.center)
