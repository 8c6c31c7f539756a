"""Estimating a series' noise model from its uniform regions (see :mod:`bmdpipe.noise`)."""

from __future__ import annotations

import numpy as np
from scipy import fft as sfft
from scipy import ndimage as ndi

from ..config import NoiseSettings
from ..errors import NoiseError
from .model import NoiseLevel, NoiseModel

__all__ = ["estimate_noise", "uniform_regions"]


def _box(half_width_mm: float, spacing: np.ndarray) -> tuple[int, ...]:
    """Odd box size (voxels per axis) reaching ``half_width_mm`` either side of its centre."""
    return tuple(2 * int(round(half_width_mm / d)) + 1 for d in spacing)


def uniform_regions(image: np.ndarray, spacing, settings: NoiseSettings) -> list[np.ndarray]:
    """Boolean masks of uniform tissue in ``image`` (HU), one per HU range of ``settings``.

    On the image smoothed with a Gaussian of ``smoothing_mm``, a range's candidates are the voxels
    within the range that are not on an edge: their gradient stays below ``edge_gradient_factor``
    times the candidates' median gradient (the smoothed noise's; a step between two tissues of the
    same range, such as muscle and a phantom's body or the spinal canal, rises above it). A voxel
    belongs to the region when every voxel in the box reaching ``margin_mm`` around it is a
    candidate (the array's ends do not count as a boundary).
    """
    sp = np.asarray(spacing, dtype=float)
    smooth = ndi.gaussian_filter(np.asarray(image, dtype=np.float32), sigma=settings.smoothing_mm / sp)
    gradient = np.zeros_like(smooth)
    for axis, step in enumerate(sp):  # one axis at a time: a third of the memory of np.gradient's list
        gradient += np.gradient(smooth, step, axis=axis) ** 2
    gradient = np.sqrt(gradient, out=gradient)
    box = _box(settings.margin_mm, sp)
    out = []
    for lo, hi in settings.uniform_ranges_hu:
        inside = (smooth >= lo) & (smooth <= hi)
        if inside.any():
            inside &= gradient <= settings.edge_gradient_factor * float(np.median(gradient[inside]))
        out.append(ndi.uniform_filter(inside.astype(np.float32), box, mode="nearest") > 1.0 - 1e-4)
    return out


def _detrended(image: np.ndarray, regions: list[np.ndarray], spacing,
               detrend_mm: float) -> tuple[np.ndarray, np.ndarray]:
    """(mask, residual): the union of ``regions`` and, in it, each region's image minus its local
    mean (over that region's voxels in the box reaching ``detrend_mm`` around); zero outside."""
    box = _box(detrend_mm, np.asarray(spacing, dtype=float))
    mask = np.zeros(image.shape, dtype=bool)
    residual = np.zeros(image.shape, dtype=np.float64)
    for region in regions:
        if not region.any():
            continue
        w = region.astype(np.float64)
        weights = ndi.uniform_filter(w, box, mode="constant")
        np.maximum(weights, 1e-12, out=weights)
        w *= image  # in place (memory): w is the region's image, then its local sum
        local = ndi.uniform_filter(w, box, output=w, mode="constant")
        local /= weights
        del weights
        residual[region] = image[region] - local[region]
        mask |= region
    return mask, residual


def _lag_sums(mask: np.ndarray, residual: np.ndarray, half_window) -> tuple[np.ndarray, np.ndarray]:
    """Pair counts and sums of residual products at each lag within ``half_window`` (voxels):
    ``sum_x m(x) m(x+d)`` and ``sum_x r(x) r(x+d)`` (``r`` zero outside ``m``), by FFT."""
    shape = [sfft.next_fast_len(n + k, real=True) for n, k in zip(mask.shape, half_window)]
    out = []
    for a in (mask, residual):
        f = sfft.rfftn(a.astype(np.float64, copy=False), shape)
        f *= np.conj(f)  # in place (memory): the power spectrum
        corr = sfft.irfftn(f, shape)
        del f
        idx = np.ix_(*[np.arange(-k, k + 1) % s for k, s in zip(half_window, shape)])
        out.append(corr[idx])
    return out[0], out[1]


