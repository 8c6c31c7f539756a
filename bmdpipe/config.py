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
    pixel_spacing_tolerance_mm: float = Field(1.0e-3, ge=0)
    duplicate_position_tolerance_mm: float = Field(0.01, ge=0)
    max_missing_slices: int = Field(2, ge=0)
    max_axial_angle_deg: float = Field(45.0, ge=0, le=90)
    localizer_image_types: tuple[str, ...] = ("LOCALIZER", "SCOUT", "TOPOGRAM", "SURVIEW")
    non_hu_image_types: tuple[str, ...] = (
        "PERFUSION", "RCBF", "RCBV", "MTT", "TTP", "TMAX", "IODINE", "EFFECTIVE_Z", "ZEFF",
    )
    dose_report_descriptions: tuple[str, ...] = ("DOSE REPORT", "DOSE INFO", "PATIENT PROTOCOL")
    accept_nifti_in_folders: bool = False
    simpleitk_fallback: bool = True


class CalibrationSettings(_Section):
    r2_warn: float = 0.98
    r2_refuse: float = 0.90
    mindways_sigma_offset: float = 0.2174
    mindways_beta_offset: float = 999.6
    convert_to_ha: bool = False
    # rod finding (bmdpipe.calibrate.phantom)
    rod_min_diameter_mm: float = Field(8.0, gt=0)
    rod_max_diameter_mm: float = Field(40.0, gt=0)
    rod_slab_mm: float = Field(20.0, gt=0)
    rod_edge_sigma_mm: float = Field(1.0, gt=0)
    rod_edge_low_hu: float = 10.0
    rod_edge_high_hu: float = 30.0
    rod_hough_threshold: float = Field(0.35, gt=0, le=1)
    rod_max_candidates: int = Field(40, ge=2)
    rod_min_hu: float = -300.0
    rod_max_hu: float = 2500.0
    rod_min_contrast_hu: float = 20.0
    rod_max_core_spread_hu: float = 120.0
    rod_core_fraction: float = Field(0.6, gt=0, lt=1)
    rod_edge_margin_mm: float = Field(2.0, ge=0)
    rod_radius_tolerance: float = Field(0.2, gt=0)
    rod_row_tolerance_fraction: float = Field(0.6, gt=0)
    rod_min_slab_fraction: float = Field(0.3, ge=0, le=1)
    rod_visible_tolerance_hu: float = Field(60.0, gt=0)
    rod_streak_k: float = Field(3.5, gt=0)
    rod_streak_min_hu: float = Field(8.0, gt=0)
    rod_min_slices: int = Field(3, ge=1)
    rod_max_core_gradient_hu: float = Field(30.0, gt=0)
    phantom_scan_min_slices: int = Field(3, ge=1)
    rod_padding_hu: float = -1500.0
    rod_infer_max_residual_hu: float = Field(10.0, gt=0)
    phantom_hint_min_rods: int = Field(4, ge=2)
    phantom_hint_min_span_hu: float = Field(300.0, gt=0)
    rod_min_z_fraction: float = Field(0.4, ge=0, le=1)
    rod_max_groups: int = Field(30, ge=1)
    slope_min_hu_per_mg_cm3: float = Field(0.5, gt=0)
    slope_max_hu_per_mg_cm3: float = Field(2.5, gt=0)
    rod_residual_warn_hu: float = Field(15.0, gt=0)
    rod_residual_refuse_hu: float = Field(40.0, gt=0)
    # phantomless calibration (bmdpipe.calibrate.internal)
    internal_grid_mm: float = Field(1.5, gt=0)
    internal_smooth_mm: float = Field(1.5, gt=0)
    internal_object_hu: float = -500.0
    internal_body_opening_mm: float = Field(4.0, gt=0)
    internal_air_margin_mm: float = Field(10.0, ge=0)
    internal_fat_min_hu: float = -250.0
    internal_fat_max_hu: float = -40.0
    internal_fat_max_depth_mm: float = Field(40.0, gt=0)
    internal_fat_min_component_fraction: float = Field(0.2, ge=0, le=1)
    internal_erosion_mm: float = Field(3.0, ge=0)
    internal_bone_hu: float = 200.0
    internal_muscle_min_hu: float = 10.0
    internal_muscle_max_hu: float = 90.0
    internal_muscle_posterior_mm: float = 15.0
    internal_muscle_near_spine_mm: float = Field(15.0, gt=0)
    internal_psoas_min_lateral_mm: float = Field(25.0, ge=0)
    internal_psoas_max_lateral_mm: float = Field(50.0, gt=0)
    internal_psoas_anterior_mm: float = 40.0
    internal_psoas_posterior_mm: float = 40.0
    internal_psoas_min_mm3: float = Field(2000.0, ge=0)
    internal_psoas_min_component_fraction: float = Field(0.2, ge=0, le=1)
    internal_kev_min: float = Field(40.0, ge=25)
    internal_kev_max: float = Field(120.0, le=150)
    internal_max_rms_hu: float = Field(5.0, gt=0)
    internal_max_uncertainty_percent: float = Field(10.0, gt=0)
    internal_plausible_hu: dict[str, tuple[float, float]] = {
        "air": (-1100.0, -900.0), "fat": (-200.0, -30.0), "muscle": (0.0, 100.0), "blood": (10.0, 90.0)}
    internal_tissue_sd_hu: float = Field(3.0, gt=0)
    internal_air_sd_hu: float = Field(1.0, gt=0)
    internal_blood_sd_hu: float = Field(8.0, gt=0)
    internal_offset_prior_sd_hu: float | None = Field(5.0, gt=0)
    internal_gain_prior_sd: float | None = Field(0.01, gt=0)
    internal_kev_prior_kev: float | None = Field(70.0, gt=0)
    internal_kev_prior_sd_kev: float | None = Field(6.0, gt=0)
    internal_kev_prior_kvp: float = Field(120.0, gt=0)
    internal_precalibrated_kev_sd_kev: float = Field(2.0, gt=0)
    internal_use_blood: bool = True
    internal_blood_lateral_mm: float = Field(45.0, gt=0)
    internal_blood_anterior_mm: float = Field(40.0, gt=0)
    internal_blood_body_halfwidth_mm: float = Field(20.0, gt=0)
    internal_blood_smooth_mm: float = Field(3.0, gt=0)
    internal_blood_contrast_hu: float = Field(6.0, gt=0)
    internal_blood_min_mm3: float = Field(2000.0, gt=0)
    internal_blood_min_length_mm: float = Field(30.0, gt=0)
    internal_blood_centre_lateral_mm: float = Field(30.0, gt=0)


