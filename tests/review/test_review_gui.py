"""The napari review widget on a processed synthetic series, headless under Xvfb (pytest-qt, make_napari_viewer).

napari's canvas needs OpenGL: with ``QT_QPA_PLATFORM=offscreen`` vispy gets no context, so
these tests need an X display; ``scripts/run-tests`` runs the suite under ``xvfb-run`` (Mesa)
when no display is set. Without one, or without the ``review`` extra, they skip saying so.
"""

from __future__ import annotations

import os

import numpy as np
import pytest
from sqlalchemy.orm import Session

from bmdpipe.store import db
from bmdpipe.store.csv import read_csv_rows

pytest.importorskip("napari", reason="the review extra is not installed: pip install -e '.[review]'")
pytestmark = [
    pytest.mark.gui,
    pytest.mark.skipif(not os.environ.get("DISPLAY") or os.environ.get("QT_QPA_PLATFORM") == "offscreen",
                       reason="napari needs an X display with OpenGL: run under `xvfb-run -a` with "
                              "QT_QPA_PLATFORM=xcb (scripts/run-tests does when xvfb is installed)"),
]

from bmdpipe.review._qt import BONE_WINDOW_HU, ROI_LAYER, ReviewWidget  # noqa: E402


@pytest.fixture
def widget(make_napari_viewer, run_copy):
    """(widget, viewer, out, uid): the review widget with the run's series opened by reviewer GUI."""
    case, out, uid = run_copy
    viewer = make_napari_viewer(show=True)  # a hidden canvas renders black screenshots
    w = ReviewWidget(viewer, out, reviewer="GUI")
    viewer.window.add_dock_widget(w)
    assert w.series_box.count() == 1 and w.series_box.itemData(0) == uid
    w.open_series(uid)
    return w, viewer, out, uid


def _table(w):
    return {w.table.item(i, 0).text(): [w.table.item(i, j).text() for j in range(w.table.columnCount())]
            for i in range(w.table.rowCount())}


def test_widget_shows_ct_rois_and_their_values(widget):
    """The CT in a bone window, A/B/C as labels layers naming each code ("L4 B left"), a table of the run's values;
    the series picker shows the pseudonym, never a name."""
    w, viewer, out, uid = widget
    names = [layer.name for layer in viewer.layers]
    assert names[1:] == list(ROI_LAYER.values()) and names[0].startswith("CT S")
    assert tuple(viewer.layers[0].contrast_limits) == BONE_WINDOW_HU
    b_layer = viewer.layers[ROI_LAYER["B"]]
    assert dict(zip(b_layer.features["index"], b_layer.features["roi"]))[231] == "L4 B left"
    voxel = np.argwhere(b_layer.data == 231)[0] * np.asarray(b_layer.scale)  # napari names the ROI under the cursor
    viewer.dims.set_point(0, voxel[0])
    assert b_layer.get_status(tuple(voxel), world=True)["value"] == "231; roi: L4 B left"
    assert w.series_box.itemText(0).startswith(read_csv_rows(out / "vbmd.csv")[0]["study_id"])
    table = _table(w)
    rows = {f"{r['vertebra']} {r['region']} {r['side']}": r for r in read_csv_rows(out / "vbmd.csv")}
    assert table.keys() == rows.keys()
    assert table["L4 A center"][1] == f"{float(rows['L4 A center']['vbmd_mg_cm3']):.1f}"
    assert table["L4 A center"][4] == "auto"


