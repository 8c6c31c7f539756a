"""Normalized metal artefact reduction (bmdpipe.screws.mar) on slices made by the projection simulator."""

from __future__ import annotations

import numpy as np
import pytest

from bmdpipe.config import HaloSettings
from bmdpipe.screws.halo import reduce_metal_artefacts
from bmdpipe.screws.mar import MarParameters, bridge_trace, metal_slices, nmar_array, nmar_slice
from bmdpipe.synthetic.ctphysics import XraySpec, simulate_slices
from bmdpipe.volume import Volume

pytest.importorskip("astra")

PX = 0.7
N = 150


def _phantom():
    """A water ellipse with a bone disc (150 mg/cm3 mineral) holding two titanium rods 16 mm apart (3 mm
    radius, pedicle-screw-like); the second slice the same without the titanium. Returns the density maps,
    the titanium mask and the distances (mm) from the nearer rod's axis."""
    y, x = (np.mgrid[:N, :N] - (N - 1) / 2.0) * PX
    body = (x / 48.0) ** 2 + (y / 38.0) ** 2 <= 1.0
    bone = x ** 2 + (y - 4.0) ** 2 <= 16.0 ** 2
    r = np.minimum(np.hypot(x - 8.0, y - 4.0), np.hypot(x + 8.0, y - 4.0))
    ti = r <= 3.0
    water = np.where(body, 1.0, 0.0).astype(np.float32)
    mineral = np.where(bone, 0.15, 0.0).astype(np.float32)
    with_metal = {"water": np.where(ti, 0.0, water), "hydroxyapatite": np.where(ti, 0.0, mineral),
                  "titanium": np.where(ti, 4.43, 0.0).astype(np.float32)}
    return with_metal, {"water": water, "hydroxyapatite": mineral}, ti, r


def _slices(kernel: str):
    metal_maps, clean_maps, ti, r = _phantom()
    xray = XraySpec(incident_photons=2.0e5, kernel=kernel)
    stack = {m: np.stack([metal_maps.get(m, np.zeros((N, N), np.float32)),
                          clean_maps.get(m, np.zeros((N, N), np.float32))]) for m in metal_maps}
    image = simulate_slices(stack, (PX, PX), xray, np.random.default_rng(5))
    # truth: the same slice without titanium (its place filled with water), no noise
    truth = simulate_slices({m: d[None] for m, d in clean_maps.items()}, (PX, PX), xray, np.random.default_rng(0),
                            noise=False)[0]
    return image, truth, ti, r


@pytest.mark.parametrize("kernel", ["standard", "sharp"])
def test_nmar_lowers_the_error_around_titanium_and_leaves_metal_free_slices(kernel):
    image, truth, ti, r = _slices(kernel)
    out = nmar_array(image, (PX, PX), MarParameters.of())
    ring = (r > 4.5) & (r < 10.0)  # soft tissue and bone 1.5-7 mm beyond the rods' surface
    rmse = lambda a: float(np.sqrt(np.mean((a[ring] - truth[ring]) ** 2)))  # noqa: E731
    before, after = rmse(image[0]), rmse(out[0])
    # measured: standard 176 -> 55 HU, sharp 211 -> 91 HU (photon noise alone: 6 / 12 HU)
    assert before > 150.0  # the dark band and streaks are there to be reduced
    assert after < 0.5 * before
    # the metal-free slice is returned as it was, and the metal's own pixels too
    assert np.array_equal(out[1], image[1])
    metal = image[0] > MarParameters.of().metal_hu
    assert metal.sum() > 0.5 * ti.sum()
    assert np.array_equal(out[0][metal], image[0][metal])
    assert list(metal_slices(image, MarParameters.of().metal_hu)) == [0]


def test_a_slice_without_metal_is_returned_unchanged():
    image = np.random.default_rng(1).normal(40.0, 20.0, (64, 64)).astype(np.float32)
    assert np.array_equal(nmar_slice(image, (0.7, 0.7)), image)


def test_bridge_trace_draws_a_straight_line_across_the_trace():
    sino = np.array([[0.0, 1.0, 9.0, 9.0, 4.0, 5.0]])
    trace = np.array([[False, False, True, True, False, False]])
    assert np.allclose(bridge_trace(sino, trace), [[0.0, 1.0, 2.0, 3.0, 4.0, 5.0]])


def test_halo_setting_applies_nmar_to_the_volume_before_measurement():
    image, _, _, _ = _slices("sharp")
    vol = Volume(array=image, spacing=(1.0, PX, PX))
    off = HaloSettings()
    on = HaloSettings(metal_artefact_reduction="nmar")
    assert off.metal_artefact_reduction == "none"
    got = reduce_metal_artefacts(vol, on)
    assert np.array_equal(got.array[1], image[1])
    assert not np.array_equal(got.array[0], image[0])
    assert got.spacing == vol.spacing


def test_one_screw_and_the_scans_screws_are_both_read_on_the_reduced_volume(screw_block):
    """With nmar, measuring one screw (measure_halo_detail, as the QC figure does without a detail) reads
    the same rays as measuring the scan's screws (measure_halo_details): both on the reduced volume, whose
    rays differ from the original's next to the metal."""
    from bmdpipe.config import ScrewSettings
    from bmdpipe.screws import detect_screws
    from bmdpipe.screws.halo import measure_halo_detail, measure_halo_details, sample_screw

    vol, _ = screw_block(width_mm=1.0, seed=5)
    hardware = ScrewSettings()
    (screw,) = detect_screws(vol, hardware)
    on = HaloSettings(metal_artefact_reduction="nmar")
    one = measure_halo_detail(vol, screw, on, hardware)
    (scan,) = measure_halo_details(vol, [screw], on, hardware)
    np.testing.assert_array_equal(one.rays.values, scan.rays.values)
    assert one.halo.widest_arc_mm == scan.halo.widest_arc_mm
    original = sample_screw(vol, screw, on, hardware).rays.values
    assert not np.array_equal(one.rays.values, original)
