"""The review step's model: a series' ROI label maps as a reviewer edits them, and their rows.

Plain Python and numpy, no Qt: the napari widget (:mod:`bmdpipe.review._qt`) and
``bmdpipe measure`` drive it, and the tests run it without a display. The maps are the
output contract's ROI label maps (``rois/<uid>_A.nii.gz`` ...) on the CT grid (k, j, i):
voxel = 10 x VerSe id + side code. An ROI whose voxels differ from the automatic ones is
re-measured with the series' stored calibration by :func:`bmdpipe.measure.measure_rois`, the
code ``bmdpipe run`` measures with, and its row says ``roi_source = manual``. A manual ROI is
taken as drawn: no cortex or sclerosis is removed from it (``excluded_fraction`` 0).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace

import numpy as np
from scipy import ndimage as ndi

from ..config import Settings
from ..noise import NoiseModel
from ..results import VERSE_IDS, Calibration, Region, Roi, Side
from ..rows import SERIES_IDENTITY, VbmdRow
from ..volume import Volume

__all__ = [
    "RoiKey",
    "ReviewSeries",
    "ReviewSession",
    "RoiChange",
    "REGIONS",
    "roi_keys",
    "roi_masks",
    "ellipse_slab",
    "trajectory_cylinder",
]

#: the ROI label maps of a series, in the output contract's order
REGIONS = ("A", "B", "C")



@dataclass(frozen=True)
class RoiKey:
    """One ROI of a series: vertebra, region, side and its code in the region's label map."""

    vertebra: str
    region: Region
    side: Side
    label_code: int

    @property
    def name(self) -> str:
        """Readable name: ``'L4 B left'``."""
        return f"{self.vertebra} {Region(self.region).value} {Side(self.side).value}"

    @property
    def verse_id(self) -> int | None:
        return VERSE_IDS.get(self.vertebra.upper())


def _label_code(row: VbmdRow) -> int:
    """A row's ROI label code: its ``label_code`` column, else 10 x VerSe id (or V ordinal) + side code."""
    if row.label_code is not None and np.isfinite(row.label_code):
        return int(row.label_code)
    base = VERSE_IDS.get(row.vertebra.upper()) or int(row.vertebra.lstrip("Vv"))
    return 10 * base + Side(row.side).code


def roi_keys(rows: Iterable[VbmdRow]) -> tuple[RoiKey, ...]:
    """The ROIs of a series' ``vbmd.csv`` rows, in row order."""
    return tuple(RoiKey(r.vertebra, Region(r.region), Side(r.side), _label_code(r)) for r in rows)


def roi_masks(label_map: np.ndarray, codes: Iterable[int]) -> dict[int, tuple[tuple[int, int, int], np.ndarray]]:
    """Each code's voxels in a label map as ``(offset, mask)`` on its bounding box.

    Parameters
    ----------
    label_map : (K, J, I) ndarray of int
        A region's ROI label map on the CT grid.
    codes : iterable of int
        Label codes to extract; a code with no voxel gets offset (0, 0, 0) and an empty
        (0, 0, 0) mask.
    """
    codes = [int(c) for c in codes]
    boxes = ndi.find_objects(np.asarray(label_map), max_label=max(codes, default=0))
    out = {}
    for code in codes:
        box = boxes[code - 1] if 0 < code <= len(boxes) else None
        if box is None:
            out[code] = ((0, 0, 0), np.zeros((0, 0, 0), bool))
        else:
            out[code] = (tuple(s.start for s in box), np.asarray(label_map[box]) == code)
    return out


def _digest(offset: Sequence[int], mask: np.ndarray) -> str:
    """Identity of an ROI's voxel set (its box, shape and bits)."""
    h = hashlib.sha1(np.asarray([*offset, *mask.shape], np.int64).tobytes())
    h.update(np.packbits(mask).tobytes())
    return h.hexdigest()


def ellipse_slab(shape: Sequence[int], center_ji: Sequence[float], semi_axes: Sequence[float], angle_rad: float,
                 slices: tuple[int, int]) -> np.ndarray:
    """Voxels of an elliptic cylinder along the slice axis: ROI A as the QCT convention draws it.

    Parameters
    ----------
    shape : (3,) ints
        The CT grid (K, J, I).
    center_ji : (2,) floats
        Centre of the ellipse in (row j, column i) voxel coordinates.
    semi_axes : (2,) floats
        Semi-axes in voxels: the first along the rotated row axis, the second along the
        rotated column axis.
    angle_rad : float
        Rotation of the ellipse in the slice plane, radians (counter-clockwise from the row axis).
    slices : (first, stop) ints
        Slice range ``first <= k < stop``.

    Returns
    -------
    (K, J, I) ndarray of bool
    """
    jj, ii = np.mgrid[: shape[1], : shape[2]].astype(float)
    dj, di = jj - center_ji[0], ii - center_ji[1]
    c, s = np.cos(angle_rad), np.sin(angle_rad)
    u, v = c * dj + s * di, -s * dj + c * di
    inside = (u / max(semi_axes[0], 1e-6)) ** 2 + (v / max(semi_axes[1], 1e-6)) ** 2 <= 1.0
    out = np.zeros(tuple(shape), bool)
    out[max(slices[0], 0): min(slices[1], shape[0])] = inside
    return out


