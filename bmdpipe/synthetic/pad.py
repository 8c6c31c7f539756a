"""A calibration pad drawn from the range of real pads, and the table below it.

:func:`draw_pad` turns a :class:`~bmdpipe.synthetic.spec.PadSpec` (its ``None`` fields drawn
from the case's phantom stream) into a :class:`PadLayout`; :func:`paint_pad_and_table` paints it
under the patient. Ranges (science.md "Calibration pads as scanned", shipped definitions):
rods 10-30 mm wide at 1.3-2.2 diameters pitch, in the definition's order, reversed or shuffled;
pads 20-60 mm tall (at least 2 mm above and below the rods), flat or curved towards the patient,
off-centre; a rod water-equivalent to the resin (no edge) or fainter than the noise, at either
end or in the middle; cupping along the pad; a streak across a rod; the pad's end outside the
field of view.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .grid import Grid
from .phantom import BodyGeom, PhantomTruth, RodTruth, rod_hu
from .spec import PadSpec, pad_definition
from .tissue import TISSUE

__all__ = ["PadLayout", "draw_pad", "paint_pad_and_table"]

#: cupping is given at this lateral distance from the patient's midline, mm
CUPPING_REFERENCE_MM = 150.0
#: rods within this of water's HU may be hidden (water-equivalent) or faint, HU: a 0 mg/cm3 rod,
#: Mindways A and B (-70 and -35 HU in science.md's worked example); denser rods cannot match a resin
WATER_LIKE_HU = 150.0


@dataclass(frozen=True)
class PadLayout:
    """A drawn pad, in the painter's frame (x lateral; ``y`` grows away from the patient).

    Attributes
    ----------
    rods : tuple of (name, mineral, water or None, x_mm, HU)
        Rods in their order along the row, with their centre's lateral position and true HU.
    centre_x_mm, half_length_mm, height_mm, sagitta_mm : float
        The pad's lateral centre, half length, height and upward curvature at its ends, mm.
    rod_radius_mm : float
    pad_hu : float
        The resin's HU.
    hidden_rod, faint_rod : str
        Names ('' = none).
    cupping_hu : float
        HU added at ``CUPPING_REFERENCE_MM`` from the midline (quadratically).
    streak : dict or None
        ``rod``, ``angle_deg``, ``width_mm``, ``amplitude_hu``, ``slices`` (fraction range).
    fov_cut_mm : float
    """

    definition: str
    model: str
    material: str
    rods: tuple
    centre_x_mm: float
    half_length_mm: float
    height_mm: float
    sagitta_mm: float
    rod_radius_mm: float
    pad_hu: float
    hidden_rod: str
    faint_rod: str
    cupping_hu: float
    streak: dict | None
    fov_cut_mm: float
    order: str
    table_hu: tuple[float, float]  # carbon skins, foam core


def _order(spec: PadSpec, n: int, u: float, rng: np.random.Generator) -> tuple[str, list[int]]:
    kind = spec.order or ("file" if u < 0.35 else "reversed" if u < 0.7 else "shuffled")
    idx = list(range(n))
    if kind == "reversed":
        idx = idx[::-1]
    elif kind == "shuffled":
        idx = [int(i) for i in rng.permutation(n)]
    elif kind != "file":
        raise ValueError(f"PadSpec.order {kind!r}: use file, reversed or shuffled")
    return kind, idx


def _special_rod(given: str | None, candidates: list[str], probability: float, u: tuple[float, float]) -> str:
    """A rod to hide or make faint: the spec's, or with ``probability`` one of ``candidates``."""
    if given is not None:
        return given
    if candidates and u[0] < probability:
        return candidates[int(u[1] * len(candidates)) % len(candidates)]
    return ""


def _lateral_place(spec: PadSpec, half_len: float, end_margin: float, fov_half: float,
                   u: tuple[float, float, float]) -> tuple[float, float]:
    """(centre x, FOV cut) of the pad: off-centre with the midline over it; with a cut its end lies
    outside the field of view by up to its margin less 2 mm (its rods inside)."""
    room = end_margin - 2.0
    cut = spec.fov_cut_mm if spec.fov_cut_mm is not None else (3.0 + (room - 3.0) * u[1] if u[0] < 0.2 else 0.0)
    if cut > 0 and room > 3.0 and fov_half + cut - 2 * half_len < -20.0:
        side = 1.0 if u[2] < 0.5 else -1.0
        return side * (fov_half + cut - half_len), float(cut)
    max_off = min(60.0, max(0.0, half_len - 20.0))
    offset = spec.offset_mm if spec.offset_mm is not None else (2.0 * u[2] - 1.0) * max_off
    return float(offset), 0.0


