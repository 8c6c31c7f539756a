"""Calibration QC plot: reference HU vs nominal density with the fit, residuals, and the
rods (or tissue samples) outlined on an axial slice. matplotlib with the Agg backend."""

from __future__ import annotations

import textwrap
from pathlib import Path

import numpy as np

from ..results import Calibration
from ..volume import Volume
from .layout import tight_layout_once
from .orientation import RADIOLOGICAL, radiological_axial

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

    fig = Figure(figsize=(14, 4.6), dpi=100)
    ax1, ax2, ax3 = fig.subplots(1, 3, gridspec_kw={"width_ratios": [1.0, 0.8, 1.3]})
    _plot_fit_and_residuals(ax1, ax2, cal)
    refs = cal.references
    if volume is not None and cal.outlines is not None:
        _show_tissue_outlines(ax3, volume, cal)
    elif volume is not None and refs and all(r.center_lps is not None for r in refs):
        _show_rod_outlines(ax3, volume, cal)
    ax3.set_axis_off()
    lines = _warning_lines(cal.warnings)
    if lines:
        fig.suptitle("\n".join(lines), fontsize=7, color="darkred")
    tight_layout_once(fig, rect=(0, 0, 1, 1 - 0.035 * len(lines)))
    return fig


def _plot_fit_and_residuals(ax1, ax2, cal: Calibration) -> None:
    """Panel 1: reference HU against nominal density (rods) or table HU (tissues) with the fit;
    panel 2: the residual of each reference, HU."""
    refs = cal.references
    nominal = np.array([np.nan if r.nominal_mg_cm3 is None else r.nominal_mg_cm3 for r in refs], dtype=float)
    hu = np.array([r.hu_mean for r in refs], dtype=float)
    res = np.array([np.nan if r.residual_hu is None else r.residual_hu for r in refs], dtype=float)
    names = [r.name for r in refs]
    water = cal.details.get("rod_water_mg_cm3")
    two_comp = cal.details.get("model") == "two-component" and water is not None and None not in water
    if np.isfinite(nominal).any():
        _plot_rod_fit(ax1, cal, nominal, hu, names, water if two_comp else None)
    else:  # internal calibration: measured tissue HU vs the tables' HU at the fitted effective energy
        _plot_tissue_fit(ax1, cal, names, hu)
    ax2.bar(names, res)
    ax1.set_ylabel("rod HU - water (HU - mg/cm3)" if two_comp else "measured HU")
    ax1.set_title(_fit_title(cal), fontsize=9)
    if ax1.get_legend_handles_labels()[0]:
        ax1.legend(fontsize=7, loc="upper left" if cal.method != "internal" else "lower right")
    ax2.axhline(0, color="k", lw=0.8)
    ax2.set_ylabel("residual (HU)")
    ax2.set_title("residual per reference", fontsize=9)


def _plot_rod_fit(ax, cal: Calibration, nominal: np.ndarray, hu: np.ndarray, names: list[str], water) -> None:
    """Rod HU (minus the rods' water, mg/cm3, for a two-component phantom: ``water`` not None)
    against nominal density, and the fit line."""
    two_comp = water is not None
    y = hu - np.asarray(water, float) if two_comp else hu
    ax.plot(nominal, y, "o", label="rods (measured)")
    for x, yy, n in zip(nominal, y, names):
        ax.annotate(n, (x, yy), textcoords="offset points", xytext=(4, 4), fontsize=8)
    xs = np.linspace(np.nanmin(nominal), np.nanmax(nominal), 50)
    if two_comp:
        sr, br = cal.details["sigma_ref"], cal.details["beta_ref"]
        ax.plot(xs, br + sr * xs, "-", label=f"HU - water = {br:.1f} + {sr:.4f} x (sigma_CT {cal.slope_hu_per_mg_cm3:.4f}, beta_CT {cal.intercept_hu:.1f})")
    else:
        ax.plot(xs, cal.hu(xs), "-", label=f"HU = {cal.intercept_hu:.1f} + {cal.slope_hu_per_mg_cm3:.4f} x")
    ax.set_xlabel(f"nominal density (mg {cal.material.value}/cm3)")


def _fit_title(cal: Calibration) -> str:
    """Panel 1 title: the phantomless fit's effective energy (keV) and density uncertainty, or the
    phantom and R^2."""
    if cal.method != "internal":
        r2 = "" if cal.r2 is None else f", R^2 = {cal.r2:.5f}"
        return f"{cal.method}: {cal.phantom}{r2}"
    kev, prior, sd = cal.details.get("kev"), cal.details.get("kev_prior"), cal.details.get("kev_prior_sd")
    source = "phantom scan" if cal.details.get("precalibrated_kev") is not None else "prior"
    energy = "" if kev is None else f"\neffective energy {kev:.1f} keV" + (
        "" if prior is None else f" ({source} {prior:.1f}" + ("" if sd is None else f" +- {sd:.1f}") + ")")
    unc = cal.details.get("density_uncertainty_fraction")
    unc = "" if unc is None else f", densities +-{100 * unc:.1f} % (1 SD)"
    return f"phantomless (internal) calibration{energy}{unc}"