def trajectory_cylinder(volume: Volume, entry_lps: Sequence[float], tip_lps: Sequence[float],
                        radius_mm: float) -> np.ndarray:
    """Voxels within ``radius_mm`` of the segment entry -> tip (LPS mm): a planned screw's trajectory (ROI C).

    Returns
    -------
    (K, J, I) ndarray of bool on ``volume``'s grid.
    """
    a, b = np.asarray(entry_lps, float), np.asarray(tip_lps, float)
    ends = volume.lps_to_index(np.stack([a, b]))
    pad = radius_mm / min(volume.spacing) + 1
    lo = np.maximum(np.floor(ends.min(0) - pad).astype(int), 0)
    hi = np.minimum(np.ceil(ends.max(0) + pad).astype(int) + 1, volume.shape)
    out = np.zeros(volume.shape, bool)
    if np.any(hi <= lo):
        return out
    idx = np.stack(np.meshgrid(*[np.arange(l, h) for l, h in zip(lo, hi)], indexing="ij"), -1).reshape(-1, 3)
    p = volume.index_to_lps(idx)
    ab = b - a
    t = np.clip((p - a) @ ab / max(float(ab @ ab), 1e-12), 0.0, 1.0)
    dist = np.linalg.norm(p - (a + t[:, None] * ab), axis=1)
    out[tuple(slice(l, h) for l, h in zip(lo, hi))] = (dist <= radius_mm).reshape(hi - lo)
    return out


@dataclass(frozen=True)
class ReviewSeries:
    """What a review of one series starts from (read by :func:`bmdpipe.review.store.open_review`).

    Attributes
    ----------
    volume : Volume
        The CT in HU; ``meta`` holds the pseudonym study_id, never a name.
    calibration : Calibration or None
        The series' stored calibration (None: its calibration failed; rows in HU only).
    settings : Settings
        The settings of the run that measured the series.
    auto_maps, start_maps : dict of str -> (K, J, I) ndarray of uint16
        The automatic ROI maps, and the maps the reviewer starts from (their last saved ones,
        else the automatic ones).
    auto_rows, start_rows : tuple of VbmdRow
        Their rows, in the same order.
    reviewer : str
    screws : tuple of ScrewRow
        The series' screws (entry and tip, LPS mm), for display.
    halo_maps : tuple of Path
        The run's halo map of each screw (``qc/<uid>_screw_<vertebra>_<side>.png``: halo width by
        angle and position along the screw, and an axial slice with the halo drawn).
    """

    volume: Volume
    calibration: Calibration | None
    settings: Settings
    auto_maps: dict
    start_maps: dict
    auto_rows: tuple[VbmdRow, ...]
    start_rows: tuple[VbmdRow, ...]
    reviewer: str
    screws: tuple = ()
    halo_maps: tuple = ()


@dataclass(frozen=True)
class RoiChange:
    """An ROI a save changes: its row before and after, and the voxels added and removed."""

    key: RoiKey
    before: VbmdRow
    after: VbmdRow
    voxels_added: int
    voxels_removed: int

    def audit(self) -> dict:
        """The ``roi_edits`` entry of the change: the ROI, and ``what``: its row's values before and after
        (the ``vbmd.csv`` columns but the series' identity) and the voxels added and removed."""
        pick = lambda row: {k: v for k, v in row.as_dict().items() if k not in SERIES_IDENTITY}  # noqa: E731
        return {"vertebra": self.key.vertebra, "region": self.key.region.value, "side": self.key.side.value,
                "what": {"label_code": self.key.label_code, "before": pick(self.before), "after": pick(self.after),
                         "voxels_added": self.voxels_added, "voxels_removed": self.voxels_removed}}


