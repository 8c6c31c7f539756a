"""Small analytic screw phantoms: one titanium cylinder in a block of bone, with a lucent halo
(full or partial arc, optional sclerotic rim), an optional cement mantle, PSF blur, correlated
noise, clipping at 3071 HU and optional photon-starvation streaks. Independent of
bmdpipe.synthetic (own ground truth)."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from bmdpipe.screws.detect import screw_frame
from bmdpipe.volume import Volume


def make_screw_block(*, width_mm=1.0, arc=1.0, arc_center_deg=0.0, rim=False, diameter_mm=6.5,
                     length_mm=40.0, bone_hu=180.0, lucent_hu=30.0, rim_hu=700.0, metal_hu=6500.0,
                     clip=True, psf_fwhm_mm=1.1, noise_sd=15.0, streak=False, seed=0,
                     spacing=(1.0, 0.8, 0.8), tilt=(20.0, 8.0), supersample=3, second_screw=False,
                     mantle_mm=0.0, cement_hu=4500.0):
    """Return ``(Volume, truth)``; ``truth`` has entry/tip LPS, diameter, width, arc, rim, mantle.

    ``mantle_mm`` > 0 wraps the first screw's distal half in cement (``cement_hu``) that far beyond
    its surface, and as far beyond its tip (a flat cap)."""
    rng = np.random.default_rng(seed)
    size_mm = np.array([60.0, 60.0, 60.0])  # z, y, x
    sp = np.asarray(spacing, float)
    fine = sp / supersample
    shape_f = np.round(size_mm / fine).astype(int)
    shape_f -= shape_f % supersample
    # LPS of fine-voxel centres (identity direction, origin 0)
    zz, yy, xx = [np.arange(n) * f for n, f in zip(shape_f, fine)]
    Z, Y, X = np.meshgrid(zz, yy, xx, indexing="ij")
    P = np.stack([X, Y, Z], axis=-1)  # (z,y,x,3) LPS
    yaw, pitch = np.radians(tilt)
    a = np.array([np.sin(yaw), -np.cos(yaw), np.sin(pitch)])
    a /= np.linalg.norm(a)
    centre = np.array([30.0 + (8.0 if second_screw else 0.0), 30.0, 30.0])
    entry = centre - a * length_mm / 2
    tip = centre + a * length_mm / 2
    img = np.full(shape_f, bone_hu, np.float32)

    def add_screw(entry, tip, width, arc, arc_c, rim, ax, mantle=0.0):
        d = P - entry
        t = d @ ax
        perp = d - t[..., None] * ax
        rr = np.linalg.norm(perp, axis=-1)
        u, v = screw_frame(ax)
        ang = np.arctan2(perp @ v, perp @ u)
        R = diameter_mm / 2
        L = np.linalg.norm(tip - entry)
        along = (t >= 0) & (t <= L)
        dang = np.angle(np.exp(1j * (ang - np.radians(arc_c))))
        in_arc = np.abs(dang) <= np.pi * arc + 1e-9
        if width > 0:
            img[along & in_arc & (rr >= R) & (rr < R + width)] = lucent_hu
            if rim:
                img[along & in_arc & (rr >= R + width) & (rr < R + width + 1.0)] = rim_hu
        if mantle > 0:
            img[(t >= L / 2) & (t <= L + mantle) & (rr < R + mantle)] = cement_hu
        img[along & (rr < R)] = metal_hu

    add_screw(entry, tip, width_mm, arc, arc_center_deg, rim, a, mantle_mm)
    second = None
    if second_screw:
        a2 = np.array([-a[0], a[1], a[2]])
        c2 = np.array([30.0 - 16.0, 30.0, 30.0])
        second = dict(entry=c2 - a2 * length_mm / 2, tip=c2 + a2 * length_mm / 2)
        add_screw(second["entry"], second["tip"], 0.0, 1.0, 0.0, False, a2)
    sig = psf_fwhm_mm / 2.3548 / fine
    img = ndimage.gaussian_filter(img, sig, mode="nearest")
    # sample the blurred fine image at the coarse voxel centres (a scanner samples the PSF-blurred
    # object; box-averaging would add a non-Gaussian blur)
    c0 = supersample // 2
    img = img[c0::supersample, c0::supersample, c0::supersample]
    noise = rng.standard_normal(img.shape).astype(np.float32)
    noise = ndimage.gaussian_filter(noise, 0.3 / sp)
    img += noise / noise.std() * noise_sd
    if streak:
        # dark band along the line joining screw centres in the axial plane through the screw
        zc = 30.0
        kz = np.arange(img.shape[0]) * sp[0] + fine[0] * (supersample // 2)
        prof = np.exp(-0.5 * ((kz - zc) / 0.8) ** 2)
        img -= (250.0 * prof)[:, None, None].astype(np.float32)
    if clip:
        img = np.minimum(img, 3071.0)
    origin = tuple(fine * (supersample // 2))[::-1]
    vol = Volume(array=img.astype(np.float32), spacing=tuple(sp), origin=origin)
    truth = dict(entry=entry, tip=tip, diameter_mm=diameter_mm, width_mm=width_mm, arc=arc, rim=rim,
                 length_mm=length_mm, psf_sigma_mm=psf_fwhm_mm / 2.3548, second=second, mantle_mm=mantle_mm)
    return vol, truth


@pytest.fixture
def screw_block():
    return make_screw_block
