"""The review step without a display: edit a processed series' ROI maps, save, re-measure, audit, two readers."""

from __future__ import annotations

import datetime as dt

import nibabel as nib
import numpy as np
import pytest
from sqlalchemy.orm import Session
from typer.testing import CliRunner

from bmdpipe.cli import app
from bmdpipe.config import load_settings
from bmdpipe.errors import ConfigError, ReviewError
from bmdpipe.ingest import discover, load_series
from bmdpipe.review.io import check_reviewer, open_review, reviewed_map_path, save_review
from bmdpipe.review.model import ReviewSession, ellipse_slab, trajectory_cylinder
from bmdpipe.store import db
from bmdpipe.store.csv import read_csv_rows

SAVED_AT = dt.datetime(2026, 12, 4, 10, 30, tzinfo=dt.timezone.utc)


def _map(path):
    """A NIfTI label map as (k, j, i), the CT's array order."""
    return np.asarray(nib.load(path).dataobj).transpose(2, 1, 0)


def _hu(case_dir):
    """The CT the run measured, in HU (loaded again from its DICOM files)."""
    settings = load_settings()
    (ref,) = discover([case_dir / "dicom"], settings.ingest).series
    return load_series(ref, settings.ingest).array.astype(np.float64)


def _rows(out, name="vbmd.csv"):
    return {(r["vertebra"], r["region"], r["side"]): r for r in read_csv_rows(out / name)}


def _erase_upper_half(label_map, code):
    """Erase the voxels of ``code`` above its median slice; returns how many were erased."""
    k = np.nonzero(label_map == code)[0]
    erase = (label_map == code) & (np.arange(label_map.shape[0])[:, None, None] < np.median(k))
    label_map[erase] = 0
    return int(erase.sum())


def test_edit_save_remeasure_round_trip(run_copy):
    """Erasing half of L4 B left and saving changes exactly that ROI's vbmd.csv and database rows
    (roi_source manual); its values equal a direct computation on the saved mask with the stored
    calibration; the automatic maps are kept; one audit row holds who, when, before and after."""
    case, out, uid = run_copy
    before = _rows(out)
    auto_b = (out / "rois" / f"{uid}_B.nii.gz").read_bytes()
    session = ReviewSession(open_review(out, uid, "AB"))
    assert session.changes() == ()
    n_erased = _erase_upper_half(session.maps["B"], 231)
    assert n_erased > 20
    saved = save_review(session, out, when=SAVED_AT)
    assert [c.key.name for c in saved.changes] == ["L4 B left"]

    after = _rows(out)
    assert after.keys() == before.keys()
    changed = [k for k in before if before[k] != after[k]]
    assert changed == [("L4", "B", "left")]
    row = after[("L4", "B", "left")]
    assert row["roi_source"] == "manual" and row["reviewer"] == "AB" and row["excluded_fraction"] == "0"

    # direct computation: the saved mask, the CT's HU and calibration.csv's line
    mask = _map(reviewed_map_path(out, "AB", uid, "B")) == 231
    assert int(mask.sum()) == int(before[("L4", "B", "left")]["n_voxels"]) - n_erased == int(row["n_voxels"])
    hu = _hu(_case_dir(out))[mask]
    (cal,) = read_csv_rows(out / "calibration.csv")
    expected = (hu.mean() - float(cal["intercept_hu"])) / float(cal["slope_hu_per_mg_cm3"])
    assert float(row["hu_mean"]) == pytest.approx(hu.mean(), rel=1e-5)
    assert float(row["vbmd_mg_cm3"]) == pytest.approx(expected, rel=1e-4)
    assert float(row["vbmd_mg_cm3"]) != pytest.approx(float(before[("L4", "B", "left")]["vbmd_mg_cm3"]), abs=1e-3)
    # the other regions' saved maps are the automatic ones; the automatic files are untouched
    assert (out / "rois" / f"{uid}_B.nii.gz").read_bytes() == auto_b
    assert np.array_equal(_map(reviewed_map_path(out, "AB", uid, "A")), _map(out / "rois" / f"{uid}_A.nii.gz"))

    engine = db.open_db(db.default_url(out))
    with Session(engine) as s:
        stored = {(r["vertebra"], r["region"], r["side"]): r for r in db.query_vbmd(s, series_uids=[uid])}
        (edit,) = db.query_roi_edits(s, uid)
    engine.dispose()
    assert stored[("L4", "B", "left")]["roi_source"] == "manual"
    assert stored[("L4", "B", "left")]["vbmd_mg_cm3"] == pytest.approx(float(row["vbmd_mg_cm3"]), rel=1e-5)
    assert {k for k, r in stored.items() if r["roi_source"] == "manual"} == {("L4", "B", "left")}
    assert (edit["who"], edit["vertebra"], edit["region"], edit["side"]) == ("AB", "L4", "B", "left")
    assert edit["when"].replace(tzinfo=dt.timezone.utc) == SAVED_AT
    what = edit["what"]
    assert what["before"]["vbmd_mg_cm3"] == pytest.approx(float(before[("L4", "B", "left")]["vbmd_mg_cm3"]), rel=1e-5)
    assert what["before"]["roi_source"] == "auto"
    assert what["after"]["vbmd_mg_cm3"] == pytest.approx(float(row["vbmd_mg_cm3"]), rel=1e-5)
    assert (what["voxels_removed"], what["voxels_added"], what["label_code"]) == (n_erased, 0, 231)