def _show_rod_outlines(ax, volume: Volume, cal: Calibration) -> None:
    """The slice through the rods' median centre with each rod outlined and named, zoomed on the
    rods: found by its edge (red), measured where the row's geometry puts a rod without an edge
    (cyan, dotted); its measured core dashed. Rods left out are named in the title."""
    from matplotlib.patches import Circle

    refs = cal.references
    idx = volume.lps_to_index(np.array([r.center_lps for r in refs]))
    k = int(np.clip(np.round(np.median(idx[:, 0])), 0, volume.shape[0] - 1))
    ax.imshow(volume.array[k], cmap="gray", vmin=-300, vmax=1200, interpolation="nearest")
    px = float(np.mean(volume.spacing[1:]))
    cores = cal.details.get("rod_core_radius_mm") or [None] * len(refs)
    found_by = cal.details.get("rod_found_by") or ["edge"] * len(refs)
    for r, (kk, j, i), core, how in zip(refs, idx, cores, found_by):
        rad = 3.0 if r.radius_mm is None else r.radius_mm / px
        by_edge = how == "edge"
        ax.add_patch(Circle((i, j), rad, fill=False, color="red" if by_edge else "cyan", lw=0.8,
                            ls="-" if by_edge else ":"))
        if core:  # the measured core
            ax.add_patch(Circle((i, j), core / px, fill=False, color="orange", lw=0.6, ls="--"))
        ax.text(i, j - rad - 3, r.name if by_edge else f"{r.name} (geometry)", color="yellow", fontsize=7,
                ha="center")
    # zoom on the rods with a margin that keeps the phantom and its surroundings in view
    rmax = max((r.radius_mm or 3.0) / px for r in refs)
    pad = 4 * rmax + 15.0 / px
    ax.set_xlim(max(idx[:, 2].min() - pad, -0.5), min(idx[:, 2].max() + pad, volume.shape[2] - 0.5))
    ax.set_ylim(min(idx[:, 1].max() + pad, volume.shape[1] - 0.5), max(idx[:, 1].min() - pad, -0.5))
    radiological_axial(ax, volume)
    missing = cal.details.get("missing_rods") or []
    ax.set_title(f"slice {k}: rods found by their edge (red), placed by the row's geometry (cyan), "
                 f"cores (dashed)" + (f"; missing: {', '.join(missing)}" if missing else "") + f"\n{RADIOLOGICAL}",
                 fontsize=8)


def _warning_lines(warnings: tuple[str, ...]) -> list[str]:
    """The first warnings, shortened, for the figure title (and a count of the rest)."""
    lines = [textwrap.shorten(w, 230) for w in warnings[:_MAX_WARNING_LINES]]
    if len(warnings) > _MAX_WARNING_LINES:
        lines.append(f"... and {len(warnings) - _MAX_WARNING_LINES} more (calibration.csv, warnings)")
    return lines


_MAX_WARNING_LINES = 5


_TISSUE_COLOURS = ("tab:cyan", "gold", "tab:red", "tab:green", "tab:purple", "tab:orange")


def _plot_tissue_fit(ax, cal: Calibration, names: list[str], hu: np.ndarray) -> None:
    """Measured tissue HU against the attenuation tables' HU at the fitted energy, and the fit line."""
    from ..calibrate.attenuation import hu_of

    kev, a, b = cal.details.get("kev"), cal.details.get("a_hu"), cal.details.get("b")
    if kev is None or a is None or b is None:
        ax.bar(names, hu)
        ax.set_xlabel("reference tissue")
        return
    table = np.array([hu_of(n, kev) for n in names])
    ax.plot(table, hu, "o", label="tissues (measured)")
    for x, y, n in zip(table, hu, names):
        ax.annotate(n, (x, y), textcoords="offset points", xytext=(4, -10), fontsize=8)
    xs = np.linspace(min(table.min(), -1000.0), max(table.max(), 100.0), 50)
    ax.plot(xs, a + b * xs, "-", label=f"HU = {a:.1f} + {b:.4f} x HU_table({kev:.1f} keV)")
    ax.plot([], [], " ", label=f"-> {cal.slope_hu_per_mg_cm3:.4f} HU per mg {cal.material.value}/cm3, "
                               f"intercept {cal.intercept_hu:.1f} HU")
    ax.set_xlabel(f"table HU at the fitted effective energy {kev:.1f} keV (ICRU-44 / ICRP)")


def _show_tissue_outlines(ax, volume: Volume, cal: Calibration) -> None:
    """The slice of ``cal.outlines`` with each tissue's sampled region outlined and named."""
    from ..calibrate.internal import point_inside

    o = cal.outlines
    region = cal.details.get("muscle_region")
    ax.imshow(volume.array[o.slice_index], cmap="gray", vmin=-250, vmax=250, interpolation="nearest")
    for i, r in enumerate(cal.references):
        m = o.labels == i + 1
        if not m.any():
            continue
        colour = _TISSUE_COLOURS[i % len(_TISSUE_COLOURS)]
        ax.contour(m.astype(float), levels=[0.5], colors=[colour], linewidths=1.2)
        j, k = point_inside(m)
        name = f"{r.name} ({region})" if r.name == "muscle" and region else r.name
        ax.text(k, j, f"{name} {r.hu_mean:.0f}", color=colour, fontsize=7, ha="center",
                bbox={"facecolor": "black", "alpha": 0.5, "pad": 1, "lw": 0})
    radiological_axial(ax, volume)
    ax.set_title(f"slice {o.slice_index}: tissues sampled (window -250..250 HU)\n{RADIOLOGICAL}", fontsize=9)


def save_calibration_qc(cal: Calibration, volume: Volume | None, path: str | Path) -> Path:
    """Write the calibration QC plot to ``path`` (PNG, its folder created); returns the path."""
    fig = plot_calibration(cal, volume)
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(p, dpi=100)
    return p
