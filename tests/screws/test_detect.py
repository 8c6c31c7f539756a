"""Screw detection: metal runs, axis, ends, diameter, rods/blocks rejected, side and level."""

from dataclasses import replace

import numpy as np
import pytest

from bmdpipe.config import ScrewSettings
from bmdpipe.results import Screw, Side, Vertebra
from bmdpipe.screws import detect_screws, saturation_level
from bmdpipe.screws.assign import pedicle_path_problem
from bmdpipe.screws.detect import find_metal_runs
from bmdpipe.volume import Volume

SMOOTH = ScrewSettings(thread_depth_mm=0.0)  # the test phantoms have smooth (unthreaded) shafts


def test_no_metal_gives_no_screws():
    vol = Volume(array=np.full((20, 30, 30), 150.0, np.float32), spacing=(1.0, 0.8, 0.8))
    assert detect_screws(vol, ScrewSettings()) == []


def test_single_screw_geometry(screw_block):
    """Entry/tip within 1 mm and the thread-crest diameter within 0.3 mm despite 3071-HU saturation."""
    vol, tr = screw_block(width_mm=0.0, clip=True, seed=1)
    assert saturation_level(vol.array, metal_threshold_hu=2500.0, min_fraction=0.02, min_voxels=3) == pytest.approx(3071.0)
    (s,) = detect_screws(vol, SMOOTH)
    assert np.linalg.norm(np.subtract(s.entry_lps, tr["entry"])) < 1.0
    assert np.linalg.norm(np.subtract(s.tip_lps, tr["tip"])) < 1.0
    assert s.diameter_mm == pytest.approx(tr["diameter_mm"], abs=0.3)
    assert s.length_mm == pytest.approx(tr["length_mm"], abs=1.5)


def test_extended_hu_scale(screw_block):
    vol, tr = screw_block(width_mm=0.0, clip=False, seed=2)
    assert saturation_level(vol.array, metal_threshold_hu=2500.0, min_fraction=0.02, min_voxels=3) is None
    (s,) = detect_screws(vol, SMOOTH)
    assert s.diameter_mm == pytest.approx(tr["diameter_mm"], abs=0.3)


def _cylinder_points(c, a, length, radius, step=0.7):
    a = np.asarray(a, float) / np.linalg.norm(a)
    u = np.cross(a, [1.0, 0, 0]) if abs(a[0]) < 0.9 else np.cross(a, [0, 1.0, 0])
    u /= np.linalg.norm(u)
    v = np.cross(a, u)
    g = np.arange(-radius, radius + 1e-9, step)
    t = np.arange(0, length, step)
    T, X, Y = np.meshgrid(t, g, g, indexing="ij")
    keep = X ** 2 + Y ** 2 <= radius ** 2
    return np.asarray(c) + T[keep, None] * a + X[keep, None] * u + Y[keep, None] * v


def test_runs_split_screw_from_rod_and_reject_block():
    """A screw touching a rod is one 'screw' run and one 'rod' run; a solid block (cage) is bulky."""
    screw = _cylinder_points([0, 0, 0], [0.3, -1.0, 0.05], 45.0, 3.3)
    rod = _cylinder_points([-3, 2, -30], [0.0, 0.1, 1.0], 70.0, 3.0)
    block = np.argwhere(np.ones((14, 36, 30), bool)) * 0.7 + [60.0, 0.0, 0.0]
    runs = find_metal_runs(np.vstack([screw, rod]), ScrewSettings(), rng=np.random.default_rng(0))
    kinds = sorted(r.kind for r in runs if r.kind != "short")
    assert kinds == ["rod", "screw"]
    runs = find_metal_runs(block, ScrewSettings(), rng=np.random.default_rng(0))
    assert all(r.kind != "screw" for r in runs)


def _vertebra(vol, name, vid, centre_lps, half_mm=(12.0, 15.0, 15.0)):
    """A vertebra whose mask is a block of +-half_mm (z, y, x) around centre_lps (a lumbar vertebra's extent)."""
    h = np.ceil(np.asarray(half_mm) / np.asarray(vol.spacing)).astype(int)
    kji = np.rint(vol.lps_to_index(np.asarray(centre_lps))).astype(int)
    return Vertebra(name=name, verse_id=vid, offset=tuple(int(v) for v in kji - h), mask=np.ones(2 * h + 1, bool),
                    centroid_lps=tuple(centre_lps))


@pytest.mark.parametrize("flip_x", [False, True])
def test_side_from_lps_not_index(screw_block, flip_x):
    """Two screws: the one at larger LPS x is the patient's left, whatever the array order."""
    vol, tr = screw_block(width_mm=0.0, second_screw=True, seed=3)
    if flip_x:  # same patient, columns stored right-to-left
        arr = vol.array[:, :, ::-1].copy()
        d = np.diag([-1.0, 1.0, 1.0])
        x_last = vol.origin[0] + (vol.shape[2] - 1) * vol.spacing[2]
        vol = Volume(array=arr, spacing=vol.spacing, origin=(x_last, vol.origin[1], vol.origin[2]), direction=d)
    mid_x = 0.5 * (tr["entry"][0] + (30.0 - 16.0))
    centre = (mid_x, 30.0, 30.0)
    verts = [_vertebra(vol, "L4", 23, centre), _vertebra(vol, "L3", 22, (mid_x, 30.0, 70.0))]
    screws = detect_screws(vol, SMOOTH, vertebrae=verts)
    assert len(screws) == 2
    by_side = {s.side: s for s in screws}
    assert set(by_side) == {Side.left, Side.right}
    assert by_side[Side.left].entry_lps[0] > by_side[Side.right].entry_lps[0]
    assert all(s.vertebra == "L4" for s in screws)


