"""The noise autocovariance from uniform regions, and the variance of ROI means it implies.

Ground truth is computed independently: pair counts by brute force, the autocovariance of
Gaussian-filtered white noise from the filter itself, the variance of box means by Monte Carlo over
many boxes of one noise field, and on a synthetic case the error of each ROI mean against its
noise-free twin.
"""

import dataclasses

import numpy as np
import pytest
from scipy import ndimage as ndi

from bmdpipe.config import NoiseSettings, load_settings
from bmdpipe.errors import NoiseError
from bmdpipe.noise import NoiseModel, estimate_noise, mask_pair_counts, uniform_regions

SPACING = (1.0, 0.8, 0.8)


def _phantom(shape=(48, 128, 128)) -> np.ndarray:
    """Noise-free HU: a 'muscle' half (50 HU) holding a 'phantom body' block (10 HU: an edge within the
    soft-tissue range) and a 'fat' half (-100 HU)."""
    img = np.full(shape, 50.0)
    img[:, :, shape[2] // 2:] = -100.0
    img[:, 20:60, 15:45] = 10.0
    return img


def _filtered_noise(shape, sigma_vox, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Gaussian-filtered white noise (periodic) of unit-variance input, and its exact autocovariance
    at lags up to 8 voxels (the filter's own autocorrelation, from filtering a delta)."""
    rng = np.random.default_rng(seed)
    noise = ndi.gaussian_filter(rng.standard_normal(shape), sigma_vox, mode="wrap")
    delta = np.zeros((17, 17, 17))
    delta[8, 8, 8] = 1.0
    kernel = ndi.gaussian_filter(delta, sigma_vox, mode="constant")
    from scipy.signal import fftconvolve

    acov = fftconvolve(kernel, kernel[::-1, ::-1, ::-1], mode="same")
    return noise, acov


def test_pair_counts_match_brute_force():
    """A(d) = number of voxel pairs of the mask at lag d, counted one pair at a time."""
    rng = np.random.default_rng(3)
    mask = rng.random((4, 5, 6)) > 0.5
    got = mask_pair_counts(mask, (2, 3, 7))
    pts = np.argwhere(mask)
    want = np.zeros((5, 7, 15))
    for p in pts:
        for q in pts:
            d = q - p
            if abs(d[0]) <= 2 and abs(d[1]) <= 3 and abs(d[2]) <= 7:
                want[d[0] + 2, d[1] + 3, d[2] + 7] += 1
    np.testing.assert_array_equal(got, want)
    assert got[2, 3, 7] == mask.sum()


def test_white_noise_is_worth_one_sample_per_voxel():
    """Independent voxels: var(mean) = sigma^2 / N and N_eff = N, whatever the ROI's shape."""
    model = NoiseModel.white(20.0, SPACING)
    mask = np.zeros((5, 9, 9), bool)
    mask[1:4, 2:7, 3:5] = True
    assert model.variance_of_mean(mask) == pytest.approx(400.0 / 30)
    assert model.effective_samples(mask) == pytest.approx(30.0)
    assert np.isnan(model.variance_of_mean(np.zeros((2, 2, 2), bool)))


def test_gaussian_filtered_noise_variance_of_box_means():
    """The variance of a box mean from the estimated autocovariance matches the filter's exact one and
    a Monte Carlo over 200 boxes of the noise field, within 10 and 20 %; N_eff is far below N."""
    sigma_vox = (1.0, 1.2, 1.2)  # ~1 mm kernel sigma on (1, 0.8, 0.8) mm voxels
    noise, acov = _filtered_noise((48, 128, 128), sigma_vox, seed=1)
    scale = 15.0 / np.sqrt(acov[8, 8, 8])
    image = _phantom() + scale * noise
    model = estimate_noise(image, SPACING, NoiseSettings(slab_mm=48.0))
    exact = NoiseModel(acov * scale ** 2, SPACING)
    assert model.sd_hu == pytest.approx(15.0, rel=0.05)
    box = np.ones((4, 8, 8), bool)
    assert model.variance_of_mean(box) == pytest.approx(exact.variance_of_mean(box), rel=0.10)
    assert model.effective_samples(box) < box.sum() / 5
    field = scale * ndi.gaussian_filter(np.random.default_rng(2).standard_normal((40, 160, 160)), sigma_vox,
                                        mode="wrap")
    means = field.reshape(10, 4, 20, 8, 20, 8).mean(axis=(1, 3, 5)).ravel()
    assert model.variance_of_mean(box) == pytest.approx(np.var(means), rel=0.20)
    assert model.correlation_mm == pytest.approx(exact.correlation_mm, rel=0.05)


def test_white_noise_estimate_gives_n_eff_near_n():
    """On white noise the estimate finds no correlation: N_eff of a box within 10 % of its voxel count."""
    image = _phantom() + np.random.default_rng(4).normal(0.0, 12.0, (48, 128, 128))
    model = estimate_noise(image, SPACING, NoiseSettings(slab_mm=48.0))
    box = np.ones((5, 10, 10), bool)
    assert model.sd_hu == pytest.approx(12.0, rel=0.03)
    assert model.effective_samples(box) == pytest.approx(500.0, rel=0.10)


def test_edges_between_tissues_of_one_range_are_not_taken_for_noise():
    """The 40 HU step between 'muscle' and 'phantom body' lies inside the soft-tissue range: the regions
    leave it out, so the estimate still matches the noise (with the edge counted as noise, the box's
    variance would come out several times too large)."""
    image = _phantom()
    regions = uniform_regions(image + np.random.default_rng(5).normal(0, 10, image.shape), SPACING, NoiseSettings())
    edge = np.zeros(image.shape, bool)
    edge[:, 18:62, 13:47] = True
    edge[:, 22:58, 17:43] = False
    assert not (regions[1] & edge).any()
    assert regions[0].sum() > 0.5 * (image == -100).sum() and regions[1].sum() > 0.3 * (image > 0).sum()


def test_no_uniform_tissue_is_an_error():
    """An image of bone only: NoiseError (the pipeline leaves the standard errors empty)."""
    image = 600.0 + np.random.default_rng(6).normal(0, 10, (20, 40, 40))
    with pytest.raises(NoiseError, match="uniform tissue"):
        estimate_noise(image, SPACING)


@pytest.mark.parametrize("texture, seed", [("gaussian", 31), ("kernel", 32)])
def test_reported_se_holds_on_a_case_with_correlated_noise(texture, seed):
    """On a synthetic case with kernel-like correlated noise, the ROI means' error against the noise-free
    twin has an RMS of 0.7-1.4 times the reported SE over 4 noise draws (60 ROIs); the former SE, SD /
    sqrt(n), is more than 1.5 times too small."""
    from bmdpipe.anatomy import vertebrae_from_label_map
    from bmdpipe.measure import measure_roi, roi_values
    from bmdpipe.results import Calibration, Material
    from bmdpipe.roi import place_rois
    from bmdpipe.synthetic import CaseSpec, make_case
    from bmdpipe.synthetic.scanner import make_noise

    settings = load_settings()
    spec = CaseSpec(noise_corr_mm=None, noise_texture=texture)
    case = make_case(seed, spec)
    twin = make_case(seed, dataclasses.replace(spec, noise=False))
    sc = case.truth.scanner
    assert 0.5 <= sc.noise_corr_mm <= 1.2
    cal = Calibration("truth", "", Material(sc.material), sc.slope_hu_per_mg_cm3, sc.intercept_hu)
    rois = place_rois(case.volume, vertebrae_from_label_map(case.labels, case.volume, settings.anatomy), settings)
    ratios, old = [], []
    for draw in range(4):
        noisy = twin.volume.array + make_noise(twin.volume.shape, twin.volume.spacing, sc.noise_sd_hu,
                                               sc.noise_corr_mm, np.random.default_rng(draw), texture)
        vol = twin.volume.with_array(noisy)
        model = estimate_noise(vol.array, vol.spacing, settings.noise)
        for r in rois:
            m = measure_roi(vol, r, cal, model)
            err = (m.hu_mean - float(roi_values(twin.volume.array, r).mean())) / sc.slope_hu_per_mg_cm3
            ratios.append(err / m.vbmd_se_mg_cm3)
            old.append(err / (m.vbmd_sd_mg_cm3 / np.sqrt(m.n_voxels)))
    rms = float(np.sqrt(np.mean(np.square(ratios))))
    assert len(ratios) == 60
    assert 0.7 <= rms <= 1.4
    assert float(np.sqrt(np.mean(np.square(old)))) > 1.5
