"""Density + morphology masking of cortex and sclerosis (adaptive, PSF clearance)."""

import numpy as np
import pytest
from scipy import ndimage as ndi

from bmdpipe.config import MaskingSettings
from bmdpipe.roi.masking import dense_mask, mask_roi

SP = (0.8, 0.8, 0.8)


def _shell_phantom(cancellous_hu, cortex_hu=1000.0, noise=15.0, seed=0, psf_sigma_mm=0.5):
    """Sphere of radius 12 mm: 1 mm cortex shell around cancellous bone, blurred + noise."""
    n = 40
    zz, yy, xx = np.mgrid[:n, :n, :n]
    r = np.sqrt(((zz - n / 2) ** 2 + (yy - n / 2) ** 2 + (xx - n / 2) ** 2)) * SP[0]
    inside = r <= 12.0
    cortex = inside & (r > 11.0)
    truth = np.where(cortex, cortex_hu, np.where(inside, cancellous_hu, 40.0)).astype(np.float32)
    img = ndi.gaussian_filter(truth, psf_sigma_mm / SP[0])
    img = img + np.random.default_rng(seed).normal(0, noise, img.shape).astype(np.float32)
    return img, truth, inside, cortex, r


@pytest.mark.parametrize("cancellous_hu", [60.0, 250.0])
def test_cortex_removed_with_clearance_at_any_density(cancellous_hu):
    """Kept voxels lie >= margin inside the cortex, whatever the cancellous density (no global HU cut)."""
    s = MaskingSettings()
    img, truth, inside, cortex, r = _shell_phantom(cancellous_hu)
    kept, n_exc = mask_roi(img, inside, inside, SP, s)
    assert n_exc > 0
    assert r[kept].max() <= 11.0 - s.margin_mm + 1e-6
    # most of the deep cancellous bone is kept (noise alone does not cut voxels)
    deep = inside & (r < 11.0 - s.margin_mm - 1.5)
    assert kept[deep].mean() > 0.99
    # and the kept mean equals the truth within 1 HU-equivalent of noise
    assert img[kept].mean() == pytest.approx(truth[kept].mean(), abs=1.5)


def test_sclerotic_focus_excluded():
    s = MaskingSettings()
    img, truth, inside, cortex, r = _shell_phantom(120.0, seed=1)
    n = img.shape[0]
    zz, yy, xx = np.mgrid[:n, :n, :n]
    focus = ((zz - 20) ** 2 + (yy - 24) ** 2 + (xx - 20) ** 2) * SP[0] ** 2 <= 2.0 ** 2
    img = img + ndi.gaussian_filter(focus * 600.0, 0.5 / SP[0]).astype(np.float32)
    kept, _ = mask_roi(img, inside, inside, SP, s)
    dist = ndi.distance_transform_edt(~focus, sampling=SP)
    assert dist[kept].min() > s.margin_mm
    assert img[kept].mean() == pytest.approx(120.0, abs=2.0)


def test_dense_threshold_adapts_to_reference():
    s = MaskingSettings()
    for level in (50.0, 300.0):
        img = np.full((10, 10, 10), level, np.float32)
        _, thr, ref = dense_mask(img, np.ones(img.shape, bool), SP, s)
        assert ref == pytest.approx(level)
        assert thr == pytest.approx(level + s.dense_min_delta_hu)


def test_empty_candidates():
    img = np.zeros((5, 5, 5), np.float32)
    kept, n = mask_roi(img, np.zeros(img.shape, bool), np.ones(img.shape, bool), SP, MaskingSettings())
    assert not kept.any() and n == 0


def test_reference_cap_for_cortex_dominated_roi():
    """A candidate set made mostly of dense bone (a pedicle at 3 mm) is cut when capped by the body's reference."""
    s = MaskingSettings()
    img = np.full((12, 12, 12), 500.0, np.float32)  # partial-volume cortex everywhere
    img[5:7, 5:7, 5:7] = 150.0
    cand = np.ones(img.shape, bool)
    sup = np.pad(np.ones((10, 10, 10), bool), 1)
    kept_free, _ = mask_roi(img, cand, sup, (3.0, 3.0, 3.0), s)
    assert img[kept_free].mean() > 400  # own mode is the cortex: nothing looks dense
    kept, n_exc = mask_roi(img, cand, sup, (3.0, 3.0, 3.0), s, reference_cap_hu=120.0 + 150.0)
    assert n_exc > 0 and (not kept.any() or img[kept].max() < 500)