def draw_pad(spec: PadSpec, scanner, noise_sd_hu: float, fov_half_mm: float,
             rng: np.random.Generator) -> PadLayout:
    """Draw the pad's geometry, rod order and HU, hidden or faint rod, cupping and streak."""
    d = pad_definition(spec.definition)
    model, material = d["model"], d["material"]
    if material != scanner.material:
        raise ValueError(f"pad {spec.definition!r} measures {material} but the case material is {scanner.material}")
    u = rng.uniform(size=22)
    diameter = spec.rod_diameter_mm or 10.0 + 20.0 * u[0]
    pitch = diameter * (spec.pitch_ratio or 1.3 + 0.9 * u[1])
    h_min = max(20.0, diameter + 4.0)
    height = spec.height_mm or h_min + max(0.0, 60.0 - h_min) * u[2]
    end_margin = spec.end_margin_mm if spec.end_margin_mm is not None else 5.0 + 20.0 * u[3]
    n = len(d["rods"])
    half_len = ((n - 1) * pitch + diameter) / 2.0 + end_margin
    sagitta = spec.sagitta_mm if spec.sagitta_mm is not None else (0.0 if u[4] < 0.5 else 0.15 * half_len * u[5])
    order, idx = _order(spec, n, u[6], rng)
    hu = {r["name"]: rod_hu(model, scanner, r["mineral_mg_cm3"], r.get("water_mg_cm3")) for r in d["rods"]}
    water = scanner.tissue_hu["water"]
    water_like = [name for name, h in hu.items() if abs(h - water) <= WATER_LIKE_HU]
    hidden = _special_rod(spec.hidden_rod, water_like, 0.3, (u[7], u[8]))
    faint = "" if hidden else _special_rod(spec.faint_rod, water_like, 0.25, (u[9], u[10]))
    if hidden:
        pad_hu = hu[hidden] + 4.0 * (u[11] - 0.5)
    elif faint:
        pad_hu = hu[faint] + (1.0 if u[12] < 0.5 else -1.0) * (0.3 + 0.7 * u[11]) * noise_sd_hu
    else:
        pad_hu = water + (spec.pad_hu_above_water if spec.pad_hu_above_water is not None else 30.0 * u[11])
    centre_x, cut = _lateral_place(spec, half_len, end_margin, fov_half_mm, (u[13], u[14], u[15]))
    streak = None
    if spec.streak if spec.streak is not None else u[16] < 0.25:
        streak = {"rod": d["rods"][idx[int(u[17] * n) % n]]["name"], "angle_deg": float(180.0 * u[18]),
                  "width_mm": float(1.5 + 1.5 * u[19]), "amplitude_hu": float((60.0 + 140.0 * u[19]) *
                                                                             (1.0 if u[18] < 0.5 else -1.0)),
                  "slices": (0.3, 0.65)}
    rods = []
    for slot, i in enumerate(idx):
        r = d["rods"][i]
        x = centre_x + (slot - (n - 1) / 2.0) * pitch
        rods.append((r["name"], float(r["mineral_mg_cm3"]), r.get("water_mg_cm3"), float(x), float(hu[r["name"]])))
    return PadLayout(
        definition=spec.definition, model=model, material=material, rods=tuple(rods), centre_x_mm=float(centre_x),
        half_length_mm=float(half_len), height_mm=float(height), sagitta_mm=float(sagitta),
        rod_radius_mm=float(diameter / 2.0), pad_hu=float(pad_hu), hidden_rod=hidden, faint_rod=faint,
        cupping_hu=float(spec.cupping_hu if spec.cupping_hu is not None else 6.0 * u[16]), streak=streak,
        fov_cut_mm=float(cut), order=order, table_hu=(250.0 + 100.0 * u[20], -880.0 + 40.0 * u[21]))


def _pad_mid_y(layout: PadLayout, body: BodyGeom, x: np.ndarray) -> np.ndarray:
    """The pad's mid-height (painter frame) along x: curved up by the sagitta at its ends, as low as
    keeps its top 1.5 mm below the patient's back everywhere over it."""
    k = layout.sagitta_mm / layout.half_length_mm ** 2
    bend = -k * (x - layout.centre_x_mm) ** 2
    xs = np.linspace(layout.centre_x_mm - layout.half_length_mm, layout.centre_x_mm + layout.half_length_mm, 401)
    cx, sx, sy = body.centre[0], body.semi[0], body.semi[1]
    back = body.table_side_y * (-1.0 if body.prone else 1.0)  # the surface on the pad, painter frame
    inside = np.abs(xs - cx) < sx
    surface = np.full(xs.shape, -np.inf)
    surface[inside] = back - sy + sy * np.sqrt(1.0 - ((xs[inside] - cx) / sx) ** 2)
    y0 = float(np.max(surface + 1.5 + layout.height_mm / 2.0 + k * (xs - layout.centre_x_mm) ** 2))
    return y0 + bend


