"""The output tables' rows: one frozen dataclass per table, the one home of its columns.

``series.csv``, ``calibration.csv``, ``vbmd.csv`` and ``screws.csv`` (the output contract,
``docs/output-contract.md``) each have a row type here. Its fields are the table's columns
in the contract's order, then the columns added after them (``Column(contract=False)``).
The CSV writer, the database models, the exports and the tests take the columns from
these types (:func:`columns`, :func:`contract_columns`, :func:`column_specs`), so a column
is added or documented in one place. A row is built from the stage results
(:meth:`CalibrationRow.of`, :meth:`ScrewRow.of`; ``measure.measure_roi`` for vBMD rows).

Each field's type says what the database stores: ``float``, ``int``, ``bool`` or text
(``Column(max_length=n)`` for a bounded one), ``None`` allowed unless
``Column(required=True)``.
"""

from __future__ import annotations

import dataclasses
import typing
from dataclasses import dataclass
from enum import Enum
from functools import cache
from typing import Annotated, Any, ClassVar

from .results import Calibration, Material, Region, Screw, Side

__all__ = [
    "Column",
    "ColumnSpec",
    "SeriesStatus",
    "SeriesRow",
    "CalibrationRow",
    "VbmdRow",
    "ScrewRow",
    "ROW_TYPES",
    "SERIES_IDENTITY",
    "column_specs",
    "columns",
    "contract_columns",
    "join_warnings",
    "UNCALIBRATED",
]


@dataclass(frozen=True)
class Column:
    """How a row field is stored (used inside ``Annotated[type, Column(...)]``).

    Attributes
    ----------
    max_length : int or None
        Longest text the database column holds (None: unbounded text).
    required : bool
        The value is never empty (NOT NULL); the columns that identify a measurement
        within its series (vertebra, region, side) are required.
    contract : bool
        False for a column added after the contract's (kept in the database's ``extra``).
    checked : bool
        The database checks the value is one of the field's enum values.
    """

    max_length: int | None = None
    required: bool = False
    contract: bool = True
    checked: bool = False


ADDED = Column(contract=False)  # a column added after the contract's


@dataclass(frozen=True)
class ColumnSpec:
    """One column of a row type: its name, value type and storage (:class:`Column`)."""

    name: str
    type: type
    storage: Column


class SeriesStatus(str, Enum):
    """What became of a series or stray file (``series.csv`` ``status``)."""

    processed = "processed"
    skipped = "skipped"
    failed = "failed"


def join_warnings(warnings) -> str:
    """One CSV cell from warnings: ``'; '``-separated, so a warning's own ``'; '`` becomes
    ``', '`` (the cell splits back into the warnings on ``'; '``)."""
    return "; ".join(w.replace("; ", ", ") for w in warnings)


