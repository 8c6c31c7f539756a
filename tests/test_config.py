"""Settings: defaults load, overrides merge, bad values are named."""

import pytest

from bmdpipe.config import DEFAULT_CONFIG, load_settings, settings_digest
from bmdpipe.errors import ConfigError


def test_default_yaml_matches_models():
    """Every key of configs/default.yaml is known to the models (extra keys are forbidden)."""
    s = load_settings()
    assert s.halo.min_width_mm == 1.0
    assert s.calibration.r2_refuse == 0.90


def test_override_merges_one_key(tmp_path):
    p = tmp_path / "my.yaml"
    p.write_text("halo:\n  min_width_mm: 1.5\n")
    s = load_settings(p)
    assert s.halo.min_width_mm == 1.5
    assert s.halo.min_circumference_fraction == load_settings().halo.min_circumference_fraction
    assert settings_digest(s) != settings_digest(load_settings())


@pytest.mark.parametrize(
    "text, fragment",
    [
        ("halo:\n  min_width_mm: -1\n", "halo.min_width_mm"),
        ("halo:\n  min_widht_mm: 1\n", "halo.min_widht_mm"),
        ("- just a list\n", "mapping"),
        ("halo: [unclosed\n", "not valid YAML"),
    ],
)
def test_invalid_override_names_the_key_and_file(tmp_path, text, fragment):
    p = tmp_path / "bad.yaml"
    p.write_text(text)
    with pytest.raises(ConfigError) as info:
        load_settings(p)
    assert fragment in str(info.value)
    assert "bad.yaml" in str(info.value) or "YAML" in str(info.value)


def test_default_config_file_documents_every_threshold():
    """Each numeric setting in default.yaml carries a comment (unit / source), inline or on
    the line just above it (a pair such as ``*_min`` / ``*_max`` may share one comment)."""
    lines = DEFAULT_CONFIG.read_text().splitlines()
    undocumented = []
    for prev, ln in zip([""] + lines, lines):
        if ln.strip().startswith("#") or ":" not in ln:
            continue
        value = ln.split(":", 1)[1].strip()
        if value and value[:1] in "-.0123456789" and "#" not in ln and "#" not in prev:
            undocumented.append(ln.strip())
    assert not undocumented, f"settings without a unit/source comment: {undocumented}"


def test_every_setting_has_its_default_in_the_file_with_its_type():
    """configs/default.yaml is the one home of the defaults: every field of every section has a value
    there, no section or key of the file is unknown, and no number is written so that YAML reads a
    string (YAML 1.1 reads ``1.0e9`` as text; pydantic would quietly convert it)."""
    from bmdpipe.config import Settings, default_values

    settings = Settings()
    assert set(default_values()) == set(Settings.model_fields)
    for name, values in default_values().items():
        model = type(getattr(settings, name))
        assert set(values) == set(model.model_fields), name
        for key, value in values.items():
            if isinstance(value, str):
                assert isinstance(getattr(getattr(settings, name), key), str), (name, key, value)


def test_sections_take_their_defaults_from_the_file(tmp_path, monkeypatch):
    """A section built without a value reads it from the defaults file (not from the code)."""
    import bmdpipe.config as config

    changed = tmp_path / "default.yaml"
    changed.write_text(DEFAULT_CONFIG.read_text().replace("min_width_mm: 1.0 ", "min_width_mm: 1.25 "))
    monkeypatch.setattr(config, "DEFAULT_CONFIG", changed)
    config.default_values.cache_clear()
    try:
        assert config.HaloSettings().min_width_mm == 1.25
        assert config.HaloSettings(min_width_mm=2.0).min_width_mm == 2.0
        assert config.load_settings().halo.min_width_mm == 1.25
    finally:
        config.default_values.cache_clear()


def test_mar_tissue_classes_must_be_ordered():
    """NMAR's prior classes air < soft tissue < bone: thresholds out of order are refused by name."""
    from pydantic import ValidationError

    from bmdpipe.config import HaloSettings

    assert HaloSettings(metal_artefact_reduction="nmar").mar_bone_hu == 100
    with pytest.raises(ValidationError, match="mar_air_hu < mar_bone_hu < mar_bone_max_hu"):
        HaloSettings(metal_artefact_reduction="nmar", mar_bone_hu=-600)
