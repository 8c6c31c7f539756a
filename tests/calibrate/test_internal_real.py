"""Phantomless reference tissues on the real 3 mm TotalSegmentator CT, checked against its labels.

The label map is TotalSegmentator v2 "total" (example_seg_fast_force_split.nii.gz, same grid
as the CT): 52 aorta, 63 inferior vena cava, 65-68 iliac arteries and veins, 80-85 gluteal
muscles, 86/87 autochthon (paraspinal), 88/89 iliopsoas. Their positions were checked on the
CT (aorta left-anterior and IVC right-anterior of the bodies, autochthon posterior, each side
where its name says). Subcutaneous fat and air outside the body carry no label.
"""

import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "anatomy"))
from _realdata import TS, need, nifti_volume  # noqa: E402

from bmdpipe.calibrate.attenuation import mineral_slope_hu_per_mg_cm3  # noqa: E402
from bmdpipe.calibrate.internal import _tissue_masks, calibrate_internal, energy_prior, fit_tissues  # noqa: E402
from bmdpipe.config import CalibrationSettings  # noqa: E402

MUSCLES = list(range(80, 90))
PSOAS = [88, 89]
PARASPINAL = [86, 87]
VESSELS = [52, 63, 65, 66, 67, 68]


@pytest.fixture(scope="module")
def real_ct():
    ct = nifti_volume(need(TS / "example_ct.nii.gz"))
    labels = nifti_volume(need(TS / "example_seg_fast_force_split.nii.gz")).array.astype(int)
    assert labels.shape == ct.shape
    return ct, labels


@pytest.mark.real_data
def test_reference_tissues_lie_in_their_anatomy(real_ct):
    """Fat and air are sampled outside every labelled organ (>= 99 %), muscle inside the iliopsoas
    (>= 80 %), and blood, when used, inside the great vessels (>= 70 %): a psoas muscle, which has the
    HU of unenhanced blood, must not be taken for it."""
    ct, labels = real_ct
    _, masks, step, region = _tissue_masks(ct, CalibrationSettings())
    assert tuple(step) == (1, 1, 1)  # 3 mm voxels: sampled at full resolution, so the masks align

    def share(name, ids):
        return float(np.isin(labels[masks[name]], ids).mean())

    assert share("fat", [0]) >= 0.99 and share("air", [0]) >= 0.99
    assert region == "psoas" and share("muscle", PSOAS) >= 0.80
    if "blood" in masks:
        assert share("blood", VESSELS) >= 0.70


@pytest.mark.real_data
def test_phantomless_calibration_of_the_real_ct(real_ct):
    """The calibration runs on the real scan with air, fat and muscle at least, each near the HU
    TotalSegmentator's own regions give (fat is unlabelled: the typical -90..-120 HU); the muscle is
    the psoas (inside its labels' IQR), not the fat-infiltrated paraspinal muscles (their median is
    below the psoas' 25th percentile on this scan). The tissues agree with the attenuation model:
    fit RMS < 1.5 HU at an effective energy in the 120 kVp clinical range (62-78 keV). With the
    ICRU-44 adipose tissue (0.95 g/cm3, -77 HU at 70 keV) and the paraspinal muscle the same scan
    gave RMS 2.2 HU at 58.5 keV, a mineral slope 30 % steeper."""
    ct, labels = real_ct
    cal = calibrate_internal(ct)
    hu = {r.name: r.hu_mean for r in cal.references}
    assert {"air", "fat", "muscle"} <= set(hu)
    assert hu["air"] == pytest.approx(-1000.0, abs=10.0)
    assert -120.0 <= hu["fat"] <= -90.0
    psoas, paraspinal = ct.array[np.isin(labels, PSOAS)], ct.array[np.isin(labels, PARASPINAL)]
    assert cal.details["muscle_region"] == "psoas"
    assert np.percentile(psoas, 25) <= hu["muscle"] <= np.percentile(psoas, 75)
    assert np.median(paraspinal) < np.percentile(psoas, 25)
    assert cal.details["rms_hu"] < 1.5
    assert 62.0 <= cal.details["kev"] <= 78.0


@pytest.mark.real_data
def test_unenhanced_blood_does_not_pull_the_real_fit(real_ct):
    """On thinner slices the aorta is found and used. Its real unenhanced HU (TotalSegmentator's aorta
    label: ~41 HU) lies ~15 HU below the ICRU-44 blood table; weighted as blood
    (``internal_blood_sd_hu``) it moves the mineral slope of this scan's fit by < 4 % (weighted like
    fat and muscle, 3 HU, it moved it 8 %)."""
    ct, labels = real_ct
    s = CalibrationSettings()
    cal = calibrate_internal(ct, s)
    tissues = {r.name: r.hu_mean for r in cal.references}
    assert "blood" not in tissues
    prior = energy_prior(s, kvp=ct.meta.kvp)

    def slope(hu):
        fit = fit_tissues(hu, s, kev_prior=prior[0], kev_prior_sd_kev=prior[1])
        return fit.b * mineral_slope_hu_per_mg_cm3("K2HPO4", fit.kev)

    aorta = float(np.median(ct.array[labels == 52]))
    assert 30.0 <= aorta <= 50.0
    assert slope({**tissues, "blood": aorta}) == pytest.approx(slope(tissues), rel=0.04)
