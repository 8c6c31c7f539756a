"""cal.json round trip, protocol compatibility, HA conversion and the QC plot."""

import json

import numpy as np
import pytest

from bmdpipe.calibrate.ha_conversion import ha_factor, to_ha_equivalent
from bmdpipe.calibrate.persist import check_compatible, load_calibration, save_calibration
from bmdpipe.errors import ConfigError
from bmdpipe.results import Calibration, Material, ReferenceMeasurement
from bmdpipe.volume import Volume


def _cal():
    refs = tuple(ReferenceMeasurement(n, h, 10.0, 100, k, (1.0, 2.0, 3.0), 6.5, 0.1)
                 for n, h, k in (("A", -69.5, -51.83), ("C", 176.7, 58.88), ("E", 462.9, 375.83)))
    return Calibration("phantom", "mindways-model3-ct", Material.K2HPO4, 1.24956, -10.15, 0.9997, 3, refs,
                       ("w",), {"sigma_ref": 1.46696, "arr": np.array([1.0, 2.0])})


def test_round_trip(tmp_path):
    p = tmp_path / "cal.json"
    save_calibration(_cal(), p, kvp=120.0, kernel="STANDARD")
    cal, kvp, kernel = load_calibration(p)
    assert (kvp, kernel) == (120.0, "STANDARD")
    assert cal.slope_hu_per_mg_cm3 == 1.24956 and cal.intercept_hu == -10.15 and cal.material == Material.K2HPO4
    assert cal.references[1].center_lps == (1.0, 2.0, 3.0) and cal.details["sigma_ref"] == 1.46696
    assert float(cal.density(-10.15 + 1.24956 * 150)) == pytest.approx(150.0)


def test_invalid_file_is_config_error(tmp_path):
    p = tmp_path / "cal.json"
    p.write_text(json.dumps({"format": "bmdpipe-calibration/1", "calibration": {"method": "phantom"}}))
    with pytest.raises(ConfigError, match="calibration.phantom"):
        load_calibration(p)
    p.write_text("{")
    with pytest.raises(ConfigError, match="not valid JSON"):
        load_calibration(p)


def test_compatibility_warnings():
    assert check_compatible(120, "STANDARD", 120.0, "standard") == []
    w = check_compatible(120, "STANDARD", 80, "BONE")
    assert any("kVp 80" in x for x in w) and any("kernel" in x for x in w)
    assert any("unknown" in x for x in check_compatible(None, "B", 120, "B"))


def test_ha_factor_and_conversion():
    """Goodsitt 1992: 0.86 at 80 kVp, 0.81 at 140 kVp; the same HU gives density_HA = density_K / f."""
    assert ha_factor(80) == pytest.approx(0.86) and ha_factor(140) == pytest.approx(0.81)
    assert ha_factor(110) == pytest.approx(0.835)
    cal = _cal()
    ha = to_ha_equivalent(cal, 120.0)
    assert ha.material == Material.HA and ha.details["ha_conversion"]["from"] == "K2HPO4"
    hu = 150.0
    assert float(ha.density(hu)) == pytest.approx(float(cal.density(hu)) / ha_factor(120.0))
    assert to_ha_equivalent(ha, 120.0) is ha
    assert any("kVp unknown" in w for w in to_ha_equivalent(cal, None).warnings)


def test_qc_plot_written(tmp_path):
    from bmdpipe.report.calibration_plot import save_calibration_qc

    vol = Volume(np.zeros((3, 40, 40), np.float32), (1.0, 1.0, 1.0))
    p = save_calibration_qc(_cal(), vol, tmp_path / "qc" / "new" / "cal.png")  # the folder is created
    assert p.exists() and p.stat().st_size > 5000