def _slabs(n_slices: int, slab: int, n_slabs: int) -> list[tuple[int, int]]:
    """``n_slabs`` slabs of ``slab`` slices, evenly spread over ``n_slices``."""
    if slab >= n_slices:
        return [(0, n_slices)]
    starts = np.linspace(0, n_slices - slab, n_slabs).round().astype(int)
    return [(int(s), int(s) + slab) for s in np.unique(starts)]


def _cell_variances(mask: np.ndarray, residual: np.ndarray, spacing: np.ndarray, cell_mm: float,
                    min_voxels: int) -> np.ndarray:
    """Mean squared residual in each in-plane cell of ``cell_mm`` (whole slab deep) holding at least
    ``min_voxels`` uniform voxels: rows (y mm, x mm, voxels, mean), cell centres in array mm."""
    step = np.maximum(1, np.round(cell_mm / spacing[1:])).astype(int)
    n_cells = (mask.shape[1] // step[0] + 1, mask.shape[2] // step[1] + 1)
    cj = np.arange(mask.shape[1]) // step[0]
    ci = np.arange(mask.shape[2]) // step[1]
    cell = np.broadcast_to((cj[:, None] * n_cells[1] + ci[None, :])[None], mask.shape)[mask]
    counts = np.bincount(cell, minlength=n_cells[0] * n_cells[1])
    sums = np.bincount(cell, weights=residual[mask] ** 2, minlength=counts.size)
    keep = np.nonzero(counts >= min_voxels)[0]
    y = (keep // n_cells[1] + 0.5) * step[0] * spacing[1]
    x = (keep % n_cells[1] + 0.5) * step[1] * spacing[2]
    return np.stack([y, x, counts[keep], sums[keep] / counts[keep]], axis=1)


def _fit_level(cells: list[np.ndarray], slab_z_mm: list[float], s: NoiseSettings) -> NoiseLevel | None:
    """The :class:`NoiseLevel` fitted to the slabs' cell variances (weighted by their voxels): a shared
    in-plane quadratic of the log variance and an offset per slab, normalised so that its mean over the
    uniform voxels is 1; None (a uniform level) when fewer than ``level_min_cells`` cells."""
    rows = np.concatenate([np.column_stack([np.full(len(c), k), c]) for k, c in enumerate(cells)])
    if len(rows) < s.level_min_cells:
        return None
    slab, y, x, n, var = rows.T
    centre = (float(np.average(y, weights=n)), float(np.average(x, weights=n)))
    onehot = (slab[:, None] == np.arange(len(cells))[None, :]).astype(float)
    design = np.hstack([NoiseLevel.terms(y, x, centre), onehot])
    w = np.sqrt(n)
    coef = np.linalg.lstsq(design * w[:, None], np.log(var) * w, rcond=None)[0]
    norm = np.log(np.average(np.exp(design @ coef), weights=n))
    return NoiseLevel(inplane=tuple(float(c) for c in coef[:5]), centre_mm=centre,
                      slab_z_mm=tuple(float(z) for z in slab_z_mm),
                      slab_offsets=tuple(float(c - norm) for c in coef[5:]), max_ratio=s.max_level_ratio)


def estimate_noise(image: np.ndarray, spacing, settings: NoiseSettings | None = None) -> NoiseModel:
    """The noise model of a CT ``image`` (HU, (z, y, x)), from its uniform regions.

    The image is read in slabs of ``slab_mm`` (as many as ``max_voxels`` allows, spread evenly over
    it); in each, :func:`uniform_regions` are found (with ``margin_mm`` + 3 ``smoothing_mm`` of
    context above and below), detrended by their local mean (``detrend_mm``), and the products of
    their residuals are summed at every lag up to ``max_lag_mm``. The mean product at each lag,
    minus its mean over the lags between ``baseline_lag_mm`` and ``max_lag_mm`` (what detrending
    and slow trends leave at every lag), is ``C`` within ``baseline_lag_mm``. The residuals' mean
    square per in-plane cell of ``level_cell_mm`` gives the :class:`NoiseLevel`.

    Parameters
    ----------
    image : (Z, Y, X) ndarray of float
        CT values, HU.
    spacing : tuple of float, shape (3,)
        Voxel size (z, y, x), mm.
    settings : NoiseSettings, optional

    Returns
    -------
    NoiseModel

    Raises
    ------
    NoiseError
        Fewer than ``min_voxels`` uniform voxels, or no positive variance.
    """
    s = settings or NoiseSettings()
    sp = np.asarray(spacing, dtype=float)
    half_window = tuple(int(k) for k in np.floor(s.max_lag_mm / sp + 1e-9))
    nz = image.shape[0]
    slab = min(nz, max(int(round(s.slab_mm / sp[0])), 2 * half_window[0] + 1))
    n_slabs = max(1, int(s.max_voxels // (slab * image.shape[1] * image.shape[2])))
    context = int(np.ceil((s.margin_mm + 3.0 * s.smoothing_mm) / sp[0]))
    pairs = np.zeros(tuple(2 * k + 1 for k in half_window))
    products = np.zeros_like(pairs)
    cells, slab_z = [], []
    for z0, z1 in _slabs(nz, slab, n_slabs):
        lo, hi = max(0, z0 - context), min(nz, z1 + context)
        block = np.asarray(image[lo:hi], dtype=np.float64)
        regions = [r[z0 - lo:z1 - lo] for r in uniform_regions(block, sp, s)]
        mask, residual = _detrended(block[z0 - lo:z1 - lo], regions, sp, s.detrend_mm)
        del block, regions  # memory: the residuals are all the lag sums need
        if not mask.any():
            continue
        p, q = _lag_sums(mask, residual, half_window)
        pairs += p
        products += q
        cells.append(_cell_variances(mask, residual, sp, s.level_cell_mm, s.level_min_cell_voxels))
        slab_z.append(0.5 * (z0 + z1 - 1) * sp[0])
    n_used = int(round(pairs[half_window]))
    if n_used < s.min_voxels:
        raise NoiseError(f"noise not estimated: {n_used} voxels of uniform tissue found (fewer than "
                         f"noise.min_voxels = {s.min_voxels}); the standard errors are left empty")
    return NoiseModel(_autocovariance(pairs, products, sp, s), tuple(float(v) for v in sp),
                      level=_fit_level(cells, slab_z, s), n_voxels=n_used)


def _autocovariance(pairs: np.ndarray, products: np.ndarray, spacing: np.ndarray,
                    s: NoiseSettings) -> np.ndarray:
    """``C`` from the lag sums: mean product minus its mean over the baseline shell, zero beyond."""
    k = np.array(pairs.shape) // 2
    dz, dy, dx = np.meshgrid(*[(np.arange(n) - c) * d for n, c, d in zip(pairs.shape, k, spacing)], indexing="ij")
    lag_mm = np.sqrt(dz * dz + dy * dy + dx * dx)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = np.where(pairs > 0, products / pairs, 0.0)
    shell = (lag_mm >= s.baseline_lag_mm) & (lag_mm <= s.max_lag_mm) & (pairs > 0)
    baseline = float(np.average(mean[shell], weights=pairs[shell])) if shell.any() else 0.0
    cov = np.where((lag_mm < s.baseline_lag_mm) & (pairs > 0), mean - baseline, 0.0)
    if cov[tuple(k)] <= 0:
        raise NoiseError("noise not estimated: the uniform regions show no positive variance; "
                         "the standard errors are left empty")
    return cov
