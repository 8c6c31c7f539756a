"""The review step's input and output: open a processed series from a run's outputs, save a review.

:func:`open_review` reads what ``bmdpipe run`` left in ``OUT_DIR`` (the database, the ROI
maps under ``rois/``) and the series' CT from its files. :func:`save_review` writes a
reviewer's edited maps to ``rois/reviewed/<reviewer>/<uid>_A.nii.gz`` ... (the automatic
maps are kept as they are), stores the reading, the changed ROIs' rows and the audit in the
database in one transaction (:func:`bmdpipe.store.db.save_review`), then rewrites the
run's CSVs from the database (``vbmd.csv``, and ``vbmd_reviewers.csv``: one row per ROI and
reviewer).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import logging
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from sqlalchemy.orm import Session

from ..config import Settings, load_settings
from ..errors import BmdpipeError, ConfigError, ReviewError
from ..results import Calibration, Material
from ..rows import CalibrationRow, ScrewRow, SeriesRow, VbmdRow
from ..store import db as store_db
from ..store.csv import atomic_write_bytes, read_csv_rows
from ..store.export import export_csvs
from ..store.files import safe_name
from .model import REGIONS, ReviewSeries, ReviewSession, RoiChange

__all__ = ["SeriesChoice", "SavedReview", "check_reviewer", "list_series", "open_review", "read_roi_folder",
           "reviewed_map_path", "save_review"]

logger = logging.getLogger(__name__)

_REVIEWER = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")


def check_reviewer(name: str) -> str:
    """A reviewer's name as stored: letters, digits, ``._-`` (it names a folder), not ``auto``.

    Raises
    ------
    ConfigError
        Saying what a name may hold.
    """
    if not _REVIEWER.fullmatch(name or "") or name.lower() == store_db.AUTOMATIC_READING:
        raise ConfigError(f"reviewer name {name!r}: use 1-64 letters, digits, '.', '_' or '-' (initials or a "
                          f"staff login; '{store_db.AUTOMATIC_READING}' names the automatic ROIs)")
    return name


@dataclass(frozen=True)
class SeriesChoice:
    """A series that can be reviewed, as the picker shows it (pseudonym, never a name)."""

    series_uid: str
    study_id: str
    timepoint: str
    description: str

    @property
    def label(self) -> str:
        return f"{self.study_id} {self.timepoint or '-'} {self.description} ({self.series_uid[-12:]})"


def _url(out_dir: Path, db_url: str | None) -> str:
    return db_url or store_db.default_url(out_dir)


def _run_uids(out_dir: Path) -> list[str]:
    """The series (and skipped items) of the run in ``out_dir``: the rows of its series.csv."""
    return [r["series_uid"] for r in read_csv_rows(out_dir / "series.csv")]


def _out_dir(out_dir: Path) -> Path:
    out_dir = Path(out_dir)
    if not (out_dir / "series.csv").is_file():
        raise ReviewError(f"{out_dir} holds no series.csv: give the --out folder of a `bmdpipe run`")
    return out_dir


def list_series(out_dir: Path, *, db_url: str | None = None) -> list[SeriesChoice]:
    """The series of the run in ``out_dir`` that have ROI rows, by study, timepoint and series."""
    out_dir = _out_dir(out_dir)
    uids = set(_run_uids(out_dir))
    engine = store_db.open_db(_url(out_dir, db_url))
    try:
        with Session(engine) as session:
            measured = {r["series_uid"] for r in store_db.query_vbmd(session, series_uids=uids)}
            rows = store_db.query_series(session, series_uids=measured)
    finally:
        engine.dispose()
    choices = []
    for row in rows:
        series = SeriesRow.from_mapping(row)
        choices.append(SeriesChoice(series.series_uid, row.get("study_id") or "", row.get("timepoint") or "",
                                    series.description or ""))
    return sorted(choices, key=lambda c: (c.study_id, c.timepoint, c.series_uid))


def reviewed_map_path(out_dir: Path, reviewer: str, series_uid: str, region: str) -> Path:
    """Where a reviewer's edited map of one region is saved: ``rois/reviewed/<reviewer>/<uid>_<region>.nii.gz``."""
    return Path(out_dir) / "rois" / "reviewed" / reviewer / f"{safe_name(series_uid)}_{region}.nii.gz"


def _read_map(path: Path, volume) -> np.ndarray:
    """A label map (NIfTI) on the CT grid (nearest neighbour through the affines)."""
    import nibabel as nib

    from ..anatomy.labels import resample_labels
    from ..ingest.nifti import ras_to_lps_affine

    try:
        img = nib.load(str(path))
        data = np.asanyarray(img.dataobj)
    except Exception as exc:  # nibabel raises many types for a bad file
        raise ReviewError(f"cannot read the ROI map {path} ({type(exc).__name__}: {exc}); give a NIfTI label map "
                          "on the CT") from exc
    if data.ndim == 4 and data.shape[3] == 1:
        data = data[..., 0]
    if data.ndim != 3:
        raise ReviewError(f"ROI map {path} has {data.ndim} dimensions; expected a 3-D label map")
    # a map on the CT grid (or a flipped / permuted copy of it) is sliced, not interpolated: resample_labels
    return resample_labels(data, ras_to_lps_affine(np.asarray(img.affine, float)), volume)


