"""Halo width, circumference and loosening call on analytic screw phantoms (known truth)."""

import numpy as np
import pytest

from bmdpipe.config import HaloSettings, ScrewSettings
from bmdpipe.results import Screw
from bmdpipe.screws import measure_halo, measure_screws
from bmdpipe.screws.halo import measure_halo_detail

HALO = HaloSettings()
SMOOTH = ScrewSettings(thread_depth_mm=0.0)  # the phantoms have smooth shafts


def _true_screw(tr):
    return Screw(entry_lps=tuple(tr["entry"]), tip_lps=tuple(tr["tip"]), length_mm=tr["length_mm"],
                 diameter_mm=tr["diameter_mm"])


@pytest.mark.parametrize("width,clip", [(0.0, True), (2.0, True), (1.3, False)])
def test_full_arc_width(screw_block, width, clip):
    """Full-circumference halo: maximum width within 0.3 mm; loosened iff width >= 1 mm."""
    vol, tr = screw_block(width_mm=width, arc=1.0, clip=clip, seed=11)
    h = measure_halo(vol, _true_screw(tr), HALO, SMOOTH)
    if width == 0.0:
        # known weakness: residual bloom-model mismatch reads 0.4-0.9 mm where there is no halo;
        # it must stay below the loosening threshold
        assert h.widest_arc_mm < 1.0
    else:
        assert h.widest_arc_mm == pytest.approx(width, abs=0.3)
    assert h.loosened is (width >= 1.0)
    if width >= 1.0:
        assert h.circumference_fraction >= 0.8
    assert h.width_map_mm is not None and h.width_map_mm.shape[1] == HALO.n_angles


def test_partial_arc_is_not_loosening(screw_block):
    """A 2 mm halo over 30 % of the circumference: wide, but not loose by the 50 % rule."""
    vol, tr = screw_block(width_mm=2.0, arc=0.3, seed=12)
    h = measure_halo(vol, _true_screw(tr), HALO, SMOOTH)
    assert h.widest_arc_mm == pytest.approx(2.0, abs=0.35)
    assert h.circumference_fraction == pytest.approx(0.3, abs=0.12)
    assert not h.loosened
    h2 = measure_halo(vol, _true_screw(tr), HaloSettings(min_circumference_fraction=0.2), SMOOTH)
    assert h2.loosened  # the fraction is a setting


def test_sclerotic_rim(screw_block):
    vol, tr = screw_block(width_mm=1.5, arc=1.0, rim=True, seed=13)
    h = measure_halo(vol, _true_screw(tr), HALO, SMOOTH)
    assert h.sclerotic_rim
    assert h.widest_arc_mm == pytest.approx(1.5, abs=0.3)
    vol, tr = screw_block(width_mm=1.5, arc=1.0, rim=False, seed=13)
    assert not measure_halo(vol, _true_screw(tr), HALO, SMOOTH).sclerotic_rim


def test_streak_neither_makes_nor_hides_a_call(screw_block):
    """A photon-starvation band through the screw is left out, not read as a halo."""
    vol, tr = screw_block(width_mm=0.0, streak=True, seed=14)
    d = measure_halo_detail(vol, _true_screw(tr), HALO, SMOOTH)
    assert d.streak.any()
    assert not d.halo.loosened
    assert d.halo.circumference_fraction < 0.5
    vol, tr = screw_block(width_mm=1.5, arc=1.0, streak=True, seed=14)
    assert measure_halo(vol, _true_screw(tr), HALO, SMOOTH).loosened


def test_measure_screws_fills_halo(screw_block):
    vol, tr = screw_block(width_mm=0.0, seed=15)
    (s,) = measure_screws(vol, [_true_screw(tr)], HALO, SMOOTH)
    assert s.halo is not None and not s.halo.loosened
    assert np.isfinite(s.halo.mean_width_mm)


