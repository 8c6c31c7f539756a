"""The trial database: SQLAlchemy 2 models, migrations to head, one transaction per series.

SQLite by default (``sqlite:///OUT/bmdpipe.sqlite``), PostgreSQL through
``postgresql+psycopg://user@host/db``. The schema is created and upgraded by the
Alembic migrations shipped in ``bmdpipe/store/migrations`` (:func:`open_db` runs them
to head), never by ``create_all``.

Only pseudonyms are stored: ``Study.study_id`` is the manifest's study id or a keyed
hash of PatientID; no table has a column for a name, an ID or a birth date.

Measurement rows keep the output contract's columns as typed columns; any further keys
a row carries are kept in its ``extra`` JSON column and come back after the contract
columns, so that the CSV files are exact views of the database.
"""

from __future__ import annotations

import datetime as dt
import enum
import logging
import math
from collections.abc import Collection, Iterable, Mapping
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.engine import Engine
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column

from ..errors import StoreError
from ..rows import (SERIES_IDENTITY, CalibrationRow, ColumnSpec, ScrewRow, SeriesRow, SeriesStatus, VbmdRow,
                    column_specs, contract_columns)

__all__ = [
    "Base",
    "Run",
    "Study",
    "Series",
    "Calibration",
    "VertebraMeasurement",
    "ScrewMeasurement",
    "RoiEdit",
    "ReviewedMeasurement",
    "AUTOMATIC_READING",
    "ClinicalVisit",
    "TIMEPOINTS",
    "MIGRATIONS_DIR",
    "default_url",
    "open_db",
    "start_run",
    "finish_run",
    "save_series_result",
    "stray_key",
    "processed_digests",
    "query_series",
    "query_calibration",
    "query_vbmd",
    "query_screws",
    "query_contract_rows",
    "add_roi_edit",
    "query_roi_edits",
    "save_review",
    "query_reviewed_vbmd",
    "query_clinical",
    "CLINICAL_COLUMNS",
]

logger = logging.getLogger(__name__)

#: The trial's visits, in order; also the REDCap events (``<timepoint>_arm_1``).
TIMEPOINTS = ("baseline", "month_3", "month_6", "month_12", "month_24")

MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"

_UTC = dt.timezone.utc


def _now() -> dt.datetime:
    return dt.datetime.now(_UTC)


class Base(DeclarativeBase):
    """Declarative base of every bmdpipe table."""

    metadata = sa.MetaData(
        naming_convention={
            "ix": "ix_%(column_0_label)s",
            "uq": "uq_%(table_name)s_%(column_0_N_name)s",
            "ck": "ck_%(table_name)s_%(constraint_name)s",
            "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
            "pk": "pk_%(table_name)s",
        }
    )


class Run(Base):
    """One invocation of ``bmdpipe run`` (or review / import): settings, version, time."""

    __tablename__ = "runs"

    id: Mapped[int] = mapped_column(primary_key=True, autoincrement=True)
    started: Mapped[dt.datetime] = mapped_column(sa.DateTime(timezone=True), default=_now)
    finished: Mapped[dt.datetime | None] = mapped_column(sa.DateTime(timezone=True))
    version: Mapped[str] = mapped_column(sa.String(64))
    settings: Mapped[dict] = mapped_column(sa.JSON, default=dict)
    settings_digest: Mapped[str | None] = mapped_column(sa.String(64))
    command: Mapped[str | None] = mapped_column(sa.Text)


class Study(Base):
    """A trial participant, known by pseudonym only."""

    __tablename__ = "studies"

    study_id: Mapped[str] = mapped_column(sa.String(64), primary_key=True)
    created: Mapped[dt.datetime] = mapped_column(sa.DateTime(timezone=True), default=_now)


def _sql_type(spec: ColumnSpec) -> sa.types.TypeEngine:
    """The SQL type of a row column: its value type, text bounded by ``max_length``."""
    if spec.type is bool:
        return sa.Boolean()
    if spec.type is int:
        return sa.Integer()
    if spec.type is float:
        return sa.Double()
    if issubclass(spec.type, str):
        return sa.String(spec.storage.max_length) if spec.storage.max_length else sa.Text()
    raise TypeError(f"no SQL type for column {spec.name} of type {spec.type!r}")


def _row_columns(row_type: type, *, primary_key: str = "") -> list[sa.Column]:
    """Typed columns of a row type's contract columns; its added columns live in ``extra``.

    The series identity (study_id, timepoint, series_uid) of a measurement row is stored with
    its series, except as the ``primary_key`` of the series table itself.
    """
    out = []
    for spec in column_specs(row_type):
        if spec.storage.contract and (spec.name == primary_key or spec.name not in SERIES_IDENTITY):
            key = spec.name == primary_key
            out.append(sa.Column(spec.name, _sql_type(spec), primary_key=key,
                                 nullable=not (key or spec.storage.required)))
    return out


