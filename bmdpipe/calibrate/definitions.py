"""Phantom definitions: certificate values of a calibration phantom, read from YAML.

A definition is shipped in ``phantoms/NAME.yaml`` or written by the user for their own
phantom (its certificate). See the output contract for the format::

    name: mindways-model3-ct
    model: two-component      # two-component | linear
    material: K2HPO4          # K2HPO4 | HA
    rods:
      - {name: A, mineral_mg_cm3: -51.83, water_mg_cm3: 1012.25}
      ...
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from ..config import PHANTOM_DIR, read_yaml_mapping
from ..errors import ConfigError
from ..results import Material

__all__ = ["RodDefinition", "PhantomDefinition", "load_phantom", "list_phantoms"]


class RodDefinition(BaseModel):
    """One rod (or insert) of a phantom certificate."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(min_length=1)
    mineral_mg_cm3: float
    water_mg_cm3: float | None = Field(None, gt=0)


class PhantomDefinition(BaseModel):
    """A calibration phantom: model, material and the certificate of each rod.

    Attributes
    ----------
    name : str
    model : {'two-component', 'linear'}
    material : Material
    rods : list of RodDefinition
        Certificate values; their order in the file is not their order in the image.
    rod_diameter_mm : float, optional
        Nominal rod diameter, mm: the size of a rod that shows no edge (measured from the rods
        found when absent).
    rod_pitch_mm : float, optional
        Centre distance of neighbouring rods, mm: where a rod that shows no edge sits (from the
        gaps between the rods found when absent: :func:`~bmdpipe.calibrate.pad.predicted_positions`).
    pad_height_mm : float, optional
        Height of the pad around the rods, mm (documentation; the pad's extent is measured in
        the scan).
    example_values : bool
        True when the certificate values are an example and must be replaced by the
        user's own certificate.
    description : str
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(min_length=1)
    model: Literal["two-component", "linear"]
    material: Material
    rods: tuple[RodDefinition, ...] = Field(min_length=2)
    rod_diameter_mm: float | None = Field(None, gt=0)
    rod_pitch_mm: float | None = Field(None, gt=0)
    pad_height_mm: float | None = Field(None, gt=0)
    example_values: bool = False
    description: str = ""

    @model_validator(mode="after")
    def _check(self) -> "PhantomDefinition":
        names = [r.name for r in self.rods]
        if len(set(names)) != len(names):
            raise ValueError(f"rods: rod names must be unique, got {names}")
        dens = [r.mineral_mg_cm3 for r in self.rods]
        if len(set(dens)) < 2:
            raise ValueError("rods: at least two distinct mineral_mg_cm3 values are needed for a fit")
        if self.model == "two-component":
            missing = [r.name for r in self.rods if r.water_mg_cm3 is None]
            if missing:
                raise ValueError(f"rods: water_mg_cm3 is required for every rod of a two-component phantom (missing for {missing})")
            if self.material != Material.K2HPO4:
                raise ValueError("material: the two-component model is defined for K2HPO4 phantoms")
        return self

    def sorted_rods(self) -> tuple[RodDefinition, ...]:
        """Rods in the order of their expected HU (ascending).

        For a two-component phantom the expected HU is ``water + sigma * K2HPO4`` with a
        typical sigma of 1.45 (QCT Pro worked example), which orders rods A, B (negative
        K2HPO4, different water) correctly.
        """
        if self.model == "two-component":
            key = lambda r: (r.water_mg_cm3 or 1000.0) + 1.45 * r.mineral_mg_cm3  # noqa: E731
        else:
            key = lambda r: r.mineral_mg_cm3  # noqa: E731
        return tuple(sorted(self.rods, key=key))


def list_phantoms() -> list[str]:
    """Names of the phantom definitions shipped in ``phantoms/``."""
    return sorted(p.stem for p in PHANTOM_DIR.glob("*.yaml"))


def _format_errors(exc: ValidationError) -> str:
    parts = []
    for e in exc.errors():
        loc = ".".join(str(p) for p in e["loc"]) or "(top level)"
        msg = e["msg"].removeprefix("Value error, ")
        parts.append(f"{loc}: {msg}")
    return "; ".join(parts)


def load_phantom(name_or_path: str | Path) -> PhantomDefinition:
    """Load a phantom definition by shipped name or from a YAML file.

    Parameters
    ----------
    name_or_path : str or Path
        A shipped name (``mindways-model3-ct``, see :func:`list_phantoms`) or a path to a
        ``.yaml`` file with the user's certificate.

    Raises
    ------
    ConfigError
        When the name is unknown, the file is missing or not YAML, or a field is invalid
        (the message names the file and the field, e.g. ``rods.2.water_mg_cm3``).
    """
    text = str(name_or_path)
    path = Path(text)
    if not (path.suffix.lower() in (".yaml", ".yml") or path.exists()):
        path = PHANTOM_DIR / f"{text}.yaml"
        if not path.exists():
            raise ConfigError(
                f"unknown phantom {text!r}: give a shipped name ({', '.join(list_phantoms())}), "
                "a FILE.yaml with your phantom's certificate, or 'none' for phantomless calibration"
            )
    data = read_yaml_mapping(path, what="phantom definition",
                             expected="a mapping with name, model, material and rods")
    try:
        return PhantomDefinition.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(f"invalid phantom definition {path}: {_format_errors(exc)}") from exc
