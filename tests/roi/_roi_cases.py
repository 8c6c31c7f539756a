"""Cached synthetic cases shared by the anatomy tests (generation takes a few seconds)."""

from functools import lru_cache

from bmdpipe.synthetic.case import make_case
from bmdpipe.synthetic.spec import CaseSpec


@lru_cache(maxsize=4)
def case(seed: int, orientation: str = "HFS", sclerosis: bool | None = None):
    return make_case(seed, CaseSpec(orientation=orientation, sclerosis=sclerosis))
