"""Screenshot of the napari review widget on a processed series (the README's figure).

Opens the series in a napari window with the review widget, shows the slice through the
middle of the chosen vertebra's pedicle and trajectory ROIs (B, C) and writes the window as a PNG of at most
``--colors`` colours (small enough for the repository). Needs the ``review`` extra and a
display (``xvfb-run -a`` on a headless machine).

Usage::

    xvfb-run -a python scripts/review_screenshot.py OUT_DIR docs/review_widget.png [--series UID] [--vertebra L4]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import napari
import numpy as np
from PIL import Image
from qtpy.QtWidgets import QApplication

from bmdpipe.review._qt import ROI_LAYER, ReviewWidget
from bmdpipe.store.csv import read_csv_rows


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out_dir", type=Path)
    parser.add_argument("png", type=Path)
    parser.add_argument("--series", default=None)
    parser.add_argument("--vertebra", default="L4")
    parser.add_argument("--colors", type=int, default=96)
    parser.add_argument("--zoom", type=float, default=2.5, help="magnification over the whole slice")
    args = parser.parse_args(argv)
    uid = args.series or next(r["series_uid"] for r in read_csv_rows(args.out_dir / "series.csv")
                              if r["status"] == "processed")
    viewer = napari.Viewer(title="bmdpipe review")
    widget = ReviewWidget(viewer, args.out_dir, reviewer="demo")
    viewer.window.add_dock_widget(widget, name="bmdpipe review", area="right")
    viewer.window.resize(1500, 900)
    widget.open_series(uid)
    widget.vertebra_box.setCurrentText(args.vertebra)
    spacing = np.asarray(viewer.layers[ROI_LAYER["C"]].scale)
    in_vertebra = [(widget.session.maps[k.region.value] == k.label_code).any(axis=(1, 2))
                   for k in widget.session.keys if k.vertebra == args.vertebra and k.region.value in "BC"]
    k = np.nonzero(np.any(in_vertebra, axis=0))[0]  # slices of its pedicle and trajectory ROIs
    viewer.dims.set_point(0, float(np.median(k)) * spacing[0])
    viewer.reset_view()
    rois = np.argwhere(np.any([m[int(np.median(k))] > 0 for m in widget.session.maps.values()], axis=0))
    camera = getattr(viewer, "scene", viewer).camera  # napari >= 0.9: viewer.scene.camera
    camera.center = (camera.center[0], *(rois.mean(0) * spacing[1:]))
    camera.zoom *= args.zoom
    viewer.layers.selection.active = viewer.layers[ROI_LAYER["B"]]
    QApplication.processEvents()
    image = viewer.screenshot(canvas_only=False, flash=False)
    viewer.close()
    args.png.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(image[..., :3]).quantize(colors=args.colors).save(args.png, optimize=True)
    print(f"{args.png}: {image.shape[1]} x {image.shape[0]} px, {args.png.stat().st_size / 1024:.0f} kB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
