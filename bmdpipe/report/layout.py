"""Laying out a QC figure once."""

from __future__ import annotations

__all__ = ["tight_layout_once"]


def tight_layout_once(fig, **kwargs) -> None:
    """``fig.tight_layout(**kwargs)``, then fix the layout.

    Matplotlib leaves a placeholder layout engine on the figure after ``tight_layout``, and
    ``savefig`` draws a figure with any layout engine twice (once for the layout, once to render).
    The layout is final here, so the engine is removed: the saved image is the same, drawn once.
    """
    fig.tight_layout(**kwargs)
    fig.set_layout_engine(None)
