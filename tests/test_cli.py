"""`bmdpipe run` end to end on a synthetic DICOM case: the output contract, skipped items, no PHI."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from typer.testing import CliRunner

from bmdpipe.cli import app
from bmdpipe.store.csv import CONTRACT_COLUMNS, read_csv_rows
from bmdpipe.synthetic import CaseSpec, make_case, write_dicom_series, write_labels_nifti

runner = CliRunner()


@pytest.fixture(scope="module")
def preop_case(tmp_path_factory):
    """A pre-operative case (L3-L5, Mindways phantom) written as DICOM with a localizer and strays."""
    root = tmp_path_factory.mktemp("preop")
    case = make_case(11, CaseSpec(levels=("L3", "L4", "L5"), phantom="mindways"))
    write_dicom_series(case, root / "dicom", add_localizer=True, add_stray_files=True)
    write_labels_nifti(case, root / "labels.nii.gz")
    return case, root


@pytest.fixture(scope="module")
def preop_run(preop_case):
    """Run the CLI in a subprocess (as a user would) and keep everything it printed."""
    case, root = preop_case
    out = root / "out"
    env = {**os.environ, "BMDPIPE_PSEUDONYM_KEY": "test-key", "MPLBACKEND": "Agg"}
    proc = subprocess.run(
        [sys.executable, "-m", "bmdpipe.cli", "run", str(root / "dicom"), "--out", str(out),
         "--phantom", "mindways-model3-ct", "--labels", str(root / "labels.nii.gz"), "-v"],
        capture_output=True, text=True, env=env, timeout=900,
    )
    return case, out, proc


def test_run_exits_0_and_writes_contract_files(preop_run):
    """Exit 0; every contract CSV exists with the contract's leading columns in order."""
    case, out, proc = preop_run
    assert proc.returncode == 0, proc.stderr[-3000:]
    for name, columns in CONTRACT_COLUMNS.items():
        header = (out / name).read_text().splitlines()[0].split(",")
        assert tuple(header[: len(columns)]) == columns, name


def test_series_csv_lists_skipped_items_with_reasons(preop_run):
    """The CT series is processed; the localizer and stray files are skipped with a reason."""
    case, out, proc = preop_run
    rows = read_csv_rows(out / "series.csv")
    processed = [r for r in rows if r["status"] == "processed"]
    assert [r["series_uid"] for r in processed] == [case.volume.meta.series_uid]
    skipped = [r for r in rows if r["status"] == "skipped"]
    assert any("localizer" in r["reason"].lower() for r in skipped)
    assert any(r["path"].endswith("README.txt") for r in skipped)
    assert all(r["reason"] for r in skipped)


def _roi_map(out, case, region):
    img = nib.load(out / "rois" / f"{case.volume.meta.series_uid}_{region}.nii.gz")
    return img, np.asarray(img.dataobj).transpose(2, 1, 0)  # NIfTI (i, j, k) -> (k, j, i)


def test_calibration_and_vbmd_rows(preop_run):
    """One phantom calibration row; region A of every level close to the noise-free truth.

    The truth is the generator's noise-free mineral density averaged over the ROI the
    pipeline chose (read back from the ROI map); the tight accuracy figures over many cases
    are printed by scripts/bench/roi_accuracy.py.
    """
    case, out, proc = preop_run
    cal = read_csv_rows(out / "calibration.csv")
    assert len(cal) == 1 and cal[0]["method"] == "phantom" and cal[0]["material"] == "K2HPO4"
    assert float(cal[0]["slope_hu_per_mg_cm3"]) == pytest.approx(
        case.truth.scanner.slope_hu_per_mg_cm3, rel=0.02)
    rows = read_csv_rows(out / "vbmd.csv")
    a_rows = {r["vertebra"]: r for r in rows if r["region"] == "A"}
    assert sorted(a_rows) == ["L3", "L4", "L5"]
    _, amap = _roi_map(out, case, "A")
    for vt in case.truth.vertebrae:
        r = a_rows[vt.name]
        assert r["side"] == "center" and r["calibration"] == "phantom" and r["roi_source"] == "auto"
        in_roi = amap == 10 * vt.verse_id
        assert int(r["n_voxels"]) == int(in_roi.sum()) > 500
        truth_mean = float(case.truth.mineral_mg_cm3[in_roi].mean())
        assert float(r["vbmd_mg_cm3"]) == pytest.approx(truth_mean, abs=3.0)
    # the standard error: the noise SD at the ROI (the generator's, estimated from the image) over the root of
    # the ROI's effective samples (noise correlated over 0.3 mm on 0.8 mm voxels: a little fewer than voxels),
    # over the slope;
    # 1 mm slices: every ROI's mean is precise, so none is named. The precision column: ROI A only.
    slope = float(cal[0]["slope_hu_per_mg_cm3"])
    for r in rows:
        n, n_eff = int(r["n_voxels"]), float(r["n_effective"])
        assert float(r["noise_sd_hu"]) == pytest.approx(case.truth.scanner.noise_sd_hu, rel=0.08)
        assert n / 1.6 < n_eff < n / 1.05
        assert float(r["vbmd_se_mg_cm3"]) == pytest.approx(float(r["noise_sd_hu"]) / np.sqrt(n_eff) / slope, rel=1e-3)
        assert float(r["vbmd_se_mg_cm3"]) < 3.0
        precision = r["vbmd_precision_sd_mg_cm3"]
        assert (float(precision) == pytest.approx(0.016 * float(r["vbmd_mg_cm3"]), rel=1e-3) if r["region"] == "A"
                else precision == "")
    processed = [s for s in read_csv_rows(out / "series.csv") if s["status"] == "processed"]
    assert processed and not any("imprecise ROIs" in s["reason"] for s in processed)


