"""QC figure of one vertebra: axial and sagittal CT views with ROIs A/B/C outlined.

Views are cut through the canonical (superior, posterior, left) frame, so they are shown in
radiological convention whatever the scan orientation: axial with the patient's left on the
image right and anterior up; sagittal with anterior on the left and superior up. Pixels are
drawn at their physical aspect ratio.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ..anatomy.frame import CanonicalFrame
from ..results import Region, Roi, Side, Vertebra
from ..volume import Volume
from .layout import tight_layout_once

__all__ = ["roi_figure", "REGION_COLORS"]

REGION_COLORS = {Region.A: "#ffd000", Region.B: "#00d0ff", Region.C: "#ff3070"}


def _canonical_full(frame: CanonicalFrame, offset, mask, shape) -> np.ndarray:
    off_c, m_c = frame.box_to_canonical(offset, mask)
    out = np.zeros(shape, bool)
    sl = tuple(slice(o, o + n) for o, n in zip(off_c, m_c.shape))
    out[sl] = m_c
    return out


def roi_figure(volume: Volume, vertebra: Vertebra, rois: Sequence[Roi], *, window=(-200.0, 1000.0)):
    """Matplotlib figure (Agg) with an axial and a sagittal view through ``vertebra``.

    Parameters
    ----------
    volume : Volume
        CT in HU.
    vertebra : Vertebra
        The vertebra to show (its body centre sets the cuts).
    rois : sequence of Roi
        ROIs; those of this vertebra are outlined (A yellow, B cyan, C magenta).
    window : (float, float)
        Display window, HU.

    Returns
    -------
    matplotlib.figure.Figure
    """
    from matplotlib.figure import Figure

    frame = CanonicalFrame.of(volume)
    hu = frame.to_canonical(volume.array)
    centre = vertebra.body_center_lps or vertebra.centroid_lps
    kc = np.clip(np.rint(frame.lps_to_canonical(volume, centre)).astype(int), 0, np.array(frame.shape) - 1)
    own = [r for r in rois if r.vertebra == vertebra.name]
    sz, sy, sx = frame.spacing
    lo, hi = _view_box(frame, vertebra)

    fig = Figure(figsize=(14, 5), dpi=100)
    ax_a, ax_p, ax_s = fig.subplots(1, 3)
    # axial views: rows = y (anterior at top), cols = x; radiological: patient's left on the right
    ext_a = (lo[2] * sx, hi[2] * sx, hi[1] * sy, lo[1] * sy)
    k_ped = _pedicle_slice(frame, volume, vertebra, int(kc[0]))
    for ax, k in ((ax_a, int(kc[0])), (ax_p, k_ped)):
        ax.imshow(np.asarray(hu[k, lo[1]:hi[1], lo[2]:hi[2]], float), cmap="gray", vmin=window[0], vmax=window[1],
                  extent=ext_a, interpolation="nearest")
    # sagittal through the body centre: rows = z (superior at top), cols = y (anterior left)
    sag = np.asarray(hu[lo[0]:hi[0], lo[1]:hi[1], kc[2]], float)[::-1]
    ext_s = (lo[1] * sy, hi[1] * sy, lo[0] * sz, hi[0] * sz)
    ax_s.imshow(sag, cmap="gray", vmin=window[0], vmax=window[1], extent=ext_s, interpolation="nearest")
    for roi in own:
        color = REGION_COLORS[Region(roi.region)]
        full = _canonical_full(frame, roi.offset, roi.mask, frame.shape)
        # axial: A on the body-centre slice, B/C on the pedicle slice (or the ROI's nearest slice)
        if Region(roi.region) is Region.A:
            _outline_axial(ax_a, full, int(kc[0]), lo, hi, frame.spacing, color)
        else:
            _outline_axial(ax_p, full, k_ped, lo, hi, frame.spacing, color)
        _outline_sagittal(ax_s, full, Side(roi.side), kc[2], lo, hi, frame.spacing, color)
    _draw_pedicle_axes(ax_p, frame, volume, vertebra)
    ax_a.set_title(f"{vertebra.name} axial, body mid-height (A)\nanterior up, patient's left on the right", fontsize=9)
    ax_p.set_title(f"{vertebra.name} axial, pedicle level (B, C)", fontsize=9)
    ax_s.set_title(f"{vertebra.name} sagittal (B/C projected; right side dashed)\nanterior left, superior up", fontsize=9)
    for ax in (ax_a, ax_p, ax_s):
        ax.set_xticks([])
        ax.set_yticks([])
    _add_legend_and_summary(fig, volume, vertebra, own)
    tight_layout_once(fig, rect=(0, 0.06, 1, 0.95))
    return fig


def _view_box(frame: CanonicalFrame, vertebra: Vertebra) -> tuple[np.ndarray, np.ndarray]:
    """Canonical index box (lo, hi) around the vertebra with a 10-voxel margin, inside the volume."""
    off_c, m_c = frame.box_to_canonical(vertebra.offset, vertebra.mask)
    lo = np.maximum(np.asarray(off_c) - 10, 0)
    hi = np.minimum(np.asarray(off_c) + m_c.shape + 10, frame.shape)
    return lo, hi


def _pedicle_slice(frame: CanonicalFrame, volume: Volume, vertebra: Vertebra, k_body: int) -> int:
    """Canonical axial slice through the pedicles' mean isthmus (``k_body`` without pedicles)."""
    isth = [frame.lps_to_canonical(volume, p.isthmus_lps)[0] for p in vertebra.pedicles]
    return int(np.clip(np.rint(np.mean(isth)), 0, frame.shape[0] - 1)) if isth else k_body


