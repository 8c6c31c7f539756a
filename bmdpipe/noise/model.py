"""The noise model of a series: autocovariance, local level, and the variance of an ROI's mean."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.signal import fftconvolve

__all__ = ["NoiseLevel", "NoiseModel", "mask_pair_counts"]


@dataclass(frozen=True)
class NoiseLevel:
    """How the noise variance varies over the image, relative to its mean over the uniform regions.

    ``log(variance / mean) = sum(inplane * [y, x, y^2, x y, x^2]) + offset(z)``, with ``y, x`` the
    in-plane position in units of 100 mm from ``centre_mm`` and ``offset(z)`` interpolated
    linearly between the slabs' centres (constant beyond); the ratio is kept within
    ``[1 / max_ratio, max_ratio]``. Positions are array coordinates (index x spacing, mm).

    Attributes
    ----------
    inplane : tuple of float, shape (5,)
    centre_mm : (y, x) mm
    slab_z_mm, slab_offsets : tuple of float
        Centre (mm) and log-variance offset of each slab, ``slab_z_mm`` increasing.
    max_ratio : float
    """

    inplane: tuple[float, ...]
    centre_mm: tuple[float, float]
    slab_z_mm: tuple[float, ...]
    slab_offsets: tuple[float, ...]
    max_ratio: float

    @staticmethod
    def terms(y_mm, x_mm, centre_mm) -> np.ndarray:
        """The in-plane terms ``[y, x, y^2, x y, x^2]`` (100 mm units from ``centre_mm``), shape (..., 5)."""
        y = (np.asarray(y_mm, dtype=float) - centre_mm[0]) / 100.0
        x = (np.asarray(x_mm, dtype=float) - centre_mm[1]) / 100.0
        return np.stack([y, x, y * y, x * y, x * x], axis=-1)

    def ratio(self, point_mm) -> float:
        """Noise variance at ``point_mm`` (z, y, x array mm) / its mean over the uniform regions."""
        z, y, x = (float(v) for v in point_mm)
        log_ratio = float(self.terms(y, x, self.centre_mm) @ np.asarray(self.inplane))
        log_ratio += float(np.interp(z, self.slab_z_mm, self.slab_offsets))
        return float(np.clip(np.exp(log_ratio), 1.0 / self.max_ratio, self.max_ratio))


@dataclass(frozen=True, eq=False)
class NoiseModel:
    """The spatial autocovariance of a series' noise, and what it implies for ROI means.

    Attributes
    ----------
    autocovariance_hu2 : (2 kz + 1, 2 ky + 1, 2 kx + 1) ndarray of float
        ``C`` at voxel lags ``(dz, dy, dx)``, zero lag at the centre, HU^2, averaged over the
        uniform regions; zero beyond the estimated support.
    spacing : tuple of float, shape (3,)
        Voxel size (z, y, x) of the series, mm.
    level : NoiseLevel or None
        How the variance varies over the image; None = the same everywhere.
    n_voxels : int
        Uniform-region voxels the estimate rests on (0 for a model not estimated from an image).
    """

    autocovariance_hu2: np.ndarray
    spacing: tuple[float, float, float]
    level: NoiseLevel | None = None
    n_voxels: int = 0

    @classmethod
    def white(cls, sd_hu: float, spacing) -> NoiseModel:
        """Independent voxels of SD ``sd_hu`` (HU) everywhere: the model the old standard error assumed."""
        return cls(np.full((1, 1, 1), float(sd_hu) ** 2), tuple(float(s) for s in spacing))

    @property
    def half_window(self) -> tuple[int, int, int]:
        """Largest lag (voxels) per axis (z, y, x) at which ``C`` is held."""
        return tuple(int(n // 2) for n in self.autocovariance_hu2.shape)  # type: ignore[return-value]

    @property
    def sd_hu(self) -> float:
        """SD of a single voxel's noise, averaged over the uniform regions, HU."""
        return float(np.sqrt(self.autocovariance_hu2[self.half_window]))

    @property
    def correlation_mm(self) -> float:
        """In-plane correlation length: the lag at which the noise autocorrelation falls to 1/2
        (half width at half maximum, interpolated linearly between voxel lags, mean of the row and
        column directions), mm."""
        kz, ky, kx = self.half_window
        c = self.autocovariance_hu2[kz] / self.autocovariance_hu2[kz, ky, kx]
        out = []
        for profile, step in ((0.5 * (c[ky:, kx] + c[ky::-1, kx]), self.spacing[1]),
                              (0.5 * (c[ky, kx:] + c[ky, kx::-1]), self.spacing[2])):
            below = np.nonzero(profile < 0.5)[0]
            if below.size == 0:  # still correlated at the window's edge
                out.append(step * (profile.size - 1))
                continue
            i = int(below[0])  # profile[0] = 1, so i >= 1: interpolate between i - 1 and i
            out.append(step * (i - 1 + (profile[i - 1] - 0.5) / (profile[i - 1] - profile[i])))
        return float(np.mean(out))

    def local_sd_hu(self, mask: np.ndarray, offset=(0, 0, 0)) -> float:
        """Noise SD (HU) at the centroid of ``mask``, a boolean box whose voxel (0, 0, 0) is voxel
        ``offset`` of the series; NaN for an empty mask."""
        if not np.any(mask):
            return float("nan")
        if self.level is None:
            return self.sd_hu
        centroid = (np.argwhere(mask).mean(axis=0) + np.asarray(offset)) * np.asarray(self.spacing)
        return float(self.sd_hu * np.sqrt(self.level.ratio(centroid)))

    def effective_samples(self, mask: np.ndarray) -> float:
        """Effective number of independent voxels of ``mask``: ``sigma^2 / var(mean)``, i.e.
        ``N^2 / sum_d rho(d) A(d)`` with ``rho = C / C(0)`` (a property of the ROI's shape and the
        noise's correlation, not of its level); NaN for an empty mask."""
        n = int(np.count_nonzero(mask))
        if n == 0:
            return float("nan")
        pairs = mask_pair_counts(mask, self.half_window)
        return float(n * n * self.autocovariance_hu2[self.half_window] / np.sum(pairs * self.autocovariance_hu2))

    def variance_of_mean(self, mask: np.ndarray, offset=(0, 0, 0)) -> float:
        """Variance (HU^2) of the mean of the voxels of ``mask`` (a boolean box whose voxel (0, 0, 0)
        is voxel ``offset`` of the series): ``sigma_local^2 / N_eff``, that is
        ``sum_d C(d) A(d) / N^2`` scaled to the noise level at the ROI; NaN for an empty mask."""
        return self.local_sd_hu(mask, offset) ** 2 / self.effective_samples(mask)


def mask_pair_counts(mask: np.ndarray, half_window) -> np.ndarray:
    """Number of voxel pairs of ``mask`` at each lag within ``half_window`` (kz, ky, kx) voxels.

    Returns
    -------
    (2 kz + 1, 2 ky + 1, 2 kx + 1) ndarray of float
        ``A(d) = sum_x mask(x) mask(x + d)``, zero lag at the centre (``A(0)`` = the voxel count).
    """
    m = np.asarray(mask, dtype=np.float64)
    full = np.rint(fftconvolve(m, m[::-1, ::-1, ::-1], mode="full"))  # lag 0 at index shape - 1
    out = np.zeros(tuple(2 * k + 1 for k in half_window))
    src, dst = [], []
    for n, k in zip(m.shape, half_window):
        lo, hi = max(-k, -(n - 1)), min(k, n - 1)
        src.append(slice(n - 1 + lo, n + hi))
        dst.append(slice(k + lo, k + hi + 1))
    out[tuple(dst)] = full[tuple(src)]
    return out
