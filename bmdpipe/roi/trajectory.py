"""ROI C: the pedicle-screw trajectory.

Pre-operative (planned): a cylinder of the planned screw's diameter (``screw_diameter_mm``)
along the pedicle axis from the posterior entry point through the pedicle into the body to
``trajectory_depth_fraction`` of the body depth (the axis' ``target_lps``). Post-operative:
the same along a detected screw (entry to tip), its radius widened by
``postop_shell_mm`` so the bone around the metal is sampled; the metal itself and its
blooming are dense and fall to the masking. Only voxels inside the vertebra are candidates;
cortex (entry cortex, pedicle walls, posterior body wall) and sclerosis are then removed.
"""

from __future__ import annotations

import numpy as np

from ..config import MaskingSettings, RoiSettings, Settings
from ..errors import RoiError
from ..results import PedicleAxis, Region, Roi, Screw, Side, Vertebra
from ..volume import Volume
from ._box import VertebraBox, make_roi, segment_distance_mm
from .masking import mask_roi

__all__ = ["trajectory_candidates", "roi_c", "trajectory_roi_along_screw"]


def trajectory_candidates(box: VertebraBox, entry_lps, tip_lps, radius_mm: float) -> np.ndarray:
    """Cylinder of ``radius_mm`` around the segment entry-tip, inside the vertebra."""
    dist, t = segment_distance_mm(box, box.lps_to_box(entry_lps), box.lps_to_box(tip_lps))
    length = float(np.linalg.norm(np.subtract(tip_lps, entry_lps)))
    return (dist <= radius_mm) & (t >= 0) & (t <= length) & box.mask


def roi_c(box: VertebraBox, axis: PedicleAxis, settings: RoiSettings, masking: MaskingSettings, *,
         reference_cap_hu: float | None = None) -> Roi:
    """Planned-trajectory ROI C along a pedicle axis, masked."""
    cand = trajectory_candidates(box, axis.entry_lps, axis.target_lps, 0.5 * settings.screw_diameter_mm)
    kept, n_exc = mask_roi(box.hu, cand, box.mask, box.spacing, masking, reference_cap_hu=reference_cap_hu)
    return make_roi(box, kept, int(cand.sum()), n_exc, Region.C, axis.side)


def trajectory_roi_along_screw(volume: Volume, vertebra: Vertebra, screw: Screw,
                               settings: Settings | None = None, *, box: VertebraBox | None = None,
                               reference_cap_hu: float | None = None) -> Roi:
    """ROI C along a detected screw (post-operative scan).

    Parameters
    ----------
    volume : Volume
    vertebra : Vertebra
        The screw's vertebra.
    screw : Screw
        Detected screw (entry and tip in LPS mm, diameter in mm).
    settings : Settings, optional

    Returns
    -------
    Roi
        Region C, the screw's side, bone within ``diameter / 2 + postop_shell_mm`` of the
        screw axis with metal, blooming, cortex and sclerosis removed.

    Raises
    ------
    RoiError
        When the screw is not on the patient's left or right (not assigned to a pedicle).
    """
    if screw.side not in (Side.left, Side.right):
        raise RoiError(f"{vertebra.name}: the screw from LPS {tuple(round(c) for c in screw.entry_lps)} mm has side "
                       f"{Side(screw.side).value!r}; a trajectory ROI C needs the pedicle it is in (left or right)")
    settings = settings or Settings()
    box = box or VertebraBox.of(volume, vertebra)
    r = 0.5 * (screw.diameter_mm or settings.roi.screw_diameter_mm) + settings.roi.postop_shell_mm
    cand = trajectory_candidates(box, screw.entry_lps, screw.tip_lps, r)
    kept, n_exc = mask_roi(box.hu, cand, box.mask, box.spacing, settings.masking, reference_cap_hu=reference_cap_hu)
    return make_roi(box, kept, int(cand.sum()), n_exc, Region.C, Side(screw.side))
