"""Regions of interest A (central body), B (pedicle isthmus), C (screw trajectory), masked.

:func:`place_rois` is the entry point: for each vertebra A (center), B left/right and
C left/right, each already cleared of cortex and sclerosis (``Roi.n_candidates`` /
``Roi.n_excluded``), ``label_code = 10 x VerSe id + side code``.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ..anatomy.frame import CanonicalFrame
from ..config import Settings
from ..results import Roi, Screw, Side, Vertebra
from ..volume import Volume
from ._box import VertebraBox
from .body import roi_a
from .masking import dense_mask, mask_roi
from .pedicle import roi_b
from .trajectory import roi_c, trajectory_roi_along_screw

__all__ = ["place_rois", "roi_a", "roi_b", "roi_c", "trajectory_roi_along_screw", "mask_roi", "dense_mask",
           "VertebraBox"]


def _a_in_box(box: VertebraBox, roi: Roi) -> np.ndarray:
    """Boolean mask of ``roi`` on ``box``'s canonical grid."""
    off_c, m_c = box.frame.box_to_canonical(roi.offset, roi.mask)
    out = np.zeros(box.hu.shape, bool)
    rel = np.asarray(off_c) - np.asarray(box.offset)
    sl = tuple(slice(int(r), int(r) + n) for r, n in zip(rel, m_c.shape))
    out[sl] = m_c
    return out


def place_rois(volume: Volume, vertebrae: Sequence[Vertebra], settings: Settings | None = None, *,
               screws: Sequence[Screw] = ()) -> list[Roi]:
    """ROIs A, B left/right and C left/right of every vertebra.

    Parameters
    ----------
    volume : Volume
        The CT, HU.
    vertebrae : sequence of Vertebra
        From :func:`bmdpipe.anatomy.vertebrae_from_labels` or :func:`~bmdpipe.anatomy.localize_vertebrae`.
    settings : Settings, optional
        Uses the ``roi`` and ``masking`` sections.
    screws : sequence of Screw
        Detected screws (post-operative scan): ROI C of a vertebra side with a screw follows
        the screw instead of the planned pedicle axis.

    Returns
    -------
    list of Roi
        Order: per vertebra A, B left, B right, C left, C right. A pedicle whose axis could
        not be found yields no B/C ROI for that side (the vertebra's ``pedicles`` says so).
    """
    settings = settings or Settings()
    frame = CanonicalFrame.of(volume)
    out: list[Roi] = []
    for v in vertebrae:
        box = VertebraBox.of(volume, v, frame)
        a = roi_a(box, settings.roi, settings.masking)
        out.append(a)
        # B and C may be mostly cortex (thin pedicles, coarse voxels): their cancellous
        # reference may not exceed the body's by more than max_reference_above_body_hu
        cap = None
        vals = box.hu[_a_in_box(box, a)]
        if vals.size:
            cap = float(np.median(vals)) + settings.masking.max_reference_above_body_hu
        axes = {p.side: p for p in v.pedicles}
        for side in (Side.left, Side.right):
            if side in axes:
                out.append(roi_b(box, axes[side], settings.roi, settings.masking, reference_cap_hu=cap))
        for side in (Side.left, Side.right):
            screw = next((s for s in screws if s.vertebra == v.name and Side(s.side) is side), None)
            if screw is not None:
                out.append(trajectory_roi_along_screw(volume, v, screw, settings, box=box, reference_cap_hu=cap))
            elif side in axes:
                out.append(roi_c(box, axes[side], settings.roi, settings.masking, reference_cap_hu=cap))
    return out
