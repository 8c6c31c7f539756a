"""Vertebra labels: VerSe maps, TotalSegmentator v1/v2 multilabel files and output folders.

Labels are resampled onto the CT grid through the two affines (nearest neighbour), never by
array index, and then checked against the CT: each level must fall mostly inside the CT
grid, lie on bone (mean HU and share of bone voxels), and the levels must run superior to
inferior in the order their names say. Labels that fail (wrong origin, flipped axis,
another patient's labels, mixed-up ids) are refused with an :class:`AnatomyError` that
names the file and the problem.

The label scheme comes from the class names in the NIfTI header extension when present
(TotalSegmentator ``--ml`` writes a CaretExtension XML label table), from the file names in
a TotalSegmentator output folder, else from ``AnatomySettings.labels_format``; with
``auto`` each known scheme is tried and the one whose lumbar levels lie on bone in the right
superior-inferior order wins.

The pure kernels take arrays; :func:`load_labels` / :func:`vertebrae_from_labels` are the
file-reading entry points the pipeline calls.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
from scipy import ndimage as ndi

from ..config import AnatomySettings
from ..errors import AnatomyError
from ..results import Vertebra, VERSE_IDS
from ..volume import Volume
from .frame import CanonicalFrame
from .vertebra import largest_component, vertebra_geometry

__all__ = [
    "SCHEMES",
    "LUMBAR",
    "read_label_table",
    "level_from_class_name",
    "resample_labels",
    "load_labels",
    "check_labels",
    "vertebrae_from_labels",
    "vertebrae_from_label_map",
    "vertebrae_from_masks",
]

#: a whole lumbar vertebra reaches this far posterior of its centroid (spinous process; a body is
#: ~30-35 mm deep, the whole vertebra ~70 mm), mm: a label's box is widened by it for the posterior
#: elements, and a label that does not reach it holds the body only
POSTERIOR_REACH_MM = 30.0

#: The lumbar levels: the ones measured when no ``levels`` are named. Other levels (T12 of a
#: thoracolumbar QCT, T11 when T12 is fractured) are measured when named in ``levels``.
LUMBAR = ("L1", "L2", "L3", "L4", "L5", "L6")

#: id -> level name for each known scheme.
SCHEMES: dict[str, dict[int, str]] = {
    "verse": {v: k for k, v in VERSE_IDS.items()},
    # TotalSegmentator v1 "total": L5 18 ... L1 22, T12 23 ... T1 34, C7 35 ... C1 41
    "totalseg_v1": {
        **{18 + i: f"L{5 - i}" for i in range(5)},
        **{23 + i: f"T{12 - i}" for i in range(12)},
        **{35 + i: f"C{7 - i}" for i in range(7)},
    },
    # TotalSegmentator v2 "total": S1 26, L5 27 ... L1 31, T12 32 ... T1 43, C7 44 ... C1 50
    "totalseg_v2": {
        26: "S1",
        **{27 + i: f"L{5 - i}" for i in range(5)},
        **{32 + i: f"T{12 - i}" for i in range(12)},
        **{44 + i: f"C{7 - i}" for i in range(7)},
    },
}
# TotalSegmentator "vertebrae_pp" body labels use the VerSe numbering (19 T12, 20 L1 ... 24 L5).
SCHEMES["totalseg_pp"] = SCHEMES["verse"]

_CARET = re.compile(r'<Label\s+Key="(\d+)"[^>]*>\s*<!\[CDATA\[([^\]]*)\]\]>', re.S)
_LEVEL = re.compile(r"(?:^|_)(C[1-7]|T1[0-2]|T[1-9]|L[1-6]|S1)$", re.I)


def read_label_table(header_extensions) -> dict[int, str] | None:
    """Class names from a NIfTI header's extensions (CaretExtension XML label table).

    Parameters
    ----------
    header_extensions : iterable of nibabel extensions (or bytes)

    Returns
    -------
    dict of int to str, or None when no table is present.
    """
    for ext in header_extensions:
        content = ext if isinstance(ext, (bytes, str)) else ext.get_content()
        if isinstance(content, bytes):
            content = content.decode("utf-8", errors="replace")
        if not isinstance(content, str):
            continue
        table = {int(k): v.strip() for k, v in _CARET.findall(content)}
        if table:
            return table
    return None


def level_from_class_name(name: str) -> str | None:
    """``'vertebrae_L4'`` -> ``'L4'``; None for non-vertebra classes (``'sacrum'``, ``'liver'``)."""
    m = _LEVEL.search(name.strip().removesuffix(".nii.gz").removesuffix(".nii"))
    if not m or "vertebra" not in name.lower() and not re.fullmatch(r"[CTLS]\d+", name.strip(), re.I):
        return None
    return m.group(1).upper()


def _lps_affine(img) -> np.ndarray:
    """NIfTI affine (index i, j, k -> RAS) converted to index -> LPS."""
    return np.diag([-1.0, -1.0, 1.0, 1.0]) @ np.asarray(img.affine, float)


def resample_labels(data: np.ndarray, affine_lps: np.ndarray, volume: Volume) -> np.ndarray:
    """Nearest-neighbour resampling of a label array onto the CT grid through the affines.

    Parameters
    ----------
    data : (I, J, K) ndarray of int
        Label array in NIfTI index order.
    affine_lps : (4, 4) ndarray
        Maps the label array's (i, j, k, 1) to LPS mm.
    volume : Volume
        Target grid.

    Returns
    -------
    (K, J, I) ndarray of uint16 on ``volume``'s grid; 0 outside the label image.
    """
    t = np.linalg.inv(affine_lps) @ volume.affine  # CT (k, j, i) -> label (i, j, k)
    data = np.asarray(data)
    if data.dtype.kind == "f":
        data = np.rint(data)
    rot, offset = t[:3, :3], t[:3, 3]
    if _is_signed_permutation(rot) and np.allclose(offset, np.rint(offset), atol=1e-4):
        return _permuted_take(data, np.rint(rot).astype(int), np.rint(offset).astype(int), volume.shape,
                              dtype=np.uint16)
    return ndi.affine_transform(data.astype(np.uint16), rot, offset=offset, output_shape=volume.shape, order=0,
                                mode="constant", cval=0, prefilter=False)


def _is_signed_permutation(m: np.ndarray) -> bool:
    """True when every row and column of ``m`` holds one +-1 and zeros (to 1e-4): the grids share
    their voxel size and axes up to order and direction."""
    r = np.rint(m)
    return bool(np.allclose(m, r, atol=1e-4) and np.all(np.abs(r).sum(0) == 1) and np.all(np.abs(r).sum(1) == 1))


def _permuted_take(data: np.ndarray, rot: np.ndarray, offset: np.ndarray, shape, dtype=None) -> np.ndarray:
    """``out[o] = data[rot @ o + offset]`` (0 outside ``data``; cast to ``dtype``, default the data's) for
    a signed permutation ``rot``: the nearest-neighbour resampling of :func:`resample_labels` by slicing
    alone (same result)."""
    out_axis = np.abs(rot).argmax(axis=1)  # the output axis each data axis follows
    out = np.zeros(tuple(shape), dtype=dtype or data.dtype)
    taken = out.transpose(out_axis)  # a view of the output in the data's axis order
    dst, src = [], []
    for a in range(3):
        sign, n_out, n_data = rot[a, out_axis[a]], shape[out_axis[a]], data.shape[a]
        # output indices o with 0 <= sign * o + offset < n_data
        lo, hi = (-offset[a], n_data - offset[a]) if sign > 0 else (offset[a] - n_data + 1, offset[a] + 1)
        lo, hi = max(lo, 0), min(hi, n_out)
        if lo >= hi:
            return out
        dst.append(slice(lo, hi))
        first, last = sign * lo + offset[a], sign * (hi - 1) + offset[a]
        src.append(slice(first, last + 1) if sign > 0 else slice(first, last - 1 if last > 0 else None, -1))
    taken[tuple(dst)] = data[tuple(src)]
    return out


def _scheme_from_table(table: dict[int, str]) -> dict[int, str]:
    out = {}
    for k, v in table.items():
        lvl = level_from_class_name(v)
        if lvl:
            out[k] = lvl
    return out


def _folder_labels(path: Path, volume: Volume) -> tuple[dict[str, np.ndarray], dict[str, float]]:
    """Masks and inside-shares of a TotalSegmentator output folder's ``vertebrae_<LEVEL>.nii.gz`` files."""
    import nibabel as nib

    files = sorted(path.glob("vertebrae_*.nii*"))
    if not files:
        raise AnatomyError(f"labels folder {path} holds no vertebrae_<LEVEL>.nii.gz files "
                           "(expected a TotalSegmentator output folder)")
    masks, inside = {}, {}
    for f in files:
        lvl = level_from_class_name(f.name)
        if lvl is None:
            continue
        img = nib.load(str(f))
        data = np.asanyarray(img.dataobj) > 0
        n_src = int(data.sum())
        if n_src == 0:
            continue
        res = resample_labels(data, _lps_affine(img), volume) > 0
        vr = abs(np.linalg.det(img.affine[:3, :3])) / volume.voxel_volume_mm3
        masks[lvl] = res
        inside[lvl] = float(res.sum() / (n_src * vr))
    return masks, inside


def _read_label_map(path: Path):
    """A 3-D label map's image and voxels (a trailing axis of 1 dropped)."""
    import nibabel as nib

    img = nib.load(str(path))
    data = np.asanyarray(img.dataobj)
    if data.ndim == 4 and data.shape[3] == 1:
        data = data[..., 0]
    if data.ndim != 3:
        raise AnatomyError(f"labels {path} have {data.ndim} dimensions; expected a 3-D label map")
    return img, data


def _voxel_counts(labels: np.ndarray) -> dict[int, int]:
    """Voxels per non-zero label id in ``labels`` (integer ids, or floats rounded to them), counted in
    the box that holds the non-zero voxels (bincount when the ids are all in 0..65535)."""
    ids = np.abs(labels) >= 0.5 if labels.dtype.kind == "f" else labels != 0
    box = tuple(slice(int(a[0]), int(a[-1]) + 1) if a.size else slice(0, 0)
                for a in (np.flatnonzero(ids.any(axis=tuple(j for j in range(ids.ndim) if j != i)))
                          for i in range(ids.ndim)))
    labels = labels[box]
    if labels.dtype.kind == "f":
        labels = np.rint(labels).astype(np.int64)
    if labels.size and np.can_cast(labels.dtype, np.intp) and labels.min() >= 0 and labels.max() <= 65535:
        counts = np.bincount(labels.ravel(), minlength=65536)
        counts[0] = 0
        nonzero = np.flatnonzero(counts)
        return dict(zip(nonzero.tolist(), counts[nonzero].tolist()))
    values, counts = np.unique(labels, return_counts=True)
    return {v: c for v, c in zip(values.tolist(), counts.tolist()) if v != 0}


class _LabelMap:
    """A label map resampled onto the CT, with each id's voxel count before and after."""

    def __init__(self, img, data: np.ndarray, volume: Volume):
        self.resampled = resample_labels(data, _lps_affine(img), volume)
        self.ratio_vox = abs(np.linalg.det(img.affine[:3, :3])) / volume.voxel_volume_mm3
        self.n_src = _voxel_counts(data)
        self.n_res = _voxel_counts(self.resampled)

    def masks(self, mapping: dict[int, str]) -> tuple[dict[str, np.ndarray], dict[str, float]]:
        """Per level named by ``mapping`` (id -> level): its mask on the CT and the share inside it."""
        masks, inside = {}, {}
        for vid, lvl in mapping.items():
            if self.n_src.get(vid, 0) == 0:
                continue
            inside[lvl] = float(self.n_res.get(vid, 0) / (self.n_src[vid] * self.ratio_vox))
            masks[lvl] = self.resampled == vid
        return masks, inside


def _guess_scheme(labels: _LabelMap, volume: Volume, settings: AnatomySettings, path: Path) -> str:
    """The id scheme whose lumbar levels lie on bone in the right order (more levels, fewer problems);
    an ambiguous or failed guess is an AnatomyError asking for ``anatomy.labels_format``."""
    best, scores = None, {}
    for key in ("verse", "totalseg_v1", "totalseg_v2"):
        masks, inside = labels.masks(SCHEMES[key])
        lum = [lvl for lvl in LUMBAR if lvl in masks and masks[lvl].any()]
        if not lum:
            continue
        problems = check_labels(volume, {k: masks[k] for k in lum}, {k: inside[k] for k in lum}, settings)
        scores[key] = len(lum) - 10 * len(problems)
        if best is None or scores[key] > scores[best]:
            best = key
    if best is None or scores[best] <= 0:
        raise AnatomyError(f"labels {path}: no lumbar vertebra label found under any known id scheme "
                           "(VerSe 20-24, TotalSegmentator v1 18-22, v2 27-31) that lies on bone; "
                           "set anatomy.labels_format or check that the labels belong to this CT")
    tied = [k for k, v in scores.items() if v == scores[best] and k != best]
    if tied:
        raise AnatomyError(f"labels {path}: ids fit several schemes equally ({best}, {', '.join(tied)}); "
                           "set anatomy.labels_format")
    return best


def load_labels(path: Path, volume: Volume, settings: AnatomySettings | None = None
                ) -> tuple[dict[str, np.ndarray], dict[str, float], str]:
    """Read labels from ``path`` and resample them onto ``volume``'s grid.

    Parameters
    ----------
    path : Path
        A label NIfTI (VerSe or TotalSegmentator multilabel) or a TotalSegmentator output
        folder holding ``vertebrae_<LEVEL>.nii.gz`` files.
    volume : Volume
        The CT the labels belong to.
    settings : AnatomySettings, optional

    Returns
    -------
    masks : dict of str to (K, J, I) ndarray of bool
        One whole-grid mask per level found (all levels, C1..S1).
    inside : dict of str to float
        Share of each level's source volume that lies inside the CT grid.
    scheme : str
        How the ids were named (``header``, ``folder`` or a key of :data:`SCHEMES`).

    Raises
    ------
    AnatomyError
        File missing or unreadable, no vertebra label, ambiguous scheme.
    """
    settings = settings or AnatomySettings()
    path = Path(path)
    if not path.exists():
        raise AnatomyError(f"labels {path} do not exist; pass a label NIfTI or a TotalSegmentator output folder")
    try:
        if path.is_dir():
            return (*_folder_labels(path, volume), "folder")
        img, data = _read_label_map(path)
        table = read_label_table(img.header.extensions)
    except AnatomyError:
        raise
    except Exception as exc:  # nibabel raises many types for unreadable files
        raise AnatomyError(f"labels {path} could not be read as NIfTI: {exc}") from exc
    labels = _LabelMap(img, data, volume)
    del data  # memory: the map resampled onto the CT is all that is needed from here
    if table:
        mapping = _scheme_from_table(table)
        if not mapping:
            raise AnatomyError(f"labels {path}: the header's label table names no vertebra "
                               f"(classes {sorted(set(table.values()))[:8]} ...)")
        return (*labels.masks(mapping), "header")
    scheme = settings.labels_format if settings.labels_format != "auto" else _guess_scheme(labels, volume, settings, path)
    return (*labels.masks(SCHEMES[scheme]), scheme)


def _bounding_box(mask: np.ndarray) -> tuple[slice, ...] | None:
    """Slices of the smallest box holding every voxel of a 3-D ``mask`` (None when it is empty)."""
    box = []
    for axis in range(3):
        hits = np.flatnonzero(mask.any(axis=tuple(a for a in range(3) if a != axis)))
        if hits.size == 0:
            return None
        box.append(slice(int(hits[0]), int(hits[-1]) + 1))
    return tuple(box)


def check_labels(volume: Volume, masks: dict[str, np.ndarray], inside: dict[str, float],
                 settings: AnatomySettings) -> list[str]:
    """Problems of resampled lumbar labels against the CT (empty list = plausible).

    Checks, per level: share inside the CT grid, mean HU and bone share under the label;
    across levels: superior-inferior order of the centroids and their spacing.
    """
    problems: list[str] = []
    cents = {}
    for lvl, m in masks.items():
        if inside.get(lvl, 1.0) < settings.label_min_inside_fraction:
            problems.append(f"{lvl}: only {100 * inside.get(lvl, 0):.0f} % of the label lies inside the CT grid "
                            "(wrong origin or labels of another series)")
            continue
        box = _bounding_box(m)
        if box is None:
            problems.append(f"{lvl}: empty on the CT grid")
            continue
        vals = volume.array[box][m[box]]
        mean = float(vals.mean())
        bone = float((vals > settings.bone_threshold_hu).mean())
        if mean < settings.label_min_mean_hu or bone < settings.label_min_bone_fraction:
            problems.append(f"{lvl}: mean {mean:.0f} HU and {100 * bone:.0f} % bone under the label "
                            f"(expected >= {settings.label_min_mean_hu:.0f} HU, "
                            f">= {100 * settings.label_min_bone_fraction:.0f} %): not on a vertebra "
                            "(misaligned: wrong origin or flipped axis?)")
            continue
        cents[lvl] = volume.index_to_lps(np.argwhere(m[box]).mean(axis=0) + [b.start for b in box])
    order = sorted(cents, key=VERSE_IDS.__getitem__)  # superior to inferior
    for a, b in zip(order, order[1:]):
        za, zb = cents[a][2], cents[b][2]
        if not za > zb:
            problems.append(f"{a} is not superior to {b} (z {za:.1f} vs {zb:.1f} mm): levels mislabelled "
                            "or a flipped axis")
        step = float(np.linalg.norm(cents[a] - cents[b]))
        n_between = VERSE_IDS[b] - VERSE_IDS[a]
        if step > settings.label_max_centroid_step_mm * n_between:
            problems.append(f"{a}-{b} centroids are {step:.0f} mm apart: a level is missing or mislabelled")
    return problems


def vertebrae_from_labels(path: Path, volume: Volume, settings: AnatomySettings | None = None,
                          *, levels=None) -> list[Vertebra]:
    """Vertebrae from a label file or folder, with their geometry: the lumbar ones (L1..L6), or
    the named ``levels`` (thoracic ones too, e.g. T12 of a thoracolumbar QCT).

    Parameters
    ----------
    path : Path
        Label NIfTI or TotalSegmentator output folder.
    volume : Volume
        The CT.
    settings : AnatomySettings, optional
    levels : sequence of str, optional
        Measure these levels (e.g. ``('L3', 'L4', 'L5')`` or ``('T12', 'L1')``) instead of the
        lumbar ones; an absent one is an error.

    Returns
    -------
    list of Vertebra, superior to inferior, ``source='labels'``.

    Raises
    ------
    AnatomyError
        Naming the file and the problem: unreadable, no lumbar level, labels outside the
        grid or not on bone (misaligned), levels in the wrong order, a requested level absent.
    """
    settings = settings or AnatomySettings()
    masks, inside, scheme = load_labels(path, volume, settings)
    return vertebrae_from_masks(masks, volume, settings, inside=inside, levels=levels,
                                what=f"labels {path}", scheme=scheme)


def vertebrae_from_label_map(label_map: np.ndarray, volume: Volume, settings: AnatomySettings | None = None,
                             *, scheme: str = "verse", levels=None) -> list[Vertebra]:
    """Vertebrae (lumbar, or the named ``levels``) from a label array already on ``volume``'s grid
    (e.g. a synthetic case).

    Parameters
    ----------
    label_map : (K, J, I) ndarray of int
        Label ids on the CT grid.
    scheme : str
        Key of :data:`SCHEMES` naming the ids (default VerSe).
    """
    settings = settings or AnatomySettings()
    if label_map.shape != volume.shape:
        raise AnatomyError(f"label map shape {label_map.shape} differs from the CT {volume.shape}; "
                           "resample it onto the CT grid (load_labels does so from a file)")
    masks = {lvl: label_map == vid for vid, lvl in SCHEMES[scheme].items()}
    return vertebrae_from_masks(masks, volume, settings, levels=levels, what="label map", scheme=scheme)


def vertebrae_from_masks(masks: dict[str, np.ndarray], volume: Volume, settings: AnatomySettings,
                         *, inside: dict[str, float] | None = None, levels=None, what: str = "labels",
                         scheme: str = "") -> list[Vertebra]:
    """Check whole-grid level masks against the CT and measure each lumbar vertebra, or each of
    ``levels`` (superior to inferior)."""
    inside = inside or {}
    path = what
    found = sorted((k for k, v in masks.items() if v.any()), key=VERSE_IDS.__getitem__)
    if levels:
        missing = [lvl for lvl in levels if lvl not in found]
        if missing:
            raise AnatomyError(f"{path}: requested level(s) {', '.join(missing)} absent; "
                               f"labelled levels: {', '.join(found) or 'none'}")
        wanted = sorted(levels, key=VERSE_IDS.__getitem__)
    else:
        wanted = [lvl for lvl in found if lvl in LUMBAR]
    if not wanted:
        outside = [k for k in masks if inside.get(k, 1) < settings.label_min_inside_fraction]
        hint = " (the labels fall outside the CT grid: wrong origin?)" if outside and not found else ""
        name_them = f"; to measure them, name them: --levels {','.join(found)}" if found else ""
        raise AnatomyError(f"{path}: no lumbar vertebra on this CT{hint}; levels present: "
                           f"{', '.join(found) or 'none'}{name_them}")
    checked = [lvl for lvl in found if lvl in LUMBAR or lvl in wanted]
    problems = check_labels(volume, {k: masks[k] for k in checked}, {k: inside.get(k, 1.0) for k in checked},
                            settings)
    if problems:
        raise AnatomyError(f"{path} do not fit the CT ({scheme} ids): " + "; ".join(problems))
    lum = {lvl: masks[lvl] for lvl in wanted}
    frame = CanonicalFrame.of(volume)
    hu_c_full = frame.to_canonical(volume.array)
    out = []
    for lvl, m in lum.items():
        m_c = frame.to_canonical(m)
        pad = [int(np.ceil(POSTERIOR_REACH_MM / s)) for s in frame.spacing]
        box = _bounding_box(m_c)
        lo = np.maximum(np.array([b.start for b in box]) - 2, 0)
        hi = np.minimum(np.array([b.stop for b in box]) + 2, m_c.shape)
        # room posteriorly for posterior elements of body-only labels
        hi[1] = min(m_c.shape[1], hi[1] + pad[1] * 2)
        lo[2] = max(0, lo[2] - pad[2])
        hi[2] = min(m_c.shape[2], hi[2] + pad[2])
        sl = tuple(slice(int(a), int(b)) for a, b in zip(lo, hi))
        mk = largest_component(m_c[sl])
        hu = np.asarray(hu_c_full[sl], dtype=np.float32)
        mk = _complete_posterior(mk, hu, frame.spacing, settings)
        out.append(vertebra_geometry(volume, frame, mk, tuple(int(v) for v in lo), lvl,
                                     VERSE_IDS[lvl], settings, source="labels"))
    return out


def _complete_posterior(mask: np.ndarray, hu: np.ndarray, spacing, settings: AnatomySettings) -> np.ndarray:
    """Add the posterior elements from the CT when a label holds the body only.

    A whole lumbar vertebra reaches more than ``POSTERIOR_REACH_MM`` posterior of its centroid
    (spinous process); a body-only label (TotalSegmentator ``vertebrae_body`` / ``_pp``) does not.
    """
    cy = np.argwhere(mask)[:, 1].mean()
    ymax = np.flatnonzero(mask.any(axis=(0, 2))).max()
    if (ymax - cy) * spacing[1] > POSTERIOR_REACH_MM:
        return mask
    sig = [settings.smoothing_sigma_mm / s for s in spacing]
    bone = ndi.gaussian_filter(hu, sig) > settings.bone_threshold_hu
    zs = np.flatnonzero(mask.any(axis=(1, 2)))
    bone[: zs.min()] = False
    bone[zs.max() + 1:] = False
    yy = np.arange(mask.shape[1])[None, :, None]
    bone &= yy >= np.argwhere(mask)[:, 1].max() - 1
    comb = mask | bone
    lab, _ = ndi.label(comb)
    keep = np.unique(lab[mask])
    return np.isin(lab, keep[keep > 0])