def _case_dir(out):
    """The folder the run's DICOM came from (series.csv's path)."""
    from pathlib import Path

    (row,) = [r for r in read_csv_rows(out / "series.csv") if r["status"] == "processed"]
    return Path(row["path"]).parent


def test_two_readers_side_by_side(run_copy):
    """A second reviewer's reading is stored beside the first's: vbmd_reviewers.csv and `bmdpipe export` hold
    one row per ROI and reviewer (and the automatic reading); each reopens their own maps."""
    case, out, uid = run_copy
    first = ReviewSession(open_review(out, uid, "AB"))
    _erase_upper_half(first.maps["B"], 231)
    save_review(first, out)
    second = open_review(out, uid, "CD")
    assert np.array_equal(second.start_maps["B"], second.auto_maps["B"])  # CD starts from the automatic ROIs
    session = ReviewSession(second)
    a = session.maps["A"] == 240
    k = np.nonzero(a)[0]
    center = np.argwhere(a).mean(0)
    session.replace_roi(next(key for key in session.keys if key.name == "L5 A center"),
                        ellipse_slab(a.shape, center[1:], (6.0, 9.0), 0.3, (k.min(), k.max() + 1)))
    assert [c.key.name for c in save_review(session, out).changes] == ["L5 A center"]

    readings = read_csv_rows(out / "vbmd_reviewers.csv")
    n_rois = len(read_csv_rows(out / "vbmd.csv"))
    by = {}
    for r in readings:
        by.setdefault(r["reviewer"], {})[(r["vertebra"], r["region"], r["side"])] = r
    assert sorted(by) == ["AB", "CD", "auto"] and all(len(v) == n_rois for v in by.values())
    assert by["AB"][("L4", "B", "left")]["roi_source"] == "manual" == by["CD"][("L5", "A", "center")]["roi_source"]
    assert by["CD"][("L4", "B", "left")]["roi_source"] == "auto" == by["AB"][("L5", "A", "center")]["roi_source"]
    assert by["auto"][("L4", "B", "left")]["vbmd_mg_cm3"] != by["AB"][("L4", "B", "left")]["vbmd_mg_cm3"]
    current = _rows(out)
    assert current[("L4", "B", "left")]["reviewer"] == "AB" and current[("L5", "A", "center")]["reviewer"] == "CD"
    cd_a = _map(reviewed_map_path(out, "CD", uid, "A"))
    assert int(current[("L5", "A", "center")]["n_voxels"]) == int((cd_a == 240).sum())

    exported = out / "export"
    result = CliRunner().invoke(app, ["export", "--db", db.default_url(out), "--out", str(exported)])
    assert result.exit_code == 0, result.output
    assert read_csv_rows(exported / "vbmd_reviewers.csv") == readings
    again = open_review(out, uid, "AB")  # AB reopens their own maps and rows
    assert (again.start_maps["B"] == 231).sum() == int(by["AB"][("L4", "B", "left")]["n_voxels"])
    session = ReviewSession(again)
    session.reset_vertebra("L4")  # AB takes the automatic L4 B left back
    (change,) = save_review(session, out).changes
    assert (change.before.roi_source, change.after.roi_source, change.after.reviewer) == ("manual", "auto", "")
    restored = _rows(out)[("L4", "B", "left")]
    assert (restored["roi_source"], restored["reviewer"]) == ("auto", "")
    assert restored["vbmd_mg_cm3"] == by["auto"][("L4", "B", "left")]["vbmd_mg_cm3"]


