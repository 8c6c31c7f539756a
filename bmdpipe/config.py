"""Settings: pydantic models of the sections of ``configs/default.yaml`` (+ a user override file).

The defaults live in one place, ``configs/default.yaml``, with each threshold's unit and source;
the models here give the types and bounds. A section built without a value (``HaloSettings()``,
``HaloSettings(min_width_mm=1.5)``) takes the file's value. Each pipeline stage owns one
section model.
"""

from __future__ import annotations

import functools
import importlib.util
import os
from pathlib import Path
from typing import Any, ClassVar, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from .errors import ConfigError

__all__ = ["Settings", "load_settings", "REPO_ROOT", "DEFAULT_CONFIG", "PHANTOM_DIR"]

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_CONFIG = REPO_ROOT / "configs" / "default.yaml"
PHANTOM_DIR = REPO_ROOT / "phantoms"


class _Frozen(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


@functools.cache
def default_values() -> dict[str, Any]:
    """The sections of ``configs/default.yaml`` (read once)."""
    return _read_yaml(DEFAULT_CONFIG)


class _Section(_Frozen):
    """A settings section: every value not given is the one in ``configs/default.yaml``."""

    section: ClassVar[str]  # its key in configs/default.yaml

    @model_validator(mode="before")
    @classmethod
    def _defaults_from_file(cls, data: Any) -> Any:
        if isinstance(data, dict):
            return _deep_merge(default_values().get(cls.section, {}), data)
        return data


class PseudonymSettings(_Section):
    section: ClassVar[str] = "pseudonym"
    key: str
    prefix: str
    length: int = Field(ge=6, le=64)

    def resolved_key(self) -> str:
        """The HMAC key: ``BMDPIPE_PSEUDONYM_KEY`` if set, else the configured key."""
        return os.environ.get("BMDPIPE_PSEUDONYM_KEY") or self.key


class IngestSettings(_Section):
    section: ClassVar[str] = "ingest"
    min_slices: int = Field(ge=1)
    max_rows: int
    max_columns: int
    max_slices: int
    max_voxels: float
    slice_spacing_tolerance: float
    orientation_tolerance: float
    max_gantry_tilt_deg: float = Field(ge=0)
    gantry_tilt_resampling: bool
    max_resampled_gantry_tilt_deg: float = Field(ge=0, lt=90)
    pixel_spacing_tolerance_mm: float = Field(ge=0)
    duplicate_position_tolerance_mm: float = Field(ge=0)
    max_missing_slices: int = Field(ge=0)
    max_axial_angle_deg: float = Field(ge=0, le=90)
    localizer_image_types: tuple[str, ...]
    non_hu_image_types: tuple[str, ...]
    dose_report_descriptions: tuple[str, ...]
    accept_nifti_in_folders: bool
    simpleitk_fallback: bool


class CalibrationSettings(_Section):
    section: ClassVar[str] = "calibration"
    r2_warn: float
    r2_refuse: float
    mindways_sigma_offset: float
    mindways_beta_offset: float
    convert_to_ha: bool
    # rod finding (bmdpipe.calibrate.phantom)
    rod_min_diameter_mm: float = Field(gt=0)
    rod_max_diameter_mm: float = Field(gt=0)
    rod_slab_mm: float = Field(gt=0)
    rod_edge_sigma_mm: float = Field(gt=0)
    rod_edge_low_hu: float
    rod_edge_high_hu: float
    rod_hough_threshold: float = Field(gt=0, le=1)
    rod_max_candidates: int = Field(ge=2)
    rod_min_hu: float
    rod_max_hu: float
    rod_min_contrast_hu: float
    rod_max_core_spread_hu: float
    rod_core_fraction: float = Field(gt=0, lt=1)
    rod_edge_margin_mm: float = Field(ge=0)
    rod_radius_tolerance: float = Field(gt=0)
    rod_row_tolerance_fraction: float = Field(gt=0)
    rod_min_slab_fraction: float = Field(ge=0, le=1)
    rod_visible_tolerance_hu: float = Field(gt=0)
    rod_streak_k: float = Field(gt=0)
    rod_band_k: float = Field(gt=0)
    rod_streak_min_hu: float = Field(gt=0)
    rod_min_slices: int = Field(ge=1)
    rod_max_core_gradient_hu: float = Field(gt=0)
    phantom_scan_min_slices: int = Field(ge=1)
    rod_padding_hu: float
    rod_infer_max_residual_hu: float = Field(gt=0)
    rod_assignment_margin_hu: float = Field(gt=0)
    rod_assignment_equivalent_percent: float = Field(gt=0)
    rod_assignment_kev_range: tuple[float, float]
    rod_assignment_max_intercept_hu: float = Field(gt=0)
    phantom_hint_min_rods: int = Field(ge=2)
    phantom_hint_min_span_hu: float = Field(gt=0)
    phantom_hint_slabs: int = Field(ge=2)
    rod_min_z_fraction: float = Field(ge=0, le=1)
    rod_row_span_fraction: float = Field(gt=0, le=1)
    phantom_min_rods: int = Field(ge=2)
    rod_max_groups: int = Field(ge=1)
    rod_pad_tolerance_hu: float = Field(gt=0)
    rod_pad_shading_correction: bool
    rod_shading_warn_hu: float = Field(gt=0)
    rod_shading_min_sd: float = Field(gt=0)
    rod_shading_max_hu: float = Field(gt=0)
    rod_pad_min_share: float = Field(gt=0, le=1)
    slope_min_hu_per_mg_cm3: float = Field(gt=0)
    slope_max_hu_per_mg_cm3: float = Field(gt=0)
    rod_residual_warn_hu: float = Field(gt=0)
    rod_residual_refuse_hu: float = Field(gt=0)
    # phantomless calibration (bmdpipe.calibrate.internal)
    internal_grid_mm: float = Field(gt=0)
    internal_smooth_mm: float = Field(gt=0)
    internal_object_hu: float
    internal_body_opening_mm: float = Field(gt=0)
    internal_air_margin_mm: float = Field(ge=0)
    internal_fat_min_hu: float
    internal_fat_max_hu: float
    internal_fat_max_depth_mm: float = Field(gt=0)
    internal_fat_min_component_fraction: float = Field(ge=0, le=1)
    internal_erosion_mm: float = Field(ge=0)
    internal_bone_hu: float
    internal_muscle_min_hu: float
    internal_muscle_max_hu: float
    internal_muscle_posterior_mm: float
    internal_muscle_near_spine_mm: float = Field(gt=0)
    internal_psoas_min_lateral_mm: float = Field(ge=0)
    internal_psoas_max_lateral_mm: float = Field(gt=0)
    internal_psoas_anterior_mm: float
    internal_psoas_posterior_mm: float
    internal_psoas_min_mm3: float = Field(ge=0)
    internal_psoas_min_component_fraction: float = Field(ge=0, le=1)
    internal_kev_min: float = Field(ge=25)
    internal_kev_max: float = Field(le=150)
    internal_max_rms_hu: float = Field(gt=0)
    internal_max_uncertainty_percent: float = Field(gt=0)
    internal_plausible_hu: dict[str, tuple[float, float]]
    internal_tissue_sd_hu: float = Field(gt=0)
    internal_air_sd_hu: float = Field(gt=0)
    internal_blood_sd_hu: float = Field(gt=0)
    internal_offset_prior_sd_hu: float | None = Field(gt=0)
    internal_gain_prior_sd: float | None = Field(gt=0)
    internal_kev_prior_kev: float | None = Field(gt=0)
    internal_kev_prior_sd_kev: float | None = Field(gt=0)
    internal_kev_prior_kvp: float = Field(gt=0)
    internal_precalibrated_kev_sd_kev: float = Field(gt=0)
    internal_use_blood: bool
    internal_blood_lateral_mm: float = Field(gt=0)
    internal_blood_anterior_mm: float = Field(gt=0)
    internal_blood_body_halfwidth_mm: float = Field(gt=0)
    internal_blood_smooth_mm: float = Field(gt=0)
    internal_blood_contrast_hu: float = Field(gt=0)
    internal_blood_min_mm3: float = Field(gt=0)
    internal_blood_min_length_mm: float = Field(gt=0)
    internal_blood_centre_lateral_mm: float = Field(gt=0)


class AnatomySettings(_Section):
    section: ClassVar[str] = "anatomy"
    labels_format: str = Field(pattern="^(auto|verse|totalseg_v1|totalseg_v2|totalseg_pp)$")
    label_min_mean_hu: float
    label_min_bone_fraction: float = Field(ge=0, le=1)
    label_min_inside_fraction: float = Field(ge=0, le=1)
    label_max_centroid_step_mm: float = Field(gt=0)
    bone_threshold_hu: float
    smoothing_sigma_mm: float = Field(ge=0)
    body_opening_radius_mm: float = Field(gt=0)
    cortex_thickness_mm: float = Field(ge=0)
    default_canal_depth_mm: float = Field(gt=0)
    default_canal_width_mm: float = Field(gt=0)
    max_pedicle_convergence_deg: float = Field(gt=0)
    max_pedicle_sagittal_deg: float = Field(gt=0)
    pedicle_transverse_angle_deg: dict[str, float]
    pedicle_transverse_angle_sd_deg: float = Field(gt=0)
    pedicle_isolated_area_ratio: float = Field(gt=1)
    pedicle_partial_section_fraction: float = Field(gt=0, lt=1)
    body_tilt_min_column_height_fraction: float = Field(gt=0, le=1)
    trajectory_depth_fraction: float = Field(gt=0, le=1)
    spine_search_halfwidth_mm: float = Field(gt=0)
    canal_min_area_mm2: float = Field(gt=0)
    canal_max_area_mm2: float = Field(gt=0)
    canal_max_hu: float
    canal_smoothing_mm: float = Field(ge=0)
    gap_close_mm: float = Field(ge=0)
    body_probe_radius_mm: float = Field(gt=0)
    body_fill_fraction: float = Field(gt=0, lt=1)
    min_body_height_mm: float = Field(gt=0)
    max_body_height_mm: float = Field(gt=0)
    max_body_height_ratio: float = Field(gt=1)
    fov_edge_margin_mm: float = Field(ge=0)


class RoiSettings(_Section):
    section: ClassVar[str] = "roi"
    a_width_fraction: float = Field(gt=0, lt=1)
    a_depth_fraction: float = Field(gt=0, lt=1)
    a_height_mm: float = Field(gt=0)
    a_posterior_clearance_mm: float = Field(ge=0)
    b_half_length_mm: float = Field(gt=0)
    screw_diameter_mm: float = Field(gt=0)
    postop_shell_mm: float = Field(gt=0)
    max_standard_error_mg_cm3: float = Field(gt=0)
    precision_cv_percent: float = Field(gt=0)


class PlausibilitySettings(_Section):
    """The gate every ``vbmd.csv`` row passes (:func:`bmdpipe.measure.measure_roi`)."""

    section: ClassVar[str] = "plausibility"
    air_hu: float
    max_air_fraction: float = Field(ge=0, le=1)
    metal_hu: float
    max_metal_fraction: float = Field(ge=0, le=1)
    min_vbmd_mg_cm3: float
    max_vbmd_mg_cm3: float

    @model_validator(mode="after")
    def _ordered(self) -> PlausibilitySettings:
        if not (self.air_hu < self.metal_hu and self.min_vbmd_mg_cm3 < self.max_vbmd_mg_cm3):
            raise ValueError("plausibility: need air_hu < metal_hu and min_vbmd_mg_cm3 < max_vbmd_mg_cm3")
        return self


class MaskingSettings(_Section):
    section: ClassVar[str] = "masking"
    psf_sigma_mm: float = Field(gt=0)
    margin_sigmas: float = Field(ge=0)
    min_margin_mm: float = Field(ge=0)
    smoothing_sigma_mm: float = Field(ge=0)
    dense_k_sd: float = Field(gt=0)
    dense_min_delta_hu: float = Field(gt=0)
    max_reference_above_body_hu: float = Field(gt=0)

    @property
    def margin_mm(self) -> float:
        """Clearance kept between ROI voxels and cortex / sclerosis / the bone surface, mm."""
        return max(self.margin_sigmas * self.psf_sigma_mm, self.min_margin_mm)


class ScrewSettings(_Section):
    section: ClassVar[str] = "screws"
    metal_threshold_hu: float
    min_metal_volume_mm3: float = Field(ge=0)
    inlier_radius_mm: float = Field(gt=0)
    min_run_length_mm: float = Field(gt=0)
    min_run_voxels: int = Field(ge=3)
    max_length_mm: float = Field(gt=0)
    max_axis_tilt_deg: float = Field(gt=0, le=90)
    max_gap_mm: float = Field(gt=0)
    bulk_shell_mm: float = Field(gt=0)
    max_bulk_fraction: float = Field(gt=0)
    ransac_hypotheses: int = Field(ge=8)
    max_runs_per_component: int = Field(ge=1)
    ransac_seed: int
    esf_max_radius_mm: float = Field(gt=2)
    saturation_min_fraction: float = Field(gt=0, le=1)
    saturation_min_voxels: int = Field(ge=1)
    metal_hu: float
    thread_depth_mm: float = Field(ge=0)
    thread_pitch_mm: float = Field(gt=0)
    axis_fit_range: tuple[float, float]
    nominal_diameter_mm: float | None
    max_distance_from_vertebra_mm: float = Field(ge=0)
    max_ap_angle_deg: float = Field(gt=0, le=90)
    max_head_depth_mm: float
    cement_min_hu: float
    cement_min_thickness_mm: float = Field(gt=0)
    cement_min_circumference: float = Field(gt=0, le=1)
    cement_min_sleeve_mm: float = Field(gt=0)
    cement_min_clean_shaft_mm: float = Field(gt=0)
    cement_margin_mm: float = Field(ge=0)
    cement_search_radius_mm: float = Field(gt=2)


class HaloSettings(_Section):
    section: ClassVar[str] = "halo"
    min_width_mm: float = Field(gt=0)
    min_circumference_fraction: float = Field(gt=0, le=1)
    min_measured_fraction: float = Field(ge=0, le=1)
    n_angles: int = Field(ge=8)
    position_step_mm: float = Field(gt=0)
    radial_step_mm: float = Field(gt=0)
    search_mm: float = Field(gt=1)
    block_length_mm: float = Field(gt=0)
    skip_entry_mm: float = Field(ge=0)
    skip_tip_mm: float = Field(ge=0)
    min_bone_hu: float
    max_width_mm: float = Field(gt=0)
    lucent_hu: float
    min_contrast_hu: float = Field(ge=0)
    streak_drop_fraction: float = Field(gt=0, le=1)
    bright_artefact_hu: float = Field(gt=0)
    rim_width_mm: float = Field(gt=0)
    bone_window_mm: float = Field(gt=0)
    edge_start_mm: float = Field(ge=0)
    shared_blur_min_screws: int = Field(ge=1)
    blur_sectors: int = Field(ge=1)
    profile_smoothing_mm: float = Field(gt=0)
    refine_iterations: int = Field(ge=0)
    edge_tries: int = Field(ge=1)
    rim_min_contrast_hu: float = Field(gt=0)
    rim_min_fraction: float = Field(gt=0, le=1)
    angle_smoothing: int = Field(ge=1)
    min_valid_fraction: float = Field(gt=0, le=1)
    metal_artefact_reduction: Literal["none", "nmar"]
    mar_metal_hu: float
    mar_trace_margin_mm: float = Field(ge=0)
    mar_air_hu: float
    mar_bone_hu: float
    mar_bone_max_hu: float
    mar_prior_smoothing_mm: float = Field(ge=0)
    mar_keep_edge_mm: float = Field(ge=0)
    mar_crop_margin_mm: float = Field(ge=0)
    mar_metal_blur_mm: float = Field(ge=0)
    max_smoothing: int = Field(ge=1)  # angles; circular median before the maximum

    @model_validator(mode="after")
    def _mar_available(self) -> HaloSettings:
        if self.metal_artefact_reduction == "nmar" and importlib.util.find_spec("astra") is None:
            raise ValueError("halo.metal_artefact_reduction: nmar reprojects slices with astra-toolbox, which is not "
                             "installed: pip install 'bmdpipe[sim]', or set it to none")
        if self.metal_artefact_reduction == "nmar" and not self.mar_air_hu < self.mar_bone_hu < self.mar_bone_max_hu:
            raise ValueError("halo: need mar_air_hu < mar_bone_hu < mar_bone_max_hu")
        return self


class NoiseSettings(_Section):
    section: ClassVar[str] = "noise"
    uniform_ranges_hu: tuple[tuple[float, float], ...] = Field(min_length=1)
    smoothing_mm: float = Field(gt=0)
    edge_gradient_factor: float = Field(gt=1)
    margin_mm: float = Field(ge=0)
    detrend_mm: float = Field(gt=0)
    baseline_lag_mm: float = Field(gt=0)
    max_lag_mm: float = Field(gt=0)
    slab_mm: float = Field(gt=0)
    max_voxels: int = Field(ge=1)
    min_voxels: int = Field(ge=1)
    level_cell_mm: float = Field(gt=0)
    level_min_cell_voxels: int = Field(ge=1)
    level_min_cells: int = Field(ge=6)
    max_level_ratio: float = Field(ge=1)

    @model_validator(mode="after")
    def _lags_in_order(self) -> "NoiseSettings":
        if self.max_lag_mm <= self.baseline_lag_mm:
            raise ValueError(f"max_lag_mm ({self.max_lag_mm}) must exceed baseline_lag_mm ({self.baseline_lag_mm})")
        if any(lo >= hi for lo, hi in self.uniform_ranges_hu):
            raise ValueError(f"each of uniform_ranges_hu must be [low, high] with low < high: {self.uniform_ranges_hu}")
        return self


class OutputSettings(_Section):
    section: ClassVar[str] = "output"
    qc_images: bool
    roi_maps: bool


class StoreSettings(_Section):
    section: ClassVar[str] = "store"
    sqlite_lock_timeout_s: float = Field(gt=0)


class StatsSettings(_Section):
    """Trial statistics (``bmdpipe stats``): test choices, QCT categories, endpoint rules."""

    section: ClassVar[str] = "stats"
    ci_level: float = Field(gt=0, lt=1)
    alpha: float = Field(gt=0, lt=1)
    normality_alpha: float = Field(gt=0, lt=1)
    min_expected_count: float = Field(gt=0)
    min_per_group: int = Field(ge=2)
    primary_timepoint: str
    vbmd_levels: tuple[str, ...]
    qct_normal_min_mg_cm3: float
    qct_osteoporosis_below_mg_cm3: float
    fused_max_bridwell_grade: int = Field(ge=1, le=4)
    odi_max_missing_sections: int = Field(ge=0, le=9)


class Settings(_Frozen):
    """All pipeline settings. Sections mirror ``configs/default.yaml``."""

    pseudonym: PseudonymSettings = Field(default_factory=PseudonymSettings)
    ingest: IngestSettings = Field(default_factory=IngestSettings)
    calibration: CalibrationSettings = Field(default_factory=CalibrationSettings)
    anatomy: AnatomySettings = Field(default_factory=AnatomySettings)
    roi: RoiSettings = Field(default_factory=RoiSettings)
    plausibility: PlausibilitySettings = Field(default_factory=PlausibilitySettings)
    masking: MaskingSettings = Field(default_factory=MaskingSettings)
    screws: ScrewSettings = Field(default_factory=ScrewSettings)
    halo: HaloSettings = Field(default_factory=HaloSettings)
    noise: NoiseSettings = Field(default_factory=NoiseSettings)
    output: OutputSettings = Field(default_factory=OutputSettings)
    store: StoreSettings = Field(default_factory=StoreSettings)
    stats: StatsSettings = Field(default_factory=StatsSettings)


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
    data = _read_yaml(Path(path)) if path is not None else {}
    try:
        return Settings.model_validate(data)
    except ValidationError as exc:
        where = path or DEFAULT_CONFIG
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors()
        )
        raise ConfigError(f"invalid settings in {where}: {problems}") from exc


def settings_digest(settings: Settings) -> str:
    """Stable SHA-256 of the settings (for resume: same settings -> same digest).

    The ``store`` section (how long to wait for the database) does not change any result and is
    left out.
    """
    import hashlib
    import json

    blob = json.dumps(settings.model_dump(mode="json", exclude={"store"}), sort_keys=True).encode()
    return hashlib.sha256(blob).hexdigest()