def _row_checks(row_type: type) -> list[sa.CheckConstraint]:
    """A check that each ``checked`` column holds one of its enum's values."""
    return [sa.CheckConstraint(f"{spec.name} IN ({', '.join(repr(m.value) for m in spec.type)})", name=spec.name)
            for spec in column_specs(row_type) if spec.storage.checked]


def _required(row_type: type) -> tuple[str, ...]:
    """The columns that identify a measurement row within its series (unique together)."""
    return tuple(spec.name for spec in column_specs(row_type) if spec.storage.required)


def _series_key() -> sa.Column:
    return sa.Column("series_uid", sa.ForeignKey("series.series_uid", ondelete="CASCADE"), index=True,
                     nullable=False)


class Series(Base):
    """A CT series (or stray file) found in the inputs, with its outcome and digests
    (contract ``series.csv``: the columns of :class:`~bmdpipe.rows.SeriesRow`)."""

    __table__ = sa.Table(
        "series", Base.metadata,
        *_row_columns(SeriesRow, primary_key="series_uid"),
        sa.Column("study_id", sa.ForeignKey("studies.study_id"), index=True),
        sa.Column("timepoint", sa.String(32)),
        sa.Column("stage", sa.String(32)),
        sa.Column("input_digest", sa.String(64)),
        sa.Column("settings_digest", sa.String(64)),
        sa.Column("run_id", sa.ForeignKey("runs.id"), index=True),
        sa.Column("updated", sa.DateTime(timezone=True), default=_now, nullable=False),
        sa.Column("warnings", sa.JSON, default=list, nullable=False),
        sa.Column("extra", sa.JSON, default=dict, nullable=False),
        *_row_checks(SeriesRow),
    )


class Calibration(Base):
    """HU <-> mg/cm3 calibration of one series (contract ``calibration.csv``: the columns of
    :class:`~bmdpipe.rows.CalibrationRow`)."""

    __table__ = sa.Table(
        "calibrations", Base.metadata,
        sa.Column("series_uid", sa.ForeignKey("series.series_uid", ondelete="CASCADE"), primary_key=True),
        *_row_columns(CalibrationRow),
        sa.Column("details", sa.JSON, default=dict, nullable=False),
        sa.Column("extra", sa.JSON, default=dict, nullable=False),
    )


class VertebraMeasurement(Base):
    """One vertebra x region x side measurement (contract ``vbmd.csv``: the columns of
    :class:`~bmdpipe.rows.VbmdRow`)."""

    __table__ = sa.Table(
        "vertebra_measurements", Base.metadata,
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        _series_key(),
        sa.Column("position", sa.Integer, nullable=False),
        *_row_columns(VbmdRow),
        sa.Column("extra", sa.JSON, default=dict, nullable=False),
        sa.UniqueConstraint("series_uid", *_required(VbmdRow)),
    )


class ScrewMeasurement(Base):
    """One pedicle screw found in a series (contract ``screws.csv``: the columns of
    :class:`~bmdpipe.rows.ScrewRow`).

    ``ordinal`` numbers screws sharing a vertebra and side (0 for the usual single one).
    """

    __table__ = sa.Table(
        "screw_measurements", Base.metadata,
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        _series_key(),
        sa.Column("position", sa.Integer, nullable=False),
        *_row_columns(ScrewRow),
        sa.Column("ordinal", sa.Integer, default=0, nullable=False),
        sa.Column("extra", sa.JSON, default=dict, nullable=False),
        sa.UniqueConstraint("series_uid", *_required(ScrewRow), "ordinal"),
    )


class RoiEdit(Base):
    """A manual ROI edit made in the napari review step: who, when, what; the ROI is named by the
    columns that identify it in ``vbmd.csv`` (vertebra, region, side)."""

    __table__ = sa.Table(
        "roi_edits", Base.metadata,
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        _series_key(),
        *(c for c in _row_columns(VbmdRow) if c.name in _required(VbmdRow)),
        sa.Column("who", sa.String(128), nullable=False),
        sa.Column("when", sa.DateTime(timezone=True), default=_now, nullable=False),
        sa.Column("what", sa.JSON, default=dict, nullable=False),
    )


#: ``ReviewedMeasurement.reviewer`` of the automatic ROIs' reading (kept when a series is first reviewed)
AUTOMATIC_READING = "auto"


