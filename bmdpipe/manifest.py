"""The run manifest: per-series settings (``--manifest FILE.csv``).

Columns (output contract): ``path, study_id, timepoint, phantom, labels, levels``; an
empty cell means "the command-line value". ``path`` is the series' folder or file,
relative paths are taken relative to the manifest's folder. A series belongs to the
row whose path is the longest prefix of the series' own folder or file.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

from .errors import ConfigError

__all__ = ["ManifestRow", "read_manifest", "match_row", "input_paths", "TIMEPOINTS", "parse_levels"]

MANIFEST_COLUMNS = ("path", "study_id", "timepoint", "phantom", "labels", "levels")
#: Trial timepoints (REDCap events); others are accepted with a warning by the CLI.
TIMEPOINTS = ("baseline", "month_3", "month_6", "month_12", "month_24")


@dataclass(frozen=True)
class ManifestRow:
    path: Path
    study_id: str = ""
    timepoint: str = ""
    phantom: str = ""
    labels: str = ""
    levels: tuple[str, ...] = ()
    line: int = 0


def parse_levels(text: str | None) -> tuple[str, ...]:
    """``"L3,L4,L5"`` -> ``("L3", "L4", "L5")``; validates the level names."""
    from .results import VERSE_IDS

    if not text:
        return ()
    levels = tuple(t.strip().upper() for t in text.replace(";", ",").split(",") if t.strip())
    bad = [lv for lv in levels if lv not in VERSE_IDS]
    if bad:
        raise ConfigError(
            f"unknown vertebra level(s) {', '.join(bad)}; use names like L1..L5, T12, S1"
        )
    return levels


def read_manifest(path: Path) -> list[ManifestRow]:
    """Read and validate a manifest CSV; errors name the file, line and column."""
    path = Path(path)
    try:
        with open(path, newline="", encoding="utf-8-sig") as fh:
            reader = csv.DictReader(fh)
            columns = [c.strip() for c in (reader.fieldnames or [])]
            if "path" not in columns:
                raise ConfigError(
                    f"manifest {path}: needs a 'path' column (columns: {', '.join(MANIFEST_COLUMNS)})"
                )
            unknown = [c for c in columns if c not in MANIFEST_COLUMNS]
            if unknown:
                raise ConfigError(
                    f"manifest {path}: unknown column(s) {', '.join(unknown)}; "
                    f"allowed: {', '.join(MANIFEST_COLUMNS)}"
                )
            rows = []
            for line, raw in enumerate(reader, start=2):
                raw = {k.strip(): (v or "").strip() for k, v in raw.items() if k}
                if not raw.get("path"):
                    raise ConfigError(f"manifest {path}, line {line}: empty 'path'")
                p = Path(raw["path"])
                if not p.is_absolute():
                    p = path.parent / p
                try:
                    levels = parse_levels(raw.get("levels"))
                except ConfigError as exc:
                    raise ConfigError(f"manifest {path}, line {line}: {exc}") from None
                labels = raw.get("labels", "")
                if labels and not Path(labels).is_absolute():
                    labels = str(path.parent / labels)
                phantom = raw.get("phantom", "")
                if phantom.endswith((".yaml", ".yml")) and not Path(phantom).is_absolute():
                    phantom = str(path.parent / phantom)
                rows.append(
                    ManifestRow(
                        path=p.resolve(),
                        study_id=raw.get("study_id", ""),
                        timepoint=raw.get("timepoint", ""),
                        phantom=phantom,
                        labels=labels,
                        levels=levels,
                        line=line,
                    )
                )
    except FileNotFoundError:
        raise ConfigError(f"manifest {path} does not exist") from None
    except UnicodeDecodeError:
        raise ConfigError(f"manifest {path} is not a UTF-8 CSV file") from None
    seen: dict[Path, int] = {}
    for row in rows:
        if row.path in seen:
            raise ConfigError(
                f"manifest {path}: path {row.path} appears on lines {seen[row.path]} and {row.line}"
            )
        seen[row.path] = row.line
    return rows


def match_row(rows: list[ManifestRow], series_path: Path) -> ManifestRow | None:
    """The row whose path is the longest prefix of ``series_path`` (or equal to it)."""
    series_path = Path(series_path).resolve()
    best = None
    for row in rows:
        if series_path == row.path or row.path in series_path.parents:
            if best is None or len(row.path.parts) > len(best.path.parts):
                best = row
    return best


def input_paths(inputs, rows: list[ManifestRow]) -> list[Path]:
    """What a run searches: the INPUT paths, and each manifest row's path not inside one of them.

    Raises
    ------
    ConfigError
        When there is nothing to search, or a path does not exist (naming it).
    """
    inputs = [Path(p) for p in inputs]
    resolved = [p.resolve() for p in inputs]
    paths = inputs + [r.path for r in rows if not any(r.path == p or p in r.path.parents for p in resolved)]
    if not paths:
        raise ConfigError("no INPUT given (pass folders/files or a --manifest with paths)")
    missing = [str(p) for p in paths if not p.exists()]
    if missing:
        raise ConfigError(f"input not found: {', '.join(missing)}")
    return paths
