"""Canonical voxel grid of a synthetic case and box-wise painting helpers.

The generator works on a canonical grid whose index axes run along +x, +y, +z (LPS, the HFS
identity direction); :mod:`bmdpipe.synthetic.case` flips axes at the end for other
orientations. All shapes are evaluated in mm on ``np.ogrid``-style coordinates inside a box.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["Grid", "VoxelFill", "rotation_matrix", "voxel_fraction"]


@dataclass(frozen=True, eq=False)
class Grid:
    """Voxel-centre coordinates (mm, LPS) of a canonical grid: ``xs[i]``, ``ys[j]``, ``zs[k]``."""

    xs: np.ndarray
    ys: np.ndarray
    zs: np.ndarray

    @classmethod
    def centred(cls, extent_xyz_mm, centre_xyz_mm, spacing_zyx_mm) -> "Grid":
        """Grid covering ``extent`` (mm) around ``centre``; voxel centres at ``centre + (n - (N-1)/2) * s``."""
        axes = []
        for ext, c, s in zip(extent_xyz_mm, centre_xyz_mm, spacing_zyx_mm[::-1]):
            n = max(int(round(ext / s)), 1)
            axes.append(c + (np.arange(n) - (n - 1) / 2.0) * s)
        return cls(*axes)

    @property
    def shape(self) -> tuple[int, int, int]:
        return (self.zs.size, self.ys.size, self.xs.size)

    @property
    def spacing_zyx(self) -> tuple[float, float, float]:
        def step(a):
            return float(a[1] - a[0]) if a.size > 1 else 1.0
        return (step(self.zs), step(self.ys), step(self.xs))

    def box(self, lo_xyz, hi_xyz):
        """Index slices (k, j, i) and ogrid coordinates (Z, Y, X) of the voxels inside [lo, hi] (mm).

        Returns None when the box misses the grid.
        """
        sl = []
        for arr, lo, hi in zip((self.zs, self.ys, self.xs), lo_xyz[::-1], hi_xyz[::-1]):
            a = int(np.searchsorted(arr, lo, side="left"))
            b = int(np.searchsorted(arr, hi, side="right"))
            if b <= a:
                return None
            sl.append(slice(a, b))
        kz, jy, ix = sl
        Z = self.zs[kz].astype(np.float32)[:, None, None]
        Y = self.ys[jy].astype(np.float32)[None, :, None]
        X = self.xs[ix].astype(np.float32)[None, None, :]
        return (kz, jy, ix), (Z, Y, X)

    def fine_box(self, lo_xyz, hi_xyz, n: int):
        """The voxels inside [lo, hi] (mm) sampled ``n`` times finer: index slices (k, j, i) and ogrid
        coordinates (Z, Y, X) of each voxel's n^3 sub-samples (the middle one at its centre, n in a row
        along each axis); None when the box misses the grid."""
        bx = self.box(lo_xyz, hi_xyz)
        if bx is None:
            return None
        sl, (Z, Y, X) = bx
        sub = (np.arange(n) - (n - 1) / 2.0) / n  # sub-voxel offsets (voxels)
        sp = self.spacing_zyx

        def fine(c, h):
            return (c.ravel()[:, None] + sub[None, :] * h).ravel().astype(np.float32)

        return sl, (fine(Z, sp[0])[:, None, None], fine(Y, sp[1])[None, :, None], fine(X, sp[2])[None, None, :])

    def fill_fraction(self, lo_xyz, hi_xyz, inside, n: int):
        """The share of each voxel in [lo, hi] (mm) that a solid fills (0..1), from n^3 sub-samples:
        ``(slices, float32 fraction)`` or None off the grid. ``inside(Z, Y, X)`` says which points (mm, ogrid
        coordinates) lie in the solid. This is the partial volume a projector sees."""
        fb = self.fine_box(lo_xyz, hi_xyz, n)
        if fb is None:
            return None
        sl, coords = fb
        return sl, voxel_fraction(np.broadcast_to(inside(*coords), tuple(c.size for c in coords)), n)


@dataclass(frozen=True, eq=False)
class VoxelFill:
    """Hardware as the share of each voxel it fills: ``fraction`` (float32, 0..1) over the index ``slices``
    (k, j, i) of a box, made of the single-material tissue ``tissue`` (a key of ``tissue.TISSUE_MATERIALS``)."""

    tissue: str
    slices: tuple[slice, slice, slice]
    fraction: np.ndarray


def voxel_fraction(occupancy: np.ndarray, n: int) -> np.ndarray:
    """Mean of each voxel's n^3 sub-samples of a boolean occupancy (:meth:`Grid.fine_box` layout), float32."""
    nz, ny, nx = (d // n for d in occupancy.shape)
    return occupancy.reshape(nz, n, ny, n, nx, n).mean(axis=(1, 3, 5), dtype=np.float32)


def rotation_matrix(rx_deg: float, ry_deg: float, rz_deg: float) -> np.ndarray:
    """Rotation ``Rz @ Ry @ Rx`` (degrees about the LPS x, y, z axes); columns = local axes in LPS."""
    ax, ay, az = np.deg2rad([rx_deg, ry_deg, rz_deg])
    rx = np.array([[1, 0, 0], [0, np.cos(ax), -np.sin(ax)], [0, np.sin(ax), np.cos(ax)]])
    ry = np.array([[np.cos(ay), 0, np.sin(ay)], [0, 1, 0], [-np.sin(ay), 0, np.cos(ay)]])
    rz = np.array([[np.cos(az), -np.sin(az), 0], [np.sin(az), np.cos(az), 0], [0, 0, 1]])
    return rz @ ry @ rx


def to_local(coords, centre, rot):
    """Local coordinates ``R^T (p - c)`` of ogrid coords (Z, Y, X); returns full arrays (u, v, w)."""
    Z, Y, X = coords
    c = np.asarray(centre, dtype=np.float32)
    r = np.asarray(rot, dtype=np.float32)
    dx, dy, dz = X - c[0], Y - c[1], Z - c[2]
    u = r[0, 0] * dx + r[1, 0] * dy + r[2, 0] * dz
    v = r[0, 1] * dx + r[1, 1] * dy + r[2, 1] * dz
    w = r[0, 2] * dx + r[1, 2] * dy + r[2, 2] * dz
    return u, v, w
