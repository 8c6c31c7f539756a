"""Patient body (fat, muscle, vessels), calibration phantom and table of a synthetic case."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .grid import Grid
from .spec import HA_RODS, MINDWAYS_RODS
from .tissue import TISSUE

__all__ = ["RodTruth", "PhantomTruth", "BodyGeom", "draw_body", "paint_body", "paint_vessels",
           "paint_phantom_and_table", "rod_hu"]


@dataclass(frozen=True)
class RodTruth:
    """One phantom rod: nominal densities, centre line (LPS mm, parallel to z) and its true HU."""

    name: str
    mineral_mg_cm3: float
    water_mg_cm3: float | None
    centre_lps: tuple[float, float, float]  # at z = 0; the rod runs along LPS z over the scan
    direction_lps: tuple[float, float, float]
    radius_mm: float
    hu: float


@dataclass(frozen=True)
class PhantomTruth:
    """Phantom definition (name/model/material as in phantoms/*.yaml) and its rods."""

    name: str
    model: str  # two-component | linear
    material: str
    rods: tuple[RodTruth, ...]
    body_hu: float
    y_range_mm: tuple[float, float]
    x_range_mm: tuple[float, float]
    pad: dict | None = None  # a pad drawn by synthetic.pad: its drawn parameters


@dataclass(frozen=True)
class BodyGeom:
    centre: tuple[float, float]  # x, y of the body ellipse
    semi: tuple[float, float]
    fat_mm: float
    back_y: float
    prone: bool = False

    @property
    def table_side_y(self) -> float:
        """y (mm) of the body surface touching the phantom/table: the back (supine) or the belly (prone)."""
        return self.centre[1] - self.semi[1] if self.prone else self.centre[1] + self.semi[1]


def draw_body(spec, rng: np.random.Generator, back_y: float = 72.0) -> BodyGeom:
    """Body ellipse; the surface on the table is at y = +72 mm (supine) or -72 mm (prone)."""
    u = rng.uniform(size=3)
    if spec.anatomy_jitter:
        sx, sy, fat = 135.0 + 25.0 * u[0], 88.0 + 12.0 * u[1], 10.0 + 18.0 * u[2]
    else:
        sx, sy, fat = 150.0, 95.0, 18.0
    sx = min(sx, spec.fov_mm[0] / 2.0 - 8.0)
    prone = spec.orientation.endswith("P")
    cy = (-back_y + sy) if prone else (back_y - sy)
    return BodyGeom(centre=(0.0, cy), semi=(sx, sy), fat_mm=fat, back_y=cy + sy, prone=prone)


def paint_body(grid: Grid, body: BodyGeom, tissue: np.ndarray) -> None:
    """Body ellipse (same for every slice): subcutaneous fat ring, soft tissue/muscle inside."""
    Y = grid.ys[:, None]
    X = grid.xs[None, :]
    ex = (X - body.centre[0]) / body.semi[0]
    ey = (Y - body.centre[1]) / body.semi[1]
    rr = np.sqrt(ex ** 2 + ey ** 2)
    sd = (rr - 1.0) * min(body.semi)
    sl2d = np.zeros(rr.shape, dtype=np.uint8)
    sl2d[sd <= 0] = TISSUE["fat"]
    # fat thicker posteriorly-laterally is ignored; a few visceral fat pads anterior
    sl2d[sd <= -body.fat_mm] = TISSUE["soft_tissue"]
    tissue[:] = sl2d[None]


def paint_abdomen(grid: Grid, body: BodyGeom, verts, tissue: np.ndarray, rng: np.random.Generator) -> list[dict]:
    """Visceral fat pads (6, elongated along z) and 2 bowel-gas pockets, in place.

    Only soft tissue is replaced. Blobs stay inside the subcutaneous fat ring and out of a
    keep-out zone around the spine, vessels and paraspinal muscles (|x| < 60 mm + radius,
    y > vertebral-body front - 30 mm - radius).
    """
    sizes = rng.uniform(size=(8, 3))
    cand = rng.uniform(size=(8, 24, 3))
    ant = min(g.centre[1] - g.b for g in verts) - 30.0
    cx, cy = body.centre
    ax_, ay_ = body.semi[0] - body.fat_mm, body.semi[1] - body.fat_mm
    zlo, zhi = float(grid.zs[0]), float(grid.zs[-1])
    out = []
    for i in range(8):
        gas = i >= 6
        d = sizes[i]
        rx, ry = (6.0 + 8.0 * d[0], 5.0 + 6.0 * d[1]) if gas else (15.0 + 20.0 * d[0], 10.0 + 15.0 * d[1])
        rz = (10.0 + 15.0 * d[2]) if gas else (60.0 + 80.0 * d[2])
        for c in cand[i]:
            x = cx + (2 * c[0] - 1) * (ax_ - rx - 3.0)
            y = cy + (2 * c[1] - 1) * (ay_ - ry - 3.0)
            inside = ((x - cx) / (ax_ - rx - 3.0)) ** 2 + ((y - cy) / (ay_ - ry - 3.0)) ** 2 <= 1.0
            keep_out = abs(x) < 60.0 + rx and y > ant - ry
            if inside and not keep_out:
                break
        else:
            continue
        z = zlo + (zhi - zlo) * c[2]
        bx = grid.box((x - rx, y - ry, z - rz), (x + rx, y + ry, z + rz))
        if bx is None:
            continue
        sl, (Z, Y, X) = bx
        m = ((X - x) / rx) ** 2 + ((Y - y) / ry) ** 2 + ((Z - z) / rz) ** 2 <= 1.0
        t = tissue[sl]
        t[m & (t == TISSUE["soft_tissue"])] = TISSUE["air"] if gas else TISSUE["fat"]
        out.append({"kind": "gas" if gas else "fat", "centre_lps": (float(x), float(y), float(z)),
                    "semi_axes_mm": (float(rx), float(ry), float(rz))})
    return out


def paint_vessels(grid: Grid, verts, tissue: np.ndarray) -> list[dict]:
    """Aorta (anterior-left of the bodies) and IVC (anterior-right), following the spine in y."""
    zc = np.array([g.centre[2] for g in verts])
    ant = np.array([g.centre[1] - g.b for g in verts])
    xc = np.array([g.centre[0] for g in verts])
    order = np.argsort(zc)
    # evaluate only in a box around the prevertebral space
    bx = grid.box((xc.min() - 45.0, ant.min() - 40.0, grid.zs[0]), (xc.max() + 45.0, ant.max() + 5.0, grid.zs[-1]))
    out = []
    if bx is None:
        return out
    (kz, jy, ix), (Z, Y, X) = bx
    y_ant = np.interp(Z, zc[order], ant[order]).astype(np.float32)
    x_sp = np.interp(Z, zc[order], xc[order]).astype(np.float32)
    t = tissue[kz, jy, ix]
    for name, dx, dy, rx, ry in (("aorta", 16.0, -13.0, 10.5, 10.5), ("ivc", -22.0, -11.0, 12.0, 8.0)):
        m = ((X - x_sp - dx) / rx) ** 2 + ((Y - y_ant - dy) / ry) ** 2 <= 1.0
        t[m & (t == TISSUE["soft_tissue"])] = TISSUE["blood"]
        out.append({"name": name, "offset_from_body_anterior_mm": (dx, dy), "radii_mm": (rx, ry)})
    return out


def rod_hu(kind: str, scanner, mineral: float, water: float | None) -> float:
    """True HU of a rod: two-component Mindways model or linear HA model (see make_case docs)."""
    if kind == "two-component":
        sigma_ref = scanner.slope_hu_per_mg_cm3 + 0.2174
        beta_ref = scanner.intercept_hu - 999.6
        return float(water + sigma_ref * mineral + beta_ref)
    return float(scanner.intercept_hu + scanner.slope_hu_per_mg_cm3 * mineral)


def paint_phantom_and_table(grid: Grid, body: BodyGeom, phantom: str | None, scanner, tissue, hu_fixed,
                            rng: np.random.Generator):
    """Phantom block with rods under the patient's back (+y) and a carbon table below it.

    ``hu_fixed`` (float32 array) receives the HU of these non-bone structures. Returns PhantomTruth or None.
    """
    u = rng.uniform(size=3)
    sgn = -1.0 if body.prone else 1.0  # prone: phantom and table on the anterior side (-y)
    top = sgn * body.table_side_y + 1.5
    ptruth = None
    Y = sgn * grid.ys[:, None]
    X = grid.xs[None, :]
    t2 = np.full(Y.shape[:1] + X.shape[1:], 255, dtype=np.uint8)
    h2 = np.zeros(t2.shape, dtype=np.float32)
    if phantom is not None:
        if phantom == "mindways":
            rods = [(n, k, w) for n, k, w in MINDWAYS_RODS]
            kind, name, material, radius, pitch = "two-component", "mindways-model3-ct", "K2HPO4", 6.5, 40.0
        elif phantom == "ha":
            rods = [(n, k, None) for n, k in HA_RODS]
            kind, name, material, radius, pitch = "linear", "qrm-bdc-6", "HA", 6.0, 32.0
        else:
            raise ValueError(f"unknown phantom {phantom!r}: use 'mindways', 'ha' or None")
        if material != scanner.material:
            raise ValueError(f"phantom {phantom!r} measures {material} but the case material is {scanner.material}")
        height = 34.0
        n = len(rods)
        x0 = float((u[0] - 0.5) * 20.0)
        half_w = pitch * (n - 1) / 2.0 + 22.0
        yc = top + height / 2.0
        body_hu = scanner.tissue_hu["water"] + 12.0
        block = (np.abs(Y - yc) <= height / 2.0) & (np.abs(X - x0) <= half_w)
        t2[block] = TISSUE["phantom_body"]
        h2[block] = body_hu
        rt = []
        for i, (rn, k, wtr) in enumerate(rods):
            xc = x0 + (i - (n - 1) / 2.0) * pitch
            hu = rod_hu(kind, scanner, k, wtr)
            m = (X - xc) ** 2 + (Y - yc) ** 2 <= radius ** 2
            t2[m] = TISSUE["phantom_rod"]
            h2[m] = hu
            rt.append(RodTruth(name=rn, mineral_mg_cm3=float(k), water_mg_cm3=None if wtr is None else float(wtr),
                               centre_lps=(float(xc), float(sgn * yc), 0.0), direction_lps=(0.0, 0.0, 1.0),
                               radius_mm=radius, hu=hu))
        ptruth = PhantomTruth(name=name, model=kind, material=material, rods=tuple(rt), body_hu=float(body_hu),
                              y_range_mm=tuple(sorted((float(sgn * (yc - height / 2)),
                                                       float(sgn * (yc + height / 2))))),
                              x_range_mm=(float(x0 - half_w), float(x0 + half_w)))
        top = yc + height / 2.0 + 1.5
    # table: two carbon skins around a foam core, 14 mm thick, 440 mm wide (cropped by the FOV)
    skin_hu, foam_hu = 250.0 + 100.0 * u[1], -880.0 + 40.0 * u[2]
    tab = (Y >= top) & (Y <= top + 14.0) & (np.abs(X) <= 220.0)
    t2[tab] = TISSUE["table"]
    h2[tab] = foam_hu
    skin = tab & ((Y <= top + 1.5) | (Y >= top + 12.5))
    h2[skin] = skin_hu
    sel = t2 != 255
    tissue[:, sel] = t2[sel]
    hu_fixed[:, sel] = h2[sel]
    return ptruth, {"top_y_mm": float(sgn * top), "skin_hu": float(skin_hu), "foam_hu": float(foam_hu)}
