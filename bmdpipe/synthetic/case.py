"""make_case: assemble a synthetic lumbar CT with exact ground truth."""

from __future__ import annotations


import numpy as np
from pydicom.uid import generate_uid

from bmdpipe.results import PedicleAxis, Side
from bmdpipe.volume import SeriesMeta, Volume
from .cage import CageTruth, cage_fills, mark_fills, paint_graft, place_cages
from .ctphysics import mass_attenuation, simulate_slices
from .grid import Grid, VoxelFill
from .pad import draw_pad, paint_pad_and_table
from .phantom import draw_body, paint_abdomen, paint_body, paint_phantom_and_table, paint_vessels
from .scanner import ScannerResponse, apply_psf, draw_scanner, make_noise
from .screws import (ScrewTruth, add_streaks, paint_crosslink, paint_fusion_rods, paint_screw, place_screw,
                     render_screw_metal, screw_metal_fraction, screw_metal_mask)
from .spec import ORIENTATIONS, CaseSpec
from .spine import VertebraGeom, draw_spine, paint_discs_and_canal, paint_sclerosis, paint_vertebra
from .tissue import BONE_CODES, HYDROXYAPATITE_G_CM3, PHYSICS_ONLY_CODES, TISSUE, TISSUE_MATERIALS
from .truth import SyntheticCase, Truth, VertebraTruth

__all__ = ["make_case", "HU_MIN", "HU_MAX"]

HU_MIN = -1024.0
HU_MAX = 3071.0
_FIXED_CODES = (TISSUE["phantom_rod"], TISSUE["phantom_body"], TISSUE["table"], TISSUE["metal"], TISSUE["halo"])
_SURNAMES = ("Okafor", "Lindqvist", "Moreau", "Tanaka", "Kowalski", "Haddad", "Fernsby", "Quinlan")
_GIVEN = ("Amara", "Bertil", "Colette", "Daichi", "Ewa", "Farid", "Greta", "Hollis")


def _tuple3(a) -> tuple[float, float, float]:
    return tuple(float(x) for x in a)  # type: ignore[return-value]


def _vertebra_truth(g: VertebraGeom) -> VertebraTruth:
    peds = []
    for side, sgn in ((Side.left, +1), (Side.right, -1)):
        entry, isth, target, _ = g.pedicle_local(sgn)
        peds.append(PedicleAxis(side=side, entry_lps=_tuple3(g.to_lps(entry)), isthmus_lps=_tuple3(g.to_lps(isth)),
                                target_lps=_tuple3(g.to_lps(target)), isthmus_width_mm=float(g.pedicle_width),
                                isthmus_height_mm=float(g.pedicle_height)))
    return VertebraTruth(
        name=g.name, verse_id=g.verse_id, body_center_lps=_tuple3(g.centre), body_width_mm=2 * g.a,
        body_depth_mm=2 * g.b, body_height_mm=g.h, cancellous_central_mg_cm3=float(g.rho_c),
        cancellous_rim_gain=float(g.rim_gain), posterior_cancellous_mg_cm3=float(g.rho_c * g.posterior_factor),
        cortex_thickness_mm=float(g.cortex_t), cortex_mg_cm3=float(g.cortex_mg),
        endplate_concavity_mm=float(g.concavity), disc_below_mm=float(g.disc_below),
        axes_lps=tuple(_tuple3(g.rot[:, c]) for c in range(3)), pedicles=(peds[0], peds[1]))


def _phi(seed: int, rng: np.random.Generator) -> dict:
    u = rng.integers(0, 1 << 30, size=4)
    name = f"{_SURNAMES[u[0] % len(_SURNAMES)]}^{_GIVEN[u[1] % len(_GIVEN)]}^Q{seed}X{u[2] % 100000:05d}"
    pid = f"PID{seed:06d}Z{u[3] % 1000000:06d}"
    year = 1935 + int(u[2] % 30)
    month = 1 + int(u[3] % 12)
    day = 1 + int(u[0] % 28)
    return {"PatientName": name, "PatientID": pid, "PatientBirthDate": f"{year:04d}{month:02d}{day:02d}"}


def _orient(arr: np.ndarray, grid: Grid, orientation: str):
    """Flip canonical (+x, +y, +z) arrays to ``orientation``; returns (flipped array, origin, direction)."""
    cols = np.array(ORIENTATIONS[orientation], dtype=float).T  # columns = i, j, k axes
    signs = (cols[0, 0], cols[1, 1], cols[2, 2])  # diagonal signed permutations only
    origin = []
    out = arr
    for axis_lps, (sgn, coords) in enumerate(zip(signs, (grid.xs, grid.ys, grid.zs))):
        if sgn < 0:
            out = np.flip(out, axis=2 - axis_lps)
            origin.append(float(coords[-1]))
        else:
            origin.append(float(coords[0]))
    return np.ascontiguousarray(out), tuple(origin), cols


