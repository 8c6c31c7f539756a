"""The napari view of the review step: layers, a table of the ROIs' values, edit tools, save.

Only this module imports napari and Qt. It shows :class:`~bmdpipe.review.model.ReviewSession`
(the maps are the labels layers' data, edited in place) and calls the model and
:mod:`bmdpipe.review.io` for everything else. Layers are scaled by the voxel spacing, so
distances on screen are mm; coordinates are the CT's (k, j, i) indices times the spacing.
"""

from __future__ import annotations

import time
from pathlib import Path

import napari
import numpy as np
from qtpy.QtCore import QTimer
from qtpy.QtGui import QPixmap
from qtpy.QtWidgets import (QApplication, QComboBox, QFileDialog, QFormLayout, QHBoxLayout, QLabel, QLineEdit,
                            QPushButton, QTableWidget, QTableWidgetItem, QVBoxLayout, QWidget)

from ..errors import BmdpipeError
from ..results import Region, Side
from .io import check_reviewer, list_series, open_review, save_review
from .model import REGIONS, ReviewSession, ellipse_slab, trajectory_cylinder

__all__ = ["ReviewWidget", "run_viewer", "BONE_WINDOW_HU", "ROI_LAYER", "ELLIPSE_LAYER", "SCREW_LINE_LAYER"]

#: display window of the CT: bone window, level 300 / width 1500 HU (radiology convention), HU
BONE_WINDOW_HU = (-450.0, 1050.0)
#: labels layer name of each region's ROI map
ROI_LAYER = {"A": "ROI A (body)", "B": "ROI B (pedicle)", "C": "ROI C (trajectory)"}
ELLIPSE_LAYER = "ROI A ellipse"
SCREW_LINE_LAYER = "planned screw"
SCREW_AXES_LAYER = "screw axes"
_COLUMNS = ("ROI", "vBMD mg/cm3", "SE mg/cm3", "voxels", "source")
#: width of a halo map in the widget, screen pixels
HALO_MAP_WIDTH_PX = 380


def _fmt(x, digits: int = 1) -> str:
    return "-" if x is None or x != x else f"{x:.{digits}f}"