@pytest.mark.parametrize("gap_mm,assigned", [(3.0, True), (8.0, False)])
def test_metal_away_from_every_vertebra_is_not_assigned(screw_block, gap_mm, assigned):
    """A straight metal run whose closest point lies ``gap_mm`` above the only vertebra's box belongs to
    it within max_distance_from_vertebra_mm (5 mm), to none beyond (hip stem, a screw of another level)."""
    vol, tr = screw_block(width_mm=0.0, seed=3)
    (s,) = detect_screws(vol, SMOOTH)
    z_low = min(s.entry_lps[2], s.tip_lps[2])
    half = np.array([10.0, 15.0, 15.0])
    centre = (30.0, 30.0, z_low - gap_mm - half[0])
    (found,) = detect_screws(vol, SMOOTH, vertebrae=[_vertebra(vol, "L4", 23, centre, half_mm=half)])
    assert (found.vertebra == "L4") is assigned


def _vertebra_with_canal(canal_lps, body_lps, canal_depth_mm=16.0):
    """A vertebra known by its canal and body centres (LPS mm) and the canal's depth (mm) alone."""
    return Vertebra(name="L4", verse_id=23, offset=(0, 0, 0), mask=np.ones((1, 1, 1), bool), centroid_lps=body_lps,
                    canal_center_lps=canal_lps, body_center_lps=body_lps, canal_depth_mm=canal_depth_mm)


def _run(entry, tip):
    entry, tip = np.asarray(entry, float), np.asarray(tip, float)
    return Screw(entry_lps=tuple(entry), tip_lps=tuple(tip), length_mm=float(np.linalg.norm(tip - entry)),
                 diameter_mm=6.5, vertebra="L4")


def test_pedicle_path_tells_a_screw_from_a_crosslink_and_a_cage_wall():
    """Canal centre at y = 0, body centre 25 mm in front (LPS: anterior = -y), canal 16 mm deep, so the
    body's posterior wall is at y = -8. A screw 20 deg off the AP axis from behind the canal into the body
    passes; a crosslink (left-right) fails on its angle; a 23 mm cage wall whose posterior end is at
    y = -14, 6 mm in front of the wall, fails on its depth; a screw 45 deg off still passes (50 deg)."""
    v = _vertebra_with_canal((0.0, 0.0, 0.0), (0.0, -25.0, 0.0))
    s = ScrewSettings()
    check = lambda run: pedicle_path_problem(run, v, max_ap_angle_deg=s.max_ap_angle_deg,  # noqa: E731
                                             max_head_depth_mm=s.max_head_depth_mm)
    yaw = np.radians(20.0)
    assert check(_run((18.0, 10.0, 0.0), (18.0 - 45 * np.sin(yaw), 10.0 - 45 * np.cos(yaw), 2.0))) == ""
    assert check(_run((18.0, 10.0, 0.0), (-18.0, -26.0, 0.0))) == ""  # 45 deg
    crosslink = check(_run((20.0, 12.0, 0.0), (-20.0, 12.0, 0.0)))
    assert "90 deg" in crosslink and "crosslink" in crosslink
    cage = check(_run((6.0, -14.0, -15.0), (6.0, -37.0, -15.0)))
    assert "6 mm in front" in cage and "cage" in cage
    # a vertebra without a measured canal cannot judge: nothing is refused
    bare = Vertebra(name="L4", verse_id=23, offset=(0, 0, 0), mask=np.ones((1, 1, 1), bool), centroid_lps=(0, 0, 0))
    assert pedicle_path_problem(_run((20.0, 12.0, 0.0), (-20.0, 12.0, 0.0)), bare, max_ap_angle_deg=50.0,
                                max_head_depth_mm=0.0) == ""


@pytest.mark.parametrize("canal_y_offset_mm,assigned", [(10.0, True), (-20.0, False)])
def test_metal_run_wholly_in_front_of_the_canal_is_not_a_pedicle_screw(screw_block, canal_y_offset_mm, assigned,
                                                                       caplog):
    """The block's screw with a vertebra whose canal centre lies 10 mm in front of the screw's posterior
    end (the end behind the body's wall: a pedicle screw) or 20 mm behind it (the whole run in front of the
    wall, like an interbody cage's wall) and the body centre 25 mm in front of the canal."""
    vol, tr = screw_block(width_mm=0.0, seed=3)
    (s,) = detect_screws(vol, SMOOTH)
    entry = np.asarray(s.entry_lps)
    canal = entry + np.array([0.0, -canal_y_offset_mm, 0.0])
    body = canal + np.array([0.0, -25.0, 0.0])
    v = replace(_vertebra(vol, "L4", 23, tuple(0.5 * (entry + np.asarray(s.tip_lps)))), canal_center_lps=tuple(canal),
                body_center_lps=tuple(body), canal_depth_mm=16.0)
    with caplog.at_level("INFO", logger="bmdpipe.screws.detect"):
        (found,) = detect_screws(vol, SMOOTH, vertebrae=[v])
    assert (found.vertebra == "L4") is assigned
    said = [r.getMessage() for r in caplog.records if "not a pedicle screw of L4" in r.getMessage()]
    assert len(said) == (0 if assigned else 1)
    assert assigned or "mm in front of L4's posterior body wall" in said[0]
