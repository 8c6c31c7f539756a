"""Per-series output files: ROI label maps (NIfTI) and QC images (PNG), written atomically."""

from __future__ import annotations

import os
import re
import tempfile
from pathlib import Path

from ..errors import StoreError
from .csv import atomic_write_bytes

__all__ = ["ensure_writable_folder", "write_series_files", "safe_name"]


def ensure_writable_folder(folder: Path) -> None:
    """Create ``folder`` if absent and check that a file can be written in it.

    Raises
    ------
    StoreError
        Naming the folder and the system's reason (not a folder, read-only, no space,
        permission) when it cannot be created or written.
    """
    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=".bmdpipe-write-test.", suffix=".tmp", dir=folder)
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        raise StoreError(f"cannot write to the output folder {folder}: {exc.strerror or exc}; choose another "
                         "--out or make it writable") from exc


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
