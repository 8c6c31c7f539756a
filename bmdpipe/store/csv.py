"""The output contract's CSV files: fixed leading columns, atomic writes.

Column names and order below are fixed by ``docs/output-contract.md``; columns may be
added after them, never renamed or dropped.
"""

from __future__ import annotations

import csv
import os
import tempfile
from collections.abc import Iterable, Mapping
from enum import Enum
from pathlib import Path

__all__ = [
    "SERIES_COLUMNS",
    "CALIBRATION_COLUMNS",
    "VBMD_COLUMNS",
    "SCREW_COLUMNS",
    "CONTRACT_COLUMNS",
    "series_row",
    "atomic_write_bytes",
    "write_csv",
    "read_csv_rows",
]

SERIES_COLUMNS = ("series_uid", "path", "n_files", "modality", "description", "status", "reason")
CALIBRATION_COLUMNS = (
    "study_id", "timepoint", "series_uid", "method", "phantom", "material",
    "slope_hu_per_mg_cm3", "intercept_hu", "r2", "n_references",
)
VBMD_COLUMNS = (
    "study_id", "timepoint", "series_uid", "vertebra", "region", "side", "vbmd_mg_cm3",
    "material", "hu_mean", "hu_median", "hu_sd", "n_voxels", "volume_mm3",
    "excluded_fraction", "calibration", "roi_source",
)
SCREW_COLUMNS = (
    "study_id", "timepoint", "series_uid", "vertebra", "side", "length_mm", "diameter_mm",
    "entry_x_mm", "entry_y_mm", "entry_z_mm", "tip_x_mm", "tip_y_mm", "tip_z_mm",
    "halo_max_mm", "halo_mean_mm", "halo_circumference_fraction", "loosened",
)

#: file name -> contract columns (in order)
CONTRACT_COLUMNS: dict[str, tuple[str, ...]] = {
    "series.csv": SERIES_COLUMNS,
    "calibration.csv": CALIBRATION_COLUMNS,
    "vbmd.csv": VBMD_COLUMNS,
    "screws.csv": SCREW_COLUMNS,
}


def series_row(series_uid: str, path: str, n_files: int, modality: str, description: str,
               status: str, reason: str, stage: str) -> dict:
    """One row of ``series.csv`` (contract columns, then ``stage``)."""
    return {
        "series_uid": series_uid,
        "path": path,
        "n_files": n_files,
        "modality": modality,
        "description": description,
        "status": status,
        "reason": reason,
        "stage": stage,
    }


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` through a temp file in the same folder + ``os.replace``.

    A reader (or a run killed mid-write) sees either the old file or the new one, never a
    half-written file.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _format(value) -> str:
    if value is None:
        return ""
    if isinstance(value, Enum):
        return str(value.value)
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        if value != value:  # NaN
            return ""
        return f"{value:.6g}" if abs(value) < 1e6 else f"{value:.1f}"
    return str(value)


def write_csv(path: Path, rows: Iterable[Mapping], columns: tuple[str, ...]) -> int:
    """Write ``rows`` atomically with ``columns`` first (in order), extra keys after them.

    Returns the number of rows written. Booleans are written ``true``/``false``, None as ''.
    """
    rows = list(rows)
    extra: list[str] = []
    for row in rows:
        for key in row:
            if key not in columns and key not in extra:
                extra.append(key)
    header = list(columns) + extra
    import io

    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(header)
    for row in rows:
        writer.writerow([_format(row.get(c)) for c in header])
    atomic_write_bytes(Path(path), buf.getvalue().encode("utf-8"))
    return len(rows)


def read_csv_rows(path: Path) -> list[dict[str, str]]:
    """Read a CSV written by :func:`write_csv` into a list of dicts of strings."""
    with open(path, newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))
