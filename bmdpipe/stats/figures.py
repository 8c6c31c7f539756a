"""The report's figures as PNG bytes (matplotlib, Agg canvas: no display needed)."""

from __future__ import annotations

import io

import pandas as pd

__all__ = ["roc_figure", "over_time_figure"]


def _png(fig) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=80, bbox_inches="tight")
    return buf.getvalue()


def _figure(ncols: int = 1):
    from matplotlib.figure import Figure

    fig = Figure(figsize=(4.8 * ncols, 4.0))
    return fig, fig.subplots(1, ncols, squeeze=False)[0]


def roc_figure(curves: dict) -> bytes:
    """ROC curves, one per label: ``{label: RocResult}``; the AUC in the legend."""
    fig, (ax,) = _figure()
    for label, r in curves.items():
        ax.plot(r.fpr, r.tpr, label=f"{label}: AUC {r.auc:.3f}")
        ax.plot(1 - r.specificity, r.sensitivity, "o", color=ax.lines[-1].get_color())
    ax.plot([0, 1], [0, 1], color="0.6", lw=0.8, ls="--")
    ax.set(xlabel="1 - specificity", ylabel="sensitivity", xlim=(0, 1), ylim=(0, 1.01), aspect="equal")
    ax.legend(loc="lower right", fontsize=8, title="dots: Youden cut-off", title_fontsize=8)
    return _png(fig)


def over_time_figure(panels: dict[str, pd.DataFrame], value: str, low: str, high: str,
                     order: tuple[str, ...]) -> bytes:
    """One panel per title: ``value`` with its CI (``low``..``high``) per arm over the timepoints
    in ``order``; each frame has columns timepoint, arm and those three. The y axis is labelled
    ``value``."""
    fig, axes = _figure(len(panels))
    for ax, (title, frame) in zip(axes, panels.items()):
        for k, (arm, g) in enumerate(frame.groupby("arm")):
            g = g.assign(x=g.timepoint.map({t: i for i, t in enumerate(order)})).sort_values("x")
            x = g.x + (k - 0.5) * 0.08
            ax.errorbar(x, g[value], yerr=[g[value] - g[low], g[high] - g[value]], marker="o", capsize=3,
                        label=str(arm))
        ax.set_xticks(range(len(order)), [t.replace("_", " ") for t in order], fontsize=8)
        ax.set_title(title, fontsize=10)
        ax.set_ylabel(value, fontsize=9)
        ax.legend(fontsize=8)
    return _png(fig)