def test_reset_vertebra_gives_back_the_automatic_rows(run_copy):
    """After edits, resetting the vertebra restores its automatic voxels and rows: nothing left to save."""
    case, out, uid = run_copy
    start = open_review(out, uid, "AB")
    session = ReviewSession(start)
    _erase_upper_half(session.maps["B"], 231)
    session.maps["A"][session.maps["A"] == 230] = 0
    assert {c.key.name for c in session.changes()} == {"L4 B left", "L4 A center"}
    assert session.rows() != start.auto_rows
    session.reset_vertebra("L4")
    assert session.changes() == () and session.rows() == start.auto_rows
    assert save_review(session, out).changes == ()


def test_an_emptied_roi_is_left_empty_not_a_number(run_copy):
    """Erasing every voxel of an ROI saves it with 0 voxels and no density (never a plausible number)."""
    case, out, uid = run_copy
    session = ReviewSession(open_review(out, uid, "AB"))
    session.maps["C"][session.maps["C"] == 232] = 0
    save_review(session, out)
    row = _rows(out)[("L4", "C", "right")]
    assert row["n_voxels"] == "0" and row["vbmd_mg_cm3"] == "" and row["roi_source"] == "manual"


def test_open_review_names_what_is_wrong(run_copy):
    """An unknown series, a missing ROI map or a reserved reviewer name is refused with a message saying so."""
    case, out, uid = run_copy
    with pytest.raises(ReviewError, match="not in .*series.csv"):
        open_review(out, "1.2.3", "AB")
    (out / "rois" / f"{uid}_C.nii.gz").unlink()
    with pytest.raises(ReviewError, match="_C.nii.gz is gone"):
        open_review(out, uid, "AB")
    for bad in ("auto", "", "a b", "../x"):
        with pytest.raises(ConfigError, match="reviewer name"):
            check_reviewer(bad)


def test_ellipse_slab_area_and_slices():
    """The ellipse holds pi a b voxels per slice (within the pixelation), only in the slice range given."""
    m = ellipse_slab((10, 80, 90), (40.0, 45.0), (12.0, 20.0), 0.7, (3, 7))
    assert not m[:3].any() and not m[7:].any()
    assert m[3].sum() == pytest.approx(np.pi * 12 * 20, rel=0.03)
    assert np.array_equal(m[3], m[6])


def test_trajectory_cylinder_holds_the_voxels_within_the_radius(processed_run):
    """Every voxel of a planned trajectory lies within its radius of the segment; the count is pi r^2 L."""
    case, out, uid = processed_run
    vol = case.volume
    centre = vol.index_to_lps(np.array([[s // 2 for s in vol.shape]]))[0]
    entry, tip = centre + [-10.0, 25.0, 3.0], centre + [5.0, -15.0, -2.0]
    m = trajectory_cylinder(vol, entry, tip, 3.25)
    p = vol.index_to_lps(np.argwhere(m))
    ab = tip - entry
    t = np.clip((p - entry) @ ab / (ab @ ab), 0, 1)
    assert np.linalg.norm(p - (entry + t[:, None] * ab), axis=1).max() <= 3.25
    length = np.linalg.norm(ab)
    expected = (np.pi * 3.25 ** 2 * length + 4 / 3 * np.pi * 3.25 ** 3) / vol.voxel_volume_mm3
    assert m.sum() == pytest.approx(expected, rel=0.05)
