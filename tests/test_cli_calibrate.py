"""Asynchronous calibration through the CLI: `bmdpipe calibrate --save`, then `run --calibration`."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

sys.path.insert(0, str(Path(__file__).resolve().parent / "anatomy"))
from _realdata import ANKLE  # noqa: E402

from bmdpipe.cli import app  # noqa: E402
from bmdpipe.store.csv import read_csv_rows  # noqa: E402
from bmdpipe.synthetic import CaseSpec, make_case, write_dicom_series, write_labels_nifti  # noqa: E402

runner = CliRunner()
SCANNER = {"slope_hu_per_mg_cm3": 1.12, "intercept_hu": -6.0, "kev": 66.0}


@pytest.fixture(scope="module")
def scans(tmp_path_factory):
    """A phantom-only scan and a patient scan without phantom, same scanner response."""
    root = tmp_path_factory.mktemp("async")
    phantom = make_case(3, CaseSpec(levels=("L4",), phantom="mindways", spacing_mm=(2.0, 0.8, 0.8),
                                    **SCANNER))
    patient = make_case(4, CaseSpec(levels=("L3", "L4"), phantom=None, material="K2HPO4",
                                    spacing_mm=(2.0, 0.8, 0.8), **SCANNER))
    write_dicom_series(phantom, root / "phantom", add_localizer=False, add_stray_files=False)
    write_dicom_series(patient, root / "patient", add_localizer=False, add_stray_files=False)
    write_labels_nifti(patient, root / "labels.nii.gz")
    return root, patient


def test_calibrate_then_run_with_saved_calibration(scans, tmp_path):
    """The saved fit reproduces the scanner's slope; `run --calibration` applies it to the patient."""
    root, patient = scans
    cal_path = tmp_path / "cal.json"
    res = runner.invoke(app, ["calibrate", str(root / "phantom"), "--phantom", "mindways-model3-ct",
                              "--save", str(cal_path), "--qc", str(tmp_path / "cal.png")])
    assert res.exit_code == 0, res.output
    saved = json.loads(cal_path.read_text())
    assert saved["kvp"] == 120
    assert (tmp_path / "cal.png").stat().st_size > 10_000

    out = tmp_path / "out"
    res = runner.invoke(app, ["run", str(root / "patient"), "--out", str(out),
                              "--calibration", str(cal_path), "--labels", str(root / "labels.nii.gz")])
    assert res.exit_code == 0, res.output
    (row,) = read_csv_rows(out / "calibration.csv")
    assert row["material"] == "K2HPO4" and row["method"] == "phantom"
    assert float(row["slope_hu_per_mg_cm3"]) == pytest.approx(SCANNER["slope_hu_per_mg_cm3"], rel=0.01)
    assert float(row["intercept_hu"]) == pytest.approx(SCANNER["intercept_hu"], abs=3)
    assert "differs" not in row["warnings"]  # same kVp and kernel: no protocol warning
    a_rows = [r for r in read_csv_rows(out / "vbmd.csv") if r["region"] == "A"]
    assert [r["vertebra"] for r in a_rows] == ["L3", "L4"]


@pytest.fixture(scope="module")
def same_scanner(tmp_path_factory):
    """A phantom scan and a phantomless patient scan of one scanner (same effective energy, physical
    slope; each scan its own gain, offset, noise and blur: two days), the phantom fit saved."""
    root = tmp_path_factory.mktemp("precal")
    phantom = make_case(5, CaseSpec(levels=("L4",), phantom="mindways", spacing_mm=(2.0, 0.8, 0.8), kev=68.0))
    patient = make_case(6, CaseSpec(levels=("L3", "L4"), phantom=None, spacing_mm=(2.0, 0.8, 0.8), kev=68.0))
    write_dicom_series(phantom, root / "phantom", add_localizer=False, add_stray_files=False)
    write_dicom_series(patient, root / "patient", add_localizer=False, add_stray_files=False)
    write_labels_nifti(patient, root / "labels.nii.gz")
    write_labels_nifti(phantom, root / "phantom_labels.nii.gz")
    res = runner.invoke(app, ["calibrate", str(root / "phantom"), "--phantom", "mindways-model3-ct",
                              "--save", str(root / "cal.json")])
    assert res.exit_code == 0, res.output
    return root, patient


def test_run_precalibrated_by_a_phantom_scan(same_scanner, tmp_path):
    """`run --phantom none --precalibration cal.json`: each series gets its own tissue fit, anchored at the
    phantom scan's effective energy (68 keV within 1 keV); the patient's density at 150 mg/cm3 is right
    within 5 % and calibration.csv says which energy anchored it."""
    root, patient = same_scanner
    out = tmp_path / "out"
    res = runner.invoke(app, ["run", str(root / "patient"), "--out", str(out), "--phantom", "none",
                              "--precalibration", str(root / "cal.json"), "--labels", str(root / "labels.nii.gz")])
    assert res.exit_code == 0, res.output
    (row,) = read_csv_rows(out / "calibration.csv")
    assert row["method"] == "internal" and row["phantom"] == "internal"
    assert float(row["precalibrated_kev"]) == pytest.approx(68.0, abs=1.0)
    assert float(row["effective_kev"]) == pytest.approx(68.0, abs=2.0)
    sc = patient.truth.scanner
    density = (sc.intercept_hu + sc.slope_hu_per_mg_cm3 * 150.0 - float(row["intercept_hu"])) / float(
        row["slope_hu_per_mg_cm3"])
    assert density == pytest.approx(150.0, rel=0.05)
    assert "differs" not in row["warnings"] and "no --phantom given" not in row["warnings"]
    assert "phantom seems to be in the scan" not in row["warnings"]


