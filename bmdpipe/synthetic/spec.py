"""Specification of a synthetic case: frozen dataclasses, all geometry in mm.

Every field left ``None`` is drawn at random from the case seed (see
:func:`bmdpipe.synthetic.case.make_case`), so ``make_case(seed)`` alone gives a varied but
reproducible case and a test can pin any parameter it depends on.
"""

from __future__ import annotations

from dataclasses import dataclass

from .ctphysics import XraySpec

__all__ = ["ScrewSpec", "PadSpec", "CaseSpec", "ORIENTATIONS", "MINDWAYS_RODS", "HA_RODS", "loosened_rule",
           "pad_definition", "BREACHES", "ROD_MATERIALS", "CAGE_MATERIALS"]

#: Certificate values (K2HPO4 mg/cm3, water mg/cm3) of one Mindways Model 3 CT phantom (science.md).
MINDWAYS_RODS: tuple[tuple[str, float, float], ...] = (
    ("A", -51.83, 1012.25),
    ("B", -53.40, 1056.95),
    ("C", 58.88, 1103.57),
    ("D", 157.05, 1119.52),
    ("E", 375.83, 923.20),
)
#: QRM-BDC 6-rod hydroxyapatite phantom, mg HA/cm3 (science.md).
HA_RODS: tuple[tuple[str, float], ...] = (
    ("HA0", 0.0), ("HA100", 100.0), ("HA200", 200.0), ("HA400", 400.0), ("HA600", 600.0), ("HA800", 800.0),
)

#: Patient orientations: name -> LPS direction of the (i, j, k) index axes (columns of Volume.direction).
#: HFS is the identity; FFS has rows running to the patient's right (-x) and slices feet->head
#: reversed (-z); HFP/FFP (prone) flip y as well. All are signed permutations.
ORIENTATIONS: dict[str, tuple[tuple[float, float, float], tuple[float, float, float], tuple[float, float, float]]] = {
    "HFS": ((1, 0, 0), (0, 1, 0), (0, 0, 1)),
    "HFS_zdown": ((1, 0, 0), (0, 1, 0), (0, 0, -1)),
    "FFS": ((-1, 0, 0), (0, 1, 0), (0, 0, -1)),
    "HFP": ((-1, 0, 0), (0, -1, 0), (0, 0, 1)),
    "FFP": ((1, 0, 0), (0, -1, 0), (0, 0, -1)),
}


def loosened_rule(halo_width_mm: float, halo_arc_fraction: float,
                  min_width_mm: float = 1.0, min_fraction: float = 0.5) -> bool:
    """Ground-truth loosening: radiolucent zone >= 1 mm (Xu 2025) over >= 50 % of the circumference
    (science.md default; the fraction is not standardised)."""
    return bool(halo_width_mm >= min_width_mm and halo_arc_fraction >= min_fraction)


@dataclass(frozen=True)
class ScrewSpec:
    """One titanium pedicle screw along the true pedicle axis.

    Attributes
    ----------
    vertebra : str
        Level name (must be in ``CaseSpec.levels``), e.g. ``'L4'``.
    side : str
        ``'left'`` (patient's left, +x) or ``'right'``.
    halo_width_mm : float
        Radiolucent band width, mm (0..3): around the thread crests, and on an augmented screw's cemented part
        from the mantle's outer surface outwards (at the cement-bone interface).
    halo_arc_fraction : float
        Fraction of the circumference that is lucent (0..1), centred at ``halo_angle_deg``.
    halo_angle_deg : float or None
        Centre of the lucent arc, degrees around the screw axis (0 = towards +z-ish, see
        screws.py); random when None.
    sclerotic_rim : bool
        ~1 mm band of dense bone (``rim_mg_cm3``) outside the halo, same arc ("double halo").
    diameter_mm : float
        Outer (thread) diameter, mm.
    length_mm : float or None
        Shaft length from the entry point, mm; None = to the pedicle-axis target (80 % body depth).
    rim_mg_cm3 : float
        Mineral density of the sclerotic rim (material units).
    cement_mantle_mm : float
        Cement augmentation: radial thickness of a PMMA/BaSO4 mantle beyond the thread crests around the
        distal half of the shaft (and as far beyond the tip), mm (real mantles ~2-5); 0 = not augmented.
        The cement displaces bone. Needs ``CaseSpec.xray``.
    breach : 'medial', 'lateral' or None
        The screw shifted across the pedicle so that its shaft leaves the pedicle's outer surface by
        ``breach_mm`` at the isthmus, towards the canal (medial) or the soft tissue (lateral).
    breach_mm : float
        How far the thread crests pass the pedicle's outer surface at the isthmus, mm (2-4 typical).
    """

    vertebra: str = "L4"
    side: str = "left"
    halo_width_mm: float = 0.0
    halo_arc_fraction: float = 1.0
    halo_angle_deg: float | None = None
    sclerotic_rim: bool = False
    diameter_mm: float = 6.5
    length_mm: float | None = None
    rim_mg_cm3: float = 600.0
    cement_mantle_mm: float = 0.0
    breach: str | None = None
    breach_mm: float = 3.0

    def __post_init__(self):
        if self.cement_mantle_mm < 0:
            raise ValueError(f"cement_mantle_mm must be >= 0 (0 = not augmented), got {self.cement_mantle_mm}")
        if self.breach not in BREACHES:
            raise ValueError(f"breach {self.breach!r} unknown; use one of {BREACHES}")
        if self.breach is not None and self.breach_mm <= 0:
            raise ValueError(f"breach_mm must be > 0 for a breach, got {self.breach_mm}")