def test_roi_map_codes_and_alignment(preop_run):
    """`_A` holds 10 x VerSe id + 0 on the CT grid: its voxels lie inside the truth vertebra."""
    case, out, proc = preop_run
    img, data = _roi_map(out, case, "A")
    assert data.shape == case.volume.shape
    assert set(np.unique(data)) == {0, 220, 230, 240}
    # the NIfTI affine (RAS) maps voxel (0,0,0) to the CT's origin (LPS) with x, y negated
    origin_ras = img.affine @ [0, 0, 0, 1]
    np.testing.assert_allclose(origin_ras[:3] * [-1, -1, 1], case.volume.origin, atol=1e-3)
    for code, vid in ((220, 22), (230, 23), (240, 24)):
        inside = case.labels[data == code] == vid
        assert inside.mean() > 0.99


def test_no_phi_anywhere(preop_run):
    """No output file (CSV, NIfTI, PNG, database) nor log line holds the planted PHI."""
    case, out, proc = preop_run
    phi = [v for v in (case.truth.phi["PatientName"], case.truth.phi["PatientID"],
                       case.truth.phi["PatientBirthDate"]) if v]
    texts = [proc.stdout, proc.stderr]
    blobs = [p.read_bytes() for p in out.rglob("*") if p.is_file()]
    assert blobs, "nothing written"
    for value in phi:
        assert all(value not in t for t in texts), value
        assert all(value.encode() not in b for b in blobs), value


def test_help_explains_every_option():
    result = runner.invoke(app, ["run", "--help"], env={"COLUMNS": "200"})
    assert result.exit_code == 0
    for option in ("--out", "--phantom", "--labels", "--levels", "--manifest", "--config",
                   "--db", "--workers", "--scheduler", "--resume", "--no-resume"):
        assert option in result.output


@pytest.mark.parametrize(
    "args, fragment",
    [
        (["--levels", "L3,X9"], "X9"),
        (["--phantom", "no-such-phantom"], "no-such-phantom"),
        (["--workers", "2", "--scheduler", "tcp://127.0.0.1:1"], "either"),
    ],
)
def test_usage_errors_exit_2_and_write_nothing(tmp_path, args, fragment):
    out = tmp_path / "out"
    result = runner.invoke(app, ["run", str(tmp_path), "--out", str(out), *args])
    assert result.exit_code == 2, result.output
    assert fragment in result.output
    assert not out.exists()


def test_missing_input_exit_2(tmp_path):
    result = runner.invoke(app, ["run", str(tmp_path / "nope"), "--out", str(tmp_path / "o")])
    assert result.exit_code == 2
    assert "nope" in result.output


def test_preop_scan_has_empty_screws_csv(preop_run):
    """No screws in the scan: screws.csv holds the header only and the run still exits 0."""
    case, out, proc = preop_run
    assert proc.returncode == 0
    assert read_csv_rows(out / "screws.csv") == []


@pytest.fixture(scope="module")
def postop_run(tmp_path_factory):
    """A follow-up case with two L4 screws: one tight (no halo), one loose (2 mm, full arc)."""
    from bmdpipe.synthetic import ScrewSpec

    root = tmp_path_factory.mktemp("postop")
    screws = (ScrewSpec("L4", "left", halo_width_mm=2.0, halo_arc_fraction=1.0),
              ScrewSpec("L4", "right", halo_width_mm=0.0, halo_arc_fraction=0.0))
    case = make_case(12, CaseSpec(levels=("L3", "L4", "L5"), phantom="mindways", screws=screws,
                                  cancellous_mg_cm3=(100.0, 160.0)))
    write_dicom_series(case, root / "dicom", add_localizer=False, add_stray_files=False)
    write_labels_nifti(case, root / "labels.nii.gz")
    out = root / "out"
    res = runner.invoke(app, ["run", str(root / "dicom"), "--out", str(out), "--phantom",
                              "mindways-model3-ct", "--labels", str(root / "labels.nii.gz")])
    return case, out, res