class ReviewSession:
    """A reviewer's edits of one series: the current label maps and each ROI's row.

    ``maps`` are edited in place (a napari labels layer shares them) or replaced through
    :meth:`set_map`; :meth:`rows` re-measures only the ROIs whose voxels changed since the last
    call. An ROI equal to its automatic voxels keeps the automatic row, one equal to the
    reviewer's starting voxels keeps the starting row.
    """

    def __init__(self, series: ReviewSeries, noise: NoiseModel | None = None):
        self.series = series
        self.keys = roi_keys(series.auto_rows)
        self.maps = {r: np.array(series.start_maps[r], dtype=np.uint16, copy=True) for r in REGIONS}
        self._noise = noise
        self._noise_ready = noise is not None
        by_key = lambda rows: dict(zip(roi_keys(rows), rows))  # noqa: E731
        self._auto = self._digests(series.auto_maps)
        self._auto_rows = by_key(series.auto_rows)
        self._start_maps = {r: np.array(series.start_maps[r], dtype=np.uint16, copy=True) for r in REGIONS}
        self._start = self._digests(self._start_maps)
        self._start_rows = by_key(series.start_rows)
        self._measured: dict[RoiKey, tuple[str, VbmdRow]] = {}

    def mark_saved(self) -> None:
        """The current maps and rows become the start: the next :meth:`changes` are the edits made after a save."""
        self._start_rows = dict(zip(self.keys, self.rows()))
        self._start_maps = {r: m.copy() for r, m in self.maps.items()}
        self._start = self._digests(self._start_maps)

    # ------------------------------------------------------------ maps
    def _digests(self, maps: Mapping[str, np.ndarray]) -> dict[RoiKey, str]:
        out = {}
        for region in REGIONS:
            keys = [k for k in self.keys if k.region.value == region]
            boxes = roi_masks(maps[region], [k.label_code for k in keys])
            out.update({k: _digest(*boxes[k.label_code]) for k in keys})
        return out

    def set_map(self, region: str, label_map: np.ndarray) -> None:
        """Replace a region's map (e.g. one drawn in another tool), on the CT grid."""
        label_map = np.asarray(label_map)
        if label_map.shape != self.series.volume.shape:
            raise ValueError(f"the {region} map's shape {label_map.shape} is not the CT's {self.series.volume.shape}")
        self.maps[Region(region).value] = label_map.astype(np.uint16)

    def unknown_codes(self, region: str) -> list[int]:
        """Codes in a region's map that name no ROI of the series (the review cannot add ROIs)."""
        known = {k.label_code for k in self.keys if k.region.value == Region(region).value} | {0}
        return sorted(set(np.unique(self.maps[Region(region).value]).tolist()) - known)

    def reset_vertebra(self, vertebra: str) -> None:
        """Put the automatic ROIs of one vertebra back in every region's map."""
        for key in (k for k in self.keys if k.vertebra == vertebra):
            region = key.region.value
            current, auto = self.maps[region], self.series.auto_maps[region]
            current[current == key.label_code] = 0
            current[auto == key.label_code] = key.label_code

    def replace_roi(self, key: RoiKey, mask: np.ndarray) -> None:
        """Make ``mask`` (full grid, bool) the ROI's voxels; other ROIs' voxels stay."""
        current = self.maps[key.region.value]
        current[current == key.label_code] = 0
        current[mask & (current == 0)] = key.label_code

    # ------------------------------------------------------------ measurement
    @property
    def noise(self) -> NoiseModel | None:
        """The series' noise model, estimated from the CT on first use as ``bmdpipe run`` does."""
        if not self._noise_ready:
            from ..pipeline import series_noise

            self._noise, _ = series_noise(self.series.volume, self.series.settings)
            self._noise_ready = True
        return self._noise

    def rows(self) -> tuple[VbmdRow, ...]:
        """Every ROI's row for the current maps (in the automatic rows' order)."""
        from ..measure import measure_rois

        out = []
        now = self._digests(self.maps)
        for region in REGIONS:
            keys = [k for k in self.keys if k.region.value == region]
            boxes = None
            for key in keys:
                digest = now[key]
                if digest == self._auto[key]:
                    row = self._auto_rows[key]
                elif digest == self._start[key]:
                    row = self._start_rows[key]
                elif key in self._measured and self._measured[key][0] == digest:
                    row = self._measured[key][1]
                else:
                    if boxes is None:
                        boxes = roi_masks(self.maps[region], [k.label_code for k in keys])
                    offset, mask = boxes[key.label_code]
                    roi = Roi(vertebra=key.vertebra, verse_id=key.verse_id, region=key.region, side=key.side,
                              offset=offset, mask=mask, n_candidates=int(mask.sum()), n_excluded=0,
                              source="manual", label_code=key.label_code)
                    (row,) = measure_rois(self.series.volume, [roi], self.series.calibration, self.noise,
                                          self.series.settings)
                    row = replace(row, reviewer=self.series.reviewer)
                    self._measured[key] = (digest, row)
                out.append((key, row))
        order = {k: i for i, k in enumerate(self.keys)}
        return tuple(row for _, row in sorted(out, key=lambda kr: order[kr[0]]))

    def changes(self) -> tuple[RoiChange, ...]:
        """The ROIs whose voxels differ from the reviewer's starting maps, with before and after rows."""
        now = self._digests(self.maps)
        rows = dict(zip(self.keys, self.rows()))
        out = []
        for key in self.keys:
            if now[key] == self._start[key]:
                continue
            region = key.region.value
            new = self.maps[region] == key.label_code
            old = self._start_maps[region] == key.label_code
            out.append(RoiChange(key, self._start_rows[key], rows[key], int((new & ~old).sum()),
                                 int((old & ~new).sum())))
        return tuple(out)

    def table(self) -> list[tuple[RoiKey, VbmdRow]]:
        """Each ROI and its current row, for the widget's table (name, vBMD, SE, voxels, source)."""
        return list(zip(self.keys, self.rows()))
