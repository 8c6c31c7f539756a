"""Radiological orientation of axial views drawn in array (row, column) coordinates."""

from __future__ import annotations

import numpy as np

from ..volume import Volume

__all__ = ["radiological_axial", "RADIOLOGICAL"]

#: How :func:`radiological_axial` shows an axial slice (for titles).
RADIOLOGICAL = "anterior up, patient's left on the right"


def radiological_axial(ax, volume: Volume) -> None:
    """Orient an axes showing an axial slice of ``volume`` (drawn with column = i, row = j) so that
    anterior is up and the patient's left is on the right, whatever the storage order (HFS, FFS,
    prone, NIfTI RAS). Keeps the current limits; overlays drawn in array coordinates stay valid.
    """
    d = np.asarray(volume.direction, dtype=float)
    rows_go_posterior = d[1, 1] >= 0  # LPS y of the j (row) axis
    cols_go_left = d[0, 0] >= 0      # LPS x of the i (column) axis
    y0, y1 = sorted(ax.get_ylim())
    x0, x1 = sorted(ax.get_xlim())
    ax.set_ylim((y1, y0) if rows_go_posterior else (y0, y1))
    ax.set_xlim((x0, x1) if cols_go_left else (x1, x0))
