"""Warnings joined into one CSV cell (bmdpipe.rows.join_warnings); the plausibility gate in process_volume."""

from dataclasses import replace

import numpy as np
import pytest

from bmdpipe.config import OutputSettings, Settings
from bmdpipe.pipeline import SeriesJob, process_volume
from bmdpipe.rows import join_warnings
from bmdpipe.synthetic import CaseSpec, make_case, write_labels_nifti


def test_joined_warnings_split_back_into_the_warnings():
    warnings = ["rod A shaded; check the QC plot", "no --phantom given", "L5 B right empty"]
    cell = join_warnings(warnings)
    assert cell.split("; ") == ["rod A shaded, check the QC plot", "no --phantom given", "L5 B right empty"]
    assert join_warnings([]) == ""


def test_a_slice_of_air_through_l4_is_refused_not_measured(tmp_path):
    """The plausibility gate where the rows are built: an L4 slice read as air (what the SimpleITK fallback
    made of a truncated file, issue 20: L4 A 0.6 mg/cm3) leaves L4 A empty with the reason; the other levels
    are measured as on the intact volume, and the series' warnings name the refused ROI."""
    case = make_case(11, CaseSpec(levels=("L3", "L4", "L5"), phantom="mindways", spacing_mm=(2.0, 1.0, 1.0)))
    write_labels_nifti(case, tmp_path / "labels.nii.gz")
    job = SeriesJob(ref=None, phantom="mindways-model3-ct", labels=str(tmp_path / "labels.nii.gz"))
    settings = Settings(output=OutputSettings(qc_images=False, roi_maps=False))
    l4 = next(v for v in case.truth.vertebrae if v.name == "L4")
    k = int(round(case.volume.lps_to_index(np.array([l4.body_center_lps]))[0][0]))
    air = case.volume.array.copy()
    air[k] = -1024.0
    rows = {}
    for name, volume in (("intact", case.volume), ("air", replace(case.volume, array=air))):
        out = process_volume(volume, job, settings)
        rows[name] = {(r.vertebra, r.region.value, r.side.value): r for r in out["vbmd_rows"]}
        warnings = out["warnings"]
    refused = rows["air"][("L4", "A", "center")]
    assert np.isnan(refused.vbmd_mg_cm3) and np.isnan(refused.hu_mean) and refused.n_voxels > 500
    assert "of its voxels below -500 HU (air or gas" in refused.reason
    assert "implausible ROIs left empty, see vbmd.csv reason: L4 A center" in " ".join(warnings)
    for level in ("L3", "L5"):
        got, ref = rows["air"][(level, "A", "center")], rows["intact"][(level, "A", "center")]
        assert got.reason == "" and got.vbmd_mg_cm3 == pytest.approx(ref.vbmd_mg_cm3, abs=0.5)
    assert not any(r.reason for r in rows["intact"].values())