def test_postop_screws_found_called_and_c_follows_them(postop_run):
    """Each screw is found at the right level and side, the clear calls are right, and the C
    ROI of that side lies along the detected screw (within its radius + 3 mm shell)."""
    case, out, res = postop_run
    assert res.exit_code == 0, res.output
    rows = {r["side"]: r for r in read_csv_rows(out / "screws.csv")}
    assert sorted(rows) == ["left", "right"]
    _, cmap = _roi_map(out, case, "C")
    for truth in case.truth.screws:
        row = rows[truth.side]
        assert row["vertebra"] == "L4"
        entry = np.array([float(row[f"entry_{a}_mm"]) for a in "xyz"])
        tip = np.array([float(row[f"tip_{a}_mm"]) for a in "xyz"])
        assert np.linalg.norm(tip - np.array(truth.tip_lps)) < 5.0
        assert row["loosened"] == ("true" if truth.loosened else "false")
        # C voxels of this side lie within radius + 3 mm (+ a voxel diagonal) of the detected axis
        code = 230 + (1 if truth.side == "left" else 2)
        pts = case.volume.index_to_lps(np.argwhere(cmap == code))
        assert len(pts) > 200
        axis = (tip - entry) / np.linalg.norm(tip - entry)
        rel = pts - entry
        dist = np.linalg.norm(rel - np.outer(rel @ axis, axis), axis=1)
        assert dist.max() <= float(row["diameter_mm"]) / 2 + 3.0 + 1.5


def test_postop_pedicle_rois_beside_screws_are_explained(postop_run):
    """The screws fill L4's pedicles: their B rows are measured from what bone is left or are empty,
    and an empty one is named with the screw as its cause in series.csv, never as 'every voxel
    excluded'; L3 and L5 (no screws) keep their B."""
    case, out, res = postop_run
    assert res.exit_code == 0, res.output
    (series,) = [r for r in read_csv_rows(out / "series.csv") if r["status"] == "processed"]
    b = {(r["vertebra"], r["side"]): int(r["n_voxels"]) for r in read_csv_rows(out / "vbmd.csv") if r["region"] == "B"}
    assert b[("L3", "left")] > 0 and b[("L5", "right")] > 0
    for side in ("left", "right"):
        assert f"L4 B {side} empty (every voxel excluded)" not in series["reason"]
        assert (f"L4 B {side} empty (the screw fills the pedicle)" in series["reason"]) == (b[("L4", side)] == 0)


def test_thoracic_level_measured_when_named(tmp_path):
    """Labels holding T12 and L1: by default only L1 is measured; with --levels T12,L1 both are, T12 with
    ROI codes 190/191/192 (10 x VerSe id 19 + side) inside its own label and ROI A close to the truth."""
    case = make_case(5, CaseSpec(levels=("T12", "L1"), phantom="mindways"))
    write_dicom_series(case, tmp_path / "dicom")
    write_labels_nifti(case, tmp_path / "labels.nii.gz")
    env = {"BMDPIPE_PSEUDONYM_KEY": "test-key", "MPLBACKEND": "Agg"}
    base = ["run", str(tmp_path / "dicom"), "--phantom", "mindways-model3-ct", "--labels", str(tmp_path / "labels.nii.gz")]
    result = runner.invoke(app, [*base, "--out", str(tmp_path / "lumbar")], env=env)
    assert result.exit_code == 0, result.output
    assert {r["vertebra"] for r in read_csv_rows(tmp_path / "lumbar" / "vbmd.csv")} == {"L1"}

    out = tmp_path / "named"
    result = runner.invoke(app, [*base, "--levels", "T12,L1", "--out", str(out)], env=env)
    assert result.exit_code == 0, result.output
    rows = read_csv_rows(out / "vbmd.csv")
    assert [r["vertebra"] for r in rows if r["region"] == "A"] == ["T12", "L1"]
    _, amap = _roi_map(out, case, "A")
    _, bmap = _roi_map(out, case, "B")
    assert set(np.unique(amap)) == {0, 190, 200} and {191, 192} <= set(np.unique(bmap))
    assert (case.labels[amap == 190] == 19).mean() > 0.99
    a_t12 = next(r for r in rows if r["vertebra"] == "T12" and r["region"] == "A")
    truth = float(case.truth.mineral_mg_cm3[amap == 190].mean())
    assert float(a_t12["vbmd_mg_cm3"]) == pytest.approx(truth, abs=3.0)