def test_painting_updates_the_table_and_save_remeasures(widget, qtbot):
    """Erasing part of L4 B left with the brush updates its row at once; Save stores it as manual with an audit row."""
    w, viewer, out, uid = widget
    layer = viewer.layers[ROI_LAYER["B"]]
    initial = _table(w)
    before = initial["L4 B left"]
    idx = np.argwhere(layer.data == 231)
    layer.brush_size = 6
    layer.paint(tuple(idx[len(idx) // 2]), 0)  # emits the paint event the widget listens to
    qtbot.waitUntil(lambda: _table(w)["L4 B left"] != before, timeout=5000)
    after = _table(w)["L4 B left"]
    assert int(after[3]) < int(before[3]) and after[4] == "manual (GUI)"
    assert {k: v for k, v in _table(w).items() if k != "L4 B left"} == {k: v for k, v in initial.items()
                                                                       if k != "L4 B left"}
    w.save()
    assert w.status.text() == "saved: L4 B left"
    row = {(r["vertebra"], r["region"], r["side"]): r for r in read_csv_rows(out / "vbmd.csv")}[("L4", "B", "left")]
    assert row["roi_source"] == "manual" and int(row["n_voxels"]) == int(after[3])
    engine = db.open_db(db.default_url(out))
    with Session(engine) as s:
        (edit,) = db.query_roi_edits(s, uid)
    engine.dispose()
    assert edit["who"] == "GUI" and edit["what"]["after"]["n_voxels"] == int(after[3])


def _major_axis_deg(mask2d):
    """Direction of a 2-D mask's major axis in the (j, i) plane, degrees in [0, 180)."""
    pts = np.argwhere(mask2d).astype(float)
    w, v = np.linalg.eigh(np.cov(pts.T))
    return float(np.degrees(np.arctan2(v[1, -1], v[0, -1])) % 180)


def test_ellipse_tool_redraws_roi_a(widget):
    """'ROI A ellipse' puts L4's ROI A as an ellipse; rotated by 30 deg and applied, ROI A becomes that ellipse
    over the same slices: area pi a b, same centre, major axis turned by 30 deg."""
    w, viewer, out, uid = widget
    w.vertebra_box.setCurrentText("L4")
    a_before = viewer.layers[ROI_LAYER["A"]].data == 230
    w.show_ellipse()
    shapes = viewer.layers["ROI A ellipse"]
    corners = np.asarray(shapes.data[0], float)
    centre = corners.mean(0)
    t = np.radians(30.0)
    rot = np.array([[np.cos(t), -np.sin(t)], [np.sin(t), np.cos(t)]])
    turned = corners.copy()
    turned[:, 1:] = (corners[:, 1:] - centre[1:]) @ rot.T + centre[1:]
    shapes.data = [turned]
    w.apply_ellipse()
    a_after = viewer.layers[ROI_LAYER["A"]].data == 230
    k_before, k_after = np.nonzero(a_before.any((1, 2)))[0], np.nonzero(a_after.any((1, 2)))[0]
    assert (k_before.min(), k_before.max()) == (k_after.min(), k_after.max())
    mid = int(np.median(k_before))
    semi = np.linalg.norm(corners[1, 1:] - corners[0, 1:]) / 2, np.linalg.norm(corners[2, 1:] - corners[1, 1:]) / 2
    assert a_after[mid].sum() == pytest.approx(np.pi * semi[0] * semi[1], rel=0.05)
    np.testing.assert_allclose(np.argwhere(a_after[mid]).mean(0), centre[1:], atol=0.6)
    turn = (_major_axis_deg(a_after[mid]) - _major_axis_deg(a_before[mid])) % 180
    assert min(abs(turn - 30), abs(turn + 150)) < 4
    assert _table(w)["L4 A center"][4] == "manual (GUI)"


def test_screenshot_shows_roi_colours_where_the_roi_is(widget):
    """On a slice through L4's ROI A, the canvas differs from the bare CT exactly where the ROI lies, toward
    the ROI's label colour."""
    w, viewer, out, uid = widget
    a_layer = viewer.layers[ROI_LAYER["A"]]
    vol_spacing = np.asarray(a_layer.scale)
    roi = a_layer.data == 230
    k = int(np.median(np.nonzero(roi.any((1, 2)))[0]))
    viewer.dims.set_point(0, k * vol_spacing[0])
    for name in ROI_LAYER.values():
        viewer.layers[name].visible = name == ROI_LAYER["A"]
    camera = getattr(viewer, "scene", viewer).camera  # napari >= 0.9: viewer.scene.camera
    camera.center = (k * vol_spacing[0], *(np.argwhere(roi[k]).mean(0) * vol_spacing[1:]))
    camera.zoom = 6.0  # canvas pixels per mm: ROI A (~20 mm) spans ~120 pixels
    with_roi = viewer.screenshot(canvas_only=True, flash=False)[..., :3].astype(int)
    a_layer.visible = False
    bare = viewer.screenshot(canvas_only=True, flash=False)[..., :3].astype(int)
    changed = np.abs(with_roi - bare).sum(-1) > 30
    # where ROI A's voxels of this slice fall on the canvas (world = index x spacing; camera centre and zoom)
    h, w_px = changed.shape
    zoom, center = camera.zoom, np.asarray(camera.center)[-2:]
    rows = np.clip(((np.arange(h) - h / 2) / zoom + center[0]) / vol_spacing[1] + 0.5, 0, roi.shape[1] - 1)
    cols = np.clip(((np.arange(w_px) - w_px / 2) / zoom + center[1]) / vol_spacing[2] + 0.5, 0, roi.shape[2] - 1)
    expected = roi[k][rows.astype(int)[:, None], cols.astype(int)[None, :]]
    assert expected.sum() > 2000
    assert (changed & expected).sum() / expected.sum() > 0.9
    assert (changed & ~expected).sum() / changed.sum() < 0.1
    colour = np.asarray(a_layer.get_color(230))[:3] * 255
    toward = np.linalg.norm(with_roi[expected] - colour, axis=1) < np.linalg.norm(bare[expected] - colour, axis=1)
    assert toward.mean() > 0.9


def test_follow_up_scan_shows_screw_axes_and_halo_maps(make_napari_viewer, processed_postop_run):
    """On a follow-up scan each screw found is a line through the metal, and its halo map can be shown."""
    case, out, uid = processed_postop_run
    viewer = make_napari_viewer(show=True)
    w = ReviewWidget(viewer, out, reviewer="GUI")
    w.open_series(uid)
    lines = viewer.layers["screw axes"].data
    assert len(lines) == len(read_csv_rows(out / "screws.csv")) == 2
    for line in lines:  # index (k, j, i) coordinates: the axis' middle lies in metal
        k, j, i = np.rint(np.asarray(line, float).mean(0)).astype(int)
        assert case.volume.array[k, j, i] > 2000
    assert [w.halo_box.itemText(n) for n in range(w.halo_box.count())] == ["halo map L4 left", "halo map L4 right"]
    assert not w.halo_image.pixmap().isNull() and w.halo_image.pixmap().width() == 380


def test_bmdpipe_review_opens_the_viewer(processed_run):
    """`bmdpipe review OUT` (a new process, as a user starts it) opens the run's only series in a napari window."""
    import subprocess
    import sys

    case, out, uid = processed_run
    proc = subprocess.run([sys.executable, "-m", "bmdpipe.cli", "review", str(out), "--reviewer", "GUI",
                           "--exit-when-shown"], capture_output=True, text=True, timeout=300,
                          env={**os.environ, "QT_QPA_PLATFORM": "xcb"})
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.startswith("viewer shown ")
