"""QC figure of one screw: the bone around the screw unrolled (angle x position) with the
measured halo, and an axial slice through the screw with the halo marked.

Uses the non-interactive Agg backend; :func:`screw_qc_figure` returns a matplotlib Figure
and :func:`save_screw_qc` writes it as PNG (the only I/O here).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..config import HaloSettings, ScrewSettings
from ..results import Screw
from ..screws.halo import HaloDetail, measure_halo_detail
from ..volume import Volume
from .layout import tight_layout_once
from .orientation import RADIOLOGICAL, radiological_axial

__all__ = ["screw_qc_figure", "save_screw_qc"]


def screw_qc_figure(volume: Volume, screw: Screw, settings: HaloSettings, hardware: ScrewSettings, *,
                    detail: HaloDetail | None = None, window_hu=(-200.0, 1200.0)):
    """Build the QC figure of one screw.

    Parameters
    ----------
    volume : Volume
    screw : Screw
        A detected screw.
    settings : HaloSettings
    hardware : ScrewSettings
        The screws' thread geometry and metal HU (as for the measurement).
    detail : HaloDetail, optional
        The screw's measurement with its profiles (:func:`~bmdpipe.screws.halo.measure_halo_details`);
        None measures it again with the blur stored on ``screw.halo``.
    window_hu : (lo, hi)
        Grey window of the images, HU.

    Returns
    -------
    matplotlib.figure.Figure
        Left: mean HU in the first ``min_width_mm`` beyond the thread crests, unrolled
        (angle vs position along the screw), with the measured halo width as contours and
        streak rays hatched. Middle: the width map (mm). Right: the axial slice through the
        screw's midpoint with the crest radius and the widest halo drawn.
    """
    from matplotlib.figure import Figure

    # the same blur the stored measurement used (shared by the scan's screws), so the picture matches it
    d = detail or measure_halo_detail(volume, screw, settings, hardware,
                                      blur_sigma_mm=screw.halo.blur_sigma_mm if screw.halo else None)
    h = d.halo
    R = screw.diameter_mm / 2.0
    ang = np.degrees(d.rays.angles_rad)
    pos = d.rays.positions_mm
    fig = Figure(figsize=(13, 4.2))
    ax0, ax1, ax2 = fig.subplots(1, 3)
    ext = (ang[0], ang[-1], pos[-1], pos[0])
    _show_unrolled_shell(ax0, d, R, settings, window_hu, ang, pos, ext)
    im = ax1.imshow(h.width_map_mm, cmap="magma", vmin=0, vmax=settings.max_width_mm, aspect="auto", extent=ext)
    fig.colorbar(im, ax=ax1, label="halo width (mm)")
    ax1.set_xlabel("angle (deg)")
    ax1.set_title(f"widest arc {h.widest_arc_mm:.1f} mm, mean {h.mean_width_mm:.1f} mm, "
                  f"{100 * h.circumference_fraction:.0f} % circ., "
                  + (f"loosened={h.loosened}" if h.loosened is not None else "call indeterminate"), fontsize=8)
    _show_axial_slice(ax2, volume, screw, R, R + h.widest_arc_mm, window_hu)
    tight_layout_once(fig)
    return fig


def _show_unrolled_shell(ax, d, crest_radius_mm: float, settings: HaloSettings, window_hu, ang: np.ndarray,
                         pos: np.ndarray, ext) -> None:
    """Mean HU in the first ``min_width_mm`` beyond the crests, unrolled (angle in deg vs position
    in mm, image ``ext``), with the halo contour and the streak rays hatched."""
    h = d.halo
    r = d.rays.radii_mm
    shell = (r >= crest_radius_mm) & (r <= crest_radius_mm + settings.min_width_mm)
    unrolled = d.rays.values[:, :, shell].mean(axis=2)  # (P, A)
    ax.imshow(unrolled, cmap="gray", vmin=window_hu[0], vmax=window_hu[1], aspect="auto", extent=ext)
    if h.width_map_mm is not None and np.isfinite(h.width_map_mm).any():
        ax.contour(ang, pos, np.nan_to_num(h.width_map_mm, nan=0.0), levels=[settings.min_width_mm],
                   colors="r", linewidths=1.0)
    if d.streak.any():
        ax.contourf(ang, pos, d.streak.astype(float), levels=[0.5, 1.5], colors="none", hatches=["//"])
    ax.set_xlabel("angle around the screw (deg)")
    ax.set_ylabel("position from entry (mm)")
    ax.set_title(f"HU within {settings.min_width_mm:g} mm of the crests (red: halo >= {settings.min_width_mm:g} mm)",
                 fontsize=8)


def _show_axial_slice(ax, volume: Volume, screw: Screw, crest_radius_mm: float, halo_radius_mm: float,
                      window_hu) -> None:
    """The axial slice through the screw's midpoint (70 mm square) with its axis, the crest radius
    (cyan) and the widest halo's outer radius (red), mm."""
    from matplotlib.patches import Circle

    e = np.asarray(screw.entry_lps)
    t = np.asarray(screw.tip_lps)
    mid = 0.5 * (e + t)
    kji = volume.lps_to_index(mid)
    k = int(np.clip(np.rint(kji[0]), 0, volume.shape[0] - 1))
    half_j = int(round(35.0 / volume.spacing[1]))
    half_i = int(round(35.0 / volume.spacing[2]))
    j0, i0 = int(round(kji[1])), int(round(kji[2]))
    jl, jh = max(j0 - half_j, 0), min(j0 + half_j, volume.shape[1])
    il, ih = max(i0 - half_i, 0), min(i0 + half_i, volume.shape[2])
    ax.imshow(volume.array[k, jl:jh, il:ih], cmap="gray", vmin=window_hu[0], vmax=window_hu[1],
              extent=(il - 0.5, ih - 0.5, jh - 0.5, jl - 0.5))
    ends = volume.lps_to_index(np.array([e, t]))
    ax.plot(ends[:, 2], ends[:, 1], "c-", lw=0.8)
    for rad, col in ((crest_radius_mm, "c"), (halo_radius_mm, "r")):
        ax.add_patch(Circle((kji[2], kji[1]), rad / volume.spacing[2], fill=False, ec=col, lw=0.8))
    radiological_axial(ax, volume)
    ax.set_title(f"{screw.vertebra or '?'} {screw.side.value}: d {screw.diameter_mm:.1f} mm, "
                 f"L {screw.length_mm:.0f} mm (slice {k})\n{RADIOLOGICAL}", fontsize=8)
    ax.set_xticks([])
    ax.set_yticks([])


def save_screw_qc(volume: Volume, screw: Screw, settings: HaloSettings, hardware: ScrewSettings, path: str | Path, *,
                  dpi: int = 90) -> Path:
    """Write the QC figure of one screw to ``path`` (PNG, its folder created) and return the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig = screw_qc_figure(volume, screw, settings, hardware)
    fig.savefig(path, dpi=dpi)
    return path
