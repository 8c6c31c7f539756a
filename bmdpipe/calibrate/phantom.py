"""Calibrate with an in-scan phantom: choose its row of rods, pair them with the certificate, fit.

The rods come from :mod:`~bmdpipe.calibrate.rods`. When the row holds every rod of the
definition, rods and certificate are paired by density order (HU ascending; never by left-right
position). When k of its n rods are found, every pairing that keeps the certificate's order is
tried (:func:`assign_by_fit`): for each choice of missing rods the fit predicts their HU, and a
missing rod is measured where the row's geometry puts it (:mod:`~bmdpipe.calibrate.pad`)
when it reads what the fit predicts. The pairing whose fit is physically plausible, uses the most
rods and is clearly better than the runner-up is taken, with a warning naming the rods inferred
or missing; when two pairings fit alike but calibrate differently the choice is ambiguous and the
calibration is refused, naming both. A core whose HU change across it (:func:`core_gradient_hu`)
exceeds ``rod_max_core_gradient_hu`` is named in a warning (beam hardening or scatter shading).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from itertools import combinations

import numpy as np

from ..config import CalibrationSettings
from ..errors import CalibrationError
from ..results import Calibration, ReferenceMeasurement
from ..volume import Volume
from .attenuation import effective_energy_of_slope
from .definitions import PhantomDefinition, RodDefinition
from .pad import centred_across_pad, measure_missing_rod, pad_level_hu, predicted_positions, shading_along_row
from .models import FitResult, fit_linear, fit_quality_warnings, fit_two_component
from .rods import RodMeasurement, core_gradient_hu, find_rows, mean_slice, refine_rod_edge

__all__ = ["RodMeasurement", "find_rods", "assign_rods", "assign_by_fit", "Assignment", "refine_rod_edge",
           "core_gradient_hu", "calibrate_with_phantom", "phantom_hint"]


def _plausible_fit(rods: list[RodMeasurement], definition: PhantomDefinition, s: CalibrationSettings):
    """Fit of a row holding all the definition's rods, paired by order, or None when it cannot be this
    phantom (:func:`_pairing_plausible`, residuals up to ``rod_residual_refuse_hu``; R^2 at least
    ``r2_refuse``)."""
    try:
        fit = _fit(assign_rods(rods, definition), definition, s)
    except (CalibrationError, ValueError):
        return None
    plausible = fit.r2 >= s.r2_refuse and _pairing_plausible(fit, definition, s, s.rod_residual_refuse_hu)
    return fit if plausible else None


def _physical(fit: FitResult, s: CalibrationSettings) -> bool:
    return s.slope_min_hu_per_mg_cm3 <= fit.slope_hu_per_mg_cm3 <= s.slope_max_hu_per_mg_cm3


def find_rods(volume: Volume, settings: CalibrationSettings | None = None,
              definition: PhantomDefinition | None = None) -> list[RodMeasurement]:
    """Find and measure every rod of a calibration phantom in a volume, without hints.

    Parameters
    ----------
    volume : Volume
        CT in HU. In-plane pixels are assumed square (the mean of the two is used).
    settings : CalibrationSettings
        Rod-finding thresholds (``rod_*``).
    definition : PhantomDefinition, optional
        When given and several rows of round objects qualify, the row with the definition's rod
        count and the best plausible fit (R^2) is taken (not its left-right order).

    Returns
    -------
    list of RodMeasurement
        Rods of the phantom, sorted by column index (display order only): the chosen row, else
        the strongest row (most rods, so that an error names the count actually seen). Empty when
        no row of at least two similar rods in one pad exists.
    """
    s = settings or CalibrationSettings()
    rows = find_rows(volume, s)
    if not rows:
        return []
    if definition is not None:
        n = len(definition.rods)
        fits = [(f.r2, row) for row in rows if len(row) == n and (f := _plausible_fit(row, definition, s))]
        if fits:
            return max(fits, key=lambda fr: fr[0])[1]
    return rows[0]


def _rod_hu_list(rods: list[RodMeasurement]) -> str:
    """The rods' mean HU, ascending, for messages."""
    return ", ".join(f"{r.hu_mean:.0f}" for r in sorted(rods, key=lambda r: r.hu_mean))