def _run_settings(session: Session, run_id: int | None) -> Settings:
    """The settings of the run that measured a series (the defaults, with a warning, when not stored)."""
    run = session.get(store_db.Run, run_id) if run_id is not None else None
    record = dict(run.settings) if run is not None and run.settings else {}
    record.pop("pseudonym", None)  # its key is never stored; the review keeps the stored study_id
    try:
        return Settings.model_validate(record) if record else load_settings()
    except ValueError:
        logger.warning("the settings of run %s cannot be read back; the default settings are used", run_id)
        return load_settings()


def _calibration(stored: dict | None) -> Calibration | None:
    """The series' stored calibration (``calibration.csv`` row), None when it has none."""
    row = CalibrationRow.from_mapping(stored) if stored else None
    if row is None or row.slope_hu_per_mg_cm3 is None:
        return None
    return Calibration(method=row.method, phantom=row.phantom or "", material=Material(row.material),
                       slope_hu_per_mg_cm3=float(row.slope_hu_per_mg_cm3), intercept_hu=float(row.intercept_hu),
                       r2=row.r2, n_references=int(row.n_references or 0))


def _load_volume(stored: dict, settings: Settings):
    """The series' CT loaded again from its files (``series.csv`` path), with its stored study_id and timepoint."""
    from ..ingest import discover, load_series

    series = SeriesRow.from_mapping(stored)
    path = Path(series.path or "")
    if not series.path or not path.exists():
        raise ReviewError(f"series {series.series_uid}: its files at {path} are gone; the review needs the CT "
                          "the run measured (restore them at that path)")
    try:
        # the stored study_id is kept (with_meta below): the pseudonym computed here is not used
        unused_key = settings.pseudonym.model_copy(update={"key": "review: stored study_id kept"})
        found = discover([path], settings.ingest, unused_key)
        ref = next((r for r in found.series if r.series_uid == series.series_uid), None)
        if ref is None:
            raise ReviewError(f"series {series.series_uid} is no longer in {path}; restore the files the run read")
        volume = load_series(ref, settings.ingest)
    except ReviewError:
        raise
    except BmdpipeError as exc:
        raise ReviewError(f"series {series.series_uid}: its CT cannot be loaded again ({exc})") from exc
    return volume.with_meta(study_id=stored.get("study_id") or "", timepoint=stored.get("timepoint") or "")


def _vbmd_rows(rows) -> tuple[VbmdRow, ...]:
    """Stored rows (of ``vbmd.csv`` or of a reading) as VbmdRows; ``reviewer`` names who drew a manual ROI only."""
    out = (VbmdRow.from_mapping(r) for r in rows)
    return tuple(dataclasses.replace(r, reviewer=r.reviewer if r.roi_source == "manual" else "") for r in out)


def open_review(out_dir: Path, series_uid: str, reviewer: str, *, db_url: str | None = None) -> ReviewSeries:
    """Everything a review of one series starts from.

    Parameters
    ----------
    out_dir : Path
        The ``--out`` folder of a ``bmdpipe run`` (its series.csv, rois/, database).
    series_uid : str
        A series of that run with ROI rows.
    reviewer : str
        Who reviews (:func:`check_reviewer`); their last saved maps are the start, else the
        automatic ones.
    db_url : str, optional
        The run's database (default ``sqlite:///OUT_DIR/bmdpipe.sqlite``).

    Raises
    ------
    ReviewError
        The series is not in the run or has no ROIs, its files or ROI maps are gone.
    """
    out_dir = _out_dir(out_dir)
    check_reviewer(reviewer)
    if series_uid not in _run_uids(out_dir):
        raise ReviewError(f"series {series_uid} is not in {out_dir / 'series.csv'}; `bmdpipe review {out_dir}` "
                          "lists the series to review")
    engine = store_db.open_db(_url(out_dir, db_url))
    try:
        with Session(engine) as session:
            found = store_db.query_series(session, series_uids=[series_uid])
            if not found:
                raise ReviewError(f"series {series_uid} is not in the database {_url(out_dir, db_url)}; give the "
                                  "run's --db")
            (series,) = found
            current = store_db.query_vbmd(session, series_uids=[series_uid])
            readings = store_db.query_reviewed_vbmd(session, series_uids=[series_uid])
            calibration = store_db.query_calibration(session, series_uids=[series_uid])
            screws = store_db.query_screws(session, series_uids=[series_uid])
            settings = _run_settings(session, session.get(store_db.Series, series_uid).run_id)
    finally:
        engine.dispose()
    if not current:
        row = SeriesRow.from_mapping(series)
        raise ReviewError(f"series {series_uid} has no ROI rows ({row.status}: {row.reason}); "
                          "only measured series can be reviewed")
    volume = _load_volume(series, settings)
    auto_maps = {}
    for region in REGIONS:
        path = out_dir / "rois" / f"{safe_name(series_uid)}_{region}.nii.gz"
        if not path.is_file():
            raise ReviewError(f"series {series_uid}: the ROI map {path} is gone; run `bmdpipe run` again with "
                              "output.roi_maps on")
        auto_maps[region] = _read_map(path, volume)
    by_reader = {}
    for row in readings:
        by_reader.setdefault(row["reviewer"], []).append(row)
    auto_rows = _vbmd_rows(by_reader.get(store_db.AUTOMATIC_READING) or current)
    own = [reviewed_map_path(out_dir, reviewer, series_uid, r) for r in REGIONS]
    if reviewer in by_reader and all(p.is_file() for p in own):
        start_maps = {r: _read_map(p, volume) for r, p in zip(REGIONS, own)}
        start_rows = _vbmd_rows(by_reader[reviewer])
    else:
        if reviewer in by_reader:
            logger.warning("reviewer %s's saved maps of series %s are gone (%s); starting from the automatic ROIs",
                           reviewer, series_uid, own[0].parent)
        start_maps, start_rows = auto_maps, auto_rows
    cal = _calibration(calibration[0] if calibration else None)
    return ReviewSeries(volume=volume, calibration=cal, settings=settings, auto_maps=auto_maps,
                        start_maps=start_maps, auto_rows=auto_rows, start_rows=start_rows, reviewer=reviewer,
                        screws=tuple(ScrewRow.from_mapping(r) for r in screws),
                        halo_maps=tuple(sorted((out_dir / "qc").glob(f"{safe_name(series_uid)}_screw_*.png"))))