class AnatomySettings(_Section):
    labels_format: str = Field("auto", pattern="^(auto|verse|totalseg_v1|totalseg_v2|totalseg_pp)$")
    label_min_mean_hu: float = 80.0
    label_min_bone_fraction: float = Field(0.2, ge=0, le=1)
    label_min_inside_fraction: float = Field(0.5, ge=0, le=1)
    label_max_centroid_step_mm: float = Field(60.0, gt=0)
    bone_threshold_hu: float = 100.0
    smoothing_sigma_mm: float = Field(1.0, ge=0)
    body_opening_radius_mm: float = Field(8.0, gt=0)
    cortex_thickness_mm: float = Field(1.0, ge=0)
    default_canal_depth_mm: float = Field(17.0, gt=0)
    default_canal_width_mm: float = Field(22.0, gt=0)
    max_pedicle_convergence_deg: float = Field(35.0, gt=0)
    max_pedicle_sagittal_deg: float = Field(30.0, gt=0)
    pedicle_transverse_angle_deg: dict[str, float] = {"L1": 11.0, "L2": 12.0, "L3": 14.0, "L4": 18.0, "L5": 30.0}
    pedicle_transverse_angle_sd_deg: float = Field(5.0, gt=0)
    pedicle_isolated_area_ratio: float = Field(1.35, gt=1)
    pedicle_partial_section_fraction: float = Field(0.8, gt=0, lt=1)
    body_tilt_min_column_height_fraction: float = Field(0.8, gt=0, le=1)
    trajectory_depth_fraction: float = Field(0.8, gt=0, le=1)
    spine_search_halfwidth_mm: float = Field(60.0, gt=0)
    canal_min_area_mm2: float = Field(60.0, gt=0)
    canal_max_area_mm2: float = Field(900.0, gt=0)
    canal_max_hu: float = 60.0
    canal_smoothing_mm: float = Field(6.0, ge=0)
    gap_close_mm: float = Field(3.0, ge=0)
    body_probe_radius_mm: float = Field(10.0, gt=0)
    body_fill_fraction: float = Field(0.25, gt=0, lt=1)
    min_body_height_mm: float = Field(18.0, gt=0)
    max_body_height_mm: float = Field(45.0, gt=0)
    max_body_height_ratio: float = Field(1.3, gt=1)
    fov_edge_margin_mm: float = Field(2.0, ge=0)


class RoiSettings(_Section):
    a_width_fraction: float = Field(0.5, gt=0, lt=1)
    a_depth_fraction: float = Field(0.45, gt=0, lt=1)
    a_height_mm: float = Field(9.0, gt=0)
    a_posterior_clearance_mm: float = Field(8.0, ge=0)
    b_half_length_mm: float = Field(5.0, gt=0)
    screw_diameter_mm: float = Field(6.5, gt=0)
    postop_shell_mm: float = Field(3.0, gt=0)
    max_standard_error_mg_cm3: float = Field(3.0, gt=0)


