"""The README demo's post-operative case (sample_data/postop_screws): rods through the tulip heads."""

import numpy as np
import pytest

from bmdpipe.anatomy.labels import vertebrae_from_label_map
from bmdpipe.config import HaloSettings, ScrewSettings
from bmdpipe.screws import detect_screws, measure_screws

synthetic = pytest.importorskip("bmdpipe.synthetic.case")
from bmdpipe.synthetic.dicom import demo_postop_spec  # noqa: E402

DEMO_POSTOP_SEED = 103  # write_sample_data's seed of postop_screws


@pytest.fixture(scope="module")
def demo_screws():
    case = synthetic.make_case(DEMO_POSTOP_SEED, demo_postop_spec())
    vol = case.volume
    found = measure_screws(vol, detect_screws(vol, ScrewSettings(), vertebrae=vertebrae_from_label_map(case.labels, vol)),
                           HaloSettings(), ScrewSettings())
    by_place = {(s.vertebra, s.side.value): s for s in found}
    return [(t, by_place.get((t.vertebra, t.side))) for t in case.truth.screws]


@pytest.mark.slow
def test_rods_do_not_tilt_the_screw_axes(demo_screws):
    """The rods joining the heads pulled the axes 3-4 deg off (one refinement left 0.9-1.6 deg and 0.3-0.56 mm
    at the shaft's ends; the blur fitted about them spread a dark ring round every screw). Refined until they
    stop moving: within 0.2 deg and 0.1 mm."""
    for truth, found in demo_screws:
        assert found is not None, (truth.vertebra, truth.side)
        axis = np.subtract(found.tip_lps, found.entry_lps)
        axis /= np.linalg.norm(axis)
        assert np.degrees(np.arccos(min(1.0, abs(axis @ truth.direction)))) < 0.2
        for share in (0.1, 0.9):
            q = np.asarray(truth.entry_lps) + share * truth.length_mm * truth.direction - found.entry_lps
            assert np.linalg.norm(q - (q @ axis) * axis) < 0.1


@pytest.mark.slow
def test_demo_calls_all_four_screws_right(demo_screws):
    """L4 left (1.5 mm over 70 %, rim) loose; L4 right and L5 right (0.5 mm over 40 %) and L5 left (none) intact.
    All four were called loose until the axes were refined and cells whose "bone" beyond the edge is metal's
    bloom or the pedicle's cortex (``halo.bright_artefact_hu`` above the screw's bone) were left out; L5 right read
    1.15 mm over 53 % from its cortex."""
    for truth, found in demo_screws:
        assert found.halo.loosened == truth.loosened, (truth.vertebra, truth.side, found.halo)
    widths = {(t.vertebra, t.side): f.halo.widest_arc_mm for t, f in demo_screws}
    assert widths[("L4", "left")] >= 1.0 and widths[("L5", "left")] < 0.7
