"""Image noise of a CT series: its spatial autocovariance, and the variance of an ROI's mean.

CT noise is not independent from voxel to voxel: the reconstruction kernel correlates it in-plane
over about a millimetre (its noise power spectrum is the kernel's), and the slice sensitivity
profile and slice overlap correlate it through-plane. The variance of the mean of an ROI's ``N``
voxels is then not ``sigma^2 / N`` but the sum of the noise autocovariance ``C`` over every pair
of its voxels,

    var(mean) = (1 / N^2) sum_i sum_j C(x_i - x_j) = (1 / N^2) sum_d C(d) A(d) = sigma^2 / N_eff,

where ``A(d)`` is the number of voxel pairs of the ROI at lag ``d`` (the autocorrelation of its
mask, by FFT on its cropped box) and ``N_eff`` the ROI's effective number of independent samples
(Bayley and Hammersley 1946). The sum runs over the ROI's real pairs rather than using a
correlation length and a shape factor, because no simple model of ``C`` holds for CT: filtered
back-projection gives ``C`` a positive core and a negative ring (its noise power is near zero at
zero frequency), and the pair sum is exact for any ``C`` and any ROI shape (a thin pedicle ROI, a
wide body ROI, a long screw trajectory).

``C`` is estimated from the series itself (:func:`estimate_noise`), in regions of uniform tissue:
fat, and muscle and other water-like soft tissue (blood, organs, a phantom's body), chosen on a
smoothed copy of the image by HU range, with edges between tissues of one range (muscle against a
phantom's body, the spinal canal) cut out by their gradient, and eroded ``margin_mm`` away from
every boundary. Each region's slow trend (beam hardening, tissue composition) is removed by
subtracting its local mean (over that region only); the autocovariance of what remains is the
mean product of voxel pairs at each lag, both voxels in a region (two FFT correlations per slab
of the image). Subtracting a local mean also removes a little of the noise's own low frequencies,
lowering the estimate by an almost constant amount at every short lag; that offset, with what is
left of slow trends, is measured on a shell of lags (``baseline_lag_mm`` to ``max_lag_mm``) where
the noise no longer correlates, and subtracted; ``C`` beyond ``baseline_lag_mm`` is taken as zero
(for a filtered back-projection kernel this drops the far, negative tail of its ring: the standard
error of a large ROI comes out somewhat conservative). This is the noise power spectrum
measurement of ICRU Report 87 (detrended uniform regions) carried out in the lag domain, in 3-D,
on the patient image: no phantom scan is needed, and ``C`` follows the series' own kernel, slice
thickness and spacing.

The noise level is not the same everywhere: behind more attenuation (the middle of the body, the
spine) there are fewer photons, so more noise, and tube current modulation changes it along the
scan. The kernel sets the correlation, which stays; the level is mapped (:class:`NoiseLevel`): the
residuals' mean square per 10 mm cell of the uniform regions is fitted by a smooth surface (log
variance quadratic in-plane, one level per slab, linear between slabs), and each ROI's variance
is scaled to the level at its centroid. The spread of the ROI's own voxels (``hu_sd``) is not used:
in bone it holds the density's own variation (a pedicle ROI C runs from the pedicle into the body;
real trabecular texture) besides the noise, and a small ROI's own SD is too uncertain.

References
----------
Bayley GV, Hammersley JM. The "effective" number of independent observations in an
autocorrelated time series. J R Stat Soc Suppl 8:184-197 (1946).
ICRU Report 87: Radiation dose and image-quality assessment in computed tomography. J ICRU
12(1) (2012), ch. 5 (noise power spectrum from detrended uniform regions).
Boedeker KL, Cooper VN, McNitt-Gray MF. Application of the noise power spectrum in modern
diagnostic MDCT: part I. Measurement of noise power spectra and noise equivalent quanta. Phys
Med Biol 52:4027-4046 (2007).
Dolly S, Chen HC, Anastasio M, Mutic S, Li H. Practical considerations for noise power spectra
estimation for clinical CT scanners. J Appl Clin Med Phys 17(3):392-407 (2016).
"""

from .estimate import estimate_noise, uniform_regions
from .model import NoiseLevel, NoiseModel, mask_pair_counts

__all__ = ["NoiseLevel", "NoiseModel", "estimate_noise", "mask_pair_counts", "uniform_regions"]
