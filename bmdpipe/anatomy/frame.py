"""Canonical anatomical frame of a Volume: array axes reordered and flipped to (S, P, L).

Geometry kernels in :mod:`bmdpipe.anatomy` and :mod:`bmdpipe.roi` work on a *canonical* view
of the CT array whose index axes increase towards superior (+z), posterior (+y) and the
patient's left (+x), i.e. the LPS axes, whatever the scan orientation (HFS, FFS, prone ...).
The view is a transpose + flip of the original array (no copy, no interpolation), so results
map back to the original grid exactly. Directions that are not a signed permutation (oblique
acquisitions) are approximated by the nearest signed permutation; ``obliquity_deg`` says by
how much.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..volume import Volume

__all__ = ["CanonicalFrame"]


@dataclass(frozen=True)
class CanonicalFrame:
    """Mapping between a Volume's array and its canonical (S, P, L) view.

    Attributes
    ----------
    perm : tuple of int, shape (3,)
        ``perm[c]`` is the original array axis that becomes canonical axis ``c``
        (0 = z superior, 1 = y posterior, 2 = x left).
    flip : tuple of bool, shape (3,)
        Canonical axis ``c`` is reversed relative to the original axis.
    shape : tuple of int, shape (3,)
        Canonical array shape.
    spacing : tuple of float, shape (3,)
        Canonical voxel size in mm (z, y, x).
    obliquity_deg : float
        Largest angle between an array axis and its nearest LPS axis, degrees.
    """

    perm: tuple[int, int, int]
    flip: tuple[bool, bool, bool]
    shape: tuple[int, int, int]
    spacing: tuple[float, float, float]
    obliquity_deg: float
    orig_shape: tuple[int, int, int]

    @classmethod
    def of(cls, volume: Volume) -> "CanonicalFrame":
        """Frame of ``volume`` (direction columns = LPS vectors of the i, j, k axes)."""
        vecs = np.stack([volume.axis_lps(a) for a in range(3)])  # row a = LPS vector of array axis a
        perm = [0, 0, 0]
        flip = [False, False, False]
        used: set[int] = set()
        worst = 0.0
        for c, lps_comp in ((0, 2), (1, 1), (2, 0)):
            order = np.argsort(-np.abs(vecs[:, lps_comp]))
            a = int(next(x for x in order if int(x) not in used))
            used.add(a)
            perm[c] = a
            comp = vecs[a, lps_comp]
            flip[c] = bool(comp < 0)
            worst = max(worst, float(np.degrees(np.arccos(min(1.0, abs(comp))))))
        shape = tuple(volume.shape[a] for a in perm)
        spacing = tuple(volume.spacing[a] for a in perm)
        return cls(tuple(perm), tuple(flip), shape, spacing, worst, tuple(volume.shape))  # type: ignore[arg-type]

    # -- arrays ---------------------------------------------------------------------------
    def to_canonical(self, array: np.ndarray) -> np.ndarray:
        """View of a full original-grid array in canonical order (no copy)."""
        out = np.transpose(array, self.perm)
        for c in range(3):
            if self.flip[c]:
                out = np.flip(out, axis=c)
        return out

    def box_to_original(self, offset_c, mask_c: np.ndarray) -> tuple[tuple[int, int, int], np.ndarray]:
        """Map a canonical box ``(offset, array)`` to the original grid box."""
        m = mask_c
        off = list(int(o) for o in offset_c)
        for c in range(3):
            if self.flip[c]:
                m = np.flip(m, axis=c)
                off[c] = self.shape[c] - off[c] - mask_c.shape[c]
        inv = np.argsort(self.perm)
        m = np.ascontiguousarray(np.transpose(m, inv))
        off_o = [0, 0, 0]
        for c in range(3):
            off_o[self.perm[c]] = off[c]
        return tuple(off_o), m  # type: ignore[return-value]

    def box_to_canonical(self, offset_o, mask_o: np.ndarray) -> tuple[tuple[int, int, int], np.ndarray]:
        """Map an original-grid box ``(offset, array)`` to the canonical grid."""
        m = np.transpose(mask_o, self.perm)
        off = [int(offset_o[self.perm[c]]) for c in range(3)]
        for c in range(3):
            if self.flip[c]:
                m = np.flip(m, axis=c)
                off[c] = self.shape[c] - off[c] - m.shape[c]
        return tuple(off), np.ascontiguousarray(m)  # type: ignore[return-value]

    # -- points ---------------------------------------------------------------------------
    def canonical_to_index(self, idx_c) -> np.ndarray:
        """(..., 3) canonical (fractional) indices -> original (k, j, i) indices."""
        idx_c = np.asarray(idx_c, dtype=float)
        out = np.empty_like(idx_c)
        for c in range(3):
            v = idx_c[..., c]
            if self.flip[c]:
                v = self.shape[c] - 1 - v
            out[..., self.perm[c]] = v
        return out

    def index_to_canonical(self, idx_o) -> np.ndarray:
        """(..., 3) original (k, j, i) indices -> canonical indices."""
        idx_o = np.asarray(idx_o, dtype=float)
        out = np.empty_like(idx_o)
        for c in range(3):
            v = idx_o[..., self.perm[c]]
            if self.flip[c]:
                v = self.shape[c] - 1 - v
            out[..., c] = v
        return out

    def canonical_to_lps(self, volume: Volume, idx_c) -> np.ndarray:
        return volume.index_to_lps(self.canonical_to_index(idx_c))

    def lps_to_canonical(self, volume: Volume, lps) -> np.ndarray:
        return self.index_to_canonical(volume.lps_to_index(lps))
