"""Tissue and part codes of the synthetic truth arrays."""

__all__ = ["TISSUE", "PART", "BONE_CODES", "TISSUE_MATERIALS", "HYDROXYAPATITE_G_CM3", "CEMENT_BASO4_MASS_FRACTION",
           "PHYSICS_ONLY_CODES"]

#: ``Truth.tissue`` codes (uint8).
TISSUE: dict[str, int] = {
    "air": 0, "fat": 1, "soft_tissue": 2, "blood": 3, "cancellous": 4, "cortex": 5, "sclerosis": 6,
    "disc": 7, "canal": 8, "phantom_rod": 9, "phantom_body": 10, "table": 11, "metal": 12, "halo": 13,
    "sclerotic_rim": 14, "cement": 15, "cobalt_chrome": 16, "peek": 17, "tantalum": 18, "graft": 19,
}
#: Tissue codes whose HU follows the bone calibration line ``intercept + slope * mineral``.
BONE_CODES: tuple[int, ...] = (4, 5, 6, 14, 19)
#: Hardware only the projection simulator forms (cement, CoCr, PEEK, tantalum; the painted model has no HU for them).
PHYSICS_ONLY_CODES: tuple[int, ...] = (15, 16, 17, 18)
#: ``Truth.part`` codes (uint8): which part of a vertebra a labelled voxel belongs to.
PART: dict[str, int] = {"none": 0, "body": 1, "pedicle_left": 2, "pedicle_right": 3, "posterior": 4}

#: BaSO4 share of augmentation cement by mass: Kyphon HV-R (Medtronic IFU M708348B154E, "a PMMA that contains
#: approximately 30% barium sulfate"; Kurtz et al., Biomaterials 26 (2005) 3699: KyphX HV-R with 30 % BaSO4).
#: That is the powder's share; with its liquid monomer (20 g powder, 9 g liquid) the cured cement holds ~21 %.
CEMENT_BASO4_MASS_FRACTION = 0.30
#: Pore-free density of that cement, g/cm3: PMMA (1.18) and BaSO4 (4.5) mixed by volume.
_CEMENT_G_CM3 = 1.0 / ((1.0 - CEMENT_BASO4_MASS_FRACTION) / 1.18 + CEMENT_BASO4_MASS_FRACTION / 4.5)

#: What each tissue is made of for the projection simulator (:mod:`bmdpipe.synthetic.ctphysics`):
#: (basis material, partial density g/cm3) pairs. Bone codes add hydroxyapatite (``mineral`` mg/cm3 / 1000
#: g/cm3), which displaces its volume of the marrow. ICRU 44 densities; fat the ICRP adipose tissue
#: (0.92 g/cm3, as the README's phantomless calibration); elderly marrow about half yellow, i.e. fat; the
#: table a carbon-fibre board of ~0.5 g/cm3 water equivalent. Hardware: Ti-6Al-4V, CoCrMo, PEEK and tantalum at
#: their nominal densities (:data:`bmdpipe.synthetic.ctphysics.MATERIALS`); cement below; bone graft (the filling
#: of a cage, morselized bone in blood) water plus its mineral.
TISSUE_MATERIALS: dict[str, tuple[tuple[str, float], ...]] = {
    "air": (), "fat": (("adipose", 0.92),), "soft_tissue": (("water", 1.05),), "blood": (("water", 1.06),),
    "cancellous": (("water", 0.52), ("adipose", 0.47)), "cortex": (("water", 1.0),),
    "sclerosis": (("water", 1.0),), "disc": (("water", 1.07),), "canal": (("water", 1.007),),
    "phantom_rod": (("water", 1.0),), "phantom_body": (("water", 1.0),), "table": (("water", 0.5),),
    "metal": (("titanium", 4.43),), "halo": (("water", 1.03),), "sclerotic_rim": (("water", 1.0),),
    "cement": (("pmma_baso4", _CEMENT_G_CM3 * (1.0 - CEMENT_BASO4_MASS_FRACTION)),
               ("barium_sulfate", _CEMENT_G_CM3 * CEMENT_BASO4_MASS_FRACTION)),
    "cobalt_chrome": (("cobalt_chrome", 8.3),), "peek": (("peek", 1.32),), "tantalum": (("tantalum", 16.6),),
    "graft": (("water", 1.0),),
}
#: density of hydroxyapatite, g/cm3 (the volume bone mineral displaces)
HYDROXYAPATITE_G_CM3 = 3.16