class ReviewedMeasurement(Base):
    """One reader's complete reading of a series' ROIs (the review step): one row per vertebra x
    region x side and reviewer, the columns of :class:`~bmdpipe.rows.VbmdRow`.

    Each reviewer's reading is stored side by side with the others' (``reviewer``); the automatic
    ROIs' reading is kept as reviewer :data:`AUTOMATIC_READING` when a series is first reviewed.
    ``vertebra_measurements`` holds the series' current rows (the latest correction of each ROI).
    """

    __table__ = sa.Table(
        "reviewed_measurements", Base.metadata,
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        _series_key(),
        sa.Column("reviewer", sa.String(128), nullable=False),
        sa.Column("position", sa.Integer, nullable=False),
        *_row_columns(VbmdRow),
        sa.Column("saved", sa.DateTime(timezone=True), default=_now, nullable=False),
        sa.Column("extra", sa.JSON, default=dict, nullable=False),
        sa.UniqueConstraint("series_uid", "reviewer", *_required(VbmdRow)),
    )


class ClinicalVisit(Base):
    """The trial's clinical data of one study at one timepoint (``import-clinical``).

    ODI section scores are 0-5 (None = not answered); ``odi_index`` is
    sum / (5 x answered sections) x 100 in %. VAS is 0-10. ``fusion_grade`` is the
    Bridwell grade 1-4 (I-IV). ``loosening_reader`` is the reader's loosening call.
    Baseline covariates (usually on the baseline row): ``age_years``, ``sex`` (female / male),
    ``bmi_kg_m2`` (kg/m2), DXA T-scores ``tscore_lumbar`` and ``tscore_hip`` (SD units).
    """

    __tablename__ = "clinical_visits"

    id: Mapped[int] = mapped_column(primary_key=True, autoincrement=True)
    study_id: Mapped[str] = mapped_column(sa.ForeignKey("studies.study_id"), index=True)
    timepoint: Mapped[str] = mapped_column(sa.String(32))
    arm: Mapped[str | None] = mapped_column(sa.String(64))
    cement: Mapped[bool | None] = mapped_column(sa.Boolean)
    cage_type: Mapped[str | None] = mapped_column(sa.String(64))
    odi_1: Mapped[int | None] = mapped_column(sa.SmallInteger)
    odi_2: Mapped[int | None] = mapped_column(sa.SmallInteger)
    odi_3: Mapped[int | None] = mapped_column(sa.SmallInteger)
    odi_4: Mapped[int | None] = mapped_column(sa.SmallInteger)
    odi_5: Mapped[int | None] = mapped_column(sa.SmallInteger)
    odi_6: Mapped[int | None] = mapped_column(sa.SmallInteger)
    odi_7: Mapped[int | None] = mapped_column(sa.SmallInteger)
    odi_8: Mapped[int | None] = mapped_column(sa.SmallInteger)
    odi_9: Mapped[int | None] = mapped_column(sa.SmallInteger)
    odi_10: Mapped[int | None] = mapped_column(sa.SmallInteger)
    odi_index: Mapped[float | None] = mapped_column(sa.Double)
    vas_back: Mapped[float | None] = mapped_column(sa.Double)
    vas_leg: Mapped[float | None] = mapped_column(sa.Double)
    fusion_grade: Mapped[int | None] = mapped_column(sa.SmallInteger)
    loosening_reader: Mapped[bool | None] = mapped_column(sa.Boolean)
    age_years: Mapped[float | None] = mapped_column(sa.Double)
    sex: Mapped[str | None] = mapped_column(sa.String(16))
    bmi_kg_m2: Mapped[float | None] = mapped_column(sa.Double)
    tscore_lumbar: Mapped[float | None] = mapped_column(sa.Double)
    tscore_hip: Mapped[float | None] = mapped_column(sa.Double)
    source: Mapped[str | None] = mapped_column(sa.Text)
    imported: Mapped[dt.datetime] = mapped_column(sa.DateTime(timezone=True), default=_now)

    __table_args__ = (sa.UniqueConstraint("study_id", "timepoint"),)


#: clinical columns in the order of the import CSV and the exports
CLINICAL_COLUMNS = (
    "study_id", "timepoint", "arm", "cement", "cage_type",
    *(f"odi_{i}" for i in range(1, 11)),
    "odi_index", "vas_back", "vas_leg", "fusion_grade", "loosening_reader",
    "age_years", "sex", "bmi_kg_m2", "tscore_lumbar", "tscore_hip",
)


# ---------------------------------------------------------------- engine + migrations

def default_url(out_dir: str | Path) -> str:
    """``sqlite:///OUT/bmdpipe.sqlite`` for the output folder ``out_dir``."""
    return f"sqlite:///{Path(out_dir).resolve() / 'bmdpipe.sqlite'}"