class ReviewWidget(QWidget):
    """Dock widget: pick a series, see and edit its ROIs, save.

    Parameters
    ----------
    napari_viewer : napari.Viewer
    out_dir : Path, optional
        A ``bmdpipe run`` output folder (else chosen with "Run folder...").
    reviewer : str, optional
    db_url : str, optional
    """

    def __init__(self, napari_viewer: napari.Viewer, out_dir: Path | None = None, reviewer: str | None = None,
                 db_url: str | None = None):
        super().__init__()
        self.viewer = napari_viewer
        self.out_dir = Path(out_dir) if out_dir else None
        self.db_url = db_url
        self.session: ReviewSession | None = None
        self._build(reviewer or "")
        if self.out_dir:
            self._fill_series()

    # ------------------------------------------------------------ layout
    def _build(self, reviewer: str) -> None:
        self.series_box = QComboBox()
        self.reviewer_edit = QLineEdit(reviewer)
        folder, open_button = QPushButton("Run folder..."), QPushButton("Open")
        folder.clicked.connect(self._choose_folder)
        open_button.clicked.connect(self._open_chosen)
        form = QFormLayout()
        form.addRow("series", self.series_box)
        form.addRow("reviewer", self.reviewer_edit)
        self.table = QTableWidget(0, len(_COLUMNS))
        self.table.setHorizontalHeaderLabels(_COLUMNS)
        self.vertebra_box, self.side_box = QComboBox(), QComboBox()
        self.side_box.addItems([Side.left.value, Side.right.value])
        tools = QHBoxLayout()
        tools.addWidget(self.vertebra_box)
        tools.addWidget(self.side_box)
        buttons = {"ROI A ellipse": self.show_ellipse, "Apply ellipse to A": self.apply_ellipse,
                   "Place C along line": self.apply_screw_line, "Reset vertebra": self.reset_vertebra,
                   "Save": self.save}
        self.status = QLabel("")
        self.status.setWordWrap(True)
        self.halo_box, self.halo_image = QComboBox(), QLabel()
        self.halo_box.currentIndexChanged.connect(self._show_halo_map)
        layout = QVBoxLayout(self)
        row = QHBoxLayout()
        row.addWidget(folder)
        row.addWidget(open_button)
        layout.addLayout(form)
        layout.addLayout(row)
        layout.addWidget(self.table)
        layout.addLayout(tools)
        for text, slot in buttons.items():
            button = QPushButton(text)
            button.clicked.connect(slot)
            layout.addWidget(button)
        layout.addWidget(self.status)
        layout.addWidget(self.halo_box)
        layout.addWidget(self.halo_image)

    def _open_chosen(self) -> None:
        try:
            self.open_series(self.series_box.currentData())
        except BmdpipeError as exc:  # a series whose files are gone, a bad reviewer name ...
            self.status.setText(str(exc))

    def _choose_folder(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, "bmdpipe run output folder")
        if folder:
            self.out_dir = Path(folder)
            self._fill_series()

    def _fill_series(self) -> None:
        self.series_box.clear()
        for choice in list_series(self.out_dir, db_url=self.db_url):
            self.series_box.addItem(choice.label, choice.series_uid)

    # ------------------------------------------------------------ layers
    def open_series(self, series_uid: str) -> None:
        """Load a series: CT, the three ROI maps, screw axes; fill the table."""
        reviewer = check_reviewer(self.reviewer_edit.text().strip())
        start = open_review(self.out_dir, series_uid, reviewer, db_url=self.db_url)
        self.session = ReviewSession(start)
        self.series_box.setCurrentIndex(max(self.series_box.findData(series_uid), 0))
        vol = start.volume
        self.viewer.layers.clear()
        self.viewer.add_image(vol.array, name=f"CT {vol.meta.study_id} {vol.meta.timepoint}".strip(),
                              scale=vol.spacing, contrast_limits=BONE_WINDOW_HU, colormap="gray")
        for region in REGIONS:
            keys = [k for k in self.session.keys if k.region.value == region]
            layer = self.viewer.add_labels(self.session.maps[region], name=ROI_LAYER[region], scale=vol.spacing,
                                           opacity=0.6)
            layer.features = {"index": [k.label_code for k in keys], "roi": [k.name for k in keys]}
            # napari emits `paint` before it writes a programmatic paint: refresh once the edit is done
            layer.events.paint.connect(self._refresh_soon)
            layer.events.data.connect(self._refresh_soon)
        if start.screws:
            self._add_screw_axes(start)
        self.halo_box.clear()
        for path in start.halo_maps:  # follow-up scans: the run's halo map of each screw
            self.halo_box.addItem(f"halo map {path.stem.rsplit('_screw_', 1)[-1].replace('_', ' ')}", str(path))
        self.halo_box.setVisible(bool(start.halo_maps))
        self.halo_image.setVisible(bool(start.halo_maps))
        self.vertebra_box.clear()
        self.vertebra_box.addItems(list(dict.fromkeys(k.vertebra for k in self.session.keys)))
        a = self.session.maps["A"]
        k = np.nonzero(a.any(axis=(1, 2)))[0]
        self.viewer.dims.set_point(0, (int(np.median(k)) if k.size else vol.shape[0] // 2) * vol.spacing[0])
        self.viewer.reset_view()
        self.refresh()

    def _add_screw_axes(self, start) -> None:
        """The screws found on a follow-up scan, as lines from entry to tip (screws.csv, LPS mm)."""
        vol = start.volume
        lines = []
        for s in start.screws:
            ends = np.array([[s.entry_x_mm, s.entry_y_mm, s.entry_z_mm], [s.tip_x_mm, s.tip_y_mm, s.tip_z_mm]], float)
            lines.append(vol.lps_to_index(ends))
        self.viewer.add_shapes(lines, shape_type="line", name=SCREW_AXES_LAYER, scale=vol.spacing, edge_color="yellow",
                               edge_width=1.0)

    def _refresh_soon(self, *_) -> None:
        QTimer.singleShot(0, self.refresh)

    def _show_halo_map(self, *_) -> None:
        path = self.halo_box.currentData()
        pixmap = QPixmap(path) if path else QPixmap()
        self.halo_image.setPixmap(pixmap.scaledToWidth(HALO_MAP_WIDTH_PX) if not pixmap.isNull() else pixmap)

    def refresh(self, *_) -> None:
        """Re-measure the edited ROIs and show every ROI's values."""
        if self.session is None:
            return
        table = self.session.table()
        self.table.setRowCount(len(table))
        for i, (key, row) in enumerate(table):
            values = (key.name, _fmt(row.vbmd_mg_cm3), _fmt(row.vbmd_se_mg_cm3, 2), str(row.n_voxels),
                      row.roi_source + (f" ({row.reviewer})" if row.reviewer else ""))
            for j, text in enumerate(values):
                self.table.setItem(i, j, QTableWidgetItem(text))
        for region in REGIONS:
            self.viewer.layers[ROI_LAYER[region]].refresh()

    # ------------------------------------------------------------ tools
    def _key(self, region: Region, side: Side):
        vertebra = self.vertebra_box.currentText()
        return next(k for k in self.session.keys if (k.vertebra, k.region, k.side) == (vertebra, region, side))

    def show_ellipse(self) -> None:
        """Put the chosen vertebra's ROI A as an ellipse in a shapes layer: move, resize or rotate it there."""
        key = self._key(Region.A, Side.center)
        mask = self.session.maps["A"] == key.label_code
        idx = np.argwhere(mask)
        if not idx.size:
            self.status.setText(f"{key.name} is empty: draw an ellipse in the '{ELLIPSE_LAYER}' layer")
            return
        k = float(np.median(idx[:, 0]))
        (j0, i0), (j1, i1) = idx[:, 1:].min(0), idx[:, 1:].max(0)
        corners = np.array([[k, j0, i0], [k, j0, i1], [k, j1, i1], [k, j1, i0]], float)
        if ELLIPSE_LAYER in self.viewer.layers:
            self.viewer.layers.remove(ELLIPSE_LAYER)
        layer = self.viewer.add_shapes([corners], shape_type="ellipse", name=ELLIPSE_LAYER, edge_color="cyan",
                                       face_color="transparent", scale=self.session.series.volume.spacing)
        layer.mode = "select"

    def apply_ellipse(self) -> None:
        """ROI A of the chosen vertebra := the ellipse of the shapes layer, over its slices."""
        if ELLIPSE_LAYER not in self.viewer.layers or not len(self.viewer.layers[ELLIPSE_LAYER].data):
            self.status.setText("press 'ROI A ellipse' first, then move, resize or rotate the ellipse")
            return
        key = self._key(Region.A, Side.center)
        v = np.asarray(self.viewer.layers[ELLIPSE_LAYER].data[-1], float)[:, -2:]  # corners (j, i)
        edge0, edge1 = v[1] - v[0], v[2] - v[1]
        angle = float(np.arctan2(edge0[1], edge0[0]))
        shape = self.session.maps["A"].shape
        k = np.nonzero((self.session.series.auto_maps["A"] == key.label_code).any(axis=(1, 2)))[0]
        if not k.size:
            half = self.session.series.settings.roi.a_height_mm / 2 / self.session.series.volume.spacing[0]
            k = np.array([int(self.viewer.dims.point[0] / self.session.series.volume.spacing[0] - half),
                          int(self.viewer.dims.point[0] / self.session.series.volume.spacing[0] + half)])
        mask = ellipse_slab(shape, v.mean(0), (np.linalg.norm(edge0) / 2, np.linalg.norm(edge1) / 2), angle,
                            (int(k.min()), int(k.max()) + 1))
        self.session.replace_roi(key, mask)
        self.refresh()

    def apply_screw_line(self) -> None:
        """ROI C of the chosen vertebra and side := a planned screw along the line drawn in 'planned screw'."""
        if SCREW_LINE_LAYER not in self.viewer.layers:
            self.viewer.add_shapes(name=SCREW_LINE_LAYER, shape_type="line", edge_color="magenta",
                                   scale=self.session.series.volume.spacing).mode = "add_line"
            self.status.setText("draw the screw's line (entry to tip), then press 'Place C along line' again")
            return
        lines = self.viewer.layers[SCREW_LINE_LAYER].data
        if not len(lines):
            self.status.setText("draw the screw's line (entry to tip) first")
            return
        vol = self.session.series.volume
        entry, tip = vol.index_to_lps(np.asarray(lines[-1], float)[[0, -1]])
        radius = self.session.series.settings.roi.screw_diameter_mm / 2
        key = self._key(Region.C, Side(self.side_box.currentText()))
        self.session.replace_roi(key, trajectory_cylinder(vol, entry, tip, radius))
        self.refresh()

    def reset_vertebra(self) -> None:
        """The chosen vertebra's ROIs A, B and C back to the automatic ones."""
        self.session.reset_vertebra(self.vertebra_box.currentText())
        self.refresh()

    def save(self) -> None:
        """Save the edits (maps, re-measured rows, audit, CSVs) and say which ROIs changed."""
        saved = save_review(self.session, self.out_dir, db_url=self.db_url)
        names = ", ".join(c.key.name for c in saved.changes)
        self.status.setText(f"saved: {names}" if names else "no ROI changed since the last save")
        self.refresh()


def run_viewer(out_dir: Path, *, series_uid: str | None = None, reviewer: str, db_url: str | None = None,
               exit_when_shown: bool = False) -> None:
    """Open napari with the review widget (``bmdpipe review``); blocks until the window is closed.

    The series ``series_uid`` is opened at once, as is the run's only series; otherwise the
    reviewer picks one. ``exit_when_shown`` prints ``viewer shown <epoch s>`` when the window is
    up with the series loaded, then quits (the start-up benchmark).
    """
    viewer = napari.Viewer(title=f"bmdpipe review: {Path(out_dir).name}")
    widget = ReviewWidget(viewer, out_dir, reviewer=reviewer, db_url=db_url)
    viewer.window.add_dock_widget(widget, name="bmdpipe review", area="right")
    uids = [widget.series_box.itemData(i) for i in range(widget.series_box.count())]
    if series_uid or len(uids) == 1:
        widget.open_series(series_uid or uids[0])
    if exit_when_shown:
        def shown() -> None:
            QApplication.processEvents()  # the window's first paint is done
            print(f"viewer shown {time.time():.3f}", flush=True)
            viewer.close()

        QTimer.singleShot(0, shown)
    napari.run()
