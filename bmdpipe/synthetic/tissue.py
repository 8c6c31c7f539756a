"""Tissue and part codes of the synthetic truth arrays."""

__all__ = ["TISSUE", "PART", "BONE_CODES", "TISSUE_MATERIALS", "HYDROXYAPATITE_G_CM3"]

#: ``Truth.tissue`` codes (uint8).
TISSUE: dict[str, int] = {
    "air": 0, "fat": 1, "soft_tissue": 2, "blood": 3, "cancellous": 4, "cortex": 5, "sclerosis": 6,
    "disc": 7, "canal": 8, "phantom_rod": 9, "phantom_body": 10, "table": 11, "metal": 12, "halo": 13,
    "sclerotic_rim": 14,
}
#: Tissue codes whose HU follows the bone calibration line ``intercept + slope * mineral``.
BONE_CODES: tuple[int, ...] = (4, 5, 6, 14)
#: ``Truth.part`` codes (uint8): which part of a vertebra a labelled voxel belongs to.
PART: dict[str, int] = {"none": 0, "body": 1, "pedicle_left": 2, "pedicle_right": 3, "posterior": 4}

#: What each tissue is made of for the projection simulator (:mod:`bmdpipe.synthetic.ctphysics`):
#: (basis material, partial density g/cm3) pairs. Bone codes add hydroxyapatite (``mineral`` mg/cm3 / 1000
#: g/cm3), which displaces its volume of the marrow. ICRU 44 densities; fat the ICRP adipose tissue
#: (0.92 g/cm3, as the README's phantomless calibration); elderly marrow about half yellow, i.e. fat; the
#: table a carbon-fibre board of ~0.5 g/cm3 water equivalent.
TISSUE_MATERIALS: dict[str, tuple[tuple[str, float], ...]] = {
    "air": (), "fat": (("adipose", 0.92),), "soft_tissue": (("water", 1.05),), "blood": (("water", 1.06),),
    "cancellous": (("water", 0.52), ("adipose", 0.47)), "cortex": (("water", 1.0),),
    "sclerosis": (("water", 1.0),), "disc": (("water", 1.07),), "canal": (("water", 1.007),),
    "phantom_rod": (("water", 1.0),), "phantom_body": (("water", 1.0),), "table": (("water", 0.5),),
    "metal": (("titanium", 4.43),), "halo": (("water", 1.03),), "sclerotic_rim": (("water", 1.0),),
}
#: density of hydroxyapatite, g/cm3 (the volume bone mineral displaces)
HYDROXYAPATITE_G_CM3 = 3.16