class MaskingSettings(_Section):
    psf_sigma_mm: float = Field(0.5, gt=0)
    margin_sigmas: float = Field(3.0, ge=0)
    min_margin_mm: float = Field(1.0, ge=0)
    smoothing_sigma_mm: float = Field(0.6, ge=0)
    dense_k_sd: float = Field(4.0, gt=0)
    dense_min_delta_hu: float = Field(90.0, gt=0)
    max_reference_above_body_hu: float = Field(150.0, gt=0)

    def margin_mm(self, spacing) -> float:
        """Clearance kept between ROI voxels and cortex / sclerosis / the bone surface, mm."""
        return max(self.margin_sigmas * self.psf_sigma_mm, self.min_margin_mm)


class ScrewSettings(_Section):
    metal_threshold_hu: float = 2500.0
    min_metal_volume_mm3: float = Field(150.0, ge=0)
    inlier_radius_mm: float = Field(4.5, gt=0)
    min_run_length_mm: float = Field(18.0, gt=0)
    min_run_voxels: int = Field(30, ge=3)
    max_length_mm: float = Field(75.0, gt=0)
    max_axis_tilt_deg: float = Field(45.0, gt=0, le=90)
    max_gap_mm: float = Field(3.0, gt=0)
    bulk_shell_mm: float = Field(3.0, gt=0)
    max_bulk_fraction: float = Field(0.5, gt=0)
    ransac_hypotheses: int = Field(256, ge=8)
    max_runs_per_component: int = Field(12, ge=1)
    ransac_seed: int = 0
    esf_max_radius_mm: float = Field(10.0, gt=2)
    metal_hu: float = 6500.0
    thread_depth_mm: float = Field(0.9, ge=0)
    thread_pitch_mm: float = Field(2.8, gt=0)
    axis_fit_range: tuple[float, float] = (0.35, 0.85)
    nominal_diameter_mm: float | None = None
    max_distance_from_vertebra_mm: float = Field(5.0, ge=0)


class HaloSettings(_Section):
    min_width_mm: float = Field(1.0, gt=0)
    min_circumference_fraction: float = Field(0.5, gt=0, le=1)
    n_angles: int = Field(72, ge=8)
    position_step_mm: float = Field(1.0, gt=0)
    radial_step_mm: float = Field(0.1, gt=0)
    search_mm: float = Field(5.5, gt=1)
    block_length_mm: float = Field(6.0, gt=0)
    skip_entry_mm: float = Field(3.0, ge=0)
    skip_tip_mm: float = Field(3.0, ge=0)
    min_bone_hu: float = 60.0
    max_width_mm: float = Field(3.5, gt=0)
    lucent_hu: float = 30.0
    min_contrast_hu: float = Field(30.0, ge=0)
    streak_drop_fraction: float = Field(0.5, gt=0, le=1)
    rim_width_mm: float = Field(1.0, gt=0)
    bone_window_mm: float = Field(1.5, gt=0)
    edge_start_mm: float = Field(0.5, ge=0)
    shared_blur_min_screws: int = Field(2, ge=1)
    profile_smoothing_mm: float = Field(0.2, gt=0)
    refine_iterations: int = Field(1, ge=0)
    edge_tries: int = Field(6, ge=1)
    rim_min_contrast_hu: float = Field(150.0, gt=0)
    rim_min_fraction: float = Field(0.3, gt=0, le=1)
    angle_smoothing: int = Field(5, ge=1)
    metal_hu: float = 6500.0
    thread_depth_mm: float = Field(0.9, ge=0)
    thread_pitch_mm: float = Field(2.8, gt=0)
    min_valid_fraction: float = Field(0.3, gt=0, le=1)
    max_smoothing: int = Field(13, ge=1)  # angles; circular median before the maximum


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


def read_yaml_mapping(path: Path, *, what: str, expected: str, empty_ok: bool = False) -> dict[str, Any]:
    """Read a YAML file that must hold a mapping; errors name ``what`` file ``path`` and the problem.

    Parameters
    ----------
    what : str
        What the file is, for messages ("config file", "phantom definition").
    expected : str
        What the mapping must hold, for the message when it is not a mapping.
    empty_ok : bool
        An empty file reads as ``{}`` instead of an error.
    """
    try:
        data = yaml.safe_load(Path(path).read_text())
    except FileNotFoundError as exc:
        raise ConfigError(f"{what} {path} does not exist") from exc
    except yaml.YAMLError as exc:
        raise ConfigError(f"{what} {path} is not valid YAML: {exc}") from exc
    if data is None and empty_ok:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{what} {path} must be {expected}, got {type(data).__name__}")
    return data


def _read_yaml(path: Path) -> dict[str, Any]:
    return read_yaml_mapping(path, what="config file", expected="a mapping of sections", empty_ok=True)


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