class _Row:
    """Methods shared by the row types (which are frozen dataclasses)."""

    def as_dict(self) -> dict[str, Any]:
        """``{column: value}`` in column order (values as they are: enums, floats, None)."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}

    @classmethod
    def from_mapping(cls, values: typing.Mapping[str, Any]):
        """A row from a mapping of column values (a database or CSV row); keys that are not
        columns are ignored, missing optional columns take their defaults."""
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in values.items() if k in names})


@dataclass(frozen=True)
class SeriesRow(_Row):
    """A row of ``series.csv``: a series or stray file found, and what became of it.

    ``reason`` is the failure or skip reason, or a processed series' warnings
    (:func:`join_warnings`); ``stage`` the stage that failed or skipped it.
    """

    series_uid: Annotated[str, Column(max_length=128)]
    path: str
    n_files: int
    modality: Annotated[str, Column(max_length=16)]
    description: str
    status: Annotated[SeriesStatus, Column(max_length=16, required=True, checked=True)]
    reason: str
    stage: Annotated[str, ADDED] = ""


@dataclass(frozen=True)
class CalibrationRow(_Row):
    """A row of ``calibration.csv``: ``HU = intercept_hu + slope_hu_per_mg_cm3 * density``.

    Added columns: ``references`` (each rod or tissue and its HU), ``warnings``,
    ``effective_kev`` (keV), ``density_uncertainty_percent`` (phantomless: the fit's own 1-SD
    uncertainty of a density, %), ``precalibrated_kev`` (keV of a ``--precalibration``).
    """

    study_id: str
    timepoint: str
    series_uid: str
    method: Annotated[str, Column(max_length=32)]
    phantom: Annotated[str, Column(max_length=128)]
    material: Annotated[Material, Column(max_length=16)]
    slope_hu_per_mg_cm3: float
    intercept_hu: float
    r2: float | None
    n_references: int
    references: Annotated[str, ADDED] = ""
    warnings: Annotated[str, ADDED] = ""
    effective_kev: Annotated[float | None, ADDED] = None
    density_uncertainty_percent: Annotated[float | None, ADDED] = None
    precalibrated_kev: Annotated[float | None, ADDED] = None

    @classmethod
    def of(cls, cal: Calibration, series) -> CalibrationRow:
        """The row of calibration ``cal`` of a series (``series``: its ``SeriesMeta``)."""
        uncertainty = cal.details.get("density_uncertainty_fraction")
        return cls(
            study_id=series.study_id, timepoint=series.timepoint, series_uid=series.series_uid,
            method=cal.method, phantom=cal.phantom, material=cal.material,
            slope_hu_per_mg_cm3=cal.slope_hu_per_mg_cm3, intercept_hu=cal.intercept_hu, r2=cal.r2,
            n_references=cal.n_references,
            references="; ".join(f"{r.name}={r.hu_mean:.1f}HU" for r in cal.references),
            warnings=join_warnings(cal.warnings),
            effective_kev=cal.details.get("kev"),
            density_uncertainty_percent=None if uncertainty is None else 100.0 * uncertainty,
            precalibrated_kev=cal.details.get("precalibrated_kev"),
        )


@dataclass(frozen=True)
class VbmdRow(_Row):
    """A row of ``vbmd.csv``: one ROI (vertebra x region x side), in HU and mg/cm3.

    Built by :func:`bmdpipe.measure.measure_roi`. ``excluded_fraction`` is the share of the
    ROI's candidate voxels removed as cortex or sclerosis. ``calibration`` is the method
    (``phantom``, ``internal``), or ``failed`` (:data:`UNCALIBRATED`) when the series'
    calibration failed: the HU columns are measured, the densities empty, and ``series.csv``
    says why. Added columns: the calibrated
    median and SD of the voxels and the standard error of the mean from image noise (mg/cm3), the
    ROI's label code in the ROI maps, the effective number of independent voxels of the ROI, the
    noise SD at the ROI (HU), the series' in-plane noise correlation length (mm), the SD of
    repeat scans the QCT literature quotes at the ROI's density (mg/cm3; ROI A, phantom
    calibration), and ``reason``: why the plausibility gate refused an ROI that holds voxels (its
    HU and density columns are then empty; ``plausibility`` settings), and ``reviewer``: who drew
    a ``roi_source = manual`` ROI in the review step (empty for automatic ROIs). Values that could
    not be measured are NaN (empty in CSV).
    """

    study_id: str
    timepoint: str
    series_uid: str
    vertebra: Annotated[str, Column(max_length=8, required=True)]
    region: Annotated[Region, Column(max_length=4, required=True)]
    side: Annotated[Side, Column(max_length=8, required=True)]
    vbmd_mg_cm3: float | None
    material: Annotated[Material | None, Column(max_length=16)]
    hu_mean: float | None
    hu_median: float | None
    hu_sd: float | None
    n_voxels: int
    volume_mm3: float
    excluded_fraction: float
    calibration: Annotated[str, Column(max_length=16)]
    roi_source: Annotated[str, Column(max_length=16)]
    vbmd_median_mg_cm3: Annotated[float | None, ADDED] = None
    vbmd_sd_mg_cm3: Annotated[float | None, ADDED] = None
    vbmd_se_mg_cm3: Annotated[float | None, ADDED] = None
    label_code: Annotated[int | None, ADDED] = None
    n_effective: Annotated[float | None, ADDED] = None
    noise_sd_hu: Annotated[float | None, ADDED] = None
    noise_correlation_mm: Annotated[float | None, ADDED] = None
    vbmd_precision_sd_mg_cm3: Annotated[float | None, ADDED] = None
    reason: Annotated[str, ADDED] = ""
    reviewer: Annotated[str, ADDED] = ""


@dataclass(frozen=True)
class ScrewRow(_Row):
    """A row of ``screws.csv``: one screw found, its ends (LPS mm) and its halo.

    ``halo_max_mm`` is the widest arc of the halo: the largest per-angle width after the
    widths are median-smoothed over ``halo.max_smoothing`` neighbouring angles (a halo must
    span ~35 deg; shorter spikes are ray exits or streaks), mm. ``halo_mean_mm`` is the mean
    width over the angles, ``halo_circumference_fraction`` the share of the circumference
    where the (smoothed) width reaches ``halo.min_width_mm``. Halo columns are empty when
    the halo could not be measured. ``loosened`` is empty (indeterminate) when too little of
    the circumference could be measured for a call; ``reason`` says why. Added after the
    contract's columns: ``augmented``, a cement mantle wraps the screw's distal shaft
    (:attr:`bmdpipe.results.Screw.augmented`); ``halo_max_se_mm``, the standard error of
    ``halo_max_mm``; ``halo_measured_fraction``, the share of the circumference measured (in bone,
    off metal streaks).
    """

    study_id: str
    timepoint: str
    series_uid: str
    vertebra: Annotated[str, Column(max_length=8, required=True)]
    side: Annotated[Side, Column(max_length=8, required=True)]
    length_mm: float
    diameter_mm: float
    entry_x_mm: float
    entry_y_mm: float
    entry_z_mm: float
    tip_x_mm: float
    tip_y_mm: float
    tip_z_mm: float
    halo_max_mm: float | None
    halo_mean_mm: float | None
    halo_circumference_fraction: float | None
    loosened: bool | None
    augmented: Annotated[bool, ADDED] = False
    halo_max_se_mm: Annotated[float | None, ADDED] = None
    halo_measured_fraction: Annotated[float | None, ADDED] = None
    reason: Annotated[str, ADDED] = ""

    #: decimals of the lengths (0.1 mm) and of the diameter and coordinates (0.01 mm) written
    LENGTH_DECIMALS: ClassVar[int] = 1
    POSITION_DECIMALS: ClassVar[int] = 2

    @classmethod
    def of(cls, screw: Screw, series) -> ScrewRow:
        """The row of ``screw`` found in a series (``series``: its ``SeriesMeta``)."""
        h = screw.halo
        entry = [round(c, cls.POSITION_DECIMALS) for c in screw.entry_lps]
        tip = [round(c, cls.POSITION_DECIMALS) for c in screw.tip_lps]
        return cls(
            study_id=series.study_id, timepoint=series.timepoint, series_uid=series.series_uid,
            vertebra=screw.vertebra, side=Side(screw.side),
            length_mm=round(screw.length_mm, cls.LENGTH_DECIMALS),
            diameter_mm=round(screw.diameter_mm, cls.POSITION_DECIMALS),
            entry_x_mm=entry[0], entry_y_mm=entry[1], entry_z_mm=entry[2],
            tip_x_mm=tip[0], tip_y_mm=tip[1], tip_z_mm=tip[2],
            halo_max_mm=None if h is None else h.widest_arc_mm,
            halo_mean_mm=None if h is None else h.mean_width_mm,
            halo_circumference_fraction=None if h is None else h.circumference_fraction,
            loosened=None if h is None or h.loosened is None else bool(h.loosened),
            augmented=bool(screw.augmented),
            halo_max_se_mm=None if h is None else h.widest_arc_se_mm,
            halo_measured_fraction=None if h is None else h.measured_fraction,
            reason="" if h is None else h.reason,
        )


#: ``vbmd.csv`` ``calibration`` of a series whose calibration failed: HU statistics, no density
UNCALIBRATED = "failed"

#: the output tables: file name -> row type
ROW_TYPES: dict[str, type] = {
    "series.csv": SeriesRow,
    "calibration.csv": CalibrationRow,
    "vbmd.csv": VbmdRow,
    "screws.csv": ScrewRow,
}

#: the columns that say which series a measurement row belongs to (stored with the series)
SERIES_IDENTITY = ("study_id", "timepoint", "series_uid")


def _unwrap(hint) -> tuple[type, Column]:
    storage = Column()
    if typing.get_origin(hint) is Annotated:
        hint, *meta = typing.get_args(hint)
        storage = next((m for m in meta if isinstance(m, Column)), storage)
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    return (args[0] if args else hint), storage


@cache
def column_specs(row_type: type) -> tuple[ColumnSpec, ...]:
    """The columns of a row type, in order: name, value type (``None`` stripped), storage."""
    hints = typing.get_type_hints(row_type, include_extras=True)
    return tuple(ColumnSpec(f.name, *_unwrap(hints[f.name])) for f in dataclasses.fields(row_type))


def columns(row_type: type) -> tuple[str, ...]:
    """Every column of a row type, the contract's first."""
    return tuple(c.name for c in column_specs(row_type))


def contract_columns(row_type: type) -> tuple[str, ...]:
    """The columns the output contract fixes, in its order."""
    return tuple(c.name for c in column_specs(row_type) if c.storage.contract)