#: Directions of a pedicle breach (:attr:`ScrewSpec.breach`); None = inside the pedicle.
BREACHES = (None, "medial", "lateral")
#: Rod materials (:attr:`CaseSpec.rod_material`) and interbody cage materials (:attr:`CaseSpec.cage`).
ROD_MATERIALS = ("titanium", "cobalt_chrome")
CAGE_MATERIALS = (None, "titanium", "peek")


@dataclass(frozen=True)
class PadSpec:
    """A calibration pad drawn from the range of real pads; ``None`` = drawn from the case seed.

    The pad is a block of one water-like resin under the patient, holding a row of z-parallel
    rods whose certificate is a shipped phantom definition (``phantoms/<definition>.yaml``). Real
    pads are not much taller than their rods (the Calgary pad in ``shared/data/real``: ~27 mm
    around ~19 mm rods, curved, pitch ~35 mm; science.md).

    Attributes
    ----------
    definition : str
        Shipped phantom definition whose rods (certificate values) the pad holds.
    rod_diameter_mm : float or None
        Rod diameter, mm (10-30).
    pitch_ratio : float or None
        Centre distance of neighbouring rods / rod diameter (1.3-2.2; Calgary ~1.8).
    height_mm : float or None
        Pad height, mm (20-60, at least the rods' diameter + 4 mm).
    end_margin_mm : float or None
        Pad beyond the first and last rod's edge, mm (5-25).
    sagitta_mm : float or None
        How far the pad's ends curve up towards the patient, mm: 0 = flat (half the pads), else
        up to 15 % of the half-length.
    offset_mm : float or None
        Lateral offset of the pad's centre from the patient's midline, mm (the midline stays
        over the pad).
    order : str or None
        Rod order along the row: ``file`` (the definition's), ``reversed`` or ``shuffled``.
    pad_hu_above_water : float or None
        The resin's HU above water, HU (0-30), unless a rod is hidden or faint.
    hidden_rod : str or None
        Rod made water-equivalent to the pad (the pad takes its HU: no edge); ``""`` = none.
        Drawn among the rods within 150 HU of water (a 0 mg/cm3 rod, Mindways A or B).
    faint_rod : str or None
        Rod whose contrast to the pad is below the image noise (0.3-1 noise SD); ``""`` = none.
    cupping_hu : float or None
        Beam-hardening cupping of the pad: its HU rise by ``cupping_hu * (x / 150 mm)^2`` with
        the lateral distance x from the patient's midline (0-6 HU).
    streak : bool or None
        A streak (+-60-200 HU, 1.5-3 mm wide) across one rod in a third of the slices.
    fov_cut_mm : float or None
        How far the pad's lateral end lies outside the field of view (its rods stay inside), mm;
        0 = none.
    """

    definition: str = "mindways-model3-ct"
    rod_diameter_mm: float | None = None
    pitch_ratio: float | None = None
    height_mm: float | None = None
    end_margin_mm: float | None = None
    sagitta_mm: float | None = None
    offset_mm: float | None = None
    order: str | None = None
    pad_hu_above_water: float | None = None
    hidden_rod: str | None = None
    faint_rod: str | None = None
    cupping_hu: float | None = None
    streak: bool | None = None
    fov_cut_mm: float | None = None


