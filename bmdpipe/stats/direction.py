"""Which values of a predictor point to the outcome (kept apart so that ``bmdpipe stats --help``
does not import numpy)."""

from __future__ import annotations

from enum import Enum

__all__ = ["Direction"]


class Direction(str, Enum):
    """Which values of the predictor point to the outcome."""

    lower = "lower"  # lower values predict the outcome (bone density and loosening)
    higher = "higher"
    auto = "auto"  # from the group medians: lower when the positives' median is below the negatives'
