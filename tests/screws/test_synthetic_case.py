"""Screws and halos on the synthetic post-operative CT (bmdpipe.synthetic ground truth)."""

import numpy as np
import pytest
from scipy import ndimage

from bmdpipe.config import HaloSettings, ScrewSettings
from bmdpipe.results import Vertebra, level_name
from bmdpipe.rows import ScrewRow
from bmdpipe.screws import detect_screws, measure_screws

synthetic = pytest.importorskip("bmdpipe.synthetic.case")
from bmdpipe.synthetic.spec import CaseSpec, ScrewSpec  # noqa: E402


def _vertebrae(volume, labels):
    out = []
    for vid, sl in enumerate(ndimage.find_objects(labels), start=1):
        if sl is None or not 1 <= vid <= 26:
            continue
        m = labels[sl] == vid
        c = np.argwhere(m).mean(axis=0) + [s.start for s in sl]
        out.append(Vertebra(name=level_name(vid), verse_id=vid, offset=tuple(s.start for s in sl), mask=m,
                            centroid_lps=tuple(float(x) for x in volume.index_to_lps(c))))
    return out


def test_no_screws_gives_empty_list():
    case = synthetic.make_case(3, CaseSpec(levels=("L4",), phantom=None, fov_mm=(220.0, 220.0)))
    assert detect_screws(case.volume, ScrewSettings()) == []


@pytest.mark.slow
@pytest.mark.parametrize("orientation", ["HFS", "FFP"])
def test_post_operative_case(orientation):
    """Both screws found, on the right level and side (LPS, any orientation), loosening called right."""
    spec = CaseSpec(levels=("L4",), phantom=None, fov_mm=(220.0, 220.0), orientation=orientation,
                    cancellous_mg_cm3=(100.0, 160.0),
                    screws=(ScrewSpec("L4", "left", halo_width_mm=2.0, halo_arc_fraction=1.0, diameter_mm=6.5),
                            ScrewSpec("L4", "right", halo_width_mm=0.0, diameter_mm=6.5)))
    case = synthetic.make_case(7, spec)
    found = detect_screws(case.volume, ScrewSettings(), vertebrae=_vertebrae(case.volume, case.labels))
    found = measure_screws(case.volume, found, HaloSettings(), ScrewSettings())
    assert len(found) == 2
    for ts in case.truth.screws:
        d = [np.linalg.norm(np.add(f.entry_lps, f.tip_lps) / 2 - np.add(ts.entry_lps, ts.tip_lps) / 2) for f in found]
        f = found[int(np.argmin(d))]
        assert min(d) < 5.0
        assert (f.vertebra, f.side.value) == (ts.vertebra, ts.side)
        assert f.diameter_mm == pytest.approx(ts.diameter_mm, abs=0.5)
        assert f.halo.loosened is ts.loosened
        assert f.halo.widest_arc_mm == pytest.approx(ts.halo_width_mm, abs=0.8)  # bench MAE 0.39 mm; zero widths read up to ~0.8
        row = ScrewRow.of(f, case.volume.meta)
        assert (row.vertebra, row.side.value) == (ts.vertebra, ts.side) and row.loosened is ts.loosened
