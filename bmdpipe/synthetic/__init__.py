"""Digital lumbar-spine CT with exact ground truth (tests, sample data, benchmarks).

Usage: ``case = make_case(seed, CaseSpec(...))`` (every ``CaseSpec`` field has a default; ``None``
fields are drawn from the seed, so ``make_case(7)`` alone is a varied, reproducible case) returns a
frozen ``SyntheticCase`` with ``case.volume`` (a :class:`bmdpipe.volume.Volume`: noisy, blurred HU
float32 clipped to [-1024, 3071], LPS geometry, ``meta.series_uid``), ``case.labels`` (int16 VerSe
ids on the same grid, L3=22, L4=23, L5=24, whole vertebra incl. posterior elements) and
``case.truth`` (:class:`Truth`: ``mineral_mg_cm3`` noise-free mineral density in the case material,
0 outside bone; ``tissue`` codes of :data:`TISSUE` (0 air, 1 fat, 2 soft tissue, 3 blood,
4 cancellous, 5 cortex, 6 sclerosis, 7 disc, 8 canal, 9 rod, 10 phantom body, 11 table, 12 metal,
13 halo, 14 sclerotic rim, 15-19 construct hardware below); ``part`` (1 body, 2 left pedicle, 3 right pedicle, 4 posterior);
``hu_clean`` (noise-free un-blurred HU); ``scanner`` (slope/intercept of ``HU = intercept +
slope * mineral``, kev, noise, PSF, tissue HU); ``vertebrae`` (body centre/size, central density,
``pedicles`` = left/right :class:`bmdpipe.results.PedicleAxis` in LPS); ``phantom`` (rods with
nominal values, centre line, radius and true HU); ``screws``; ``phi``). Screws:
``CaseSpec(screws=(ScrewSpec("L4", "left", halo_width_mm=1.5, halo_arc_fraction=0.6,
sclerotic_rim=True), ScrewSpec("L4", "right")))``. Geometry is in mm, so ``spacing_mm=(2.0, 1.5, 1.5)``
gives a fast coarse case with the same anatomy. Files: ``write_dicom_series(case, folder)`` (one
file per slice, shuffled names, localizer and stray files), ``write_labels_nifti(case, path)``,
``write_truth(case, path)`` and ``write_sample_data(folder)``; ``case_scanner(seed, spec)`` is
``case.truth.scanner`` without making the image. Mindways rods follow the
two-component model exactly (sigma_ref = slope + 0.2174, beta_ref = intercept - 999.6,
rod HU = water + sigma_ref * K2HPO4 + beta_ref); HA rods follow ``intercept + slope * HA``.
The scanner is physically consistent: an effective energy (kev) sets the HU of soft tissues
(``bmdpipe.calibrate.attenuation.hu_of``, plus a few HU of biological variation) and the bone
slope, and a small gain/offset error of the HU scale applies to all materials.
Orientations (``CaseSpec.orientation``): HFS (identity), HFS_zdown, FFS, HFP, FFP; anatomy is
defined in LPS, so only the array layout / direction changes. ``CaseSpec(fusion_rods=True)`` adds
titanium rods between the screw heads (``rod_material="cobalt_chrome"``, ``crosslink=True``: a transverse rod
joining them). With ``xray``: ``ScrewSpec(cement_mantle_mm=3.0)`` augments a screw with PMMA/BaSO4 cement
around the distal half of its shaft (its halo then lies at the cement-bone interface there), and
``CaseSpec(cage="peek")`` (or ``"titanium"``) puts two box cages with bone graft (PEEK: tantalum markers) in
the disc between the first two instrumented levels; ``ScrewSpec(breach="medial")`` (or ``"lateral"``) shifts
a screw through the pedicle wall. Their truth: ``truth.screws`` (``augmented``, ``cement_mantle_mm``,
``breach``, ``breach_mm``), ``truth.artefacts`` (``fusion_rods``, ``crosslink``, ``cages``), tissue codes
15 cement, 16 cobalt-chrome, 17 PEEK, 18 tantalum, 19 bone graft. ``CaseSpec(pad=PadSpec("qrm-bdc-6"))`` draws the calibration pad
from the range of real pads instead (size, curvature, rod order, a water-equivalent or faint rod,
cupping, a streak, the field of view cutting its end; see :class:`PadSpec`).
``CaseSpec(xray=XraySpec(kernel="sharp"), phantom=None)`` forms the image by projection physics instead of
the painted model (:mod:`bmdpipe.synthetic.ctphysics`: spekpy spectrum, xraydb attenuation, Poisson noise,
astra FBP; ~1.4 s a slice on one core, ``make_case(..., workers=2)`` spreads the slices). Modules: spec,
scanner, grid, spine, phantom, pad, screws, cage, ctphysics, case, truth, tissue, dicom.
"""

from .case import HU_MAX, HU_MIN, case_scanner, make_case
from .dicom import write_dicom_series, write_labels_nifti, write_sample_data, write_truth
from .phantom import PhantomTruth, RodTruth
from .scanner import ScannerResponse, tissue_hu
from .screws import ScrewTruth
from .ctphysics import XraySpec
from .spec import HA_RODS, MINDWAYS_RODS, ORIENTATIONS, CaseSpec, PadSpec, ScrewSpec, loosened_rule
from .tissue import BONE_CODES, PART, TISSUE
from .truth import SyntheticCase, Truth, VertebraTruth

__all__ = [
    "make_case", "case_scanner", "write_dicom_series", "write_labels_nifti", "write_truth", "write_sample_data", "CaseSpec", "PadSpec", "ScrewSpec", "SyntheticCase", "Truth", "VertebraTruth", "ScrewTruth",
    "PhantomTruth", "RodTruth", "ScannerResponse", "tissue_hu", "TISSUE", "PART", "BONE_CODES",
    "ORIENTATIONS", "MINDWAYS_RODS", "HA_RODS", "loosened_rule", "HU_MIN", "HU_MAX", "XraySpec",
]
