"""Phantom definitions: shipped YAMLs load, user files work, invalid files name the field."""

import pytest

from bmdpipe.calibrate.definitions import list_phantoms, load_phantom
from bmdpipe.errors import ConfigError
from bmdpipe.results import Material

SHIPPED = {"mindways-model3-ct", "mindways-model3-qa", "qrm-bdc-3", "qrm-bdc-6", "b-mas-200",
           "image-analysis-qct-3d-plus", "european-spine-phantom"}


def test_all_shipped_definitions_load():
    """Every phantom named in the issue is shipped and valid."""
    assert SHIPPED <= set(list_phantoms())
    for name in list_phantoms():
        d = load_phantom(name)
        assert d.name == name


def test_mindways_example_certificate():
    """The Mindways file holds the science.md certificate, flagged as example values."""
    d = load_phantom("mindways-model3-ct")
    assert d.model == "two-component" and d.material == Material.K2HPO4 and d.example_values
    e = {r.name: (r.mineral_mg_cm3, r.water_mg_cm3) for r in d.rods}
    assert e["E"] == (375.83, 923.20) and e["A"] == (-51.83, 1012.25)
    assert [r.name for r in d.sorted_rods()] == ["A", "B", "C", "D", "E"]


def test_ha_phantom_values():
    assert [r.mineral_mg_cm3 for r in load_phantom("qrm-bdc-6").sorted_rods()] == [0, 100, 200, 400, 600, 800]
    assert [r.mineral_mg_cm3 for r in load_phantom("image-analysis-qct-3d-plus").rods] == [8.0, 97.3, 189.8]


def test_user_file(tmp_path):
    p = tmp_path / "mine.yaml"
    p.write_text("name: mine\nmodel: linear\nmaterial: HA\nrods:\n  - {name: a, mineral_mg_cm3: 0}\n"
                 "  - {name: b, mineral_mg_cm3: 150}\n")
    d = load_phantom(p)
    assert d.name == "mine" and len(d.rods) == 2


@pytest.mark.parametrize("body,field", [
    ("name: x\nmodel: two-component\nmaterial: K2HPO4\nrods:\n  - {name: A, mineral_mg_cm3: 1, water_mg_cm3: 1000}\n"
     "  - {name: B, mineral_mg_cm3: 100}\n", "water_mg_cm3"),
    ("name: x\nmodel: linear\nmaterial: HA\nrods:\n  - {name: A, mineral_mg_cm3: abc}\n  - {name: B, mineral_mg_cm3: 1}\n",
     "rods.0.mineral_mg_cm3"),
    ("name: x\nmodel: quadratic\nmaterial: HA\nrods:\n  - {name: A, mineral_mg_cm3: 0}\n  - {name: B, mineral_mg_cm3: 1}\n",
     "model"),
    ("name: x\nmodel: linear\nmaterial: HA\nrods:\n  - {name: A, mineral_mg_cm3: 0, colour: red}\n"
     "  - {name: B, mineral_mg_cm3: 1}\n", "rods.0.colour"),
])
def test_invalid_file_names_the_field(tmp_path, body, field):
    p = tmp_path / "bad.yaml"
    p.write_text(body)
    with pytest.raises(ConfigError, match=field.replace(".", r"\.")) as exc:
        load_phantom(p)
    assert "bad.yaml" in str(exc.value)


def test_unknown_name_lists_shipped():
    with pytest.raises(ConfigError, match="mindways-model3-ct"):
        load_phantom("no-such-phantom")
