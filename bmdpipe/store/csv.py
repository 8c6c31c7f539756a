"""The output contract's CSV files: fixed leading columns, atomic writes.

The columns of each file, in order, come from its row type in :mod:`bmdpipe.rows` (the
contract's first, then the added ones); columns may be added after them, never renamed or
dropped (``docs/output-contract.md``).
"""

from __future__ import annotations

import csv
import io
import os
import tempfile
from collections.abc import Iterable, Mapping
from enum import Enum
from pathlib import Path

from ..errors import StoreError
from ..rows import ROW_TYPES, contract_columns

__all__ = [
    "CONTRACT_COLUMNS",
    "atomic_write_bytes",
    "write_csv",
    "read_csv_rows",
]

#: file name -> contract columns (in order)
CONTRACT_COLUMNS: dict[str, tuple[str, ...]] = {name: contract_columns(t) for name, t in ROW_TYPES.items()}


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` through a temp file in the same folder + ``os.replace``.

    A reader (or a run killed mid-write) sees either the old file or the new one, never a
    half-written file.

    Raises
    ------
    StoreError
        When the file cannot be written (disk full, read-only folder ...); ``path`` keeps its
        previous content and no temp file is left.
    """
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as exc:
        raise StoreError(f"cannot write {path}: {exc.strerror or exc}; free space or choose a writable "
                         "output folder") from exc
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException as exc:
        Path(tmp).unlink(missing_ok=True)
        if isinstance(exc, OSError):
            raise StoreError(f"cannot write {path}: {exc.strerror or exc}; its previous content is kept; "
                             "free space or choose a writable output folder") from exc
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
