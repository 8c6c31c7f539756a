"""Per-series output files: ROI label maps (NIfTI) and QC images (PNG), written atomically."""

from __future__ import annotations

import re
from pathlib import Path

from .csv import atomic_write_bytes

__all__ = ["write_series_files", "safe_name"]


def safe_name(text: str) -> str:
    """A file-name-safe version of a UID or label (letters, digits, '.', '-', '_')."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text)


def write_series_files(out_dir: Path, result) -> list[Path]:
    """Write ``rois/<uid>_A.nii.gz`` ... and ``qc/<uid>_<name>.png`` for one SeriesResult."""
    out_dir = Path(out_dir)
    uid = safe_name(result.series.series_uid)
    written = []
    for region, data in sorted(result.roi_maps.items()):
        path = out_dir / "rois" / f"{uid}_{region}.nii.gz"
        atomic_write_bytes(path, data)
        written.append(path)
    for name, data in sorted(result.qc_images.items()):
        path = out_dir / "qc" / f"{uid}_{safe_name(name)}.png"
        atomic_write_bytes(path, data)
        written.append(path)
    return written
