"""`bmdpipe run` end to end on the real CTs of ../shared/data/real (TotalSegmentator examples)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from bmdpipe.store.csv import read_csv_rows

REAL = Path(__file__).resolve().parents[1].parent / "shared/data/real"
TS = REAL / "totalseg_example_ct"
TS_DICOM = REAL / "totalseg_example_ct_dicom"

pytestmark = pytest.mark.real_data


def _run(tmp_path: Path, *args: str) -> tuple[Path, subprocess.CompletedProcess]:
    if not REAL.is_dir():
        pytest.skip(f"real test data {REAL} absent")
    out = tmp_path / "out"
    env = {**os.environ, "BMDPIPE_PSEUDONYM_KEY": "test-key", "MPLBACKEND": "Agg"}
    proc = subprocess.run([sys.executable, "-m", "bmdpipe.cli", "run", *args, "--out", str(out)],
                          capture_output=True, text=True, env=env, timeout=900)
    return out, proc


def test_hip_implant_is_not_a_pedicle_screw(tmp_path):
    """The 3 mm CT holds a left proximal-femur implant (a straight metal stem, ~70 mm) and no spinal
    hardware: screws.csv stays empty and series.csv says what was ignored and where."""
    out, proc = _run(tmp_path, str(TS / "example_ct.nii.gz"), "--labels", str(TS / "example_seg_fast_force_split.nii.gz"),
                     "--phantom", "none")
    assert proc.returncode == 0, proc.stderr
    assert read_csv_rows(out / "screws.csv") == []
    (series,) = read_csv_rows(out / "series.csv")
    note = [w for w in series["reason"].split("; ") if w.startswith("straight metal object that is not a pedicle screw of a measured vertebra")]
    assert len(note) == 1 and "(L1, L2, L3, L4, L5)" in note[0]
    length = float(note[0].split("ignored: ")[1].split(" mm long")[0])
    assert 55.0 <= length <= 80.0  # a femoral stem's straight part, not a 25-65 mm pedicle screw
    # where it is: at the bottom of the scan (the hip; the first slice is at z = 94 mm), patient's left (+x)
    ends = [[float(c) for c in part.split(")")[0].split(", ")] for part in note[0].split("(")[2:4]]
    assert all(p[0] > 50.0 and 80.0 <= p[2] <= 160.0 for p in ends), ends
    rows = read_csv_rows(out / "vbmd.csv")
    assert [r["vertebra"] for r in rows][::5] == ["L1", "L2", "L3", "L4", "L5"]
    # 3 mm voxels, noise ~16 HU: the noise is estimated from the scan's fat and muscle; its correlation
    # (resampled to 3 mm) leaves each ROI fewer effective samples than voxels; even the small pedicle ROIs B
    # (30-100 voxels) have a standard error below 3 mg/cm3, so none is named as imprecise (their voxels'
    # spread, 80-105 HU against ~30 in A, is partial-volume cortex, not noise: the former SE, SD / sqrt(n),
    # read it as 7-12 mg/cm3)
    for r in rows:
        assert 8.0 < float(r["noise_sd_hu"]) < 30.0 and 0.5 < float(r["noise_correlation_mm"]) < 4.0
        assert float(r["n_effective"]) < int(r["n_voxels"])
        assert float(r["vbmd_se_mg_cm3"]) < 3.0
    assert not [w for w in series["reason"].split("; ") if w.startswith("imprecise ROIs")]


def test_vertebrae_cut_by_the_scan_are_named_not_measured(tmp_path):
    """The 20-slice DICOM series (labels T11, T12 only): without --levels the error says how to name them;
    named, both are refused because the scan cuts them (T11's body reaches the top slice, T12's the
    bottom one), and the contrast agent of this PET/CT is warned about."""
    labels = TS_DICOM / "example_seg_dicom.nii.gz"
    out, proc = _run(tmp_path, str(TS_DICOM / "dicom"), "--labels", str(labels), "--phantom", "none")
    assert proc.returncode == 1 and "--levels T11,T12" in read_csv_rows(out / "series.csv")[0]["reason"]

    out, proc = _run(tmp_path / "named", str(TS_DICOM / "dicom"), "--labels", str(labels), "--phantom", "none",
                     "--levels", "T11,T12")
    assert proc.returncode == 1
    (series,) = read_csv_rows(out / "series.csv")
    assert series["stage"] == "anatomy"
    assert "T11 not measured: its vertebral body reaches the superior end of the scan" in series["reason"]
    assert "T12 not measured: its vertebral body reaches the inferior end of the scan" in series["reason"]
    assert read_csv_rows(out / "vbmd.csv") == []


def test_t12_of_the_3mm_ct_is_cut_and_l1_measured(tmp_path):
    """Named with L1, the 3 mm CT's T12 (its body reaches the scan's top slice) is left out with a
    warning; L1 is measured."""
    out, proc = _run(tmp_path, str(TS / "example_ct.nii.gz"), "--labels", str(TS / "example_seg_fast_force_split.nii.gz"),
                     "--phantom", "none", "--levels", "T12,L1")
    assert proc.returncode == 0, proc.stderr
    assert {r["vertebra"] for r in read_csv_rows(out / "vbmd.csv")} == {"L1"}
    (series,) = read_csv_rows(out / "series.csv")
    assert "T12 not measured: its vertebral body reaches the superior end of the scan" in series["reason"]


def test_localised_run_names_l1_to_l5_and_places_roi_a_in_their_bodies(tmp_path):
    """Without labels, --levels L1..L5 names the 3 mm CT's five localised bodies (S1 is not taken for a
    sixth), no body is flagged as two run together, the hip stem is no screw, and each level's ROI A
    lies inside TotalSegmentator's body mask of the same level (vertebrae_pp ids 20-24)."""
    import nibabel as nib
    import numpy as np

    out, proc = _run(tmp_path, str(TS / "example_ct.nii.gz"), "--phantom", "none", "--levels", "L1,L2,L3,L4,L5")
    assert proc.returncode == 0, proc.stderr
    (series,) = read_csv_rows(out / "series.csv")
    assert series["status"] == "processed", series["reason"]
    assert "mm tall" not in series["reason"]
    assert read_csv_rows(out / "screws.csv") == []
    assert [r["vertebra"] for r in read_csv_rows(out / "vbmd.csv")][::5] == ["L1", "L2", "L3", "L4", "L5"]
    roi_a = np.asarray(nib.load(out / "rois" / f"{series['series_uid']}_A.nii.gz").dataobj)
    bodies = np.asarray(nib.load(TS / "spine_report/totalseg_vertebrae_pp_refined.nii.gz").dataobj)
    assert roi_a.shape == bodies.shape
    for vid in range(20, 25):  # VerSe L1-L5 = 20-24 (ROI A code 10 x id); vertebrae_pp uses the same ids
        inside = bodies[roi_a == 10 * vid]
        assert inside.size > 50 and np.mean(inside == vid) >= 0.95, (vid, np.unique(inside, return_counts=True))
