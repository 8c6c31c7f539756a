"""Settings: pydantic models loaded from ``configs/default.yaml`` (+ a user override file).

Every threshold lives here with its unit; the YAML file gives each one's source.
Each pipeline stage owns one section model.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from .errors import ConfigError

__all__ = ["Settings", "load_settings", "REPO_ROOT", "DEFAULT_CONFIG", "PHANTOM_DIR"]

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_CONFIG = REPO_ROOT / "configs" / "default.yaml"
PHANTOM_DIR = REPO_ROOT / "phantoms"


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class PseudonymSettings(_Section):
    key: str = ""
    prefix: str = "S"
    length: int = Field(10, ge=6, le=64)

    def resolved_key(self) -> str:
        """The HMAC key: ``BMDPIPE_PSEUDONYM_KEY`` if set, else the configured key."""
        return os.environ.get("BMDPIPE_PSEUDONYM_KEY") or self.key


class IngestSettings(_Section):
    min_slices: int = Field(10, ge=1)
    max_rows: int = 4096
    max_columns: int = 4096
    max_slices: int = 5000
    max_voxels: float = 1.0e9
    slice_spacing_tolerance: float = 0.05
    orientation_tolerance: float = 1.0e-3
    max_gantry_tilt_deg: float = 0.5


class CalibrationSettings(_Section):
    r2_warn: float = 0.98
    r2_refuse: float = 0.90
    mindways_sigma_offset: float = 0.2174
    mindways_beta_offset: float = 999.6
    convert_to_ha: bool = False


class AnatomySettings(_Section):
    pass


class RoiSettings(_Section):
    pass


class MaskingSettings(_Section):
    pass


class ScrewSettings(_Section):
    pass


class HaloSettings(_Section):
    min_width_mm: float = Field(1.0, gt=0)
    min_circumference_fraction: float = Field(0.5, gt=0, le=1)


class OutputSettings(_Section):
    qc_images: bool = True
    roi_maps: bool = True


class Settings(_Section):
    """All pipeline settings. Sections mirror ``configs/default.yaml``."""

    pseudonym: PseudonymSettings = PseudonymSettings()
    ingest: IngestSettings = IngestSettings()
    calibration: CalibrationSettings = CalibrationSettings()
    anatomy: AnatomySettings = AnatomySettings()
    roi: RoiSettings = RoiSettings()
    masking: MaskingSettings = MaskingSettings()
    screws: ScrewSettings = ScrewSettings()
    halo: HaloSettings = HaloSettings()
    output: OutputSettings = OutputSettings()


def _deep_merge(base: dict, override: dict) -> dict:
    out = dict(base)
    for k, v in override.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = _deep_merge(out[k], v)
        else:
            out[k] = v
    return out


def _read_yaml(path: Path) -> dict[str, Any]:
    try:
        data = yaml.safe_load(Path(path).read_text()) or {}
    except FileNotFoundError as exc:
        raise ConfigError(f"config file {path} does not exist") from exc
    except yaml.YAMLError as exc:
        raise ConfigError(f"config file {path} is not valid YAML: {exc}") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path} must hold a mapping of sections, got {type(data).__name__}")
    return data


def load_settings(path: str | Path | None = None) -> Settings:
    """Load ``configs/default.yaml`` and overlay the user's file ``path`` (if given).

    Raises
    ------
    ConfigError
        Naming the file and the offending key when a value is invalid or unknown.
    """
    data = _read_yaml(DEFAULT_CONFIG) if DEFAULT_CONFIG.exists() else {}
    if path is not None:
        data = _deep_merge(data, _read_yaml(Path(path)))
    try:
        return Settings.model_validate(data)
    except ValidationError as exc:
        where = path or DEFAULT_CONFIG
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors()
        )
        raise ConfigError(f"invalid settings in {where}: {problems}") from exc


def settings_digest(settings: Settings) -> str:
    """Stable SHA-256 of the settings (for resume: same settings -> same digest)."""
    import hashlib
    import json

    blob = json.dumps(settings.model_dump(mode="json"), sort_keys=True).encode()
    return hashlib.sha256(blob).hexdigest()