def _case_rngs(seed: int) -> list[np.random.Generator]:
    """The independent random streams of one case (scanner first): one stream per part, so a
    part's draws do not depend on the others."""
    return [np.random.default_rng(s) for s in np.random.SeedSequence(int(seed)).spawn(9)]


def case_scanner(seed: int, spec: CaseSpec | None = None) -> ScannerResponse:
    """The scanner response ``make_case(seed, spec)`` uses (``case.truth.scanner``), without
    making the image: tissue HU, bone slope and intercept, energy, noise and PSF of the case."""
    return draw_scanner(spec or CaseSpec(), _case_rngs(seed)[0])


def make_case(seed: int, spec: CaseSpec | None = None, workers: int = 1) -> SyntheticCase:
    """Generate a synthetic lumbar-spine CT with exact ground truth.

    Parameters
    ----------
    seed : int
        Random seed; the same seed and spec give the same case (and the same physical
        anatomy at any ``spec.spacing_mm``).
    spec : CaseSpec, optional
        What to generate; ``None`` fields are drawn from the seed.
    workers : int
        Processes the projection simulator (``spec.xray``) spreads slices over; the image does not
        depend on it.

    Returns
    -------
    SyntheticCase
        ``volume`` (noisy, blurred HU float32 clipped to [-1024, 3071]), ``labels`` (int16
        VerSe ids, whole vertebra incl. posterior elements) and ``truth``.
    """
    spec = spec or CaseSpec()
    if spec.orientation not in ORIENTATIONS:
        raise ValueError(f"orientation {spec.orientation!r} unknown; use one of {sorted(ORIENTATIONS)}")
    r_scan, r_body, r_spine, r_phant, r_scl, r_screw, r_noise, r_phi, r_art = _case_rngs(seed)
    scanner = draw_scanner(spec, r_scan)
    body = draw_body(spec, r_body)
    verts = draw_spine(spec.levels, spec, r_spine, y0=body.back_y - 100.0)  # spine 100 mm anterior to the back
    grid = _case_grid(spec, verts)
    shape = grid.shape
    tissue = np.zeros(shape, dtype=np.uint8)
    mineral = np.zeros(shape, dtype=np.float32)
    labels = np.zeros(shape, dtype=np.int16)
    part = np.zeros(shape, dtype=np.uint8)
    hu_fixed = np.zeros(shape, dtype=np.float32)

    paint_body(grid, body, tissue)
    abdomen = paint_abdomen(grid, body, verts, tissue, r_body)
    vessels = paint_vessels(grid, verts, tissue)
    if spec.pad is not None:
        layout = draw_pad(spec.pad, scanner, scanner.noise_sd_hu, spec.fov_mm[0] / 2.0, r_phant)
        phantom_truth, table = paint_pad_and_table(grid, body, layout, tissue, hu_fixed)
    else:
        phantom_truth, table = paint_phantom_and_table(grid, body, spec.phantom, scanner, tissue, hu_fixed, r_phant)
    paint_discs_and_canal(grid, verts, tissue)
    for g in verts:
        paint_vertebra(grid, g, tissue, mineral, labels, part)
    scl_on = bool(r_scl.uniform() < 0.5) if spec.sclerosis is None else bool(spec.sclerosis)
    blobs = paint_sclerosis(grid, verts, tissue, mineral, labels, r_scl, scl_on)

    vtruth = tuple(_vertebra_truth(g) for g in verts)
    screws = _place_screws(spec, vtruth, r_screw)
    centroids = [paint_screw(grid, st, tissue, mineral, hu_fixed, scanner.tissue_hu["fibrous"]) for st in screws]
    fusion = (paint_fusion_rods(grid, screws, tissue, mineral, hu_fixed, scanner.metal_hu, spec.rod_material)
              if spec.fusion_rods else [])
    crosslink = paint_crosslink(grid, fusion, tissue, mineral, hu_fixed, scanner.metal_hu) if spec.crosslink else None
    cages = _place_cages(spec, vtruth)
    for cage in cages:
        paint_graft(grid, cage, tissue, mineral)

    img, hu, artefacts = _form_image(grid, spec, scanner, screws, cages, centroids, fusion, tissue, mineral, hu_fixed,
                                     r_art, r_noise, workers)
    del hu_fixed
    artefacts.update(crosslink=crosslink, cages=cages)
    phi, meta = _phi_and_series_meta(seed, spec, shape[0], r_phi)
    arr, origin, direction = _orient(img, grid, spec.orientation)
    del img
    vol = Volume(array=arr, spacing=grid.spacing_zyx, origin=origin, direction=direction, meta=meta)
    flip = lambda x: _orient(x, grid, spec.orientation)[0]  # noqa: E731
    truth = Truth(
        mineral_mg_cm3=flip(mineral), tissue=flip(tissue), part=flip(part), hu_clean=flip(hu),
        scanner=scanner, vertebrae=vtruth, phantom=phantom_truth, screws=tuple(screws), phi=phi,
        sclerosis=tuple(blobs), artefacts=artefacts,
        body={"centre_xy_mm": body.centre, "semi_axes_mm": body.semi, "fat_mm": body.fat_mm,
              "back_y_mm": body.back_y, "vessels": vessels, "abdomen": abdomen, "table": table},
        seed=int(seed), spec=spec)
    return SyntheticCase(volume=vol, labels=flip(labels), truth=truth)


