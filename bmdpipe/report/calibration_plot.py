"""Calibration QC plot: reference HU vs nominal density with the fit, residuals, and the
rods (or tissue samples) outlined on an axial slice. matplotlib with the Agg backend."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..results import Calibration
from ..volume import Volume

__all__ = ["plot_calibration", "save_calibration_qc"]


def plot_calibration(cal: Calibration, volume: Volume | None = None):
    """Figure with (1) reference HU vs nominal density and the fit, (2) residuals,
    (3) an axial slice through the references with each outlined.

    Parameters
    ----------
    cal : Calibration
    volume : Volume, optional
        When given, panel 3 shows the slice through the references' mean centre.

    Returns
    -------
    matplotlib.figure.Figure
    """
    import matplotlib

    matplotlib.use("Agg", force=False)
    from matplotlib.figure import Figure
    from matplotlib.patches import Circle

    fig = Figure(figsize=(13, 4.2), dpi=100)
    ax1, ax2, ax3 = fig.subplots(1, 3)
    refs = cal.references
    unit = f"mg {cal.material.value}/cm3"
    nominal = np.array([np.nan if r.nominal_mg_cm3 is None else r.nominal_mg_cm3 for r in refs], dtype=float)
    hu = np.array([r.hu_mean for r in refs], dtype=float)
    res = np.array([np.nan if r.residual_hu is None else r.residual_hu for r in refs], dtype=float)
    names = [r.name for r in refs]
    water = cal.details.get("rod_water_mg_cm3")
    two_comp = cal.details.get("model") == "two-component" and water is not None and None not in water
    if np.isfinite(nominal).any():
        y = hu - np.asarray(water, float) if two_comp else hu
        ax1.plot(nominal, y, "o", label="rods (measured)")
        for x, yy, n in zip(nominal, y, names):
            ax1.annotate(n, (x, yy), textcoords="offset points", xytext=(4, 4), fontsize=8)
        xs = np.linspace(np.nanmin(nominal), np.nanmax(nominal), 50)
        if two_comp:
            sr, br = cal.details["sigma_ref"], cal.details["beta_ref"]
            ax1.plot(xs, br + sr * xs, "-", label=f"HU - water = {br:.1f} + {sr:.4f} x (sigma_CT {cal.slope_hu_per_mg_cm3:.4f}, beta_CT {cal.intercept_hu:.1f})")
        else:
            ax1.plot(xs, cal.hu(xs), "-", label=f"HU = {cal.intercept_hu:.1f} + {cal.slope_hu_per_mg_cm3:.4f} x")
        ax1.set_xlabel(f"nominal density ({unit})")
        ax2.bar(names, res)
    else:  # internal calibration: tissue HU
        ax1.bar(names, hu)
        ax1.set_xlabel("reference tissue")
        ax2.bar(names, res)
    ax1.set_ylabel("HU - water (mg/cm3)" if two_comp else "HU")
    r2 = "" if cal.r2 is None else f", R^2 = {cal.r2:.5f}"
    ax1.set_title(f"{cal.method}: {cal.phantom}{r2}", fontsize=9)
    if ax1.get_legend_handles_labels()[0]:
        ax1.legend(fontsize=7, loc="upper left")
    ax2.axhline(0, color="k", lw=0.8)
    ax2.set_ylabel("residual (HU)")
    ax2.set_title("residual per reference", fontsize=9)
    if volume is not None and refs and all(r.center_lps is not None for r in refs):
        idx = volume.lps_to_index(np.array([r.center_lps for r in refs]))
        k = int(np.clip(np.round(np.median(idx[:, 0])), 0, volume.shape[0] - 1))
        ax3.imshow(volume.array[k], cmap="gray", vmin=-300, vmax=1200, interpolation="nearest")
        px = float(np.mean(volume.spacing[1:]))
        for r, (kk, j, i) in zip(refs, idx):
            if r.radius_mm is None:  # tissue sample: mark the centroid of its mask
                ax3.plot([i], [j], "x", color="red")
                rad = 3.0
            else:
                rad = r.radius_mm / px
                ax3.add_patch(Circle((i, j), rad, fill=False, color="red", lw=0.8))
            ax3.text(i, j - rad - 3, r.name, color="yellow", fontsize=7, ha="center")
        ax3.set_title(f"slice {k}", fontsize=9)
    ax3.set_axis_off()
    if cal.warnings:
        fig.suptitle("; ".join(cal.warnings)[:180], fontsize=7, color="darkred")
    fig.tight_layout()
    return fig


def save_calibration_qc(cal: Calibration, volume: Volume | None, path: str | Path) -> Path:
    """Write the calibration QC plot to ``path`` (PNG); returns the path."""
    fig = plot_calibration(cal, volume)
    p = Path(path)
    fig.savefig(p, dpi=100)
    return p