def paint_pad_and_table(grid: Grid, body: BodyGeom, layout: PadLayout, tissue: np.ndarray, hu_fixed: np.ndarray):
    """Paint the pad, its rods and the table below (in place); returns (PhantomTruth, table truth)."""
    sgn = -1.0 if body.prone else 1.0
    Y = sgn * grid.ys[:, None]
    X = grid.xs[None, :]
    mid = _pad_mid_y(layout, body, X)
    pad = (np.abs(X - layout.centre_x_mm) <= layout.half_length_mm) & (np.abs(Y - mid) <= layout.height_mm / 2.0)
    t2 = np.full((Y.shape[0], X.shape[1]), 255, dtype=np.uint8)
    h2 = np.zeros(t2.shape, dtype=np.float32)
    t2[pad] = TISSUE["phantom_body"]
    h2[pad] = layout.pad_hu
    cup = (layout.cupping_hu * (X / CUPPING_REFERENCE_MM) ** 2).astype(np.float32)
    rods, centres = [], {}
    for name, mineral, water, x, hu in layout.rods:
        y = float(_pad_mid_y(layout, body, np.array(x)))
        m = (X - x) ** 2 + (Y - y) ** 2 <= layout.rod_radius_mm ** 2
        t2[m] = TISSUE["phantom_rod"]
        h2[m] = hu
        centres[name] = (x, y)
        rods.append(RodTruth(name=name, mineral_mg_cm3=mineral, water_mg_cm3=None if water is None else float(water),
                             centre_lps=(x, sgn * y, 0.0), direction_lps=(0.0, 0.0, 1.0),
                             radius_mm=layout.rod_radius_mm, hu=hu))
    h2 = np.where(t2 != 255, h2 + np.broadcast_to(cup, h2.shape), h2)
    table_top = float(np.max(np.where(pad, mid + layout.height_mm / 2.0, -np.inf))) + 1.5 if pad.any() else \
        float(np.max(mid)) + layout.height_mm / 2.0 + 1.5
    table = _paint_table(Y, X, t2, h2, table_top, layout)
    sel = t2 != 255
    tissue[:, sel] = t2[sel]
    hu_fixed[:, sel] = h2[sel]
    if layout.streak is not None:
        _paint_streak(grid, Y, X, t2, hu_fixed, layout.streak, centres[layout.streak["rod"]])
    over = np.abs(grid.xs - layout.centre_x_mm) <= layout.half_length_mm
    ys = sgn * np.array([np.min(mid[0][over]) - layout.height_mm / 2.0, np.max(mid[0][over]) + layout.height_mm / 2.0])
    truth = PhantomTruth(
        name=layout.definition, model=layout.model, material=layout.material, rods=tuple(rods),
        body_hu=layout.pad_hu, y_range_mm=(float(ys.min()), float(ys.max())),
        x_range_mm=(layout.centre_x_mm - layout.half_length_mm, layout.centre_x_mm + layout.half_length_mm),
        pad={"height_mm": layout.height_mm, "rod_diameter_mm": 2 * layout.rod_radius_mm,
             "sagitta_mm": layout.sagitta_mm, "order": layout.order, "hidden_rod": layout.hidden_rod,
             "faint_rod": layout.faint_rod, "cupping_hu": layout.cupping_hu, "streak": layout.streak,
             "fov_cut_mm": layout.fov_cut_mm, "centre_x_mm": layout.centre_x_mm})
    return truth, table


def _paint_table(Y, X, t2, h2, top: float, layout: PadLayout) -> dict:
    """A carbon table (two skins around a foam core, 14 mm) below the pad's lowest point."""
    skin_hu, foam_hu = layout.table_hu
    tab = (Y >= top) & (Y <= top + 14.0) & (np.abs(X) <= 220.0) & (t2 == 255)
    t2[tab] = TISSUE["table"]
    h2[tab] = foam_hu
    h2[tab & ((Y <= top + 1.5) | (Y >= top + 12.5))] = skin_hu
    return {"top_y_mm": float(top), "skin_hu": float(skin_hu), "foam_hu": float(foam_hu)}


def _paint_streak(grid: Grid, Y, X, t2, hu_fixed, streak: dict, centre: tuple[float, float]) -> None:
    """A straight band of HU through a rod's centre, over the pad, in a range of slices."""
    a = np.radians(streak["angle_deg"])
    dist = np.abs((X - centre[0]) * np.sin(a) - (Y - centre[1]) * np.cos(a))
    band = (dist <= streak["width_mm"] / 2.0) & np.isin(t2, (TISSUE["phantom_rod"], TISSUE["phantom_body"]))
    nz = grid.shape[0]
    k0, k1 = (int(f * nz) for f in streak["slices"])
    hu_fixed[k0:k1][:, band] += np.float32(streak["amplitude_hu"])