def _form_image(grid: Grid, spec: CaseSpec, scanner: ScannerResponse, screws: list[ScrewTruth], cages: list,
                centroids: list, fusion: list, tissue: np.ndarray, mineral: np.ndarray, hu_fixed: np.ndarray,
                r_art: np.random.Generator, r_noise: np.random.Generator,
                workers: int) -> tuple[np.ndarray, np.ndarray, dict]:
    """The scanner's image of the painted case: the painted model (PSF, metal HU, painted streaks, added
    noise) or, with ``spec.xray``, projection physics. Marks the metal, cage walls and pins in ``tissue``,
    ``mineral`` and ``hu_fixed`` (in place). Returns the image, the noise-free HU and the artefacts' truth."""
    if spec.xray is None:
        hu = _clean_hu(scanner, tissue, mineral, hu_fixed)
        img = _blur_with_screw_metal(grid, scanner, screws, hu, tissue, mineral)
        return img, hu, _add_artefacts_and_noise(grid, spec, scanner, img, centroids, fusion, r_art, r_noise)
    fills = [f for cage in cages for f in cage_fills(grid, cage)]
    img = _projected_image(grid, spec, screws, fills, tissue, mineral, r_noise, workers)
    mark_fills(fills, tissue, mineral, hu_fixed, scanner.metal_hu)
    hu = _clean_hu(scanner, tissue, mineral, hu_fixed)
    _mark_screw_metal(grid, scanner, screws, hu, tissue, mineral)
    return img, hu, {"n_streaks": 0, "metal_saturation": bool(spec.metal_saturation), "fusion_rods": fusion,
                     "xray": spec.xray}


def _case_grid(spec: CaseSpec, verts: list[VertebraGeom]) -> Grid:
    """The scan grid: ``spec.fov_mm`` in-plane, from below the lowest disc to above the top
    vertebra plus ``spec.margin_z_mm`` (mm), at ``spec.spacing_mm``."""
    z_hi = max(g.centre[2] + g.h / 2 + 7.0 for g in verts) + spec.margin_z_mm
    z_lo = min(g.centre[2] - g.h / 2 - g.disc_below for g in verts) - spec.margin_z_mm
    return Grid.centred((spec.fov_mm[0], spec.fov_mm[1], z_hi - z_lo), (0.0, 0.0, (z_hi + z_lo) / 2.0),
                        spec.spacing_mm)


def _place_screws(spec: CaseSpec, vtruth: tuple[VertebraTruth, ...], rng: np.random.Generator) -> list[ScrewTruth]:
    """Each screw of ``spec`` placed along the true pedicle axis of its vertebra."""
    by_name = {v.name: v for v in vtruth}
    screws = []
    for sp in spec.screws:
        if sp.vertebra not in by_name:
            raise ValueError(f"screw in {sp.vertebra!r} but the case levels are {spec.levels}")
        v = by_name[sp.vertebra]
        st = place_screw(sp, v.pedicle(sp.side), rng, left_lps=v.axes_lps[0])
        screws.append(st)
    return screws


