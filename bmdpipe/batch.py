"""Many series: discovery, one job per CT series, one writer for every output.

``run_batch`` is what ``bmdpipe run`` calls. Each series is processed independently by
:func:`bmdpipe.pipeline.process_series`; a failure is recorded and the batch goes on.
All files are written here (single writer), atomically.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from .config import Settings
from .manifest import ManifestRow, match_row
from .pipeline import SeriesJob, SeriesResult, process_series
from .store.csv import (
    CALIBRATION_COLUMNS,
    SCREW_COLUMNS,
    SERIES_COLUMNS,
    VBMD_COLUMNS,
    write_csv,
)
from .store.files import write_series_files

__all__ = ["RunOptions", "RunSummary", "build_jobs", "run_batch"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class RunOptions:
    """Command-line values of ``bmdpipe run`` (manifest rows override them per series)."""

    out_dir: Path
    phantom: str | None = None
    labels: str | None = None
    levels: tuple[str, ...] = ()
    calibration_file: str | None = None
    manifest: tuple[ManifestRow, ...] = ()
    db_url: str | None = None
    workers: int = 0
    scheduler: str | None = None
    resume: bool = True


@dataclass(frozen=True)
class RunSummary:
    processed: int
    failed: int
    skipped: int
    resumed: int = 0
    out_dir: Path = Path(".")
    failures: tuple[tuple[str, str, str], ...] = field(default=())  # (series_uid, stage, reason)

    @property
    def exit_code(self) -> int:
        return 1 if self.failed else 0


def build_jobs(series_refs: Sequence, options: RunOptions) -> list[SeriesJob]:
    """Merge the command-line values with each series' manifest row."""
    jobs = []
    for ref in series_refs:
        row = match_row(list(options.manifest), Path(ref.path)) if options.manifest else None
        jobs.append(
            SeriesJob(
                ref=ref,
                study_id=(row.study_id if row else "") or "",
                timepoint=(row.timepoint if row else "") or "",
                phantom=(row.phantom if row and row.phantom else options.phantom),
                labels=(row.labels if row and row.labels else options.labels),
                levels=(row.levels if row and row.levels else options.levels),
                calibration_file=options.calibration_file,
            )
        )
    return jobs


class _Writer:
    """Accumulates rows and rewrites the contract CSVs atomically after every series."""

    def __init__(self, out_dir: Path, skipped_rows: list[dict]):
        self.out_dir = Path(out_dir)
        self.series_rows = list(skipped_rows)
        self.calibration_rows: list[dict] = []
        self.vbmd_rows: list[dict] = []
        self.screw_rows: list[dict] = []

    def add(self, result: SeriesResult) -> None:
        write_series_files(self.out_dir, result)
        self.series_rows.append(result.series_row)
        if result.status == "processed":
            if result.calibration_row:
                self.calibration_rows.append(result.calibration_row)
            self.vbmd_rows.extend(result.vbmd_rows)
            self.screw_rows.extend(result.screw_rows)
        self.flush()

    def flush(self) -> None:
        write_csv(self.out_dir / "series.csv", self.series_rows, SERIES_COLUMNS)
        write_csv(self.out_dir / "calibration.csv", self.calibration_rows, CALIBRATION_COLUMNS)
        write_csv(self.out_dir / "vbmd.csv", self.vbmd_rows, VBMD_COLUMNS)
        write_csv(self.out_dir / "screws.csv", self.screw_rows, SCREW_COLUMNS)


def run_batch(
    discovery,
    options: RunOptions,
    settings: Settings,
    *,
    progress: Callable[[SeriesResult, int, int], None] | None = None,
) -> RunSummary:
    """Process every CT series of ``discovery`` and write the outputs under ``options.out_dir``.

    Parameters
    ----------
    discovery : bmdpipe.ingest.Discovery
        Series to process and items skipped (with reasons) by discovery.
    progress : callable, optional
        Called as ``progress(result, n_done, n_total)`` after each series.
    """
    skipped_rows = [item.row for item in discovery.skipped]
    writer = _Writer(options.out_dir, skipped_rows)
    writer.flush()
    jobs = build_jobs(discovery.series, options)
    failures = []
    for n, job in enumerate(jobs, start=1):
        result = process_series(job, settings)
        writer.add(result)
        if result.status == "failed":
            failures.append((result.series_uid, result.stage, result.reason))
        if progress:
            progress(result, n, len(jobs))
    return RunSummary(
        processed=len(jobs) - len(failures),
        failed=len(failures),
        skipped=len(skipped_rows),
        out_dir=options.out_dir,
        failures=tuple(failures),
    )
