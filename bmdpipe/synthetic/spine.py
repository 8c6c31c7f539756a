"""Lumbar vertebrae, discs, canal and focal sclerosis of a synthetic case (geometry in mm).

Each vertebra lives in a local frame (u = left, v = posterior, w = superior, origin at the
vertebral-body centre) rotated by a few degrees (sagittal tilt from the lordosis curve,
coronal and axial jitter). Shapes are signed-distance-like functions (negative inside,
mm) so unions are ``min`` and the cortical shell is ``-t < sd <= 0``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from bmdpipe.results import VERSE_IDS
from .grid import Grid, rotation_matrix, to_local
from .tissue import TISSUE, PART

__all__ = ["VertebraGeom", "draw_spine", "paint_discs_and_canal", "paint_vertebra", "paint_sclerosis"]

# level -> (body width, depth, height, disc height below, pedicle width, pedicle height, medial angle deg,
#           transverse process length) in mm / deg; typical adult values.
_LEVEL_TABLE = {
    "T12": (40.0, 30.0, 24.0, 7.0, 7.0, 16.0, 8.0, 12.0),
    "L1": (42.0, 31.0, 25.0, 8.0, 7.5, 15.0, 10.0, 16.0),
    "L2": (44.0, 32.0, 26.0, 9.0, 8.0, 14.5, 12.0, 20.0),
    "L3": (46.0, 33.0, 27.0, 10.0, 9.0, 14.0, 13.0, 24.0),
    "L4": (48.0, 34.0, 27.0, 11.0, 10.5, 13.5, 16.0, 20.0),
    "L5": (50.0, 35.0, 26.0, 11.0, 13.0, 12.5, 22.0, 16.0),
}

CANAL_HALF_WIDTH_MM = 11.0
CANAL_AP_MM = 16.0
TARGET_DEPTH_FRACTION = 0.8  # pedicle-axis target at 80 % of the body depth from the posterior wall


@dataclass(frozen=True, eq=False)
class VertebraGeom:
    """Parameters of one synthetic vertebra (mm, degrees, mg/cm3)."""

    name: str
    verse_id: int
    centre: np.ndarray  # LPS of body centre
    rot: np.ndarray  # 3x3, columns = local u, v, w axes in LPS
    a: float  # body half width
    b: float  # body half depth
    h: float  # body height
    concavity: float  # endplate concavity depth mm
    disc_below: float
    pedicle_width: float
    pedicle_height: float
    medial_angle_deg: float
    tp_length: float
    rho_c: float  # central cancellous density
    rim_gain: float
    posterior_factor: float  # cancellous density of posterior elements / rho_c
    cortex_t: float
    cortex_mg: float

    def to_lps(self, local) -> np.ndarray:
        return self.centre + self.rot @ np.asarray(local, dtype=float)

    # pedicle geometry in local coordinates ------------------------------------------------------
    def pedicle_local(self, side: int):
        """(entry, isthmus, target, direction) of the pedicle axis, local mm; side +1 left, -1 right."""
        th = np.deg2rad(self.medial_angle_deg)
        d = np.array([-side * np.sin(th), -np.cos(th), 0.0])  # posterior -> anterior, medial
        w_p = 0.12 * self.h
        isth = np.array([side * (CANAL_HALF_WIDTH_MM + self.pedicle_width / 2.0), self.b + 6.0, w_p])
        entry = isth - 12.0 * d
        v_target = self.b - 2.0 * self.b * TARGET_DEPTH_FRACTION
        t_t = (isth[1] - v_target) / np.cos(th)
        target = isth + t_t * d
        return entry, isth, target, d

    def bbox_lps(self, margin: float = 6.0):
        """Axis-aligned LPS box containing the whole vertebra (mm)."""
        half_x = CANAL_HALF_WIDTH_MM + self.pedicle_width + self.tp_length + 6.0
        local_corners = np.array([[sx * half_x, sy, sz]
                                  for sx in (-1, 1)
                                  for sy in (-self.b, self.b + CANAL_AP_MM + 45.0)
                                  for sz in (-self.h / 2 - 6.0, self.h / 2 + 6.0)])
        pts = self.centre + local_corners @ self.rot.T
        return pts.min(0) - margin, pts.max(0) + margin


def draw_spine(levels, spec, rng: np.random.Generator, y0: float = -28.0) -> list[VertebraGeom]:
    """Draw vertebra geometry and densities for ``levels`` (superior -> inferior)."""
    jit = spec.anatomy_jitter
    n = len(levels)
    # per-vertebra random numbers always drawn (same count) so spec switches do not reshuffle others
    r = rng.uniform(-1.0, 1.0, size=(n, 10))
    rc = rng.uniform(size=n)
    g = rng.uniform(size=4)
    lo, hi = spec.cancellous_mg_cm3
    base = lo + (hi - lo) * g[0]
    cortex_mg = spec.cortex_mg_cm3 if spec.cortex_mg_cm3 is not None else 650.0 + 250.0 * g[1]
    cortex_t = spec.cortex_thickness_mm if spec.cortex_thickness_mm is not None else 0.9 + 0.5 * g[2]
    curv = (0.0010 + 0.0015 * g[3]) if jit else 0.0015  # lordosis: y = y0 + curv * z^2 (mm^-1)
    params = []
    for idx, name in enumerate(levels):
        if name not in _LEVEL_TABLE:
            raise ValueError(f"level {name!r} not supported by the synthetic generator; use T12, L1..L5")
        W, D, H, disc, pw, ph, ang, tp = _LEVEL_TABLE[name]
        s = (1.0 + 0.06 * r[idx, :4]) if jit else np.ones(4)
        # density: case base +- 15 % per level, clipped to the spec range
        rho = float(np.clip(base * (1.0 + 0.15 * r[idx, 4]) if n > 1 else base, lo, hi))
        if not jit:
            rho = float(np.clip(base, lo, hi))
        params.append(dict(name=name, a=W / 2 * s[0], b=D / 2 * s[1], h=H * s[2], disc=disc * s[3],
                           pw=pw * (1 + (0.08 * r[idx, 5] if jit else 0)), ph=ph,
                           ang=ang + (3.0 * r[idx, 6] if jit else 0.0), tp=tp, rho=rho,
                           rot=(r[idx, 7:10] * np.array([2.0, 3.0, 4.0])) if jit else np.zeros(3),
                           conc=1.0 + 1.0 * rc[idx] if jit else 1.5))
    # z positions: stack centred on z = 0
    zc = [0.0]
    for i in range(1, n):
        zc.append(zc[-1] - (params[i - 1]["h"] / 2 + params[i - 1]["disc"] + params[i]["h"] / 2))
    zc = np.array(zc)
    zc -= (zc[0] + zc[-1]) / 2.0
    out = []
    for p, z in zip(params, zc):
        y = y0 + curv * z * z
        tilt = -np.rad2deg(np.arctan(2.0 * curv * z))  # follow the spine tangent
        rx, ry, rz = p["rot"]
        rot = rotation_matrix(tilt + rx, ry, rz)
        x = float(rng.uniform(-2.0, 2.0)) if jit else 0.0
        out.append(VertebraGeom(
            name=p["name"], verse_id=VERSE_IDS[p["name"]], centre=np.array([x, y, z]), rot=rot,
            a=p["a"], b=p["b"], h=p["h"], concavity=p["conc"], disc_below=p["disc"],
            pedicle_width=p["pw"], pedicle_height=p["ph"], medial_angle_deg=p["ang"], tp_length=p["tp"],
            rho_c=p["rho"], rim_gain=spec.cancellous_rim_gain, posterior_factor=1.25,
            cortex_t=cortex_t, cortex_mg=cortex_mg))
    return out


# --------------------------------------------------------------------------- shapes (local mm)
def _sd_ellipse(u, v, a, b):
    return (np.sqrt((u / a) ** 2 + (v / b) ** 2) - 1.0) * min(a, b)


def _sd_box(u, v, w, c, half):
    return np.maximum(np.maximum(np.abs(u - c[0]) - half[0], np.abs(v - c[1]) - half[1]),
                      np.abs(w - c[2]) - half[2])


def _sd_body(g: VertebraGeom, u, v, w):
    r2 = (u / g.a) ** 2 + (v / g.b) ** 2
    half_h = g.h / 2.0 - g.concavity * (1.0 - np.minimum(r2, 1.0))
    return np.maximum(_sd_ellipse(u, v, g.a, g.b), np.abs(w) - half_h), r2


def _sd_pedicle(g: VertebraGeom, side, u, v, w):
    entry, isth, target, d = g.pedicle_local(side)
    e_h = np.array([np.cos(np.deg2rad(g.medial_angle_deg)), -side * np.sin(np.deg2rad(g.medial_angle_deg)), 0.0])
    qu, qv, qw = u - isth[0], v - isth[1], w - isth[2]
    s_ax = qu * d[0] + qv * d[1]
    s_h = qu * e_h[0] + qv * e_h[1]
    hw, hh = g.pedicle_width / 2.0, g.pedicle_height / 2.0
    sd_cross = (np.sqrt((s_h / hw) ** 2 + (qw / hh) ** 2) - 1.0) * min(hw, hh)
    s_hi = (isth[1] - g.b + 6.0) / np.cos(np.deg2rad(g.medial_angle_deg))  # 6 mm into the body
    s_lo = -14.0
    return np.maximum(sd_cross, np.maximum(s_lo - s_ax, s_ax - s_hi))


def _sd_posterior(g: VertebraGeom, u, v, w):
    cw, cap = CANAL_HALF_WIDTH_MM, CANAL_AP_MM
    entry_l = g.pedicle_local(+1)[0]
    w_p = 0.12 * g.h
    v_lam = g.b + cap + 3.5
    lam = _sd_box(u, v, w, (0.0, v_lam, -0.05 * g.h), (cw + 0.6 * g.pedicle_width, 3.5, 0.36 * g.h))
    sp_len = 28.0
    spin = _sd_box(u, v, w, (0.0, v_lam + sp_len / 2.0 + 2.0, -0.12 * g.h), (3.0, sp_len / 2.0, 0.33 * g.h))
    sd = np.minimum(lam, spin)
    for side in (+1, -1):
        xe = side * abs(entry_l[0])
        tp = _sd_box(u, v, w, (xe + side * (g.tp_length / 2.0 + 3.0), entry_l[1] - 1.0, w_p),
                     (g.tp_length / 2.0 + 3.0, 4.0, 5.0))
        # superior articular process (upwards) and inferior articular process (downwards)
        sap = np.maximum(_sd_ellipse(u - xe, v - (entry_l[1] + 3.0), 5.5, 6.0),
                         np.maximum(w - (g.h / 2.0 + 4.0), w_p - w))
        iap = np.maximum(_sd_ellipse(u - (xe - side * 3.0), v - (entry_l[1] + 9.0), 5.0, 5.5),
                         np.maximum(-(g.h / 2.0 + 4.0) - w, w - w_p))
        sd = np.minimum(sd, np.minimum(tp, np.minimum(sap, iap)))
    return sd


def paint_discs_and_canal(grid: Grid, verts, tissue: np.ndarray) -> None:
    """Discs (above/below every body, slightly narrower) and the spinal canal (CSF), in place."""
    for g in verts:
        lo, hi = g.bbox_lps(margin=g.disc_below + 4.0)
        bx = grid.box(lo, hi)
        if bx is None:
            continue
        sl, coords = bx
        u, v, w = to_local(coords, g.centre, g.rot)
        disc = (_sd_ellipse(u, v, 0.97 * g.a, 0.97 * g.b) <= 0) \
            & (w <= g.h / 2.0 + 7.0) & (w >= -(g.h / 2.0 + g.disc_below + 1.0))
        canal = (_sd_ellipse(u, v - (g.b + CANAL_AP_MM / 2.0), CANAL_HALF_WIDTH_MM, CANAL_AP_MM / 2.0) <= 0) \
            & (np.abs(w) <= g.h / 2.0 + g.disc_below + 1.0)
        t = tissue[sl]
        soft = (t == TISSUE["soft_tissue"]) | (t == TISSUE["fat"])
        t[disc & soft] = TISSUE["disc"]
        t[canal & (soft | (t == TISSUE["disc"]))] = TISSUE["canal"]


def paint_vertebra(grid: Grid, g: VertebraGeom, tissue, mineral, labels, part) -> None:
    """Paint one vertebra (body, pedicles, posterior elements; cortex + cancellous), in place."""
    lo, hi = g.bbox_lps()
    bx = grid.box(lo, hi)
    if bx is None:
        return
    sl, coords = bx
    u, v, w = to_local(coords, g.centre, g.rot)
    sd_body, _ = _sd_body(g, u, v, w)
    sd_pl = _sd_pedicle(g, +1, u, v, w)
    sd_pr = _sd_pedicle(g, -1, u, v, w)
    sd_post = _sd_posterior(g, u, v, w)
    sd = np.minimum(np.minimum(sd_body, sd_post), np.minimum(sd_pl, sd_pr))
    inside = sd <= 0
    cortex = inside & (sd > -g.cortex_t)
    canc = sd <= -g.cortex_t
    ai, bi = g.a - g.cortex_t, g.b - g.cortex_t
    r2i = np.minimum((u / ai) ** 2 + (v / bi) ** 2, 1.0)
    body = sd_body <= 0
    rho = np.where(body, g.rho_c * (1.0 + g.rim_gain * r2i), g.rho_c * g.posterior_factor).astype(np.float32)
    t, m, lab, pt = tissue[sl], mineral[sl], labels[sl], part[sl]
    t[canc] = TISSUE["cancellous"]
    m[canc] = rho[canc]
    t[cortex] = TISSUE["cortex"]
    m[cortex] = g.cortex_mg
    lab[inside] = g.verse_id
    p = np.full(inside.shape, PART["posterior"], dtype=np.uint8)
    p[sd_pr <= 0] = PART["pedicle_right"]
    p[sd_pl <= 0] = PART["pedicle_left"]
    p[body] = PART["body"]
    pt[inside] = p[inside]


def paint_sclerosis(grid: Grid, verts, tissue, mineral, labels, rng: np.random.Generator, enabled: bool):
    """1-3 focal dense blobs (3-6 mm, 400-800 mg/cm3) in cancellous bodies; returns their truth dicts."""
    n = int(rng.integers(1, 4))
    draws = rng.uniform(size=(n, 8))
    if not enabled:
        return []
    blobs = []
    for d in draws:
        g = verts[int(d[0] * len(verts)) % len(verts)]
        near_centre = d[1] < 0.5
        rr = (0.3 if near_centre else 0.75) * np.sqrt(d[2])
        ang = 2 * np.pi * d[3]
        local = np.array([rr * (g.a - 4) * np.cos(ang), rr * (g.b - 4) * np.sin(ang), (d[4] - 0.5) * (g.h - 12)])
        c = g.to_lps(local)
        diam = 3.0 + 3.0 * d[5]
        dens = 400.0 + 400.0 * d[6]
        rad = diam / 2.0
        bx = grid.box(c - rad - 1, c + rad + 1)
        if bx is None:
            continue
        sl, (Z, Y, X) = bx
        q = ((X - c[0]) ** 2 + (Y - c[1]) ** 2 + (Z - c[2]) ** 2) <= rad * rad
        t = tissue[sl]
        sel = q & (t == TISSUE["cancellous"]) & (labels[sl] == g.verse_id)
        t[sel] = TISSUE["sclerosis"]
        mineral[sl][sel] = dens
        blobs.append({"vertebra": g.name, "centre_lps": [float(x) for x in c], "diameter_mm": float(diam),
                      "mineral_mg_cm3": float(dens), "n_voxels": int(sel.sum())})
    return blobs