def _sqlite_pragmas(lock_timeout_s: float):
    def connect(dbapi_connection, _record) -> None:
        cur = dbapi_connection.cursor()
        cur.execute("PRAGMA foreign_keys=ON")
        cur.execute(f"PRAGMA busy_timeout={int(lock_timeout_s * 1000)}")
        cur.close()

    return connect


def _unavailable(url: sa.URL, exc: BaseException) -> str:
    """What went wrong with the database at ``url`` and what to do, from the driver's error."""
    text = str(getattr(exc, "orig", None) or exc)
    low = text.lower()
    if "locked" in low or "busy" in low:
        return (f"database {url!r} is locked by another connection (another bmdpipe run on it, or a program "
                "holding it open); wait for it to finish or close it, then run again (store.sqlite_lock_timeout_s)")
    if "disk is full" in low or "no space" in low:
        return f"database {url!r}: the disk is full ({text}); free space, then run again"
    if "readonly" in low or "read-only" in low or "unable to open" in low:
        return f"database {url!r} cannot be written ({text}); check the folder's permissions and free space"
    return (f"cannot connect to database {url!r}: {text}; check that the server runs and the URL's user, "
            "password and database name")


def _raise_store_error(url: sa.URL):
    """``handle_error`` hook: a database that cannot be reached, is locked or full raises a StoreError naming
    it and what to do (never a driver traceback)."""
    def handle(context) -> None:
        if isinstance(context.sqlalchemy_exception, sa.exc.OperationalError):
            raise StoreError(_unavailable(url, context.sqlalchemy_exception)) from context.original_exception

    return handle


def _alembic_config(engine: Engine):
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    cfg.attributes["engine"] = engine
    return cfg


def open_db(url: str, *, migrate: bool = True, echo: bool = False, lock_timeout_s: float | None = None) -> Engine:
    """Connect to the database at ``url`` and upgrade its schema to the newest migration.

    Parameters
    ----------
    url : str
        SQLAlchemy URL: ``sqlite:///path/bmdpipe.sqlite`` or
        ``postgresql+psycopg://user:password@host:port/dbname``.
    migrate : bool
        Run the Alembic migrations to head (default). False only checks the connection.
    lock_timeout_s : float, optional
        SQLite: how long (s) a statement waits for another connection's lock; default
        ``store.sqlite_lock_timeout_s``.

    Returns
    -------
    sqlalchemy.engine.Engine
        Any later statement on it that finds the database unreachable, locked, full or
        read-only raises a :class:`StoreError` saying so.

    Raises
    ------
    StoreError
        When the URL is malformed, the server cannot be reached, the database is locked or
        a migration fails.
    """
    try:
        url_obj = sa.make_url(url)
    except sa.exc.ArgumentError as exc:
        raise StoreError(
            f"database URL {url!r} is not valid; use sqlite:///PATH or "
            "postgresql+psycopg://user:password@host:port/dbname"
        ) from exc
    kwargs: dict[str, Any] = {"echo": echo, "future": True}
    if lock_timeout_s is None:
        from ..config import StoreSettings

        lock_timeout_s = StoreSettings().sqlite_lock_timeout_s
    if url_obj.get_backend_name() == "sqlite":
        if url_obj.database and url_obj.database != ":memory:":
            Path(url_obj.database).parent.mkdir(parents=True, exist_ok=True)
        kwargs["connect_args"] = {"timeout": lock_timeout_s}
    else:
        kwargs["pool_pre_ping"] = True
    try:
        engine = sa.create_engine(url_obj, **kwargs)
    except (sa.exc.ArgumentError, sa.exc.NoSuchModuleError, ImportError) as exc:
        raise StoreError(f"cannot open database {url_obj!r}: {exc}") from exc
    if url_obj.get_backend_name() == "sqlite":
        event.listen(engine, "connect", _sqlite_pragmas(lock_timeout_s))
    event.listen(engine, "handle_error", _raise_store_error(url_obj))
    try:
        if migrate:
            from alembic import command

            command.upgrade(_alembic_config(engine), "head")
        else:
            with engine.connect():
                pass
    except StoreError:
        engine.dispose()
        raise
    return engine


# ---------------------------------------------------------------- value conversion

def _scalar(value: Any) -> Any:
    """Plain Python value for the DB: enums -> value, numpy -> Python, NaN -> None."""
    if value is None:
        return None
    if isinstance(value, enum.Enum):
        value = value.value
    if hasattr(value, "item") and not isinstance(value, (str, bytes)):  # numpy scalar
        try:
            value = value.item()
        except (TypeError, ValueError):
            pass
    if isinstance(value, float) and not math.isfinite(value):
        return None if math.isnan(value) else value
    return value


