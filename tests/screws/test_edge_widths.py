"""Halo edge on analytic tissue profiles (metal already subtracted): blurred steps with known edges."""

import numpy as np
import pytest

from bmdpipe.config import HaloSettings
from bmdpipe.screws.esf import step
from bmdpipe.screws.halo import edge_widths

R, SIGMA, BONE, LUCENT = 3.25, 0.45, 180.0, 30.0
SET = HaloSettings()
RADII = (np.arange(int((R + SET.search_mm) / SET.radial_step_mm) + 1) + 0.5) * SET.radial_step_mm


def _widths(profiles, bone_hu=BONE):
    prof = np.atleast_2d(np.asarray(profiles, dtype=float))
    return edge_widths(prof, np.ones_like(prof), RADII, crest_radius_mm=R, bone_hu=bone_hu, sigma_mm=SIGMA,
                       settings=SET)


def _halo(width_mm, *, bone=BONE, extra=None):
    """Lucent tissue out to R + width, bone beyond, blurred by the PSF (2-D disk blur)."""
    y = bone + (LUCENT - bone) * step(RADII, R + width_mm, SIGMA)
    return y if extra is None else y + extra


@pytest.mark.parametrize("width", [0.8, 1.0, 1.3, 2.0, 3.0])
def test_width_of_a_blurred_band(width):
    """The half-way point of a blurred step is the edge (less a small curvature shift)."""
    assert _widths(_halo(width)).width_mm[0] == pytest.approx(width, abs=0.06)


def test_sclerotic_rim_sets_its_own_level():
    """A 1 mm rim of 700 HU beyond a 1.3 mm halo. Half-way to the bone (180 HU) would put the edge
    on the rim's foot; half-way to the rim as seen puts it near the edge. The blur keeps a 1 mm rim
    below 700 HU, so the edge still reads up to ~0.25 mm early (a known bias for double halos)."""
    rim = (700.0 - BONE) * (step(RADII, R + 2.3, SIGMA) - step(RADII, R + 1.3, SIGMA))
    fit = _widths(_halo(1.3, extra=rim))
    assert 1.3 - 0.25 <= fit.width_mm[0] <= 1.3 + 0.05
    assert fit.rim_hu[0] - fit.bone_hu[0] > SET.rim_min_contrast_hu
    unrefined = edge_widths(_halo(1.3, extra=rim)[None, :], np.ones((1, RADII.size)), RADII, crest_radius_mm=R,
                            bone_hu=BONE, sigma_mm=SIGMA, settings=SET.model_copy(update={"refine_iterations": 0}))
    assert unrefined.width_mm[0] < fit.width_mm[0] - 0.2


def _cortex_shift(gap_mm):
    """How far 1 mm of dense cortex (800 HU) ``gap_mm`` beyond a 1.2 mm halo, then soft tissue,
    moves the measured edge (mm)."""
    outer = R + 1.2 + gap_mm
    cortex = (800.0 - BONE) * (step(RADII, outer + 1.0, SIGMA) - step(RADII, outer, SIGMA))
    canal = (20.0 - BONE) * (1.0 - step(RADII, outer + 1.0, SIGMA))
    return _widths(_halo(1.2, extra=cortex + canal)).width_mm[0] - _widths(_halo(1.2)).width_mm[0]


@pytest.mark.xfail(strict=True, reason="known limit: the level re-set for sclerotic rims also follows cortex "
                                       "within ~1.5 mm of the halo's edge (README, Known limits)")
def test_cortex_and_canal_beyond_the_halo_do_not_move_the_edge():
    """Cortex 1.5 mm beyond the halo (a pedicle filled by the screw): the edge is where it was."""
    assert abs(_cortex_shift(1.5)) < 0.03


def test_cortex_further_out_does_not_move_the_edge():
    """Cortex 3 mm beyond the halo (a wide pedicle): the edge stays."""
    assert abs(_cortex_shift(3.0)) < 0.03


def test_a_spike_inside_the_halo_does_not_end_it():
    """One bright bin (a noise spike or a bright streak) inside a 2 mm halo is skipped."""
    spike = np.where(np.abs(RADII - (R + 0.9)) < 0.05, 900.0, 0.0)
    assert _widths(_halo(2.0, extra=spike)).width_mm[0] == pytest.approx(2.0, abs=0.06)


def test_no_halo_and_lucent_all_the_way():
    """Bone right at the start reads at most the start distance; lucent all the way reads the maximum."""
    fit = _widths(np.vstack([np.full(RADII.size, BONE), np.full(RADII.size, LUCENT)]))
    assert fit.width_mm[0] <= SET.edge_start_mm + 0.01
    assert fit.width_mm[1] == pytest.approx(SET.max_width_mm)


def test_empty_bins_are_bridged():
    """Every other radius bin empty (voxel lattice aligned with the screw): same edge."""
    prof = _halo(1.5)[None, :]
    count = np.ones_like(prof)
    count[:, ::2] = 0.0
    fit = edge_widths(prof * count, count, RADII, crest_radius_mm=R, bone_hu=BONE, sigma_mm=SIGMA, settings=SET)
    assert fit.width_mm[0] == pytest.approx(1.5, abs=0.08)


@pytest.mark.parametrize("width", [0.0, 0.2, 0.3, 0.5])
def test_narrow_and_absent_halos_read_their_width_not_the_search_start(width):
    """The edge is searched from ``edge_start_mm`` (0.5 mm) beyond the crests; a ray already at bone
    there used to read exactly that, so a screw without a halo read 0.5 mm. The edge inside the start
    is placed where the blurred step puts it, so growth over follow-ups starts from about zero."""
    assert _widths(_halo(width)).width_mm[0] == pytest.approx(width, abs=0.06)