def pad_definition(name: str) -> dict:
    """The shipped phantom definition ``name`` (the YAML as a dict: model, material, rods)."""
    import yaml

    from ..config import PHANTOM_DIR

    return yaml.safe_load((PHANTOM_DIR / f"{name}.yaml").read_text())


@dataclass(frozen=True)
class CaseSpec:
    """What to generate. ``None`` = drawn from the seed.

    Attributes
    ----------
    levels : tuple of str
        Lumbar levels, superior to inferior.
    spacing_mm : (z, y, x) mm
        Voxel size. Geometry is in mm, so changing it keeps every structure in place.
    fov_mm : (x, y) mm
        In-plane field of view (centred on the patient).
    margin_z_mm : float
        Extra scan length above the top and below the bottom disc, mm.
    phantom : 'mindways', 'ha' or None
        Calibration phantom under the patient's back (a tall flat pad with a wide margin around
        its rods). Ignored when ``pad`` is given.
    pad : PadSpec or None
        A calibration pad drawn from the range of real pads instead (see :class:`PadSpec`).
    material : 'K2HPO4', 'HA' or None
        Mineral units of the truth; None = K2HPO4 unless phantom == 'ha'.
    noise_sd_hu : float or None
        Noise SD in HU (random 10-25).
    noise_corr_mm : float or None
        Correlation length of the noise (the sigma of its Gaussian kernel, mm; see ``noise_texture``);
        0 = white; None = drawn from the seed, 0.5-1.2 mm (kernel-like: soft-tissue to sharp kernels).
    noise_texture : str
        ``'gaussian'`` (noise low-passed by a Gaussian: every correlation positive) or ``'kernel'``
        (filtered back-projection's texture: ramp-shaped noise power in-plane, a negative ring in the
        autocorrelation); :func:`bmdpipe.synthetic.scanner.make_noise`.
    noise : bool
        False makes the noise-free twin of a case: the same seed and spec give the same anatomy,
        scanner, blur and artefacts without noise (with ``xray``: the expected photon counts, no
        Poisson or electronic noise).
    psf_fwhm_mm : float or None
        FWHM of the isotropic Gaussian PSF, mm (random 0.9-1.3).
    slope_hu_per_mg_cm3, intercept_hu : float or None
        Scanner response for bone mineral (sigma_CT / beta_CT for K2HPO4).
    kev : float or None
        Effective energy, keV (random 64-76).
    tissue_sd_hu : float
        Biological deviation of each soft tissue's HU (fat, muscle, csf, disc ...) but blood from
        the attenuation tables, SD in HU (default 3: patients' fat and muscle composition vary);
        0 = tissues exactly as the attenuation tables predict through the scanner response.
    blood_sd_hu : float
        The same for blood, SD in HU (default 8: unenhanced blood varies with the hematocrit,
        20-50 HU in science.md).
    slope_from_kev : bool
        True (default): when ``slope_hu_per_mg_cm3`` is None the bone slope follows the
        effective energy (``attenuation.mineral_slope_hu_per_mg_cm3(material, kev)``) times the
        scanner's gain, so tissue HU and bone slope are physically consistent, as on a real
        scanner. False draws the slope independently (not physical).
    cancellous_mg_cm3 : (lo, hi)
        Range from which each vertebra's central cancellous density is drawn.
    cancellous_rim_gain : float
        Relative density increase from centre to rim of the cancellous body (0.2 = +20 %).
    cortex_mg_cm3 : float or None
        Mineral density of the cortical shell (random 650-900).
    cortex_thickness_mm : float or None
        Cortical shell thickness (random 0.9-1.4).
    sclerosis : bool or None
        Put 1-3 focal dense blobs (3-6 mm, 400-800 mg/cm3) in cancellous bodies.
    screws : tuple of ScrewSpec
    metal_hu : float
        HU of titanium before blur/clipping.
    metal_saturation : bool
        Clip at 3071 HU (12-bit scale); False keeps the extended scale.
    streaks : bool
        Photon-starvation streaks between screws.
    fusion_rods : bool
        5.5 mm rods joining the screw heads of each side (post-op realism; metal, not screws).
    rod_material : str
        ``'titanium'`` or ``'cobalt_chrome'`` (CoCrMo; needs ``xray``): the fusion rods' alloy.
    crosslink : bool
        A 5 mm titanium transverse rod joining the left and right fusion rods midway along the construct
        (needs ``fusion_rods`` and two screws on each side).
    cage : 'titanium', 'peek' or None
        Two box cages (PLIF) in the disc space between the two uppermost levels that both hold a screw:
        hollow, filled with bone graft; PEEK cages carry tantalum marker pins. Needs ``xray``.
    xray : XraySpec or None
        Form the image by projection physics (:mod:`bmdpipe.synthetic.ctphysics`: spectrum, attenuation
        tables, Poisson noise, FBP) instead of the painted model (PSF, metal HU, painted streaks, added
        noise); then ``noise_sd_hu``, ``psf_fwhm_mm``, ``metal_hu`` and ``streaks`` do not apply, and there
        must be no phantom or pad (their rods are not modelled as materials).
    study_date : str or None
        StudyDate YYYYMMDD; None = a date in 2023-2025 drawn from the seed.
    orientation : str
        Key of :data:`ORIENTATIONS`.
    anatomy_jitter : bool
        Random vertebra size, few-degree rotations and lordosis; False = canonical anatomy.
    """

    levels: tuple[str, ...] = ("L3", "L4", "L5")
    spacing_mm: tuple[float, float, float] = (1.0, 0.8, 0.8)
    fov_mm: tuple[float, float] = (360.0, 260.0)
    margin_z_mm: float = 6.0
    phantom: str | None = "mindways"
    pad: PadSpec | None = None
    material: str | None = None
    noise_sd_hu: float | None = None
    noise_corr_mm: float | None = 0.3
    noise_texture: str = "gaussian"
    noise: bool = True
    psf_fwhm_mm: float | None = None
    slope_hu_per_mg_cm3: float | None = None
    intercept_hu: float | None = None
    kev: float | None = None
    tissue_sd_hu: float = 3.0
    blood_sd_hu: float = 8.0
    slope_from_kev: bool = True
    cancellous_mg_cm3: tuple[float, float] = (50.0, 180.0)
    cancellous_rim_gain: float = 0.2
    cortex_mg_cm3: float | None = None
    cortex_thickness_mm: float | None = None
    sclerosis: bool | None = None
    screws: tuple[ScrewSpec, ...] = ()
    metal_hu: float = 6500.0
    metal_saturation: bool = True
    streaks: bool = True
    fusion_rods: bool = False
    rod_material: str = "titanium"
    crosslink: bool = False
    cage: str | None = None
    xray: XraySpec | None = None
    study_date: str | None = None
    orientation: str = "HFS"
    anatomy_jitter: bool = True

    def __post_init__(self):
        if self.rod_material not in ROD_MATERIALS:
            raise ValueError(f"rod_material {self.rod_material!r} unknown; use one of {ROD_MATERIALS}")
        if self.cage not in CAGE_MATERIALS:
            raise ValueError(f"cage {self.cage!r} unknown; use one of {CAGE_MATERIALS}")
        if self.crosslink and not self.fusion_rods:
            raise ValueError("crosslink=True joins the fusion rods: set fusion_rods=True")
        if self.xray is None:
            physics_only = [name for name, on in (
                ("rod_material='cobalt_chrome'", self.rod_material != "titanium"), (f"cage={self.cage!r}", self.cage),
                ("cement_mantle_mm > 0", any(s.cement_mantle_mm > 0 for s in self.screws))) if on]
            if physics_only:
                raise ValueError(f"{', '.join(physics_only)} is formed only by projection physics (the painted "
                                 "model has no HU for it): set xray=XraySpec(...)")

    @property
    def resolved_material(self) -> str:
        if self.material is not None:
            return self.material
        if self.pad is not None:
            return pad_definition(self.pad.definition)["material"]
        return "HA" if self.phantom == "ha" else "K2HPO4"