def assign_rods(rods: list[RodMeasurement], definition: PhantomDefinition) -> list[tuple[RodMeasurement, object]]:
    """Pair measured rods with certificate rods by density order (HU ascending) and count.

    Raises
    ------
    CalibrationError
        When the number of rods found differs from the definition's.
    """
    expected = definition.sorted_rods()
    if len(rods) != len(expected):
        found = _rod_hu_list(rods)
        if len(rods) < len(expected):
            what = (f"found {len(rods)} of the {len(expected)} rods of phantom {definition.name!r} "
                    f"(rod HU: {found or 'none'}): a rod is missing, hidden by metal/streaks or outside "
                    "the field of view. Check the scan and the phantom definition (--phantom); "
                    "use --phantom none for phantomless calibration")
        else:
            what = (f"found {len(rods)} rods but phantom {definition.name!r} has {len(expected)} "
                    f"(rod HU: {found}): wrong phantom definition? Give the right one with --phantom")
        raise CalibrationError(what)
    by_hu = sorted(rods, key=lambda r: r.hu_mean)
    return list(zip(by_hu, expected))


def _expected_hu(fit: FitResult, rod: RodDefinition) -> float:
    """The HU the fit predicts for a certificate rod (two-component: its water and K2HPO4)."""
    if fit.model == "two-component":
        return float(rod.water_mg_cm3 + fit.details["sigma_ref"] * rod.mineral_mg_cm3 + fit.details["beta_ref"])
    return float(fit.intercept_hu + fit.slope_hu_per_mg_cm3 * rod.mineral_mg_cm3)


def _rms(fit: FitResult) -> float:
    return float(np.sqrt(np.mean(np.square(fit.residuals_hu))))


@dataclass(frozen=True)
class Assignment:
    """One way to pair the found rods with the certificate when some are missing.

    Attributes
    ----------
    pairs : list of (RodMeasurement, RodDefinition)
        The rods used, found and inferred.
    fit : FitResult
    inferred, missing : tuple of str
        Certificate rods measured where the row's geometry puts them, and rods left out.
    """

    pairs: list
    fit: FitResult
    inferred: tuple[str, ...]
    missing: tuple[str, ...]

    @property
    def rank(self) -> tuple[int, float]:
        """Fewer rods left out first, then the smaller RMS residual (HU)."""
        return len(self.missing), _rms(self.fit)


def _completed(pairs: list, fit: FitResult, absent: list[RodDefinition], candidates: list[RodMeasurement],
               definition: PhantomDefinition, s: CalibrationSettings) -> Assignment:
    """``pairs`` with each absent rod that a candidate measures within ``rod_infer_max_residual_hu`` of
    the fit's prediction; kept only when the completed fit leaves every residual below that too."""
    used, added = set(), []
    for rod in absent:
        want = _expected_hu(fit, rod)
        free = [(abs(c.hu_mean - want), i) for i, c in enumerate(candidates) if i not in used]
        if free and min(free)[0] <= s.rod_infer_max_residual_hu:
            i = min(free)[1]
            used.add(i)
            note = (f"rod {rod.name} shows no edge: measured at {candidates[i].hu_mean:.0f} HU where the row's "
                    "geometry puts it, as the fit of the other rods predicts; check the QC plot")
            added.append((replace(candidates[i], warnings=candidates[i].warnings + (note,)), rod))
    if added:
        try:
            full = _fit(pairs + added, definition, s)
        except CalibrationError:
            full = None
        if full is not None and np.max(np.abs(full.residuals_hu)) <= s.rod_infer_max_residual_hu:
            inferred = tuple(d.name for _, d in added)
            return Assignment(pairs + added, full, inferred, tuple(r.name for r in absent if r.name not in inferred))
    return Assignment(pairs, fit, (), tuple(r.name for r in absent))