def _jsonable(value: Any) -> Any:
    value = _scalar(value)
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set)):
        return [_jsonable(v) for v in value]
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    if isinstance(value, (dt.datetime, dt.date)):
        return value.isoformat()
    return str(value)


def _coerce(column: sa.Column, value: Any) -> Any:
    value = _scalar(value)
    if value is None or value == "":
        return None
    ptype = column.type.python_type
    try:
        if ptype is bool:
            if isinstance(value, str):
                low = value.strip().lower()
                if low in ("true", "1", "yes"):
                    return True
                if low in ("false", "0", "no"):
                    return False
                raise ValueError(value)
            return bool(value)
        if ptype is int:
            if isinstance(value, float) and not value.is_integer():
                raise ValueError(value)
            return int(value)
        if ptype is float:
            return float(value)
        if ptype is str:
            return str(value)
    except (TypeError, ValueError) as exc:
        raise StoreError(
            f"column {column.table.name}.{column.name} cannot hold {value!r} "
            f"(expected {ptype.__name__})"
        ) from exc
    return value


def _split_row(model, row, skip: Collection[str]) -> tuple[dict, dict]:
    """Split a row (of :mod:`bmdpipe.rows`, or a mapping) into typed column values and the
    ``extra`` JSON dict."""
    if not isinstance(row, Mapping):
        row = row.as_dict()
    cols = model.__table__.columns
    values: dict[str, Any] = {}
    extra: dict[str, Any] = {}
    for key, value in row.items():
        if key in skip:
            continue
        if key in cols and key not in ("extra", "id", "position", "details"):
            values[key] = _coerce(cols[key], value)
        else:
            extra[key] = _jsonable(value)
    return values, extra


# ---------------------------------------------------------------- writing

def start_run(
    session: Session,
    *,
    settings: Mapping | None = None,
    settings_digest: str | None = None,
    command: str | None = None,
    version: str | None = None,
) -> int:
    """Record the start of a run (committed) and return its id."""
    if version is None:
        from .. import __version__ as version
    run = Run(
        version=version,
        settings=_jsonable(dict(settings or {})),
        settings_digest=settings_digest,
        command=command,
        started=_now(),
    )
    session.add(run)
    session.commit()
    return run.id


def finish_run(session: Session, run_id: int) -> None:
    """Stamp the run's finish time (committed)."""
    run = session.get(Run, run_id)
    if run is None:
        raise StoreError(f"run {run_id} is not in the database")
    run.finished = _now()
    session.commit()


def _ensure_study(session: Session, study_id: str | None) -> None:
    if study_id and session.get(Study, study_id) is None:
        session.add(Study(study_id=study_id))
        session.flush()


def stray_key(path: str | None) -> str:
    """Series key of a stray file that has no SeriesInstanceUID: ``file-<sha1 of path>``."""
    import hashlib

    if not path:
        raise StoreError("cannot store a series without a series_uid or a path")
    return "file-" + hashlib.sha1(str(path).encode()).hexdigest()[:20]


def save_series_result(
    session: Session,
    result: Any,
    run_id: int | None,
    *,
    settings_digest: str | None = None,
    input_digest: str | None = None,
) -> None:
    """Replace everything stored for one series by ``result`` in ONE committed transaction.

    The series' previous calibration, vertebra and screw rows are deleted and the new
    ones inserted; on any error the transaction is rolled back and the database keeps the
    old rows (a killed process leaves the same state: SQLite/PostgreSQL roll back an
    uncommitted transaction).

    Parameters
    ----------
    session : sqlalchemy.orm.Session
    result : SeriesResult or SeriesRow
        A series' result (its ``series`` row, ``study_id, timepoint, warnings``, and the rows
        ``calibration_row, vbmd_rows, screw_rows`` of :mod:`bmdpipe.rows` or mappings of column
        values), or the row of a series or file that discovery skipped.
    run_id : int or None
        The run that produced ``result`` (:func:`start_run`).
    settings_digest, input_digest : str, optional
        Digests of the settings + job options and of the series' files (for resume).
    """
    row = result if isinstance(result, SeriesRow) else result.series
    uid = row.series_uid or stray_key(row.path)
    if _scalar(row.status) not in {s.value for s in SeriesStatus}:
        raise StoreError(f"series {uid}: status {row.status!r} is not processed, skipped or failed")
    try:
        _ensure_study(session, _scalar(getattr(result, "study_id", None)) or None)
        for model in (Calibration, VertebraMeasurement, ScrewMeasurement):
            session.execute(sa.delete(model).where(model.series_uid == uid))
        _save_series(session, uid, row, result, run_id=run_id, input_digest=input_digest,
                     settings_digest=settings_digest)
        _save_measurements(session, uid, result)
        session.commit()
    except sa.exc.IntegrityError as exc:
        session.rollback()
        raise StoreError(
            f"series {uid}: rows violate a uniqueness or reference rule ({exc.orig}); "
            "the series' previous rows are kept"
        ) from exc
    except BaseException:
        session.rollback()
        raise


