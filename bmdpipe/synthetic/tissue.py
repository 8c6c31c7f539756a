"""Tissue and part codes of the synthetic truth arrays."""

__all__ = ["TISSUE", "PART", "BONE_CODES"]

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
