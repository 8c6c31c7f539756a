"""A processed synthetic series (``bmdpipe run`` on a small pre-operative case) to review, and a fresh copy per test."""

from __future__ import annotations

import shutil

import pytest
from typer.testing import CliRunner

from bmdpipe.cli import app
from bmdpipe.store.csv import read_csv_rows
from bmdpipe.synthetic import CaseSpec, make_case, write_dicom_series, write_labels_nifti


@pytest.fixture(scope="session")
def processed_run(tmp_path_factory):
    """(case, out, series_uid): L4-L5 with a Mindways phantom, written as DICOM and measured by `bmdpipe run`."""
    case = make_case(11, CaseSpec(levels=("L4", "L5"), phantom="mindways", spacing_mm=(1.5, 0.8, 0.8)))
    return _measured(case, tmp_path_factory.mktemp("review_case"))


@pytest.fixture(scope="session")
def processed_postop_run(tmp_path_factory):
    """(case, out, series_uid): a follow-up case with L4 screws (left loose: 2 mm halo all round), measured."""
    from bmdpipe.synthetic import ScrewSpec

    root = tmp_path_factory.mktemp("review_postop")
    screws = (ScrewSpec("L4", "left", halo_width_mm=2.0, halo_arc_fraction=1.0),
              ScrewSpec("L4", "right", halo_width_mm=0.0, halo_arc_fraction=0.0))
    case = make_case(12, CaseSpec(levels=("L4", "L5"), phantom="mindways", screws=screws, spacing_mm=(1.5, 0.8, 0.8)))
    return _measured(case, root, add_localizer=False, add_stray_files=False)


def _measured(case, root, **dicom_options):
    """(case, out, series_uid): ``case`` written as DICOM under ``root`` and measured by `bmdpipe run`."""
    write_dicom_series(case, root / "dicom", **dicom_options)
    write_labels_nifti(case, root / "labels.nii.gz")
    out = root / "out"
    result = CliRunner().invoke(app, ["run", str(root / "dicom"), "--out", str(out), "--phantom", "mindways-model3-ct",
                                      "--labels", str(root / "labels.nii.gz")],
                                env={"BMDPIPE_PSEUDONYM_KEY": "review-test"})
    assert result.exit_code == 0, result.output
    (uid,) = [r["series_uid"] for r in read_csv_rows(out / "series.csv") if r["status"] == "processed"]
    return case, out, uid


@pytest.fixture
def run_copy(processed_run, tmp_path):
    """(case, out, series_uid) with ``out`` a copy of the run's outputs that a test may change."""
    case, out, uid = processed_run
    copy = tmp_path / "out"
    shutil.copytree(out, copy)
    return case, copy, uid
