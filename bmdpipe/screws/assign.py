"""Assign each screw to a vertebra and to the patient's left or right (LPS geometry)."""

from __future__ import annotations

from dataclasses import replace
from typing import Sequence

import numpy as np

from ..results import Screw, Side, Vertebra
from ..volume import Volume

__all__ = ["screw_points", "box_distance_mm", "pedicle_path_problem", "assign_screws"]


def screw_points(screw: Screw, step_mm: float = 1.0) -> np.ndarray:
    """(N, 3) LPS points every ``step_mm`` along the screw from entry to tip."""
    e = np.asarray(screw.entry_lps, dtype=float)
    t = np.asarray(screw.tip_lps, dtype=float)
    n = max(2, int(np.ceil(np.linalg.norm(t - e) / step_mm)) + 1)
    return e + np.linspace(0.0, 1.0, n)[:, None] * (t - e)


def _mask_votes(points: np.ndarray, vertebrae: Sequence[Vertebra], volume: Volume) -> np.ndarray:
    idx = np.rint(volume.lps_to_index(points)).astype(int)
    votes = np.zeros(len(vertebrae))
    for n, v in enumerate(vertebrae):
        rel = idx - np.asarray(v.offset)
        inside = np.all((rel >= 0) & (rel < np.asarray(v.mask.shape)), axis=1)
        if inside.any():
            r = rel[inside]
            votes[n] = np.count_nonzero(v.mask[r[:, 0], r[:, 1], r[:, 2]])
    return votes


def _segment_distance(points: np.ndarray, c: np.ndarray) -> float:
    return float(np.min(np.linalg.norm(points - c, axis=1)))


def box_distance_mm(points: np.ndarray, vertebra: Vertebra, volume: Volume) -> float:
    """Smallest distance (mm) of ``points`` (N, 3 LPS) from the box of ``vertebra``'s mask; 0 inside."""
    idx = volume.lps_to_index(points)
    lo = np.asarray(vertebra.offset, dtype=float)
    hi = lo + np.asarray(vertebra.mask.shape) - 1.0
    outside = np.maximum(lo - idx, 0.0) + np.maximum(idx - hi, 0.0)
    return float(np.min(np.linalg.norm(outside * np.asarray(volume.spacing), axis=1)))


def pedicle_path_problem(screw: Screw, vertebra: Vertebra, *, max_ap_angle_deg: float,
                         max_head_depth_mm: float) -> str:
    """Why a straight metal run assigned to ``vertebra`` is not one of its pedicle screws, or ``''``.

    A pedicle screw runs from its head behind the vertebra, through a pedicle, into the body: its
    axis lies within ``max_ap_angle_deg`` (degrees) of the vertebra's anterior-posterior axis (canal
    centre to body centre; a crosslink between the rods runs left-right, ~90 degrees), and its head
    end (``entry_lps``) lies behind the body's posterior wall, at most ``max_head_depth_mm`` (mm) in
    front of it (an interbody cage's wall lies wholly in the disc space in front of the canal). The
    wall is half the canal's depth in front of the canal's centre. ``''`` when the vertebra has no
    canal or body centre to judge by.
    """
    if vertebra.canal_center_lps is None or vertebra.body_center_lps is None:
        return ""
    canal = np.asarray(vertebra.canal_center_lps, dtype=float)
    ap = np.asarray(vertebra.body_center_lps, dtype=float) - canal
    if np.linalg.norm(ap) == 0:
        return ""
    ap /= np.linalg.norm(ap)
    axis = np.subtract(screw.tip_lps, screw.entry_lps)
    angle = float(np.degrees(np.arccos(np.clip(abs(axis @ ap) / np.linalg.norm(axis), 0.0, 1.0))))
    if angle > max_ap_angle_deg:
        return f"its axis is {angle:.0f} deg from {vertebra.name}'s anterior-posterior axis (a crosslink?)"
    if vertebra.canal_depth_mm is not None:
        depth = float((np.asarray(screw.entry_lps) - canal) @ ap) - 0.5 * vertebra.canal_depth_mm
        if depth > max_head_depth_mm:
            return (f"its posterior end is {depth:.0f} mm in front of {vertebra.name}'s posterior body wall, "
                    "not behind it (an interbody cage?)")
    return ""


def assign_screws(screws: Sequence[Screw], vertebrae: Sequence[Vertebra] = (), *,
                  volume: Volume | None = None, max_distance_mm: float | None = None) -> list[Screw]:
    """Name each screw's vertebra and side.

    Parameters
    ----------
    screws : sequence of Screw
    vertebrae : sequence of Vertebra
        With masks and ``volume`` given, the vertebra holding most points of the screw wins;
        otherwise the vertebra whose centroid is nearest to the screw (segment distance).
    volume : Volume, optional
        Grid of the vertebra masks (needed to use the masks).
    max_distance_mm : float, optional
        With ``volume``: a screw farther than this (mm) from the box of every vertebra's mask
        belongs to none (``vertebra`` ''): it is other metal (a hip stem, a clip) or a screw of
        a level not among ``vertebrae``. None = always assign.

    Returns
    -------
    list of Screw
        Copies with ``vertebra`` and ``side`` set. The side is the sign of the LPS x offset of
        the screw's entry point from the vertebra's centroid (+x = patient's left). Without
        vertebrae (or far from all of them), ``vertebra`` stays ``''`` and the side is relative
        to the mean x of all entry points.
    """
    screws = list(screws)
    if not screws:
        return []
    mid_x = float(np.mean([s.entry_lps[0] for s in screws]))
    out = []
    cents = np.array([v.centroid_lps for v in vertebrae], dtype=float)
    for s in screws:
        pts = screw_points(s)
        if not vertebrae or (volume is not None and max_distance_mm is not None and min(
                box_distance_mm(pts, v, volume) for v in vertebrae) > max_distance_mm):
            out.append(replace(s, vertebra="", side=Side.left if s.entry_lps[0] > mid_x else Side.right))
            continue
        votes = _mask_votes(pts, vertebrae, volume) if volume is not None else np.zeros(len(vertebrae))
        if votes.max() > 0:
            k = int(np.argmax(votes))
        else:
            k = int(np.argmin([_segment_distance(pts, c) for c in cents]))
        v = vertebrae[k]
        ref_x = v.canal_center_lps[0] if v.canal_center_lps is not None else v.centroid_lps[0]
        side = Side.left if s.entry_lps[0] > ref_x else Side.right
        out.append(replace(s, vertebra=v.name, side=side))
    return out