def _save_series(session: Session, uid: str, row: SeriesRow, result: Any, **values: Any) -> None:
    """Insert or update the series' own row (not committed); ``values``: the run and digests."""
    series = session.get(Series, uid)
    if series is None:
        series = Series(series_uid=uid)
        session.add(series)
    typed, series.extra = _split_row(Series, row, skip=("series_uid",))
    typed.update(values, study_id=_scalar(getattr(result, "study_id", None)) or None,
                 timepoint=_scalar(getattr(result, "timepoint", None)) or None, updated=_now(),
                 warnings=_jsonable(list(getattr(result, "warnings", None) or [])))
    for key, value in typed.items():
        setattr(series, key, value)
    session.flush()


def _save_measurements(session: Session, uid: str, result: Any) -> None:
    """Insert the series' calibration, vertebra and screw rows (not committed)."""
    cal_row = getattr(result, "calibration_row", None)
    if cal_row:
        values, extra = _split_row(Calibration, cal_row, skip=SERIES_IDENTITY)
        session.add(Calibration(series_uid=uid, details={}, extra=extra, **values))
    for pos, row in enumerate(getattr(result, "vbmd_rows", None) or ()):
        values, extra = _split_row(VertebraMeasurement, row, skip=SERIES_IDENTITY)
        session.add(VertebraMeasurement(series_uid=uid, position=pos, extra=extra, **values))
    seen: dict[tuple, int] = {}
    for pos, row in enumerate(getattr(result, "screw_rows", None) or ()):
        values, extra = _split_row(ScrewMeasurement, row, skip=SERIES_IDENTITY)
        key = tuple(values.get(c) for c in _required(ScrewRow))
        ordinal = seen[key] = seen.get(key, -1) + 1
        session.add(ScrewMeasurement(series_uid=uid, position=pos, ordinal=ordinal, extra=extra, **values))


def processed_digests(session: Session) -> dict[str, tuple[str | None, str | None]]:
    """``series_uid -> (input_digest, settings_digest)`` of every *processed* series.

    Resume skips a series when both digests match; failed series are tried again.
    """
    rows = session.execute(
        sa.select(Series.series_uid, Series.input_digest, Series.settings_digest).where(
            Series.status == "processed"
        )
    )
    return {uid: (inp, sett) for uid, inp, sett in rows}


def add_roi_edit(
    session: Session,
    *,
    series_uid: str,
    vertebra: str,
    region: str,
    side: str,
    who: str,
    what: Mapping,
    when: dt.datetime | None = None,
) -> int:
    """Record one manual ROI edit (committed) and return its id."""
    edit = RoiEdit(
        series_uid=series_uid, vertebra=str(_scalar(vertebra)), region=str(_scalar(region)),
        side=str(_scalar(side)), who=who, what=_jsonable(dict(what)), when=when or _now(),
    )
    session.add(edit)
    session.commit()
    return edit.id


def query_roi_edits(session: Session, series_uid: str | None = None) -> list[dict]:
    """ROI edits (oldest first) as dicts: series_uid, vertebra, region, side, who, when, what."""
    stmt = sa.select(RoiEdit).order_by(RoiEdit.when, RoiEdit.id)
    if series_uid is not None:
        stmt = stmt.where(RoiEdit.series_uid == series_uid)
    cols = [c for c in RoiEdit.__table__.c.keys() if c != "id"]
    return [{c: getattr(e, c) for c in cols} for e in session.scalars(stmt)]


def _roi_key(row: Mapping) -> tuple[str, str, str]:
    return tuple(str(_scalar(row[c])) for c in _required(VbmdRow))