def _equivalent(a: Assignment, b: Assignment, s: CalibrationSettings) -> bool:
    """Two pairings that give nearly the same density over the clinical range (0-300 mg/cm3, within
    ``rod_assignment_equivalent_percent`` at 150 mg/cm3) are not a real choice."""
    def density(fit, hu):
        return (hu - fit.intercept_hu) / fit.slope_hu_per_mg_cm3
    hu = a.fit.intercept_hu + a.fit.slope_hu_per_mg_cm3 * np.array([0.0, 150.0, 300.0])
    return bool(np.max(np.abs(density(b.fit, hu) - density(a.fit, hu))) <= s.rod_assignment_equivalent_percent * 1.5)


def _pairing_plausible(fit: FitResult, definition: PhantomDefinition, s: CalibrationSettings,
                       max_residual_hu: float) -> bool:
    """Whether a pairing of rods and certificate can be this phantom: every residual within
    ``max_residual_hu``, the slope one an effective energy within ``rod_assignment_kev_range`` gives
    (attenuation tables, gain 1), the intercept (HU of no mineral in a water-like base) within
    ``rod_assignment_max_intercept_hu`` of 0. A wrong pairing, a wrong definition or a row of anatomy
    breaks one."""
    if not _physical(fit, s) or np.max(np.abs(fit.residuals_hu)) > max_residual_hu:
        return False
    if abs(fit.intercept_hu) > s.rod_assignment_max_intercept_hu:
        return False
    try:
        kev = effective_energy_of_slope(definition.material.value, fit.slope_hu_per_mg_cm3)
    except ValueError:
        return False
    return s.rod_assignment_kev_range[0] <= kev <= s.rod_assignment_kev_range[1]


def assign_by_fit(rods: list[RodMeasurement], candidates: list[RodMeasurement], definition: PhantomDefinition,
                  s: CalibrationSettings) -> tuple[Assignment, list[Assignment]]:
    """Pair k found rods with the n of the certificate (k < n) by the fit, not by count.

    Every choice of the n - k missing certificate rods is tried (the found rods keep the
    certificate's order of HU); each missing rod is completed by a ``candidate`` (a rod measured
    where the row's geometry puts one) that reads what the fit predicts. A pairing is kept when its
    fit is plausible (:func:`_pairing_plausible` with residuals up to ``rod_residual_warn_hu``: a
    pairing told by its fit must fit as well as a whole phantom without warnings).

    Returns
    -------
    best : Assignment
        The one that leaves out the fewest rods, then has the smallest RMS residual.
    rivals : list of Assignment
        Other pairings that leave out as few rods, fit within ``rod_assignment_margin_hu`` of the best
        (RMS) and calibrate differently (:func:`_equivalent`): the choice is ambiguous when any.

    Raises
    ------
    CalibrationError
        When no pairing is plausible.
    """
    expected = list(definition.sorted_rods())
    by_hu = sorted(rods, key=lambda r: r.hu_mean)
    options = []
    for missing in combinations(range(len(expected)), len(expected) - len(rods)):
        kept = [d for i, d in enumerate(expected) if i not in missing]
        pairs = list(zip(by_hu, kept))
        try:
            fit = _fit(pairs, definition, s)
        except CalibrationError:
            continue
        if _pairing_plausible(fit, definition, s, s.rod_residual_warn_hu):  # a fit must tell it: stricter
            options.append(_completed(pairs, fit, [expected[i] for i in missing], candidates, definition, s))
    if not options:
        raise CalibrationError(f"none of the ways to pair the {len(rods)} rods found with the {len(expected)} of "
                               f"{definition.name!r} gives a physical fit")
    options.sort(key=lambda o: o.rank)
    best = options[0]
    rivals = [o for o in options[1:] if len(o.missing) == len(best.missing)
              and _rms(o.fit) < _rms(best.fit) + s.rod_assignment_margin_hu and not _equivalent(best, o, s)]
    return best, rivals