def test_input_with_nothing_to_measure_says_why(tmp_path):
    """A folder without a CT series: nothing fails (exit 0 as the contract says), and the output says
    that nothing was measured and why, counted by reason."""
    (tmp_path / "in").mkdir()
    for name in ("notes.txt", "protocol.txt"):
        (tmp_path / "in" / name).write_text("not an image")
    result = runner.invoke(app, ["run", str(tmp_path / "in"), "--out", str(tmp_path / "out")],
                           env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    assert "0 processed, 0 failed, 2 skipped" in result.output
    assert "no CT series to measure in the input" in result.output
    assert "2 x not a DICOM file" in result.output
    assert len(read_csv_rows(tmp_path / "out" / "series.csv")) == 2


def test_phantoms_lists_every_shipped_definition():
    from bmdpipe.calibrate import list_phantoms, load_phantom

    result = runner.invoke(app, ["phantoms"])
    assert result.exit_code == 0, result.output
    lines = {ln.split()[0]: ln for ln in result.output.splitlines() if ln.strip()}
    assert set(lines) == set(list_phantoms())
    for name, line in lines.items():
        d = load_phantom(name)
        assert f"{d.model} " in line and f" {len(d.rods)} rods" in line
        assert ("example values" in line) == d.example_values


def test_synth_writes_cases_and_a_manifest_run_can_read(tmp_path):
    from bmdpipe.calibrate import load_phantom
    from bmdpipe.manifest import read_manifest

    out = tmp_path / "sample"
    result = runner.invoke(app, ["synth", str(out)])
    assert result.exit_code == 0, result.output
    rows = read_manifest(out / "manifest.csv")
    assert len(rows) == 3
    by_id = {r.study_id: r for r in rows}
    assert len(by_id) == 3
    for r in rows:
        assert Path(r.path).is_dir() and any(Path(r.path).iterdir()), r.path
        assert Path(r.labels).is_file(), r.labels
        assert (Path(r.path).parent / "truth.json").is_file()
        load_phantom(r.phantom)
    post = [r for r in rows if "postop" in str(r.path)]
    assert len(post) == 1 and post[0].timepoint == "month_12"
    assert {r.timepoint for r in rows if r not in post} == {"baseline"}


def test_failed_calibration_keeps_screws_rois_and_exits_1(tmp_path):
    """A follow-up scan without its phantom, run with --phantom: the calibration fails, but the screws
    (with halos), the ROIs' HU statistics (no vBMD, calibration 'failed') and the QC images are written;
    series.csv names the failure and what was kept, and the exit status is 1."""
    from bmdpipe.synthetic import ScrewSpec

    screws = (ScrewSpec("L4", "left", halo_width_mm=2.0, halo_arc_fraction=1.0), ScrewSpec("L4", "right"))
    case = make_case(13, CaseSpec(levels=("L3", "L4", "L5"), phantom=None, screws=screws, spacing_mm=(2.0, 0.8, 0.8)))
    write_dicom_series(case, tmp_path / "dicom", add_localizer=False, add_stray_files=False)
    write_labels_nifti(case, tmp_path / "labels.nii.gz")
    out = tmp_path / "out"
    res = runner.invoke(app, ["run", str(tmp_path / "dicom"), "--out", str(out), "--phantom", "mindways-model3-ct",
                              "--labels", str(tmp_path / "labels.nii.gz")])
    assert res.exit_code == 1, res.output
    (series,) = [r for r in read_csv_rows(out / "series.csv") if r["series_uid"] == case.volume.meta.series_uid]
    assert series["status"] == "failed" and series["stage"] == "calibrate"
    assert "no calibration phantom found" in series["reason"] and "15 ROIs in HU (no vBMD)" in series["reason"]
    assert "2 screws" in series["reason"]
    assert read_csv_rows(out / "calibration.csv") == []
    vbmd = read_csv_rows(out / "vbmd.csv")
    assert len(vbmd) == 15 and all(r["vbmd_mg_cm3"] == "" and r["calibration"] == "failed" for r in vbmd)
    a = [r for r in vbmd if r["region"] == "A"]
    assert all(60.0 < float(r["hu_mean"]) < 400.0 for r in a)  # cancellous bone in HU
    rows = {r["side"]: r for r in read_csv_rows(out / "screws.csv")}
    assert sorted(rows) == ["left", "right"] and rows["left"]["loosened"] == "true"
    qc = sorted(p.name for p in (out / "qc").iterdir())
    assert any("roi_L4" in n for n in qc) and any("screw_L4" in n for n in qc)
    assert not any(n.endswith("_calibration.png") for n in qc)
