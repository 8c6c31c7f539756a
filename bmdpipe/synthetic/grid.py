"""Canonical voxel grid of a synthetic case and box-wise painting helpers.

The generator works on a canonical grid whose index axes run along +x, +y, +z (LPS, the HFS
identity direction); :mod:`bmdpipe.synthetic.case` flips axes at the end for other
orientations. All shapes are evaluated in mm on ``np.ogrid``-style coordinates inside a box.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["Grid", "rotation_matrix"]


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