def _inferred_candidates(volume: Volume, rods: list[RodMeasurement], n_missing: int,
                         definition: PhantomDefinition, s: CalibrationSettings) -> list[RodMeasurement]:
    """Rods measured where the row's geometry puts the missing ones, inside the pad."""
    arr = np.asarray(volume.array, dtype=np.float32)
    img = mean_slice(arr)
    px = 0.5 * (volume.spacing[1] + volume.spacing[2])
    level = pad_level_hu(img, rods, px, s)
    radius = definition.rod_diameter_mm / 2.0 if definition.rod_diameter_mm else float(
        np.median([r.radius_mm for r in rods]))
    out = []
    for pos in predicted_positions(rods, n_missing, px, definition.rod_pitch_mm):
        m = measure_missing_rod(arr, img, pos, radius, level, px, s)
        centred = None if m is not None else centred_across_pad(img, pos, rods, px)
        if centred is not None:  # off a curved pad's middle: try its middle
            m = measure_missing_rod(arr, img, centred, radius, level, px, s)
        if m is not None:
            out.append(m)
    return out


def _row_reaches_edge(rods: list[RodMeasurement], volume: Volume, padding_hu: float) -> bool:
    """True when one more rod at the row's pitch beyond either end would leave the image."""
    if len(rods) < 2:
        return False
    c = np.array([[r.center_kji[1], r.center_kji[2]] for r in rods])
    order = np.argsort(c[:, 1])
    c = c[order]
    pitch = float(np.median(np.linalg.norm(np.diff(c, axis=0), axis=1)))
    ends = [c[0] - (c[1] - c[0]) / np.linalg.norm(c[1] - c[0]) * pitch,
            c[-1] + (c[-1] - c[-2]) / np.linalg.norm(c[-1] - c[-2]) * pitch]
    r_px = max(r.radius_mm for r in rods) / min(volume.spacing[1:])
    ny, nx = volume.shape[1:]
    arr = volume.array
    for e in ends:
        y, x = e
        if not (r_px <= y < ny - r_px and r_px <= x < nx - r_px):
            return True
        if np.median(arr[:, int(y), int(x)]) <= padding_hu:  # outside the reconstructed field of view
            return True
    return False


def _fit(pairs, definition: PhantomDefinition, s: CalibrationSettings):
    hu = np.array([r.hu_mean for r, _ in pairs])
    mineral = np.array([d.mineral_mg_cm3 for _, d in pairs])
    if definition.model == "two-component":
        water = np.array([d.water_mg_cm3 for _, d in pairs])
        return fit_two_component(hu, mineral, water, sigma_offset=s.mindways_sigma_offset, beta_offset=s.mindways_beta_offset)
    return fit_linear(hu, mineral)


def spread_slabs(volume: Volume, n_slabs: int, slab_mm: float) -> Volume:
    """``n_slabs`` slabs of ``slab_mm`` spread evenly over ``volume``, stacked as one volume (the whole
    volume when it is not longer than that). Slice positions are not kept: for finding objects that run
    along z, not for geometry."""
    per = max(1, int(round(slab_mm / volume.spacing[0])))
    nk = volume.shape[0]
    if n_slabs * per >= nk:
        return volume
    starts = np.linspace(0, nk - per, n_slabs).round().astype(int)
    return Volume(array=np.concatenate([volume.array[k:k + per] for k in starts]), spacing=volume.spacing,
                  meta=volume.meta)


