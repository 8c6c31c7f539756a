"""Pedicle axis direction: the measured line, the level's typical angle and the body's tilt."""

import numpy as np
import pytest

from _realdata import TS, need, nifti_volume
from bmdpipe.anatomy import vertebrae_from_label_map
from bmdpipe.anatomy.labels import vertebrae_from_labels
from bmdpipe.anatomy.vertebra import body_sagittal_tilt, combined_angle, typical_transverse_angle
from bmdpipe.config import AnatomySettings
from bmdpipe.synthetic import CaseSpec, make_case
from bmdpipe.synthetic.spec import ORIENTATIONS


def _unit(a, b):
    d = np.subtract(b, a)
    return d / np.linalg.norm(d)


@pytest.mark.parametrize("spacing,mean_deg,max_deg", [((1.0, 0.8, 0.8), 3.0, 8.0), ((3.0, 3.0, 3.0), 5.0, 15.0)])
def test_axis_direction_matches_truth(spacing, mean_deg, max_deg):
    """Angle between the found and the true entry->target direction over L1-L5 of four cases in
    four orientations. On 3 mm voxels the pedicle spans 3-5 coarse sections: the line through
    them alone was ~12 degrees off on average on such cases; with the typical angle and the body's
    tilt it is within the bound."""
    errs = []
    for seed in range(4):
        orient = sorted(ORIENTATIONS)[seed % len(ORIENTATIONS)]
        c = make_case(seed, CaseSpec(orientation=orient, spacing_mm=spacing, levels=("L1", "L2", "L3", "L4", "L5")))
        for v in vertebrae_from_label_map(c.labels, c.volume, AnatomySettings()):
            assert len(v.pedicles) == 2, v.name
            for p in v.pedicles:
                t = c.truth.vertebra(v.name).pedicle(p.side)
                cos = _unit(p.entry_lps, p.target_lps) @ _unit(t.entry_lps, t.target_lps)
                errs.append(np.degrees(np.arccos(np.clip(cos, -1.0, 1.0))))
    assert np.mean(errs) < mean_deg and np.max(errs) < max_deg, (np.mean(errs), np.max(errs))


@pytest.mark.parametrize("spacing,tol_deg", [((1.0, 0.8, 0.8), 2.0), ((3.0, 3.0, 3.0), 2.5)])
@pytest.mark.parametrize("tilt_deg", [-15.0, 0.0, 8.0])
def test_body_sagittal_tilt_of_a_tilted_body(spacing, tilt_deg, tol_deg):
    """An elliptic cylinder 27 mm high, 34 mm deep, 46 mm wide, rotated about the left-right axis
    (the columns kept include some cut by the tilted front and back: ~9 % of the tilt is lost)."""
    shape = [int(np.ceil(80.0 / s)) for s in spacing]
    z, y, x = (np.arange(n) * s - 40.0 for n, s in zip(shape, spacing))
    zz, yy, xx = np.meshgrid(z, y, x, indexing="ij")
    th = np.radians(tilt_deg)
    # body frame: its AP axis rises by tilt_deg going posteriorly (+y)
    u = yy * np.cos(th) + zz * np.sin(th)
    w = -yy * np.sin(th) + zz * np.cos(th)
    body = ((u / 17.0) ** 2 + (xx / 23.0) ** 2 <= 1.0) & (np.abs(w) <= 13.5)
    assert body_sagittal_tilt(body, spacing) == pytest.approx(tilt_deg, abs=tol_deg)


def test_typical_angle_and_its_combination_with_a_measurement():
    s = AnatomySettings()
    table = s.pedicle_transverse_angle_deg
    assert typical_transverse_angle("L4", s) == table["L4"]
    assert typical_transverse_angle("T12", s) == table["L1"]  # nearest listed level
    assert typical_transverse_angle("S1", s) == table["L5"]
    assert typical_transverse_angle("V2", s) == pytest.approx(np.median(list(table.values())))
    # inverse-variance weights: (10 / 1^2 + 20 / 5^2) / (1 / 1^2 + 1 / 5^2)
    assert combined_angle(10.0, 1.0, 20.0, 5.0) == pytest.approx(10.8 / 1.04)
    assert combined_angle(None, np.inf, 20.0, 5.0) == 20.0
    assert combined_angle(10.0, 1e-6, 20.0, 5.0) == pytest.approx(10.0)


def test_real_3mm_ct_pedicles_converge_medially():
    """The real 3 mm CT with TotalSegmentator's vertebra labels: every pedicle axis of L1-L5 runs
    medially going anteriorly at a lumbar angle (5-35 deg); the line through its coarse sections
    alone gave 0 deg (straight antero-posterior) for 6 of 10 and one lateral."""
    vol = nifti_volume(need(TS / "example_ct.nii.gz"))
    verts = vertebrae_from_labels(need(TS / "spine_report/totalseg.nii.gz"), vol)
    assert [v.name for v in verts] == ["L1", "L2", "L3", "L4", "L5"]
    for v in verts:
        assert len(v.pedicles) == 2, v.name
        for p in v.pedicles:
            d = _unit(p.entry_lps, p.target_lps)
            medial = np.sign(np.subtract(v.canal_center_lps, p.isthmus_lps)[0])
            convergence = np.degrees(np.arctan2(medial * d[0], abs(d[1])))
            assert 5.0 <= convergence <= 35.0, (v.name, p.side, convergence)