def _place_cages(spec: CaseSpec, vtruth: tuple[VertebraTruth, ...]) -> tuple[CageTruth, ...]:
    """The cages of ``spec.cage`` in the disc below the uppermost level whose next level down also holds a
    screw (none when ``spec.cage`` is None)."""
    if spec.cage is None:
        return ()
    screwed = {sp.vertebra for sp in spec.screws}
    for upper, lower in zip(vtruth[:-1], vtruth[1:]):
        if upper.name in screwed and lower.name in screwed:
            return place_cages(spec.cage, upper, lower)
    raise ValueError(f"cage={spec.cage!r} goes between two instrumented levels, but the screws are in "
                     f"{sorted(screwed)} of {spec.levels}: add screws to two adjacent levels")


def _clean_hu(scanner: ScannerResponse, tissue: np.ndarray, mineral: np.ndarray, hu_fixed: np.ndarray) -> np.ndarray:
    """Noise-free HU: look-up table for soft tissues, calibration line for bone (mineral in
    mg/cm3), ``hu_fixed`` for rods, phantom, table, metal and halos, and the monochromatic HU at the
    scanner's energy for hardware only the projection simulator forms (cement, CoCr, PEEK, tantalum)."""
    lut = np.zeros(256, dtype=np.float32)
    th = scanner.tissue_hu
    for name, key in (("air", "air"), ("fat", "fat"), ("soft_tissue", "muscle"), ("blood", "blood"),
                      ("disc", "disc"), ("canal", "csf")):
        lut[TISSUE[name]] = th[key]
    hu = lut[tissue]
    bone = np.isin(tissue, BONE_CODES)
    hu[bone] = (scanner.intercept_hu + scanner.slope_hu_per_mg_cm3 * mineral[bone]).astype(np.float32)
    fixed = np.isin(tissue, _FIXED_CODES)
    hu[fixed] = hu_fixed[fixed]
    hardware = np.isin(tissue, PHYSICS_ONLY_CODES)
    if hardware.any():
        lut = np.zeros(256, dtype=np.float32)
        for code in PHYSICS_ONLY_CODES:
            lut[code] = _monochromatic_hu(code, scanner.kev)
        hu[hardware] = lut[tissue[hardware]]
    return hu


def _monochromatic_hu(code: int, kev: float) -> float:
    """HU of tissue ``code`` (its :data:`TISSUE_MATERIALS`) at ``kev``: 1000 (mu - mu_water) / mu_water."""
    name = next(n for n, c in TISSUE.items() if c == code)
    mu_water = float(mass_attenuation("water", np.array([kev]))[0])
    mu = sum(rho * float(mass_attenuation(m, np.array([kev]))[0]) for m, rho in TISSUE_MATERIALS[name])
    return 1000.0 * (mu - mu_water) / mu_water


def _blur_with_screw_metal(grid: Grid, scanner: ScannerResponse, screws: list[ScrewTruth], hu: np.ndarray,
                           tissue: np.ndarray, mineral: np.ndarray) -> np.ndarray:
    """The PSF-blurred image of ``hu`` with the screw metal rendered finer than the voxels over the
    tissue it displaces; then marks the metal in ``tissue``, ``mineral`` and ``hu`` (in place)."""
    img = apply_psf(hu, grid.spacing_zyx, scanner.psf_fwhm_mm)
    for rendered in [render_screw_metal(grid, st, hu, scanner.metal_hu, scanner.psf_fwhm_mm) for st in screws]:
        if rendered is not None:
            img[rendered[0]] += rendered[1]
    _mark_screw_metal(grid, scanner, screws, hu, tissue, mineral)
    return img


def _mark_screw_metal(grid: Grid, scanner: ScannerResponse, screws: list[ScrewTruth], hu: np.ndarray,
                      tissue: np.ndarray, mineral: np.ndarray) -> None:
    """Mark the voxels whose centre lies in a screw's metal in ``tissue``, ``mineral`` and ``hu`` (in place)."""
    for marked in [screw_metal_mask(grid, st) for st in screws]:
        if marked is not None:
            sl, m = marked
            tissue[sl][m] = TISSUE["metal"]
            mineral[sl][m] = 0.0
            hu[sl][m] = scanner.metal_hu


def _material_densities(tissue: np.ndarray, mineral: np.ndarray) -> dict[str, np.ndarray]:
    """Partial density (g/cm3) of each basis material in each voxel, from the tissue codes
    (:data:`TISSUE_MATERIALS`) and the bone mineral (mg/cm3, as hydroxyapatite displacing marrow)."""
    names = sorted({m for parts in TISSUE_MATERIALS.values() for m, _ in parts})
    luts = {m: np.zeros(256, dtype=np.float32) for m in names}
    for tissue_name, parts in TISSUE_MATERIALS.items():
        for m, rho in parts:
            luts[m][TISSUE[tissue_name]] = rho
    ha = (mineral / 1000.0).astype(np.float32)
    marrow_left = 1.0 - ha / HYDROXYAPATITE_G_CM3
    out = {}
    for m, lut in luts.items():
        d = lut[tissue]
        if m != "titanium":
            d *= marrow_left
        if d.any():
            out[m] = d
    if ha.any():
        out["hydroxyapatite"] = ha
    return out


