"""What discovery finds: series to load (:class:`SeriesRef`) and items skipped with a reason.

The types shared by :mod:`~bmdpipe.ingest.discover` (DICOM folders), :mod:`~bmdpipe.ingest.nifti`
and :mod:`~bmdpipe.ingest.load`; they hold the pseudonym ``study_id``, never PatientName,
PatientID or BirthDate.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from ..rows import SeriesRow, SeriesStatus

__all__ = ["SeriesRef", "Discovery", "Skip", "skipped_item"]


class Skip(Exception):
    """An input that is not a series to process; ``str(exc)`` is the reason for ``series.csv``."""


@dataclass(frozen=True)
class SeriesRef:
    """A series to process: the files of one CT series, or one NIfTI file.

    Attributes
    ----------
    series_uid : str
        SeriesInstanceUID, or ``'nifti-<sha1>'`` for a NIfTI file.
    paths : tuple of Path
        The series' files (sorted by name; the slice order comes from positions), or the
        single NIfTI file.
    kind : {'dicom', 'nifti'}
    modality, description : str
        Modality and SeriesDescription ('' when absent).
    n_files : int
        Number of files.
    study_id : str
        Pseudonym (keyed hash of PatientID). Replace it with ``dataclasses.replace`` when a
        manifest gives one.
    manufacturer, kernel, study_date, transfer_syntax, sop_class : str
        Header values ('' when absent).
    kvp, slice_thickness_mm : float or None
        Tube voltage (kV) and nominal slice thickness (mm).
    rows, columns, n_slices : int
        Image size in pixels and number of 2-D images (frames) in the series.
    warnings : tuple of str
        Non-fatal findings of discovery (duplicate files dropped, localizers split off).
    """

    series_uid: str
    paths: tuple[Path, ...]
    kind: str = "dicom"
    modality: str = "CT"
    description: str = ""
    n_files: int = 0
    study_id: str = ""
    manufacturer: str = ""
    kernel: str = ""
    kvp: float | None = None
    slice_thickness_mm: float | None = None
    study_date: str = ""
    rows: int = 0
    columns: int = 0
    n_slices: int = 0
    transfer_syntax: str = ""
    sop_class: str = ""
    warnings: tuple[str, ...] = ()

    @property
    def path(self) -> Path:
        """The series' folder (DICOM; common parent of its files) or the NIfTI file."""
        return Path(self.source)

    @property
    def source(self) -> str:
        """Folder (DICOM) or file (NIfTI) the series comes from."""
        if self.kind == "nifti" or len(self.paths) == 0:
            return str(self.paths[0]) if self.paths else ""
        parents = {p.parent for p in self.paths}
        return str(parents.pop()) if len(parents) == 1 else os.path.commonpath([str(p) for p in self.paths])

    def series_row(self, status: SeriesStatus, reason: str = "", stage: str = "") -> SeriesRow:
        """The ``series.csv`` row of this series with its outcome."""
        return SeriesRow(series_uid=self.series_uid, path=str(self.path), n_files=self.n_files,
                         modality=self.modality, description=self.description, status=status,
                         reason=reason, stage=stage)


def skipped_item(series_uid: str, path: str, n_files: int, modality: str, description: str,
                 reason: str) -> SeriesRow:
    """The ``series.csv`` row of a series or stray file that is not processed, with the reason."""
    return SeriesRow(series_uid=series_uid, path=path, n_files=n_files, modality=modality,
                     description=description, status=SeriesStatus.skipped, reason=reason)


@dataclass(frozen=True)
class Discovery:
    """Result of :func:`discover`: series to process and everything skipped."""

    series: tuple[SeriesRef, ...]
    skipped: tuple[SeriesRow, ...]