def phantom_hint(volume: Volume, settings: CalibrationSettings | None = None) -> str:
    """A warning when a scan calibrated without a phantom seems to hold one, else ``''``.

    A row of at least ``phantom_hint_min_rods`` round uniform rods (:func:`find_rods`) whose
    core HU span at least ``phantom_hint_min_span_hu`` is a calibration phantom, not anatomy. A
    phantom runs through the scan, so the rods are looked for in ``phantom_hint_slabs`` slabs of
    ``rod_slab_mm`` spread over it (:func:`spread_slabs`), not in all of it.
    """
    s = settings or CalibrationSettings()
    # the rods of a phantom run through the scan: seen in at least two of the slabs, not just one
    slabs = spread_slabs(volume, s.phantom_hint_slabs, s.rod_slab_mm)
    rods = find_rods(slabs, s.model_copy(update={"rod_min_slab_fraction": max(s.rod_min_slab_fraction,
                                                                               2.0 / s.phantom_hint_slabs)}))
    hu = sorted(r.hu_mean for r in rods)
    if len(hu) < s.phantom_hint_min_rods or hu[-1] - hu[0] < s.phantom_hint_min_span_hu:
        return ""
    return (f"a calibration phantom seems to be in the scan ({len(hu)} rods, {hu[0]:.0f} to {hu[-1]:.0f} HU) but "
            "phantomless calibration was used: give --phantom NAME (bmdpipe phantoms) to calibrate with it")


def _partial_row(volume: Volume, rods: list[RodMeasurement], definition: PhantomDefinition, s: CalibrationSettings,
                 sid: str) -> tuple[list, list[str], list[str]]:
    """A row of k < n rods paired by its fit (:func:`assign_by_fit`), the missing rods measured where
    the row's geometry puts them; a warning for each rod still missing. CalibrationError when no
    pairing is plausible, the choice is ambiguous (naming the candidates) or fewer than
    ``phantom_min_rods`` rods remain. Returns the pairs, the warnings and the names of the rods
    left out."""
    n_expected = len(definition.rods)
    candidates = _inferred_candidates(volume, rods, n_expected - len(rods), definition, s)
    found = f"found {len(rods)} of the {n_expected} rods of phantom {definition.name!r} (rod HU: {_rod_hu_list(rods)})"
    cut = (" The row of rods reaches the edge of the field of view: the phantom is probably cut off."
           if _row_reaches_edge(rods, volume, s.rod_padding_hu) else "")
    try:
        best, rivals = assign_by_fit(rods, candidates, definition, s)
    except CalibrationError as exc:
        raise CalibrationError(f"{sid}: {found} and {exc}: a rod is hidden by metal or streaks, outside the field "
                               f"of view, or the definition is wrong (--phantom).{cut}") from None
    if rivals:
        names = "; ".join(f"{', '.join(o.missing + o.inferred) or 'none'} missing or inferred (RMS "
                          f"{_rms(o.fit):.1f} HU)" for o in [best] + rivals)
        raise CalibrationError(f"{sid}: {found} and cannot tell which are missing: {names}. Check the QC plot and "
                               f"the definition, or give the phantom's geometry (rod_pitch_mm) in it.{cut}")
    if len(best.pairs) < s.phantom_min_rods:
        raise CalibrationError(f"{sid}: {found}; {', '.join(best.missing)} not found, and {len(best.pairs)} rods leave "
                               f"no residual to check the fit (phantom_min_rods {s.phantom_min_rods}): a rod is hidden "
                               f"by metal or streaks or outside the field of view; check the QC plot.{cut}")
    notes = [f"rod {name} not found: calibrated without it (found {len(rods)} of {n_expected} rods).{cut}"
             for name in best.missing]
    return best.pairs, notes, list(best.missing)


def _spans_scan(row: list[RodMeasurement], n_slices: int, s: CalibrationSettings) -> bool:
    """Whether every rod of a row is seen (measured or left out as a streak) in at least
    ``rod_row_span_fraction`` of the slices: a phantom's rods run through the scan, round structures
    of the anatomy (vessels, bowel, bone) come and go."""
    return all(r.n_slices + r.n_outlier_slices >= s.rod_row_span_fraction * n_slices for r in row)


