"""QC figure: axial + sagittal views with A/B/C outlined (rendered headless)."""

import io

import matplotlib
import numpy as np

matplotlib.use("Agg")

from _roi_cases import case  # noqa: E402
from bmdpipe.anatomy import vertebrae_from_label_map  # noqa: E402
from bmdpipe.config import Settings  # noqa: E402
from bmdpipe.report.roi_qc import roi_figure  # noqa: E402
from bmdpipe.roi import place_rois  # noqa: E402


def test_roi_figure_renders_outlines():
    c = case(21, "HFS", True)
    s = Settings()
    verts = vertebrae_from_label_map(c.labels, c.volume, s.anatomy, levels=["L4"])
    rois = place_rois(c.volume, verts, s)
    fig = roi_figure(c.volume, verts[0], rois)
    assert len(fig.axes) == 3
    # contours were drawn for A (body axial), B/C (pedicle axial) and the sagittal view
    assert all(len(ax.collections) > 0 for ax in fig.axes)
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    png = buf.getvalue()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 10000
    assert np.isfinite(fig.get_size_inches()).all()