def _outline_axial(ax, full: np.ndarray, k_want: int, lo, hi, spacing, color) -> None:
    """Outline of a canonical ROI mask on its axial slice nearest ``k_want``, in the view box (mm)."""
    ks = np.flatnonzero(full.any(axis=(1, 2)))
    if ks.size:
        k = ks[np.argmin(np.abs(ks - k_want))]
        a = full[k, lo[1]:hi[1], lo[2]:hi[2]].astype(float)
        if a.any():
            ys = np.arange(lo[1], hi[1]) * spacing[1]
            xs = np.arange(lo[2], hi[2]) * spacing[2]
            ax.contour(xs, ys, a, levels=[0.5], colors=[color], linewidths=1.2)


def _outline_sagittal(ax, full: np.ndarray, side: Side, i_centre, lo, hi, spacing, color) -> None:
    """Outline of a canonical ROI mask on the sagittal view: the centre cut ``i_centre`` for a
    central ROI, a left or right ROI projected over its left-right extent (right dashed)."""
    if side is Side.center:
        s = full[lo[0]:hi[0], lo[1]:hi[1], i_centre]
    else:
        s = full[lo[0]:hi[0], lo[1]:hi[1], :].any(axis=2)
    if s.any():
        ys = np.arange(lo[1], hi[1]) * spacing[1]
        zs = np.arange(lo[0], hi[0]) * spacing[0]
        ax.contour(ys, zs, s.astype(float), levels=[0.5], colors=[color], linewidths=1.0,
                   linestyles="solid" if side is not Side.right else "dashed")


def _draw_pedicle_axes(ax, frame: CanonicalFrame, volume: Volume, vertebra: Vertebra) -> None:
    """Each pedicle's entry-isthmus-target axis on an axial view (canonical mm)."""
    sz, sy, sx = frame.spacing
    for p in vertebra.pedicles:
        pts = np.array([frame.lps_to_canonical(volume, q) for q in (p.entry_lps, p.isthmus_lps, p.target_lps)])
        ax.plot(pts[:, 2] * sx, pts[:, 1] * sy, "-o", color="#80ff80", ms=2, lw=0.8)


def _add_legend_and_summary(fig, volume: Volume, vertebra: Vertebra, own: Sequence[Roi]) -> None:
    """Legend of the ROI colours and the pedicle axis, and a title with the series, the vertebra
    and each ROI's voxel count."""
    from matplotlib.lines import Line2D

    handles = [Line2D([], [], color=c, label=f"ROI {r.value}") for r, c in REGION_COLORS.items()]
    handles.append(Line2D([], [], color="#80ff80", marker="o", ms=2, label="pedicle axis"))
    fig.legend(handles=handles, loc="lower center", ncol=4, frameon=False)
    rows = ", ".join(f"{r.region.value}{'' if r.side is Side.center else r.side.value[0].upper()} {r.mask.sum()} vx"
                     for r in own)
    fig.suptitle(f"{volume.meta.series_uid or 'series'}  {vertebra.name} ({vertebra.source}): {rows}", fontsize=9)
