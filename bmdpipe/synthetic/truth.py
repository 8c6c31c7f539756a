"""Ground truth of a synthetic case and its JSON form."""

from __future__ import annotations

import json
from dataclasses import dataclass, field, fields, is_dataclass
from enum import Enum
from pathlib import Path

import numpy as np

from bmdpipe.results import PedicleAxis, Side
from bmdpipe.volume import Volume
from .phantom import PhantomTruth
from .scanner import ScannerResponse
from .screws import ScrewTruth
from .tissue import PART, TISSUE

__all__ = ["VertebraTruth", "Truth", "SyntheticCase", "truth_to_dict"]


@dataclass(frozen=True)
class VertebraTruth:
    """One vertebra (LPS mm, mg/cm3 in the case material).

    ``axes_lps`` columns are the vertebra's local left, posterior and superior unit vectors.
    ``pedicles`` holds the left then the right pedicle axis (entry at the posterior bone
    surface, isthmus, target at 80 % of the body depth from the posterior wall).
    """

    name: str
    verse_id: int
    body_center_lps: tuple[float, float, float]
    body_width_mm: float
    body_depth_mm: float
    body_height_mm: float
    cancellous_central_mg_cm3: float
    cancellous_rim_gain: float
    posterior_cancellous_mg_cm3: float
    cortex_thickness_mm: float
    cortex_mg_cm3: float
    endplate_concavity_mm: float
    disc_below_mm: float
    axes_lps: tuple[tuple[float, float, float], ...]
    pedicles: tuple[PedicleAxis, PedicleAxis]

    def pedicle(self, side: Side | str) -> PedicleAxis:
        side = Side(side)
        return self.pedicles[0] if side is Side.left else self.pedicles[1]


@dataclass(frozen=True, eq=False)
class Truth:
    """Exact ground truth on the CT grid of the case (arrays in the same (k, j, i) order).

    Attributes
    ----------
    mineral_mg_cm3 : float32 array
        Noise-free, un-blurred mineral density (``scanner.material`` units) of every voxel;
        0 outside bone (also 0 in rods, metal and halos; rods are described in ``phantom``).
    tissue : uint8 array
        Codes of :data:`bmdpipe.synthetic.tissue.TISSUE`: 0 air, 1 fat, 2 soft tissue/muscle,
        3 blood, 4 cancellous, 5 cortex, 6 sclerosis, 7 disc, 8 canal/CSF, 9 phantom rod,
        10 phantom body, 11 table, 12 metal (titanium), 13 halo, 14 sclerotic rim, 15 cement, 16 cobalt-chrome,
        17 PEEK, 18 tantalum, 19 bone graft. Cage walls and marker pins (sub-voxel; formed as partial volumes)
        are marked where they fill at least half a voxel.
    part : uint8 array
        Vertebra part of labelled voxels: 0 none, 1 body, 2 left pedicle, 3 right pedicle,
        4 posterior elements.
    hu_clean : float32 array
        Noise-free, un-blurred, un-clipped HU (metal at ``scanner.metal_hu``).
    scanner, vertebrae, phantom, screws, phi, sclerosis, artefacts, seed, spec
        See the module docs of :mod:`bmdpipe.synthetic`.
    """

    mineral_mg_cm3: np.ndarray
    tissue: np.ndarray
    part: np.ndarray
    hu_clean: np.ndarray
    scanner: ScannerResponse
    vertebrae: tuple[VertebraTruth, ...]
    phantom: PhantomTruth | None
    screws: tuple[ScrewTruth, ...]
    phi: dict
    sclerosis: tuple[dict, ...] = ()
    artefacts: dict = field(default_factory=dict)
    body: dict = field(default_factory=dict)
    seed: int = 0
    spec: object = None

    def vertebra(self, name: str) -> VertebraTruth:
        for v in self.vertebrae:
            if v.name == name:
                return v
        raise KeyError(f"no vertebra {name!r} in this case (levels: {[v.name for v in self.vertebrae]})")

    def to_json(self, indent: int | None = 2) -> str:
        """JSON text of everything except the voxel arrays."""
        return json.dumps(truth_to_dict(self), indent=indent)


@dataclass(frozen=True, eq=False)
class SyntheticCase:
    """A synthetic CT (noisy, blurred HU), its VerSe label map (int16, same grid) and the truth."""

    volume: Volume
    labels: np.ndarray
    truth: Truth


def _plain(x):
    if isinstance(x, Enum):
        return x.value
    if is_dataclass(x) and not isinstance(x, type):
        return {f.name: _plain(getattr(x, f.name)) for f in fields(x)}
    if isinstance(x, dict):
        return {str(k): _plain(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_plain(v) for v in x]
    if isinstance(x, np.ndarray):
        return x.tolist()
    if isinstance(x, (np.floating,)):
        return float(x)
    if isinstance(x, (np.integer,)):
        return int(x)
    if isinstance(x, (np.bool_,)):
        return bool(x)
    if isinstance(x, Path):
        return str(x)
    return x


def truth_to_dict(truth: Truth) -> dict:
    """Plain-JSON dict of a Truth (arrays left out; codes included)."""
    d = {
        "seed": truth.seed,
        "spec": _plain(truth.spec),
        "tissue_codes": dict(TISSUE),
        "part_codes": dict(PART),
        "scanner": {**_plain(truth.scanner), "hu_water": truth.scanner.hu_water, "hu_fat": truth.scanner.hu_fat,
                    "hu_muscle": truth.scanner.hu_muscle, "hu_blood": truth.scanner.hu_blood,
                    "hu_air": truth.scanner.hu_air},
        "vertebrae": _plain(truth.vertebrae),
        "phantom": _plain(truth.phantom),
        "screws": _plain(truth.screws),
        "phi": dict(truth.phi),
        "sclerosis": _plain(truth.sclerosis),
        "artefacts": _plain(truth.artefacts),
        "body": _plain(truth.body),
    }
    return d