def _projected_image(grid: Grid, spec: CaseSpec, screws: list[ScrewTruth], fills: list[VoxelFill],
                     tissue: np.ndarray, mineral: np.ndarray, rng: np.random.Generator, workers: int) -> np.ndarray:
    """The image a scanner forms of the case (:func:`bmdpipe.synthetic.ctphysics.simulate_slices`), with the
    screws' metal and the other ``fills`` (cage walls, marker pins) as the share of each voxel they fill;
    clipped to the stored HU range."""
    if spec.phantom is not None or spec.pad is not None:
        raise ValueError("CaseSpec(xray=...) simulates no calibration phantom: set phantom=None and pad=None")
    dens = _material_densities(tissue, mineral)
    screw_fills = [VoxelFill("metal", *f) for f in [screw_metal_fraction(grid, st) for st in screws] if f is not None]
    for fill in screw_fills + fills:
        _add_fill(dens, fill)
    img = simulate_slices(dens, grid.spacing_zyx[1:], spec.xray, rng, workers, noise=spec.noise)
    np.clip(img, HU_MIN, HU_MAX if spec.metal_saturation else 64511.0, out=img)
    return img


def _add_fill(dens: dict[str, np.ndarray], fill: VoxelFill) -> None:
    """Put ``fill`` into the partial-density maps ``dens`` (in place): its material takes its share of each
    voxel (at least that much of it), which the other materials give up."""
    ((material, rho),) = TISSUE_MATERIALS[fill.tissue]
    dens.setdefault(material, np.zeros(next(iter(dens.values())).shape, dtype=np.float32))
    sl, frac = fill.slices, fill.fraction
    for m, d in dens.items():
        d[sl] = np.maximum(d[sl], rho * frac) if m == material else (1.0 - frac) * d[sl]


def _add_artefacts_and_noise(grid: Grid, spec: CaseSpec, scanner: ScannerResponse, img: np.ndarray,
                             centroids: list, fusion: list, r_art: np.random.Generator,
                             r_noise: np.random.Generator) -> dict:
    """Add streaks between the screws (when asked and at least two) and correlated noise (unless
    ``spec.noise`` is False) to ``img``, then clip it to the stored HU range (in place); returns the artefacts' truth."""
    a = r_art.uniform(size=2)
    artefacts = {"streak_amplitude_hu": float(150.0 + 200.0 * a[0]), "streak_width_mm": float(1.0 + 1.0 * a[1]),
                 "n_streaks": 0, "metal_saturation": bool(spec.metal_saturation), "fusion_rods": fusion}
    if spec.streaks and len(centroids) >= 2:
        artefacts["n_streaks"] = add_streaks(grid, img, centroids, artefacts["streak_amplitude_hu"],
                                             artefacts["streak_width_mm"])
    if spec.noise:
        img += make_noise(grid.shape, grid.spacing_zyx, scanner.noise_sd_hu, scanner.noise_corr_mm, r_noise,
                          scanner.noise_texture)
    np.clip(img, HU_MIN, HU_MAX if spec.metal_saturation else 64511.0, out=img)
    return artefacts


def _phi_and_series_meta(seed: int, spec: CaseSpec, n_slices: int,
                         r_phi: np.random.Generator) -> tuple[dict, SeriesMeta]:
    """The planted PHI and the series header: a UID fixed by seed and spec, a study date drawn in
    2023-2025 unless ``spec.study_date`` is given."""
    phi = _phi(int(seed), r_phi)
    d0 = int(r_phi.integers(0, 3 * 365))
    study_date = spec.study_date or (np.datetime64("2023-01-02") + np.timedelta64(d0, "D")).astype(str).replace("-", "")
    uid = generate_uid(entropy_srcs=["bmdpipe-synthetic", str(seed), repr(spec)])
    meta = SeriesMeta(series_uid=uid, study_id=f"synthetic-{seed}", source="bmdpipe.synthetic", n_files=n_slices,
                      modality="CT", description="synthetic lumbar spine QCT", manufacturer="bmdpipe-synthetic",
                      kernel="STANDARD", kvp=120.0, slice_thickness_mm=float(spec.spacing_mm[0]),
                      study_date=study_date)
    return phi, meta