def test_phantomless_run_of_a_scan_with_a_phantom_names_it(same_scanner, tmp_path):
    """`--phantom none` on the phantom scan: it is calibrated from its tissues as asked, and the
    warnings say a phantom (its five rods) is in the scan and how to use it."""
    root, _ = same_scanner
    out = tmp_path / "out"
    res = runner.invoke(app, ["run", str(root / "phantom"), "--out", str(out), "--phantom", "none",
                              "--labels", str(root / "phantom_labels.nii.gz")])
    assert res.exit_code == 0, res.output
    (row,) = read_csv_rows(out / "calibration.csv")
    assert row["method"] == "internal"
    assert "calibration phantom seems to be in the scan (5 rods" in row["warnings"]
    assert "--phantom NAME" in row["warnings"]


@pytest.mark.parametrize("extra, message", [
    (["--precalibration", "CAL", "--calibration", "CAL"], "not both"),
    (["--precalibration", "CAL", "--phantom", "mindways-model3-ct"], "for series without a phantom"),
    (["--precalibration", "MISSING"], "does not exist"),
    (["--precalibration", "BAD"], "not a bmdpipe calibration file"),
])
def test_precalibration_usage_errors(same_scanner, tmp_path, extra, message):
    """Contradictory or missing pre-calibration options: exit 2 with the reason, before any work."""
    root, _ = same_scanner
    cal = str(root / "cal.json")
    args = ["run", str(root / "patient"), "--out", str(tmp_path / "out")]
    (tmp_path / "bad.json").write_text('{"format": "something else"}')
    files = {"CAL": cal, "MISSING": str(tmp_path / "missing.json"), "BAD": str(tmp_path / "bad.json")}
    args += [files.get(a, a) for a in extra]
    res = runner.invoke(app, args)
    assert res.exit_code == 2, res.output
    assert message in res.output
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("scan, definition", [("patient", "qrm-bdc-6"), ("phantom", "qrm-bdc-6")])
def test_calibrate_fails_cleanly(scans, scan, definition):
    """No phantom in the scan, or a definition that does not match the phantom (6 HA rods
    asked, 5 Mindways rods present): exit 1 with a message, never a silent wrong fit."""
    root, _ = scans
    res = runner.invoke(app, ["calibrate", str(root / scan), "--phantom", definition])
    assert res.exit_code == 1, res.output
    assert "calibration failed" in res.output and "Traceback" not in res.output




def _rod_definition(path, values):
    rods = "\n".join(f"  - {{name: R{i + 1}, mineral_mg_cm3: {v}}}" for i, v in enumerate(values))
    path.write_text(f"name: user-{len(values)}-rods\nmodel: linear\nmaterial: HA\nrods:\n{rods}\n")
    return path


@pytest.mark.real_data
def test_calibrate_real_short_phantom_scan(tmp_path):
    """The real 9-slice Calgary phantom scan (shorter than a lumbar volume's ingest.min_slices) is
    calibrated through ingest and the CLI. Its pad holds six rods (five bright, one faint at ~-106 HU);
    the certificate is unknown, so the user definition here is made up and only finding is checked:
    six rods, in a row under the legs, each in its own place, with the protocol saved for reuse."""
    if not ANKLE.is_dir():
        pytest.skip(f"real data {ANKLE} absent")
    definition = _rod_definition(tmp_path / "six.yaml", [-50, 0, 100, 250, 400, 600])
    cal_path = tmp_path / "cal.json"
    res = runner.invoke(app, ["calibrate", str(ANKLE), "--phantom", str(definition), "--save", str(cal_path),
                              "--qc", str(tmp_path / "qc.png")])
    assert res.exit_code == 0, res.output
    saved = json.loads(cal_path.read_text())
    assert saved["kvp"] == 120 and saved["kernel"] == "BONEPLUS"
    refs = saved["calibration"]["references"]
    hu = sorted(r["hu_mean"] for r in refs)
    for got, want in zip(hu, [-106, 7, 173, 422, 645, 907]):
        assert got == pytest.approx(want, abs=30)
    x = sorted(r["center_lps"][0] for r in refs)  # one row: ~35 mm pitch left to right, same height
    assert np.all(np.diff(x) > 25) and np.ptp([r["center_lps"][1] for r in refs]) < 10
    assert (tmp_path / "qc.png").stat().st_size > 10_000


@pytest.mark.real_data
def test_calibrate_real_scan_with_wrong_rod_count(tmp_path):
    """A 5-rod definition for the 6-rod pad: exit 1, and the message names both counts."""
    if not ANKLE.is_dir():
        pytest.skip(f"real data {ANKLE} absent")
    definition = _rod_definition(tmp_path / "five.yaml", [0, 100, 250, 400, 600])
    res = runner.invoke(app, ["calibrate", str(ANKLE), "--phantom", str(definition)])
    assert res.exit_code == 1, res.output
    assert "found 6 rods but phantom 'user-5-rods' has 5" in res.output
