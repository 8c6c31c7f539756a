"""A vertebra's canonical box: CT values, masks and point mapping shared by the ROI builders."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..anatomy.frame import CanonicalFrame
from ..errors import RoiError
from ..morphology import fill_holes
from ..results import Region, Roi, Side, Vertebra
from ..volume import Volume

__all__ = ["VertebraBox", "make_roi", "segment_distance_mm"]


@dataclass(frozen=True, eq=False)
class VertebraBox:
    """Canonical (superior, posterior, left) box around one vertebra.

    ``hu``, ``mask`` and ``body`` share the box; ``offset`` is its first canonical index.
    Points are canonical voxel coordinates *inside the box*; ``mm`` multiplies by spacing.
    """

    volume: Volume
    frame: CanonicalFrame
    vertebra: Vertebra
    offset: tuple[int, int, int]
    hu: np.ndarray
    mask: np.ndarray
    body: np.ndarray

    @property
    def spacing(self):
        return self.frame.spacing

    @classmethod
    def of(cls, volume: Volume, vertebra: Vertebra, frame: CanonicalFrame | None = None,
           pad: int = 3) -> "VertebraBox":
        frame = frame or CanonicalFrame.of(volume)
        off_c, mask_c = frame.box_to_canonical(vertebra.offset, vertebra.mask)
        body_c = frame.box_to_canonical(vertebra.offset, vertebra.body_mask)[1] \
            if vertebra.body_mask is not None else mask_c
        lo = np.maximum(np.asarray(off_c) - pad, 0)
        hi = np.minimum(np.asarray(off_c) + mask_c.shape + pad, frame.shape)
        sl = tuple(slice(int(a), int(b)) for a, b in zip(lo, hi))
        hu = np.asarray(frame.to_canonical(volume.array)[sl], dtype=np.float32)
        ins = tuple(slice(int(o - l), int(o - l + n)) for o, l, n in zip(off_c, lo, mask_c.shape))
        mask = np.zeros(hu.shape, bool)
        mask[ins] = mask_c
        body = np.zeros(hu.shape, bool)
        body[ins] = body_c
        if not mask.any():
            raise RoiError(f"{vertebra.name}: empty vertebra mask; no ROI can be placed")
        return cls(volume, frame, vertebra, tuple(int(v) for v in lo), hu, fill_holes(mask), body)

    def lps_to_box(self, lps) -> np.ndarray:
        return self.frame.lps_to_canonical(self.volume, np.asarray(lps, float)) - np.asarray(self.offset)

    def box_to_lps(self, p) -> np.ndarray:
        return self.frame.canonical_to_lps(self.volume, np.asarray(p, float) + np.asarray(self.offset))

    def grid_mm(self):
        """Sparse (z, y, x) coordinate grids of the box, mm."""
        sz, sy, sx = self.spacing
        nz, ny, nx = self.hu.shape
        return (np.arange(nz)[:, None, None] * sz, np.arange(ny)[None, :, None] * sy,
                np.arange(nx)[None, None, :] * sx)


def segment_distance_mm(box: VertebraBox, p0, p1) -> tuple[np.ndarray, np.ndarray]:
    """Distance (mm) of every box voxel to the segment p0-p1 (box voxel coords) and the
    position along it (mm from p0; <0 before p0, > length after p1)."""
    sp = np.asarray(box.spacing)
    a = np.asarray(p0, float) * sp
    b = np.asarray(p1, float) * sp
    d = b - a
    length = float(np.linalg.norm(d))
    u = d / length if length > 0 else np.array([0.0, -1.0, 0.0])
    z, y, x = box.grid_mm()
    rz, ry, rx = z - a[0], y - a[1], x - a[2]
    t = rz * u[0] + ry * u[1] + rx * u[2]
    tc = np.clip(t, 0.0, length)
    dist = np.sqrt((rz - tc * u[0]) ** 2 + (ry - tc * u[1]) ** 2 + (rx - tc * u[2]) ** 2)
    return dist, t


def make_roi(box: VertebraBox, kept: np.ndarray, n_candidates: int, n_excluded: int,
             region: Region, side: Side) -> Roi:
    """Crop ``kept`` to its bounding box and return an :class:`Roi` on the original grid."""
    v = box.vertebra
    if kept.any():
        idx = np.argwhere(kept)
        lo, hi = idx.min(0), idx.max(0) + 1
    else:
        lo = np.zeros(3, int)
        hi = np.ones(3, int)
    sl = tuple(slice(int(a), int(b)) for a, b in zip(lo, hi))
    off_c = tuple(int(o + l) for o, l in zip(box.offset, lo))
    off_o, m_o = box.frame.box_to_original(off_c, kept[sl])
    return Roi(vertebra=v.name, verse_id=v.verse_id, region=region, side=side, offset=off_o, mask=m_o,
               n_candidates=int(n_candidates), n_excluded=int(n_excluded), label_code=v.label_code_base + side.code)
