"""Axial QC views are radiological (anterior up, patient's left on the right) whatever the storage order."""

from __future__ import annotations

import numpy as np
import pytest

from bmdpipe.report.orientation import radiological_axial
from bmdpipe.volume import Volume


def _rendered_marker_quadrant(volume: Volume, k: int) -> tuple[str, str]:
    """Render slice k with matplotlib (Agg) and return where its brightest pixel lands: (top|bottom, left|right)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(3, 3), dpi=50)
    ax = fig.add_axes((0, 0, 1, 1))
    ax.imshow(volume.array[k], cmap="gray", vmin=0, vmax=1, interpolation="nearest")
    ax.set_axis_off()
    radiological_axial(ax, volume)
    canvas = FigureCanvasAgg(fig)
    canvas.draw()
    img = np.asarray(canvas.buffer_rgba())[..., 0].astype(float)
    r, c = np.unravel_index(np.argmax(img), img.shape)
    return ("top" if r < img.shape[0] / 2 else "bottom"), ("left" if c < img.shape[1] / 2 else "right")


@pytest.mark.parametrize("flip_rows,flip_cols", [(False, False), (True, True), (True, False), (False, True)])
def test_anterior_left_marker_shows_top_right(flip_rows, flip_cols):
    """A marker at the patient's anterior left (LPS: small y, large x) shows at the top right, for
    DICOM HFS storage (rows posterior, columns left), NIfTI RAS storage (both reversed) and the mixed ones."""
    n = 20
    lps = np.zeros((1, n, n), np.float32)  # (k, y index, x index), y and x increasing posterior / left
    lps[0, 2:5, n - 5:n - 2] = 1.0  # anterior (small y), left (large x)
    arr = lps[:, ::-1, :] if flip_rows else lps
    arr = arr[:, :, ::-1] if flip_cols else arr
    direction = np.diag([-1.0 if flip_cols else 1.0, -1.0 if flip_rows else 1.0, 1.0])
    vol = Volume(array=np.ascontiguousarray(arr), spacing=(1.0, 1.0, 1.0), direction=direction)
    assert _rendered_marker_quadrant(vol, 0) == ("top", "right")