def save_review(session: Session, series_uid: str, reviewer: str, reading: Iterable, *,
                current: Iterable = (), edits: Iterable[Mapping] = (), when: dt.datetime | None = None) -> None:
    """Store one reviewer's reading of a series in ONE committed transaction.

    Parameters
    ----------
    session : sqlalchemy.orm.Session
    series_uid : str
        The series reviewed (stored by a run).
    reviewer : str
        Who read it; replaces that reviewer's previous reading of the series.
    reading : iterable of VbmdRow or mapping
        Every ROI's row as the reviewer leaves it (edited ROIs ``roi_source = manual``).
    current : iterable of VbmdRow or mapping
        Rows that replace the series' current rows (``vertebra_measurements``, ``vbmd.csv``) of
        the same vertebra, region and side: the ROIs this save changed.
    edits : iterable of mapping
        The audit: per changed ROI its ``vertebra, region, side`` and ``what`` (before and after
        values ...), stored in ``roi_edits`` with ``who = reviewer`` and ``when``.
    when : datetime, optional
        UTC time of the save (default now).

    Before the first reading of a series is stored, its current rows (then the automatic ones) are
    kept as the reading of :data:`AUTOMATIC_READING`.

    Raises
    ------
    StoreError
        When the series is not in the database or a current row names an ROI it does not have;
        nothing is stored then.
    """
    when = when or _now()
    try:
        if session.get(Series, series_uid) is None:
            raise StoreError(f"series {series_uid} is not in the database; run `bmdpipe run` on it first")
        stored = {_roi_key(r): r for r in query_vbmd(session, series_uids=[series_uid])}
        readers = set(session.scalars(sa.select(ReviewedMeasurement.reviewer).where(
            ReviewedMeasurement.series_uid == series_uid)))
        if AUTOMATIC_READING not in readers:
            _save_reading(session, series_uid, AUTOMATIC_READING, stored.values(), when)
        session.execute(sa.delete(ReviewedMeasurement).where(
            ReviewedMeasurement.series_uid == series_uid, ReviewedMeasurement.reviewer == reviewer))
        _save_reading(session, series_uid, reviewer, reading, when)
        for row in current:
            _replace_current_row(session, series_uid, row, stored)
        for edit in edits:
            session.add(RoiEdit(series_uid=series_uid, vertebra=str(_scalar(edit["vertebra"])),
                                region=str(_scalar(edit["region"])), side=str(_scalar(edit["side"])),
                                who=reviewer, when=when, what=_jsonable(dict(edit["what"]))))
        session.commit()
    except BaseException:
        session.rollback()
        raise


def _save_reading(session: Session, uid: str, reviewer: str, rows: Iterable, when: dt.datetime) -> None:
    for pos, row in enumerate(rows):
        values, extra = _split_row(ReviewedMeasurement, row, skip=(*SERIES_IDENTITY, "reviewer"))
        session.add(ReviewedMeasurement(series_uid=uid, reviewer=reviewer, position=pos, saved=when, extra=extra,
                                        **values))
    session.flush()


def _replace_current_row(session: Session, uid: str, row: Any, stored: Mapping) -> None:
    """Overwrite the series' stored row of the same ROI with ``row`` (its position is kept)."""
    key = _roi_key(row if isinstance(row, Mapping) else row.as_dict())
    if key not in stored:
        raise StoreError(f"series {uid} has no ROI {' '.join(key)} to replace; its ROIs come from `bmdpipe run`")
    obj = session.scalars(sa.select(VertebraMeasurement).where(
        VertebraMeasurement.series_uid == uid,
        *(getattr(VertebraMeasurement, c) == v for c, v in zip(_required(VbmdRow), key)))).one()
    values, obj.extra = _split_row(VertebraMeasurement, row, skip=SERIES_IDENTITY)
    for name, value in values.items():
        setattr(obj, name, value)
    session.flush()


def query_reviewed_vbmd(session: Session, *, series_uids: Collection[str] | None = None) -> list[dict]:
    """Every stored reading (:func:`save_review`): ``vbmd.csv`` rows with a ``reviewer`` column, one row
    per ROI and reviewer, sorted by study, timepoint, series, reviewer."""
    columns = contract_columns(VbmdRow)
    out = []
    for chunk in _chunks(series_uids):
        stmt = _series_filter(sa.select(ReviewedMeasurement, Series.study_id, Series.timepoint).join(Series), chunk,
                              None)
        for obj, study_id, timepoint in session.execute(stmt):
            values = {c: getattr(obj, c, None) for c in columns}
            values.update(study_id=study_id, timepoint=timepoint, series_uid=obj.series_uid)
            row = _row_dict(columns, values, obj.extra)
            row["reviewer"] = obj.reviewer
            out.append((_sort_key(row, obj.reviewer, obj.position), row))
    return [row for _, row in sorted(out, key=lambda kr: kr[0])]


# ---------------------------------------------------------------- reading

def _series_filter(stmt, series_uids: Collection[str] | None, run_id: int | None):
    if series_uids is not None:
        stmt = stmt.where(Series.series_uid.in_(list(series_uids)))
    if run_id is not None:
        stmt = stmt.where(Series.run_id == run_id)
    return stmt