def read_roi_folder(folder: Path, series_uid: str, volume) -> dict[str, np.ndarray]:
    """ROI maps drawn in another tool (3D Slicer, ITK-SNAP), on the CT grid, by region.

    ``folder`` holds a NIfTI label map per region to change, named ``NAME_A.nii.gz``
    (or ``_A.nii``, or ``A.nii.gz``), with the output contract's codes; a region without a
    file keeps its maps. A map on another grid is resampled to the CT (nearest neighbour).

    Raises
    ------
    ReviewError
        No map in the folder, or two for one region.
    """
    folder = Path(folder)
    found: dict[str, list[Path]] = {}
    for path in sorted(folder.iterdir()) if folder.is_dir() else ():
        m = re.fullmatch(r"(?:.*_)?([ABC])\.nii(?:\.gz)?", path.name)
        if m:
            found.setdefault(m.group(1), []).append(path)
    if not found:
        raise ReviewError(f"no ROI map in {folder}: name them <series>_A.nii.gz, _B, _C (the rois/ files of the run, "
                          f"edited), on the CT of series {series_uid}")
    twice = {r: p for r, p in found.items() if len(p) > 1}
    if twice:
        raise ReviewError(f"{folder} holds more than one map for region(s) {', '.join(sorted(twice))}: "
                          + "; ".join(", ".join(p.name for p in ps) for ps in twice.values()))
    return {region: _read_map(paths[0], volume) for region, paths in found.items()}


@dataclass(frozen=True)
class SavedReview:
    """What :func:`save_review` did: the changed ROIs and the files written."""

    changes: tuple[RoiChange, ...]
    maps: tuple[Path, ...] = ()
    csv_rows: dict = dataclasses.field(default_factory=dict)


def save_review(session: ReviewSession, out_dir: Path, *, db_url: str | None = None,
                when: dt.datetime | None = None) -> SavedReview:
    """Save a reviewer's edits: their maps, the re-measured rows, the audit, the CSVs.

    Nothing is written when no ROI changed since the start (or the last save). In order: the
    reviewer's three maps (each atomically), the database in one transaction (their reading,
    the changed ROIs' current rows with ``roi_source = manual``, one ``roi_edits`` row per
    changed ROI with the reviewer, the UTC time and the values before and after), then the
    run's CSVs from the database.
    """
    from ..pipeline import roi_map_nifti_bytes

    out_dir = _out_dir(out_dir)
    series = session.series
    uid, reviewer = series.volume.meta.series_uid, series.reviewer
    changes = session.changes()
    if not changes:
        return SavedReview(changes=())
    reading = session.rows()
    maps = []
    for region in REGIONS:
        path = reviewed_map_path(out_dir, reviewer, uid, region)
        atomic_write_bytes(path, roi_map_nifti_bytes(series.volume, session.maps[region]))
        maps.append(path)
    engine = store_db.open_db(_url(out_dir, db_url))
    try:
        with Session(engine) as db_session:
            store_db.save_review(db_session, uid, reviewer, reading, current=[c.after for c in changes],
                                 edits=[c.audit() for c in changes], when=when)
        counts = export_csvs(engine, out_dir, series_uids=_run_uids(out_dir))
    finally:
        engine.dispose()
    session.mark_saved()
    return SavedReview(changes=changes, maps=tuple(maps), csv_rows=counts)