def _assigned_rods(volume: Volume, definition: PhantomDefinition, s: CalibrationSettings,
                   sid: str) -> tuple[list, list[str], list[str]]:
    """The phantom's rods paired with the certificate, a warning for each rod missing, and their names.

    Of the rows of rods in the scan (best first) the phantom's is a row of all its rods with a
    plausible fit (the best R^2), else, of the rows of fewer rods that pair by their fit, the one
    that leaves out the fewest rods once those without an edge are inferred; rows whose
    rods run through the scan (:func:`_spans_scan`) are tried first (a row of three round structures
    in the abdomen once fitted a 3-rod certificate better than the pad whose middle rod was faint:
    +61 % at 150 mg/cm3). When none
    does, a CalibrationError names what the strongest row shows (no phantom, too few rods, more rods
    than the definition, a row cut off by the field of view, an ambiguous pairing, a poor fit).
    """
    rows = find_rows(volume, s)
    n_expected = len(definition.rods)
    if not rows:
        raise CalibrationError(
            f"no calibration phantom found in {sid}: no row of round uniform rods in one pad. Is the phantom in "
            f"the scan (field of view, scan range)? Use --phantom none for phantomless calibration"
        )
    smallest = max(2, (n_expected + 1) // 2)
    errors = []
    spanning = [_spans_scan(row, volume.shape[0], s) for row in rows]
    for tier in ([r for r, ok in zip(rows, spanning) if ok], [r for r, ok in zip(rows, spanning) if not ok]):
        full = [(fit.r2, row) for row in tier if len(row) == n_expected and (fit := _plausible_fit(row, definition, s))]
        if full:
            return assign_rods(max(full, key=lambda fr: fr[0])[1], definition), [], []
        partial = []
        for row in (r for r in tier if smallest <= len(r) < n_expected):
            try:
                partial.append(_partial_row(volume, row, definition, s, sid))
            except CalibrationError as exc:
                errors.append(exc)
        if partial:  # the row that accounts for the most certificate rods (found or inferred), then the strongest
            return min(partial, key=lambda result: len(result[2]))
    strongest = rows[0]  # the most rods: a partial row's error is then the strongest row's
    if errors and len(strongest) < n_expected:
        raise errors[0]
    if len(strongest) < smallest:
        raise CalibrationError(
            f"no calibration phantom found in {sid}: expected {n_expected} rods of {definition.name!r}, found at "
            f"most {len(strongest)} round uniform objects in a row. Is the phantom in the scan (field of view, scan "
            "range)? Use --phantom none for phantomless calibration"
        )
    try:  # as many rods as the definition or more: pair by order; the fit's checks say what is wrong
        return assign_rods(strongest, definition), [], []
    except CalibrationError as exc:
        raise CalibrationError(f"{sid}: {exc}.") from None


def _lateral_mm(volume: Volume):
    """``(row, column) -> mm`` lateral (LPS x) from the scanner's isocentre (the field of view's centre)."""
    nk, nj, ni = volume.shape
    kc = 0.5 * (nk - 1)
    x_iso = float(volume.index_to_lps(np.array([kc, 0.5 * (nj - 1), 0.5 * (ni - 1)]))[0])

    def lateral(rows, cols):
        rows = np.atleast_1d(np.asarray(rows, dtype=float))
        idx = np.stack([np.full(rows.shape, kc), rows, np.asarray(cols, dtype=float) * np.ones(rows.shape)], axis=1)
        return volume.index_to_lps(idx)[:, 0] - x_iso
    return lateral


def _shading_corrected(volume: Volume, pairs: list, s: CalibrationSettings) -> tuple[list, list[str], list[float]]:
    """The rods read as at the isocentre: each minus the pad's shading at its lateral position
    (:func:`~bmdpipe.calibrate.pad.shading_along_row`), when the shading is told apart from the pad's
    noise (a correction of at least ``rod_shading_min_sd`` standard errors) and is smooth cupping (no
    correction above ``rod_shading_max_hu``). The rods' fit residuals cannot judge it: cupping that
    grows with the rods' order along the row tilts the line without leaving residuals. A warning
    names a correction above ``rod_shading_warn_hu``, or shading too large to be cupping; the
    corrections applied (HU)."""
    none = [0.0] * len(pairs)
    if not s.rod_pad_shading_correction:
        return pairs, [], none
    px = 0.5 * (volume.spacing[1] + volume.spacing[2])
    lateral = _lateral_mm(volume)
    shading = shading_along_row(np.asarray(volume.array, dtype=np.float32), [r for r, _ in pairs], lateral, px, s)
    if shading is None:
        return pairs, [], none
    corr, se = zip(*(shading.correction_hu(float(lateral(r.center_kji[1], r.center_kji[2])[0])) for r, _ in pairs))
    if max(abs(c) / max(e, 1e-9) for c, e in zip(corr, se)) < s.rod_shading_min_sd:
        return pairs, [], none  # no shading the pad can tell from its noise
    worst = int(np.argmax(np.abs(corr)))
    if abs(corr[worst]) > s.rod_shading_max_hu:
        return pairs, [f"the pad's HU change by up to {abs(corr[worst]):.0f} HU along the row (more than "
                       f"rod_shading_max_hu {s.rod_shading_max_hu:g} HU of cupping): the rods are not corrected, "
                       "their means depend on where they sit; check the QC plot and the scan set-up"], none
    out = [(replace(r, hu_mean=r.hu_mean - c), d) for (r, d), c in zip(pairs, corr)]
    notes = []
    if abs(corr[worst]) > s.rod_shading_warn_hu:
        notes.append(f"the pad's HU change along the row (beam-hardening cupping): rods read as at the isocentre, "
                     f"rod {pairs[worst][1].name} corrected by {-corr[worst]:+.1f} HU; check the QC plot")
    return out, notes, list(corr)


def _fit_warnings(fit, pairs, definition: PhantomDefinition, s: CalibrationSettings, sid: str) -> list[str]:
    """Warnings on the fit (R^2, the worst rod's residual); a CalibrationError when the slope is not
    physical, R^2 is below the refusal gate or a rod is far off the line (rods mis-detected)."""
    measured = ", ".join(f"{r.hu_mean:.0f}" for r, _ in pairs)
    if not (s.slope_min_hu_per_mg_cm3 <= fit.slope_hu_per_mg_cm3 <= s.slope_max_hu_per_mg_cm3):
        raise CalibrationError(
            f"{sid}: phantom fit slope {fit.slope_hu_per_mg_cm3:.3f} HU per mg/cm3 is outside the physically "
            f"plausible {s.slope_min_hu_per_mg_cm3}-{s.slope_max_hu_per_mg_cm3}: the objects found "
            f"(HU {measured}) are probably not the phantom's rods. Check the QC plot and the phantom definition"
        )
    # HU rises with the certificate's order by construction; the residuals tell whether the pairing was right
    warnings = fit_quality_warnings(fit.r2, warn=s.r2_warn, refuse=s.r2_refuse, what=f"{sid} phantom")
    worst = int(np.argmax(np.abs(fit.residuals_hu)))
    name, residual = pairs[worst][1].name, fit.residuals_hu[worst]
    if abs(residual) > s.rod_residual_refuse_hu:
        raise CalibrationError(
            f"{sid}: rod {name} is {residual:+.1f} HU off the phantom fit (> {s.rod_residual_refuse_hu} HU): rods "
            f"were mis-detected or the definition ({definition.name}) does not match this phantom. Measured rod "
            f"HU: {measured}. Check the QC plot and --phantom"
        )
    if abs(residual) > s.rod_residual_warn_hu:
        warnings.append(f"rod {name} is {residual:+.1f} HU off the fit (> {s.rod_residual_warn_hu} HU): wrong "
                        "certificate value, a rod hit by artefacts, or a mis-detected rod: check the QC plot")
    return warnings


def _rod_warnings(pairs, s: CalibrationSettings) -> list[str]:
    """Warnings on the rods' measurement: few slices, slices left out (streaks), shading."""
    warnings: list[str] = []
    for r, d in pairs:
        warnings += list(r.warnings)
        if r.n_slices < s.rod_min_slices:
            warnings.append(f"rod {d.name} (HU {r.hu_mean:.0f}) measured on only {r.n_slices} slice(s)")
    streaked = [(d.name, r.n_outlier_slices, r.n_slices + r.n_outlier_slices) for r, d in pairs if r.n_outlier_slices]
    if streaked:
        warnings.append("slices left out of rods as outliers (a streak across the phantom?): "
                        + ", ".join(f"{n} {k} of {t}" for n, k, t in streaked))
    shaded = [(d.name, r.core_gradient_hu) for r, d in pairs if r.core_gradient_hu > s.rod_max_core_gradient_hu]
    if shaded:
        warnings.append("rods not uniform (HU change across the measured core: "
                        + ", ".join(f"{n} {g:.0f} HU" for n, g in shaded)
                        + f", > {s.rod_max_core_gradient_hu:g} HU): shading from beam hardening or scatter biases "
                        "the rod means, check the QC plot and the scan set-up")
    return warnings


def _rod_references(pairs, fit, volume: Volume) -> tuple[ReferenceMeasurement, ...]:
    return tuple(
        ReferenceMeasurement(
            name=d.name, hu_mean=r.hu_mean, hu_sd=r.hu_sd, n_voxels=r.n_voxels, nominal_mg_cm3=d.mineral_mg_cm3,
            center_lps=tuple(float(v) for v in volume.index_to_lps(np.array(r.center_kji))),
            radius_mm=r.radius_mm, residual_hu=float(res))
        for (r, d), res in zip(pairs, fit.residuals_hu))


def _fit_details(fit, pairs, definition: PhantomDefinition) -> dict:
    details = dict(fit.details)
    details.update({"model": fit.model, "rod_core_radius_mm": [r.core_radius_mm for r, _ in pairs],
                    "rod_n_slices": [r.n_slices for r, _ in pairs],
                    "rod_core_gradient_hu": [r.core_gradient_hu for r, _ in pairs],
                    "rod_water_mg_cm3": [d.water_mg_cm3 for _, d in pairs]})
    try:  # the effective energy the slope implies (gain 1): pre-calibrates later phantomless fits
        details["kev"] = effective_energy_of_slope(definition.material.value, fit.slope_hu_per_mg_cm3)
    except ValueError:
        details["kev"] = None  # no energy of the tables gives this slope (an unusual phantom)
    return details


def calibrate_with_phantom(volume: Volume, definition: PhantomDefinition, settings: CalibrationSettings | None = None) -> Calibration:
    """Phantom calibration of one series: find rods, assign them, fit, apply the R^2 gates.

    Parameters
    ----------
    volume : Volume
    definition : PhantomDefinition
        Certificate of the phantom in the scan.
    settings : CalibrationSettings

    Returns
    -------
    Calibration
        method ``phantom``; slope/intercept are sigma_CT/beta_CT for a two-component
        phantom; ``references`` are the rods with HU, nominal density, centre (LPS),
        radius and residual.

    Raises
    ------
    CalibrationError
        No phantom found, a rod missing or cut off, or R^2 below the refusal gate.
    """
    s = settings or CalibrationSettings()
    sid = volume.meta.series_uid or "this series"
    pairs, warnings, missing = _assigned_rods(volume, definition, s, sid)
    pairs, shading_notes, shading_hu = _shading_corrected(volume, pairs, s)
    warnings += shading_notes
    if definition.example_values:
        warnings.append(f"phantom definition {definition.name!r} holds EXAMPLE certificate values: use your phantom's certificate")
    fit = _fit(pairs, definition, s)
    warnings += _fit_warnings(fit, pairs, definition, s, sid)
    warnings += _rod_warnings(pairs, s)
    refs = _rod_references(pairs, fit, volume)
    return Calibration(
        method="phantom", phantom=definition.name, material=definition.material,
        slope_hu_per_mg_cm3=fit.slope_hu_per_mg_cm3, intercept_hu=fit.intercept_hu, r2=fit.r2,
        n_references=len(refs), references=refs, warnings=tuple(warnings),
        details={**_fit_details(fit, pairs, definition), "rod_shading_correction_hu": shading_hu,
                 "rod_found_by": [r.found_by for r, _ in pairs], "missing_rods": missing},
    )