def _row_dict(columns: tuple[str, ...], values: Mapping, extra: Mapping | None) -> dict:
    out = {c: values.get(c) for c in columns}
    for key, value in (extra or {}).items():
        if key not in out:
            out[key] = value
    return out


def _sort_key(row: Mapping, *more) -> tuple:
    return (row.get("study_id") or "", row.get("timepoint") or "", row.get("series_uid") or "", *more)


def _chunks(uids: Collection[str] | None, size: int = 500) -> Iterable[Collection[str] | None]:
    if uids is None:
        yield None
        return
    uids = list(uids)
    for i in range(0, len(uids), size):
        yield uids[i : i + size]


def query_series(
    session: Session, *, series_uids: Collection[str] | None = None, run_id: int | None = None
) -> list[dict]:
    """``series.csv`` rows (contract columns first, then study_id, timepoint, stage...)."""
    out = []
    for chunk in _chunks(series_uids):
        stmt = _series_filter(sa.select(Series), chunk, run_id)
        for s in session.scalars(stmt):
            cols = contract_columns(SeriesRow)
            row = _row_dict(cols, {c: getattr(s, c) for c in cols}, None)
            row.update(study_id=s.study_id, timepoint=s.timepoint, stage=s.stage)
            for key, value in (s.extra or {}).items():
                row.setdefault(key, value)
            out.append(row)
    return sorted(out, key=lambda r: (r["series_uid"],))


def query_calibration(
    session: Session, *, series_uids: Collection[str] | None = None, run_id: int | None = None
) -> list[dict]:
    """``calibration.csv`` rows in contract column order (extra keys after)."""
    out = []
    for chunk in _chunks(series_uids):
        stmt = _series_filter(
            sa.select(Calibration, Series.study_id, Series.timepoint).join(Series), chunk, run_id
        )
        for cal, study_id, timepoint in session.execute(stmt):
            cols = contract_columns(CalibrationRow)
            values = {c: getattr(cal, c, None) for c in cols}
            values.update(study_id=study_id, timepoint=timepoint, series_uid=cal.series_uid)
            out.append(_row_dict(cols, values, cal.extra))
    return sorted(out, key=_sort_key)


def _query_measurements(session, model, row_type, series_uids, run_id) -> list[dict]:
    columns = contract_columns(row_type)
    out = []
    for chunk in _chunks(series_uids):
        stmt = _series_filter(
            sa.select(model, Series.study_id, Series.timepoint).join(Series), chunk, run_id
        )
        for obj, study_id, timepoint in session.execute(stmt):
            values = {c: getattr(obj, c, None) for c in columns}
            values.update(study_id=study_id, timepoint=timepoint, series_uid=obj.series_uid)
            row = _row_dict(columns, values, obj.extra)
            out.append((_sort_key(row, obj.position), row))
    return [row for _, row in sorted(out, key=lambda kr: kr[0])]


def query_vbmd(
    session: Session, *, series_uids: Collection[str] | None = None, run_id: int | None = None
) -> list[dict]:
    """``vbmd.csv`` rows in contract column order, sorted by study, timepoint, series."""
    return _query_measurements(session, VertebraMeasurement, VbmdRow, series_uids, run_id)


def query_screws(
    session: Session, *, series_uids: Collection[str] | None = None, run_id: int | None = None
) -> list[dict]:
    """``screws.csv`` rows in contract column order, sorted by study, timepoint, series."""
    return _query_measurements(session, ScrewMeasurement, ScrewRow, series_uids, run_id)


def query_contract_rows(
    session: Session, *, series_uids: Collection[str] | None = None, run_id: int | None = None
) -> dict[str, list[dict]]:
    """All four contract files' rows: ``{"series.csv": [...], "calibration.csv": ...}``."""
    kw = {"series_uids": series_uids, "run_id": run_id}
    return {
        "series.csv": query_series(session, **kw),
        "calibration.csv": query_calibration(session, **kw),
        "vbmd.csv": query_vbmd(session, **kw),
        "screws.csv": query_screws(session, **kw),
    }


def query_clinical(session: Session) -> list[dict]:
    """Clinical visits as dicts in :data:`CLINICAL_COLUMNS` order, by study and timepoint."""
    order = {t: i for i, t in enumerate(TIMEPOINTS)}
    rows = [
        {c: getattr(v, c) for c in CLINICAL_COLUMNS} for v in session.scalars(sa.select(ClinicalVisit))
    ]
    return sorted(rows, key=lambda r: (r["study_id"], order.get(r["timepoint"], 99)))