@pytest.mark.parametrize("sectors", [1, 4])
def test_screws_of_a_scan_share_the_blur(screw_block, sectors):
    """Two screws in one scan: both halos are measured with the median of their fitted blurs, which
    is the phantom's PSF (in every orientation sector: the painted PSF is isotropic); a 1.5 mm halo
    over 40 % of one screw does not change the other's call."""
    from bmdpipe.screws.halo import fit_metal, sample_screw

    halo = HALO.model_copy(update={"blur_sectors": sectors})
    vol, tr = screw_block(width_mm=1.5, arc=0.4, second_screw=True, seed=16)
    first = _true_screw(tr)
    second = Screw(entry_lps=tuple(tr["second"]["entry"]), tip_lps=tuple(tr["second"]["tip"]),
                   length_mm=tr["length_mm"], diameter_mm=tr["diameter_mm"])
    alone = [[e.sigma_mm for e in fit_metal(sample_screw(vol, s, halo, SMOOTH), halo, SMOOTH)] for s in (first, second)]
    a, b = measure_screws(vol, [first, second], halo, SMOOTH)
    assert a.halo.blur_sigma_mm == b.halo.blur_sigma_mm
    assert a.halo.blur_sigma_mm == pytest.approx(tuple(np.median(alone, axis=0)), abs=1e-9)
    assert a.halo.blur_sigma_mm == pytest.approx((tr["psf_sigma_mm"],) * sectors, abs=0.05)
    assert a.halo.widest_arc_mm == pytest.approx(1.5, abs=0.3)
    assert a.halo.circumference_fraction == pytest.approx(0.4, abs=0.12) and not a.halo.loosened
    assert b.halo.widest_arc_mm < 1.0 and not b.halo.loosened


def test_row_quantile_equals_numpy_nanquantile():
    """The vectorised per-ray quantile gives numpy's numbers (linear method) with NaN gaps of any size."""
    from bmdpipe.screws.halo import _row_nanquantiles

    rng = np.random.default_rng(3)
    for n_cols in (1, 2, 7, 40):
        x = rng.normal(0.0, 300.0, (64, n_cols))
        x[rng.uniform(size=x.shape) < 0.5] = np.nan
        x = x[~np.isnan(x).all(axis=1)]
        qs = (0.25, 0.5, 0.9)
        for q, got in zip(qs, _row_nanquantiles(x, qs)):
            np.testing.assert_array_equal(got, np.nanquantile(x, q, axis=1))


def test_too_little_measurable_circumference_makes_the_call_indeterminate(screw_block):
    """Soft tissue (20 HU) beyond 3 mm from the crests on one side of a loose screw leaves that side's
    rays unmeasurable (their outer part is no bone). The call stands on the other side; asked for more
    of the circumference than was measured, it is left empty with the reason (and screws.csv writes it
    so) instead of a guess."""
    from bmdpipe.rows import ScrewRow
    from bmdpipe.volume import SeriesMeta

    vol, tr = screw_block(width_mm=1.5, arc=1.0, seed=14)
    entry, tip = np.asarray(tr["entry"]), np.asarray(tr["tip"])
    axis = (tip - entry) / np.linalg.norm(tip - entry)
    idx = np.indices(vol.array.shape).reshape(3, -1).T
    q = vol.index_to_lps(idx) - entry
    perp = q - np.outer(q @ axis, axis)
    side = (perp[:, 0] < 0) & (np.linalg.norm(perp, axis=1) > tr["diameter_mm"] / 2 + 3.0)
    vol.array[tuple(idx[side].T)] = 20.0
    h = measure_halo(vol, _true_screw(tr), HALO, SMOOTH)
    assert h.loosened is True and 0.3 < h.measured_fraction < 0.8 and h.reason == ""
    strict = HALO.model_copy(update={"min_measured_fraction": h.measured_fraction + 0.05})
    s = measure_screws(vol, [_true_screw(tr)], strict, SMOOTH)[0]
    assert s.halo.loosened is None and "of the circumference" in s.halo.reason
    row = ScrewRow.of(s, SeriesMeta(series_uid="1.2.3"))
    assert row.loosened is None and row.reason == s.halo.reason


def test_widest_arc_standard_error_matches_the_scatter_over_noise(screw_block):
    """The same 1.5 mm halo under five noise draws: the reported standard error of the widest arc is
    within a factor of 3 of the widths' scatter over the draws (an independent estimate of the same SD)."""
    halos = [measure_halo(*(lambda v, t: (v, _true_screw(t)))(*screw_block(width_mm=1.5, arc=1.0, seed=s)),
                          HALO, SMOOTH) for s in (31, 32, 33, 34, 35)]
    scatter = float(np.std([h.widest_arc_mm for h in halos], ddof=1))
    se = float(np.mean([h.widest_arc_se_mm for h in halos]))
    assert se > 0 and scatter / 3.0 <= se <= 3.0 * scatter, (se, scatter)
